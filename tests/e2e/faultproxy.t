#!/usr/bin/env bash
# The fault and latency proxy (tests/faultproxy.c) that the fault tests and
# the far-registry benchmark put in front of a registry: what it promises,
# checked with curl through it against a real Distribution registry. Only
# lower bounds are asserted on time: a busy machine can make the link
# slower, never faster.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/lib/proxy.sh"

registry_start reg "$E2E_WORK/reg"
R=$REG_REG_URL
blob=$E2E_WORK/blob.bin
head -c $((8 << 20)) /dev/urandom >"$blob"
want=$(push_big_image "$R" far/app v1 "$blob")
layer=sha256:$(sha256sum "$blob" | cut -d' ' -f1)

proxy_start p "$R"
P=$PROXY_P_URL

# fetch PATH [CURL ARGS]: GETs PATH through the proxy into $E2E_WORK/got;
# prints "CURL_EXIT HTTP_CODE BYTES TTFB TOTAL".
fetch() {
    local path=$1 w rc
    shift
    set +e
    w=$(curl -s -o "$E2E_WORK/got" -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}' "$@" "$P$path")
    rc=$?
    set -e
    echo "$rc $w"
}

# --- the link: latency and rate ---------------------------------------------
read -r rc code size ttfb _ < <(fetch /v2/)
is "$rc $code" "0 200" "the proxy carries a request to the registry and back"
proxy_config p rtt=100
read -r rc code size ttfb _ < <(fetch /v2/)
is "$rc $code" "0 200" "with rtt=100 too"
ok "$(awk -v t="$ttfb" 'BEGIN { exit !(t >= 0.2) }'; echo $?)" \
    "a new connection's first answer takes the handshake's and the request's round trips (${ttfb} s >= 0.2 s)"
proxy_config p rtt=0 rate=64m
read -r rc code size _ total < <(fetch "/v2/far/app/blobs/$layer")
is "$rc $code $size" "0 200 $((8 << 20))" "an 8 MiB blob comes through at 64 Mbit/s"
ok "$(awk -v t="$total" 'BEGIN { exit !(t >= 0.95) }'; echo $?)" "no faster than the link's rate (${total} s >= 0.95 s for 1.05 s at 64 Mbit/s)"
is "$(sha256sum <"$E2E_WORK/got" | cut -d' ' -f1)" "${layer#sha256:}" "and intact"
proxy_config p rate=0

