#!/usr/bin/env bash
# Controlling executions of replica serve: triggers of a busy policy are
# coalesced into one queued run; stop cancels a transfer mid-blob and the
# execution is Stopped at once with no manifest pushed; a daemon killed with
# -9 mid-execution resumes it at the next start and completes it, without
# duplicating tasks; retry re-runs only the failed tasks, and completes them.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
big=$E2E_WORK/big.bin
head -c $((64 << 20)) /dev/urandom >"$big"
want_big=$(push_big_image "$S" big/app v1 "$big")
uploads=$REG_DST_STORAGE/docker/registry/v2/repositories/big/app/_uploads
upload_bytes() { cat "$uploads"/*/data 2>/dev/null | wc -c; }

serve_start control
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
# 8 MiB/s: the 64 MiB layer takes about 8 s, so it is surely mid-blob below.
api POST /policies "{\"name\": \"big\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"big/app\"], \"bandwidth_kbps\": 8192}"
PID=$(jget .id)

# --- coalescing ------------------------------------------------------------------
api POST "/policies/$PID/executions"
A=$(jget .id)
is "$(jget .coalesced)" false "the first trigger starts an execution"
api POST "/policies/$PID/executions"
B=$(jget .id)
is "$(jget .coalesced)" false "a trigger while it runs queues a second one"
api POST "/policies/$PID/executions"
is "$(jget .id):$(jget .coalesced)" "$B:true" "a third trigger is coalesced into the queued run"
api GET "/executions/$B"
is "$(jget .status):$(jget .triggers)" "Pending:2" "the queued run is Pending and counts two triggers"

# --- stop mid-blob -----------------------------------------------------------------
mid=1
wait_for_upload "$uploads" $((4 << 20)) "$SERVE_PID" && mid=0
ok "$mid" "the blob upload of the first execution is under way"
t0=$(date +%s%N)
api POST "/executions/$A/stop"
t1=$(date +%s%N)
is "$STATUS:$(jget .status)" "200:Stopped" "stop answers with the execution Stopped"
ok $(( (t1 - t0) / 1000000 < 1000 ? 0 : 1 )) "within a second ($(( (t1 - t0) / 1000000 )) ms)"
api GET "/executions/$A/tasks"
is "$(jget '.[0].status')" Stopped "its task is Stopped"
is "$(manifest_digest "$D" big/app v1)" missing "no manifest was pushed to the target"
a_bytes=$(upload_bytes)

# --- kill -9 mid-execution, restart, and it completes ---------------------------------
wait_exec "$B" Running
t0=$(date +%s%N)
mid=1
wait_for_upload "$uploads" $((a_bytes + (16 << 20))) "$SERVE_PID" && mid=0
t1=$(date +%s%N)
ok "$mid" "the queued execution started after the stop and is mid-blob"
# At the policy's 8 MiB/s, 16 MiB take 2 s; an unlimited copy on loopback
# takes a fraction of one. Slack for how late the poll saw it Running.
ms=$(( (t1 - t0) / 1000000 ))
ok $((ms >= 1000 ? 0 : 1)) "bandwidth_kbps holds the copy: 16 MiB at 8 MiB/s took $ms ms (at least 1 s)"
api GET "/executions/$B/tasks"
is "$(jget '.[0].stages | map("\(.name)=\(.status)") | join(" ")')" \
    "pull_prepare=succeeded pull=succeeded pull_post=succeeded push_prepare=succeeded push=running" \
    "while it runs, its task shows the stages done and the one running"
serve_kill9
is "$(sqlite3 "$SERVE_DB" "SELECT status FROM executions WHERE id = $B")" Running \
    "after kill -9 the database still has the execution Running"
serve_start control
wait_exec "$B" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "after a restart the execution resumes and succeeds"
is "$(manifest_digest "$D" big/app v1)" "$want_big" "the image on the target has the source digest"
api GET "/executions/$B/tasks"
is "$(jget 'length'):$(jget '.[0].attempts')" "1:2" "one task, run twice (no duplicate task)"
like "$(cat "$SERVE_LOG")" "resuming 1 unfinished execution" "the restart says what it resumed"

# --- SIGTERM mid-execution: the daemon stops, and the next start resumes -------------
api POST /policies "{\"name\": \"graceful\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"big/app\"], \"dest_namespace\": \"graceful\", \"bandwidth_kbps\": 8192}"
GP=$(jget .id)
api POST "/policies/$GP/executions"
G=$(jget .id)
mid=1
wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/graceful/big/app/_uploads" $((4 << 20)) "$SERVE_PID" && mid=0
ok "$mid" "another execution is mid-blob"
serve_stop
is "$(sqlite3 "$SERVE_DB" "SELECT e.status || ' ' || t.status FROM executions e JOIN tasks t ON t.execution = e.id WHERE e.id = $G")" \
    "Running Running" "after SIGTERM the execution and its task are left Running, not Failed or Stopped"
serve_start control
wait_exec "$G" Succeeded Failed Stopped
is "$(jget .status):$(manifest_digest "$D" graceful/big/app v1)" "Succeeded:$want_big" \
    "the next start resumes it and it succeeds"

# --- retry re-runs only the failed tasks ------------------------------------------
seed "$S" r/good v1 oci 2 65536 >/dev/null
seed "$S" r/bad v1 oci 2 65536 bad-seed >/dev/null
layer=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$S/v2/r/bad/manifests/v1" |
        jq -r '.layers[0].digest')
hex=${layer#sha256:}
data=$REG_SRC_STORAGE/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
orig=$(head -c 1 "$data" | od -An -tx1 | tr -d ' ')
printf '\xff' | dd of="$data" bs=1 count=1 conv=notrunc status=none
[[ $orig == ff ]] && printf '\xfe' | dd of="$data" bs=1 count=1 conv=notrunc status=none
api POST /policies "{\"name\": \"r\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"r/*\"]}"
RP=$(jget .id)
api POST "/policies/$RP/executions"
E=$(jget .id)
wait_exec "$E" Succeeded Failed
is "$(jget .status):$(jget .succeeded):$(jget .failed)" "Failed:1:1" "a corrupt source blob fails one task of two"
api GET "/executions/$E/tasks"
like "$(jget '.[] | select(.repository == "r/bad") | .error')" "push: .*digest mismatch" "the failed task says which stage failed and why"
api GET "/executions/$E/tasks?status=Failed"
is "$(jget '[.[].repository] | join(" ")')" r/bad "?status=Failed lists only the failed task"
is "$(manifest_digest "$D" r/bad v1)" missing "the corrupt image is not pushed"
printf "\\x$orig" | dd of="$data" bs=1 count=1 conv=notrunc status=none
api POST "/executions/$E/retry"
is "$STATUS:$(jget .retried)" "202:1" "retry queues the one failed task"
wait_exec "$E" Succeeded Failed
is "$(jget .status):$(jget .succeeded):$(jget .failed)" "Succeeded:2:0" "after the source is repaired, the retry completes the execution"
api GET "/executions/$E/tasks"
is "$(jget '[.[] | "\(.repository)=\(.attempts)"] | sort | join(" ")')" "r/bad=2 r/good=1" \
    "only the failed task ran again"
is "$(manifest_digest "$D" r/bad v1)" "$(manifest_digest "$S" r/bad v1)" "the retried image is on the target"
api POST "/executions/$E/retry"
is "$STATUS" 409 "retrying an execution with no failed tasks: 409"
serve_stop
done_testing
