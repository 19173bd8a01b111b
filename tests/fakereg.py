#!/usr/bin/env python3
"""tests/fakereg.py - a registry stand-in that names other origins, for the
tests of where replica sends credentials and which names it accepts.

    fakereg.py --port-file FILE [--cert PEM --key PEM] [--upstream URL]

It listens on 127.0.0.1 on free ports: "main" (http), "tls" (https, with
--cert/--key) and "other" (http, another origin). FILE gets
{"main": PORT, "tls": PORT, "other": PORT} once they all listen. Every
request is recorded as {"listener", "method", "path", "authorization"}.

On main and tls, the first path level picks a behaviour:
  /basic/v2/...   asks for Basic credentials (401 without an Authorization
                  header); _catalog answers ["a"] with
                  Link: <http://127.0.0.1:OTHER/v2/_catalog?last=a>; rel="next",
                  and POST .../blobs/uploads/ answers 202 with
                  Location: http://127.0.0.1:OTHER/upload/1.
  /bearer/v2/...  asks for a token from realm http://127.0.0.1:OTHER/token;
                  "Bearer good" is accepted.
  /redirect/...   answers 302 to http://127.0.0.1:OTHER/redirected.
  /evil/v2/...    _catalog answers ["evil/../../library/app", "good/app",
                  "Bad/Name"]; with --upstream everything else is passed
                  through to that registry (GET and HEAD), without it the tags
                  of good/app are ["v1", "..", "v2"].
On every listener:
  /echo/...       200 with the request target exactly as received.
  GET /requests   the recorded requests (this one left out), as JSON.
On other: /v2/_catalog answers ["b"], PUT /upload/1 answers 201, /token
answers {"token": "good"}; anything else 200 "other".
"""
import argparse
import json
import os
import ssl
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORDS = []
LOCK = threading.Lock()
PORTS = {}
UPSTREAM = None
EVIL_CATALOG = ["evil/../../library/app", "good/app", "Bad/Name"]


def other(path):
    """The absolute URL of path on the other origin."""
    return "http://127.0.0.1:%d%s" % (PORTS["other"], path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        """Sends a whole response with a Content-Length."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        """Reads the body, records the request and dispatches it."""
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        listener = self.server.listener
        if self.path == "/requests" and self.command == "GET":
            with LOCK:
                return self.reply(200, list(RECORDS))
        with LOCK:
            RECORDS.append({"listener": listener, "method": self.command, "path": self.path,
                            "authorization": self.headers.get("Authorization")})
        if self.path.startswith("/echo/"):
            return self.reply(200, self.path)
        if listener == "other":
            return self.other()
        first, _, rest = self.path[1:].partition("/")
        rest = "/" + rest
        if first == "basic":
            return self.basic(rest)
        if first == "bearer":
            return self.bearer(rest)
        if first == "redirect":
            return self.reply(302, "", {"Location": other("/redirected")})
        if first == "evil":
            return self.evil(rest)
        return self.reply(404, {"errors": [{"code": "NAME_UNKNOWN"}]})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def other(self):
        """The other origin: answers what the main one sends clients to."""
        path = self.path.split("?")[0]
        if path == "/v2/_catalog":
            return self.reply(200, {"repositories": ["b"]})
        if path == "/upload/1" and self.command == "PUT":
            return self.reply(201, "", {"Location": "/v2/a/blobs/x"})
        if path == "/token":
            return self.reply(200, {"token": "good", "expires_in": 300})
        return self.reply(200, "other")

    def basic(self, rest):
        """A registry that asks for Basic and names the other origin."""
        if not self.headers.get("Authorization", "").startswith("Basic "):
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]},
                              {"WWW-Authenticate": 'Basic realm="fakereg"'})
        path = rest.split("?")[0]
        if path == "/v2/":
            return self.reply(200, {})
        if path == "/v2/_catalog":
            return self.reply(200, {"repositories": ["a"]},
                              {"Link": '<%s>; rel="next"' % other("/v2/_catalog?last=a")})
        if path.endswith("/blobs/uploads/") and self.command == "POST":
            return self.reply(202, "", {"Location": other("/upload/1")})
        return self.reply(404, {"errors": [{"code": "NAME_UNKNOWN"}]})

    def bearer(self, rest):
        """A registry whose token realm is on the other origin (over http)."""
        if self.headers.get("Authorization") != "Bearer good":
            challenge = 'Bearer realm="%s",service="fakereg"' % other("/token")
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge})
        if rest.split("?")[0] == "/v2/":
            return self.reply(200, {})
        return self.reply(404, {"errors": [{"code": "NAME_UNKNOWN"}]})

    def evil(self, rest):
        """A source whose catalog lists names outside the OCI grammar."""
        path = rest.split("?")[0]
        if path == "/v2/_catalog":
            return self.reply(200, {"repositories": EVIL_CATALOG})
        if UPSTREAM:
            return self.proxy(rest)
        if path == "/v2/":
            return self.reply(200, {})
        if path == "/v2/good/app/tags/list":
            return self.reply(200, {"name": "good/app", "tags": ["v1", "..", "v2"]})
        return self.reply(404, {"errors": [{"code": "NAME_UNKNOWN"}]})

    def proxy(self, rest):
        """Passes a GET or HEAD through to the upstream registry."""
        if self.command not in ("GET", "HEAD"):
            return self.reply(405, {"errors": [{"code": "UNSUPPORTED"}]})
        req = urllib.request.Request(UPSTREAM + rest, method=self.command)
        if self.headers.get("Accept"):
            req.add_header("Accept", self.headers["Accept"])
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                status, headers, body = res.status, res.headers, res.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        keep = {k: headers[k] for k in ("Content-Type", "Docker-Content-Digest") if headers.get(k)}
        if self.command == "HEAD" and headers.get("Content-Length"):
            self.send_response(status)
            for k, v in keep.items():
                self.send_header(k, v)
            self.send_header("Content-Length", headers["Content-Length"])
            self.end_headers()
            return None
        return self.reply(status, body, keep)


def serve(listener, context=None):
    """Starts one listener on a free port in a thread; returns its port."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.listener = listener
    if context:
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def main():
    global UPSTREAM
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--upstream")
    args = ap.parse_args()
    UPSTREAM = args.upstream.rstrip("/") if args.upstream else None
    PORTS["other"] = serve("other")
    PORTS["main"] = serve("main")
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        PORTS["tls"] = serve("tls", ctx)
    with open(args.port_file + ".tmp", "w") as f:
        json.dump(PORTS, f)
    os.rename(args.port_file + ".tmp", args.port_file)
    threading.Event().wait()


if __name__ == "__main__":
    main()
