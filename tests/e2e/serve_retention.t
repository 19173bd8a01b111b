#!/usr/bin/env bash
# Retention and audit in replica serve: a policy that keeps 3 executions
# keeps the 3 newest (with their tasks, stage results and logs) and nothing
# of the older ones; a running execution is never deleted, whatever the
# limit; webhook events and audit records past their limits go at start,
# and while the daemon runs, within a quarter of a short window;
# every API write is in GET /audit with the token's name, the object and
# the status, never a secret; the database is intact after.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" ret/app v1 oci 1 1024 >/dev/null

# A template whose one stage holds its task for a while: an execution that
# stays Running while the limits are applied.
W=$E2E_WORK/scripts
mkdir -p "$W/stages/x" "$W/templates"
cat >"$W/stages/x/hold.lua" <<'EOF'
return {
  description = "holds its task for 30 s",
  run = function(ctx)
    time.sleep(30)
    return { ok = true }
  end,
}
EOF
printf 'return { stages = { { "hold", "x/hold" } } }\n' >"$W/templates/hold.lua"

# count SQL: one number from the database.
count() {
    sqlite3 "$SERVE_DB" "$1"
}

# policy_executions: the ids of the policy's executions, newest first.
policy_executions() {
    api GET "/executions?policy=$PID&page_size=500"
    jget '[.[].id] | join(" ")'
}

# wait_executions WANT: waits (up to 20 s) until policy_executions is WANT.
wait_executions() {
    local end=$((SECONDS + 20)) got
    while ((SECONDS < end)); do
        got=$(policy_executions)
        [[ $got == "$1" ]] && return 0
        sleep 0.05
    done
    echo "# the policy's executions stayed '$got'" >&2
    return 1
}

set +e
bad=$("$REPLICA" serve --db "$E2E_WORK/bad.db" --keep-events -1 2>&1)
rc=$?
set -e
is "$rc:$bad" "1:replica: --keep-events must be a number of days, 0 or more" "a bad limit is refused at start"

SECRET_PW=pw-never-in-the-audit-0123
HOOK_SECRET=hook-secret-never-in-the-audit
serve_start ret --scripts "$W" --keep-events 7
CI=$("$REPLICA" token create --db "$SERVE_DB" --name ci)