# --- rules: counting ------------------------------------------------------------
proxy_rules p <<'EOF'
# the 2nd and 3rd GET of /v2/ get a 503
GET /v2/ nth=2 times=2 status=503
EOF
codes=""
for _ in 1 2 3 4; do codes+="$(curl -s -o /dev/null -w '%{http_code}' "$P/v2/") "; done
is "$codes" "200 503 503 200 " "nth=2 times=2 fires on the 2nd and 3rd match only"
proxy_rules p <<'EOF'
HEAD /v2/*/blobs/* every=2 status=404
EOF
codes=""
for _ in 1 2 3 4; do codes+="$(curl -s -o /dev/null -I -w '%{http_code}' "$P/v2/far/app/blobs/$layer") "; done
is "$codes" "404 200 404 200 " "every=2 fires on every other match, from the first"

# --- rules: answers ---------------------------------------------------------------
proxy_clear p
proxy_rules p <<'EOF'
GET /v2/*/manifests/* times=1 status=429 retry-after=7
EOF
out=$(curl -s -i -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$P/v2/far/app/manifests/v1" | tr -d '\r')
like "$out" "^HTTP/1.1 429 Too Many Requests" "status=429 answers 429"
like "$out" $'\nRetry-After: 7\n' "with the Retry-After it names"
like "$out" '"code":"TOOMANYREQUESTS"' "and an OCI error body"
is "$(manifest_digest "$P" far/app v1)" "$want" "the next request goes through"
log=$(proxy_log p)
like "$log" "^[0-9]+ [0-9]+ GET /v2/far/app/manifests/v1 429 1$" "the log shows the answered request, its status and its rule"
like "$log" $'\n'"[0-9]+ [0-9]+ HEAD /v2/far/app/manifests/v1 200 -" "and the forwarded one with the registry's status"

# --- rules: faults in a response's body ----------------------------------------------
proxy_rules p <<'EOF'
GET /v2/*/blobs/* times=1 reset=100000
GET /v2/*/blobs/* times=1 truncate=5000
GET /v2/*/blobs/* times=1 stall=65536
EOF
read -r rc code size _ < <(fetch "/v2/far/app/blobs/$layer")
is "$rc $size" "56 100000" "reset=100000: the client gets 100000 bytes of the body, then a reset (curl exit 56)"
read -r rc code size _ < <(fetch "/v2/far/app/blobs/$layer")
is "$rc $size" "18 5000" "truncate=5000: 5000 bytes, then the connection closes short (curl exit 18)"
read -r rc code size _ < <(fetch "/v2/far/app/blobs/$layer" --max-time 1.5)
is "$rc $size" "28 65536" "stall=65536: 65536 bytes, then nothing (curl gives up, exit 28)"
read -r rc code size _ < <(fetch "/v2/far/app/blobs/$layer")
is "$rc $code $size" "0 200 $((8 << 20))" "once the rules are spent, the blob comes whole"

# --- rules: faults in a request's body -------------------------------------------------
proxy_rules p <<'EOF'
PUT /v2/*/blobs/uploads/* times=1 reset-up=1000000
EOF
upload() { # upload REPO FILE [CURL ARGS]: a monolithic blob upload through the proxy; prints curl's exit and status
    local repo=$1 file=$2 loc d rc code
    shift 2
    d=sha256:$(sha256sum "$file" | cut -d' ' -f1)
    loc=$(curl -s -D - -o /dev/null -X POST "$P/v2/$repo/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    set +e
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' "$@" "$loc&digest=${d/:/%3A}")
    rc=$?
    set -e
    echo "$rc $code"
}
read -r rc _ < <(upload up/a "$blob" --data-binary @"$blob")
ok "$([[ $rc == 55 || $rc == 56 ]]; echo $?)" "reset-up=1000000: an upload is reset part way (curl exit $rc)"
is "$(blob_status "$R" up/a "$layer")" 404 "and the registry has no blob from it"
read -r rc code < <(upload up/b "$blob" -H 'Transfer-Encoding: chunked' --data-binary @"$blob")
is "$rc $code" "0 201" "a chunked upload is carried whole (its chunks are read, not cut)"
is "$(blob_status "$R" up/b "$layer")" 200 "and the registry verified its digest"

# --- connections, raw mode, bad rules ---------------------------------------------------
proxy_rules p <<'EOF'
TCP * nth=2 times=1 reset=10
EOF
before=$(proxy_stat p connections)
s1=$(curl -s -o /dev/null -w '%{http_code}' "$P/v2/" || true)
set +e; curl -s -o /dev/null "$P/v2/"; rc=$?; set -e
s3=$(curl -s -o /dev/null -w '%{http_code}' "$P/v2/" || true)
is "$s1 $rc $s3" "200 56 200" "a TCP rule resets the Nth connection after N bytes back"
is "$(( $(proxy_stat p connections) - before ))" 3 "and the proxy counts the connections"
set +e
msg=$(printf 'GET /v2/ nth=1\nGET /v2/ bogus=1 status=500\n' | proxy_rules p 2>&1)
set -e
like "$msg" "line 1: a rule needs an action" "a bad rule is refused with its line and why"
printf '{"lie": true}' >"$E2E_WORK/lie.json"
proxy_rules p <<EOF
* /v2/far/app/manifests/v9 body=$E2E_WORK/lie.json type=application/vnd.example+json
EOF
is "$(curl -s -w ' %{http_code} %{content_type}' "$P/v2/far/app/manifests/v9")" \
    '{"lie": true} 200 application/vnd.example+json' "body= answers with the file, as the type given"
is "$(curl -s -I -o /dev/null -w '%{http_code} %header{content-length}' "$P/v2/far/app/manifests/v9")" "200 13" \
    "and a HEAD with its length only"
set +e
msg=$(printf 'GET /x body=%s\n' "$E2E_WORK/nonesuch" | proxy_rules p 2>&1)
set -e
like "$msg" "line 1: body=.*nonesuch: No such file" "a body= file that cannot be read is refused"
is "$(curl -s -o /dev/null -w '%{http_code}' "$P/v2/")" 200 "and the rules before it stand (the TCP rule is spent)"

# drop-header: the answer's head comes without that header, all else intact
proxy_rules p <<'EOF'
GET /v2/far/app/manifests/* drop-header=docker-content-digest
EOF
accept="Accept: application/vnd.oci.image.manifest.v1+json"
direct=$(curl -s -D - -o /dev/null -H "$accept" "$R/v2/far/app/manifests/v1" | tr -d '\r')
like "$direct" $'\nDocker-Content-Digest: '"$want" "the registry itself sends Docker-Content-Digest"
hdrs=$(curl -s -D - -o "$E2E_WORK/got" -H "$accept" "$P/v2/far/app/manifests/v1" | tr -d '\r')
is "$(grep -ci '^docker-content-digest:' <<<"$hdrs")" 0 "drop-header= takes it out of the answer (named in any case)"
is "$(grep -v -i '^docker-content-digest:\|^date:' <<<"$hdrs")" "$(grep -v -i '^docker-content-digest:\|^date:' <<<"$direct")" \
    "and leaves every other header as the registry sent it"
is "sha256:$(sha256sum <"$E2E_WORK/got" | cut -d' ' -f1)" "$want" "and the body intact"

done_testing
