#!/usr/bin/env bash
# GET /metrics of replica serve, as a Prometheus server scrapes it: behind
# the API token or the metrics token (which opens nothing else), in the text
# format (checked by a strict parser), and counting what happened: after a
# replication between two real registries, the tasks, tags, blobs and bytes
# copied, the requests by registry host, method and status, the stage
# durations, and the webhook events received and matched.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
source "$ROOT/tests/lib/proxy.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" m/a v1,v2 oci 2 65536 >/dev/null
seed "$S" m/b v1 oci 2 65536 >/dev/null
seed "$S" m/c v1 oci 2 65536 >/dev/null

MTOKEN=metrics-token-0123456789abcdef
printf '%s\n' "$MTOKEN" >"$E2E_WORK/metrics.token"
HOOK_SECRET=metrics-hook-secret-0123456789
serve_start metrics --metrics-token-file "$E2E_WORK/metrics.token"
BASE=${API%/api/v1}
set +e
err=$("$REPLICA" serve --db "$E2E_WORK/other.db" --listen 127.0.0.1:0 --metrics-token-file "$E2E_WORK/missing.token" 2>&1)
rc=$?
set -e
is "$rc" 1 "serve refuses to start with a metrics token file it cannot read"
like "$err" "metrics-token-file .*missing.token: cannot read it" "and names the file"

# The parser is strict: it refuses what a scraper would.
rejects() { ! printf '%b' "$1" | python3 "$ROOT/tests/lib/prom_text.py" >/dev/null 2>&1; }
ok "$(rejects '# TYPE x counter\nx 1\n'; echo $?)" "the parser refuses a counter not named _total"
ok "$(rejects '# TYPE x_total counter\nx_total{a="b\\q"} 1\n'; echo $?)" "the parser refuses a bad escape"
ok "$(rejects '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'; echo $?)" \
    "the parser refuses decreasing buckets"

# --- who may scrape ------------------------------------------------------------
scrape
is "$STATUS" 401 "without a token: 401"
www=$(curl -s -D - -o /dev/null "$BASE/metrics" | tr -d '\r' | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: //p')
is "$www" 'Bearer realm="replica"' "the 401 carries the bearer challenge"
scrape wrong-token-0123456789
is "$STATUS" 401 "with an unknown token: 401"
scrape "$MTOKEN"
is "$STATUS:$CTYPE" "200:text/plain; version=0.0.4" "with the metrics token: 200 in the text format"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $MTOKEN" "$API/registries")
is "$st" 401 "the metrics token does not open /api/v1"
scrape "$TOKEN"
is "$STATUS" 200 "an API token opens /metrics too"
if metrics_parse 2>"$E2E_WORK/parse.err"; then ok 0 "before any execution the text parses"
else ok 1 "before any execution the text parses: $(cat "$E2E_WORK/parse.err")"; fi
is "$(metric replica_tasks '.status == "Succeeded"'):$(metric replica_executions '.status == "Running"')" "0:0" \
    "no tasks yet, every status shown as 0"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "$BASE/metrics")
is "$st" 405 "POST /metrics: 405"