api POST /registries "$(registry_json src "$S" "\"username\": \"u\", \"password\": \"$SECRET_PW\", \"webhook_secret\": \"$HOOK_SECRET\"")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
POLICY="\"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"ret/**\"]"
api POST /policies "{\"name\": \"bad\", $POLICY, \"keep_executions\": -1}"
is "$STATUS:$(jget .error)" \
    "400:field 'keep_executions' must be 0 (keep all) or more (or null: the daemon's --keep-executions)" \
    "a negative keep_executions: 400"
api POST /policies "{\"name\": \"keep3\", $POLICY, \"keep_executions\": 3}"
is "$STATUS:$(jget .keep_executions)" "201:3" "a policy that keeps 3 executions"
PID=$(jget .id)

# --- keep 3 of 5 -------------------------------------------------------------------
ADMIN=$TOKEN TOKEN=$CI # the runs are the ci token's
E=()
for i in 1 2 3 4 5; do
    api POST "/policies/$PID/executions"
    E[i]=$(jget .id)
    wait_exec "${E[i]}" Succeeded Failed Stopped
    [[ $(jget .status) == Succeeded ]] || diag "execution ${E[i]}: $BODY"
done
TOKEN=$ADMIN
ok "$(wait_executions "${E[5]} ${E[4]} ${E[3]}" && echo 0 || echo 1)" \
    "after 5 runs the policy's 3 newest executions remain"
gone="${E[1]}, ${E[2]}"
is "$(count "SELECT count(*) FROM executions WHERE id IN ($gone);
             SELECT count(*) FROM tasks WHERE execution IN ($gone);
             SELECT count(*) FROM execution_scripts WHERE execution IN ($gone);
             SELECT count(*) FROM stage_results WHERE task NOT IN (SELECT id FROM tasks);
             SELECT count(*) FROM task_logs WHERE task NOT IN (SELECT id FROM tasks);
             SELECT count(*) FROM task_attempts WHERE task NOT IN (SELECT id FROM tasks)" | tr '\n' ' ')" \
    "0 0 0 0 0 0 " "nothing of the older two is left: executions, tasks, pins, stage results, logs, attempts"
api GET "/executions/${E[3]}/tasks"
T3=$(jget '.[0].id')
is "$(jget '.[0].status'):$(jget '.[0].stages | length')" "Succeeded:6" "the oldest kept still shows its task and stages"
api GET "/tasks/$T3/log" # also writes the log lines still buffered
like "$BODY" "ret/app" "and its log"
kept="${E[3]}, ${E[4]}, ${E[5]}"
is "$(count "SELECT count(DISTINCT execution) FROM tasks WHERE execution IN ($kept);
             SELECT count(DISTINCT t.execution) FROM tasks t JOIN stage_results r ON r.task = t.id WHERE t.execution IN ($kept);
             SELECT count(DISTINCT t.execution) FROM tasks t JOIN task_logs l ON l.task = t.id WHERE t.execution IN ($kept)" | tr '\n' ' ')" \
    "3 3 3 " "the 3 kept have their tasks, stage results and task logs"
api GET "/executions/${E[1]}"
is "$STATUS" 404 "a deleted execution is 404"
like "$(cat "$SERVE_LOG")" "retention: policy $PID: deleted [12] execution\(s\) \(it keeps 3\)" "the log says what went"

# --- a running execution is never deleted ------------------------------------------
api PUT "/policies/$PID" '{"template": "hold"}'
api POST "/policies/$PID/executions"
E6=$(jget .id)
wait_exec "$E6" Running
api PUT "/policies/$PID" '{"keep_executions": 1}'
is "$STATUS:$(jget .keep_executions)" "200:1" "the limit lowered to 1 while an execution runs"
ok "$(wait_executions "$E6 ${E[5]}" && echo 0 || echo 1)" \
    "the new limit applies at once: the newest ended one is kept, and the running one"
api GET "/executions/$E6"
is "$(jget .status):$(jget .total)" "Running:1" "the running execution is untouched"
api POST "/executions/$E6/retry"
is "$STATUS" 409 "retrying a running execution: 409 (audited below)"
api DELETE "/policies/$PID"
is "$STATUS:$(jget .error)" "409:policy $PID has an execution in progress; stop it first" \
    "a policy with a running execution cannot be deleted"
serve_stop

# --- what is past the limits goes at start, in batches ----------------------------
# An old ended execution of 1200 tasks (each with a stage result and a log
# line) and 1200 events older than --keep-events: more than one batch each.
now=$(date +%s)
old=$((now - 100 * 86400))
sqlite3 "$SERVE_DB" "INSERT INTO executions (policy, status, trigger, planned, total, succeeded, created, started, finished)
                       VALUES ($PID, 'Succeeded', 'manual', 1, 1200, 1200, $old, $old, $old);
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
                       INSERT INTO tasks (execution, repository, dest_repository, status)
                       SELECT (SELECT max(id) FROM executions), 'bulk/r' || i, 'bulk/r' || i, 'Succeeded' FROM n;
                     INSERT INTO stage_results (task, seq, name, function, status)
                       SELECT id, 1, 'x', 'x/x', 'succeeded' FROM tasks WHERE repository LIKE 'bulk/%';
                     INSERT INTO task_logs (task, ts, level, message)
                       SELECT id, $old, 'info', 'bulk' FROM tasks WHERE repository LIKE 'bulk/%';
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
                       INSERT INTO events (received, source, payload, status)
                       SELECT $now - 8 * 86400, 'distribution', '{}', 'ignored' FROM n;
                     INSERT INTO events (received, source, payload, status) VALUES
                       ($now - 6 * 86400, 'distribution', '{}', 'ignored');
                     INSERT INTO audit (time, who, method, path, status) VALUES
                       ($now - 91 * 86400, 'old', 'DELETE', '/api/v1/policies/99', 204),
                       ($now - 80 * 86400, 'recent', 'DELETE', '/api/v1/policies/98', 204)"
serve_start ret --scripts "$W" --keep-events 7
end=$((SECONDS + 20))
while ((SECONDS < end)) && [[ $(count "SELECT count(*) FROM audit WHERE who = 'old'") != 0 ]]; do sleep 0.05; done
is "$(count "SELECT count(*) FROM events WHERE received < $now - 7 * 86400;
             SELECT count(*) FROM events WHERE received > $now - 7 * 86400;
             SELECT count(*) FROM audit WHERE who = 'old';
             SELECT count(*) FROM audit WHERE who = 'recent'" | tr '\n' ' ')" "0 1 0 1 " \
    "at start: the events older than --keep-events 7 and the audit record older than 90 days are gone, the others kept"
is "$(count "SELECT count(*) FROM executions WHERE finished = $old;
             SELECT count(*) FROM tasks WHERE repository LIKE 'bulk/%';
             SELECT count(*) FROM task_logs WHERE message = 'bulk';
             SELECT count(*) FROM stage_results WHERE function = 'x/x'" | tr '\n' ' ')" "0 0 0 0 " \
    "the old execution past the limit of 1 is gone, with its 1200 tasks, their stage results and logs"
api GET "/executions/${E[5]}"
is "$STATUS" 200 "the newest ended execution is kept"
api GET "/executions/$E6"
is "$(jget .status)" Running "the execution that was running resumes, still there"
api POST "/executions/$E6/stop"
is "$STATUS:$(jget .status)" "200:Stopped" "stop it"
ok "$(wait_executions "$E6" && echo 0 || echo 1)" "once it has ended, it is the one the limit of 1 keeps"

# --- the audit trail ---------------------------------------------------------------
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $HOOK_SECRET" \
    --data-binary '{"events": []}' "$API/webhooks/distribution")
is "$st" 202 "a webhook is received"
FN_SOURCE='return { description = "audit-source-marker", run = function(ctx) return {} end }'
api PUT /functions/aud/noop "$(jq -n --arg s "$FN_SOURCE" '{source: $s}')"
is "$STATUS" 201 "save a function"
api DELETE /functions/aud/noop
is "$STATUS" 204 "and delete it"
st=$(curl -s -o /dev/null -w '%{http_code}' "$API/audit")
is "$st" 401 "GET /audit needs a token"
api GET "/audit?limit=500"
is "$STATUS" 200 "GET /audit"
LIST=$BODY
is "$(jq -r '[.[].id] == ([.[].id] | sort | reverse)' <<<"$LIST")" true "newest first"
rec() { # rec JQ_SELECT: "who method path kind/id status" of the first record that matches
    jq -r "[.[] | select($1)][0] | \"\(.who) \(.method) \(.path) \(.object_kind)/\(.object_id) \(.status)\"" <<<"$LIST"
}
is "$(rec '.path == "/api/v1/registries" and .status == 201')" \
    "admin POST /api/v1/registries registries/$DST_ID 201" "a registry's creation: who, what, the new object's id, the status"
is "$(rec ".path == \"/api/v1/policies\" and .status == 400")" \
    "admin POST /api/v1/policies policies/null 400" "a refused write is recorded with its status"
is "$(rec ".path == \"/api/v1/policies/$PID/executions\"" | sed 's/executions\/[0-9]*/executions\/N/')" \
    "admin POST /api/v1/policies/$PID/executions executions/N 202" "the newest run, with its execution"
