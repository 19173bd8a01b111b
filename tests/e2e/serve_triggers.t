#!/usr/bin/env bash
# What starts executions in replica serve besides the API: a CNCF
# Distribution registry's notifications (the registry configured to POST to
# serve), Harbor's webhook payloads in both its formats, replicated
# deletions, and cron schedules. An event replicates exactly the artifact it
# names; events are recorded before they are acknowledged.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

serve_start triggers
HOOK_SECRET=dist-hook-secret-0123456789
HARBOR_SECRET=harbor-hook-secret-0123456789
REGISTRY_NOTIFY_URL=$API/webhooks/distribution REGISTRY_NOTIFY_AUTH="Bearer $HOOK_SECRET" \
    registry_start src "$E2E_WORK/src"
registry_start hsrc "$E2E_WORK/hsrc"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL H=$REG_HSRC_URL D=$REG_DST_URL

api POST /registries "$(registry_json src "$S" "\"webhook_secret\": \"$HOOK_SECRET\"")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json harbor "$H" "\"webhook_secret\": \"$HARBOR_SECRET\"")"
HSRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)

# A cron policy in Harbor's 6-field form (seconds first) that fires once a
# minute, on the second SEC a few seconds from now; checked at the end. SEC
# is kept away from the minute's turn, so a schedule that ignored its
# seconds (and fired on second 0) would fail the check.
seed "$H" cron/app c1 oci 1 1024 >/dev/null
SEC=$((($(date +%s) + 6) % 60))
((SEC >= 4 && SEC <= 53)) || SEC=4
api POST /policies "{\"name\": \"cron\", \"source_registry\": $HSRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"cron/**\"], \"trigger\": \"cron\", \"cron\": \"$SEC * * * * *\"}"
is "$STATUS:$(jget .cron)" "201:$SEC * * * * *" "a cron policy is created"
CRON_PID=$(jget .id)

# wait_execs POLICY N: waits until POLICY has at least N executions, none
# of them Pending or Running, and no webhook event is left unmatched; the
# policy's executions (newest first) in $BODY.
wait_execs() {
    local n busy unmatched end=$((SECONDS + 90))
    while ((SECONDS < end)); do
        unmatched=$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM events WHERE status = 'new'")
        api GET "/executions?policy=$1"
        n=$(jget length)
        busy=$(jget '[.[] | select(.status == "Pending" or .status == "Running")] | length')
        ((n >= $2 && busy == 0 && unmatched == 0)) && return 0
        sleep 0.02
    done
    echo "# policy $1: $n executions ($busy busy), want $2 settled" >&2
    return 1
}
# tasks_of POLICY: every task of the policy's executions as "kind repo tags" lines, sorted.
tasks_of() {
    local ids
    api GET "/executions?policy=$1"
    ids=$(jget '.[].id')
    for id in $ids; do
        api GET "/executions/$id/tasks"
        jget '.[] | "\(.kind) \(.repository) \(.tags | join(","))"'
    done | sort -u
}
# statuses: the distinct statuses of the executions in $BODY.
statuses() { jget '[.[].status] | unique | join(",")'; }
# wait_missing URL REPO TAG: waits (up to 30 s) until the tag is gone.
wait_missing() {
    local end=$((SECONDS + 30))
    while ((SECONDS < end)); do
        [[ $(manifest_digest "$@") == missing ]] && return 0
        sleep 0.05
    done
    return 1
}
# wait_events N: waits until N webhook events naming artifacts are recorded and matched or ignored.
wait_events() {
    local end=$((SECONDS + 30))
    while ((SECONDS < end)); do
        api GET "/events/received?page_size=500"
        (( $(jget '[.[] | select(.status != "new" and (.detail | test("^0 artifact") | not))] | length') >= $1 )) && return 0
        sleep 0.02
    done
    return 1
}

# --- Distribution notifications ---------------------------------------------------
api POST /policies "{\"name\": \"hook\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"hook/**\"], \"tags\": [\"v*\"], \"trigger\": \"event\", \"replicate_deletion\": true, \"enabled\": false}"
HP=$(jget .id)
seed "$S" hook/app v0 oci 2 4096 >/dev/null
ok "$(wait_events 1; echo $?)" "the registry's notification of a push is recorded while the policy is disabled"
api GET "/executions?policy=$HP"
is "$(jget length)" 0 "a disabled policy does not run"
api PUT "/policies/$HP" '{"enabled": true}'
is "$STATUS:$(jget .enabled)" "200:true" "enable the policy"
want_v1=$(seed "$S" hook/app v1,dev oci 2 4096 | awk '$1 == "hook/app:v1" {print $2}')
wait_execs "$HP" 1
is "$(statuses):$(jget '.[-1].trigger'):$(jget '.[-1].scope')" "Succeeded:event:artifacts" "the notification triggers an event execution that succeeds"
is "$(manifest_digest "$D" hook/app v1)" "$want_v1" "the pushed tag v1 is replicated"
is "$(manifest_digest "$D" hook/app dev)" missing "the tag the filter excludes (dev) is not"
is "$(manifest_digest "$D" hook/app v0)" missing "an earlier tag the event did not name (v0) is not"
is "$(tasks_of "$HP" | tr '\n' ';')" "copy hook/app v1;" "its tasks name exactly that tag"

# Deleting the manifest on the source replicates the deletion.
curl -s -o /dev/null -X DELETE "$S/v2/hook/app/manifests/$want_v1"
ok "$(wait_missing "$D" hook/app v1; echo $?)" "the deletion on the source is replicated: the manifest is gone from the target"
wait_execs "$HP" 2
is "$(statuses)" Succeeded "by an execution that succeeds"
like "$(tasks_of "$HP")" "^delete hook/app (v1@)?$want_v1" "with a deletion task naming the digest"

# --- Harbor webhooks -----------------------------------------------------------------
api POST /policies "{\"name\": \"harbor\", \"source_registry\": $HSRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"lib/**\"], \"trigger\": \"event\", \"replicate_deletion\": true}"
HBP=$(jget .id)
seeded=$(seed "$H" lib/nginx v5,v6 oci 2 4096)
d5=$(awk '$1 == "lib/nginx:v5" {print $2}' <<<"$seeded")
d6=$(awk '$1 == "lib/nginx:v6" {print $2}' <<<"$seeded")
hp=${H#http://}
harbor() { curl -s -o "$E2E_WORK/hb" -w '%{http_code}' -H "Authorization: $HARBOR_SECRET" \
               -H 'Content-Type: application/json' --data-binary "$1" "$API/webhooks/harbor"; }
default_push="{\"type\": \"PUSH_ARTIFACT\", \"occur_at\": $(date +%s), \"operator\": \"admin\",
  \"event_data\": {\"resources\": [{\"digest\": \"$d5\", \"tag\": \"v5\", \"resource_url\": \"$hp/lib/nginx:v5\"}],
  \"repository\": {\"date_created\": 1700000000, \"name\": \"nginx\", \"namespace\": \"lib\", \"repo_full_name\": \"lib/nginx\", \"repo_type\": \"private\"}}}"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: wrong-secret-0123456789" --data-binary "$default_push" "$API/webhooks/harbor")
is "$st" 401 "a Harbor webhook with a wrong secret: 401"
is "$(harbor "$default_push")" 202 "Harbor's default payload (PUSH_ARTIFACT) is accepted"
wait_execs "$HBP" 1
is "$(statuses)" Succeeded "and triggers the matching policy"
is "$(manifest_digest "$D" lib/nginx v5):$(manifest_digest "$D" lib/nginx v6)" "$d5:missing" "exactly lib/nginx:v5 is replicated"
cloud="{\"specversion\": \"1.0\", \"id\": \"e-1\", \"source\": \"/projects/1/webhook/policies/1\",
  \"type\": \"harbor.artifact.pushed\", \"datacontenttype\": \"application/json\", \"time\": \"2026-11-29T12:00:00Z\",
  \"operator\": \"admin\", \"data\": {\"resources\": [{\"digest\": \"$d6\", \"tag\": \"v6\", \"resource_url\": \"$hp/lib/nginx:v6\"}],
  \"repository\": {\"name\": \"nginx\", \"namespace\": \"lib\", \"repo_full_name\": \"lib/nginx\", \"repo_type\": \"private\"}}}"
is "$(harbor "$cloud")" 202 "Harbor's CloudEvents payload (harbor.artifact.pushed) is accepted"
wait_execs "$HBP" 2
is "$(statuses):$(manifest_digest "$D" lib/nginx v6)" "Succeeded:$d6" "and replicates lib/nginx:v6"
delete="{\"type\": \"DELETE_ARTIFACT\", \"occur_at\": $(date +%s), \"operator\": \"admin\",
  \"event_data\": {\"resources\": [{\"digest\": \"$d5\", \"tag\": \"v5\", \"resource_url\": \"$hp/lib/nginx:v5\"}],
  \"repository\": {\"name\": \"nginx\", \"namespace\": \"lib\", \"repo_full_name\": \"lib/nginx\"}}}"
is "$(harbor "$delete")" 202 "a DELETE_ARTIFACT payload is accepted"
wait_execs "$HBP" 3
is "$(manifest_digest "$D" lib/nginx v5):$(manifest_digest "$D" lib/nginx v6)" "missing:$d6" \
    "the deletion is replicated, and the other tag stays"
is "$(harbor '{"type": "PUSH_ARTIFACT"}')" 400 "a payload without its resources: 400"
like "$(jq -r .error "$E2E_WORK/hb")" "not a harbor webhook payload" "with a clear message"
is "$(harbor 'not json')" 400 "a body that is not JSON: 400"
n=$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM events WHERE source = 'harbor'")
is "$n" 3 "the three accepted Harbor events are stored; the rejected ones are not"

# An event stored but left unmatched (as when its matching raised after the
# insert) is matched within seconds, without a restart.
d7=$(seed "$H" lib/nginx v7 oci 1 1024 | awk '$1 == "lib/nginx:v7" {print $2}')
push7="{\"type\": \"PUSH_ARTIFACT\", \"occur_at\": $(date +%s), \"operator\": \"admin\",
  \"event_data\": {\"resources\": [{\"digest\": \"$d7\", \"tag\": \"v7\", \"resource_url\": \"$hp/lib/nginx:v7\"}],
  \"repository\": {\"name\": \"nginx\", \"namespace\": \"lib\", \"repo_full_name\": \"lib/nginx\"}}}"
EV=$(sqlite3 "$SERVE_DB" "INSERT INTO events (received, source, payload, registry, status)
                          VALUES (strftime('%s', 'now') - 10, 'harbor', '$push7', $HSRC_ID, 'new') RETURNING id")
wait_execs "$HBP" 4
is "$(sqlite3 "$SERVE_DB" "SELECT status FROM events WHERE id = $EV")" matched "an event left new is matched without a restart"
is "$(statuses):$(manifest_digest "$D" lib/nginx v7)" "Succeeded:$d7" "and its artifact is replicated"
like "$(cat "$SERVE_LOG")" "matched 1 webhook event\(s\) left unmatched" "the log says so"

# --- cron ----------------------------------------------------------------------------
wait_execs "$CRON_PID" 1
is "$(jget '.[-1].trigger'):$(statuses)" "cron:Succeeded" "the cron policy fired and succeeded"
# the daemon checks its schedules once a second: the first execution was
# made in the second the schedule names, or within 3 s after it
late=$(sqlite3 "$SERVE_DB" "SELECT (CAST(created AS INTEGER) - $SEC + 60) % 60 FROM executions WHERE policy = $CRON_PID ORDER BY id LIMIT 1")
ok "$((late > 3))" "it fired on its second ($SEC), $late s late"
is "$(manifest_digest "$D" cron/app c1)" "$(manifest_digest "$H" cron/app c1)" "and replicated its repository"
serve_stop
done_testing
