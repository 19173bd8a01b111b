#!/usr/bin/env bash
# replica run against manifests that lie: sizes that do not match the
# blobs, a blob listed twice, unknown media types, a 50 MB manifest, an
# index that refers to itself, an index inside an index, and schema 1. What
# Distribution stores is pushed to it; what no registry would store is
# served by tests/faultproxy.c in front of it (a rule answering with a file).
# Each lie gets a clear refusal with nothing of the tag pushed; what is
# legal (a layer listed twice, artifacts' own media types) is copied exactly.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/lib/proxy.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
W=$E2E_WORK
OM=application/vnd.oci.image.manifest.v1+json
OI=application/vnd.oci.image.index.v1+json

printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$W/config"
CS=$(stat -c %s "$W/config")
head -c 100000 /dev/urandom >"$W/layer"
head -c 5000 /dev/urandom >"$W/layer2"

# image REPO CONFIG_SIZE LAYERS [CONFIG_TYPE]: an image manifest's JSON whose
# config is $W/config (pushed to REPO on the source) with the size given;
# LAYERS is the layers' JSON.
image() {
    local c
    c=$(push_blob "$S" "$1" "$W/config")
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%d},"layers":[%s]}' \
        "$OM" "${4:-application/vnd.oci.image.config.v1+json}" "$c" "$2" "$3"
}
# layer REPO FILE SIZE [TYPE]: FILE pushed to REPO, as a layer descriptor
# with the size given.
layer() {
    printf '{"mediaType":"%s","digest":"%s","size":%d}' "${4:-application/vnd.oci.image.layer.v1.tar+gzip}" \
        "$(push_blob "$S" "$1" "$2")" "$3"
}
# pushed REPO: the tags the target has in REPO, sorted, space-separated
# (nothing when it has none, or not the repository).
pushed() {
    curl -s "$D/v2/$1/tags/list" | python3 -c 'import json, sys
print(" ".join(sorted(json.load(sys.stdin).get("tags") or [])))'
}
# blob_on_target REPO FILE: the target's HEAD status for FILE's blob in REPO.
blob_on_target() {
    blob_status "$D" "$1" "sha256:$(sha256sum "$2" | cut -d' ' -f1)"
}

# --- sizes that do not match ------------------------------------------------------------
is "$(push_manifest "$S" lie/small v1 "$OM" "$(image lie/small "$CS" "$(layer lie/small "$W/layer" 99999)")")" 201 \
    "Distribution stores a manifest whose layer size is one byte short"
replica_run --from "$S" --to "$D" --repo lie/small
is "$RC" 1 "a layer smaller than its blob: the run fails"
like "$OUT" "FAILED lie/small:v1 +stage push: blob sha256:[0-9a-f]+: .*digest mismatch \(the source sent more bytes than the blob's size\)" \
    "naming the tag, the blob and the mismatch"
is "$(pushed lie/small)" "" "no tag is pushed"
is "$(blob_on_target lie/small "$W/layer")" 404 "nor the blob"

push_manifest "$S" lie/big v1 "$OM" "$(image lie/big "$CS" "$(layer lie/big "$W/layer" 100001)")" >/dev/null
replica_run --from "$S" --to "$D" --repo lie/big
is "$RC" 1 "a layer larger than its blob: the run fails"
like "$OUT" "FAILED lie/big:v1 +stage push: .*digest mismatch \(the source sent 100000 bytes, the blob has 100001\)" \
    "saying how many bytes came"
is "$(pushed lie/big)" "" "no tag is pushed"

# A config whose size lies, in a repository whose honest tag the target
# has already: the target has the config, so its size comes from the
# target's HEAD, not from a copy.
push_manifest "$S" lie/cfg v0 "$OM" "$(image lie/cfg "$CS" "$(layer lie/cfg "$W/layer2" 5000)")" >/dev/null
push_manifest "$S" lie/cfg v1 "$OM" "$(image lie/cfg 10 "$(layer lie/cfg "$W/layer2" 5000)")" >/dev/null
replica_run --from "$S" --to "$D" --repo lie/cfg --tag v0
is "$RC" 0 "the honest tag is copied"
replica_run --from "$S" --to "$D" --repo lie/cfg --tag v1
is "$RC" 1 "a config whose size lies, which the target already has: the run fails"
like "$OUT" "size mismatch \(the manifest says 10 bytes, the target's blob has $CS\)" "the target's size is checked"
is "$(pushed lie/cfg)" "v0" "the lying tag is not pushed"

