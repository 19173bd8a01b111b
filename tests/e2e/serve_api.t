#!/usr/bin/env bash
# replica serve over real HTTP: tokens, registries and policies through the
# API (credentials write-only and encrypted at rest), an execution end to end
# against real registries (token auth on the source, Basic on the target)
# whose tasks carry the six stage results in template order, the task log,
# and bad input answered with 400 and a clear message, changing nothing.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src" token
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL
expected=$(seed "$S" team/app v1,v2 oci 2 4096 seed "$REG_SRC_USER:$REG_SRC_PASS"
           seed "$S" team/multi v1 oci-index 2 4096 seed "$REG_SRC_USER:$REG_SRC_PASS"
           seed "$S" other/skip v1 oci 1 1024 seed "$REG_SRC_USER:$REG_SRC_PASS")

serve_start api
like "$TOKEN" '^rpl_[A-Za-z0-9_-]{40,}$' "the first start prints an admin token"
key=$SERVE_DB.key
is "$(stat -c %a "$key")" 600 "the credential key file is created with mode 0600"
is "$(stat -c %a "$SERVE_DB" "$SERVE_DB-wal" "$SERVE_DB-shm" | tr '\n' ' ')" "600 600 600 " \
    "the database and its -wal and -shm files are created with mode 0600"

# --- auth --------------------------------------------------------------------
st=$(curl -s -o "$E2E_WORK/b" -w '%{http_code}' "$API/registries")
is "$st" 401 "no token: 401"
is "$(jq -r .error "$E2E_WORK/b")" "missing bearer token (Authorization: Bearer <token>)" "with a JSON error"
st=$(curl -s -o "$E2E_WORK/b" -w '%{http_code}' -H "Authorization: Bearer rpl_wrong" "$API/registries")
is "$st" 401 "a wrong token: 401"
is "$(jq -r .error "$E2E_WORK/b")" "invalid token" "the error says the token is invalid"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "$API/webhooks/distribution")
is "$st" 401 "a webhook without its secret: 401"
t2=$("$REPLICA" token create --db "$SERVE_DB" --name ci)
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $t2" "$API/policies")
is "$st" 200 "a token made by 'replica token create' works against the running daemon"
if grep -a -q -- "$t2\|$TOKEN" "$SERVE_DB" "$SERVE_DB-wal" 2>/dev/null; then stored=1; else stored=0; fi
is "$stored" 0 "tokens are stored only as hashes"

# --- registries ------------------------------------------------------------------
api GET /registries
is "$STATUS:$BODY" "200:[]" "no registries yet: an empty JSON array"
api POST /registries "$(registry_json src "$S" "\"username\": \"$REG_SRC_USER\", \"password\": \"$REG_SRC_PASS\", \"webhook_secret\": \"src-hook-secret-0123456789\"")"
is "$STATUS" 201 "create the source registry"
SRC_ID=$(jget .id)
is "$(jget .has_password)" true "the response says a password is set"
api POST /registries "$(registry_json dst "$D" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
is "$STATUS" 201 "create the target registry"
DST_ID=$(jget .id)
api GET /registries
is "$(jget 'length')" 2 "both are listed"
api POST "/registries/$SRC_ID/ping"
is "$(jget .ok)" true "ping: the source answers with the stored credentials"
api POST /registries "$(registry_json src "$D")"
is "$STATUS" 409 "a second registry with the same name: 409"

