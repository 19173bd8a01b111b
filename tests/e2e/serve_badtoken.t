#!/usr/bin/env bash
# replica serve against a client guessing tokens: after 5 wrong tokens in a
# minute its address gets 429 with Retry-After (the seconds left) and no
# token is checked, not even the right one; another address is not touched;
# once the time has passed the address is served again, and one more wrong
# token blocks it twice as long. A request without a token is no guess.
# The block is logged, naming the address. Addresses are the sockets':
# 127.0.0.2 and 127.0.0.3 are other clients on loopback.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

serve_start badtoken --auth-backoff 2

# call TOKEN [SOURCE] [PATH]: GET PATH (/registries) with TOKEN ("" for no
# Authorization header) from SOURCE (127.0.0.1); sets CODE, RETRY (the
# Retry-After header, or "") and ERROR (the JSON error, or "").
call() {
    local tok=$1 src=${2:-127.0.0.1} path=${3:-/registries} out
    out=$(curl -s -m 10 --interface "$src" -D - ${tok:+-H "Authorization: Bearer $tok"} "$API$path" | tr -d '\r')
    CODE=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$out")
    RETRY=$(sed -n 's/^[Rr]etry-[Aa]fter: *//p' <<<"$out")
    ERROR=$(sed -n '$p' <<<"$out" | jq -r '.error // empty' 2>/dev/null || true)
}

# wait_served [SOURCE]: polls with the right token (up to 15 s) until the
# API answers 200; sets WAITED to the seconds it took.
wait_served() {
    local t0 end=$((SECONDS + 15))
    t0=$(date +%s.%N)
    while ((SECONDS < end)); do
        call "$TOKEN" "${1:-127.0.0.1}"
        [[ $CODE == 200 ]] && break
        sleep 0.1
    done
    WAITED=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
}

# --- a request without a token is not a guess ------------------------------
codes=""
for _ in 1 2 3 4 5 6 7; do call "" 127.0.0.3 && codes+="$CODE "; done
is "$codes" "401 401 401 401 401 401 401 " "seven requests without a token: 401 each, no block"

# --- five wrong tokens -------------------------------------------------------
codes=""
for i in 1 2 3 4 5; do call "rpl_wrong$i" && codes+="$CODE "; done
is "$codes" "401 401 401 401 401 " "five wrong tokens from 127.0.0.1: 401 each"
call rpl_wrong6
is "$CODE" 429 "the sixth is refused with 429"
is "$RETRY" 2 "... with Retry-After: the 2 s of --auth-backoff"
like "$ERROR" "too many failed authentications.*retry in 2 s" "... and a JSON error saying why"
call "$TOKEN"
is "$CODE" 429 "the right token from the blocked address is refused too: a guess cannot be confirmed"
call "" 127.0.0.1 /health
is "$CODE" 200 "the blocked address still gets /api/v1/health"
call "$TOKEN" 127.0.0.2
is "$CODE" 200 "another address (127.0.0.2) is served with the right token"
call rpl_other 127.0.0.2
is "$CODE" 401 "... and its wrong token is a 401, not a 429"
n=0
for _ in $(seq 1 50); do
    n=$(grep -c 'client 127.0.0.1 blocked for 2 s after 5 failed authentications' "$SERVE_LOG" || true)
    ((n > 0)) && break
    sleep 0.1
done
is "$n" 1 "the block is logged once, naming the address"

# --- the block ends, and the next is twice as long -----------------------------
wait_served
is "$CODE" 200 "once the time has passed the right token is accepted again"
ok "$(awk -v s="$WAITED" 'BEGIN { print !(s >= 1 && s < 4) }')" "... after about the 2 s announced ($WAITED s)"
call rpl_again
is "$CODE" 401 "one more wrong token is a 401"
call "$TOKEN"
is "$CODE" 429 "and blocks the address again"
is "$RETRY" 4 "... twice as long (Retry-After: 4)"
wait_served
is "$CODE" 200 "that block ends too"
ok "$(awk -v s="$WAITED" 'BEGIN { print !(s >= 3 && s < 6) }')" "... after about 4 s ($WAITED s)"
call "" 127.0.0.3
is "$CODE" 401 "the address that sent no token was never blocked"

# --- webhooks and callbacks count too ------------------------------------------
for i in 1 2 3 4 5; do
    curl -s -o /dev/null -m 10 --interface 127.0.0.2 -X POST -H "Authorization: secret-$i" \
        -H 'Content-Type: application/json' --data '{}' "$API/webhooks/distribution"
done
call "$TOKEN" 127.0.0.2
is "$CODE" 429 "five wrong webhook secrets block an address as well"
is "$(curl -s -o /dev/null -w '%{http_code}' -m 10 --interface 127.0.0.2 -X POST "$API/callbacks/faas/nosuchtoken")" \
    429 "... for every path that takes a credential"
serve_stop

# --- --auth-backoff 0 turns it off ------------------------------------------------
serve_start nobackoff --auth-backoff 0
codes=""
for i in 1 2 3 4 5 6 7; do call "rpl_wrong$i" && codes+="$CODE "; done
is "$codes" "401 401 401 401 401 401 401 " "with --auth-backoff 0 wrong tokens are only 401s"
serve_stop

done_testing
