#!/usr/bin/env bash
# `replica serve --faas-mode async` against the stand-in OpenFaaS gateway
# (tests/faasgw.py: POST /async-function/NAME answers 202 with X-Call-Id, its
# queue-worker invokes a function instance and POSTs the result to
# X-Callback-Url with X-Function-Status). A 202 is a lease, not a result: the
# callback decides. A result with X-Function-Status 500 is retried; a result
# that arrives late, for an attempt whose lease ran out and that a later
# attempt replaced, is refused and the later one's is kept; serve killed with
# -9 while a call is queued or running awaits it again at the next start and
# takes its result; and no password reaches any log.
set -euo pipefail
source "$(dirname "$0")/../lib/serve_faas.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL DA=$REG_DST_USER:$REG_DST_PASS
REPOS=()
for i in 1 2 3 4 5 6; do
    seed "$S" "fleet/app$i" v1,v2 oci 2 65536 "async$i" >/dev/null
    REPOS+=("fleet/app$i")
done
SIX="pull_prepare pull pull_post push_prepare push push_post"

fn_start fn1
FN1_PID=$FN_PID FN1_URL=$FN_URL
fn_start fn2
FN2_PID=$FN_PID FN2_URL=$FN_URL
FN_PID="$FN1_PID $FN2_PID"
AGW_ARGS=(--max-inflight 4)
asyncgw_start "$E2E_WORK/agw" "$FN1_URL/" "$FN2_URL/"
export REPLICA_FUNCTION_TOKEN=$FN_TOKEN

# policy with the faas executor
faas_policy() { policy "$1" "$2" "\"executor\": \"faas\"${3:+, $3}"; }
stats() { curl -s "$AGW_URL/_/stats"; }
control() { curl -s -X POST --data-binary "$1" "$AGW_URL/_/control" >/dev/null; }
# attempts TASK: the task's attempts, as JSON in $BODY; att: as "N:status" words
attempts() { api GET "/tasks/$1/attempts"; }
att() { jget '[.[] | "\(.attempt):\(.status)"] | join(" ")'; }
start_serve() {
    serve_start async --gateway "$AGW_URL/function/replica" --faas-mode async --seal-key-file "$FN_KEY" \
        --faas-lease "${LEASE:-30}"
}

start_serve
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
DST_ID=$(jget .id)

# --- 1. a fleet through the queue --------------------------------------------------
faas_policy fleet '["fleet/*"]'
run_policy "$POL"
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status):$(jget .succeeded)/$(jget .total)" "Succeeded:6/6" "the execution succeeds through the async queue"
is "$(same_tags "" "${REPOS[@]}")" 0 "every tag is on the target with the source's digest"
tasks "$EXEC"
is "$(tq '[.[] | [.stages[].name] | join(" ")] | unique | .[]')" "$SIX" "each task's results are the six stages in order"
is "$(tq '[.[].stages[].status] | unique | join(",")')" succeeded "all succeeded"
api GET "/tasks/$(tq '.[0].id')/attempts"
is "$(jget '.[0].mode'):$(jget '.[0].status')" "async:succeeded" "an async attempt"
call=$(jget '.[0].call_id')
is "$(stats | jq -r --arg c "$call" '[.invocations[] | select(.call_id == $c) | .status] | join(",")')" 200 \
    "the gateway kept serve's X-Call-Id and the function answered 200"
is "$(stats | jq -r --arg c "$call" '[.callbacks[] | select(.call_id == $c) | "\(.function_status)->\(.status)"] | join(",")')" \
    "200->200" "its callback carried X-Function-Status 200, and serve took it"

# --- 2. X-Function-Status 500 leads to a retry ----------------------------------------
control "{\"upstreams\": [\"$AGW_URL/_/broken\", \"$FN1_URL/\"]}"
faas_policy retry '["fleet/app1"]' '"dest_namespace": "retry"'
run_policy "$POL"
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status)" Succeeded "a task whose first result was 500 succeeds"
tasks "$EXEC"
T=$(tq '.[0].id')
attempts "$T"
is "$(att)" "1:lost 2:succeeded" "attempt 1 was lost to the 500 and attempt 2 succeeded"
like "$(jget '.[0].error')" "http 500: the function failed: the stand-in's broken instance" "with the function's error"
is "$(same_tags retry/ fleet/app1)" 0 "its tags verify"

