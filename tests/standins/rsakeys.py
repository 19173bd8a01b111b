"""tests/standins/rsakeys.py - RSA public keys from PEM and RS256 (RSASSA-
PKCS1-v1_5 with SHA-256) verification, by hand (registry-kinds.md section 10):
the DER of a SubjectPublicKeyInfo (or of a PKCS#8 / PKCS#1 private key, for
its modulus and exponent) is read with a minimal parser, and a signature is
checked as pow(sig, e, n) == 00 01 FF..FF 00 || DigestInfo(SHA-256) || H.

    python3 rsakeys.py self-test   the RFC 7520 section 4.1 vector
"""
import base64
import hashlib
import hmac
import json
import sys

SHA256_DIGESTINFO = bytes.fromhex("3031300d060960864801650304020105000420")
OID_RSA = bytes.fromhex("2a864886f70d010101")


def _tlv(data, pos):
    """(tag, value start, value end) of the DER element at pos."""
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[pos:pos + k], "big")
        pos += k
    return tag, pos, pos + n


def _children(data, start, end):
    out = []
    while start < end:
        tag, s, e = _tlv(data, start)
        out.append((tag, s, e))
        start = e
    return out


def _int(data, el):
    tag, s, e = el
    if tag != 0x02:
        raise ValueError("expected an INTEGER")
    return int.from_bytes(data[s:e], "big")


def pem_der(pem):
    """The DER bytes and the label of the first PEM block."""
    lines = pem.strip().splitlines()
    label = lines[0].strip("- ").replace("BEGIN ", "")
    body = "".join(l for l in lines if l and not l.startswith("-----"))
    return base64.b64decode(body), label


def public_numbers(pem):
    """(n, e) from a PUBLIC KEY, RSA PUBLIC KEY, PRIVATE KEY or RSA PRIVATE
    KEY PEM."""
    der, label = pem_der(pem)
    tag, s, e = _tlv(der, 0)
    top = _children(der, s, e)
    if label == "PUBLIC KEY":
        # SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }
        alg = _children(der, top[0][1], top[0][2])
        if der[alg[0][1]:alg[0][2]] != OID_RSA:
            raise ValueError("not an RSA key")
        bt, bs, be = top[1]
        if bt != 0x03 or der[bs] != 0:
            raise ValueError("bad BIT STRING")
        _, s2, e2 = _tlv(der, bs + 1)
        seq = _children(der, s2, e2)
        return _int(der, seq[0]), _int(der, seq[1])
    if label == "RSA PUBLIC KEY":
        return _int(der, top[0]), _int(der, top[1])
    if label == "PRIVATE KEY":
        # SEQUENCE { INTEGER 0, SEQUENCE { OID, NULL }, OCTET STRING { RSAPrivateKey } }
        alg = _children(der, top[1][1], top[1][2])
        if der[alg[0][1]:alg[0][2]] != OID_RSA:
            raise ValueError("not an RSA key")
        _, s2, e2 = _tlv(der, top[2][1])
        seq = _children(der, s2, e2)
        return _int(der, seq[1]), _int(der, seq[2])
    if label == "RSA PRIVATE KEY":
        return _int(der, top[1]), _int(der, top[2])
    raise ValueError("unsupported PEM block %r" % label)


def verify_rs256(n, e, signing_input, sig):
    """True if sig is a valid RSASSA-PKCS1-v1_5 SHA-256 signature."""
    k = (n.bit_length() + 7) // 8
    if len(sig) != k:
        return False
    m = pow(int.from_bytes(sig, "big"), e, n)
    em = m.to_bytes(k, "big")
    t = SHA256_DIGESTINFO + hashlib.sha256(signing_input).digest()
    if k < len(t) + 11:
        return False
    want = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(em, want)


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def self_test():
    """RFC 7520 section 4.1 (registry-kinds.md section 10)."""
    n = int.from_bytes(b64url_decode(
        "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqV"
        "wGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJl"
        "sde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQk"
        "qgc5gHdrNP5zw"), "big")
    e = 65537
    head = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
    payload = ("SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZC"
               "wgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0"
               "IG9mZiB0by4")
    sig = b64url_decode(
        "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoB"
        "wA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0"
        "ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjb"
        "U5y18kDquDg")
    inp = (head + "." + payload).encode()
    checks = [
        ("the header decodes to alg RS256, kid bilbo", json.loads(b64url_decode(head)) ==
         {"alg": "RS256", "kid": "bilbo.baggins@hobbiton.example"}),
        ("the RFC 7520 4.1 signature verifies", verify_rs256(n, e, inp, sig)),
        ("a changed payload does not", not verify_rs256(n, e, inp + b"x", sig)),
    ]
    bad = 0
    for i, (name, ok) in enumerate(checks, 1):
        bad += not ok
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
    return bad == 0


if __name__ == "__main__":
    if sys.argv[1:] == ["self-test"]:
        sys.exit(0 if self_test() else 1)
    print(__doc__)
