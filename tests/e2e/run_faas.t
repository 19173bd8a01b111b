#!/usr/bin/env bash
# `replica run --executor faas`: each task goes to `replica function` through
# a gateway (Debian's nginx, an upstream of two instances) with its
# credentials sealed; the result is the same six stage results a local run
# keeps. An instance killed with -9 mid-task loses nothing (its tasks run
# again as attempt 2), a 429 from --max-inflight is waited out, a wrong token
# or key fails clearly without retries, and no password reaches a log.
set -euo pipefail
source "$(dirname "$0")/../lib/function.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL DA=$REG_DST_USER:$REG_DST_PASS
DPORT=${D##*:}
for i in 1 2 3 4 5 6; do
    seed "$S" fleet/app$i v1,v2 oci 2 1048576 "app$i" >/dev/null
done
seed "$S" fleet/multi v1 oci-index 2 4096 multi >/dev/null
SIX="pull_prepare pull pull_post push_prepare push push_post"

fn_start fn1
FN1_PID=$FN_PID FN1_URL=$FN_URL FN1_LOG=$FN_LOG FN1_OUT=$FN_OUT
fn_start fn2
FN2_PID=$FN_PID FN2_URL=$FN_URL FN2_LOG=$FN_LOG FN2_OUT=$FN_OUT
FN_PID="$FN1_PID $FN2_PID" # both stop with the test
gateway_start "$E2E_WORK/gateway" "$FN1_URL" "$FN2_URL"
export REPLICA_FUNCTION_TOKEN=$FN_TOKEN

# faas_run ARGS...: replica run from S to D through the gateway, as JSON.
faas_run() {
    replica_run --from "$S" --to "$D" --to-creds "$DA" --executor faas --gateway "$GW_URL" \
        --seal-key-file "$FN_KEY" --json "$@"
}
# result FILTER: a jq filter over the last run's JSON (its last line).
result() { tail -n 1 <<<"$OUT" | jq -r "$1"; }
# same_fleet: every source tag is on the target with the source's digest.
same_fleet() {
    local r t bad=0
    for r in fleet/app1 fleet/app2 fleet/app3 fleet/app4 fleet/app5 fleet/app6 fleet/multi; do
        for t in $(tag_list "$S" "$r"); do
            [[ $(manifest_digest "$D" "$r" "$t" "$DA") == "$(manifest_digest "$S" "$r" "$t")" ]] || bad=$((bad + 1))
        done
    done
    echo "$bad"
}

# 1. The fleet through the gateway; one instance is killed with -9 while it
# talks to the target. --bandwidth keeps each task busy for about a second.
"$REPLICA" run --from "$S" --to "$D" --to-creds "$DA" --executor faas --gateway "$GW_URL" \
    --seal-key-file "$FN_KEY" --faas-concurrency 4 --bandwidth 2M --json >"$E2E_WORK/run1.out" 2>&1 &
RUN_PID=$!
killed=no
for _ in $(seq 1 1000); do
    if ss -Htnp state established "( dport = :$DPORT )" | grep -q "pid=$FN1_PID,"; then
        kill -9 "$FN1_PID"
        { wait "$FN1_PID"; } 2>/dev/null || true
        killed=yes
        break
    fi
    kill -0 "$RUN_PID" 2>/dev/null || break
    sleep 0.02
done
is "$killed" yes "instance 1 was killed with -9 while it pushed to the target"
finish_run "$RUN_PID" "$E2E_WORK/run1.out"
is "$RC" 0 "the run still succeeded"
is "$(result '.summary.succeeded')/$(result '.summary.tasks')" "7/7" "every task succeeded"
is "$(same_fleet)" 0 "every tag is on the target with the source's digest"
is "$(result "[.tasks[] | [.stages[].name] | join(\" \")] | unique | .[]")" "$SIX" \
    "each task's results are the six stages in template order"
is "$(result '[.tasks[].stages[].status] | unique | join(",")')" succeeded "and every stage succeeded"
retried=$(result '[.tasks[] | select(.attempts == 2)] | length')
ok "$((retried >= 1 ? 0 : 1))" "the tasks that were on the killed instance ran again as attempt 2 ($retried)"
is "$(result '[.tasks[] | select(.attempts > 2)] | length')" 0 "no task needed a third attempt"
like "$OUT" "attempt 1: http 502" "the lost attempt is reported with the gateway's 502"
served2=$(grep -c "succeeded" "$FN2_OUT" "$FN2_LOG" | awk -F: '{n += $2} END {print n}')
ok "$((served2 >= 1 ? 0 : 1))" "instance 2 ran tasks ($served2)"
for r in fleet/app1 fleet/multi; do
    is "$(curl -s -u "$DA" "$D/v2/$r/tags/list" | jq -r '.tags | sort | join(",")')" \
        "$(tag_list "$S" "$r" | paste -sd,)" "$r has exactly the source's tags"
done
is "$(result '[.tasks[] | select(.error)] | length')" 0 "a task that succeeded on its second attempt keeps no error"

# 2. A re-run copies nothing: the stages are idempotent across instances.
faas_run --faas-concurrency 4
is "$RC:$(result '.summary.pushed'):$(result '.summary.blobs_copied')" "0:0:0" "a re-run succeeds and copies nothing"
is "$(result '[.tasks[].attempts] | unique | join(",")')" 1 "each task in one attempt (instance 1 is down, nginx passes over it)"

# 3. An instance at --max-inflight answers 429; the coordinator waits
# (Retry-After: 1) and sends again.
fn_start fn3 --max-inflight 1
FN3_URL=$FN_URL
FN_PID="$FN_PID $FN2_PID"
replica_run --from "$S" --to "$D" --dest-namespace busy --to-creds "$DA" --executor faas --gateway "$FN3_URL/" \
    --seal-key-file "$FN_KEY" --faas-concurrency 3 --repo 'fleet/app[123]' --json
is "$RC:$(result '.summary.succeeded')" "0:3" "three tasks at an instance that takes one at a time all succeed"
is "$(result '[.tasks[] | select(.attempts > 1)] | length > 0')" true "some were refused with 429 and sent again"
like "$OUT" "attempt 1: http 429: at --max-inflight" "the 429 is reported with the function's reason"

# 4. Refusals that another attempt cannot fix fail at once, clearly.
REPLICA_FUNCTION_TOKEN=wrong-token replica_run --from "$S" --to "$D" --to-creds "$DA" --executor faas \
    --gateway "$GW_URL" --seal-key-file "$FN_KEY" --repo fleet/app1
is "$RC" 1 "a wrong token fails the run"
like "$OUT" "FAILED fleet/app1:v1,v2  dispatch: http 401: wrong bearer token" "with the function's 401"
unlike "$OUT" "attempt 2" "and no retry"
head -c 32 /dev/urandom >"$E2E_WORK/other.key"
chmod 600 "$E2E_WORK/other.key"
faas_run --repo fleet/app1 --seal-key-file "$E2E_WORK/other.key"
is "$RC" 1 "credentials sealed under another key fail the run"
like "$(result '.tasks[0].error')" "^http 422: target.credentials could not be opened with this key" "with a clear reason"
is "$(result '.tasks[0].attempts'):$(result '.tasks[0].stages | length')" "1:0" "in one attempt, with no stage run"
replica_run --from "$S" --to "$D" --to-creds "$DA" --executor faas --gateway http://127.0.0.1:1/ \
    --seal-key-file "$FN_KEY" --faas-retries 1 --repo fleet/app1
is "$RC" 1 "a dead gateway fails the run after its retries"
like "$OUT" "attempt 1: gateway http://127.0.0.1:1/: .*; attempt 2 in 0.5 s" "it says which gateway and when it tries again"

# 5. Bad options are refused before any work.
replica_run --from "$S" --to "$D" --executor faas --seal-key-file "$FN_KEY"
like "$RC:$OUT" "^1:.*--executor faas needs --gateway URL" "--executor faas without --gateway"
replica_run --from "$S" --to "$D" --executor faas --gateway "$GW_URL" --seal-key-file "$FN_KEY" --faas-mode async
like "$RC:$OUT" "^1:.*--faas-mode async is for replica serve" "async mode is serve's"
replica_run --from "$S" --to "$D" --executor lambda
like "$OUT" "--executor must be local or faas" "an unknown executor"
REPLICA_FUNCTION_TOKEN= replica_run --from "$S" --to "$D" --executor faas --gateway "$GW_URL" --seal-key-file "$FN_KEY"
like "$OUT" "needs the functions' token: REPLICA_FUNCTION_TOKEN or --function-token-file" "no token"
printf '%s\n' "$FN_TOKEN" >"$E2E_WORK/token"
REPLICA_FUNCTION_TOKEN= replica_run --from "$S" --to "$D" --to-creds "$DA" --executor faas --gateway "$GW_URL" \
    --seal-key-file "$FN_KEY" --function-token-file "$E2E_WORK/token" --repo fleet/multi
is "$RC" 0 "the token from --function-token-file works"
replica_run --from "$S" --to "$D" --executor faas --gateway "$GW_URL" --seal-key-file "$E2E_WORK/none.key"
like "$OUT" "seal key file .*none.key does not exist" "a missing seal key"

# 6. No password anywhere: not in the functions' logs, the gateway's or the runs'.
leaks=$(cat "$FN1_LOG" "$FN1_OUT" "$FN2_LOG" "$FN2_OUT" "$GW_LOG" "$E2E_WORK"/gateway/error.log "$E2E_WORK/run1.out" |
    grep -c -- "$REG_DST_PASS" || true)
is "$leaks" 0 "the target's password is in no log"
like "$(cat "$GW_LOG")" "POST 502 127.0.0.1:" "the gateway's log shows the lost attempt as a 502"

done_testing