is "$(jq -r "[.[] | select(.path == \"/api/v1/policies/$PID/executions\") | \"\(.who):\(.object_id)\"] | reverse | join(\" \")" <<<"$LIST")" \
    "ci:${E[1]} ci:${E[2]} ci:${E[3]} ci:${E[4]} ci:${E[5]} admin:$E6" "each run with the token that started it"
is "$(rec ".path == \"/api/v1/policies/$PID\" and .method == \"PUT\"")" "admin PUT /api/v1/policies/$PID policies/$PID 200" \
    "a policy's update"
is "$(rec ".path == \"/api/v1/policies/$PID\" and .method == \"DELETE\"")" \
    "admin DELETE /api/v1/policies/$PID policies/$PID 409" "a refused deletion"
is "$(rec ".path == \"/api/v1/executions/$E6/retry\"")" "admin POST /api/v1/executions/$E6/retry executions/$E6 409" \
    "a refused retry"
is "$(rec '.path == "/api/v1/functions/aud/noop" and .method == "PUT"')" \
    "admin PUT /api/v1/functions/aud/noop functions/aud/noop 201" "a function's save names it"
is "$(rec '.path == "/api/v1/functions/aud/noop" and .method == "DELETE"')" \
    "admin DELETE /api/v1/functions/aud/noop functions/aud/noop 204" "and its deletion"
