#!/usr/bin/env bash
# Shutdown and the watchdog of replica serve. A stage stuck in a C call holds
# the event loop: the watchdog names its task and engine task on stderr;
# SIGTERM still ends the daemon within the grace period (status 143) and the
# next start resumes the task as after a crash; after a second forced exit
# the task is marked Failed at the next start instead of being resumed, its
# execution ends Failed while the others complete, and a retry runs it again.
# A stall that ends is reported in /api/v1/health. With nothing stuck,
# SIGTERM still exits at once with status 0.
#
# The stage calls test_block(seconds), a C sleep that exists only with
# REPLICA_TEST_HOOKS=1: repository w/block-N blocks for N seconds, unless its
# source has a tag "unstick".
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
export REPLICA_TEST_HOOKS=1
GRACE=2
ARGS=(--scripts "$E2E_WORK/scripts" --grace "$GRACE" --watchdog 1)

mkdir -p "$E2E_WORK/scripts/stages/stuck" "$E2E_WORK/scripts/templates"
cat >"$E2E_WORK/scripts/stages/stuck/block.lua" <<'EOF'
return {
  description = "test only: w/block-N holds the event loop N seconds unless tagged unstick",
  run = function(ctx)
    local secs = tonumber(ctx.task.repository:match("^w/block%-(%d+)$"))
    if secs then
      for _, tag in ipairs(assert(ctx.src:tags(ctx.task.repository))) do
        if tag == "unstick" then return { blocked = 0 } end
      end
      test_block(secs)
    end
    return { blocked = secs or 0 }
  end,
}
EOF
printf 'return { stages = { { "block", "stuck/block" } } }\n' >"$E2E_WORK/scripts/templates/stuck.lua"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
for repo in w/block-30 w/fine w/block-3 other/app; do seed "$S" "$repo" v1 oci 1 1024 >/dev/null; done

# start_held: starts serve again on the same database and port without
# waiting for its API (the loop is held at once by the resumed task).
start_held() {
    "$REPLICA" serve --db "$SERVE_DB" --listen "127.0.0.1:$SERVE_PORT" "${ARGS[@]}" \
        >>"$SERVE_OUT" 2>>"$SERVE_LOG" &
    SERVE_PID=$!
}

