#!/usr/bin/env python3
"""tests/standins/gar.py - a Google Artifact Registry stand-in
(registry-kinds.md section 6; the OAuth2 JWT-bearer flow of section 10).

    gar.py --upstream URL --upstream-storage DIR --port-file FILE
           --public-key PEM --project P --location L [--client-email E]
           [--repository-required] [--token-ttl N (default 3600)]

Listeners:
  oauth     oauth2.googleapis.com: POST /token with grant_type=urn:ietf:params:
            oauth:grant-type:jwt-bearer and an RS256 assertion signed with the
            service account's key (verified with --public-key by hand: see
            rsakeys.py) -> {"access_token":"ya29...","expires_in","token_type"}
            or an OAuth2 error {"error","error_description"} with 400.
  api       artifactregistry.googleapis.com v1: repositories create (an
            Operation; 409 ALREADY_EXISTS), get, list (pageSize/pageToken),
            delete; dockerImages list; operations get. Bearer ya29 tokens
            with the cloud-platform scope.
  registry  <location>-docker.pkg.dev: /v2/<project>/<repository>/<image>;
            Authorization: Bearer <ya29 access token> directly (Harbor's GAR
            adapter), or the registry token flow (GET /v2/token with Basic
            oauth2accesstoken:<ya29>, _json_key:<key JSON> or
            _json_key_base64:<base64 of it>). A missing repository answers
            404 NAME_UNKNOWN when --repository-required (else the push
            creates it). Upload Locations are /artifacts-uploads/... on the
            same host and need the same Authorization.
"""
import base64
import json
import os
import re
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rsakeys  # noqa: E402
from common import Standin, parse_scope, registry_actions  # noqa: E402

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
WRITE_SCOPES = {CLOUD_PLATFORM, "https://www.googleapis.com/auth/devstorage.read_write",
                "https://www.googleapis.com/auth/devstorage.full_control"}
READ_SCOPES = WRITE_SCOPES | {"https://www.googleapis.com/auth/devstorage.read_only",
                              "https://www.googleapis.com/auth/cloud-platform.read-only"}
REPO_ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
SKEW = 300


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def gerror(code, status, message):
    """Google's API error body."""
    return {"error": {"code": code, "message": message, "status": status}}