is "$(rec ".path == \"/api/v1/executions/$E6/stop\"")" "admin POST /api/v1/executions/$E6/stop executions/$E6 200" \
    "a stop"
like "$(jq -r '.[0].address' <<<"$LIST")" '^127\.0\.0\.1' "the client's address is recorded"
like "$(jq -r '.[0].time' <<<"$LIST")" '^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$' "and the time"
is "$(jq -r '[.[] | select(.path | test("webhooks|audit"))] | length' <<<"$LIST")" 0 \
    "webhooks and reads are not recorded"
secrets=0
for s in "$SECRET_PW" "$HOOK_SECRET" "$ADMIN" "$CI" audit-source-marker; do
    grep -q -- "$s" <<<"$LIST" && secrets=1
    sqlite3 "$SERVE_DB" "SELECT * FROM audit" | grep -q -- "$s" && secrets=1
done
is "$secrets" 0 "no password, webhook secret, token or source is in the audit"
api GET "/audit?limit=2"
first=$(jget '[.[].id] | join(" ")')
api GET "/audit?limit=2&before=$(jget '.[1].id')"
is "$first $(jget '[.[].id] | join(" ")')" "$(jq -r '[.[0:4][].id] | join(" ")' <<<"$LIST")" \
    "?limit and ?before page through it"
api GET "/audit?limit=0"
is "$STATUS" 400 "a bad limit: 400"
api DELETE "/policies/$PID"
is "$STATUS" 204 "the policy is deleted"
is "$(count "SELECT count(*) FROM executions WHERE policy = $PID; SELECT count(*) FROM tasks" | tr '\n' ' ')" "0 0 " \
    "and its executions with it"
api GET "/audit?limit=1"
is "$(jget '.[0] | "\(.who) \(.method) \(.path) \(.object_kind)/\(.object_id) \(.status)"')" \
    "admin DELETE /api/v1/policies/$PID policies/$PID 204" "the newest audit record is that deletion"
serve_stop

# --- a short window is kept while the daemon runs ----------------------------------
# --keep-events 0.0004 is 34.56 s: the periodic pass comes every 10 s (a
# quarter of the window, at least 10 s), not hourly. The pass at start
# deletes an event an hour old; an event written past the window after that
# is gone by a later pass, and one written with it is kept.
events_like() { count "SELECT count(*) FROM events WHERE payload LIKE '%$1%'"; }
sqlite3 "$SERVE_DB" "INSERT INTO events (received, source, payload, status)
                       VALUES ($(date +%s) - 3600, 'distribution', '{\"hour\": 1}', 'ignored')"
serve_start ret --scripts "$W" --keep-events 0.0004
end=$((SECONDS + 20))
while ((SECONDS < end)) && [[ $(events_like hour) != 0 ]]; do sleep 0.05; done
is "$(events_like hour)" 0 "with a 35 s window, the pass at start deletes an event an hour old"
now=$(date +%s)
sqlite3 -cmd '.timeout 5000' "$SERVE_DB" "INSERT INTO events (received, source, payload, status) VALUES
                                            ($now - 60, 'distribution', '{\"past\": 1}', 'ignored'),
                                            ($now, 'distribution', '{\"fresh\": 1}', 'ignored')"
end=$((SECONDS + 30))
while ((SECONDS < end)) && [[ $(events_like past) != 0 ]]; do sleep 0.1; done
is "$(events_like past):$(events_like fresh)" "0:1" \
    "a later pass, 10 s on, deletes an event written past the window since, and keeps one written with it"
like "$(tail -n 3 "$SERVE_LOG")" "retention: deleted 1 webhook event\(s\) and 0 audit record\(s\) past their limits" \
    "... and logs it"
serve_stop

is "$(sqlite3 "$SERVE_DB" 'PRAGMA integrity_check; PRAGMA foreign_key_check' | tr '\n' ' ')" "ok " \
    "the database is intact: integrity_check ok, no dangling reference"
done_testing
