#!/usr/bin/env python3
"""bench/seed.py - seeds and checks the registries of bench/replicate.sh.

  seed.py small URL              workload 1: 40 repositories bench/appNN x 10
                                 tags; a shared base layer plus 1-2 unique
                                 layers of real gzip data per image, JSON
                                 configs, every 4th repository multi-arch
                                 (OCI index or Docker manifest list)
  seed.py many URL REPO N        workload 2: one repository with N tags, small
                                 images sharing layers from a pool, a unique
                                 config per tag
  seed.py big URL REPO MIB DIR   workload 3: one image with a single layer of
                                 MIB MiB of random data (staged in DIR, which
                                 is on tmpfs, and removed)
  seed.py verify SRC DST LIST    check that DST serves, for every "REPO:TAG
                                 DIGEST" line of LIST, the same manifest
                                 digest; prints "ok N" or the mismatches and
                                 exits 1

The seed commands print one "REPO:TAG DIGEST" line per tag. Uploads are
POST + PUT ?digest= on keep-alive connections, 8 at a time; the shared base
layer is uploaded once and mounted into the other repositories. Layers are
gzip of random bytes, so skopeo copies them as they are.
"""
import concurrent.futures
import gzip
import hashlib
import http.client
import json
import os
import sys
import threading
import urllib.parse

