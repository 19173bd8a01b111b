#!/usr/bin/env python3
"""tests/standins/dockerhub.py - a Docker Hub stand-in (registry-kinds.md section 2).

    dockerhub.py --upstream URL --upstream-storage DIR --port-file FILE
                 --user U --password P [--pat PAT] [--org ORG[,ORG...]]
                 [--token-ttl N]

Listeners:
  registry  registry-1.docker.io: Bearer tokens from auth; the challenge is
            Bearer realm="<auth>/token",service="registry.docker.io"[,scope=];
            pull rate-limit headers on manifest GET and HEAD when
            ratelimit_limit is set (GET counts, HEAD does not; 429
            TOOMANYREQUESTS past it); manifest DELETE answers 405 UNSUPPORTED;
            a push into your own namespace (or an org of yours) creates the
            repository, public.
  auth      auth.docker.io: GET /token?service=registry.docker.io&scope=...
            (anonymous, or Basic user:password|PAT) -> {"token",
            "access_token","expires_in","issued_at"[,"refresh_token"]}; a
            scope naming a repository that is not NAMESPACE/NAME is refused
            400 {"details":"invalid repository name"};
            POST /token (grant_type=refresh_token|password).
  hub       hub.docker.com: POST /v2/auth/token {"identifier","secret"} ->
            {"access_token"} (10 minutes), POST /v2/users/login; namespaces'
            repositories and tags, paged {"count","next","previous","results"}
            (page, page_size <= 100); repository creation; tag deletion; the
            older paths Harbor uses (/v2/repositories/...); orgs
            (/v2/orgs/{ns}/, POST /v2/orgs/). X-RateLimit-* on every answer.
Controls: ratelimit_limit=N (0: no limit and no headers; setting it starts
afresh), ratelimit_window=SECONDS (21600; a sliding window: a pull stops
counting that many seconds after it was made), ratelimit_used=N (N pulls
made just now by someone else on the same address), add_repo=NAME (a public
repository of another namespace, e.g. the official library/ubuntu, whose
content is pushed to the upstream directly), ratelimit_headers=0
(enforce the limit without announcing it on 200 answers: the quota runs out
behind the client's back; the 429 still carries the headers), and the
shared ones.
"""
import collections
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Standin, parse_scope, registry_actions, ACCEPT_ALL  # noqa: E402

SERVICE = "registry.docker.io"
HUB_TOKEN_TTL = 600   # "expires in 10 minutes" [section 2 Auth (Hub API)]
PULL_LIMIT_MSG = ("You have reached your pull rate limit. You may increase the limit by authenticating "
                  "and upgrading: https://www.docker.com/increase-rate-limits")
HUB_API_LIMIT = 180


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


