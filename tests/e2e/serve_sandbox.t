#!/usr/bin/env bash
# The sandbox of a real replica serve, against the hostile stages of the
# 2026-12-01 security review (findings 1, 2, 4, 5, 6), each run as a policy's
# stage while an ordinary replication runs beside them: the daemon answers
# /api/v1/health in under a second throughout, each hostile task fails with
# the error its offence calls for (or achieves nothing), the API's tokens and
# the daemon's libraries are untouched, and the ordinary execution completes.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" good/app v1,v2 oci >/dev/null
seed "$S" other/app v1 oci >/dev/null

# A 2 s CPU budget per stage keeps the test short; the health checks below
# hold whatever the budget, since a stage is paused every 10 ms.
serve_start sandbox --scripts "$ROOT/tests/fixtures/hostile" --cpu 2 --memory 32
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)

# Health is polled every 50 ms in the background for as long as the hostile
# executions run; each answer's time goes to a file.
health_log=$E2E_WORK/health.times
: >"$health_log"
(
    while [[ ! -e $E2E_WORK/health.stop ]]; do
        curl -s -o /dev/null -m 5 -w '%{http_code} %{time_total}\n' "$API/health" >>"$health_log" || echo "000 5" >>"$health_log"
        sleep 0.05
    done
) &
HEALTH_PID=$!

policy() { # NAME TEMPLATE REPO
    api POST /policies "{\"name\": \"$1\", \"template\": \"$2\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"$3\"]}"
    [[ $STATUS == 201 ]] || echo "# POST /policies $1: $STATUS $BODY" >&2
    jget .id
}
declare -A EXEC
for name in steal tap pattern coloop move rep cycle dag spawn; do
    pid=$(policy "$name" "$name" good/app)
    api POST "/policies/$pid/executions"
    EXEC[$name]=$(jget .id)
done
GOOD=$(policy ordinary distribution other/app)
api POST "/policies/$GOOD/executions"
EXEC[ordinary]=$(jget .id)

# task_error NAME: the error of the hostile execution's only task
task_error() {
    api GET "/executions/${EXEC[$1]}/tasks"
    jget '.[0].error'
}
for name in "${!EXEC[@]}"; do wait_exec "${EXEC[$name]}" Succeeded Failed Stopped; done
touch "$E2E_WORK/health.stop"
wait "$HEALTH_PID" || true

api GET "/executions/${EXEC[ordinary]}"
is "$(jget .status)" Succeeded "the ordinary execution beside the hostile ones succeeded"
is "$(manifest_digest "$D" other/app v1)" "$(manifest_digest "$S" other/app v1)" "and other/app:v1 is on the target"

# Finding 1: the stage got fresh module instances; the daemon's are intact.
api GET "/executions/${EXEC[steal]}/tasks"
is "$(jget '.[0].stages[0].output | "\(.sys) \(.catalog) \(.creds) \(.sandbox) \(.kicked)"')" "nil nil nil nil nil" \
    "require gave the stage its own instances: no sys, no trusted modules, no daemon state"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer rpl_wrong" "$API/registries")
is "$code" 401 "a wrong token is still refused after the stage patched its tokens.check"

# Finding 2: the shared digest table cannot be rewritten.
like "$(task_error tap)" "read-only table" "rewriting digest through pairs() fails the task"
api GET /registries
is "$STATUS" 200 "the API still authenticates with digest.sha256"
unlike "$(cat "$SERVE_LOG")" "CAPTURED" "no token was captured"

# Finding 4: loops in C calls and in coroutines stop at the budget.
like "$(task_error pattern)" "exceeded its CPU limit \\(2 s\\)" "a backtracking pattern is stopped at the CPU budget"
like "$(task_error coloop)" "exceeded its CPU limit \\(2 s\\)" "a loop inside a coroutine is stopped at the CPU budget"
like "$(task_error move)" "exceeded its CPU limit \\(2 s\\)" "table.move over 3e8 elements is stopped at the CPU budget"

api GET "/executions/${EXEC[rep]}/tasks"
is "$(jget '.[0].status'):$(jget '.[0].stages[0].output.length')" "Succeeded:0" "string.rep('', 3e9) returns at once"

# Finding 5: cycles and oversized JSON.
like "$(task_error cycle)" "cycle in stage output" "a stage output that contains itself fails the stage with \"cycle in stage output\""
like "$(task_error dag)" "memory limit" "a 2^25-leaf JSON fails on the memory limit"

# Finding 6: a child cannot raise its limits.
like "$(task_error spawn)" "exceeded its CPU limit \\(2 s\\)" "a child asking for 1e9 s of CPU stops at its stage's 2 s"

# Health, throughout.
n=$(wc -l <"$health_log")
ok $((n >= 10 ? 0 : 1)) "health was polled $n times while the hostile stages ran"
bad=$(awk '$1 != 200' "$health_log" | wc -l)
is "$bad" 0 "every health check answered 200"
worst=$(awk 'BEGIN { m = 0 } { if ($2 > m) m = $2 } END { print m }' "$health_log")
ok "$(awk -v w="$worst" 'BEGIN { print (w < 1.0) ? 0 : 1 }')" "the slowest health check took ${worst} s (< 1 s)"

serve_stop
done_testing
