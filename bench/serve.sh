#!/usr/bin/env bash
# bench/serve.sh - the benchmark of `replica serve` (the end of `make bench`):
#   1  the read endpoints under wrk (GET /executions/ID, /executions/ID/tasks,
#      /policies) while an execution copies a 512 MiB layer (rate-limited by
#      the policy so it runs for the whole measurement); target >= 2000 req/s
#   2  a burst of 1000 Distribution webhook events (20 repositories x 50 tags)
#      POSTed 64 at a time: every event must be recorded (202, and a row in
#      the events table), coalesced per repository into executions that all
#      succeed, and every tag must reach the target with its source digest
# Registries are Debian's docker-registry on loopback (tests/registry.sh).
#   REPLICA  the engine binary (default build/release/replica)
# Exits 1 when a check fails, whatever the figures.
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
SEED=$ROOT/bench/seed.py
T_READS=2000       # req/s the read endpoints must sustain during an execution
BURST_REPOS=20 BURST_TAGS=50
WRK_SECONDS=${WRK_SECONDS:-5}

for tool in wrk docker-registry python3 curl jq sqlite3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deps-bench)" >&2; exit 1; }
done
source "$ROOT/tests/registry.sh"
WORK=$(mktemp -d /tmp/replica-bench-serve.XXXXXX)
SERVE_PID=""
cleanup() {
    [[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    registry_stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "bench: $*" >&2; exit 1; }

registry_start src "$WORK/src"
registry_start dst "$WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
python3 "$SEED" big "$S" bench/big 512 "$REG_SRC_STORAGE" >"$WORK/big.list" || fail "seeding the big layer failed"
: >"$WORK/burst.list"
for ((r = 1; r <= BURST_REPOS; r++)); do
    python3 "$SEED" many "$S" "burst/repo$r" "$BURST_TAGS" >>"$WORK/burst.list" || fail "seeding burst/repo$r failed"
done

port=$(_servers_free_port)
API=http://127.0.0.1:$port/api/v1
"$REPLICA" serve --db "$WORK/replica.db" --listen "127.0.0.1:$port" --log-level warn \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 500); do curl -s -o /dev/null "$API/health" && break; sleep 0.02; done
TOKEN=$(sed -n 's/.*stored): //p' "$WORK/serve.out")
[[ -n $TOKEN ]] || fail "serve did not start: $(cat "$WORK/serve.log")"
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
SECRET=bench-webhook-secret-0123456789
SRC_ID=$(api -d "{\"name\": \"src\", \"url\": \"$S\", \"webhook_secret\": \"$SECRET\"}" "$API/registries" | jq .id)
DST_ID=$(api -d "{\"name\": \"dst\", \"url\": \"$D\"}" "$API/registries" | jq .id)

# --- 1: reads during an execution ---------------------------------------------------------
BIG=$(api -d "{\"name\": \"big\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"bench/big\"], \"bandwidth_kbps\": 16384}" "$API/policies" | jq .id)
E=$(api -X POST "$API/policies/$BIG/executions" | jq .id)
status() { api "$API/executions/$E" | jq -r .status; }
for _ in $(seq 1 500); do [[ $(status) == Running ]] && break; sleep 0.02; done
printf '%-34s %10s %8s %s\n' "read endpoint (wrk -t2 -c32, ${WRK_SECONDS}s)" "req/s" "target" "verdict"
for path in "/executions/$E" "/executions/$E/tasks" "/policies"; do
    [[ $(status) == Running ]] || fail "the execution is no longer running; raise its size"
    out=$(wrk -t2 -c32 -d"${WRK_SECONDS}s" -H "Authorization: Bearer $TOKEN" "$API$path")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [[ -z $non2xx ]] || fail "wrk saw $non2xx non-2xx answers on $path"
    printf '%-34s %10.0f %8d %s\n' "GET $path" "$rps" "$T_READS" \
        "$(awk -v r="$rps" -v t="$T_READS" 'BEGIN { print (r >= t ? "ok" : "MISSED") }')"
done
[[ $(status) == Running ]] || fail "the execution ended during the measurement; raise its size"
api -X POST "$API/executions/$E/stop" >/dev/null

# --- 2: a burst of webhook events -------------------------------------------------------
BP=$(api -d "{\"name\": \"burst\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"burst/**\"], \"trigger\": \"event\"}" "$API/policies" | jq .id)
t0=$EPOCHREALTIME
res=$("$REPLICA" script "$ROOT/bench/webhooks.lua" "$API/webhooks/distribution" "$SECRET" "$(cat "$WORK/burst.list")" 64)
recorded=$(sqlite3 "$WORK/replica.db" "SELECT count(*) FROM events")
sent=$(jq .sent <<<"$res") accepted=$(jq .accepted <<<"$res") secs=$(jq .seconds <<<"$res")
[[ $sent == $((BURST_REPOS * BURST_TAGS)) && $accepted == "$sent" && $recorded == "$sent" ]] ||
    fail "burst: sent $sent, accepted $accepted, recorded $recorded"
for _ in $(seq 1 6000); do
    left=$(api "$API/executions?policy=$BP&page_size=500" | jq '[.[] | select(.status == "Pending" or .status == "Running")] | length')
    ((left == 0)) && break
    sleep 0.05
done
done_s=$(awk -v s="$t0" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f", n - s }')
execs=$(api "$API/executions?policy=$BP&page_size=500")
n_exec=$(jq length <<<"$execs")
n_ok=$(jq '[.[] | select(.status == "Succeeded")] | length' <<<"$execs")
n_tasks=$(jq '[.[].total] | add' <<<"$execs")
((n_ok == n_exec)) || fail "burst: $((n_exec - n_ok)) of $n_exec executions did not succeed"
out=$(python3 "$SEED" verify "$S" "$D" "$WORK/burst.list") || fail "burst: target digests differ: $out"
echo
echo "webhook burst: $sent events (Distribution notifications, 64 in flight)"
printf '  recorded     %d/%d (202 and a stored row each) in %.2f s: %.0f events/s\n' "$recorded" "$sent" "$secs" \
    "$(awk -v n="$sent" -v s="$secs" 'BEGIN { print n / s }')"
printf '  coalesced    into %d executions with %d tasks (one task per repository per execution)\n' "$n_exec" "$n_tasks"
printf '  replicated   all %d tags verified on the target, %s s after the first event\n' "$sent" "$done_s"