class DockerHub(Standin):
    kind = "dockerhub"
    listeners = ("registry", "auth", "hub")
    extra_controls = {"ratelimit_limit": 0, "ratelimit_window": 21600, "ratelimit_headers": 1}

    @classmethod
    def add_args(cls, p):
        p.add_argument("--pat", default="", help="a personal access token accepted as the password")
        p.add_argument("--org", default="", help="organisations the user belongs to (comma-separated)")

    def __init__(self, args):
        super().__init__(args)
        self.orgs = {o for o in args.org.split(",") if o}
        self.repos = {}
        self.pull_times = collections.deque()   # when each counted pull was made
        self.hub_calls = 0

    @property
    def pulls(self):
        """The pulls made within the last window (a sliding window)."""
        with self.lock:
            edge = time.time() - float(self.controls["ratelimit_window"])
            while self.pull_times and self.pull_times[0] <= edge:
                self.pull_times.popleft()
            return len(self.pull_times)

    def state_json(self):
        return {"repositories": self.repos, "orgs": sorted(self.orgs), "pulls": self.pulls}

    def control(self, key, value):
        if key == "ratelimit_limit":
            self.pull_times.clear()   # a new limit starts afresh
        if key == "add_repo":
            # A public repository in a namespace that is not the user's (an
            # official image under library/, say); its content goes upstream.
            self.add_repo(value)
            return True
        if key == "ratelimit_used":
            now = time.time()
            with self.lock:
                self.pull_times.extend([now] * int(value))
            return True
        return super().control(key, value)

    # ---- credentials ---------------------------------------------------------------
    def good(self, user, pw):
        return user == self.args.user and pw is not None and (
            pw == self.args.password or (self.args.pat and pw == self.args.pat))

    def namespaces(self):
        return [self.args.user] + sorted(self.orgs)

    def add_repo(self, name, private=False, description=""):
        with self.lock:
            if name not in self.repos:
                now = time.time()
                self.repos[name] = {"id": len(self.repos) + 1, "is_private": private,
                                    "description": description, "date_registered": iso(now),
                                    "last_updated": iso(now)}
            return self.repos[name]

    def can_pull(self, user, name):
        repo = self.repos.get(name)
        if repo is None:
            return user is not None and name.split("/")[0] in self.namespaces()
        return not repo["is_private"] or (user is not None and name.split("/")[0] in self.namespaces())

    # ---- faults ------------------------------------------------------------------
    def fault(self, req, status, retry_after):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if req.listener == "hub":
            headers.update(self.hub_limit_headers())
            return req.reply(status, {"message": "Too Many Requests", "errinfo": {}}, headers)
        if status == 429:
            # The abuse limit: a plain 429 [section 2 Rate limits].
            return req.reply(429, "Too Many Requests\n", headers)
        return super().fault(req, status, retry_after)

    # ---- routes -------------------------------------------------------------------
    def route(self, req):
        if req.listener == "auth":
            if req.url_path == "/token":
                self.token(req)
            else:
                req.reply(404, "404 page not found\n")
            return True
        if req.listener == "hub":
            self.hub(req)
            return True
        return False

    # ---- auth.docker.io ------------------------------------------------------------
    def token(self, req):
        """[section 2 Auth (registry)]: GET with Basic or anonymous; POST is
        the OAuth2 form (refresh_token or password grant)."""
        if req.command == "POST":
            form = req.form()
            q = form
            scopes = form.get("scope", "").split()
            grant = form.get("grant_type")
            if grant == "refresh_token":
                rec = self.tokens.check(form.get("refresh_token", ""))
                if not rec or rec.get("kind") != "refresh":
                    return req.reply(401, {"details": "invalid refresh token"})
                user = rec["who"]
            elif grant == "password":
                if not self.good(form.get("username"), form.get("password")):
                    return req.reply(401, {"details": "incorrect username or password"})
                user = form["username"]
            else:
                return req.reply(400, {"details": "unsupported grant_type"})
        elif req.command in ("GET", "HEAD"):
            q = req.query
            scopes = []
            for s in req.query_all.get("scope", []):
                scopes.extend(x for x in s.split(" ") if x)
            user = None
            b = req.basic()
            if b:
                if not self.good(*b):
                    # UNVERIFIED: the body of auth.docker.io's 401.
                    return req.reply(401, {"details": "incorrect username or password"})
                user = b[0]
        else:
            return req.reply(405, "Method Not Allowed\n")
        if q.get("service") != SERVICE:
            # UNVERIFIED: the answer to another service.
            return req.reply(400, {"details": "invalid service %r" % q.get("service", "")})
        for s in scopes:
            parsed = parse_scope(s)
            if parsed and parsed[0] == "repository" and parsed[1].count("/") != 1:
                # A repository is exactly NAMESPACE/NAME (Harbor's path rule ONLY_TWO [section 2]); a scope
                # naming a deeper one is answered so [google/go-containerregistry#1687: "400 Bad Request:
                # {"details":"invalid repository name"}" for njhale/foo/bar]. UNVERIFIED for a name without '/'
                # (clients send library/NAME).
                return req.reply(400, {"details": "invalid repository name"})
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if not parsed or parsed[0] != "repository":
                continue   # partial grants are not an error
            _, name, actions = parsed
            granted = []
            for a in actions:
                if a == "pull" and self.can_pull(user, name):
                    granted.append(a)
                elif a in ("push", "delete", "*") and user and name.split("/")[0] in self.namespaces():
                    granted.append(a)
            access.append({"type": "repository", "name": name, "actions": granted})
        tok, claims = self.tokens.jwt({"iss": "auth.docker.io", "sub": user or "", "aud": SERVICE,
                                       "access": access}, kind="registry")
        out = {"token": tok, "access_token": tok, "expires_in": self.tokens.ttl, "issued_at": iso(claims["iat"])}
        if req.command == "POST":
            out = {"access_token": tok, "expires_in": self.tokens.ttl, "issued_at": iso(claims["iat"]),
                   "scope": " ".join(scopes)}
        if user and str(q.get("offline_token", "")).lower() == "true" and req.command != "POST":
            rt, _ = self.tokens.issue(ttl=30 * 86400, kind="refresh", who=user)
            out["refresh_token"] = rt
        req.reply(200, out)

    # ---- registry-1.docker.io ------------------------------------------------------
    def challenge(self, req, scope, error=None):
        c = 'Bearer realm="%s/token",service="%s"' % (self.origin("auth"), SERVICE)
        if scope:
            c += ',scope="%s"' % scope
        if error:
            c += ',error="%s"' % error
        return c

    def authorize(self, req, info):
        name, what = info.get("name"), info["what"]
        actions = registry_actions(req.command)
        scope = None
        if name:
            scope = "repository:%s:%s" % (name, ",".join(actions))
        elif what == "catalog":
            scope = "registry:catalog:*"
        t = req.bearer()
        rec = self.tokens.check(t) if t else None
        if rec is None or rec.get("kind") != "registry":
            detail = [{"Type": "repository", "Class": "", "Name": name, "Action": a} for a in actions] if name else None
            req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                        "detail": detail}]},
                      {"Www-Authenticate": self.challenge(req, scope, "invalid_token" if t else None),
                       "Docker-Distribution-Api-Version": "registry/2.0"})
            return False
        if what == "catalog":
            # No usable /v2/_catalog [section 2 Listing]: tokens never carry
            # registry:catalog:* (UNVERIFIED: the exact refusal).
            req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                        "detail": [{"Type": "registry", "Class": "", "Name": "catalog",
                                                    "Action": "*"}]}]},
                      {"Www-Authenticate": self.challenge(req, scope, "insufficient_scope")})
            return False
        if not name:
            return True
        granted = set()
        for a in rec["claims"]["access"]:
            if a["name"] == name:
                granted.update(a["actions"])
        if what == "manifest" and req.command == "DELETE":
            # [section 2 Deletion: goharbor/harbor#7369]
            req.reply(405, {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]})
            return False
        if not all(a in granted or "*" in granted for a in actions):
            # UNVERIFIED: status 401 with insufficient_scope; the DENIED body is
            # what docker prints ("requested access to the resource is denied").
            req.reply(401, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]},
                      {"Www-Authenticate": self.challenge(req, scope, "insufficient_scope")})
            return False
        if "push" in actions:
            self.add_repo(name)   # created on first push, public [section 2 Creation]
        if what == "manifest" and req.command in ("GET", "HEAD") and self.controls["ratelimit_limit"] > 0:
            limit, window = self.controls["ratelimit_limit"], self.controls["ratelimit_window"]
            with self.lock:
                if req.command == "GET":
                    if self.pulls >= limit:
                        req.reply(429, {"errors": [{"code": "TOOMANYREQUESTS", "message": PULL_LIMIT_MSG}]},
                                  self.pull_headers(req))
                        return False
                    self.pull_times.append(time.time())
        return True

    def pull_headers(self, req):
        limit, window = self.controls["ratelimit_limit"], self.controls["ratelimit_window"]
        return {"ratelimit-limit": "%d;w=%d" % (limit, window),
                "ratelimit-remaining": "%d;w=%d" % (max(limit - self.pulls, 0), window),
                "docker-ratelimit-source": req.client_address[0]}

    def proxy_response_headers(self, req, info, status, headers):
        if info and info["what"] == "manifest" and req.command in ("GET", "HEAD") \
                and self.controls["ratelimit_limit"] > 0 and self.controls["ratelimit_headers"]:
            headers = headers + list(self.pull_headers(req).items())
        return status, headers

    # ---- hub.docker.com ----------------------------------------------------------------
    def hub_limit_headers(self):
        return {"X-RateLimit-Limit": str(HUB_API_LIMIT),
                "X-RateLimit-Remaining": str(max(HUB_API_LIMIT - self.hub_calls, 0)),
                "X-RateLimit-Reset": str(int(time.time()) + 60)}

    def hub_reply(self, req, status, body, headers=None):
        headers = dict(headers or {}, **self.hub_limit_headers())
        req.reply(status, body, headers)

    def hub_user(self, req):
        """The user of a Hub JWT (Bearer, or the old "JWT" scheme), or None."""
        h = req.headers.get("Authorization", "")
        scheme, _, tok = h.partition(" ")
        if scheme.lower() not in ("bearer", "jwt"):
            return None
        rec = self.tokens.check(tok.strip())
        return rec["who"] if rec and rec.get("kind") == "hub" else None

    def hub(self, req):
        with self.lock:
            self.hub_calls += 1
        p = req.url_path
        m = req.command
        if p == "/v2/auth/token" and m == "POST":
            body = req.json_body() or {}
            if not isinstance(body, dict) or not self.good(body.get("identifier"), body.get("secret")):
                # UNVERIFIED: the 401 body.
                return self.hub_reply(req, 401, {"detail": "Incorrect authentication credentials",
                                                 "message": "Incorrect authentication credentials"})
            tok, _ = self.tokens.jwt({"iss": "hub.docker.com", "sub": body["identifier"]},
                                     ttl=HUB_TOKEN_TTL, kind="hub", who=body["identifier"])
            return self.hub_reply(req, 200, {"access_token": tok})
        if p == "/v2/users/login" and m == "POST":
            body = req.json_body() or {}
            if not isinstance(body, dict) or not self.good(body.get("username"), body.get("password")):
                return self.hub_reply(req, 401, {"detail": "Incorrect authentication credentials"})
            tok, _ = self.tokens.jwt({"iss": "hub.docker.com", "sub": body["username"]},
                                     ttl=HUB_TOKEN_TTL, kind="hub", who=body["username"])
            return self.hub_reply(req, 200, {"token": tok})
        user = self.hub_user(req)
        if req.headers.get("Authorization") and user is None:
            return self.hub_reply(req, 401, {"detail": "Authentication credentials were not provided or are invalid"})
        segs = [urllib.parse.unquote(s) for s in p.strip("/").split("/")]
        # /v2/namespaces/{ns}/repositories[/{repo}[/tags[/{tag}]]]
        if segs[:2] == ["v2", "namespaces"] and len(segs) >= 4 and segs[3] == "repositories":
            return self.hub_repos(req, user, segs[2], segs[4:], new=True)
        # older paths: /v2/repositories/namespaces, /v2/repositories/{ns}/[{repo}/[tags/[{tag}/]]]
        if segs == ["v2", "repositories", "namespaces"] and m == "GET":
            if not user:
                return self.hub_reply(req, 401, {"detail": "Authentication credentials were not provided."})
            return self.hub_reply(req, 200, {"namespaces": self.namespaces()})
        if segs[:2] == ["v2", "repositories"] and len(segs) >= 3:
            return self.hub_repos(req, user, segs[2], segs[3:], new=False)
        if segs[:2] == ["v2", "orgs"]:
            return self.hub_orgs(req, user, segs[2:])
        return self.hub_reply(req, 404, {"detail": "Not found."})

    def hub_orgs(self, req, user, rest):
        """[section 2 Creation: Harbor's org calls, UNVERIFIED against Docker]."""
        if rest and req.command == "GET":
            if rest[0] in self.orgs:
                return self.hub_reply(req, 200, {"orgname": rest[0], "full_name": rest[0], "type": "Organization"})
            return self.hub_reply(req, 404, {"detail": "Not found."})
        if not rest and req.command == "POST":
            if not user:
                return self.hub_reply(req, 401, {"detail": "Authentication credentials were not provided."})
            body = req.json_body()
            name = body.get("orgname") if isinstance(body, dict) else None
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]{2,255}", name):
                return self.hub_reply(req, 400, {"orgname": ["Enter a valid value."]})
            if self.controls["deny_create"]:
                return self.hub_reply(req, 403, {"detail": "You do not have permission to perform this action."})
            with self.lock:
                if name in self.orgs or name == self.args.user:
                    return self.hub_reply(req, 409, {"detail": "Organization with this name already exists."})
                self.orgs.add(name)
            return self.hub_reply(req, 201, {"orgname": name, "full_name": body.get("full_name", "")})
        return self.hub_reply(req, 405, {"detail": "Method \"%s\" not allowed." % req.command})

    def paged(self, req, items, base):
        """{"count","next","previous","results"} [section 2 Listing]."""
        try:
            page = int(req.query.get("page", "1"))
            size = int(req.query.get("page_size", "10"))
        except ValueError:
            return self.hub_reply(req, 400, {"detail": "Invalid page."})
        if size < 1 or size > 100:
            # UNVERIFIED: the answer to page_size above 100.
            return self.hub_reply(req, 400, {"detail": "page_size must be between 1 and 100"})
        start = (page - 1) * size
        if page < 1 or (start >= len(items) and page > 1):
            return self.hub_reply(req, 404, {"detail": "Invalid page."})

        def link(n):
            q = dict(req.query, page=str(n), page_size=str(size))
            return "%s%s?%s" % (self.origin("hub"), base, urllib.parse.urlencode(q))
        self.hub_reply(req, 200, {"count": len(items),
                                  "next": link(page + 1) if start + size < len(items) else None,
                                  "previous": link(page - 1) if page > 1 else None,
                                  "results": items[start:start + size]})

    def repo_json(self, name):
        r = self.repos[name]
        ns, _, repo = name.partition("/")
        return {"name": repo, "namespace": ns, "repository_type": "image", "status": 1,
                "status_description": "active", "description": r["description"], "is_private": r["is_private"],
                "star_count": 0, "pull_count": 0, "last_updated": r["last_updated"],
                "date_registered": r["date_registered"], "affiliation": "", "media_types": [], "content_types": []}

    def tag_json(self, name, tag, digest, mt, size):
        st, _, body = self.upstream("GET", "/v2/%s/manifests/%s" % (name, digest), {"Accept": ACCEPT_ALL})
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        full = sum(int(l.get("size", 0)) for l in doc.get("layers", [])) + size
        r = self.repos[name]
        return {"id": abs(hash((name, tag))) % 10 ** 9, "name": tag, "full_size": full, "digest": digest,
                "media_type": mt, "content_type": "image", "repository": r["id"], "v2": True,
                "images": [{"digest": digest, "size": full, "status": "active", "architecture": "amd64",
                            "os": "linux", "last_pushed": r["last_updated"]}],
                "tag_status": "active", "tag_last_pushed": r["last_updated"], "last_updated": r["last_updated"]}

    def hub_repos(self, req, user, ns, rest, new):
        m = req.command
        mine = user is not None and ns in self.namespaces()
        rest = [s for s in rest if s != ""]
        base = req.url_path
        if not rest:
            if m == "GET":
                names = sorted(n for n in self.repos if n.split("/")[0] == ns and
                               (mine or not self.repos[n]["is_private"]))
                return self.paged(req, [self.repo_json(n) for n in names], base)
            if m == "POST" and new:
                if not user:
                    return self.hub_reply(req, 401, {"detail": "Authentication credentials were not provided."})
                body = req.json_body()
                name = body.get("name") if isinstance(body, dict) else None
                if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", name) \
                        or not 2 <= len(name) <= 255:
                    return self.hub_reply(req, 400, {"message": "Invalid repository name", "errinfo": {}})
                if not mine or self.controls["deny_create"]:
                    return self.hub_reply(req, 403, {"detail": "You do not have permission to perform this action."})
                with self.lock:
                    if ns + "/" + name in self.repos:
                        # UNVERIFIED: status and wording of the conflict.
                        return self.hub_reply(req, 409, {"message": "Repository with this Name and Namespace "
                                                                    "already exists.", "errinfo": {}})
                    self.add_repo(ns + "/" + name, bool(body.get("is_private")), body.get("description", ""))
                return self.hub_reply(req, 201, self.repo_json(ns + "/" + name))
            return self.hub_reply(req, 405, {"detail": "Method \"%s\" not allowed." % m})
        name = ns + "/" + rest[0]
        if name not in self.repos or (self.repos[name]["is_private"] and not mine):
            return self.hub_reply(req, 404, {"detail": "Not found."} if m != "HEAD" else b"")
        if len(rest) == 1:
            if m in ("GET", "HEAD"):
                return self.hub_reply(req, 200, self.repo_json(name) if m == "GET" else b"")
            return self.hub_reply(req, 405, {"detail": "Method \"%s\" not allowed." % m})
        if rest[1] != "tags":
            return self.hub_reply(req, 404, {"detail": "Not found."})
        images = self.tagged_images(name)
        if len(rest) == 2 and m == "GET":
            return self.paged(req, [self.tag_json(name, *i) for i in images], base)
        if len(rest) == 3:
            tag = rest[2]
            hit = [i for i in images if i[0] == tag]
            if m == "GET":
                return self.hub_reply(req, 200, self.tag_json(name, *hit[0])) if hit else \
                    self.hub_reply(req, 404, {"detail": "Not found."})
            if m == "DELETE":
                if not mine:
                    return self.hub_reply(req, 403 if user else 401,
                                          {"detail": "You do not have permission to perform this action."})
                if not hit or not self.upstream_delete_tag(name, tag):
                    return self.hub_reply(req, 404, {"detail": "Not found."})
                return self.hub_reply(req, 204, b"")
        return self.hub_reply(req, 405, {"detail": "Method \"%s\" not allowed." % m})


if __name__ == "__main__":
    DockerHub.main()
