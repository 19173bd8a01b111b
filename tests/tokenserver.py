#!/usr/bin/env python3
"""tests/tokenserver.py - stand-ins that sit beside a test registry.

Token mode (the default) is a Docker registry token server for CNCF
Distribution's `auth.token`: it issues RS256 JWTs whose JOSE header carries
the signing certificate (x5c), signed with `openssl dgst -sha256 -sign`.

    tokenserver.py --key KEY.pem --cert CERT.pem --issuer ISS --service SVC
                   --port-file FILE [--anonymous pull|none] [--expires-in N]

  GET  /token?service=S&scope=A&scope=B   a token; Basic credentials are
       checked against $TOKEN_USER / $TOKEN_PASS (bad ones: 401). A valid user
       gets every requested action; an anonymous caller gets pull only
       (--anonymous pull) or nothing (--anonymous none).
  GET  /stats     {"requests", "issued", "denied", "scopes": [...]} since start
  POST /control?KEY=VALUE...   changes settings at run time and prints them:
       expires_in (reported lifetime), lifetime (the token's real validity,
       which may be shorter than expires_in to make a cached token go stale),
       anonymous, fail (answer the next N token requests with 503),
       retry_after (the Retry-After those 503s carry), reset=1 (zero the
       counters).
  GET  /health

Sidecar mode stands in front of a registry for what the registry itself
cannot do in a test:

    tokenserver.py --sidecar UPSTREAM_URL --storage DIR --page N --port-file FILE

  GET /v2/ is passed through.
  GET /v2/NAME/tags/list?n=&last= pages the tags list (Distribution 2.8 ignores
       n and last): it fetches the whole list upstream and answers one sorted
       page with a relative Link rel="next".
  GET /v2/NAME/blobs/DIGEST is passed through, except that
  POST /control?fail=N&fail_mode=503|truncate[&fail_after=K] makes the next
       N blob GETs (after K more that succeed) answer 503, or send half the
       body and close; /control also prints "blob_gets", the number of blob
       GETs so far. Range requests are passed through (206 with Content-Range).
  POST /corrupt?digest=sha256:HEX changes one byte of that blob in the
       registry's storage DIR: it flips the first byte, or in JSON (a
       manifest) turns the first space into a tab, so that it still parses.

The server binds 127.0.0.1 on a free port and writes the port to --port-file
once it listens. Requests are logged to stderr without credentials.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Distribution 2.8 accepts a token up to this long after its exp claim.
REGISTRY_LEEWAY = 60


def b64url(data):
    """Base64url without padding, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope):
    """Splits "type:name:actions" (the name may contain ':') into its parts."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenState:
    """Settings and counters shared by the request threads."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.key = args.key
        self.issuer = args.issuer
        self.service = args.service
        self.user = os.environ.get("TOKEN_USER", "")
        self.password = os.environ.get("TOKEN_PASS", "")
        self.settings = {"expires_in": args.expires_in, "lifetime": None,
                         "anonymous": args.anonymous, "fail": 0, "retry_after": None}
        self.reset()
        with open(args.cert, "rb") as f:
            pem = f.read().decode()
        body = "".join(l for l in pem.splitlines() if l and not l.startswith("-----"))
        self.x5c = body  # base64 DER of the certificate

    def reset(self):
        self.requests = 0
        self.issued = 0
        self.denied = 0
        self.scopes = []

    def sign(self, claims):
        """Returns a compact RS256 JWS of claims."""
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input, capture_output=True, check=True).stdout
        return signing_input.decode() + "." + b64url(sig)

    def grant(self, scopes, authenticated):
        """Returns the access claim for the requested scopes."""
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if not parsed:
                continue
            kind, name, actions = parsed
            if not authenticated:
                if self.settings["anonymous"] != "pull" or kind != "repository":
                    continue
                actions = [a for a in actions if a == "pull"]
            if actions:
                access.append({"type": kind, "name": name, "actions": actions})
        return access