# --- 3. a late result of a superseded attempt is refused --------------------------------
serve_stop
LEASE=3 start_serve
control "{\"upstreams\": [\"$FN1_URL/\"], \"hold_callbacks\": 1}"
faas_policy late '["fleet/app2"]' '"dest_namespace": "late"'
run_policy "$POL"
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status)" Succeeded "the execution succeeds while attempt 1's result is held back"
tasks "$EXEC"
T=$(tq '.[0].id')
attempts "$T"
is "$(att)" "1:lost 2:succeeded" "attempt 1 was lost, attempt 2 succeeded"
like "$(jget '.[0].error')" "the lease ran out" "attempt 1 was lost to its lease (no news after its task ended)"
call1=$(jget '.[0].call_id')
dispatched2=$(jget '.[1].dispatched')
is "$(stats | jq -r .held)" 1 "attempt 1's result is still held by the gateway"
control '{"release": true}'
is "$(stats | jq -r --arg c "$call1" '[.callbacks[] | select(.call_id == $c) | "\(.function_status)->\(.status)"] | join(",")')" \
    "200->409" "its late result, a 200, is refused with 409"
like "$(cat "$SERVE_LOG")" "a result is ignored: attempt 1 of task $T is not current: its task is Succeeded" \
    "serve says it ignored it"
tokens=$(stats | jq -r '.callbacks[].call_id' | wc -l)
unlike "$(cat "$SERVE_LOG")" "callbacks/faas/[A-Za-z0-9_-]" "no callback token shows in serve's log ($tokens callbacks)"
tasks "$EXEC"
is "$(tq '.[0].attempts'):$(tq '.[0].status')" "2:Succeeded" "the task keeps attempt 2's result"
first_started=$(tq '.[0].stages[0].started')
ok "$([[ $first_started > $dispatched2 || $first_started == "$dispatched2" ]] && echo 0 || echo 1)" \
    "its stage results are attempt 2's (the first started $first_started, after attempt 2 was dispatched at $dispatched2)"

# --- 4. serve killed with -9 while its call runs: the restart awaits it -------------------
head -c $((16 << 20)) /dev/urandom >"$E2E_WORK/big.bin"
push_big_image "$S" big/app v1 "$E2E_WORK/big.bin" >/dev/null
control "{\"upstreams\": [\"$FN1_URL/\", \"$FN2_URL/\"]}"
serve_stop
LEASE=10 start_serve
faas_policy big '["big/app"]' '"bandwidth_kbps": 2048'
run_policy "$POL"
end=$((SECONDS + 20))
until (($(stats | jq -r .inflight) > 0)) || ((SECONDS >= end)); do sleep 0.02; done
is "$(stats | jq -r .inflight)" 1 "the call is running on a function"
serve_kill9
start_serve
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status)" Succeeded "after the restart the execution completes"
tasks "$EXEC"
T=$(tq '.[0].id')
attempts "$T"
is "$(att)" "1:succeeded" "in one attempt: the restarted daemon awaited the call it had queued"
like "$(cat "$SERVE_LOG")" "task $T: awaiting attempt 1 \(call .*\), queued before the restart" "and says so"
is "$(manifest_digest "$D" big/app v1 "$DA")" "$(manifest_digest "$S" big/app v1)" "the image verifies"
serve_stop

# --- 5. no password anywhere ------------------------------------------------------------
leaks=$(cat "$E2E_WORK"/fn*.log "$E2E_WORK"/fn*.out "$AGW_LOG" "$E2E_WORK"/agw/gateway.out "$E2E_WORK"/async.log \
    "$E2E_WORK"/async.out | grep -c -- "$REG_DST_PASS" || true)
is "$leaks" 0 "the target's password is in no log of serve, the functions or the gateway"

done_testing
