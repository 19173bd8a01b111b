#!/usr/bin/env python3
"""tests/rawhttp.py - HTTP clients that misbehave on purpose, over raw
sockets, for the limit tests of `replica serve` (tests/e2e/serve_limits.t).
Each mode prints one line of KEY=VALUE results and exits 0.

    rawhttp.py early PORT LEN
        POST a body of LEN bytes without a token, sending only the headers;
        waits up to 5 s for an answer. status=S secs=T (status=none if none).
    rawhttp.py bodies PORT PID N LEN
        N connections each POST LEN - 1 of LEN body bytes without a token and
        stay open; the daemon PID's resident memory (kB) before, with the N
        connections open, and after they closed (and /health answered).
    rawhttp.py trickle PORT head|body LIMIT [TOKEN]
        sends a request head (or, with TOKEN, a head and then the body) one
        byte every 0.25 s; closed=1 secs=T when the daemon cut it off, or
        closed=0 secs=LIMIT when it was still open after LIMIT seconds.
    rawhttp.py cap PORT N
        opens N idle connections, then one more: refused=<what the extra one
        got: 503, eof, reset or timeout>, then held=<status of a /health on
        the first idle one> and after=<status of a /health on a new
        connection once all are closed>.
    rawhttp.py hold PORT PID N SECS
        opens up to N connections with half a request head each, then the
        CPU time the daemon PID used in the next SECS seconds:
        held=K cpu_ms=C. Closes them all before exiting.
"""
import os
import select
import socket
import sys
import time


def connect(port, timeout=5):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def read_status(sock, timeout):
    """The status code of the response on sock, or eof / reset / timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "eof" if not data else data.split(b" ")[1].decode()
            data += chunk
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "reset"
    return data.split(b" ")[1].decode()


def health(port):
    s = connect(port)
    s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    st = read_status(s, 5)
    s.close()
    return st


def post_head(length, token=None):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /api/v1/registries HTTP/1.1\r\nHost: t\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def early(port, length):
    s = connect(port)
    t0 = time.monotonic()
    s.sendall(post_head(length))
    st = read_status(s, 5)
    print(f"status={st if st.isdigit() else 'none'} secs={time.monotonic() - t0:.2f}")


def bodies(port, pid, n, length):
    before = rss_kb(pid)
    socks = []
    chunk = b"x" * 65536
    for _ in range(n):
        s = connect(port)
        s.settimeout(5)
        try:
            s.sendall(post_head(length))
            left = length - 1
            while left > 0:
                k = s.send(chunk[:min(left, len(chunk))])
                left -= k
        except OSError:
            pass  # the daemon answered and closed: it did not want the body
        socks.append(s)
    during = rss_kb(pid)
    for s in socks:
        s.close()
    health(port)
    print(f"before={before} during={during} after={rss_kb(pid)}")


def trickle(port, mode, limit, token=None):
    s = connect(port)
    if mode == "head":
        first, rest = b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n", b"X-Slow: " + b"a" * 1000
    else:
        first, rest = post_head(1000, token) + b"{", b" " * 999
    t0 = time.monotonic()
    s.sendall(first)
    for b in rest:
        elapsed = time.monotonic() - t0
        if elapsed >= limit:
            break
        try:
            r, _, _ = select.select([s], [], [], 0.25)
            if r:
                data = s.recv(4096)
                if not data or b" 408 " in data or b" 400 " in data:
                    print(f"closed=1 secs={time.monotonic() - t0:.2f}")
                    return
            s.send(bytes([b]))
        except OSError:
            print(f"closed=1 secs={time.monotonic() - t0:.2f}")
            return
    print(f"closed=0 secs={limit}")


def cap(port, n):
    held = [connect(port) for _ in range(n)]
    extra = connect(port)
    refused = read_status(extra, 3)
    extra.close()
    held[0].sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
    ok = read_status(held[0], 5)
    for s in held:
        s.close()
    # The daemon notices the closes in its own time: retry a few times.
    after = "none"
    for _ in range(50):
        try:
            after = health(port)
        except OSError:
            after = "error"
        if after == "200":
            break
        time.sleep(0.05)
    print(f"refused={refused} held={ok} after={after}")


def hold(port, pid, n, secs):
    socks = []
    for _ in range(n):
        try:
            s = connect(port, timeout=1)
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
            socks.append(s)
        except OSError:
            break
    t0 = cpu_ticks(pid)
    time.sleep(secs)  # the measurement window, not a synchronisation
    used = cpu_ticks(pid) - t0
    print(f"held={len(socks)} cpu_ms={used * 1000 // os.sysconf('SC_CLK_TCK')}")
    for s in socks:
        s.close()


def main(argv):
    mode, port = argv[1], int(argv[2])
    if mode == "early":
        early(port, int(argv[3]))
    elif mode == "bodies":
        bodies(port, int(argv[3]), int(argv[4]), int(argv[5]))
    elif mode == "trickle":
        trickle(port, argv[3], float(argv[4]), argv[5] if len(argv) > 5 else None)
    elif mode == "cap":
        cap(port, int(argv[3]))
    elif mode == "hold":
        hold(port, int(argv[3]), int(argv[4]), float(argv[5]))
    else:
        sys.exit(f"rawhttp.py: unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