PAR = 8
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = ",".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Registry:
    """One keep-alive connection per thread to a plain-HTTP registry."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPConnection(self.host, self.port, timeout=300)
        return c

    def request(self, method, path, body=None, headers=None, ok=(200, 201, 202)):
        for attempt in (1, 2):
            c = self.conn()
            try:
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                break
            except (ConnectionError, http.client.HTTPException):
                c.close()
                self.local.c = None
                if attempt == 2 or hasattr(body, "read"):
                    raise
        if r.status not in ok:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return r, data

    def upload_location(self, repo):
        r, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}, ok=(202,))
        u = urllib.parse.urlsplit(r.getheader("Location"))
        return u.path + "?" + u.query

    def put_blob(self, repo, data, digest=None, size=None):
        digest = digest or sha(data)
        loc = self.upload_location(repo)
        self.request("PUT", loc + "&digest=" + digest, body=data,
                     headers={"Content-Type": "application/octet-stream",
                              "Content-Length": str(size if size is not None else len(data))}, ok=(201,))
        return digest

    def mount(self, repo, digest, src_repo):
        self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={src_repo}",
                     headers={"Content-Length": "0"}, ok=(201,))

    def put_manifest(self, repo, ref, body, media_type):
        self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                     headers={"Content-Type": media_type}, ok=(201,))
        return sha(body)

    def manifest_digest(self, repo, ref):
        r, _ = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, ok=(200, 404))
        return r.getheader("Docker-Content-Digest") if r.status == 200 else "missing"


def gz_layer(nbytes):
    raw = os.urandom(nbytes)
    return gzip.compress(raw, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def image(reg, repo, arch, oci, layers, label):
    """Pushes config and layers ([(gzip bytes, diff_id, shared digest or None)]),
    returns (manifest body, media type)."""
    descs, diff_ids = [], []
    for data, diff_id, known in layers:
        d = known or reg.put_blob(repo, data)
        descs.append({"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": d, "size": len(data)})
        diff_ids.append(diff_id)
    config = json.dumps({
        "architecture": arch, "os": "linux", "created": "2026-11-29T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"], "Labels": {"bench": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-11-29T00:00:00Z", "created_by": "bench"} for _ in descs],
    }, separators=(",", ":")).encode()
    cfg = {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": reg.put_blob(repo, config),
           "size": len(config)}
    mt = OCI_MANIFEST if oci else DOCKER_MANIFEST
    body = json.dumps({"schemaVersion": 2, "mediaType": mt, "config": cfg, "layers": descs},
                      separators=(",", ":")).encode()
    return body, mt


def index_body(children, oci):
    mt = OCI_INDEX if oci else DOCKER_LIST
    return json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": [
        {"mediaType": cmt, "digest": sha(b), "size": len(b),
         "platform": {"os": "linux", "architecture": arch}} for arch, b, cmt in children]},
        separators=(",", ":")).encode(), mt


def run_all(fn, items):
    out = []
    with concurrent.futures.ThreadPoolExecutor(PAR) as ex:
        for r in ex.map(fn, items):
            out.extend(r)
    return out


def seed_small(url):
    reg = Registry(url)
    base, base_diff = gz_layer(1 << 20)
    base_digest = reg.put_blob("bench/app01", base)
    repos = [f"bench/app{i:02d}" for i in range(1, 41)]
    run_all(lambda r: [] if r == "bench/app01" else reg.mount(r, base_digest, "bench/app01") or [], repos)

    def one(job):
        i, t = job
        repo, tag = f"bench/app{i:02d}", f"v1.{t}"
        multi, oci = i % 4 == 0, i % 2 == 0
        archs = ["amd64", "arm64"] if multi else ["amd64"]
        children = []
        for arch in archs:
            layers = [(base, base_diff, base_digest)]
            for _ in range(1 + (i + t) % 2):
                layers.append(gz_layer(200000) + (None,))
            body, mt = image(reg, repo, arch, oci, layers, f"{repo}:{tag}/{arch}")
            if multi:
                reg.put_manifest(repo, sha(body), body, mt)
            children.append((arch, body, mt))
        if multi:
            body, mt = index_body(children, oci)
        else:
            _, body, mt = children[0]
        return [f"{repo}:{tag} {reg.put_manifest(repo, tag, body, mt)}"]

    return run_all(one, [(i, t) for i in range(1, 41) for t in range(10)])


def seed_many(url, repo, n):
    reg = Registry(url)
    pool = [gz_layer(20000) for _ in range(8)]
    pool = [(d, diff, reg.put_blob(repo, d)) for d, diff in pool]

    def one(k):
        layers = [pool[k % 8], pool[(k // 8) % 8 if (k // 8) % 8 != k % 8 else (k + 1) % 8]]
        tag = f"t{k:05d}"
        body, mt = image(reg, repo, "amd64", k % 2 == 0, layers, f"{repo}:{tag}")
        return [f"{repo}:{tag} {reg.put_manifest(repo, tag, body, mt)}"]

    return run_all(one, range(n))


def seed_big(url, repo, mib, tmpdir):
    reg = Registry(url)
    path = os.path.join(tmpdir, "big.layer")
    h, chunk = hashlib.sha256(), 1 << 20
    with open(path, "wb") as f:
        for _ in range(mib):
            b = os.urandom(chunk)
            h.update(b)
            f.write(b)
    digest, size = "sha256:" + h.hexdigest(), mib * chunk
    with open(path, "rb") as f:
        loc = reg.upload_location(repo)
        reg.request("PUT", loc + "&digest=" + digest, body=f,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    ok=(201,))
    os.unlink(path)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    cfg = {"mediaType": OCI_CONFIG, "digest": reg.put_blob(repo, config), "size": len(config)}
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                   "digest": digest, "size": size}]}).encode()
    return [f"{repo}:big {reg.put_manifest(repo, 'big', body, OCI_MANIFEST)}", f"# blob {digest} {size}"]


def verify(src, dst, listfile):
    d = Registry(dst)
    refs = [l.split() for l in open(listfile) if l.strip() and not l.startswith("#")]

    def one(ref):
        name, want = ref
        repo, tag = name.rsplit(":", 1)
        got = d.manifest_digest(repo, tag)
        return [] if got == want else [f"{name}: target {got}, source {want}"]

    bad = run_all(one, refs)
    if bad:
        print(f"MISMATCH {len(bad)} of {len(refs)}: " + "; ".join(bad[:5]))
        return 1
    print(f"ok {len(refs)}")
    return 0


def main(a):
    if a[:1] == ["small"] and len(a) == 2:
        out = seed_small(a[1])
    elif a[:1] == ["many"] and len(a) == 4:
        out = seed_many(a[1], a[2], int(a[3]))
    elif a[:1] == ["big"] and len(a) == 5:
        out = seed_big(a[1], a[2], int(a[3]), a[4])
    elif a[:1] == ["verify"] and len(a) == 4:
        return verify(a[1], a[2], a[3])
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
