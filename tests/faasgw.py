#!/usr/bin/env python3
"""tests/faasgw.py - a stand-in OpenFaaS gateway with its async queue, for the
tests of `replica serve --faas-mode async` (no OpenFaaS can run here).

It follows the contract that ../shared/reference/faas-platforms.md documents
(sections 1.2 and 1.3, from openfaas/faas gateway/ and nats-queue-worker):

  POST /function/NAME[/...]        the sync route: proxied to the next upstream
                                   (round robin); an unreachable upstream is 502
  POST /async-function/NAME[/...]  the async route: the whole body is queued and
                                   the answer is 202, with X-Call-Id (the
                                   caller's, else a new UUID). A bad
                                   X-Callback-Url is 400; a body over the message
                                   size or a full queue is a queue error, 500
  the queue-worker                 --max-inflight threads take queued calls, POST
                                   them to an upstream with the caller's headers,
                                   then POST the function's response body to
                                   X-Callback-Url with the function's response
                                   headers and X-Function-Status (503 when the
                                   upstream could not be invoked), X-Call-Id,
                                   X-Function-Name, X-Duration-Seconds. Like CE,
                                   it never retries.

Test controls (not OpenFaaS's):
  GET  /_/stats    {"queued", "inflight", "invocations": [{call_id, upstream,
                   status}], "callbacks": [{call_id, function_status, status}],
                   "held": N}
  POST /_/control  {"hold_callbacks": N}: hold the next N callbacks;
                   {"release": true}: send the held ones now, in order;
                   {"upstreams": [URL, ...]}: the upstreams from now on
  POST /_/broken   an upstream that answers 500, as a function whose process
                   failed

Usage: faasgw.py --port-file FILE --log FILE [--upstream URL]... [--max-inflight N]
                 [--queue-max N] [--max-message BYTES]
"""
import argparse
import http.client
import http.server
import json
import os
import queue
import threading
import time
import urllib.parse
import uuid

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "trailer", "upgrade"}


class Gateway:
    def __init__(self, args):
        self.upstreams = list(args.upstream)
        self.rr = 0
        self.lock = threading.Lock()
        self.queue = queue.Queue()
        self.queue_max = args.queue_max
        self.max_message = args.max_message
        self.inflight = 0
        self.invocations = []
        self.callbacks = []
        self.hold = 0
        self.held = []
        self.log_path = args.log

    def log(self, line):
        with self.lock, open(self.log_path, "a") as f:
            f.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + line + "\n")

    def next_upstream(self):
        with self.lock:
            if not self.upstreams:
                return None
            u = self.upstreams[self.rr % len(self.upstreams)]
            self.rr += 1
            return u