class Gar(Standin):
    kind = "gar"
    listeners = ("registry", "oauth", "api")
    token_ttl_default = 3600   # Google's access tokens live 1 h [section 6 Auth]

    @classmethod
    def add_args(cls, p):
        p.add_argument("--public-key", required=True, help="the service account's public key (PEM)")
        p.add_argument("--project", default="replica-test")
        p.add_argument("--location", default="us")
        p.add_argument("--client-email", default="replica@replica-test.iam.gserviceaccount.com")
        p.add_argument("--repository-required", action="store_true",
                       help="a push needs the repository created first (create-on-push is UNVERIFIED)")

    def __init__(self, args):
        super().__init__(args)
        with open(args.public_key) as f:
            self.key = rsakeys.public_numbers(f.read())
        self.repos = {}
        self.operations = {}
        self.uploads = {}   # upload id -> repository name upstream

    def state_json(self):
        return {"repositories": sorted(self.repos)}

    def parent(self):
        return "projects/%s/locations/%s" % (self.args.project, self.args.location)

    def host(self):
        return "127.0.0.1:%d" % self.ports["registry"]

    # ---- faults -----------------------------------------------------------------
    def fault(self, req, status, retry_after):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        # UNVERIFIED: GAR's 429 format [section 6 gaps]; Google's API error shape is used.
        msg = ("Quota exceeded for quota metric 'Requests' and limit 'Requests per project per region "
               "per minute' of service 'artifactregistry.googleapis.com'")
        if req.listener == "registry":
            return req.reply(status, {"errors": [{"code": "TOOMANYREQUESTS", "message": msg}]}, headers)
        if req.listener == "oauth":
            return req.reply(status, {"error": "rate_limit_exceeded", "error_description": msg}, headers)
        req.reply(status, gerror(status, "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE", msg), headers)

    # ---- oauth: the JWT-bearer grant [section 10] -----------------------------------
    def route(self, req):
        if req.listener == "oauth":
            if req.url_path == "/token" and req.command == "POST":
                self.oauth_token(req)
            else:
                req.reply(404, {"error": "not_found"})
            return True
        if req.listener == "api":
            self.api(req)
            return True
        if req.url_path == "/v2/token":
            self.registry_token(req)
            return True
        if req.url_path.startswith("/artifacts-uploads/"):
            self.artifact_upload(req)
            return True
        return False

    def oauth_error(self, req, error, description, status=400):
        # UNVERIFIED: Google's error statuses/bodies [section 10]; these are the
        # RFC 6749 section 5.2 errors with Google's usual wording.
        req.reply(status, {"error": error, "error_description": description})

    def oauth_token(self, req):
        form = req.form()
        if form.get("grant_type") != JWT_BEARER:
            return self.oauth_error(req, "unsupported_grant_type", "Invalid grant_type: %s" % form.get("grant_type", ""))
        assertion = form.get("assertion", "")
        parts = assertion.split(".")
        try:
            if len(parts) != 3:
                raise ValueError
            header = json.loads(rsakeys.b64url_decode(parts[0]))
            claims = json.loads(rsakeys.b64url_decode(parts[1]))
            sig = rsakeys.b64url_decode(parts[2])
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return self.oauth_error(req, "invalid_grant", "Invalid JWT: the assertion is not a JWS (header.payload.signature).")
        if header.get("alg") != "RS256":
            return self.oauth_error(req, "invalid_grant", "Invalid JWT: alg must be RS256, not %r." % header.get("alg"))
        n, e = self.key
        if not rsakeys.verify_rs256(n, e, (parts[0] + "." + parts[1]).encode(), sig):
            return self.oauth_error(req, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("iss") != self.args.client_email:
            return self.oauth_error(req, "invalid_grant", "Invalid grant: account not found")
        aud = "%s/token" % req.origin()
        if claims.get("aud") != aud:
            return self.oauth_error(req, "invalid_grant",
                                    "Invalid JWT: Failed audience check. The right audience is %s" % aud)
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp <= iat \
                or exp <= now or iat > now + SKEW:
            return self.oauth_error(req, "invalid_grant",
                                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                    "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            return self.oauth_error(req, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token, rec = self.tokens.issue("ya29." + base64.urlsafe_b64encode(os.urandom(96)).decode().rstrip("="),
                                       kind="access", who=claims["iss"], scopes=scope.split())
        req.reply(200, {"access_token": token, "expires_in": rec["ttl"], "token_type": "Bearer"},
                  {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"})

    def access_token(self, token):
        rec = self.tokens.check(token) if token and token.startswith("ya29.") else None
        return rec if rec and rec.get("kind") == "access" else None

    # ---- registry auth ----------------------------------------------------------------
    def resource(self, name):
        """(project, repository, image) of a registry name."""
        parts = (name or "").split("/")
        return (parts + [None, None, None])[:3] if len(parts) < 3 else (parts[0], parts[1], "/".join(parts[2:]))

    def challenge(self, req, info):
        c = 'Bearer realm="%s/v2/token"' % req.origin()
        if info.get("name"):
            # Repository endpoints send service and scope; /v2/ does not [section 6 Auth].
            action = "pull" if req.command in ("GET", "HEAD") else "pull,push"
            c += ',service="%s",scope="repository:%s:%s"' % (req.headers.get("Host", self.host()), info["name"], action)
        return c

    def unauthenticated(self, req, info):
        p, r, _ = self.resource(info.get("name"))
        perm = "downloadArtifacts" if req.command in ("GET", "HEAD") else "uploadArtifacts"
        msg = ("Unauthenticated request. Unauthenticated requests do not have permission "
               '"artifactregistry.repositories.%s" on resource "projects/%s/locations/%s/repositories/%s" '
               "(or it may not exist)" % (perm, p or self.args.project, self.args.location, r or ""))
        req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": msg}]},
                  {"Www-Authenticate": self.challenge(req, info),
                   "Docker-Distribution-Api-Version": "registry/2.0"})

    def denied(self, req, name, perm):
        p, r, _ = self.resource(name)
        req.reply(403, {"errors": [{"code": "DENIED", "message":
                                    'Permission "artifactregistry.repositories.%s" denied on resource '
                                    '"projects/%s/locations/%s/repositories/%s" (or it may not exist)'
                                    % (perm, p, self.args.location, r)}]})

    def caller(self, req):
        """("access", scopes) for a ya29 token, ("registry", access list)
        for a registry token, None otherwise."""
        t = req.bearer()
        if not t:
            return None
        rec = self.access_token(t)
        if rec:
            return "access", rec["scopes"]
        rec = self.tokens.check(t)
        if rec and rec.get("kind") == "registry":
            return "registry", rec["access"]
        return None

    def authorize(self, req, info):
        who = self.caller(req)
        if who is None:
            self.unauthenticated(req, info)
            return False
        name = info.get("name")
        if info["what"] in ("base", "catalog", "unknown") or not name:
            return True
        actions = registry_actions(req.command)
        need = "push" if "push" in actions else actions[0]
        perm = {"pull": "downloadArtifacts", "push": "uploadArtifacts", "delete": "deleteArtifacts"}[need]
        if who[0] == "access":
            ok = bool(set(who[1]) & (READ_SCOPES if need == "pull" else WRITE_SCOPES))
        else:
            ok = any(a["name"] == name and (need in a["actions"] or "*" in a["actions"]) for a in who[1])
        if not ok:
            self.unauthenticated(req, info) if who[0] == "registry" else self.denied(req, name, perm)
            return False
        p, r, image = self.resource(name)
        if p != self.args.project or not image:
            self.denied(req, name, perm)
            return False
        if r not in self.repos:
            if self.args.repository_required or need != "push":
                # [section 6 Creation]: GAR repositories must exist before a push.
                req.reply(404, {"errors": [{"code": "NAME_UNKNOWN", "message": 'Repository "%s" not found' % r}]})
                return False
            self.create_repo(r, {"format": "DOCKER"})   # UNVERIFIED: create-on-push
        return True

    def registry_token(self, req):
        """GET /v2/token?scope=...&service=... with Basic [section 6 Auth]."""
        b = req.basic()
        ok = False
        if b:
            user, pw = b
            if user == "oauth2accesstoken":
                ok = self.access_token(pw) is not None
            elif user in ("_json_key", "_json_key_base64"):
                try:
                    raw = base64.b64decode(pw).decode() if user == "_json_key_base64" else pw
                    key = json.loads(raw)
                    ok = (key.get("type") == "service_account" and key.get("client_email") == self.args.client_email
                          and rsakeys.public_numbers(key["private_key"]) == self.key)
                except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
                    ok = False
            if not ok:
                # UNVERIFIED: the token endpoint's answer to bad credentials.
                return req.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message":
                                                   "Not Authorized."}]})
        scopes = []
        for s in req.query_all.get("scope", []):
            scopes.extend(x for x in s.split(" ") if x)
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if parsed and ok:
                access.append({"type": parsed[0], "name": parsed[1], "actions": parsed[2]})
        token, rec = self.tokens.issue(kind="registry", access=access)
        req.reply(200, {"token": token, "access_token": token, "expires_in": rec["ttl"],
                        "issued_at": rfc3339(rec["iat"])})

    # ---- uploads under /artifacts-uploads/ -------------------------------------------
    def map_location(self, req, value):
        value = super().map_location(req, value)
        m = re.match(r"^(https?://[^/]+)?/v2/(.+)/blobs/uploads/([^/?]+)(\?.*)?$", value)
        if not m:
            return value
        name, upload = m.group(2), m.group(3)
        p, r, _ = self.resource(name)
        self.uploads[upload] = name
        # UNVERIFIED: the exact form of GAR's upload URLs (only the
        # /artifacts-uploads/ prefix on the same host is documented).
        return "%s/artifacts-uploads/namespaces/%s/repositories/%s/uploads/%s%s" % (
            m.group(1) or "", p, r, upload, m.group(4) or "")

    def artifact_upload(self, req):
        m = re.match(r"^/artifacts-uploads/namespaces/([^/]+)/repositories/([^/]+)/uploads/([^/]+)$", req.url_path)
        name = self.uploads.get(m.group(3)) if m else None
        if not name:
            return req.reply(404, {"errors": [{"code": "BLOB_UPLOAD_UNKNOWN", "message": "blob upload unknown"}]})
        info = {"what": "upload", "name": name, "ref": m.group(3)}
        if not self.authorize(req, info):
            return
        q = urllib.parse.urlsplit(req.path).query
        self.proxy(req, info, "/v2/%s/blobs/uploads/%s%s" % (name, m.group(3), "?" + q if q else ""))

    def proxy(self, req, info, path=None):
        if info.get("what") == "manifest" and req.command == "DELETE" and not info["ref"].startswith("sha256:"):
            # DELETE by tag (Distribution 2.8 only deletes by digest).
            if self.upstream_delete_tag(info["name"], info["ref"]):
                return req.reply(202, b"")
            return req.reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        return super().proxy(req, info, path)

    # ---- artifactregistry.googleapis.com v1 -------------------------------------------
    def create_repo(self, rid, body):
        now = time.time()
        self.repos[rid] = {"name": "%s/repositories/%s" % (self.parent(), rid),
                           "format": body.get("format", "DOCKER"), "description": body.get("description", ""),
                           "labels": body.get("labels") or {}, "mode": "STANDARD_REPOSITORY",
                           "dockerConfig": body.get("dockerConfig") or {}, "createTime": rfc3339(now),
                           "updateTime": rfc3339(now), "sizeBytes": "0"}
        return self.repos[rid]

    def operation(self, response, typ):
        name = "%s/operations/%s" % (self.parent(), uuid.uuid4())
        op = {"name": name, "metadata": {"@type": "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata"},
              "done": True}
        if response is not None:
            op["response"] = dict(response, **{"@type": typ})
        else:
            op["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        self.operations[name] = op
        return op

    def api(self, req):
        t = req.bearer()
        rec = self.access_token(t)
        if rec is None:
            if t:
                return req.reply(401, gerror(401, "UNAUTHENTICATED",
                                             "Request had invalid authentication credentials. Expected OAuth 2 access "
                                             "token, login cookie or other valid authentication credential. See "
                                             "https://developers.google.com/identity/sign-in/web/devconsole-project."),
                                 {"Www-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'})
            return req.reply(401, gerror(401, "UNAUTHENTICATED",
                                         "Request is missing required authentication credential. Expected OAuth 2 "
                                         "access token, login cookie or other valid authentication credential. See "
                                         "https://developers.google.com/identity/sign-in/web/devconsole-project."),
                             {"Www-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        if CLOUD_PLATFORM not in rec["scopes"] and not (
                req.command == "GET" and "https://www.googleapis.com/auth/cloud-platform.read-only" in rec["scopes"]):
            return req.reply(403, gerror(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."))
        m = re.match(r"^/v1/projects/([^/]+)/locations/([^/]+)/(repositories|operations)(?:/([^/]+))?(?:/(dockerImages))?$",
                     req.url_path)
        if not m:
            return req.reply(404, gerror(404, "NOT_FOUND", "Requested entity was not found."))
        project, location, coll, ident, sub = m.groups()
        if project != self.args.project or location != self.args.location:
            return req.reply(403, gerror(403, "PERMISSION_DENIED",
                                         "Permission 'artifactregistry.repositories.list' denied on resource "
                                         "'//artifactregistry.googleapis.com/projects/%s/locations/%s' (or it may "
                                         "not exist)." % (project, location)))
        if coll == "operations":
            op = self.operations.get("%s/operations/%s" % (self.parent(), ident))
            return req.reply(200, op) if op else req.reply(404, gerror(404, "NOT_FOUND", "Requested entity was not found."))
        if ident is None:
            if req.command == "POST":
                return self.api_create(req)
            if req.command == "GET":
                return self.api_list(req, [self.repos[k] for k in sorted(self.repos)], "repositories")
            return req.reply(405, gerror(405, "METHOD_NOT_ALLOWED", "Method not allowed."))
        repo = self.repos.get(ident)
        if repo is None:
            return req.reply(404, gerror(404, "NOT_FOUND", "Requested entity was not found."))
        if sub == "dockerImages" and req.command == "GET":
            return self.api_list(req, self.docker_images(ident), "dockerImages")
        if sub is None and req.command == "GET":
            return req.reply(200, repo)
        if sub is None and req.command == "DELETE":
            del self.repos[ident]
            return req.reply(200, self.operation(None, None))
        return req.reply(405, gerror(405, "METHOD_NOT_ALLOWED", "Method not allowed."))

    def api_create(self, req):
        rid = req.query.get("repositoryId", "")
        body = req.json_body()
        if not isinstance(body, dict):
            return req.reply(400, gerror(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
        if not REPO_ID_RE.match(rid):
            return req.reply(400, gerror(400, "INVALID_ARGUMENT",
                                         "Invalid repository ID %r: it must start with a letter, end with a letter "
                                         "or number, and contain only lowercase letters, numbers and hyphens "
                                         "(at most 63 characters)." % rid))
        if body.get("format", "DOCKER") not in ("DOCKER", "MAVEN", "NPM", "PYTHON", "APT", "YUM", "GO",
                                                "KFP", "GENERIC"):
            return req.reply(400, gerror(400, "INVALID_ARGUMENT", "Invalid value at 'repository.format'"))
        if self.controls["deny_create"]:
            return req.reply(403, gerror(403, "PERMISSION_DENIED",
                                         "Permission 'artifactregistry.repositories.create' denied on resource "
                                         "'//artifactregistry.googleapis.com/%s' (or it may not exist)." % self.parent()))
        with self.lock:
            if rid in self.repos:
                return req.reply(409, gerror(409, "ALREADY_EXISTS", "the repository already exists"))
            repo = self.create_repo(rid, body)
        req.reply(200, self.operation(repo, "type.googleapis.com/google.devtools.artifactregistry.v1.Repository"))

    def api_list(self, req, items, field):
        try:
            size = int(req.query.get("pageSize", "0") or 0)
            start = int(base64.urlsafe_b64decode(req.query["pageToken"]).decode()) if req.query.get("pageToken") else 0
        except ValueError:
            return req.reply(400, gerror(400, "INVALID_ARGUMENT", "Invalid page token."))
        if size < 0:
            return req.reply(400, gerror(400, "INVALID_ARGUMENT", "pageSize must not be negative"))
        size = min(size or 1000, 1000)   # UNVERIFIED default/maximum
        out = {field: items[start:start + size]}
        if start + size < len(items):
            out["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        req.reply(200, out)

    def docker_images(self, rid):
        out = []
        prefix = "%s/%s/" % (self.args.project, rid)
        for name in self.upstream_catalog():
            if not name.startswith(prefix):
                continue
            image = name[len(prefix):]
            by = {}
            for tag, digest, mt, size in self.tagged_images(name):
                by.setdefault(digest, {"mt": mt, "size": size, "tags": []})["tags"].append(tag)
            for digest, d in sorted(by.items()):
                out.append({"name": "%s/repositories/%s/dockerImages/%s@%s" % (
                    self.parent(), rid, urllib.parse.quote(image, safe=""), digest),
                    "uri": "%s/%s%s@%s" % (self.host(), prefix, image, digest), "tags": d["tags"],
                    "imageSizeBytes": str(d["size"]), "mediaType": d["mt"]})
        return out


if __name__ == "__main__":
    Gar.main()
