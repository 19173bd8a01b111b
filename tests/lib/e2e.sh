# shellcheck shell=bash
# tests/lib/e2e.sh - what the end-to-end tests of `replica run` share: a work
# dir, registries that stop when the test exits, seeding, and checks made
# with curl against the registries' HTTP API (what a user would look at).
# Sourced once: tests/lib/function.sh and serve.sh both source it.
[[ -n ${_E2E_LOADED:-} ]] && return 0
_E2E_LOADED=1
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
REPLICA=${REPLICA:-$ROOT/replica}
source "$ROOT/tests/lib/tap.sh"
source "$ROOT/tests/servers.sh"
source "$ROOT/tests/registry.sh"

E2E_WORK=$(mktemp -d /tmp/replica-e2e.XXXXXX)
_e2e_cleanup() {
    registry_stop_all
    [[ -n ${E2E_KEEP:-} ]] || rm -rf "$E2E_WORK"
}
trap _e2e_cleanup EXIT

# E2E_TLS="CA [CERT KEY]": the seed and the curl checks below trust the CA
# file CA and present the client certificate CERT with its KEY, for a
# registry on TLS (tests/registry.sh's TEST_REGISTRY_TLS); set it for one
# call (E2E_TLS="$REG_SRC_CA" manifest_digest ...) or for a test.
E2E_TLS=${E2E_TLS:-}

# _e2e_curl_tls: the curl arguments for E2E_TLS, one a line.
_e2e_curl_tls() {
    local t
    read -r -a t <<<"$E2E_TLS"
    ((${#t[@]})) || return 0
    printf '%s\n' --cacert "${t[0]}"
    ((${#t[@]} < 3)) || printf '%s\n' --cert "${t[1]}" --key "${t[2]}"
}

# _e2e_curl ARGS...: curl with the E2E_TLS arguments.
_e2e_curl() {
    local tls
    mapfile -t tls < <(_e2e_curl_tls)
    curl ${tls[@]+"${tls[@]}"} "$@"
}

# seed URL REPO TAGS KIND [LAYERS] [LAYER_BYTES] [SEED]: pushes synthetic
# images (tests/fixtures/seed.lua); prints "REPO:TAG DIGEST" lines.
seed() {
    local url=$1 tls=()
    shift
    [[ -z $E2E_TLS ]] || tls=("--tls=$(tr -s ' ' ',' <<<"$E2E_TLS")")
    REPLICA_FROM_CREDS= "$REPLICA" script "$ROOT/tests/fixtures/seed.lua" ${tls[@]+"${tls[@]}"} "$url" "$@"
}

# replica_run ARGS...: runs `replica run`, output in $OUT, exit code in $RC.
replica_run() {
    set +e
    OUT=$("$REPLICA" run "$@" 2>&1)
    RC=$?
    set -e
}

# tap_on_fail: after a failed check, the last lines of the last run's output
# and the last API answer (tests/lib/serve.sh's api), so that a failure in
# CI says what replica said (tests/lib/tap.sh calls it).
tap_on_fail() {
    if [[ -n ${OUT:-} ]]; then
        echo "  the last run (exit ${RC:-?}) ended:"
        tail -n 25 <<<"$OUT" | sed 's/^/    /'
    fi
    if [[ -n ${STATUS:-} ]]; then
        echo "  the last API answer: ${STATUS} $(head -c 1500 <<<"${BODY:-}")"
    fi
    return 0
}

# manifest_digest URL REPO REF [USER:PASS]: the digest the registry serves for
# a manifest, or "missing".
manifest_digest() {
    local url=$1 repo=$2 ref=$3 auth=${4:-} d
    local accept="application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json"
    d=$(_e2e_curl -s -o /dev/null -I ${auth:+-u "$auth"} -H "Accept: $accept" -w '%{http_code} %header{docker-content-digest}' \
        "$url/v2/$repo/manifests/$ref")
    if [[ $d == 200\ * ]]; then echo "${d#200 }"; else echo missing; fi
}

# blob_status URL REPO DIGEST: the HTTP status of a blob HEAD.
blob_status() {
    _e2e_curl -s -o /dev/null -I -w '%{http_code}' "$1/v2/$2/blobs/$3"
}

# tag_list URL REPO: the tags of a repository, sorted, one per line.
tag_list() {
    _e2e_curl -s "$1/v2/$2/tags/list" | tr -d '[]{}"' | sed 's/.*tags://' | tr ',' '\n' | sort
}

# wait_for_upload DIR BYTES PID: waits (up to ~20 s) until the upload data
# under DIR (a repository's _uploads) passes BYTES, while process PID runs.
# Returns 0 when it did, 1 when PID ended or time ran out first.
wait_for_upload() {
    local dir=$1 bytes=$2 pid=$3 size
    for _ in $(seq 1 1000); do
        size=$(cat "$dir"/*/data 2>/dev/null | wc -c || true)
        ((size > bytes)) && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

# finish_run PID FILE: waits for a background `replica run`; its exit code in
# $RC and its output (from FILE) in $OUT.
finish_run() {
    set +e
    wait "$1"
    RC=$?
    set -e
    OUT=$(cat "$2")
}

# push_blob URL REPO FILE: uploads FILE as a blob of REPO (one monolithic
# upload with curl); prints its digest.
push_blob() {
    local url=$1 repo=$2 file=$3 digest loc
    digest=sha256:$(sha256sum "$file" | cut -d' ' -f1)
    loc=$(curl -s -D - -o /dev/null -X POST "$url/v2/$repo/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$file" \
        "$loc&digest=${digest/:/%3A}" >/dev/null
    echo "$digest"
}

# push_manifest URL REPO REF MEDIA_TYPE JSON: PUTs a manifest as given;
# prints the registry's HTTP status.
push_manifest() {
    curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $4" --data-binary "$5" "$1/v2/$2/manifests/$3"
}

# push_big_image URL REPO TAG FILE: pushes FILE as the one layer of an OCI
# image REPO:TAG (monolithic uploads with curl); prints the manifest digest.
push_big_image() {
    local url=$1 repo=$2 tag=$3 file=$4 layer_digest config config_digest manifest_json
    layer_digest=$(push_blob "$url" "$repo" "$file")
    config='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    printf '%s' "$config" >"$file.config"
    config_digest=$(push_blob "$url" "$repo" "$file.config")
    manifest_json=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
        "$config_digest" "${#config}" "$layer_digest" "$(stat -c %s "$file")")
    [[ $(push_manifest "$url" "$repo" "$tag" application/vnd.oci.image.manifest.v1+json "$manifest_json") == 201 ]] || return 1
    manifest_digest "$url" "$repo" "$tag"
}
