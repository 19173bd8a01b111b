#!/usr/bin/env bash
# Every task of replica serve ends with a final state: a stage killed for
# memory in a way that escapes its error handlers fails its task (the others
# succeed), the execution is Failed and retry runs that task again; and a
# database an older daemon left with a task Running under a finished
# execution is repaired at the next start, so retry works on it.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
for r in rr/app1 rr/app2 rr/boom rr/app4; do seed "$S" "$r" v1 oci 1 1024 >/dev/null; done

# A template whose one stage, for rr/boom, builds a table past the memory
# limit inside pcall and then carries on: the kill escapes every pcall.
W=$E2E_WORK/scripts
mkdir -p "$W/stages/x" "$W/templates"
cat >"$W/stages/x/work.lua" <<'EOF'
return {
  description = "sleeps a little; for rr/boom, eats memory inside pcall and carries on",
  run = function(ctx)
    time.sleep(0.2)
    if ctx.task.repository == "rr/boom" then
      pcall(function() local t = {} for i = 1, 1e9 do t[i] = { i } end end)
      local n = 0
      for i = 1, 1e6 do n = n + i end
      return { n = n }
    end
    return { ok = true }
  end,
}
EOF
printf 'return { stages = { { "work", "x/work" } } }\n' >"$W/templates/mem.lua"

serve_start ends --scripts "$W" --memory 16
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"mem\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"rr/**\"], \"template\": \"mem\", \"jobs\": 2}"
is "$STATUS" 201 "a policy on the template"
PID=$(jget .id)

# --- a stage killed for memory -----------------------------------------------
api POST "/policies/$PID/executions"
E=$(jget .id)
wait_exec "$E" Succeeded Failed Stopped
is "$(jget '"\(.status) total=\(.total) ok=\(.succeeded) failed=\(.failed) in_progress=\(.in_progress)"')" \
    "Failed total=4 ok=3 failed=1 in_progress=0" \
    "the execution is Failed: one task failed, the others succeeded, none is left in progress"
api GET "/executions/$E/tasks?status=Failed"
is "$(jget '[.[].repository] | join(" ")')" rr/boom "the task whose stage was killed is Failed"
like "$(jget '.[0].error')" "memory limit" "its error says it ran out of memory"
api GET "/executions/$E/tasks?status=Running"
is "$(jget length)" 0 "no task is left Running"
api POST "/executions/$E/retry"
is "$STATUS:$(jget .retried)" "202:1" "retry queues the failed task"
wait_exec "$E" Succeeded Failed Stopped
api GET "/executions/$E/tasks?status=Failed"
is "$(jget '[.[] | "\(.repository)=\(.attempts)"] | join(" ")')" "rr/boom=2" \
    "it ran again (and failed again the same way)"
serve_stop

# --- a database an older daemon left broken ------------------------------------
# Task rr/app4 left Running and rr/app1 Pending under an execution that says
# Succeeded with stale counts.
sqlite3 "$SERVE_DB" "UPDATE tasks SET status = 'Running', finished = NULL WHERE execution = $E AND repository = 'rr/app4';
                     UPDATE tasks SET status = 'Pending', finished = NULL WHERE execution = $E AND repository = 'rr/app1';
                     UPDATE tasks SET status = 'Succeeded', error = NULL WHERE execution = $E AND repository = 'rr/boom';
                     UPDATE executions SET status = 'Succeeded', succeeded = 4, failed = 0 WHERE id = $E"
serve_start ends --scripts "$W" --memory 16
api GET "/executions/$E"
is "$(jget '"\(.status) ok=\(.succeeded) failed=\(.failed) in_progress=\(.in_progress)"')" \
    "Failed ok=2 failed=2 in_progress=0" "at start the execution is repaired: Failed, with its counts recomputed"
api GET "/executions/$E/tasks?status=Failed"
is "$(jget '[.[].repository] | sort | join(" ")')" "rr/app1 rr/app4" "the tasks left unfinished are Failed"
like "$(jget '.[0].error')" "ended without a result" "with the reason"
like "$(cat "$SERVE_LOG")" "repaired 2 unfinished task\(s\) of 1 finished execution" "the start says what it repaired"
api POST "/executions/$E/retry"
is "$STATUS:$(jget .retried)" "202:2" "retry works on the repaired execution"
wait_exec "$E" Succeeded Failed Stopped
is "$(jget '"\(.status) ok=\(.succeeded) failed=\(.failed)"')" "Succeeded ok=4 failed=0" \
    "and completes it"
serve_stop
done_testing
