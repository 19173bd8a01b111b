#!/usr/bin/env python3
"""tests/standins/gitlab.py - a GitLab container registry stand-in
(registry-kinds.md section 5).

    gitlab.py --upstream URL --upstream-storage DIR --port-file FILE
              --user U --password P --pat TOKEN [--projects a/b,c/d/e]
              [--job-token T] [--token-ttl N (300: 5 minutes)]

One listener, "registry" (the GitLab host and its registry in one place):
  /v2/...           Distribution token auth: challenge Bearer
                    realm="<origin>/jwt/auth",service="container_registry"
                    [,scope=...]; error="insufficient_scope" or
                    error="invalid_token" when a token does not do.
  GET /jwt/auth     Basic user:PAT (or password, or gitlab-ci-token:<job
                    token>, pull only) -> {"token"}; grants only on image
                    paths <project>[/<n1>[/<n2>]] of an existing project, and
                    per the PAT's scopes (read_registry, write_registry).
  /api/v4/...       PRIVATE-TOKEN (or Bearer): projects (membership, search),
                    projects/:id (numeric or the URL-encoded path),
                    projects/:id/registry/repositories[/:rid[/tags[/:tag]]],
                    groups/:id/registry/repositories (the group's projects
                    and its subgroups'; :id numeric or the URL-encoded
                    path; a group is every namespace that holds a project,
                    but the user's own: 404 "404 Group Not Found"),
                    registry/repositories/:rid, tag and bulk tag deletion,
                    repository deletion; offset paging with X-Total,
                    X-Total-Pages, X-Per-Page, X-Page, X-Next-Page,
                    X-Prev-Page and Link.
Controls: pat_scopes=read_registry,write_registry,api (the PAT's scopes),
protect_tags=REGEX (tags a protection rule covers: their API DELETE, and a
registry DELETE of their manifest, answer 403),
add_project=PATH, and the shared ones.
"""
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Standin, parse_scope, registry_actions  # noqa: E402

SERVICE = "container_registry"
ACCESS_DENIED = ("HTTP Basic: Access denied. If a password was provided for Git authentication, the password "
                 "was incorrect or you're required to use a token instead of a password. If a token was "
                 "provided, it was either incorrect, expired, or improperly scoped.")


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