# --- a replication --------------------------------------------------------------
api POST /registries "$(registry_json src "$S" "\"webhook_secret\": \"$HOOK_SECRET\"")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"m\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"m/*\"]}"
PID=$(jget .id)
api POST "/policies/$PID/executions"
E=$(jget .id)
wait_exec "$E" Succeeded Failed Stopped
is "$(jget .status):$(jget .succeeded)" "Succeeded:3" "the execution copies three repositories"

# What the source holds: the tags, each tag's blob references (layers and
# config) and the bytes of its distinct blobs.
refs=0 tags=0
: >"$E2E_WORK/blobs"
for rt in m/a:v1 m/a:v2 m/b:v1 m/c:v1; do
    m=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$S/v2/${rt%%:*}/manifests/${rt#*:}")
    jq -r '(.layers + [.config])[] | "\(.digest) \(.size)"' <<<"$m" >>"$E2E_WORK/blobs"
    refs=$((refs + $(jq '.layers | length + 1' <<<"$m")))
    tags=$((tags + 1))
done
blob_bytes=$(sort -u "$E2E_WORK/blobs" | awk '{ n += $2 } END { print n }')
on_target=$(for r in m/a m/b m/c; do tag_list "$D" "$r"; done | grep -c .)
is "$on_target" "$tags" "the target has every tag"

scrape "$MTOKEN"
metrics_parse
is "$(metric replica_executions '.status == "Succeeded"')" 1 "replica_executions: one Succeeded"
is "$(metric replica_tasks '.status == "Succeeded"')" 3 "replica_tasks: three Succeeded, one per repository"
is "$(metric replica_tags_total '.result == "pushed"')" "$tags" "replica_tags_total: pushed = the tags copied"
is "$(metric replica_tags_total '.result == "failed"')" 0 "no tag failed"
copied=$(metric replica_blobs_total '.result == "copied"')
mounted=$(metric replica_blobs_total '.result == "mounted"')
skipped=$(metric replica_blobs_total '.result == "skipped"')
is "$((copied + mounted + skipped))" "$refs" "copied + mounted + skipped blobs = the tags' blob references ($copied + $mounted + $skipped)"
ok $((mounted >= 1 ? 0 : 1)) "the base layer shared by the repositories is mounted, not uploaded again ($mounted)"
bytes=$(metric replica_bytes_copied_total)
ok $((bytes >= blob_bytes ? 0 : 1)) "replica_bytes_copied_total ($bytes) >= the distinct blobs' bytes ($blob_bytes)"

SH=${S#http://} DH=${D#http://}
req() { metric replica_http_requests_total ".host == \"$1\" and .method == \"$2\" and .status == \"$3\""; }
ok $(( $(req "$SH" GET 200) > 0 ? 0 : 1 )) "requests to the source $SH: GET 200 counted ($(req "$SH" GET 200))"
ok $(( $(req "$DH" POST 202) > 0 ? 0 : 1 )) "requests to the target $DH: POST 202 (upload sessions) counted"
ok $(( $(req "$DH" PUT 201) > 0 ? 0 : 1 )) "requests to the target: PUT 201 (blobs, manifests) counted"
is "$(jget '[.[] | select(.name == "replica_http_requests_total") | .labels.host] | unique | sort | join(" ")')" \
    "$(printf '%s\n' "$SH" "$DH" | sort | paste -sd ' ')" "the requests name exactly the two registries' hosts (not the API's own)"
is "$(metric replica_http_requests_in_flight)" 0 "nothing in flight once the execution ended"

for st in pull_prepare pull pull_post push_prepare push push_post; do
    n=$(metric replica_stage_duration_seconds_count ".template == \"distribution\" and .stage == \"$st\"")
    is "$n" 3 "stage $st: three durations observed (one per task)"
done
ok "$(jget '[.[] | select(.name == "replica_stage_duration_seconds_sum" and .labels.stage == "push") | .value > 0] | all | if . then 0 else 1 end')" \
    "the push stage's duration sum is positive"

# --- webhook events ------------------------------------------------------------
api POST /policies "{\"name\": \"ev\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"m/b\"], \"trigger\": \"event\"}"
d=$(manifest_digest "$S" m/b v1)
hook() {
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $HOOK_SECRET" --data-binary \
        "{\"events\": [{\"action\": \"push\", \"target\": {\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"repository\": \"$1\", \"tag\": \"v1\", \"digest\": \"$d\"}}]}" \
        "$API/webhooks/distribution"
}
is "$(hook m/b):$(hook other/x)" "202:202" "two webhook events are accepted"
end=$((SECONDS + 30))
while ((SECONDS < end)); do
    api GET "/executions?trigger=event"
    [[ $(jget '.[0].status') == Succeeded ]] && break
    sleep 0.05
done
is "$(jget '.[0].status')" Succeeded "the event's execution ran"
scrape "$MTOKEN"
metrics_parse
is "$(metric replica_webhook_events_received_total '.source == "distribution"')" 2 "received_total counts both events"
is "$(metric replica_webhook_events_matched_total '.source == "distribution"'):$(metric replica_webhook_events_ignored_total '.source == "distribution"')" \
    "1:1" "one matched a policy, one was ignored"
is "$(metric replica_tags_total '.result == "skipped"')" 1 "the event's tag, already on the target, counts as skipped"
is "$(metric replica_tasks '.status == "Succeeded"')" 4 "replica_tasks follows the database"
is "$(metric replica_retries_total)" none "no retries so far"

# --- retries: a source behind the fault proxy answers 503 twice ------------------
proxy_start src "$S"
proxy_rules src <<'EOF'
GET /v2/*/manifests/* nth=1 times=2 status=503
EOF
api POST /registries "$(registry_json proxied "$PROXY_SRC_URL")"
PSRC_ID=$(jget .id)
api POST /policies "{\"name\": \"retried\", \"source_registry\": $PSRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"m/c\"], \"dest_namespace\": \"retried\"}"
api POST "/policies/$(jget .id)/executions"
wait_exec "$(jget .id)" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "through two 503s, the execution succeeds"
scrape "$MTOKEN"
metrics_parse
is "$(metric replica_retries_total '.kind == "request" and .reason == "503"')" 2 "replica_retries_total counts the two retries, by reason"
is "$(metric replica_http_requests_total ".host == \"${PROXY_SRC_URL#http://}\" and .method == \"GET\" and .status == \"503\"")" 2 \
    "and the requests the two 503s answered, by the proxy's host"
want=$(for st in Failed Pending Running Stopped Succeeded; do
    echo "$st $(sqlite3 "$SERVE_DB" "SELECT count(*) FROM tasks WHERE status = '$st'")"; done)
is "$(jget '[.[] | select(.name == "replica_tasks") | "\(.labels.status) \(.value)"] | sort | .[]')" "$want" \
    "replica_tasks matches the database's tasks, status by status"
serve_stop
done_testing
