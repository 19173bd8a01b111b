#!/usr/bin/env python3
"""tests/standins/ghcr.py - a GitHub Container Registry stand-in
(registry-kinds.md section 3).

    ghcr.py --upstream URL --upstream-storage DIR --port-file FILE
            --user U --pat PAT [--org ORG[,ORG]] [--token-ttl N]

Listeners:
  registry  ghcr.io: challenge Bearer realm="<origin>/token",service="ghcr.io",
            scope=... (the placeholder repository:user/image:pull on /v2/ and
            _catalog); GET /token with Basic user:PAT (or anonymous, public
            packages only) -> {"token"} without expires_in; Basic straight on
            /v2/ is refused (DENIED "invalid token"); packages are created
            private on first push; _catalog answers 404; manifest DELETE is
            not supported; a PATCH whose Content-Length is over 4 MiB is
            refused with 416 REQUESTED_RANGE_NOT_SATISFIABLE (its size is in
            the request record as "bytes").
  api       api.github.com: the packages REST API for containers (list per
            org/user, get, versions with metadata.container.tags, delete a
            version or a package), PAT scopes read:packages /
            write:packages / delete:packages, Link paging (page, per_page),
            x-ratelimit-* headers.
Controls: pat_scopes=a,b (the PAT's scopes; default all three),
make_public=OWNER/NAME (what GitHub's UI does), expire_after_patches=N
(every token issued so far stops working once N more PATCHes have been
answered: a token dying mid-upload, at a known point), and the shared ones.
"""
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Standin, parse_scope, registry_actions  # noqa: E402

