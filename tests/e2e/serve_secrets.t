#!/usr/bin/env bash
# No secret leaves replica serve: registries of the harbor, ecr and gar
# kinds (against their stand-ins) take part in real executions, then every
# place a secret could surface is scanned for every test credential:
# the stage outputs and task logs in the database, the task logs and every
# answer of the API, the event stream, and the daemon's own output.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
source "$ROOT/tests/standins.sh"

registry_start src "$E2E_WORK/src"
S=$REG_SRC_URL
seed "$S" team/app v1 oci 2 4096 secrets >/dev/null
seed "$S" team/multi v1 oci-index 2 4096 secrets >/dev/null
standin_start harbor h "$E2E_WORK/h"
standin_start ecr e "$E2E_WORK/e"
standin_start gar g "$E2E_WORK/g"
KEY=$(cat "$STANDIN_G_KEY_JSON")

serve_start secrets
curl -s -N -H "Authorization: Bearer $TOKEN" "$API/events" >"$E2E_WORK/events" 2>/dev/null &
EVENTS=$!
trap 'kill $EVENTS 2>/dev/null || true; _serve_cleanup' EXIT
answers=$E2E_WORK/answers
: >"$answers"
call() { api "$@"; printf '%s\n' "$BODY" >>"$answers"; }

call POST /registries "$(registry_json src "$S")"
SRC=$(jget .id)
call POST /registries "$(jq -n --arg u "$STANDIN_H_URL" --arg p "$STANDIN_H_PASS" \
    '{name: "harbor", kind: "harbor", url: $u, username: "replica", password: $p}')"
H=$(jget .id)
call POST /registries "$(jq -n --arg u "$STANDIN_E_URL" --arg k "$STANDIN_E_ACCESS_KEY_ID" --arg s "$STANDIN_E_SECRET_ACCESS_KEY" \
    --arg r "$STANDIN_E_REGION" --arg a "$STANDIN_E_API_URL" \
    '{name: "ecr", kind: "ecr", url: $u, credentials: {access_key_id: $k, secret_access_key: $s, region: $r}, options: {api_url: $a}}')"
E=$(jget .id)
is "$(jget '.credentials_set | join(",")')" "access_key_id,region,secret_access_key" "the ECR registry keeps its credential fields"
call POST /registries "$(jq -n --arg u "$STANDIN_G_URL" --arg k "$KEY" --arg a "$STANDIN_G_API_URL" --arg l "$STANDIN_G_LOCATION" \
    '{name: "gar", kind: "gar", url: $u, credentials: {key_json: $k}, options: {api_url: $a, location: $l}}')"
G=$(jget .id)

n=0
for dst in "$H" "$E" "$G"; do
    n=$((n + 1))
    ns=mirror
    [[ $dst == "$G" ]] && ns=$STANDIN_G_PROJECT # GAR: project/repository/image
    call POST /policies "{\"name\": \"p$n\", \"source_registry\": $SRC, \"target_registry\": $dst, \"repositories\": [\"team/**\"], \"dest_namespace\": \"$ns\"}"
    P=$(jget .id)
    call POST "/policies/$P/executions"
    X=$(jget .id)
    wait_exec "$X" Succeeded Failed Stopped
    is "$(jget .status)" Succeeded "an execution into the $(jq -r .name <<<"$(api GET "/registries/$dst"; echo "$BODY")") registry succeeds"
    call GET "/executions/$X/tasks"
    for tid in $(jget '.[].id'); do
        api GET "/tasks/$tid/log"
        printf '%s\n' "$BODY" >>"$answers"
    done
done
call POST "/registries/$E/ping"
call POST "/registries/$G/ping"
call GET /registries
call GET /kinds
serve_stop
kill $EVENTS 2>/dev/null || true

secrets=("$STANDIN_H_PASS" "$STANDIN_E_SECRET_ACCESS_KEY" "$(jq -r .private_key "$STANDIN_G_KEY_JSON" | sed -n 2p)")
dump=$E2E_WORK/db.txt
sqlite3 "$SERVE_DB" "SELECT output FROM stage_results; SELECT error FROM stage_results; SELECT message FROM task_logs;
                     SELECT error FROM tasks; SELECT error FROM executions;" >"$dump"
for place in "$dump" "$answers" "$E2E_WORK/events" "$SERVE_LOG" "$SERVE_OUT"; do
    found=none
    for s in "${secrets[@]}"; do
        if grep -q -F -- "$s" "$place"; then found=$s; fi
    done
    is "$found" none "no secret in $(basename "$place") ($(wc -c <"$place") bytes scanned)"
done
if grep -a -q -F -- "$STANDIN_E_SECRET_ACCESS_KEY" "$SERVE_DB" "$SERVE_DB-wal" 2>/dev/null; then clear=yes; else clear=no; fi
is "$clear" no "the database holds the kind credentials only sealed"
ok "$(( $(wc -l <"$dump") > 10 ? 0 : 1 ))" "there were stage outputs and logs to scan ($(wc -l <"$dump") lines)"
done_testing
