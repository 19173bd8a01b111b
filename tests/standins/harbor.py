#!/usr/bin/env python3
"""tests/standins/harbor.py - a Harbor v2.x stand-in (registry-kinds.md section 1).

    harbor.py --upstream URL --upstream-storage DIR --port-file FILE
              --user U --password P [--token-ttl N]

One listener, "registry", as Harbor serves everything on one host:
  /v2/...            Harbor's v2auth check (a Basic or Bearer caller; the
                     challenge is Bearer realm=<origin>/service/token,
                     service="harbor-registry" without an Authorization
                     header, Basic realm="harbor" with one or for _catalog),
                     404 NOT_FOUND "project P not found" for a repository in a
                     missing project, then the upstream.
  GET /service/token  Docker token endpoint (Basic; POST answers 405).
  GET /api/version    {"version":"v2.0"}
  GET /api/v2.0/systeminfo  {"harbor_version", ...} without credentials
  /api/v2.0/projects  HEAD ?project_name=, GET (q=name={'a' 'b'}, name=, paging),
                      POST (201 + Location, 409, 400), GET/DELETE /{p}
  /api/v2.0/projects/{p}/repositories[/{r}[/artifacts[/{ref}[/tags/{tag}]]]]
                      (r URL-encoded twice), GET and DELETE
  GET /api/v2.0/repositories?q=blob_digest=D   mount-source lookup
Paging: page (default 1), page_size (default 10, at most 100), X-Total-Count,
Link <path?page=N&page_size=M>; rel="prev" , <...>; rel="next".
The user is a system admin; projects are kept in memory ("library" exists,
public, as in a fresh Harbor).
"""
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Standin, parse_scope, registry_actions  # noqa: E402

SERVICE = "harbor-registry"
ISSUER = "harbor-token-issuer"
PROJECT_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def errors(code, message):
    """Harbor's error body [H swagger Errors]."""
    return {"errors": [{"code": code, "message": message}]}