def post(url, body, headers, timeout=3600):
    """POSTs body to url; returns (status, headers, body) or raises OSError."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request("POST", path, body=body, headers=headers)
        res = conn.getresponse()
        return res.status, res.getheaders(), res.read()
    finally:
        conn.close()


def worker(gw):
    while True:
        item = gw.queue.get()
        with gw.lock:
            gw.inflight += 1
        call_id, name, body, headers, callback = item
        upstream = gw.next_upstream()
        started = time.monotonic()
        try:
            status, rheaders, rbody = post(upstream, body, headers)
        except OSError as e:
            status, rheaders, rbody = 503, [("Content-Type", "text/plain")], str(e).encode()
        with gw.lock:
            gw.inflight -= 1
            gw.invocations.append({"call_id": call_id, "upstream": upstream, "status": status})
        gw.log(f"invoke {call_id} {upstream} {status}")
        cb_headers = {k: v for k, v in rheaders if k.lower() not in HOP}
        cb_headers.update({"X-Function-Status": str(status), "X-Call-Id": call_id, "X-Function-Name": name,
                           "X-Duration-Seconds": "%.6f" % (time.monotonic() - started)})
        send = True
        with gw.lock:
            if gw.hold > 0:
                gw.hold -= 1
                gw.held.append((call_id, status, callback, rbody, cb_headers))
                send = False
        if send:
            deliver(gw, call_id, status, callback, rbody, cb_headers)


def deliver(gw, call_id, function_status, callback, body, headers):
    try:
        status, _, _ = post(callback, body, headers, timeout=30)
    except OSError as e:
        status = "error: %s" % e
    with gw.lock:
        gw.callbacks.append({"call_id": call_id, "function_status": function_status, "status": status})
    gw.log(f"callback {call_id} {function_status} -> {status}")


def make_handler(gw):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body=b"", ctype="text/plain", extra=None):
            if isinstance(body, (dict, list)):
                body, ctype = json.dumps(body).encode(), "application/json"
            elif isinstance(body, str):
                body = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            gw.log(f"{self.command} {self.path.split('?')[0]} {status}")

        def body(self):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self):
            if self.path == "/healthz":
                return self.reply(200, "OK")
            if self.path == "/_/stats":
                with gw.lock:
                    stats = json.dumps({"queued": gw.queue.qsize(), "inflight": gw.inflight,
                                        "invocations": gw.invocations, "callbacks": gw.callbacks,
                                        "held": len(gw.held)})
                return self.reply(200, stats, "application/json")
            return self.reply(404, "not found")

        def do_POST(self):
            path = self.path.split("?")[0]
            body = self.body()
            if path == "/_/broken":
                return self.reply(500, {"error": "the function failed: the stand-in's broken instance"})
            if path == "/_/control":
                c = json.loads(body or b"{}")
                released = []
                with gw.lock:
                    if "hold_callbacks" in c:
                        gw.hold = int(c["hold_callbacks"])
                    if "upstreams" in c:
                        gw.upstreams = list(c["upstreams"])
                    if c.get("release"):
                        released, gw.held = gw.held, []
                for r in released:
                    deliver(gw, *r)
                with gw.lock:
                    state = {"hold": gw.hold, "held": len(gw.held), "upstreams": gw.upstreams}
                return self.reply(200, state)
            parts = path.split("/")
            if len(parts) >= 3 and parts[1] == "function" and parts[2]:
                upstream = gw.next_upstream()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                try:
                    status, rheaders, rbody = post(upstream, body, headers)
                except OSError as e:
                    return self.reply(502, f"Can't reach service for: {parts[2]}. ({e})")
                ctype = dict((k.lower(), v) for k, v in rheaders).get("content-type", "application/json")
                return self.reply(status, rbody, ctype)
            if len(parts) >= 3 and parts[1] == "async-function" and parts[2]:
                callback = self.headers.get("X-Callback-Url")
                if callback is not None:
                    u = urllib.parse.urlsplit(callback)
                    if u.scheme not in ("http", "https") or not u.hostname:
                        return self.reply(400, f"X-Callback-Url header is invalid: {callback}")
                if len(body) > gw.max_message:
                    return self.reply(500, "nats: maximum payload exceeded")
                if gw.queue.qsize() >= gw.queue_max:
                    return self.reply(500, "failed to queue the request: the queue is full")
                call_id = self.headers.get("X-Call-Id") or str(uuid.uuid4())
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                headers["X-Call-Id"] = call_id
                gw.queue.put((call_id, parts[2], body, headers, callback))
                return self.reply(202, "", extra={"X-Call-Id": call_id})
            return self.reply(404, "not found")

        def log_message(self, *a):
            pass

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--upstream", action="append", default=[])
    ap.add_argument("--max-inflight", type=int, default=1)
    ap.add_argument("--queue-max", type=int, default=10)
    ap.add_argument("--max-message", type=int, default=256 * 1024)
    args = ap.parse_args()
    gw = Gateway(args)
    for _ in range(args.max_inflight):
        threading.Thread(target=worker, args=(gw,), daemon=True).start()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(gw))
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
