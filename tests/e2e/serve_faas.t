#!/usr/bin/env bash
# `replica serve` as a FaaS coordinator, sync mode: a policy with executor
# "faas" sends each task to `replica function` instances behind Debian's
# nginx (the stand-in gateway), with credentials sealed. It replicates a
# fleet of 20 repositories with the six stage results per task; an instance
# killed with -9 loses nothing (its tasks show 2 attempts, no tag pushed
# twice); the functions' callbacks move the live views; serve killed with -9
# mid-dispatch resumes and completes; stop is Stopped within a second and no
# manifest lands; a stalled instance's attempt is superseded when its lease
# runs out and its late callbacks are refused; 429 from --max-inflight and a
# draining instance send the work elsewhere; a wrong token or key fails
# clearly; and no password reaches any log.
set -euo pipefail
source "$(dirname "$0")/../lib/serve_faas.sh"

registry_start src "$E2E_WORK/src"
REGISTRY_ACCESSLOG=1 registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL DA=$REG_DST_USER:$REG_DST_PASS
DPORT=${D##*:}
REPOS=()
for i in $(seq -w 1 20); do
    seed "$S" "fleet/app$i" v1,v2 oci 2 262144 "app$i" >/dev/null
    REPOS+=("fleet/app$i")
done
SIX="pull_prepare pull pull_post push_prepare push push_post"

fn_start fn1
FN1_PID=$FN_PID FN1_URL=$FN_URL
fn_start fn2
FN2_PID=$FN_PID FN2_URL=$FN_URL FN2_LOG=$FN_LOG
fn_start fn3
FN3_PID=$FN_PID FN3_URL=$FN_URL FN3_LOG=$FN_LOG
FN_PID="$FN1_PID $FN2_PID $FN3_PID" # they stop with the test
gateway_start "$E2E_WORK/gw1" "$FN1_URL" "$FN2_URL" "$FN3_URL"
GW1=$GW_URL GW1_LOG=$GW_LOG GW1_PID=$GW_PID
export REPLICA_FUNCTION_TOKEN=$FN_TOKEN

# upload_port PID...: the local port of the connection from one of PIDs to
# the target that has carried the most bytes (a blob's upload), or nothing.
upload_port() {
    local pids
    pids=$(printf 'pid=%s,|' "$@")
    ss -Htinp state established "( dport = :$DPORT )" | awk -v pids="${pids%|}" '
        /users:/ { keep = ($0 ~ pids); split($3, a, ":"); port = a[length(a)]; next }
        keep && match($0, /bytes_acked:[0-9]+/) {
            n = substr($0, RSTART + 12, RLENGTH - 12) + 0
            if (n > best) { best = n; bestport = port }
        }
        END { if (bestport != "") print bestport }'
}
# port_open PORT: whether a connection from local port PORT to the target is established.
port_open() {
    [[ -n $(ss -Htn state established "( sport = :$1 and dport = :$DPORT )") ]]
}

serve_start faas --gateway "$GW1" --seal-key-file "$FN_KEY" --faas-concurrency 6
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
DST_ID=$(jget .id)

# --- 1. the fleet on three instances; one is killed with -9 mid-push ---------------
# 512 KiB/s per task keeps each busy for a second or two.
policy fleet '["fleet/*"]' '"executor": "faas", "bandwidth_kbps": 512, "jobs": 2'
FLEET=$POL
is "$(jget .executor)" faas "a policy chooses the faas executor"
curl -sN -H "Authorization: Bearer $TOKEN" "$API/events" >"$E2E_WORK/events.txt" 2>/dev/null &
SSE_PID=$!
run_policy "$FLEET"
victim=$(busy "$FN1_URL=$FN1_PID") || victim=""
is "$victim" "$FN1_PID" "instance 1 runs a task"
kill -9 "$FN1_PID"
{ wait "$FN1_PID"; } 2>/dev/null || true
wait_exec "$EXEC" Succeeded Failed Stopped
is "$(jget .status):$(jget .succeeded)/$(jget .total)" "Succeeded:20/20" "the execution succeeds: 20 of 20 tasks"
kill "$SSE_PID" 2>/dev/null || true
is "$(same_tags "" "${REPOS[@]}")" 0 "every tag of the 20 repositories is on the target with the source's digest"
tasks "$EXEC"
is "$(tq '[.[] | [.stages[].name] | join(" ")] | unique | .[]')" "$SIX" \
    "each task's results are the six stages in template order"
is "$(tq '[.[].stages[].status] | unique | join(",")')" succeeded "and every stage succeeded"
scrape "$TOKEN"
metrics_parse
is "$(metric replica_stage_duration_seconds_count '.template == "distribution" and .stage == "push"')" 20 \
    "GET /metrics counts the push stage of each of the 20 tasks the functions ran"
is "$(jget '[.[] | select(.name == "replica_tags_total" and (.labels.result == "pushed" or .labels.result == "skipped")) | .value] | add')" 40 \
    "and their 40 tags, pushed (or found there, after the killed attempt)"
gw=$(metric replica_http_requests_total ".host == \"$(sed -E 's#^https?://([^/]+).*#\1#' <<<"$GW1")\" and .method == \"POST\" and .status == \"200\"")
ok "$([[ $gw != none ]] && ((gw >= 20)); echo $?)" "the daemon's own requests are the tasks POSTed to the gateway ($gw)"
twice=$(tq '[.[] | select(.attempts == 2)] | length')
ok "$((twice >= 1 ? 0 : 1))" "the tasks that were on the killed instance ran again as attempt 2 ($twice)"
is "$(tq '[.[] | select(.attempts > 2)] | length')" 0 "no task needed a third attempt"
T2=$(tq '[.[] | select(.attempts == 2)][0].id')
api GET "/tasks/$T2/attempts"
is "$(jget '[.[] | "\(.attempt):\(.executor):\(.status)"] | join(" ")')" "1:faas:lost 2:faas:succeeded" \
    "its attempts: the first lost, the second succeeded"
like "$(jget '.[0].error')" "http 502" "the lost attempt shows the gateway's 502"
puts=$(grep -o '"PUT /v2/fleet/app[0-9]*/manifests/v[12] ' "$E2E_WORK/dst/registry.log" | sort | uniq -c |
    awk '$1 != 1 {bad++} END {print NR ":" bad + 0}')
is "$puts" "40:0" "the registry log shows each of the 40 tags' manifests PUT exactly once"
# sse KIND: the data lines of the stream's KIND events of execution EXEC.
sse() {
    grep -A1 "^event: $1\$" "$E2E_WORK/events.txt" | grep '^data: ' | sed 's/^data: //' |
        jq -c "select(.execution == $EXEC)"
}
is "$(sse stage | jq -r 'select(.status == "running") | .stage' | sort -u | wc -l)" 6 \
    "the event stream shows the functions' starts of all six stages"
ok "$(sse bytes | jq -e -s 'map(.bytes) | max > 0' >/dev/null && echo 0 || echo 1)" "and the bytes they copied"
api GET "/executions/$EXEC"
is "$(jget .in_progress)" 0 "nothing is left in progress"

# --- 2. mixing: a policy without an executor runs here ------------------------------
policy local '["fleet/app01"]' '"dest_namespace": "local"'
is "$(jget .executor)" null "a policy without an executor has executor null (the daemon's, local)"
run_policy "$POL"
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status)" Succeeded "it succeeds"
tasks "$EXEC"
api GET "/tasks/$(tq '.[0].id')/attempts"
is "$(jget '[.[] | "\(.executor):\(.status)"] | join(" ")')" "local:succeeded" "its task ran locally"

