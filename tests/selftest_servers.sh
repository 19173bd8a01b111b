#!/usr/bin/env bash
# tests/selftest_servers.sh — manual check of the loopback test servers.
# Starts them in a temporary directory, exercises every location and fault
# mode, stops them, and prints one PASS/FAIL line per check.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=servers.sh
source "$here/servers.sh"

FAILS=0
PASSES=0
WORK=$(mktemp -d)

# Stop the servers and remove the temporary directory.
cleanup() {
    servers_stop
    rm -rf "$WORK"
}
trap cleanup EXIT

# Record one check: check NAME EXPECTED ACTUAL.
check() {
    if [[ $2 == "$3" ]]; then
        echo "PASS $1"
        PASSES=$((PASSES + 1))
    else
        echo "FAIL $1: expected [$2] got [$3]"
        FAILS=$((FAILS + 1))
    fi
}

# Print curl's exit code for the given arguments (output discarded).
curl_rc() {
    local rc=0
    curl -s -o /dev/null "$@" || rc=$?
    echo "$rc"
}

servers_start "$WORK/srv"
echo "servers: http=$HTTP_URL https=$HTTPS_URL fault=$FAULT_URL ca=$TEST_CA"
files=$SERVERS_DIR/www/files

# Checks run against both nginx servers.
for base in "$HTTP_URL" "$HTTPS_URL"; do
    c=(curl -s --cacert "$TEST_CA")
    proto=${base%%:*}
    check "$proto small.txt" "$(printf 'hello from nginx\n' | od -c)" "$("${c[@]}" "$base/files/small.txt" | od -c)"
    for f in 1k.bin 64k.bin 1m.bin; do
        check "$proto $f" "$(sha256sum <"$files/$f")" "$("${c[@]}" "$base/files/$f" | sha256sum)"
    done
    check "$proto echo" $'method=POST\nx-test=abc\nbody=payload' \
        "$("${c[@]}" -H 'X-Test: abc' --data-binary payload "$base/echo")"
    check "$proto echo GET" $'method=GET\nx-test=\nbody=' "$("${c[@]}" "$base/echo")"
    for code in 200 201 202 204 301 302 400 401 404 500 503; do
        check "$proto status $code" "$code" "$("${c[@]}" -o /dev/null -w '%{http_code}' "$base/status/$code")"
    done
    check "$proto 301 follow" "hello from nginx" "$("${c[@]}" -L "$base/status/301")"
    check "$proto 302 follow" "hello from nginx" "$("${c[@]}" -L "$base/status/302")"
    hdrs=$("${c[@]}" -D - -o /dev/null "$base/status/401" | tr -d '\r')
    check "$proto 401 WWW-Authenticate" 'www-authenticate: Bearer realm="http://127.0.0.1/token",service="test"' \
        "$(grep -i '^www-authenticate:' <<<"$hdrs" | sed 's/^[^:]*:/www-authenticate:/')"
    hdrs=$("${c[@]}" -D - -o /dev/null "$base/headers" | tr -d '\r')
    check "$proto headers Link x2" 2 "$(grep -ci '^link:' <<<"$hdrs")"
    check "$proto headers X-Multi x2" 2 "$(grep -ci '^x-multi:' <<<"$hdrs")"
    check "$proto headers body" ok "$("${c[@]}" "$base/headers")"
    t0=$(date +%s%N)
    body=$("${c[@]}" "$base/slow/x")
    ms=$((($(date +%s%N) - t0) / 1000000))
    check "$proto slow body" slow "$body"
    check "$proto slow took >=1s" yes "$( ((ms >= 950)) && echo yes || echo "no (${ms}ms)")"
done

# HTTP/2 and TLS verification on the HTTPS port.
check "https negotiates HTTP/2" 2 "$(curl -s --http2 --cacert "$TEST_CA" -o /dev/null -w '%{http_version}' "$HTTPS_URL/files/small.txt")"
check "https via localhost name" 200 "$(curl -s --cacert "$TEST_CA" -o /dev/null -w '%{http_code}' "https://localhost:$HTTPS_PORT/files/small.txt")"
check "https without CA fails (60)" 60 "$(curl_rc "$HTTPS_URL/files/small.txt")"
check "http is HTTP/1.1" 1.1 "$(curl -s -o /dev/null -w '%{http_version}' "$HTTP_URL/files/small.txt")"
check "http keep-alive reuse" "1 0" "$(curl -s -o /dev/null -o /dev/null -w '%{num_connects} ' "$HTTP_URL/echo" "$HTTP_URL/echo" | xargs)"

# Fault server modes, judged by curl exit codes.
check "fault /ok body" ok "$(curl -s "$FAULT_URL/ok")"
check "fault /ok keep-alive reuse" "1 0 0" "$(curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects} ' \
    "$FAULT_URL/ok" "$FAULT_URL/ok?a=1" "$FAULT_URL/ok" | xargs)"
check "fault /ok with body keep-alive" "okok" "$(curl -s --data-binary 0123456789 "$FAULT_URL/ok" "$FAULT_URL/ok")"
check "fault 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$FAULT_URL/other")"
# curl averages speed over a ~5 s window, so the initial 1000-byte burst keeps a
# 1 B/s limit satisfied for ~6 s; a 1000 B/s limit trips after ~2 s instead.
check "fault /stall speed-limit (28)" 28 "$(curl_rc --speed-limit 1000 --speed-time 2 "$FAULT_URL/stall")"
check "fault /stall partial bytes" 1000 "$(curl -s --max-time 1 -o /dev/null -w '%{size_download}' "$FAULT_URL/stall" || true)"
check "fault /close truncated (18)" 18 "$(curl_rc "$FAULT_URL/close")"
check "fault /hold timeout (28)" 28 "$(curl_rc --max-time 1 "$FAULT_URL/hold")"
check "fault /reset (56)" 56 "$(curl_rc "$FAULT_URL/reset")"

# Stopping: processes gone, ports closed, second stop harmless.
nginx_pid=$(cat "$SERVERS_DIR/nginx.pid")
servers_stop
servers_stop
check "stop: nginx gone" no "$(_servers_alive "$nginx_pid" && echo yes || echo no)"
for p in "$HTTP_PORT" "$HTTPS_PORT" "$FAULT_PORT"; do
    check "stop: port $p closed" no "$(_servers_port_open "$p" && echo yes || echo no)"
done

echo "selftest: $PASSES passed, $FAILS failed"
((FAILS == 0))
