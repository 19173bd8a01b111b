#!/usr/bin/env python3
"""tests/standins/sigv4.py - AWS Signature Version 4 (registry-kinds.md section 9).

As a module: canonical_request, string_to_sign, signing_key, signature,
parse_authorization (what tests/standins/ecr.py uses to verify a request).

As a command, for the tests:
  sigv4.py self-test
      checks the algorithm against AWS's official vectors (section 9.1-9.5);
      prints one TAP-ish "ok N - name" / "not ok N - name" line each
  sigv4.py call URL TARGET JSON --key AKID --secret S --region R
               [--service ecr] [--date YYYYMMDDTHHMMSSZ] [--tamper]
      POSTs JSON to URL as an AWS JSON 1.1 call with
      X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.TARGET, signed over
      content-type;host;x-amz-date;x-amz-target; --tamper changes the body
      after signing. Prints the status on the first line, then the body.
"""
import argparse
import hashlib
import hmac
import re
import sys
import time
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _quote(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def canonical_uri(raw_path):
    """Normalized path, each segment URI-encoded again (non-S3 services)."""
    segs = []
    for seg in raw_path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if segs:
                segs.pop()
            continue
        segs.append(seg)
    path = "/" + "/".join(segs)
    if raw_path.endswith("/") and segs:
        path += "/"
    return _quote(path, safe="/~")


def canonical_query(raw_query):
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        k, _, v = part.partition("=")
        k = _quote(urllib.parse.unquote_plus(k))
        v = _quote(urllib.parse.unquote_plus(v))
        pairs.append((k, v))
    return "&".join("%s=%s" % kv for kv in sorted(pairs))


def canonical_headers(headers, signed):
    """headers: list of (name, value) as received; signed: lowercase names."""
    values = {}
    for k, v in headers:
        values.setdefault(k.lower(), []).append(re.sub(r"\s+", " ", v.strip()))
    out = ""
    for name in signed:
        out += "%s:%s\n" % (name, ",".join(values.get(name, [])))
    return out


def canonical_request(method, raw_path, raw_query, headers, signed, payload_hash):
    return "\n".join([method, canonical_uri(raw_path), canonical_query(raw_query),
                      canonical_headers(headers, signed), ";".join(signed), payload_hash])


def string_to_sign(amz_date, scope, creq):
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def signature(secret, date, region, service, sts):
    return hmac.new(signing_key(secret, date, region, service), sts.encode(), hashlib.sha256).hexdigest()


def parse_authorization(value):
    """{"credential": [akid, date, region, service, term], "signed": [...],
    "signature": hex} or None when the header is malformed."""
    if not value.startswith(ALGORITHM + " "):
        return None
    fields = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            fields[k] = v
    if not all(k in fields for k in ("Credential", "SignedHeaders", "Signature")):
        return None
    cred = fields["Credential"].split("/")
    if len(cred) != 5:
        return None
    return {"credential": cred, "signed": fields["SignedHeaders"].split(";"),
            "signature": fields["Signature"]}


def sign(method, url, headers, body, key, secret, region, service, amz_date):
    """Returns the headers (list) with X-Amz-Date and Authorization added."""
    u = urllib.parse.urlsplit(url)
    headers = list(headers) + [("Host", u.netloc), ("X-Amz-Date", amz_date)]
    signed = sorted({k.lower() for k, _ in headers})
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    creq = canonical_request(method, u.path or "/", u.query, headers, signed,
                             hashlib.sha256(body).hexdigest())
    sig = signature(secret, amz_date[:8], region, service, string_to_sign(amz_date, scope, creq))
    headers.append(("Authorization", "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s" %
                    (ALGORITHM, key, scope, ";".join(signed), sig)))
    return headers


# The official vectors [SIG] as quoted in registry-kinds.md section 9.
VECTORS = [
    ("get-vanilla", "GET", "/", "", [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
     "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("get-vanilla-query-order-key-case", "GET", "/", "Param2=value2&Param1=value1",
     [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
     "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("post-vanilla", "POST", "/", "", [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
     "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("post-header-key-sort", "POST", "/", "",
     [("Host", "example.amazonaws.com"), ("My-Header1", "value1"), ("X-Amz-Date", "20150830T123600Z")],
     "9368318c2967cf6de74404b30c65a91e8f6253e0a8659d6d5319f1a812f87d65",
     "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
    ("get-vanilla-empty-query-key", "GET", "/", "Param1=value1",
     [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
     None, "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
]
VECTOR_KEY = ("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "service")


def self_test():
    n = bad = 0
    secret, date, region, service = VECTOR_KEY
    n += 1
    k = signing_key(secret, date, region, service).hex()
    ok = k == "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"
    bad += not ok
    print("%s %d - signing key of the suite's inputs" % ("ok" if ok else "not ok", n))
    for name, method, path, query, headers, sts_hash, want in VECTORS:
        signed = sorted(h.lower() for h, _ in headers)
        creq = canonical_request(method, path, query, headers, signed, EMPTY_SHA256)
        sts = string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", creq)
        got = signature(secret, date, region, service, sts)
        ok = got == want and (sts_hash is None or sts.endswith(sts_hash))
        n += 1
        bad += not ok
        print("%s %d - %s" % ("ok" if ok else "not ok", n, name))
    return bad == 0


def call(args):
    import http.client
    body = args.json.encode()
    u = urllib.parse.urlsplit(args.url)
    amz_date = args.date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = [("Content-Type", "application/x-amz-json-1.1"),
               ("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921." + args.target)]
    headers = sign("POST", args.url, headers, body, args.key, args.secret, args.region, args.service, amz_date)
    if args.tamper:
        body = body + b" "
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("POST", u.path or "/", skip_host=True, skip_accept_encoding=True)
    for k, v in headers:
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    print(r.status)
    sys.stdout.write(r.read().decode() + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("self-test")
    c = sub.add_parser("call")
    c.add_argument("url")
    c.add_argument("target")
    c.add_argument("json")
    c.add_argument("--key", required=True)
    c.add_argument("--secret", required=True)
    c.add_argument("--region", required=True)
    c.add_argument("--service", default="ecr")
    c.add_argument("--date")
    c.add_argument("--tamper", action="store_true")
    args = p.parse_args()
    if args.cmd == "self-test":
        sys.exit(0 if self_test() else 1)
    call(args)


if __name__ == "__main__":
    main()