# Two repositories list one blob with two sizes: one copies it, the other
# would mount it.
push_manifest "$S" lie/two-a v1 "$OM" "$(image lie/two-a "$CS" "$(layer lie/two-a "$W/layer2" 5000)")" >/dev/null
push_manifest "$S" lie/two-b v1 "$OM" "$(image lie/two-b "$CS" "$(layer lie/two-b "$W/layer2" 4000)")" >/dev/null
replica_run --from "$S" --to "$D" --repo 'lie/two-*' --dest-namespace two
is "$RC" 1 "one blob with two sizes in two repositories: the run fails"
like "$OUT" "FAILED lie/two-b:v1 .*size mismatch|FAILED lie/two-b:v1 .*digest mismatch" "for the repository whose size lies"
is "$(pushed two/lie/two-b)" "" "which pushes no tag"
is "$(manifest_digest "$D" two/lie/two-a v1)" "$(manifest_digest "$S" lie/two-a v1)" "while the honest one is copied exactly"

# --- legal, if unusual: copied exactly -----------------------------------------------
l=$(layer lie/twice "$W/layer2" 5000)
push_manifest "$S" lie/twice v1 "$OM" "$(image lie/twice "$CS" "$l,$l")" >/dev/null
replica_run --from "$S" --to "$D" --repo lie/twice --dest-namespace legal
is "$RC" 0 "a layer listed twice (as Docker's empty layer often is): the run completes"
like "$OUT" "blobs: 2 copied" "each blob is copied once"
is "$(manifest_digest "$D" legal/lie/twice v1)" "$(manifest_digest "$S" lie/twice v1)" "and the manifest is exact"

push_manifest "$S" lie/artifact v1 "$OM" \
    "$(image lie/artifact "$CS" "$(layer lie/artifact "$W/layer2" 5000 application/vnd.example.data)" application/vnd.example.config+json)" >/dev/null
replica_run --from "$S" --to "$D" --repo lie/artifact --dest-namespace legal
is "$RC" 0 "an artifact (a config and a layer of media types replica does not know): the run completes"
is "$(manifest_digest "$D" legal/lie/artifact v1)" "$(manifest_digest "$S" lie/artifact v1)" "and it is exact"

# --- what no registry stores: served by the proxy ------------------------------------------
# Each repository has a real tag v1 (so the tag list names it); the proxy
# answers that tag's manifest with a file.
for r in huge schema1 unknown selfref nested; do
    push_manifest "$S" "lie/$r" v1 "$OM" "$(image "lie/$r" "$CS" "$(layer "lie/$r" "$W/layer2" 5000)")" >/dev/null
done
python3 - "$W" <<'EOF'
import hashlib, json, sys
w = sys.argv[1]
def write(name, data):
    open(f"{w}/{name}", "wb").write(data)
cfg = open(f"{w}/config", "rb").read()
cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
# 50 MB: an image manifest padded with an annotation
big = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
                  "layers": [], "annotations": {"pad": "x" * (50 * 1000 * 1000)}}).encode()
write("huge.json", big)
write("schema1.json", json.dumps({"schemaVersion": 1, "name": "lie/schema1", "tag": "v1", "architecture": "amd64",
                                  "fsLayers": [{"blobSum": cd}], "history": [{"v1Compatibility": "{}"}]}).encode())
write("unknown.json", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.example.thing.v1+json",
                                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                             "size": len(cfg)}, "layers": []}).encode())
