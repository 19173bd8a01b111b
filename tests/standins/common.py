"""tests/standins/common.py - what every registry-kind stand-in shares.

A stand-in plays one cloud registry kind on loopback: it enforces the kind's
auth on /v2/, answers the kind's own API (namespaces, listing, deletion) from
memory, and passes registry traffic through to a real CNCF Distribution
registry (the "upstream", started in none mode) so that blobs and manifests
really land somewhere. What each kind does comes from
/work/shared/reference/registry-kinds.md (see tests/standins/README.md).

This module gives a kind:
  * Standin: the options every kind takes (--upstream, --port-file, --user,
    --password, --token-ttl, --upstream-storage), one ThreadingHTTPServer per
    named listener on 127.0.0.1, and the port file {"registry": PORT, ...}
    written once all of them listen;
  * the request record (GET /_standin/requests; DELETE clears it), where
    credentials appear only as a scheme and a hash, never in clear;
  * the control endpoint POST /_standin/control?key=value...:
      fail_next=N status=S retry_after=R [fail_listener=L] [fail_path=REGEX]
          the next N requests (on listener L, whose path matches REGEX)
          answer the kind's throttling/fault response with status S
      expire_tokens=1   every token and password issued so far stops working
      token_ttl=N       tokens issued from now on live N seconds
      deny_create=1|0   namespace creation answers 403 with the kind's body
      reset=1           clears the record and the faults
    plus the kind's own keys (e.g. ratelimit_limit for Docker Hub). The answer
    is the current settings as JSON;
  * a token store (opaque or JWT-shaped, with expiry and revocation);
  * a streaming reverse proxy to the upstream that keeps Location, Link,
    Docker-Content-Digest, Range (and the rest), rewriting upstream URLs in
    Location/Link to the stand-in's own origin;
  * helpers for the upstream: catalog, tags, manifest digests, tag deletion
    in its storage (Distribution 2.8 cannot delete a tag through its API).

Stdlib only.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
CHUNK = 64 * 1024
# Headers whose values are credentials: recorded as scheme + hash only.
SECRET_HEADERS = ("Authorization", "PRIVATE-TOKEN", "JOB-TOKEN", "X-Amz-Security-Token")
ACCEPT_ALL = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
# OCI distribution-spec repository name grammar.
NAME_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def b64url(data):
    """Base64url without padding (RFC 7515 section 2)."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_digest(value):
    """How a credential header is recorded: its scheme and a short hash."""
    scheme, sep, rest = value.partition(" ")
    if not sep:
        scheme, rest = "", value
    h = hashlib.sha256(rest.encode()).hexdigest()[:16]
    return ("%s sha256:%s" % (scheme, h)).strip()