# --- bad input ---------------------------------------------------------------------
before=$(sqlite3 "$SERVE_DB" 'SELECT count(*) FROM registries; SELECT count(*) FROM policies' | tr '\n' ' ')
api POST /registries '{"name": "x", "url": '
is "$STATUS" 400 "malformed JSON: 400"
like "$(jget .error)" '^request body is not valid JSON: .*(Expected|unexpected|end|char)' "... saying so, and where"
api POST /registries '{"name": "x", "url": "http://a", "colour": "blue"}'
is "$STATUS:$(jget .error)" "400:unknown field 'colour'" "an unknown field: 400 naming it"
api POST /registries '{"name": "x", "url": "http://a", "insecure": "yes"}'
is "$STATUS:$(jget .error)" "400:field 'insecure' must be a boolean" "a wrong type: 400 naming the field"
api POST /registries '{"name": "x"}'
is "$STATUS:$(jget .error)" "400:missing required field 'url'" "a missing field: 400"
api POST /registries '[1, 2]'
is "$STATUS:$(jget .error)" "400:request body must be a JSON object" "an array body: 400"
api POST /registries '{"name": "x", "url": "ftp://a"}'
is "$STATUS" 400 "a bad URL: 400"
{ printf '{"name": "x", "url": "http://a", "description": "'; head -c 1100000 /dev/zero | tr '\0' 'a'; printf '"}'; } >"$E2E_WORK/big.json"
st=$(curl -s -o "$E2E_WORK/b" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" --data-binary @"$E2E_WORK/big.json" "$API/registries")
is "$st:$(jq -r .error "$E2E_WORK/b")" "400:request body is larger than the limit" "an oversized body: 400"
api POST /policies '{"name": "p", "source_registry": 1, "target_registry": 99}'
is "$STATUS:$(jget .error)" "400:field 'target_registry': registry 99 does not exist" "a policy naming a missing registry: 400"
api POST /policies "{\"name\": \"p\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"trigger\": \"cron\", \"cron\": \"61 * * * *\"}"
is "$STATUS" 400 "a bad cron expression: 400"
like "$(jget .error)" 'minute 61 out of range' "... naming the field and the value"
api POST /policies "{\"name\": \"p\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"jobs\": 2.5}"
is "$STATUS:$(jget .error)" "400:field 'jobs' must be an integer" "a float where an integer belongs: 400"
api POST /policies "{\"name\": \"p\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"dest_namespace\": \"mirror/..\"}"
is "$STATUS" 400 "a dest_namespace with a '..' level: 400"
like "$(jget .error)" "^field 'dest_namespace' must be a repository path: invalid repository name \"mirror/\.\.\": a repository name is" \
    "... naming the field, the value and the grammar"
api POST /policies "{\"name\": \"p\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"dest_namespace\": \"Mirror\"}"
is "$STATUS" 400 "an upper-case dest_namespace: 400"
api POST /policies "{\"name\": \"p\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"team/**\", \"team-a/../team-b/app\"]}"
is "$STATUS" 400 "a literal repository outside the grammar: 400"
like "$(jget .error)" "^field 'repositories' has invalid repository name \"team-a/\.\./team-b/app\"" "... naming it"
api DELETE /registries/abc
is "$STATUS" 404 "a non-numeric id: 404"
api GET "/registries?page=9223372036854775807&page_size=500"
is "$STATUS:$(jget .error)" "400:page must be at most 18446744073709551 with page_size 500" \
    "a page whose offset would overflow: 400, not the first page"
api GET "/registries?page=18446744073709551&page_size=500"
is "$STATUS:$(jget length)" "200:0" "the last page that can be asked for: 200, empty"
api GET "/executions?page=9223372036854775807"
is "$STATUS" 400 "the same for every list"
after=$(sqlite3 "$SERVE_DB" 'SELECT count(*) FROM registries; SELECT count(*) FROM policies' | tr '\n' ' ')
is "$after" "$before" "rejected requests changed nothing"

# --- credentials are write-only ---------------------------------------------------
all=""
for p in /registries "/registries/$SRC_ID" "/registries/$DST_ID"; do api GET "$p"; all+=$BODY; done
if grep -q -- "$REG_SRC_PASS\|$REG_DST_PASS\|src-hook-secret" <<<"$all"; then leaked=1; else leaked=0; fi
is "$leaked" 0 "no registry response contains a password or webhook secret"
if grep -a -q -- "$REG_SRC_PASS\|$REG_DST_PASS" "$SERVE_DB" "$SERVE_DB-wal" 2>/dev/null; then clear=1; else clear=0; fi
is "$clear" 0 "passwords are not in the database file in clear"

# --- an execution end to end --------------------------------------------------------
api POST /policies "{\"name\": \"team\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"team/**\"], \"dest_namespace\": \"mirror\"}"
is "$STATUS" 201 "create a policy"
PID=$(jget .id)
is "$(jget '.repositories | join(",")'):$(jget .trigger):$(jget .override)" "team/**:manual:true" "it has the fields given and Harbor-like defaults"
curl -sN -H "Authorization: Bearer $TOKEN" "$API/events" >"$E2E_WORK/sse" &
sse_pid=$!
for _ in $(seq 1 250); do grep -q 'replica event stream' "$E2E_WORK/sse" && break; sleep 0.02; done
api POST "/policies/$PID/executions"
is "$STATUS" 202 "trigger it: 202"
EID=$(jget .id)
wait_exec "$EID" Succeeded Failed
is "$(jget .status)" Succeeded "the execution succeeds"
for _ in $(seq 1 250); do grep -q '"status":"Succeeded"' "$E2E_WORK/sse" && break; sleep 0.02; done
kill "$sse_pid" 2>/dev/null; wait "$sse_pid" 2>/dev/null || true
sse_data() { sed -n "/^event: $1\$/{n;s/^data: //p}" "$E2E_WORK/sse"; }
is "$(sse_data execution | jq -r 'select(.id == '"$EID"') | .status' | uniq | tr '\n' ' ')" "Pending Running Succeeded " \
    "GET /events streams the execution's transitions (Server-Sent Events)"
is "$(sse_data stage | jq -r 'select(.status == "succeeded") | .stage' | sort | uniq -c | awk '{print $1}' | sort -u)" 2 \
    "... and each task's stage results (six stages, two tasks)"
is "$(sse_data task | jq -r .status | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')" "Running=2 Succeeded=2 " \
    "... and the task transitions"
like "$(sse_data bytes | tail -n 1)" '"bytes":[1-9]' "... and bytes copied"
is "$(jget .total):$(jget .succeeded):$(jget .failed)" "2:2:0" "two tasks (one per repository), both succeeded"
bad=0
while read -r ref want; do
    [[ $ref == team/* ]] || continue
    repo=${ref%%:*} tag=${ref#*:}
    got=$(manifest_digest "$D" "mirror/$repo" "$tag" "$REG_DST_USER:$REG_DST_PASS")
    [[ $got == "$want" ]] || { bad=1; echo "# mirror/$repo:$tag: $got, want $want"; }
done <<<"$expected"
is "$bad" 0 "every selected tag is on the target under the namespace with the source digest"
is "$(manifest_digest "$D" mirror/other/skip v1 "$REG_DST_USER:$REG_DST_PASS")" missing "unselected repositories are not copied"
api GET "/executions/$EID/tasks"
is "$(jget '[.[].stages | map(.name) | join(",")] | unique | join(" ")')" \
    "pull_prepare,pull,pull_post,push_prepare,push,push_post" "each task carries the six stage results in template order"
is "$(jget '[.[].stages[].status] | unique | join(",")')" succeeded "all stages succeeded"
is "$(jget '[.[] | select(.repository == "team/app")][0].stages[4].output.pushed')" 2 "the push stage's output is kept (2 tags pushed)"
TID=$(jget '.[0].id')
out=$(curl -s -H "Authorization: Bearer $TOKEN" "$API/tasks/$TID/log")
like "$out" 'stage push succeeded' "the task log has the stage lines"
api GET "/executions?policy=$PID"
is "$(jget 'length'):$(jget '.[0].id')" "1:$EID" "the execution is listed under its policy"

# --- catalog ---------------------------------------------------------------------------
api GET /templates
is "$(jget '.[] | select(.name == "distribution") | .stages | length')" 6 "GET /templates lists the distribution template's six stages"
api GET /functions
like "$(jget '[.[].name] | join(" ")')" 'distribution/pull .*distribution/push' "GET /functions lists the stage functions"

# --- no secret in the logs ---------------------------------------------------------------
if grep -q -- "$REG_SRC_PASS\|$REG_DST_PASS\|$TOKEN" "$SERVE_LOG"; then inlog=1; else inlog=0; fi
is "$inlog" 0 "the daemon's log (stderr) contains no password and no token"
serve_stop
done_testing
