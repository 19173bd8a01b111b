# shellcheck shell=bash
# tests/lib/standin.sh - what the stand-in tests (tests/e2e/standin_*.t)
# share: TAP, a work dir, the stand-ins (tests/standins.sh) stopped on exit,
# and `http`, one curl call whose status, headers and body are kept.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$ROOT/tests/lib/tap.sh"
source "$ROOT/tests/servers.sh"
source "$ROOT/tests/registry.sh"
SI_WORK=$(mktemp -d /tmp/replica-standin.XXXXXX)
_si_cleanup() {
    [[ -n ${E2E_KEEP:-} ]] || rm -rf "$SI_WORK"
}
trap _si_cleanup EXIT
source "$ROOT/tests/standins.sh"   # chains its stop onto the trap above

# http METHOD URL [CURL_ARGS...]: sets STATUS, BODY and HEADERS (the raw
# header block, CR removed).
# shellcheck disable=SC2034  # STATUS, BODY, HEADERS are read by the tests
http() {
    local method=$1 url=$2
    shift 2
    local args=(-s -o "$SI_WORK/body" -D "$SI_WORK/headers" -w '%{http_code}')
    if [[ $method == HEAD ]]; then args+=(-I); else args+=(-X "$method"); fi
    STATUS=$(curl "${args[@]}" "$@" "$url") || true
    BODY=$(cat "$SI_WORK/body" 2>/dev/null || true)
    HEADERS=$(tr -d '\r' <"$SI_WORK/headers" 2>/dev/null || true)
}

# hdr NAME: the value of header NAME in the last answer (case-insensitive).
hdr() {
    awk -v n="$(echo "$1" | tr '[:upper:]' '[:lower:]')" 'BEGIN{FS=": "} {k=tolower($1)} k==n {sub(/^[^:]*: /,""); print; exit}' <<<"$HEADERS"
}

# jb FILTER: jq FILTER over the last body (raw output).
jb() {
    jq -r "$1" <<<"$BODY"
}
