#!/usr/bin/env python3
"""tests/standins/quay.py - a Quay.io / Red Hat Quay stand-in (registry-kinds.md section 4).

    quay.py --upstream URL --upstream-storage DIR --port-file FILE
            --user U --password P --oauth-token T [--page-size N] [--token-ttl N]
            [--robot NS+NAME:TOKEN ...]

One listener, "registry" (Quay serves the registry and its API on one host):
  /v2/...        challenge Bearer realm="<origin>/v2/auth",service="<host>"
                 [,scope="repository:<ns>/<repo>:<actions>"]; tokens from
  GET /v2/auth   with Basic user:password or $oauthtoken:<token> (anonymous:
                 public repositories); a push scope on an existing namespace
                 creates the repository (private) at token time, a missing
                 namespace gets no access; _catalog with Link paging through
                 an opaque next_page; manifest DELETE by digest or tag (202);
                 a manifest PUT without a real media type is parsed as schema
                 1 and refused.
  /api/v1/...    Bearer <oauth token>: organization (GET, POST), repository
                 (POST, GET list with namespace= and next_page, GET, DELETE),
                 tags (GET ?page=&limit=, DELETE).
The fault control answers nginx's HTML 429 page.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Standin, parse_scope, registry_actions, ACCEPT_ALL  # noqa: E402

NGINX_429 = ("<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n"
             "<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,254}$")
REPO_RE = re.compile(r"^[a-z0-9][.a-z0-9_-]{0,254}(/[a-z0-9][.a-z0-9_-]*)*$")


class Quay(Standin):
    kind = "quay"
    listeners = ("registry",)

    @classmethod
    def add_args(cls, p):
        p.add_argument("--oauth-token", required=True, help="the REST API's OAuth2 token")
        p.add_argument("--page-size", type=int, default=100,
                       help="repositories per page of GET /api/v1/repository (UNVERIFIED default)")
        p.add_argument("--robot", action="append", default=[],
                       help="a robot account NS+NAME:TOKEN (its namespace NS is made an organization)")

    def __init__(self, args):
        super().__init__(args)
        self.orgs = {}
        self.repos = {}
        self.secret = os.urandom(16)
        self.robots = {}
        for r in args.robot:
            name, _, token = r.partition(":")
            ns = name.split("+", 1)[0]
            self.robots[name] = token
            if ns != args.user:
                self.orgs[ns] = {"name": ns, "email": "%s@quay.io" % ns, "avatar": {}, "is_admin": True,
                                 "is_member": True, "teams": {}}

    def state_json(self):
        return {"organizations": sorted(self.orgs), "repositories": self.repos}

    def namespaces(self, user=None):
        """The namespaces user may write to: a robot account only its own
        [Q util/names.py: robots are <namespace>+<name>]."""
        if user and "+" in user:
            ns = user.split("+", 1)[0]
            return {ns} & ({self.args.user} | set(self.orgs))
        return {self.args.user} | set(self.orgs)

    def fault(self, req, status, retry_after):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if status == 429:
            # quay.io's 429 may be nginx's HTML page [section 4 Rate limits].
            return req.reply(429, NGINX_429, headers, "text/html")
        return super().fault(req, status, retry_after)

    def route(self, req):
        if req.url_path == "/v2/auth":
            self.token(req)
            return True
        if req.url_path.startswith("/api/v1/"):
            self.api(req)
            return True
        return False

    # ---- registry tokens [Q endpoints/v2/v2auth.py] ------------------------------------
    def login(self, req):
        """The user for Basic credentials: None (anonymous), False (bad)."""
        b = req.basic()
        if not b:
            return None
        user, pw = b
        if user == self.args.user and pw == self.args.password:
            return user
        if user == "$oauthtoken" and pw == self.args.oauth_token:
            return self.args.user
        if user in self.robots and pw == self.robots[user]:
            return user
        return False

    def visible(self, user, name):
        r = self.repos.get(name)
        if r is not None and user and "+" in user:
            return r["visibility"] == "public" or r["namespace"] in self.namespaces(user)
        return r is not None and (r["visibility"] == "public" or user is not None)

    def token(self, req):
        user = self.login(req)
        if user is False:
            # UNVERIFIED: the body Quay sends for bad credentials.
            return req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "detail": {},
                                               "message": "Invalid Username or Password"}]})
        scopes = []
        for s in req.query_all.get("scope", []):
            scopes.extend(x for x in s.split(" ") if x)
        if user is None and not scopes:
            return req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "detail": {},
                                               "message": "Unauthorized"}]})
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if not parsed or parsed[0] != "repository":
                continue
            _, name, actions = parsed
            ns = name.split("/")[0]
            granted = []
            if user and ns in self.namespaces(user):
                if "push" in actions and name not in self.repos and "/" in name:
                    # Created at token time, private (CREATE_PRIVATE_REPO_ON_PUSH).
                    self.add_repo(ns, name[len(ns) + 1:], "private")
                if name in self.repos:
                    granted = [a for a in actions if a in ("pull", "push", "*", "delete")]
            elif self.visible(user, name):
                granted = [a for a in actions if a == "pull"]
            # A missing namespace gets empty scopes (CREATE_NAMESPACE_ON_PUSH False).
            access.append({"type": "repository", "name": name, "actions": granted})
        tok, _ = self.tokens.jwt({"iss": "quay", "sub": user or "(anonymous)", "aud": req.headers.get("Host"),
                                  "access": access}, kind="registry")
        req.reply(200, {"token": tok})

    def add_repo(self, ns, name, visibility, description=""):
        with self.lock:
            self.repos["%s/%s" % (ns, name)] = {"namespace": ns, "name": name, "visibility": visibility,
                                                "description": description, "created": time.time()}

    def challenge(self, req, info):
        c = 'Bearer realm="%s/v2/auth",service="%s"' % (req.origin(), req.headers.get("Host", ""))
        if info.get("name"):
            c += ',scope="repository:%s:%s"' % (info["name"], ",".join(registry_actions(req.command)))
        return c

    def authorize(self, req, info):
        t = req.bearer()
        rec = self.tokens.check(t) if t else None
        if t and rec is None:
            self.unauthorized(req, info)
            return False
        claims = rec["claims"] if rec else {"sub": "(anonymous)", "access": []}
        what, name = info["what"], info.get("name")
        if what == "base":
            if rec is None:
                self.unauthorized(req, info)
                return False
            return True
        if what == "catalog":
            self.catalog(req, claims)
            return False
        if not name:
            return True
        need = registry_actions(req.command)
        granted = set()
        for a in claims["access"]:
            if a["name"] == name:
                granted.update(a["actions"])
        if not all(a in granted or "*" in granted or (a == "delete" and "push" in granted) for a in need):
            self.unauthorized(req, info)
            return False
        if what == "manifest" and req.command == "PUT":
            ct = req.headers.get("Content-Type", "").split(";")[0].strip()
            if ct in ("", "application/json"):
                # Parsed as Docker schema 1 [Q endpoints/v2/manifest.py _parse_manifest].
                req.reply(400, {"errors": [{"code": "MANIFEST_INVALID", "detail": {"message":
                                            "manifest data does not match schema 1 (no Content-Type or "
                                            "application/json)"}, "message": "manifest invalid"}]})
                return False
        return True

    def unauthorized(self, req, info):
        # UNVERIFIED: the message text of Quay's 401.
        req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "detail": {},
                                    "message": "access to the requested resource is not authorized"}]},
                  {"WWW-Authenticate": self.challenge(req, info), "Docker-Distribution-Api-Version": "registry/2.0"})

    def proxy(self, req, info, path=None):
        if info.get("what") == "manifest" and req.command == "DELETE" and not info["ref"].startswith("sha256:"):
            # DELETE by tag -> 202 [Q endpoints/v2/manifest.py].
            if self.upstream_delete_tag(info["name"], info["ref"]):
                return req.reply(202, b"")
            return req.reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "detail": {}, "message": "manifest unknown"}]})
        if info.get("what") == "tags" and req.command == "GET" and info["name"] in self.repos \
                and not self.upstream_tags(info["name"]):
            # A repository made through the API but not pushed to yet.
            return req.reply(200, {"name": info["name"], "tags": []})
        return super().proxy(req, info, path)

    def sign_page(self, offset):
        raw = json.dumps({"offset": offset}).encode()
        mac = hmac.new(self.secret, raw, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac + raw).decode().rstrip("=")

    def read_page(self, token):
        try:
            data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, raw = data[:12], data[12:]
            if not hmac.compare_digest(mac, hmac.new(self.secret, raw, hashlib.sha256).digest()[:12]):
                return None
            return json.loads(raw)["offset"]
        except (ValueError, KeyError):
            return None

    def catalog(self, req, claims):
        """[Q endpoints/v2/catalog.py]: the visible repositories, n capped
        at 100, an encrypted next_page in Link."""
        user = None if claims["sub"] == "(anonymous)" else claims["sub"]
        names = sorted(n for n in self.repos if self.visible(user, n))
        try:
            n = min(max(int(req.query.get("n", "100")), 1), 100)
        except ValueError:
            n = 100
        start = 0
        if req.query.get("next_page"):
            start = self.read_page(req.query["next_page"])
            if start is None:
                return req.reply(400, {"errors": [{"code": "PAGINATION_NUMBER_INVALID", "detail": {},
                                                   "message": "invalid pagination number"}]})
        headers = {}
        if start + n < len(names):
            headers["Link"] = '<%s/v2/_catalog?%s>; rel="next"' % (
                req.origin(), urllib.parse.urlencode({"n": n, "next_page": self.sign_page(start + n)}))
        req.reply(200, {"repositories": names[start:start + n]}, headers)

    # ---- /api/v1 ---------------------------------------------------------------------------
    def api_error(self, req, status, error_type, message):
        """Quay's ApiException body [Q endpoints/exception.py]."""
        req.reply(status, {"detail": message, "error_message": message, "error_type": error_type,
                           "title": error_type, "type": "%s/api/v1/error/%s" % (req.origin(), error_type),
                           "status": status})

    def api(self, req):
        if req.bearer() != self.args.oauth_token:
            return self.api_error(req, 401, "invalid_token", "Requires authentication")
        p = req.url_path[len("/api/v1"):]
        m = req.command
        segs = [urllib.parse.unquote(s) for s in p.strip("/").split("/")] if p.strip("/") else []
        if segs[:1] == ["organization"]:
            if len(segs) == 1 and m == "POST":
                return self.create_org(req)
            if len(segs) == 2 and m == "GET":
                o = self.orgs.get(segs[1])
                if o is None:
                    return self.api_error(req, 404, "not_found", "Not Found")
                return req.reply(200, o)
        if segs[:1] == ["repository"]:
            if len(segs) == 1:
                if m == "POST":
                    return self.create_repo(req)
                if m == "GET":
                    return self.list_repos(req)
            if len(segs) >= 3:
                name = "%s/%s" % (segs[1], segs[2])
                if name not in self.repos:
                    return self.api_error(req, 404, "not_found", "Not Found")
                if len(segs) == 3:
                    if m == "GET":
                        return req.reply(200, self.repo_json(name, detail=True))
                    if m == "DELETE":
                        del self.repos[name]
                        for t in self.upstream_tags(name):
                            self.upstream_delete_tag(name, t)
                        return req.reply(204, b"")
                if len(segs) == 4 and segs[3] == "tag" and m == "GET":
                    return self.list_tags(req, name)
                if len(segs) == 5 and segs[3] == "tag" and m == "DELETE":
                    if not self.upstream_delete_tag(name, segs[4]):
                        return self.api_error(req, 404, "not_found", "Not Found")
                    return req.reply(204, b"")
        return self.api_error(req, 404, "not_found", "Not Found")

    def create_org(self, req):
        body = req.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return self.api_error(req, 400, "invalid_request", "Missing required field: name")
        name = body["name"]
        if not NAME_RE.match(name):
            return self.api_error(req, 400, "invalid_request", "Invalid namespace %s" % name)
        if self.controls["deny_create"]:
            return self.api_error(req, 403, "insufficient_scope", "Unauthorized")
        with self.lock:
            if name in self.namespaces():
                return self.api_error(req, 400, "invalid_request",
                                      "A user or organization with this name already exists")
            self.orgs[name] = {"name": name, "email": body.get("email", ""), "avatar": {}, "is_admin": True,
                               "is_member": True, "teams": {"owners": {"name": "owners", "role": "admin"}}}
        req.reply(201, json.dumps("Created").encode(), content_type="application/json")

    def create_repo(self, req):
        body = req.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("repository"), str) or \
                body.get("visibility") not in ("public", "private"):
            return self.api_error(req, 400, "invalid_request", "Missing or invalid repository/visibility")
        ns = body.get("namespace") or self.args.user
        name = body["repository"]
        if not REPO_RE.match(name):
            return self.api_error(req, 400, "invalid_request", "Invalid repository name")
        if ns not in self.namespaces() or self.controls["deny_create"]:
            return self.api_error(req, 403, "insufficient_scope", "Unauthorized")
        if "%s/%s" % (ns, name) in self.repos:
            return self.api_error(req, 400, "invalid_request", "Repository already exists")
        self.add_repo(ns, name, body["visibility"], body.get("description", ""))
        req.reply(201, {"namespace": ns, "name": name, "kind": body.get("repo_kind") or "image"})

    def repo_json(self, name, detail=False):
        r = self.repos[name]
        out = {"namespace": r["namespace"], "name": r["name"], "description": r["description"],
               "is_public": r["visibility"] == "public", "kind": "image", "state": "NORMAL",
               "is_starred": False}
        if detail:
            out["tags"] = {t: {"name": t} for t in self.upstream_tags(name)}
            out["can_write"] = out["can_admin"] = True
        return out

    def list_repos(self, req):
        q = req.query
        if not any(k in q for k in ("namespace", "starred", "public")):
            return self.api_error(req, 400, "invalid_request",
                                  "You must provide either a namespace, starred or public parameter")
        names = sorted(n for n in self.repos if ("namespace" not in q or self.repos[n]["namespace"] == q["namespace"])
                       and (q.get("public", "false") != "true" or self.repos[n]["visibility"] == "public"))
        if q.get("starred") == "true":
            names = []
        start = 0
        if q.get("next_page"):
            start = self.read_page(q["next_page"])
            if start is None:
                return self.api_error(req, 400, "invalid_request", "Invalid page token")
        size = self.args.page_size
        out = {"repositories": [self.repo_json(n) for n in names[start:start + size]]}
        if start + size < len(names):
            out["next_page"] = self.sign_page(start + size)
        req.reply(200, out)

    def list_tags(self, req, name):
        """[Q endpoints/api/tag.py]: page, limit (50, at most 100)."""
        try:
            page = max(int(req.query.get("page", "1")), 1)
            limit = min(max(int(req.query.get("limit", "50")), 1), 100)
        except ValueError:
            return self.api_error(req, 400, "invalid_request", "page and limit must be integers")
        images = self.tagged_images(name)
        if req.query.get("specificTag"):
            images = [i for i in images if i[0] == req.query["specificTag"]]
        start = (page - 1) * limit
        chunk = images[start:start + limit]
        now = int(time.time())
        tags = [{"name": t, "reference": d, "manifest_digest": d, "is_manifest_list": "list" in (mt or "") or
                 "index" in (mt or ""), "size": size, "start_ts": now,
                 "last_modified": time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime(now))}
                for t, d, mt, size in chunk]
        req.reply(200, {"tags": tags, "page": page, "has_additional": start + limit < len(images)})


if __name__ == "__main__":
    Quay.main()