# --- 3. serve killed with -9 mid-dispatch, then restarted ---------------------------
policy again '["fleet/*"]' '"executor": "faas", "bandwidth_kbps": 512, "dest_namespace": "again"'
AGAIN=$POL
run_policy "$AGAIN"
busy "$FN2_URL=$FN2_PID" "$FN3_URL=$FN3_PID" >/dev/null || true
tasks "$EXEC"
running=$(tq '[.[] | select(.status == "Running") | .id] | join(" ")')
ok "$([[ -n $running ]] && echo 0 || echo 1)" "tasks are in flight on the functions ($running)"
serve_kill9
serve_start faas --gateway "$GW1" --seal-key-file "$FN_KEY" --faas-concurrency 6
wait_exec "$EXEC" Succeeded Failed Stopped
is "$(jget .status):$(jget .succeeded)/$(jget .total)" "Succeeded:20/20" "after the restart the execution completes"
is "$(same_tags again/ "${REPOS[@]}")" 0 "every tag is on the target under again/"
first=${running%% *}
api GET "/tasks/$first/attempts"
like "$(jget '[.[] | "\(.attempt):\(.status)"] | join(" ")')" "^1:lost( [0-9]+:lost)* [0-9]+:succeeded$" \
    "a task in flight at the kill: its attempt was lost, and a later one succeeded"