SERVICE = "ghcr.io"
DOCS = "https://docs.github.com/rest"
ALL_SCOPES = "read:packages,write:packages,delete:packages"
# The largest PATCH GHCR takes [section 3 Quirks: oras-project/rust-oci-client#35 quotes the answer to a larger
# one: 416 {"errors":[{"code":"REQUESTED_RANGE_NOT_SATISFIABLE","message":"the request body is too large and
# exceeds the maximum permissible limit of 4.00MiB"}]}; ocx-sh/ocx#237 the same]. UNVERIFIED by GitHub's docs:
# whether exactly 4 MiB passes, and whether a PATCH streamed without Content-Length (docker's) is bounded too
# (it is let through here).
MAX_PATCH = 4 * 1024 * 1024


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Ghcr(Standin):
    kind = "ghcr"
    listeners = ("registry", "api")
    extra_controls = {"pat_scopes": ALL_SCOPES, "expire_after_patches": 0}

    @classmethod
    def add_args(cls, p):
        p.add_argument("--pat", required=True, help="a personal access token (classic)")
        p.add_argument("--org", default="")

    def __init__(self, args):
        super().__init__(args)
        self.orgs = {o for o in args.org.split(",") if o}
        self.packages = {}
        self.version_ids = {}
        self.api_calls = 0

    def state_json(self):
        return {"packages": self.packages}

    def control(self, key, value):
        if key == "make_public":
            # GitHub changes visibility only in its UI: a control stands in for it.
            if value not in self.packages:
                return False
            self.packages[value]["visibility"] = "public"
            return True
        return super().control(key, value)

    def scopes(self):
        return set(s for s in str(self.controls["pat_scopes"]).split(",") if s)

    def owners(self):
        return {self.args.user.lower()} | {o.lower() for o in self.orgs}

    def pat_ok(self, user, pw):
        # The username is not checked by GHCR beyond being present (UNVERIFIED);
        # the PAT decides. The password is accepted too for a GITHUB_TOKEN-like use.
        return bool(user) and pw in (self.args.pat, self.args.password) and pw

    # ---- faults -----------------------------------------------------------------------
    def fault(self, req, status, retry_after):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if req.listener == "api":
            headers.update(self.rate_headers(remaining=0))
            return req.reply(status, {"message": "API rate limit exceeded for user ID 1.",
                                      "documentation_url": DOCS + "/overview/rate-limits-for-the-rest-api"}, headers)
        return super().fault(req, status, retry_after)

    # ---- registry -------------------------------------------------------------------------
    def route(self, req):
        if req.listener == "api":
            self.api(req)
            return True
        if req.url_path == "/token":
            self.token(req)
            return True
        return False

    def can(self, user, name, action):
        owner = name.split("/")[0].lower()
        pkg = self.packages.get(name)
        if action == "pull":
            if pkg and pkg["visibility"] == "public":
                return True
            return user is not None and owner in self.owners() and "read:packages" in self.scopes()
        if action == "push":
            return user is not None and owner in self.owners() and "write:packages" in self.scopes()
        if action == "delete":
            return user is not None and owner in self.owners() and "delete:packages" in self.scopes()
        return False

    def token(self, req):
        b = req.basic()
        user = None
        if b:
            if not self.pat_ok(*b):
                # UNVERIFIED: GHCR's answer to a bad PAT at the token endpoint.
                return req.reply(403, {"errors": [{"code": "DENIED", "message": "denied"}]})
            user = b[0]
        access = []
        for s in req.query_all.get("scope", []):
            for one in s.split(" "):
                parsed = parse_scope(one)
                if not parsed or parsed[0] != "repository":
                    continue
                acts = [a for a in parsed[2] if self.can(user, parsed[1], a)]
                access.append({"type": "repository", "name": parsed[1], "actions": acts})
        tok, _ = self.tokens.jwt({"iss": SERVICE, "sub": user or "", "access": access}, kind="registry")
        # No expires_in [section 3 Auth: toddysm].
        req.reply(200, {"token": tok})

    def challenge(self, req, info, error=None):
        name = info.get("name")
        if name:
            scope = "repository:%s:%s" % (name, "pull" if req.command in ("GET", "HEAD") else "pull,push"
                                          if req.command != "DELETE" else "delete")
        else:
            scope = "repository:user/image:pull"   # the placeholder [section 3 Auth]
        return 'Bearer realm="%s/token",service="%s",scope="%s"' % (req.origin(), SERVICE, scope)

    def authorize(self, req, info):
        if req.basic() is not None:
            # [section 3 Auth: argoproj-labs/argocd-image-updater#303]; status UNVERIFIED.
            req.reply(403, {"errors": [{"code": "DENIED", "message": "invalid token"}]})
            return False
        t = req.bearer()
        rec = self.tokens.check(t) if t else None
        if rec is None or rec.get("kind") != "registry":
            req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                      {"www-authenticate": self.challenge(req, info)})
            return False
        what, name = info["what"], info.get("name")
        if what == "catalog":
            # GHCR has no _catalog (Harbor's comment); body UNVERIFIED.
            req.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "404 page not found"}]})
            return False
        if not name:
            return True
        if what == "manifest" and req.command == "DELETE":
            # Not supported on the registry (Harbor's comment); status UNVERIFIED.
            req.reply(405, {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]})
            return False
        need = registry_actions(req.command)
        granted = set()
        for a in rec["claims"]["access"]:
            if a["name"] == name:
                granted.update(a["actions"])
        if not all(a in granted for a in need):
            req.reply(403 if rec["claims"]["sub"] else 401,
                      {"errors": [{"code": "DENIED", "message": "permission_denied: The token provided does not "
                                                              "match expected scopes."}]}
                      if rec["claims"]["sub"] else
                      {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                      {"www-authenticate": self.challenge(req, info)})
            return False
        if what == "upload" and req.command == "PATCH" and not self.patch_fits(req):
            return False
        if "push" in need and name not in self.packages:
            with self.lock:
                now = time.time()
                # "When you first publish a package, the default visibility is private".
                self.packages[name] = {"id": 1000 + len(self.packages), "visibility": "private",
                                       "created_at": iso(now), "updated_at": iso(now)}
        return True

    def patch_fits(self, req):
        """Records a PATCH's size; False (having refused it) when it is over MAX_PATCH."""
        length = req.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return True
        req.note(bytes=int(length))
        if int(length) <= MAX_PATCH:
            return True
        req.reply(416, {"errors": [{"code": "REQUESTED_RANGE_NOT_SATISFIABLE", "message":
                                    "the request body is too large and exceeds the maximum permissible "
                                    "limit of 4.00MiB"}]})
        return False

    def proxy_response_headers(self, req, info, status, headers):
        """Counts answered PATCHes down for expire_after_patches."""
        if info and info["what"] == "upload" and req.command == "PATCH" and status == 202:
            with self.lock:
                left = int(self.controls["expire_after_patches"])
                if left > 0:
                    self.controls["expire_after_patches"] = left - 1
                    if left == 1:
                        self.tokens.expire_all()
        return status, headers

    # ---- api.github.com ---------------------------------------------------------------------
    def rate_headers(self, remaining=None):
        used = self.api_calls
        return {"x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": str(5000 - used if remaining is None else remaining),
                "x-ratelimit-reset": str(int(time.time()) + 3600), "x-ratelimit-used": str(used),
                "x-ratelimit-resource": "core"}

    def gh_reply(self, req, status, body, headers=None):
        req.reply(status, body, dict(headers or {}, **self.rate_headers()))

    def gh_error(self, req, status, message, path="/packages/packages"):
        self.gh_reply(req, status, {"message": message, "documentation_url": DOCS + path})

    def api_user(self, req):
        h = req.headers.get("Authorization", "")
        scheme, _, tok = h.partition(" ")
        if not h:
            return None
        if scheme.lower() in ("bearer", "token") and tok.strip() == self.args.pat:
            return self.args.user
        return False

    def package_json(self, owner, name):
        p = self.packages[name]
        pkg = name[len(owner) + 1:]
        kind = "users" if owner.lower() == self.args.user.lower() else "orgs"
        return {"id": p["id"], "name": pkg, "package_type": "container",
                "owner": {"login": owner, "type": "User" if kind == "users" else "Organization"},
                "version_count": len(self.versions(name)), "visibility": p["visibility"],
                "url": "%s/%s/%s/packages/container/%s" % (self.origin("api"), kind, owner,
                                                           urllib.parse.quote(pkg, safe="")),
                "created_at": p["created_at"], "updated_at": p["updated_at"],
                "html_url": "https://github.com/%s/packages/container/package/%s" % (owner, pkg)}

    def versions(self, name):
        by = {}
        for tag, digest, _, _ in self.tagged_images(name):
            by.setdefault(digest, []).append(tag)
        out = []
        for digest, tags in by.items():
            vid = self.version_ids.setdefault((name, digest), 5000 + len(self.version_ids))
            p = self.packages[name]
            out.append({"id": vid, "name": digest, "created_at": p["created_at"], "updated_at": p["updated_at"],
                        "metadata": {"package_type": "container", "container": {"tags": sorted(tags)}}})
        return sorted(out, key=lambda v: -v["id"])

    def paged(self, req, items):
        """GitHub paging: page, per_page (30, at most 100), Link."""
        try:
            page = max(int(req.query.get("page", "1")), 1)
            per = min(max(int(req.query.get("per_page", "30")), 1), 100)
        except ValueError:
            return self.gh_error(req, 400, "Invalid page")
        start = (page - 1) * per
        last = max((len(items) + per - 1) // per, 1)
        links = []

        def link(n, rel):
            q = dict(req.query, page=str(n), per_page=str(per))
            return '<%s%s?%s>; rel="%s"' % (self.origin("api"), req.url_path, urllib.parse.urlencode(q), rel)
        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        self.gh_reply(req, 200, items[start:start + per], {"Link": ", ".join(links)} if links else None)

    def api(self, req):
        with self.lock:
            self.api_calls += 1
        user = self.api_user(req)
        if user is False:
            return self.gh_error(req, 401, "Bad credentials", "")
        if user is None:
            return self.gh_error(req, 401, "Requires authentication", "")
        raw = req.url_path
        m = re.match(r"^/(?:(orgs|users)/([^/]+)|user)/packages(?:/container/([^/]+)(?:/versions(?:/(\d+))?)?)?$", raw)
        if not m:
            return self.gh_error(req, 404, "Not Found", "")
        kind, owner, pkg, vid = m.groups()
        owner = owner or self.args.user
        if kind == "orgs" and owner.lower() not in {o.lower() for o in self.orgs}:
            return self.gh_error(req, 404, "Not Found", "")
        if "read:packages" not in self.scopes():
            return self.gh_error(req, 403, "You need at least read:packages scope to list packages.")
        if "/versions" not in raw and pkg is None:
            if req.command != "GET":
                return self.gh_error(req, 404, "Not Found", "")
            if req.query.get("package_type") is None:
                return self.gh_error(req, 422, 'Invalid request.\n\n"package_type" wasn\'t supplied.')
            names = sorted(n for n in self.packages if n.split("/")[0].lower() == owner.lower())
            items = [self.package_json(owner, n) for n in names] if req.query["package_type"] == "container" else []
            return self.paged(req, items)
        # package_name has "/" encoded as %2F [section 3 Listing: octocrab].
        name = "%s/%s" % (owner, urllib.parse.unquote(pkg))
        if name not in self.packages:
            return self.gh_error(req, 404, "Package not found.")
        if "/versions" not in raw:
            if req.command == "GET":
                return self.gh_reply(req, 200, self.package_json(owner, name))
            if req.command == "DELETE":
                if "delete:packages" not in self.scopes():
                    return self.gh_error(req, 403, "You need at least read:packages and delete:packages scopes "
                                                   "to delete a package.")
                for v in self.versions(name):
                    self.delete_version(name, v)
                del self.packages[name]
                return self.gh_reply(req, 204, b"")
            return self.gh_error(req, 404, "Not Found", "")
        versions = self.versions(name)
        if vid is None:
            if req.command != "GET":
                return self.gh_error(req, 404, "Not Found", "")
            return self.paged(req, versions)
        v = next((x for x in versions if x["id"] == int(vid)), None)
        if v is None:
            return self.gh_error(req, 404, "Package version not found.")
        if req.command == "GET":
            return self.gh_reply(req, 200, v)
        if req.command == "DELETE":
            if "delete:packages" not in self.scopes():
                return self.gh_error(req, 403, "You need at least read:packages and delete:packages scopes "
                                               "to delete a package version.")
            self.delete_version(name, v)
            return self.gh_reply(req, 204, b"")
        return self.gh_error(req, 404, "Not Found", "")

    def delete_version(self, name, v):
        for tag in v["metadata"]["container"]["tags"]:
            self.upstream_delete_tag(name, tag)
        self.upstream_delete_manifest(name, v["name"])


if __name__ == "__main__":
    Ghcr.main()