class TokenHandler(BaseHTTPRequestHandler):
    """Routes of token mode."""
    server_version = "replica-tokenserver"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        # self.path never holds credentials; headers are not logged.
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def reply(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def credentials(self):
        """Returns None (anonymous), True (valid) or False (invalid)."""
        h = self.headers.get("Authorization", "")
        if not h.lower().startswith("basic "):
            return None
        try:
            user, _, pw = base64.b64decode(h[6:].strip()).decode().partition(":")
        except Exception:
            return False
        st = self.server.state
        return bool(st.user) and user == st.user and pw == st.password

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        st = self.server.state
        if url.path == "/health":
            return self.reply(200, {"ok": True})
        if url.path == "/stats":
            with st.lock:
                return self.reply(200, {"requests": st.requests, "issued": st.issued,
                                        "denied": st.denied, "scopes": st.scopes})
        if url.path == "/control":
            return self.control(q)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        self.token(q)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if url.path == "/control":
            return self.control(urllib.parse.parse_qs(url.query, keep_blank_values=True))
        self.reply(404, {"error": "not found"})

    def control(self, q):
        st = self.server.state
        with st.lock:
            for k, v in q.items():
                v = v[-1]
                if k == "reset":
                    st.reset()
                elif k == "anonymous":
                    st.settings[k] = v
                elif k in ("expires_in", "lifetime", "fail", "retry_after"):
                    st.settings[k] = None if v == "" else int(v)
            return self.reply(200, dict(st.settings))

    def token(self, q):
        st = self.server.state
        scopes = []
        for s in q.get("scope", []):
            scopes.extend(s.split(" "))  # one parameter may carry several
        who = self.credentials()
        with st.lock:
            st.requests += 1
            st.scopes.append(" ".join(scopes))
            if st.settings["fail"] > 0:
                st.settings["fail"] -= 1
                after = st.settings["retry_after"]
                return self.reply(503, {"errors": [{"code": "UNAVAILABLE",
                                                    "message": "token server failing on purpose"}]},
                                  {"Retry-After": str(after)} if after is not None else None)
            if who is False:
                st.denied += 1
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                    "message": "invalid username or password"}]},
                                  {"WWW-Authenticate": 'Basic realm="replica-test-tokens"'})
            if q.get("service", [st.service])[-1] != st.service:
                return self.reply(400, {"errors": [{"code": "UNSUPPORTED",
                                                    "message": "unknown service"}]})
            expires_in = st.settings["expires_in"]
            lifetime = st.settings["lifetime"]
            if lifetime is None:
                lifetime = expires_in
            access = st.grant(scopes, who is True)
            st.issued += 1
        now = int(time.time())
        claims = {"iss": st.issuer, "sub": st.user if who else "", "aud": st.service,
                  # The registry adds its leeway to exp: take it off again so
                  # that the token really lives `lifetime` seconds.
                  "exp": now + lifetime - REGISTRY_LEEWAY, "nbf": now - 5, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        token = st.sign(claims)
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.reply(200, {"token": token, "access_token": token, "expires_in": expires_in,
                         "issued_at": issued_at})

    do_HEAD = do_GET


class SidecarHandler(BaseHTTPRequestHandler):
    """Routes of sidecar mode."""
    server_version = "replica-sidecar"
    protocol_version = "HTTP/1.1"
    log_message = TokenHandler.log_message
    reply = TokenHandler.reply

    def upstream(self, path):
        """GETs path upstream; returns (status, headers, body)."""
        req = urllib.request.Request(self.server.upstream + path)
        for h in ("Authorization", "Range"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def pass_through(self, status, headers, body):
        self.send_response(status)
        for k in ("Content-Type", "Content-Range", "WWW-Authenticate", "Docker-Distribution-Api-Version"):
            if headers.get(k):
                self.send_header(k, headers[k])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            return self.reply(200, {"ok": True})
        if url.path == "/control":
            return self.control(urllib.parse.parse_qs(url.query, keep_blank_values=True))
        if url.path == "/v2/":
            return self.pass_through(*self.upstream("/v2/"))
        if url.path.startswith("/v2/") and "/blobs/" in url.path:
            return self.blob(url.path)
        if not (url.path.startswith("/v2/") and url.path.endswith("/tags/list")):
            return self.reply(404, {"errors": [{"code": "UNSUPPORTED", "message": "sidecar: not here"}]})
        status, headers, body = self.upstream(url.path)
        if status != 200:
            return self.pass_through(status, headers, body)
        doc = json.loads(body)
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        n = int(q.get("n", [self.server.page])[-1])
        last = q.get("last", [""])[-1]
        tags = sorted(t for t in (doc.get("tags") or []) if t > last)
        page, more = tags[:n], len(tags) > n
        headers = {}
        if more:
            nxt = "%s?%s" % (url.path, urllib.parse.urlencode({"n": n, "last": page[-1]}))
            headers["Link"] = '<%s>; rel="next"' % nxt
        self.reply(200, {"name": doc.get("name"), "tags": page}, headers)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/corrupt":
            return self.corrupt(urllib.parse.parse_qs(url.query, keep_blank_values=True).get("digest", [""])[-1])
        return self.do_GET()

    def corrupt(self, digest):
        """Changes one byte of a stored blob; the registry keeps serving it."""
        alg, _, hexd = digest.partition(":")
        if alg != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            return self.reply(400, {"error": "digest must be sha256:<64 hex>"})
        path = os.path.join(self.server.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
        try:
            with open(path, "r+b") as f:
                data = f.read()
                # JSON (a manifest) must still parse for the registry to serve it.
                at = data.find(b" ") if data.startswith(b"{") else -1
                f.seek(max(at, 0))
                f.write(b"\t" if at >= 0 else bytes([data[0] ^ 0xFF]))
        except (OSError, IndexError) as e:
            return self.reply(404, {"error": str(e)})
        self.reply(200, {"path": path})

    def control(self, q):
        srv = self.server
        with srv.lock:
            if "fail" in q:
                srv.fail = int(q["fail"][-1])
            if "fail_mode" in q:
                srv.fail_mode = q["fail_mode"][-1]
            srv.fail_after = int(q["fail_after"][-1]) if "fail_after" in q else 0
            return self.reply(200, {"fail": srv.fail, "fail_mode": srv.fail_mode,
                                    "fail_after": srv.fail_after, "blob_gets": srv.blob_gets})

    def blob(self, path):
        """Passes a blob GET through, or fails it on purpose (see /control)."""
        srv = self.server
        with srv.lock:
            srv.blob_gets += 1
            mode = None
            if srv.fail > 0 and srv.fail_after > 0:
                srv.fail_after -= 1
            elif srv.fail > 0:
                mode = srv.fail_mode
                srv.fail -= 1
        if mode == "503":
            return self.reply(503, {"errors": [{"code": "UNAVAILABLE", "message": "failing on purpose"}]})
        status, headers, body = self.upstream(path)
        if status not in (200, 206) or mode != "truncate":
            return self.pass_through(status, headers, body)
        self.send_response(status)
        if headers.get("Content-Range"):
            self.send_header("Content-Range", headers["Content-Range"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port-file", required=True)
    p.add_argument("--key")
    p.add_argument("--cert")
    p.add_argument("--issuer", default="replica-test-issuer")
    p.add_argument("--service", default="replica-test-registry")
    p.add_argument("--anonymous", choices=("pull", "none"), default="pull")
    p.add_argument("--expires-in", type=int, default=300)
    p.add_argument("--sidecar")
    p.add_argument("--storage")
    p.add_argument("--page", type=int, default=2)
    args = p.parse_args()

    if args.sidecar:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), SidecarHandler)
        srv.upstream = args.sidecar.rstrip("/")
        srv.storage = args.storage or ""
        srv.page = args.page
        srv.lock = threading.Lock()
        srv.fail, srv.fail_mode, srv.blob_gets, srv.fail_after = 0, "503", 0, 0
    else:
        if not args.key or not args.cert:
            p.error("--key and --cert are required in token mode")
        srv = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
        srv.state = TokenState(args)
    srv.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