class Gitlab(Standin):
    kind = "gitlab"
    listeners = ("registry",)
    extra_controls = {"pat_scopes": "api,read_registry,write_registry", "protect_tags": ""}

    @classmethod
    def add_args(cls, p):
        p.add_argument("--pat", required=True)
        p.add_argument("--projects", default="", help="existing projects (full paths, comma-separated)")
        p.add_argument("--job-token", default="")

    def __init__(self, args):
        super().__init__(args)
        self.projects = {}
        self.repo_ids = {}
        self.bulk_at = {}
        for path in filter(None, args.projects.split(",")):
            self.add_project(path)

    def add_project(self, path):
        with self.lock:
            if path not in self.projects:
                now = time.time()
                self.projects[path] = {"id": len(self.projects) + 1, "path_with_namespace": path,
                                       "path": path.rsplit("/", 1)[-1], "name": path.rsplit("/", 1)[-1],
                                       "namespace": {"full_path": path.rsplit("/", 1)[0] if "/" in path else ""},
                                       "container_registry_enabled": True,
                                       "container_registry_access_level": "enabled",
                                       "created_at": iso(now), "last_activity_at": iso(now)}
            return self.projects[path]

    def state_json(self):
        return {"projects": self.projects}

    def control(self, key, value):
        if key == "add_project":
            self.add_project(value)
            return True
        return super().control(key, value)

    def scopes(self):
        return set(filter(None, str(self.controls["pat_scopes"]).split(",")))

    def fault(self, req, status, retry_after):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if status == 429:
            # Rack::Attack's throttled answer (UNVERIFIED for GitLab.com: rate
            # limits were not researched, section 5).
            headers.update({"RateLimit-Limit": "600", "RateLimit-Remaining": "0"})
            return req.reply(429, "Retry later\n", headers)
        return super().fault(req, status, retry_after)

    def route(self, req):
        if req.url_path == "/jwt/auth":
            self.token(req)
            return True
        if req.url_path.startswith("/api/v4/"):
            self.api(req)
            return True
        return False

    # ---- registry ---------------------------------------------------------------------
    def project_of(self, image):
        """The project an image path belongs to: the longest project path
        that prefixes it with at most two more levels [section 5 Creation]."""
        best = None
        for p in self.projects:
            if image == p or image.startswith(p + "/"):
                if best is None or len(p) > len(best):
                    best = p
        if best is None:
            return None
        extra = image[len(best):].strip("/")
        if extra and len(extra.split("/")) > 2:
            return None
        return best

    def token(self, req):
        b = req.basic()
        who, scopes = None, set()
        if b:
            user, pw = b
            if user == self.args.user and pw is not None and pw in (self.args.pat, self.args.password):
                who = user
                scopes = self.scopes() if pw == self.args.pat else {"read_registry", "write_registry"}
            elif user == "gitlab-ci-token" and self.args.job_token and pw == self.args.job_token:
                who, scopes = user, {"read_registry"}   # CI_JOB_TOKEN: pull only here
            else:
                return req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": ACCESS_DENIED}]},
                                 {"WWW-Authenticate": 'Basic realm="GitLab"'})
        access = []
        for s in req.query_all.get("scope", []):
            for one in s.split(" "):
                parsed = parse_scope(one)
                if not parsed or parsed[0] != "repository":
                    continue
                _, name, actions = parsed
                granted = []
                if who and self.project_of(name):
                    for a in actions:
                        if a == "pull" and scopes & {"read_registry", "write_registry"}:
                            granted.append(a)
                        elif a in ("push", "delete") and "write_registry" in scopes:
                            granted.append(a)
                access.append({"type": "repository", "name": name, "actions": granted})
        tok, _ = self.tokens.jwt({"iss": "gitlab-issuer", "sub": who or "", "aud": SERVICE, "access": access},
                                 kind="registry")
        req.reply(200, {"token": tok})

    def challenge(self, req, info, error=None):
        c = 'Bearer realm="%s/jwt/auth",service="%s"' % (req.origin(), SERVICE)
        if info.get("name"):
            c += ',scope="repository:%s:%s"' % (info["name"], ",".join(registry_actions(req.command)))
        if error:
            c += ',error="%s"' % error
        return c

    def authorize(self, req, info):
        t = req.bearer()
        rec = self.tokens.check(t) if t else None
        name = info.get("name")
        need = registry_actions(req.command)
        detail = [{"Type": "repository", "Class": "", "Name": name, "Action": a} for a in need] if name else None
        if rec is None:
            req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                        "detail": detail}]},
                      {"Www-Authenticate": self.challenge(req, info, "invalid_token" if t else None),
                       "Docker-Distribution-Api-Version": "registry/2.0"})
            return False
        if info["what"] == "catalog":
            # UNVERIFIED whether GitLab allows it; refused for non-admins here.
            req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                        "detail": [{"Type": "registry", "Class": "", "Name": "catalog",
                                                    "Action": "*"}]}]},
                      {"Www-Authenticate": 'Bearer realm="%s/jwt/auth",service="%s",scope="registry:catalog:*",'
                                           'error="insufficient_scope"' % (req.origin(), SERVICE)})
            return False
        if not name:
            return True
        granted = set()
        for a in rec["claims"]["access"]:
            if a["name"] == name:
                granted.update(a["actions"])
        if not all(a in granted for a in need):
            req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                        "detail": detail}]},
                      {"Www-Authenticate": self.challenge(req, info, "insufficient_scope"),
                       "Docker-Distribution-Api-Version": "registry/2.0"})
            return False
        if info["what"] == "manifest" and req.command == "DELETE":
            return self.delete_allowed(req, name, info["ref"])
        return True

    def delete_allowed(self, req, name, ref):
        """A registry DELETE of a manifest that a protected tag names (the
        tag, or a digest a protected tag points at) is refused: a protection
        rule controls who can delete tags, on the registry too (GitLab's
        protected container tags). UNVERIFIED: the 403 DENIED answer."""
        prot = self.controls["protect_tags"]
        if not prot:
            return True
        hit = sorted(t for t, d, _, _ in self.tagged_images(name) if (ref in (t, d)) and re.fullmatch(prot, t))
        if not hit:
            return True
        req.reply(403, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied: "
                                    "the tag %s is protected" % ", ".join(hit)}]},
                  {"Docker-Distribution-Api-Version": "registry/2.0"})
        return False

    # ---- /api/v4 ------------------------------------------------------------------------------
    def api(self, req):
        tok = req.headers.get("PRIVATE-TOKEN") or req.bearer()
        if tok != self.args.pat or not self.scopes() & {"api", "read_api"}:
            return req.reply(401, {"message": "401 Unauthorized"})
        path = req.url_path[len("/api/v4"):]
        m = req.command
        if path == "/projects" and m == "GET":
            items = list(self.projects.values())
            if req.query.get("search"):
                s = req.query["search"].lower()
                items = [p for p in items if s in p["name"].lower() or
                         (req.query.get("search_namespaces") in ("true", "1") and s in p["path_with_namespace"])]
            return self.paged(req, sorted(items, key=lambda p: p["id"]))
        mm = re.match(r"^/projects/([^/]+)$", path)
        if mm and m == "GET":
            # GET /projects/:id, :id numeric or the URL-encoded path [GL doc/api/projects.md]
            proj = self.project(urllib.parse.unquote(mm.group(1)))
            if proj is None:
                return req.reply(404, {"message": "404 Project Not Found"})
            return req.reply(200, self.projects[proj])
        mm = re.match(r"^/groups/([^/]+)/registry/repositories$", path)
        if mm and m == "GET":
            return self.group_repositories(req, urllib.parse.unquote(mm.group(1)))
        mm = re.match(r"^/registry/repositories/(\d+)$", path)
        if mm and m == "GET":
            r = self.repo_by_id(int(mm.group(1)))
            if r is None:
                return req.reply(404, {"message": "404 Repository Not Found"})
            return req.reply(200, self.repo_json(r, req.query.get("tags") == "true",
                                                 req.query.get("tags_count") == "true"))
        mm = re.match(r"^/projects/([^/]+)/registry/repositories(?:/(\d+)(?:/(tags)(?:/([^/]+))?)?)?$", path)
        if not mm:
            return req.reply(404, {"message": "404 Not Found"})
        pid, rid, tags, tag = mm.groups()
        proj = self.project(urllib.parse.unquote(pid))
        if proj is None:
            return req.reply(404, {"message": "404 Project Not Found"})
        repos = self.repositories(proj)
        if rid is None:
            if m != "GET":
                return req.reply(405, {"message": "405 Method Not Allowed"})
            return self.paged(req, [self.repo_json(r, req.query.get("tags") == "true",
                                                   req.query.get("tags_count") == "true") for r in repos])
        repo = next((r for r in repos if self.repo_ids[r] == int(rid)), None)
        if repo is None:
            return req.reply(404, {"message": "404 Repository Not Found"})
        if tags is None:
            if m == "DELETE":
                for t in self.upstream_tags(repo):
                    self.upstream_delete_tag(repo, t)
                return req.reply(202, b"")
            if m == "GET":
                return req.reply(200, self.repo_json(repo, True, True))
            return req.reply(405, {"message": "405 Method Not Allowed"})
        images = self.tagged_images(repo)
        if tag is None:
            if m == "GET":
                return self.paged(req, [self.tag_json(repo, t) for t, _, _, _ in images])
            if m == "DELETE":
                return self.bulk_delete(req, repo, images)
            return req.reply(405, {"message": "405 Method Not Allowed"})
        tag = urllib.parse.unquote(tag)
        hit = next((i for i in images if i[0] == tag), None)
        if hit is None:
            return req.reply(404, {"message": "404 Tag Not Found"})
        if m == "GET":
            return req.reply(200, self.tag_json(repo, tag, hit))
        if m == "DELETE":
            prot = self.controls["protect_tags"]
            if prot and re.fullmatch(prot, tag):
                # [section 5 Deletion]: 403 if the tag matches a protection rule.
                return req.reply(403, {"message": "403 Forbidden"})
            self.upstream_delete_tag(repo, tag)
            return req.reply(200, b"")
        return req.reply(405, {"message": "405 Method Not Allowed"})

    def bulk_delete(self, req, repo, images):
        """[section 5 Deletion]: name_regex_delete required; at most once
        per hour per repository; never deletes latest. Done at once here
        (GitLab runs it asynchronously)."""
        args = dict(req.query)
        if req.headers.get("Content-Type", "").startswith("application/json"):
            body = req.json_body()
            if isinstance(body, dict):
                args.update({k: str(v) for k, v in body.items()})
        elif req.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            args.update(req.form())
        rx = args.get("name_regex_delete") or args.get("name_regex")
        if not rx:
            return req.reply(400, {"error": "name_regex_delete is missing"})
        now = time.time()
        if now - self.bulk_at.get(repo, 0) < 3600:
            return req.reply(429, {"message": "This request has already been made. You can run this at most "
                                              "once an hour for a given container repository"})
        self.bulk_at[repo] = now
        keep_rx = args.get("name_regex_keep")
        keep_n = int(args.get("keep_n") or 0)
        names = [t for t, _, _, _ in images]
        kept = set(names[-keep_n:]) if keep_n else set()
        for t in names:
            if t == "latest" or t in kept or (keep_rx and re.fullmatch(keep_rx, t)):
                continue
            if re.fullmatch(rx, t):
                self.upstream_delete_tag(repo, t)
        req.reply(202, b"")

    def groups(self):
        """{full path: id} of the groups: every namespace that holds a project
        (its parents too), but the user's own namespace, which is no group."""
        out = {}
        for p in sorted(self.projects, key=lambda p: self.projects[p]["id"]):
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                g = "/".join(parts[:i])
                if g != self.args.user and g not in out:
                    out[g] = 1000 + len(out)
        return out

    def group_repositories(self, req, ident):
        """GET /groups/:id/registry/repositories [GL doc/api/container_registry.md
        "Within a group"]: the repositories of every project of the group and
        its subgroups, paged (20 by default); no tags since GitLab 15.0."""
        groups = self.groups()
        group = next((g for g, i in groups.items() if str(i) == ident), None) if ident.isdigit() else \
            (ident if ident in groups else None)
        if group is None:
            return req.reply(404, {"message": "404 Group Not Found"})
        repos = []
        for n in self.upstream_catalog():
            proj = self.project_of(n)
            if proj and proj.startswith(group + "/"):
                self.repo_ids.setdefault(n, len(self.repo_ids) + 1)
                repos.append(n)
        return self.paged(req, [self.repo_json(r) for r in sorted(repos, key=lambda r: self.repo_ids[r])])

    def project(self, ident):
        if ident.isdigit():
            return next((p for p, v in self.projects.items() if v["id"] == int(ident)), None)
        return ident if ident in self.projects else None

    def repositories(self, proj):
        out = []
        for n in self.upstream_catalog():
            if self.project_of(n) == proj:
                self.repo_ids.setdefault(n, len(self.repo_ids) + 1)
                out.append(n)
        return out

    def repo_by_id(self, rid):
        for p in self.projects:
            for r in self.repositories(p):
                if self.repo_ids[r] == rid:
                    return r
        return None

    def repo_json(self, repo, tags=False, count=False):
        proj = self.projects[self.project_of(repo)]
        out = {"id": self.repo_ids[repo], "name": repo[len(proj["path_with_namespace"]):].strip("/"),
               "path": repo, "project_id": proj["id"], "location": "%s/%s" % (self.host(), repo),
               "created_at": proj["created_at"], "cleanup_policy_started_at": None, "status": None}
        if tags or count:
            names = self.upstream_tags(repo)
            if tags:
                out["tags"] = [{"name": t, "path": "%s:%s" % (repo, t), "location": "%s/%s:%s" % (self.host(), repo, t)}
                               for t in names]
            if count:
                out["tags_count"] = len(names)
        return out

    def tag_json(self, repo, tag, image=None):
        out = {"name": tag, "path": "%s:%s" % (repo, tag), "location": "%s/%s:%s" % (self.host(), repo, tag)}
        if image:
            d = image[1]
            out.update({"revision": d.split(":")[1], "short_revision": d.split(":")[1][:9], "digest": d,
                        "created_at": iso(time.time()), "total_size": image[3]})
        return out

    def host(self):
        return "127.0.0.1:%d" % self.ports["registry"]

    def paged(self, req, items):
        """GitLab offset paging: page, per_page (20, at most 100) and the
        X-* headers and Link."""
        try:
            page = max(int(req.query.get("page", "1")), 1)
            per = min(max(int(req.query.get("per_page", "20")), 1), 100)
        except ValueError:
            return req.reply(400, {"error": "page is invalid"})
        total = len(items)
        pages = max((total + per - 1) // per, 1)
        start = (page - 1) * per
        headers = {"X-Total": str(total), "X-Total-Pages": str(pages), "X-Per-Page": str(per),
                   "X-Page": str(page), "X-Next-Page": str(page + 1) if page < pages else "",
                   "X-Prev-Page": str(page - 1) if page > 1 else ""}

        def link(n, rel):
            q = dict(req.query, page=str(n), per_page=str(per))
            return '<%s%s?%s>; rel="%s"' % (req.origin(), req.url_path, urllib.parse.urlencode(q), rel)
        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < pages:
            links.append(link(page + 1, "next"))
        links += [link(1, "first"), link(pages, "last")]
        headers["Link"] = ", ".join(links)
        req.reply(200, items[start:start + per], headers)


if __name__ == "__main__":
    Gitlab.main()