def parse_scope(scope):
    """Splits "type:name:actions" (the name may hold ':') into its parts."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


def parse_v2(path):
    """Classifies a registry API path.

    Returns a dict {"what": base|catalog|tags|manifest|blob|upload|referrers,
    "name": repository or None, "ref": tag/digest/upload id or None}, or None
    when path is not under /v2/.
    """
    if path in ("/v2", "/v2/"):
        return {"what": "base", "name": None, "ref": None}
    if not path.startswith("/v2/"):
        return None
    rest = path[4:]
    if rest in ("_catalog", "_catalog/"):
        return {"what": "catalog", "name": None, "ref": None}
    m = re.match(r"^(.+)/tags/list$", rest)
    if m:
        return {"what": "tags", "name": m.group(1), "ref": None}
    m = re.match(r"^(.+)/manifests/([^/]+)$", rest)
    if m:
        return {"what": "manifest", "name": m.group(1), "ref": m.group(2)}
    m = re.match(r"^(.+)/blobs/uploads/?([^/]*)$", rest)
    if m:
        return {"what": "upload", "name": m.group(1), "ref": m.group(2) or None}
    m = re.match(r"^(.+)/blobs/([^/]+)$", rest)
    if m:
        return {"what": "blob", "name": m.group(1), "ref": m.group(2)}
    m = re.match(r"^(.+)/referrers/([^/]+)$", rest)
    if m:
        return {"what": "referrers", "name": m.group(1), "ref": m.group(2)}
    return {"what": "unknown", "name": None, "ref": None}


def registry_actions(method):
    """The token actions Distribution needs for a request method."""
    if method in ("GET", "HEAD"):
        return ["pull"]
    if method == "DELETE":
        return ["delete"]
    return ["pull", "push"]


def paginate(items, page, size):
    """Returns the page-th slice (1-based) of items and whether more follow."""
    start = (page - 1) * size
    return items[start:start + size], start + size < len(items)


class Tokens:
    """Issued tokens (or passwords) with an expiry; expire_all revokes."""

    def __init__(self, ttl):
        self.lock = threading.Lock()
        self.ttl = ttl
        self.items = {}
        self.secret = secrets.token_bytes(32)

    def issue(self, value=None, ttl=None, **info):
        """Stores a token (random unless given); returns (token, record)."""
        ttl = self.ttl if ttl is None else ttl
        now = time.time()
        token = value or secrets.token_urlsafe(32)
        rec = dict(info, iat=int(now), exp=now + ttl, ttl=ttl, revoked=False)
        with self.lock:
            self.items[token] = rec
        return token, rec

    def jwt(self, claims, ttl=None, **info):
        """Issues a JWT-shaped token carrying claims (HS256 with a secret of
        this process: clients treat registry tokens as opaque)."""
        ttl = self.ttl if ttl is None else ttl
        now = int(time.time())
        claims = dict(claims, iat=now, nbf=now, exp=now + ttl, jti=secrets.token_hex(12))
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")))
        body = b64url(json.dumps(claims, separators=(",", ":")))
        sig = b64url(hmac.new(self.secret, (head + "." + body).encode(), hashlib.sha256).digest())
        token = "%s.%s.%s" % (head, body, sig)
        self.issue(token, ttl, claims=claims, **info)
        return token, claims

    def check(self, token):
        """The record of a live token, or None (unknown, expired, revoked)."""
        with self.lock:
            rec = self.items.get(token)
        if not rec or rec["revoked"] or time.time() >= rec["exp"]:
            return None
        return rec

    def state(self, token):
        """"live", "expired" (timed out or revoked) or "unknown"."""
        with self.lock:
            rec = self.items.get(token)
        if not rec:
            return "unknown"
        if rec["revoked"] or time.time() >= rec["exp"]:
            return "expired"
        return "live"

    def expire_all(self):
        with self.lock:
            for rec in self.items.values():
                rec["revoked"] = True


class Standin:
    """One registry kind: subclass it, set `kind` and `listeners`, and
    override the hooks below."""
    kind = "base"
    listeners = ("registry",)
    token_ttl_default = 300
    # Extra control keys of the kind and their defaults.
    extra_controls = {}

    # ---- setup ----------------------------------------------------------
    @classmethod
    def parser(cls):
        p = argparse.ArgumentParser(description="%s stand-in" % cls.kind)
        p.add_argument("--upstream", required=True, help="the Distribution registry behind")
        p.add_argument("--upstream-storage", default="",
                       help="its storage root (needed to delete tags, which its API cannot)")
        p.add_argument("--port-file", required=True)
        p.add_argument("--user", default="replica")
        p.add_argument("--password", default="")
        p.add_argument("--token-ttl", type=int, default=cls.token_ttl_default)
        cls.add_args(p)
        return p

    @classmethod
    def add_args(cls, p):
        pass

    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        u = urllib.parse.urlsplit(args.upstream.rstrip("/"))
        self.up_host, self.up_port = u.hostname, u.port or 80
        self.up_origin = "%s://%s" % (u.scheme, u.netloc)
        self.records = []
        self.tokens = Tokens(args.token_ttl)
        self.ports = {}
        self.controls = {}
        self.reset_controls()

    def reset_controls(self):
        with self.lock:
            self.tokens.ttl = self.args.token_ttl
            self.controls = dict({"fail_next": 0, "status": 429, "retry_after": None,
                                  "fail_listener": "", "fail_path": "", "deny_create": 0,
                                  "token_ttl": self.tokens.ttl}, **self.extra_controls)

    def serve(self):
        servers = []
        for name in self.listeners:
            srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            srv.daemon_threads = True
            srv.listener = name
            srv.standin = self
            self.ports[name] = srv.server_address[1]
            servers.append(srv)
        self.started()
        for srv in servers:
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        tmp = self.args.port_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.ports, f)
        os.replace(tmp, self.args.port_file)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass

    @classmethod
    def main(cls):
        args = cls.parser().parse_args()
        cls(args).serve()

    def started(self):
        """Called once the ports are known, before serving."""

    def origin(self, listener):
        return "http://127.0.0.1:%d" % self.ports[listener]

    # ---- hooks ----------------------------------------------------------
    def route(self, req):
        """Handles a request of the kind's own API; returns False when the
        path is not one (then /v2/ paths go to authorize + proxy)."""
        return False

    def authorize(self, req, info):
        """Checks the kind's registry auth for a /v2/ request. Returns True to
        let it through; otherwise it has sent the kind's refusal."""
        return True

    def fault(self, req, status, retry_after):
        """The kind's answer to an injected fault (throttling by default)."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
        req.reply(status, {"errors": [{"code": code, "message": "stand-in: injected fault"}]}, headers)

    def control(self, key, value):
        """A kind's own control key; returns False if unknown."""
        if key in self.extra_controls:
            self.controls[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
            return True
        return False

    def proxy_response_headers(self, req, info, status, headers):
        """Lets a kind change the proxied answer's status and headers
        (a list of (name, value)); returns (status, headers)."""
        return status, headers

    def map_location(self, req, value):
        """Rewrites a Location/Link value from the upstream: its origin
        becomes the origin the client used."""
        return value.replace(self.up_origin, req.origin())

    # ---- upstream helpers -------------------------------------------------
    def upstream(self, method, path, headers=None, body=None):
        """One whole request to the upstream: (status, headers dict, body)."""
        conn = http.client.HTTPConnection(self.up_host, self.up_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def upstream_catalog(self):
        """Every repository the upstream holds (following its paging)."""
        names, path = [], "/v2/_catalog?n=1000"
        while path:
            st, h, body = self.upstream("GET", path)
            if st != 200:
                break
            names.extend(json.loads(body).get("repositories") or [])
            m = re.search(r"<([^>]+)>;\s*rel=\"next\"", h.get("link", ""))
            path = m.group(1) if m else None
            if path and path.startswith("http"):
                path = urllib.parse.urlsplit(path)._replace(scheme="", netloc="").geturl()
        return sorted(names)

    def upstream_tags(self, name):
        st, _, body = self.upstream("GET", "/v2/%s/tags/list" % name)
        if st != 200:
            return []
        return sorted(json.loads(body).get("tags") or [])

    def upstream_manifest(self, name, ref):
        """(digest, media type, size) of a manifest, or None."""
        st, h, _ = self.upstream("HEAD", "/v2/%s/manifests/%s" % (name, ref), {"Accept": ACCEPT_ALL})
        if st != 200:
            return None
        return h.get("docker-content-digest"), h.get("content-type"), int(h.get("content-length") or 0)

    def upstream_delete_tag(self, name, tag):
        """Removes a tag in the upstream's storage; True if it was there."""
        root = self.args.upstream_storage
        if not root:
            raise RuntimeError("--upstream-storage is needed to delete a tag")
        d = os.path.join(root, "docker/registry/v2/repositories", name, "_manifests/tags", tag)
        if not os.path.isdir(d) or "/../" in d or tag in ("", ".", ".."):
            return False
        shutil.rmtree(d)
        return True

    def upstream_delete_manifest(self, name, digest):
        st, _, _ = self.upstream("DELETE", "/v2/%s/manifests/%s" % (name, digest))
        return st == 202

    def tagged_images(self, name):
        """[(tag, digest, media type, size)] of a repository upstream."""
        out = []
        for t in self.upstream_tags(name):
            m = self.upstream_manifest(name, t)
            if m:
                out.append((t, m[0], m[1], m[2]))
        return out

    # ---- the proxy --------------------------------------------------------
    def proxy(self, req, info, path=None):
        """Streams req to the upstream and the answer back."""
        path = path or req.path
        conn = http.client.HTTPConnection(self.up_host, self.up_port, timeout=300)
        try:
            conn.putrequest(req.command, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", "%s:%d" % (self.up_host, self.up_port))
            for k, v in req.headers.items():
                if k.lower() in HOP_BY_HOP or k.lower() == "authorization":
                    continue
                conn.putheader(k, v)
            length = req.headers.get("Content-Length")
            chunked = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif length is not None:
                conn.putheader("Content-Length", length)
            conn.endheaders()
            sent = 0
            for piece in req.body_chunks():
                sent += len(piece)
                if chunked:
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    conn.send(piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
            req.body_sent = sent
            r = conn.getresponse()
            headers = []
            for k, v in r.getheaders():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk in ("date", "server"):
                    continue
                if lk in ("location", "link"):
                    v = self.map_location(req, v)
                headers.append((k, v))
            status, headers = self.proxy_response_headers(req, info, r.status, headers)
            req.send_response(status)
            for k, v in headers:
                req.send_header(k, v)
            clen = r.getheader("Content-Length")
            no_body = req.command == "HEAD" or status in (204, 304)
            if clen is not None:
                req.send_header("Content-Length", clen)
            elif not no_body:
                req.send_header("Transfer-Encoding", "chunked")
            req.end_headers()
            if no_body:
                return
            while True:
                piece = r.read(CHUNK)
                if not piece:
                    break
                if clen is None:
                    req.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    req.wfile.write(piece)
            if clen is None:
                req.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()


class Handler(BaseHTTPRequestHandler):
    """Dispatches one request: /_standin/*, faults, the kind's routes, /v2/."""
    protocol_version = "HTTP/1.1"
    server_version = "replica-standin"

    def log_message(self, fmt, *args):
        # Paths and statuses only; credentials are never logged.
        sys.stderr.write("%s %s %s\n" % (time.strftime("%H:%M:%S"), self.server.listener, fmt % args))

    # ---- request helpers ---------------------------------------------------
    @property
    def standin(self):
        return self.server.standin

    @property
    def listener(self):
        return self.server.listener

    def origin(self):
        """The origin the client used to reach this listener."""
        return "http://" + (self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1])

    def body_chunks(self):
        """Yields the request body in pieces (Content-Length or chunked)."""
        if self._body_done:
            return
        self._body_done = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, CHUNK))
                    if not piece:
                        return
                    left -= len(piece)
                    yield piece
                self.rfile.readline(16)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                piece = self.rfile.read(min(left, CHUNK))
                if not piece:
                    return
                left -= len(piece)
                yield piece

    def body(self):
        if self._body is None:
            self._body = b"".join(self.body_chunks())
        return self._body

    def json_body(self):
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body() or b"null")
        except ValueError:
            return None

    def form(self):
        return {k: v[-1] for k, v in urllib.parse.parse_qs(self.body().decode("latin-1"),
                                                            keep_blank_values=True).items()}

    def basic(self):
        """(user, password) from a Basic Authorization header, or None."""
        h = self.headers.get("Authorization", "")
        if not h[:6].lower() == "basic ":
            return None
        try:
            user, sep, pw = base64.b64decode(h[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ("", None)
        return (user, pw if sep else None)

    def bearer(self):
        h = self.headers.get("Authorization", "")
        return h[7:].strip() if h[:7].lower() == "bearer " else None

    def reply(self, status, body=b"", headers=None, content_type=None):
        """Sends a whole answer; dict/list bodies become JSON."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        if content_type:
            headers.setdefault("Content-Type", content_type)
        self.send_response(status)
        for k, v in headers.items():
            if isinstance(v, (list, tuple)):
                for one in v:
                    self.send_header(k, one)
            else:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def note(self, **fields):
        """Adds fields to this request's record (GET /_standin/requests)."""
        if self._record is not None:
            self._record.update(fields)

    def send_response(self, code, message=None):
        if self._record is not None:
            self._record["status"] = code
        super().send_response(code, message)

    # ---- dispatch -------------------------------------------------------------
    def handle_any(self):
        self._body = None
        self._body_done = False
        self._record = None
        self.body_sent = 0
        url = urllib.parse.urlsplit(self.path)
        self.url_path = url.path
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        self.query_all = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        st = self.standin
        try:
            if url.path.startswith("/_standin/"):
                return self.standin_api(url.path)
            self._record = {"listener": self.listener, "method": self.command, "path": self.path,
                            "time": round(time.time(), 3)}
            for h in SECRET_HEADERS:
                if self.headers.get(h):
                    self._record["authorization" if h == "Authorization" else h.lower()] = \
                        secret_digest(self.headers[h])
            with st.lock:
                st.records.append(self._record)
                c = st.controls
                hit = (c["fail_next"] > 0 and (not c["fail_listener"] or c["fail_listener"] == self.listener)
                       and (not c["fail_path"] or re.search(c["fail_path"], self.path)))
                if hit:
                    c["fail_next"] -= 1
                    status, after = int(c["status"]), c["retry_after"]
            if hit:
                self._record["fault"] = True
                return st.fault(self, status, after)
            if st.route(self):
                return
            info = parse_v2(url.path) if self.listener == "registry" else None
            if info is None:
                return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "stand-in: no such path"}]})
            if not st.authorize(self, info):
                return
            st.proxy(self, info)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.drain()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

    def drain(self):
        """Reads what is left of the body so the connection can be reused."""
        if self._body_done:
            return
        n = int(self.headers.get("Content-Length") or 0)
        if n > 256 * 1024 * 1024:
            self.close_connection = True
            return
        try:
            for _ in self.body_chunks():
                pass
        except (OSError, ValueError):
            self.close_connection = True

    def standin_api(self, path):
        st = self.standin
        if path == "/_standin/requests":
            with st.lock:
                if self.command == "DELETE":
                    st.records.clear()
                    return self.reply(200, [])
                return self.reply(200, list(st.records))
        if path == "/_standin/health":
            return self.reply(200, {"ok": True, "kind": st.kind})
        if path == "/_standin/state":
            return self.reply(200, st.state_json() if hasattr(st, "state_json") else {})
        if hasattr(st, "standin_extra") and st.standin_extra(self, path):
            return None
        if path != "/_standin/control" or self.command not in ("POST", "GET"):
            return self.reply(404, {"error": "no such stand-in path"})
        with st.lock:
            for k, v in self.query.items():
                if k == "fail_next":
                    st.controls[k] = int(v)
                elif k == "status":
                    st.controls[k] = int(v)
                elif k == "retry_after":
                    st.controls[k] = None if v == "" else int(v)
                elif k in ("fail_listener", "fail_path"):
                    st.controls[k] = v
                elif k == "deny_create":
                    st.controls[k] = int(v)
                elif k == "token_ttl":
                    st.tokens.ttl = int(v)
                    st.controls[k] = int(v)
                elif k == "expire_tokens":
                    if v not in ("", "0"):
                        st.tokens.expire_all()
                elif k == "reset":
                    st.records.clear()
                    st.reset_controls()
                elif not st.control(k, v):
                    return self.reply(400, {"error": "unknown control %r" % k})
            return self.reply(200, dict(st.controls))
