#!/usr/bin/env python3
"""tests/standins/acr.py - an Azure Container Registry stand-in
(registry-kinds.md section 8).

    acr.py --upstream URL --upstream-storage DIR --port-file FILE
           --user ADMIN --password P --client-id ID --client-secret S
           --tenant TID [--token-ttl N] [--max-page N]

Listeners:
  registry  <reg>.azurecr.io: /v2/ (Basic admin user or service principal
            straight on the registry, or Bearer ACR access tokens; tags/list
            needs metadata_read, _catalog registry:catalog:*), the
            challenge Bearer realm="<origin>/oauth2/token",service="<host>",
            scope=...; GET/POST /oauth2/token, POST /oauth2/exchange; the
            ACR REST /acr/v1/...; _catalog and tags/list paged with a
            relative Link </v2/...?last=X&n=N&orderby=>; rel="next".
  aad       login.microsoftonline.com: POST /<tenant>/oauth2/v2.0/token
            (client credentials) -> an Entra ID access token to exchange.
GET /_standin/refresh-token gives an ACR refresh token for the admin user
(what `az acr login --expose-token` hands out); docker login takes it with
the username 00000000-0000-0000-0000-000000000000.
Controls: anonymous_pull=1|0 (0 by default, as on ACR): with it, GET
/oauth2/token without Authorization gives a token for the repository
actions pull and metadata_read it was asked for (nothing else: no
registry:catalog:*, no push); without it such a request is refused 401
with ACR's error body. And the shared ones.
"""
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Standin, parse_scope, registry_actions  # noqa: E402

NULL_USER = "00000000-0000-0000-0000-000000000000"
AUTH_MSG = "authentication required, visit https://aka.ms/acr/authorization for more information."
REFRESH_TTL = 3 * 3600   # UNVERIFIED: ACR refresh tokens live about 3 hours


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%07dZ" % int((t % 1) * 1e7)


# What an anonymous caller may do with anonymous pull on ["makes all registry content publicly available for
# read (pull) actions"; "Only data-plane operations are available to unauthenticated clients":
# learn.microsoft.com/azure/container-registry/anonymous-pull-access]. Tag lists (metadata_read) too, per an ACR
# maintainer in Azure/acr#663 and the Azure SDKs' anonymous list-tags samples; the catalog is left out.
# UNVERIFIED: ACR's answer to a scope-less anonymous request (a token here) and the body of its refusal.
ANONYMOUS_ACTIONS = ("pull", "metadata_read")