class Harbor(Standin):
    kind = "harbor"
    listeners = ("registry",)

    def __init__(self, args):
        super().__init__(args)
        self.projects = {}
        self.next_id = 1
        self.repo_ids = {}
        self.labels = {}          # id -> Harbor's Label {id, name, scope, ...}
        self.artifact_labels = {} # (repository, digest) -> [label id, ...]
        self.add_project("library", True)

    def add_project(self, name, public):
        pid = self.next_id
        self.next_id += 1
        now = time.time()
        self.projects[name] = {"project_id": pid, "name": name, "registry_id": 0,
                               "owner_id": 1, "owner_name": "admin",
                               "metadata": {"public": "true" if public else "false"},
                               "creation_time": iso(now), "update_time": iso(now),
                               "deleted": False, "repo_count": 0}
        return self.projects[name]

    def state_json(self):
        return {"projects": self.projects}

    # ---- who is calling -----------------------------------------------------
    def who(self, req):
        """("admin", None) for valid Basic, ("token", claims) for a live
        token, (None, None) otherwise (anonymous or invalid)."""
        b = req.basic()
        if b:
            if b[0] == self.args.user and b[1] == self.args.password:
                return "admin", None
            return None, None
        t = req.bearer()
        if t:
            rec = self.tokens.check(t)
            if rec:
                return "token", rec["claims"]
        return None, None

    def can(self, who, claims, name, action):
        project = self.projects.get(name.split("/")[0])
        if who == "admin":
            return True
        if who == "token":
            for a in claims.get("access", []):
                if a["type"] == "repository" and a["name"] == name and \
                        (action in a["actions"] or "*" in a["actions"]):
                    return True
            return False
        return action == "pull" and project is not None and project["metadata"].get("public") == "true"

    # ---- /v2/ -------------------------------------------------------------------
    def challenge(self, req, scopes):
        """getChallenge [H src/server/middleware/v2auth/auth.go]."""
        if req.headers.get("Authorization") or req.url_path.startswith("/v2/_catalog"):
            return 'Basic realm="harbor"'
        c = 'Bearer realm="%s/service/token",service="%s"' % (req.origin(), SERVICE)
        if scopes:
            c += ',scope="%s"' % " ".join(scopes)
        return c

    def deny(self, req, scopes, message):
        req.reply(401, errors("UNAUTHORIZED", message),
                  {"Docker-Distribution-Api-Version": "registry/2.0",
                   "Www-Authenticate": self.challenge(req, scopes)})

    def authorize(self, req, info):
        who, claims = self.who(req)
        what = info["what"]
        if what == "base":
            if who is None:
                self.deny(req, [], "unauthorized")
                return False
            return True
        if what == "catalog":
            ok = who == "admin" or (who == "token" and any(
                a["type"] == "registry" and a["name"] == "catalog" for a in claims.get("access", [])))
            if not ok:
                self.deny(req, ["registry:catalog:*"], "unauthorized to list catalog")
            return ok
        if what == "unknown":
            return True
        name = info["name"]
        action = registry_actions(req.command)
        action = "push" if "push" in action else action[0]
        # accessList: the repository, plus the mount source's pull.
        checks = [(name, action)]
        if what == "upload" and req.command == "POST" and req.query.get("from"):
            checks.append((req.query["from"], "pull"))
        # Harbor's scopeStr: pull, or pull,push for a push (delete is
        # "delete" here: UNVERIFIED in the reference).
        scopes = ["repository:%s:%s" % (n, "pull,push" if a == "push" else a) for n, a in checks]
        for n, a in checks:
            if not req.headers.get("Authorization") and req.command == "HEAD":
                self.deny(req, scopes, "authorize header needed to send HEAD to repository")
                return False
            p = n.split("/")[0]
            if p not in self.projects:
                req.reply(404, errors("NOT_FOUND", "project %s not found" % p),
                          {"Docker-Distribution-Api-Version": "registry/2.0"})
                return False
            if not self.can(who, claims, n, a):
                self.deny(req, scopes, "unauthorized to access repository: %s, action: %s" % (n, a))
                return False
        return True

    # ---- routes ----------------------------------------------------------------
    def route(self, req):
        p = req.url_path
        if p == "/service/token":
            self.token(req)
            return True
        if p == "/api/version":
            req.reply(200, {"version": "v2.0"})
            return True
        if p == "/api/v2.0/systeminfo":
            # Harbor's GeneralInfo (swagger GET /systeminfo), answered without
            # credentials; only the fields a client looks at
            req.reply(200, {"harbor_version": "v2.11.0-standin", "auth_mode": "db_auth",
                            "registry_url": req.headers.get("Host", ""), "with_notary": False})
            return True
        if p.startswith("/api/v2.0/"):
            self.api(req, p[len("/api/v2.0"):])
            return True
        return False

    def token(self, req):
        """[H src/core/service/token/token.go]."""
        if req.command not in ("GET", "HEAD"):
            req.reply(405, "Method Not Allowed")
            return
        if req.query.get("service") != SERVICE:
            # UNVERIFIED: Harbor answers 400 for an unknown service; the
            # body text is not in the reference.
            req.reply(400, "Unknown service: %s" % req.query.get("service", ""))
            return
        b = req.basic()
        user = ""
        if b:
            if not (b[0] == self.args.user and b[1] == self.args.password):
                req.reply(401, "Unauthorized", {"Www-Authenticate": 'Basic realm="harbor"'})
                return
            user = b[0]
        scopes = []
        for s in req.query_all.get("scope", []):
            scopes.extend(x for x in s.split(" ") if x)
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if not parsed:
                continue
            typ, name, actions = parsed
            if typ == "registry" and name == "catalog":
                granted = actions if user else []
            elif typ == "repository" and name.split("/")[0] in self.projects:
                if user:
                    granted = actions
                else:
                    granted = [a for a in actions if a == "pull" and
                               self.can(None, None, name, "pull")]
            else:
                granted = []
            access.append({"type": typ, "name": name, "actions": granted})
        tok, claims = self.tokens.jwt({"iss": ISSUER, "sub": user, "aud": SERVICE, "access": access})
        req.reply(200, {"token": tok, "access_token": tok, "expires_in": self.tokens.ttl,
                        "issued_at": iso(claims["iat"])})

    # ---- /api/v2.0 ---------------------------------------------------------------
    def api_user(self, req):
        """True (admin), None (anonymous); sends 401 and returns False for
        wrong credentials. UNVERIFIED: that wrong Basic credentials get 401
        rather than being treated as anonymous."""
        b = req.basic()
        if b is None:
            return None
        if b[0] == self.args.user and b[1] == self.args.password:
            return True
        req.reply(401, errors("UNAUTHORIZED", "UnAuthorized"))
        return False

    def page(self, req, items):
        """Harbor paging: the page, X-Total-Count and Link [H swagger page/
        page_size; src/server/v2.0/handler/base.go Links]. None = replied."""
        try:
            page = int(req.query.get("page", "1"))
            size = int(req.query.get("page_size", "10"))
        except ValueError:
            req.reply(400, errors("BAD_REQUEST", "page and page_size must be integers"))
            return None
        if page < 1 or size < 1 or size > 100:
            # go-swagger's validation failure (Harbor sends 422 for these).
            msg = ("page_size in query should be less than or equal to 100" if size > 100
                   else "page in query should be greater than or equal to 1" if page < 1
                   else "page_size in query should be greater than or equal to 1")
            req.reply(422, errors("UNPROCESSABLE_ENTITY", "validation failure list:\n" + msg))
            return None
        start = (page - 1) * size
        chunk = items[start:start + size]
        links = []

        def link(n, rel):
            q = dict(req.query, page=str(n), page_size=str(size))
            return '<%s?%s>; rel="%s"' % (req.url_path, urllib.parse.urlencode(sorted(q.items())), rel)
        if page > 1 and start - size < len(items):
            links.append(link(page - 1, "prev"))
        if start + size < len(items):
            links.append(link(page + 1, "next"))
        headers = {"X-Total-Count": str(len(items))}
        if links:
            headers["Link"] = " , ".join(links)
        return chunk, headers

    def api(self, req, path):
        user = self.api_user(req)
        if user is False:
            return
        segs = path.strip("/").split("/")
        m = req.command
        if segs[0] == "projects":
            if len(segs) == 1:
                return self.projects_root(req, user)
            pname = urllib.parse.unquote(segs[1])
            proj = self.projects.get(pname)
            if proj is None or (not user and proj["metadata"]["public"] != "true"):
                return req.reply(404, errors("NOT_FOUND", "project %s not found" % pname))
            if len(segs) == 2:
                if m == "GET":
                    return req.reply(200, proj)
                if m == "DELETE":
                    if not user:
                        return req.reply(401, errors("UNAUTHORIZED", "UnAuthorized"))
                    if self.repositories(pname):
                        return req.reply(412, errors("PRECONDITION",
                                                     "the project contains repositories, can not be deleted"))
                    del self.projects[pname]
                    return req.reply(200, b"")
                return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))
            if segs[2] == "repositories":
                return self.repo_api(req, user, proj, segs[3:])
        if segs == ["repositories"] and m == "GET":
            return self.search_repositories(req, user)
        if segs[0] == "labels":
            return self.labels_api(req, user, segs[1:])
        return req.reply(404, errors("NOT_FOUND", "stand-in: no such API path"))

    def projects_root(self, req, user):
        m = req.command
        if m == "HEAD":
            name = req.query.get("project_name", "")
            return req.reply(200 if name in self.projects else 404, b"")
        if m == "GET":
            items = [p for p in self.projects.values() if user or p["metadata"]["public"] == "true"]
            names = None
            q = req.query.get("q", "")
            for part in filter(None, q.split(",")):
                k, _, v = part.partition("=")
                if k == "name":
                    if v.startswith("{") and v.endswith("}"):
                        names = {x.strip("'\"") for x in v[1:-1].split(" ") if x}
                        items = [p for p in items if p["name"] in names]
                    elif v.startswith("~"):
                        items = [p for p in items if v[1:].strip("'\"") in p["name"]]
                    else:
                        items = [p for p in items if p["name"] == v.strip("'\"")]
                elif k == "public":
                    items = [p for p in items if p["metadata"]["public"] == v]
            if req.query.get("name"):
                items = [p for p in items if req.query["name"] in p["name"]]
            items = sorted(items, key=lambda p: p["name"])
            for p in items:
                p["repo_count"] = len(self.repositories(p["name"]))
            res = self.page(req, items)
            if res:
                req.reply(200, res[0], res[1])
            return
        if m == "POST":
            if not user:
                return req.reply(401, errors("UNAUTHORIZED", "UnAuthorized"))
            body = req.json_body()
            if not isinstance(body, dict) or not isinstance(body.get("project_name"), str):
                return req.reply(400, errors("BAD_REQUEST", "project_name in body is required"))
            name = body["project_name"]
            if not (1 <= len(name) <= 255 and PROJECT_RE.match(name)):
                return req.reply(400, errors("BAD_REQUEST",
                                             "project name is not in lower case or contains illegal characters"))
            meta = body.get("metadata") or {}
            if not isinstance(meta, dict) or any(not isinstance(v, str) for v in meta.values()):
                # metadata values are strings ("true"/"false") [H swagger ProjectMetadata]
                return req.reply(400, errors("BAD_REQUEST", "metadata values must be strings"))
            if self.controls["deny_create"]:
                return req.reply(403, errors("FORBIDDEN", "forbidden"))
            with self.lock:
                if name in self.projects:
                    # UNVERIFIED wording; the reference has 409 "Project name already exists".
                    return req.reply(409, errors("CONFLICT", "The project named %s already exists" % name))
                p = self.add_project(name, meta.get("public", "false") == "true")
            headers = {"Location": "/api/v2.0/projects/%d" % p["project_id"]}
            if req.headers.get("X-Resource-Name-In-Location", "").lower() == "true":
                headers["Location"] = "/api/v2.0/projects/%s" % name
            return req.reply(201, b"", headers)
        return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))

    def repositories(self, project):
        return [n for n in self.upstream_catalog() if n.startswith(project + "/")]

    def repo_json(self, proj, name):
        rid = self.repo_ids.setdefault(name, len(self.repo_ids) + 1)
        return {"id": rid, "name": name, "project_id": proj["project_id"],
                "artifact_count": len({d for _, d, _, _ in self.tagged_images(name)}),
                "pull_count": 0, "description": "",
                "creation_time": proj["creation_time"], "update_time": proj["update_time"]}

    def repo_api(self, req, user, proj, rest):
        m = req.command
        pname = proj["name"]
        if not rest:
            if m != "GET":
                return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))
            res = self.page(req, [self.repo_json(proj, n) for n in self.repositories(pname)])
            if res:
                req.reply(200, res[0], res[1])
            return
        once = urllib.parse.unquote(rest[0])
        if "/" in once:
            # Encoded once only: the router splits it and no route matches.
            return req.reply(404, errors("NOT_FOUND", "stand-in: no such API path"))
        name = pname + "/" + urllib.parse.unquote(once)
        if name not in self.repositories(pname):
            return req.reply(404, errors("NOT_FOUND", "repository %s not found" % name))
        if len(rest) == 1:
            if m == "GET":
                return req.reply(200, self.repo_json(proj, name))
            return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))
        if rest[1] != "artifacts":
            return req.reply(404, errors("NOT_FOUND", "stand-in: no such API path"))
        arts = self.artifacts(proj, name)
        if len(rest) == 2:
            if m != "GET":
                return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))
            res = self.page(req, arts)
            if res:
                req.reply(200, res[0], res[1])
            return
        ref = urllib.parse.unquote(rest[2])
        art = next((a for a in arts if a["digest"] == ref or any(t["name"] == ref for t in a["tags"])), None)
        if art is None:
            return req.reply(404, errors("NOT_FOUND", "artifact %s@%s not found" % (name, ref)))
        if not user and m != "GET":
            return req.reply(401, errors("UNAUTHORIZED", "UnAuthorized"))
        if len(rest) == 3:
            if m == "GET":
                return req.reply(200, art)
            if m == "DELETE":
                self.upstream_delete_manifest(name, art["digest"])
                return req.reply(200, b"")
            return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))
        if rest[3] == "labels" and len(rest) == 4 and m == "POST":
            # swagger addLabel: body {"id": N}; 200, 404 for an unknown label,
            # 409 when the artifact has it already (UNVERIFIED wording)
            body = req.json_body() or {}
            lid = body.get("id") if isinstance(body, dict) else None
            if lid not in self.labels:
                return req.reply(404, errors("NOT_FOUND", "label %s not found" % lid))
            have = self.artifact_labels.setdefault((name, art["digest"]), [])
            if lid in have:
                return req.reply(409, errors("CONFLICT", "label %s is already added to the artifact" % lid))
            have.append(lid)
            return req.reply(200, b"")
        if rest[3] == "tags" and len(rest) == 5 and m == "DELETE":
            tag = urllib.parse.unquote(rest[4])
            if not any(t["name"] == tag for t in art["tags"]) or not self.upstream_delete_tag(name, tag):
                # UNVERIFIED wording; the reference has 404 "Tag not found".
                return req.reply(404, errors("NOT_FOUND", "tag %s not found" % tag))
            return req.reply(200, b"")
        if rest[3] == "tags" and len(rest) == 4 and m == "GET":
            res = self.page(req, art["tags"])
            if res:
                req.reply(200, res[0], res[1])
            return
        return req.reply(404, errors("NOT_FOUND", "stand-in: no such API path"))

    def artifacts(self, proj, name):
        """The repository's manifests with their tags, newest-tag order."""
        rid = self.repo_ids.setdefault(name, len(self.repo_ids) + 1)
        by_digest = {}
        for tag, digest, mt, size in self.tagged_images(name):
            a = by_digest.get(digest)
            if a is None:
                a = by_digest[digest] = {
                    "id": len(by_digest) + 1, "type": "IMAGE", "media_type": mt,
                    "manifest_media_type": mt, "project_id": proj["project_id"],
                    "repository_id": rid, "repository_name": name, "digest": digest, "size": size,
                    "push_time": proj["update_time"], "pull_time": "0001-01-01T00:00:00.000Z",
                    "extra_attrs": {}, "labels": None, "references": None, "accessories": None,
                    "tags": []}
            a["tags"].append({"id": len(a["tags"]) + 1, "repository_id": rid, "artifact_id": a["id"],
                              "name": tag, "push_time": proj["update_time"],
                              "pull_time": "0001-01-01T00:00:00.000Z", "immutable": False})
        for a in by_digest.values():
            ids = self.artifact_labels.get((name, a["digest"]))
            if ids:
                a["labels"] = [self.labels[i] for i in ids]
        return list(by_digest.values())

    def labels_api(self, req, user, rest):
        """/api/v2.0/labels [swagger Label]: POST {"name", "scope": "g"} -> 201
        with Location /api/v2.0/labels/ID, 409 for a name taken; GET
        ?scope=g[&name=N] lists them."""
        m = req.command
        if rest:
            return req.reply(404, errors("NOT_FOUND", "stand-in: no such API path"))
        if m == "POST":
            if not user:
                return req.reply(401, errors("UNAUTHORIZED", "UnAuthorized"))
            body = req.json_body() or {}
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str) or not name:
                return req.reply(400, errors("BAD_REQUEST", "name is required"))
            if any(lb["name"] == name for lb in self.labels.values()):
                return req.reply(409, errors("CONFLICT", "label %s already exists" % name))
            lid = len(self.labels) + 1
            self.labels[lid] = {"id": lid, "name": name, "scope": body.get("scope", "g"), "color": "",
                                "description": body.get("description", ""), "project_id": 0,
                                "creation_time": "2026-01-01T00:00:00.000Z", "update_time": "2026-01-01T00:00:00.000Z"}
            return req.reply(201, b"", {"Location": "/api/v2.0/labels/%d" % lid})
        if m == "GET":
            want = req.query.get("name")
            items = [lb for lb in self.labels.values() if want is None or lb["name"] == want]
            res = self.page(req, items)
            if res:
                req.reply(200, res[0], res[1])
            return
        return req.reply(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))

    def search_repositories(self, req, user):
        """GET /api/v2.0/repositories?q=blob_digest=D [H harbor/v2/client.go
        getRepositoryByBlobDigest]."""
        q = req.query.get("q", "")
        digest = q[len("blob_digest="):] if q.startswith("blob_digest=") else None
        items = []
        for n in self.upstream_catalog():
            proj = self.projects.get(n.split("/")[0])
            if proj is None or (not user and proj["metadata"]["public"] != "true"):
                continue
            if digest:
                st, _, _ = self.upstream("HEAD", "/v2/%s/blobs/%s" % (n, digest))
                if st != 200:
                    continue
            items.append(self.repo_json(proj, n))
        res = self.page(req, items)
        if res:
            req.reply(200, res[0], res[1])


if __name__ == "__main__":
    Harbor.main()