like "$(jget '.[0].error')" "the coordinator restarted" "with the reason"
like "$(cat "$SERVE_LOG")" "attempt\(s\) in flight at the last stop are lost" "the restart says so"

# --- 4. stop mid-blob ----------------------------------------------------------------
big=$E2E_WORK/big.bin
head -c $((32 << 20)) /dev/urandom >"$big"
push_big_image "$S" big/app v1 "$big" >/dev/null
policy big '["big/app"]' '"executor": "faas", "bandwidth_kbps": 4096'
run_policy "$POL"
uploads=$REG_DST_STORAGE/docker/registry/v2/repositories/big/app/_uploads
mid=1
wait_for_upload "$uploads" $((2 << 20)) "$SERVE_PID" && mid=0
ok "$mid" "the function is mid-blob"
UPLOAD_PORT=$(upload_port "$FN2_PID" "$FN3_PID")
tasks "$EXEC"
is "$(tq '.[0].stages | map("\(.name)=\(.status)") | join(" ")')" \
    "pull_prepare=succeeded pull=succeeded pull_post=succeeded push_prepare=succeeded push=running" \
    "the task's live view shows the function's stages: push is running"
t0=$(date +%s%N)
api POST "/executions/$EXEC/stop"
t1=$(date +%s%N)
is "$STATUS:$(jget .status)" "200:Stopped" "stop answers with the execution Stopped"
ok $(((t1 - t0) / 1000000 < 1000 ? 0 : 1)) "within a second ($(((t1 - t0) / 1000000)) ms)"
stopped=1
end=$((SECONDS + 20))
while ((SECONDS < end)); do
    if grep -q "big/app: attempt 1: the coordinator revoked it\|cancelled by request" "$FN2_LOG" "$FN3_LOG"; then
        stopped=0
        break
    fi
    sleep 0.02
done
ok "$stopped" "the function stops the task (the cancel, or its next callback's answer)"
# the function ended the invocation: the connection that carried the
# blob's upload closes (its idle ones may stay in the pool)
closed=1
end=$((SECONDS + 20))
while [[ -n $UPLOAD_PORT ]] && ((SECONDS < end)); do
    port_open "$UPLOAD_PORT" || { closed=0; break; }
    sleep 0.02
done
ok "$closed" "the connection that carried the upload closes (port ${UPLOAD_PORT:-none found})"
is "$(manifest_digest "$D" big/app v1 "$DA")" missing "no manifest of the tag landed on the target"
tasks "$EXEC"
api GET "/tasks/$(tq '.[0].id')/attempts"
is "$(jget '.[-1].status')" cancelled "the attempt is cancelled"

# --- 5. a stalled instance: its lease runs out, and its late callbacks are refused ---
serve_stop
gateway_start "$E2E_WORK/gw2" "$FN2_URL" "$FN3_URL"
GW2_PID=$GW_PID
serve_start faas --gateway "$GW_URL" --seal-key-file "$FN_KEY" --faas-lease 3
head -c $((8 << 20)) /dev/urandom >"$E2E_WORK/solo.bin" # a blob the target has nowhere: nothing to mount
push_big_image "$S" solo/app v1 "$E2E_WORK/solo.bin" >/dev/null
policy fence '["solo/app"]' '"executor": "faas", "bandwidth_kbps": 2048'
run_policy "$POL"
stalled=$(busy "$FN2_URL=$FN2_PID" "$FN3_URL=$FN3_PID") || stalled=""
ok "$([[ -n $stalled ]] && echo 0 || echo 1)" "an instance runs the task ($stalled)"
kill -STOP "$stalled"
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status)" Succeeded "the task completes on the other instance"
kill -CONT "$stalled"
stalled_log=$FN2_LOG
[[ $stalled == "$FN3_PID" ]] && stalled_log=$FN3_LOG
revoked=1
wait_log "$stalled_log" "solo/app: attempt 1: the coordinator revoked it" && revoked=0
ok "$revoked" "the stalled instance, resumed, is told its attempt is revoked and stops"
tasks "$EXEC"
api GET "/tasks/$(tq '.[0].id')/attempts"
is "$(jget '[.[] | "\(.attempt):\(.status)"] | join(" ")')" "1:lost 2:succeeded" "attempt 1 lost, attempt 2 succeeded"
like "$(jget '.[0].error')" "the lease ran out" "attempt 1 was lost to its lease"
is "$(tq '.[0].attempts'):$(tq '[.[0].stages[].status] | unique | join(",")')" "2:succeeded" \
    "the stored result is attempt 2's"
