#!/usr/bin/env python3
"""tests/tenantreg.py - a made-up registry that no kind in the tree knows, for
the test that a brand-new kind is only a script (tests/e2e/kind_new.t).

    tenantreg.py --upstream URL --port-file FILE --tenant T --user U --password P

It fronts a real Distribution registry (--upstream) and differs from it in
two ways a kind must handle:
  * every request, /v2/ included, must carry "X-Tenant: T" and Basic U:P;
    without the header: 400 {"error": "missing X-Tenant header"}; another
    tenant: 403 {"error": "unknown tenant"}; bad credentials: 401 with
    WWW-Authenticate: Basic realm="tenantreg";
  * a repository lives in a namespace (its first path component) that must
    be created first: PUT /api/namespaces/NS answers 201 (created) or 200
    (it exists). A push (POST/PUT/PATCH under /v2/NS/...) into a namespace
    that does not exist gets 404 {"errors": [{"code": "NAME_UNKNOWN",
    "message": "namespace NS does not exist"}]}.
GET /_tenantreg/stats answers {"namespaces_created": N, "requests": N,
"without_tenant": N} (no tenant or auth needed).
"""
import argparse
import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"namespaces": set(), "created": 0, "requests": 0, "without_tenant": 0}
LOCK = threading.Lock()
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
       "proxy-authenticate", "host", "x-tenant", "authorization"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hands redirects back to the client instead of following them."""

    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def allowed(self):
        """Checks tenant and credentials; answers and returns False when refused."""
        with LOCK:
            STATE["requests"] += 1
        tenant = self.headers.get("X-Tenant")
        if tenant is None:
            with LOCK:
                STATE["without_tenant"] += 1
            self.reply(400, {"error": "missing X-Tenant header"})
            return False
        if tenant != ARGS.tenant:
            self.reply(403, {"error": "unknown tenant"})
            return False
        want = "Basic " + base64.b64encode(f"{ARGS.user}:{ARGS.password}".encode()).decode()
        if self.headers.get("Authorization") != want:
            self.reply(401, {"error": "authentication required"}, {"WWW-Authenticate": 'Basic realm="tenantreg"'})
            return False
        return True

    def handle_any(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_tenantreg/stats":
            with LOCK:
                return self.reply(200, {"namespaces_created": STATE["created"], "requests": STATE["requests"],
                                        "without_tenant": STATE["without_tenant"]})
        if not self.allowed():
            return
        if path.startswith("/api/namespaces/") and self.command == "PUT":
            ns = path[len("/api/namespaces/"):]
            with LOCK:
                exists = ns in STATE["namespaces"]
                if not exists:
                    STATE["namespaces"].add(ns)
                    STATE["created"] += 1
            return self.reply(200 if exists else 201, {"namespace": ns})
        if not path.startswith("/v2/"):
            return self.reply(404, {"error": "not found"})
        parts = path[len("/v2/"):].split("/")
        if self.command in ("POST", "PUT", "PATCH") and len(parts) > 1 and parts[0] not in STATE["namespaces"]:
            self.body()
            return self.reply(404, {"errors": [{"code": "NAME_UNKNOWN",
                                                "message": f"namespace {parts[0]} does not exist"}]})
        self.proxy()

    def proxy(self):
        data = self.body() if self.command in ("POST", "PUT", "PATCH") else None
        req = urllib.request.Request(ARGS.upstream + self.path, data=data, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in HOP:
                req.add_header(k, v)
        try:
            res = OPENER.open(req, timeout=60)
        except urllib.error.HTTPError as e:
            res = e
        status = res.status if hasattr(res, "status") else res.code
        self.send_response(status)
        bodiless = self.command == "HEAD" or status in (204, 304)
        length = None
        for k, v in res.headers.items():
            if k.lower() in HOP:
                continue
            if k.lower() == "location":
                v = v.replace(ARGS.upstream, f"http://127.0.0.1:{self.server.server_port}")
            if k.lower() == "content-length":
                length = v
            self.send_header(k, v)
        if length is None and not bodiless:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodiless:
            return
        while True:
            chunk = res.read(65536)
            if not chunk:
                break
            if length is None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                self.wfile.write(chunk)
        if length is None:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    ARGS = p.parse_args()
    ARGS.upstream = ARGS.upstream.rstrip("/")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(ARGS.port_file + ".tmp", "w") as f:
        json.dump({"port": srv.server_port}, f)
    import os
    os.rename(ARGS.port_file + ".tmp", ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