class Acr(Standin):
    kind = "acr"
    listeners = ("registry", "aad")
    extra_controls = {"anonymous_pull": 0}

    @classmethod
    def add_args(cls, p):
        p.add_argument("--client-id", required=True)
        p.add_argument("--client-secret", required=True)
        p.add_argument("--tenant", required=True)
        p.add_argument("--max-page", type=int, default=0,
                       help="the most entries a _catalog or tags/list page holds, whatever n asks (UNVERIFIED: "
                            "ACR's own cap; 0: none)")

    def __init__(self, args):
        super().__init__(args)
        self.attrs = {}   # repository -> changeableAttributes

    def host(self):
        return "127.0.0.1:%d" % self.ports["registry"]

    def state_json(self):
        return {"attributes": self.attrs}

    def standin_extra(self, req, path):
        if path == "/_standin/refresh-token":
            tok = self.refresh_token(self.args.user)
            req.reply(200, {"refresh_token": tok})
            return True
        return False

    # ---- credentials -------------------------------------------------------------------
    def basic_user(self, req):
        """The caller of Basic credentials (admin, service principal, or the
        null user with a refresh token); None if absent, False if wrong."""
        b = req.basic()
        if not b:
            return None
        user, pw = b
        if user == self.args.user and pw == self.args.password:
            return user
        if user == self.args.client_id and pw == self.args.client_secret:
            return user
        if user == NULL_USER and pw:
            rec = self.tokens.check(pw)
            if rec and rec.get("kind") == "refresh":
                return rec["who"]
        return False

    def refresh_token(self, who):
        tok, _ = self.tokens.jwt({"iss": "Azure Container Registry", "aud": self.host(), "sub": who,
                                  "grant_type": "refresh_token", "tenant": self.args.tenant},
                                 ttl=REFRESH_TTL, kind="refresh", who=who)
        return tok

    def access_token(self, who, scopes, grant):
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if parsed:
                access.append({"type": parsed[0], "name": parsed[1], "actions": parsed[2]})
        tok, _ = self.tokens.jwt({"iss": "Azure Container Registry", "aud": self.host(), "sub": who,
                                  "access": access, "grant_type": grant, "tenant": self.args.tenant},
                                 kind="access")
        return tok

    def oauth_error(self, req, status, message):
        # UNVERIFIED: the error bodies of /oauth2/*.
        req.reply(status, {"errors": [{"code": "UNAUTHORIZED", "message": message}]},
                  {"Www-Authenticate": 'Basic realm="%s/oauth2/token"' % req.origin()} if status == 401 else None)

    # ---- routes --------------------------------------------------------------------------------
    def route(self, req):
        if req.listener == "aad":
            self.aad(req)
            return True
        p = req.url_path
        if p == "/oauth2/token":
            self.oauth_token(req)
            return True
        if p == "/oauth2/exchange":
            self.oauth_exchange(req)
            return True
        if p.startswith("/acr/v1/"):
            self.rest(req)
            return True
        return False

    def aad(self, req):
        """Entra ID client credentials (enough of it to feed /oauth2/exchange)."""
        m = re.match(r"^/([^/]+)/oauth2/v2\.0/token$", req.url_path)
        if not m or req.command != "POST":
            return req.reply(404, {"error": "not_found"})
        form = req.form()
        if m.group(1) != self.args.tenant:
            return req.reply(400, {"error": "invalid_request", "error_description":
                                   "AADSTS90002: Tenant '%s' not found." % m.group(1)})
        if form.get("grant_type") != "client_credentials":
            return req.reply(400, {"error": "unsupported_grant_type", "error_description":
                                   "AADSTS70003: The app requested an unsupported grant type."})
        if form.get("client_id") != self.args.client_id or form.get("client_secret") != self.args.client_secret:
            return req.reply(401, {"error": "invalid_client", "error_description":
                                   "AADSTS7000215: Invalid client secret provided."})
        tok, rec = self.tokens.jwt({"iss": "https://sts.windows.net/%s/" % self.args.tenant,
                                    "aud": "https://containerregistry.azure.net", "tid": self.args.tenant,
                                    "appid": self.args.client_id}, ttl=3599, kind="aad", who=self.args.client_id)
        req.reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": tok})

    def oauth_exchange(self, req):
        """POST /oauth2/exchange: an Entra ID token for an ACR refresh token."""
        if req.command != "POST":
            return req.reply(405, "Method Not Allowed")
        form = req.form()
        if form.get("service") != self.host():
            return self.oauth_error(req, 400, "invalid service")
        grant = form.get("grant_type")
        if grant not in ("access_token", "access_token_refresh_token", "refresh_token"):
            return self.oauth_error(req, 400, "unsupported grant_type")
        if grant == "refresh_token":
            rec = self.tokens.check(form.get("refresh_token", ""))
            if not rec or rec.get("kind") != "refresh":
                return self.oauth_error(req, 401, "invalid refresh token")
            return req.reply(200, {"refresh_token": self.refresh_token(rec["who"])})
        rec = self.tokens.check(form.get("access_token", ""))
        if not rec or rec.get("kind") != "aad" or (form.get("tenant") and form["tenant"] != self.args.tenant):
            return self.oauth_error(req, 401, "invalid Entra ID access token")
        req.reply(200, {"refresh_token": self.refresh_token(rec["who"])})

    def oauth_token(self, req):
        """GET with Basic, or POST grant_type=refresh_token|password [AAD-OAuth.md]."""
        if req.command in ("GET", "HEAD"):
            q = req.query
            scopes = [x for s in req.query_all.get("scope", []) for x in s.split(" ") if x]
            who = self.basic_user(req)
            if who is None:
                return self.anonymous_token(req, scopes)
            if not who:
                return self.oauth_error(req, 401, "invalid credentials")
            grant = "password"
        elif req.command == "POST":
            q = req.form()
            raw = urllib.parse.parse_qs(req.body().decode("latin-1"))
            scopes = [x for s in raw.get("scope", []) for x in s.split(" ") if x]
            grant = q.get("grant_type")
            if grant == "refresh_token":
                rec = self.tokens.check(q.get("refresh_token", ""))
                if not rec or rec.get("kind") != "refresh":
                    return self.oauth_error(req, 401, "invalid refresh token")
                who = rec["who"]
            elif grant == "password":
                who = self.args.user if (q.get("username"), q.get("password")) == (self.args.user, self.args.password) \
                    else None
                if not who:
                    return self.oauth_error(req, 401, "invalid username or password")
            else:
                return self.oauth_error(req, 400, "unsupported grant_type")
        else:
            return req.reply(405, "Method Not Allowed")
        if q.get("service") != self.host():
            return self.oauth_error(req, 400, "invalid service")
        # The field is access_token, not token [section 8 Auth].
        req.reply(200, {"access_token": self.access_token(who, scopes, grant)})

    def anonymous_token(self, req, scopes):
        """GET /oauth2/token without Authorization: a token for the read
        actions asked for when anonymous pull is on, else 401."""
        if not self.controls["anonymous_pull"]:
            return self.oauth_error(req, 401, AUTH_MSG)
        if req.query.get("service") != self.host():
            return self.oauth_error(req, 400, "invalid service")
        kept = []
        for s in scopes:
            parsed = parse_scope(s)
            if parsed and parsed[0] == "repository":
                acts = [a for a in parsed[2] if a in ANONYMOUS_ACTIONS]
                kept.append("repository:%s:%s" % (parsed[1], ",".join(acts)))
        req.reply(200, {"access_token": self.access_token("", kept, "anonymous")})

    # ---- registry ------------------------------------------------------------------------------
    def needed(self, req, info):
        """(scope type, name, action) a request needs [section 8: tags/list
        needs metadata_read]."""
        what, name = info["what"], info.get("name")
        if what == "catalog":
            return "registry", "catalog", "*"
        if what == "tags":
            return "repository", name, "metadata_read"
        acts = registry_actions(req.command)
        return "repository", name, "push" if "push" in acts else acts[0]

    def challenge(self, req, need):
        c = 'Bearer realm="%s/oauth2/token",service="%s"' % (req.origin(), self.host())
        if need:
            c += ',scope="%s:%s:%s"' % need
        return c

    def deny(self, req, need, error=None):
        detail = [{"Type": need[0], "Name": need[1], "Action": need[2]}] if need else None
        c = self.challenge(req, need) + (',error="%s"' % error if error else "")
        req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": AUTH_MSG, "detail": detail}]},
                  {"Www-Authenticate": c, "Docker-Distribution-Api-Version": "registry/2.0"})

    def caller(self, req, need):
        """True if the request may do `need`, else sends the refusal."""
        b = self.basic_user(req)
        if b:
            return True   # admin / service principal: Basic straight on the registry
        t = req.bearer()
        rec = self.tokens.check(t) if t else None
        if rec is None or rec.get("kind") != "access":
            self.deny(req, need, "invalid_token" if t or b is False else None)
            return False
        if need is None:
            return True
        for a in rec["claims"]["access"]:
            if a["type"] == need[0] and a["name"] == need[1] and (need[2] in a["actions"] or "*" in a["actions"]):
                return True
        self.deny(req, need, "insufficient_scope")
        return False

    def authorize(self, req, info):
        need = None if info["what"] in ("base", "unknown") else self.needed(req, info)
        if not self.caller(req, need):
            return False
        name = info.get("name")
        if name and need and need[2] == "push" and name not in self.upstream_catalog() and self.controls["deny_create"]:
            # UNVERIFIED: a push that would create a repository, refused.
            req.reply(403, {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]})
            return False
        if name and req.command in ("DELETE", "PUT") and info["what"] == "manifest":
            attrs = self.attrs.get(name, {})
            key = "deleteEnabled" if req.command == "DELETE" else "writeEnabled"
            if attrs.get(key) is False:
                # Deletion/writes can be disabled per repository [section 8
                # Deletion]; the answer is UNVERIFIED.
                req.reply(405, {"errors": [{"code": "DENIED", "message":
                                            "The operation is disallowed on this registry, repository or image."}]})
                return False
        return True

    def page(self, req, items, path, field, extra=None):
        """n/last paging with ACR's relative Link and its extra orderby=."""
        try:
            n = int(req.query.get("n", "100"))
        except ValueError:
            n = 100
        if self.args.max_page > 0:
            n = min(n, self.args.max_page)
        last = req.query.get("last", "")
        rest = [x for x in items if x > last]
        chunk = rest[:max(n, 1)]
        headers = {}
        if len(rest) > len(chunk):
            headers["Link"] = '<%s?%s>; rel="next"' % (path, urllib.parse.urlencode(
                [("last", chunk[-1]), ("n", n), ("orderby", "")]))
        body = dict(extra or {}, **{field: chunk})
        req.reply(200, body, headers)

    def proxy(self, req, info, path=None):
        what = info.get("what")
        if what == "catalog" and req.command == "GET":
            return self.page(req, self.upstream_catalog(), "/v2/_catalog", "repositories")
        if what == "tags" and req.command == "GET":
            tags = self.upstream_tags(info["name"])
            if not tags and info["name"] not in self.upstream_catalog():
                return req.reply(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry",
                                                   "detail": {"name": info["name"]}}]})
            return self.page(req, tags, "/v2/%s/tags/list" % info["name"], "tags", {"name": info["name"]})
        if what == "manifest" and req.command == "DELETE" and not info["ref"].startswith("sha256:"):
            # Harbor's DeleteTag on ACR: DELETE /v2/<repo>/manifests/<tag> -> 202.
            if self.upstream_delete_tag(info["name"], info["ref"]):
                return req.reply(202, b"")
            return req.reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest tagged by \"%s\" is not found"
                                               % info["ref"]}]})
        return super().proxy(req, info, path)

    # ---- /acr/v1 -------------------------------------------------------------------------------
    def attributes(self, name):
        a = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
        a.update(self.attrs.get(name, {}))
        return a

    def rest(self, req):
        p = req.url_path[len("/acr/v1/"):]
        m = req.command
        if p == "_catalog":
            if not self.caller(req, ("registry", "catalog", "*")):
                return
            return self.page(req, self.upstream_catalog(), "/acr/v1/_catalog", "repositories")
        mm = re.match(r"^(.+?)/(_tags|_manifests)(?:/([^/]+))?$", p)
        name = mm.group(1) if mm else p
        if name not in self.upstream_catalog():
            return req.reply(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]})
        action = "metadata_read" if m == "GET" else "delete" if m == "DELETE" else "metadata_write"
        if not self.caller(req, ("repository", name, action)):
            return
        images = self.tagged_images(name)
        now = iso(time.time())
        if not mm:
            if m == "GET":
                return req.reply(200, {"registry": self.host(), "imageName": name, "createdTime": now,
                                       "lastUpdateTime": now, "manifestCount": len({d for _, d, _, _ in images}),
                                       "tagCount": len(images), "changeableAttributes": self.attributes(name)})
            if m == "PATCH":
                body = req.json_body()
                if not isinstance(body, dict):
                    return req.reply(400, {"errors": [{"code": "BAD_REQUEST", "message": "invalid body"}]})
                self.attrs.setdefault(name, {}).update({k: bool(v) for k, v in body.items() if k in
                                                        ("deleteEnabled", "writeEnabled", "readEnabled", "listEnabled")})
                return req.reply(200, {"registry": self.host(), "imageName": name,
                                       "changeableAttributes": self.attributes(name)})
            if m == "DELETE":
                if not self.attributes(name)["deleteEnabled"]:
                    return req.reply(405, {"errors": [{"code": "DENIED", "message":
                                                       "The operation is disallowed on this registry, repository or image."}]})
                for t, d, _, _ in images:
                    self.upstream_delete_tag(name, t)
                return req.reply(202, {"manifestsDeleted": sorted({d for _, d, _, _ in images}),
                                       "tagsDeleted": [t for t, _, _, _ in images]})
        coll, ref = mm.group(2), mm.group(3)
        if coll == "_tags":
            tags = [{"name": t, "digest": d, "createdTime": now, "lastUpdateTime": now, "signed": False,
                     "changeableAttributes": self.attributes(name)} for t, d, _, _ in images]
            if ref is None:
                return req.reply(200, {"registry": self.host(), "imageName": name, "tags": tags})
            hit = next((t for t in tags if t["name"] == ref), None)
            if hit is None:
                return req.reply(404, {"errors": [{"code": "TAG_UNKNOWN", "message": "the specified tag does not exist"}]})
            if m == "GET":
                return req.reply(200, {"registry": self.host(), "imageName": name, "tag": hit})
            if m == "DELETE":
                if not self.attributes(name)["deleteEnabled"]:
                    return req.reply(405, {"errors": [{"code": "DENIED", "message":
                                                       "The operation is disallowed on this registry, repository or image."}]})
                self.upstream_delete_tag(name, ref)
                return req.reply(202, b"")
        if coll == "_manifests" and ref is None and m == "GET":
            by = {}
            for t, d, mt, size in images:
                by.setdefault(d, {"digest": d, "imageSize": size, "createdTime": now, "lastUpdateTime": now,
                                  "mediaType": mt, "tags": [], "changeableAttributes": self.attributes(name)})["tags"].append(t)
            return req.reply(200, {"registry": self.host(), "imageName": name, "manifests": list(by.values())})
        return req.reply(405, {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]})


if __name__ == "__main__":
    Acr.main()