is "$(same_tags "" solo/app)" 0 "its tag verifies"

# --- 6. 429 from --max-inflight, and an instance that drains --------------------------
serve_stop
fn_start fn4 --max-inflight 1
FN4_PID=$FN_PID FN4_URL=$FN_URL
FN_PID="$FN_PID $FN2_PID $FN3_PID $FN4_PID"
gateway_start "$E2E_WORK/gw3" "$FN2_URL" "$FN4_URL"
GW3_LOG=$GW_LOG
serve_start faas --gateway "$GW_URL" --seal-key-file "$FN_KEY" --faas-concurrency 4
policy busy '["fleet/app0*"]' '"executor": "faas", "bandwidth_kbps": 512, "dest_namespace": "busy"'
run_policy "$POL"
busy "$FN2_URL=$FN2_PID" >/dev/null
kill -TERM "$FN2_PID"
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status):$(jget .succeeded)" "Succeeded:9" "all nine tasks succeed"
is "$(same_tags busy/ fleet/app0{1..9})" 0 "their tags verify"
fn2_rc=0
wait "$FN2_PID" || fn2_rc=$?
is "$fn2_rc" 0 "the drained instance exits 0"
like "$(cat "$FN2_LOG")" "draining [1-9] invocation" "it drained the invocations in flight"
like "$(cat "$GW3_LOG")" "POST 429" "the busy instance answered 429"
tasks "$EXEC"
n429=0
for id in $(tq '.[].id'); do
    api GET "/tasks/$id/attempts"
    jget '.[].error' | grep -q "http 429" && n429=$((n429 + 1))
done
ok "$((n429 >= 1 ? 0 : 1))" "tasks refused with 429 were sent again, and succeeded ($n429)"
like "$(cat "$SERVE_LOG")" "attempt 1: http 429: at --max-inflight .*; attempt 2 in 1.0 s" "after the Retry-After it names"

# --- 7. refusals: a wrong token, a wrong key --------------------------------------------
serve_stop
REPLICA_FUNCTION_TOKEN=wrong-token serve_start faas --gateway "$GW_URL" --seal-key-file "$FN_KEY"
policy wrong '["fleet/app03"]' '"executor": "faas", "dest_namespace": "wrong"'
WRONG=$POL
run_policy "$WRONG"
wait_exec "$EXEC" Succeeded Failed
st=$(jget .status)
tasks "$EXEC"
is "$st:$(tq '.[0].attempts')" "Failed:1" "a wrong function token fails the task in one attempt"
like "$(tq '.[0].error')" "http 401: wrong bearer token" "with the function's 401"
serve_stop
head -c 32 /dev/urandom >"$E2E_WORK/other.key"
chmod 600 "$E2E_WORK/other.key"
serve_start faas --gateway "$GW_URL" --seal-key-file "$E2E_WORK/other.key"
run_policy "$WRONG"
wait_exec "$EXEC" Succeeded Failed
st=$(jget .status)
tasks "$EXEC"
is "$st" Failed "credentials sealed under another key fail"
like "$(tq '.[0].error')" "http 422: target.credentials could not be opened with this key" "clearly"
serve_stop

# --- 8. options -------------------------------------------------------------------------
out=$("$REPLICA" serve --db "$E2E_WORK/x.db" --listen 127.0.0.1:0 --executor faas 2>&1) && rc=0 || rc=$?
like "$rc:$out" "^1:.*--executor faas needs --gateway URL" "serve --executor faas without --gateway"
serve_start plain
api POST /policies "{\"name\": \"nofaas\", \"source_registry\": 1, \"target_registry\": 1, \"executor\": \"faas\"}"
is "$STATUS" 400 "a daemon without a gateway refuses a faas policy"
like "$(jget .error)" "this daemon has no FaaS gateway" "and says why"
serve_stop

# --- 9. no password anywhere ----------------------------------------------------------
leaks=$(cat "$E2E_WORK"/fn*.log "$E2E_WORK"/fn*.out "$E2E_WORK"/gw*/access.log "$E2E_WORK"/gw*/error.log \
    "$E2E_WORK"/faas.log "$E2E_WORK"/faas.out "$E2E_WORK/dst/registry.log" | grep -c -- "$REG_DST_PASS" || true)
is "$leaks" 0 "the target's password is in no log of serve, the functions, the gateway or the registry"
unlike "$(cat "$E2E_WORK"/faas.log)" "callbacks/faas/[A-Za-z0-9_-]" "no attempt's callback token is in serve's log"

done_testing