# wait_log PATTERN COUNT: waits (up to 40 s) until the log has COUNT lines
# matching PATTERN while serve runs; returns 1 if it ends first.
wait_log() {
    local end=$((SECONDS + 40)) n
    while ((SECONDS < end)); do
        n=$(grep -c -- "$1" "$SERVE_LOG" || true)
        ((n >= $2)) && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# term_timed: SIGTERM to serve; its exit status in $RC, how long it took in
# $MS (milliseconds).
term_timed() {
    local t0
    t0=$(date +%s%N)
    kill -TERM "$SERVE_PID"
    set +e
    wait "$SERVE_PID"
    RC=$?
    set -e
    MS=$((($(date +%s%N) - t0) / 1000000))
    SERVE_PID=""
}

serve_start watchdog "${ARGS[@]}"
api GET /health
is "$(jget .status):$(jget .watchdog.stalls)" "ok:0" "health has a watchdog part: no stalls yet"
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"other\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"other/**\"]}"
OTHER_P=$(jget .id)
api POST /policies "{\"name\": \"stuck\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"w/block-30\", \"w/fine\"], \"template\": \"stuck\", \"jobs\": 1}"
is "$STATUS" 201 "a policy with the blocking template is created"
STUCK_P=$(jget .id)
api POST /policies "{\"name\": \"slow\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"w/block-3\"], \"template\": \"stuck\"}"
SLOW_P=$(jget .id)

# --- a stuck stage: the watchdog line, and a forced exit within the grace -----
api POST "/policies/$OTHER_P/executions"
OTHER_E=$(jget .id)
api POST "/policies/$STUCK_P/executions"
E=$(jget .id)
held=1
wait_log "watchdog: the event loop has made no progress" 1 && held=0
ok "$held" "while the stage blocks, stderr gets the watchdog's line"
T=$(sqlite3 "$SERVE_DB" "SELECT id FROM tasks WHERE execution = $E AND repository = 'w/block-30'")
like "$(grep "made no progress" "$SERVE_LOG" | head -n 1)" "held by task $T in \"[^\"]+\"" \
    "it names the task (its id) and the engine task holding the loop"
term_timed
is "$RC" 143 "SIGTERM ends the stuck daemon with status 128+15"
ok $((MS < (GRACE + 2) * 1000 ? 0 : 1)) "within the grace period of $GRACE s, plus a margin (${MS} ms)"
like "$(cat "$SERVE_LOG")" "grace period \($GRACE s\) ran out with the event loop held by task $T in" \
    "its last words name the task that held the loop"
like "$(cat "$SERVE_DB.stuck")" "^$T	" "the forced exit recorded the task"
is "$(sqlite3 "$SERVE_DB" "SELECT status FROM tasks WHERE id = $T")" Running "the task is left Running, as after a crash"

# --- the next start resumes it; it blocks again; a second forced exit ---------
start_held
held=1
wait_log "watchdog: the event loop has made no progress" 2 && held=0
ok "$held" "the next start resumes the task, and it blocks again"
is "$(sqlite3 "$SERVE_DB" "SELECT count FROM stuck_tasks WHERE task = $T")" 1 "the start counted one forced exit for it"
term_timed
is "$RC:$((MS < (GRACE + 2) * 1000 ? 1 : 0))" "143:1" "a second forced exit, again within the grace period (${MS} ms)"

# --- the start after that fails the task instead of resuming it ---------------
serve_start watchdog "${ARGS[@]}"
wait_exec "$E" Succeeded Failed Stopped
is "$(jget .status):$(jget .succeeded):$(jget .failed)" "Failed:1:1" \
    "its execution ends Failed; its other task completes"
api GET "/tasks/$T"
is "$(jget .status)" Failed "the task that held the loop twice is Failed"
like "$(jget .error)" "^the daemon could not stop it within the grace period twice: it held the event loop in .+" \
    "with the reason"
is "$(jget '.stages[0].status')" failed "its running stage is marked failed"
like "$(cat "$SERVE_LOG")" "task $T: marked Failed" "the log says so"
wait_exec "$OTHER_E" Succeeded Failed Stopped
is "$(jget .status):$(manifest_digest "$D" other/app v1)" "Succeeded:$(manifest_digest "$S" other/app v1)" \
    "another execution, interrupted by the forced exits, completes"
is "$(ls "$SERVE_DB.stuck" 2>/dev/null || echo gone):$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM stuck_tasks")" "gone:0" \
    "the record file is removed and the count is cleared"

# --- retry runs it again ------------------------------------------------------
seed "$S" w/block-30 unstick oci 1 1024 >/dev/null
api POST "/executions/$E/retry"
is "$STATUS:$(jget .retried)" "202:1" "retry queues the failed task"
wait_exec "$E" Succeeded Failed Stopped
is "$(jget .status):$(jget .succeeded)" "Succeeded:2" "and it runs (no longer stuck) and succeeds"

# --- a stall that ends is in /api/v1/health -----------------------------------
api POST "/policies/$SLOW_P/executions"
SLOW_E=$(jget .id)
wait_exec "$SLOW_E" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "a stage holding the loop 3 s succeeds"
ST=$(sqlite3 "$SERVE_DB" "SELECT id FROM tasks WHERE execution = $SLOW_E")
# the watchdog's thread records a stall at its first check after the loop is
# back (every 0.1-0.2 s): the execution may end, and health answer, before
end=$((SECONDS + 10))
while :; do
    BODY=$(curl -s "$API/health")
    [[ $(jget '.watchdog.stalls // 0') -ge 1 ]] || ((SECONDS >= end)) || { sleep 0.02; continue; }
    break
done
is "$(jget .watchdog.stalls)" 1 "health counts the stall"
is "$(jget .watchdog.last.task)" "$ST" "and names its task"
like "$(jget .watchdog.last.stage)" "." "and the engine task holding the loop"
ok "$(jget '.watchdog.last.seconds | if . >= 2.5 and . <= 4.5 then 0 else 1 end')" \
    "with how long it lasted ($(jget .watchdog.last.seconds) s)"
like "$(jget .watchdog.last.at)" "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$" "and when"
# the line is written at the loop's next heartbeat, which may come after health answered
logged=1
wait_log "WARN .*watchdog: the event loop made no progress for [0-9.]* s: held by task $ST in" 1 && logged=0
ok "$logged" "the log has it once the loop is back"

# --- with nothing stuck, SIGTERM exits at once with 0 -------------------------
term_timed
is "$RC" 0 "SIGTERM with nothing stuck: status 0"
ok $((MS < 1500 ? 0 : 1)) "promptly (${MS} ms)"
done_testing