# an index whose child is "itself": its digest is asked for, and the same
# body comes back
sd = "sha256:" + "5" * 64
write("selfref.json", json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                  "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                                                 "digest": sd, "size": 200}]}).encode())
open(f"{w}/selfref.digest", "w").write(sd)
EOF
# nested: a real index whose child is a real index (Distribution stores both)
child=$(manifest_digest "$S" lie/nested v1)
csize=$(curl -s -H "Accept: $OM" "$S/v2/lie/nested/manifests/v1" | wc -c)
inner=$(printf '{"schemaVersion":2,"mediaType":"%s","manifests":[{"mediaType":"%s","digest":"%s","size":%d}]}' "$OI" "$OM" "$child" "$csize")
is "$(push_manifest "$S" lie/nested inner "$OI" "$inner")" 201 "Distribution stores an index"
inner_digest=sha256:$(printf '%s' "$inner" | sha256sum | cut -d' ' -f1)
outer=$(printf '{"schemaVersion":2,"mediaType":"%s","manifests":[{"mediaType":"%s","digest":"%s","size":%d}]}' "$OI" "$OI" "$inner_digest" "${#inner}")
is "$(push_manifest "$S" lie/nested v2 "$OI" "$outer")" 201 "and an index of that index"

proxy_start src "$S"
PS=$PROXY_SRC_URL
proxy_rules src <<EOF
* /v2/lie/huge/manifests/v1 body=$W/huge.json type=$OM
* /v2/lie/schema1/manifests/v1 body=$W/schema1.json type=application/vnd.docker.distribution.manifest.v1+prettyjws
* /v2/lie/unknown/manifests/v1 body=$W/unknown.json type=application/vnd.example.thing.v1+json
* /v2/lie/selfref/manifests/* body=$W/selfref.json type=$OI
EOF
ok "$(($(stat -c %s "$W/huge.json") > 50000000 ? 0 : 1))" "the proxy serves a manifest of $(stat -c %s "$W/huge.json") bytes"

replica_run --from "$PS" --to "$D" --repo lie/huge
is "$RC" 1 "a 50 MB manifest: the run fails"
like "$OUT" "FAILED lie/huge:v1 +stage pull: .*the manifest is larger than 4 MiB, the most replica reads" "saying it is too large to read"
is "$(pushed lie/huge)" "" "no tag is pushed"

replica_run --from "$PS" --to "$D" --repo lie/schema1
is "$RC" 1 "a schema 1 manifest: the run fails"
like "$OUT" "FAILED lie/schema1:v1 +stage pull: .*Docker schema 1 .* is not supported" "saying schema 1 is not supported"
is "$(pushed lie/schema1)" "" "no tag is pushed"

replica_run --from "$PS" --to "$D" --repo lie/unknown
is "$RC" 1 "a manifest of an unknown media type: the run fails"
like "$OUT" "FAILED lie/unknown:v1 +stage pull: .*unsupported media type application/vnd.example.thing.v1\+json" \
    "naming the media type"
is "$(pushed lie/unknown)" "" "no tag is pushed"

replica_run --from "$PS" --to "$D" --repo lie/selfref
is "$RC" 1 "an index that refers to itself: the run fails"
like "$OUT" "FAILED lie/selfref:v1 +stage pull: .*$(cat "$W/selfref.digest").*digest mismatch" \
    "the child asked for by digest is not what came back"
is "$(pushed lie/selfref)" "" "no tag is pushed"
is "$(proxy_log src | awk '$4 ~ /selfref\/manifests\/sha256/' | wc -l)" 1 "and the child was fetched once, not followed round"

replica_run --from "$PS" --to "$D" --repo lie/nested --tag v2
is "$RC" 1 "an index inside an index: the run fails"
like "$OUT" "FAILED lie/nested:v2 +stage pull: .*an index inside an index is not supported" "saying so"
is "$(pushed lie/nested)" "" "no tag is pushed"

# --- and a re-run of what is honest completes ------------------------------------------------
proxy_rules src </dev/null
replica_run --from "$PS" --to "$D" --repo 'lie/huge' --repo 'lie/schema1' --repo 'lie/unknown' --tag v1
is "$RC" 0 "once the source serves honest manifests, the same repositories copy"
is "$(manifest_digest "$D" lie/huge v1)" "$(manifest_digest "$S" lie/huge v1)" "exactly"

done_testing
