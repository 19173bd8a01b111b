#!/usr/bin/env bash
# Stage functions and process templates managed through replica serve's API:
# every save is a version (number, time, hash, the token that saved it); a bad
# save gets 400 with diagnostics at the right line and stores nothing; user
# versions shadow the bundled files, which are never written, and deleting
# them brings the bundled ones back; a function or template a policy needs
# cannot be deleted (409); an execution records and keeps the versions it
# started with while later saves change only later executions, with no
# restart; draft runs try unsaved sources on a real policy; no answer shows a
# filesystem path.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" fn/app v1 oci 2 4096 seed >/dev/null
big=$E2E_WORK/big.bin
head -c $((24 << 20)) /dev/urandom >"$big"
push_big_image "$S" fn/big v1 "$big" >/dev/null
bundled_pp=$(sha256sum "$ROOT/scripts/stages/distribution/pull_post.lua" | cut -d' ' -f1)

# a script root of the operator's own (a bundled origin, as files are)
mkdir -p "$E2E_WORK/root/stages/test"
mark() { printf 'return { description = "mark", run = function() return { mark = "%s" } end }\n' "$1" \
    >"$E2E_WORK/root/stages/test/mark.lua"; }
mark file-v1
serve_start functions --scripts "$E2E_WORK/root"
all=$E2E_WORK/all-responses
: >"$all"
keep() { printf '%s\n' "$BODY" >>"$all"; }
put_source() { # PATH SOURCE-FILE
    api PUT "$1" "$(jq -Rs '{source: .}' <"$2")"
    keep
}

# --- the list ---------------------------------------------------------------------
api GET /functions
keep
is "$STATUS" 200 "GET /functions"
is "$(jget '[.[] | select(.name == "distribution/push")][0] | [.kind, .origin, .version, .bundled] | join(" ")')" \
    "distribution bundled 0 true" "a bundled function: its kind, origin bundled, version 0"
is "$(jget '[.[] | has("name") and has("description") and has("origin") and has("version")] | all')" true \
    "every entry has name, description, origin and version"

# --- versions -----------------------------------------------------------------------
cat >"$E2E_WORK/report1.lua" <<'EOF'
-- test/report: says which version ran
return {
  description = "Report the version that ran",
  run = function(ctx, input)
    return { marker = "v1", tags = #ctx.task.tags }
  end,
}
EOF
sed 's/"v1"/"v2"/' "$E2E_WORK/report1.lua" >"$E2E_WORK/report2.lua"
put_source /functions/test/report "$E2E_WORK/report1.lua"
is "$STATUS:$(jget .name):$(jget .version)" "201:test/report:1" "the first save creates version 1 (201)"
put_source /functions/test/report "$E2E_WORK/report2.lua"
is "$STATUS:$(jget .version)" "200:2" "a changed save is version 2 (200)"
put_source /functions/test/report "$E2E_WORK/report2.lua"
is "$STATUS:$(jget .version):$(jget .unchanged)" "200:2:true" "saving the same source again stores nothing"
api GET /functions/test/report
keep
is "$(jget '[.origin, .version, (.versions | length)] | join(" ")')" "user 2 2" "GET: origin user, version 2, two versions"
is "$(jget '.versions | map(.version) | join(",")')" "2,1" "versions are listed newest first"
is "$(jget '.versions[0].by')" admin "each version records the token that saved it"
is "$(jget '.versions[1].sha256')" "$(sha256sum <"$E2E_WORK/report1.lua" | cut -d' ' -f1)" "and its content hash"
like "$(jget '.versions[0].created')" '^20[0-9-]+T[0-9:.]+Z$' "and its time"
is "$(jget .source)" "$(cat "$E2E_WORK/report2.lua")" "the source is the current version's"
api GET /functions/test/report/versions/1
keep
is "$(jget .source)" "$(cat "$E2E_WORK/report1.lua")" "GET .../versions/1 returns the old source"
api GET /functions/test/report/versions/9
is "$STATUS" 404 "a version that does not exist: 404"

# --- bad saves: 400 with diagnostics at the right line, nothing stored ---------------
printf 'return {\n  description = "broken",\n  run = function(ctx)\n    local x = = 1\n  end,\n}\n' >"$E2E_WORK/syntax.lua"
put_source /functions/test/report "$E2E_WORK/syntax.lua"
is "$STATUS" 400 "a syntax error: 400"
is "$(jget '.diagnostics[0].line')" 4 "the diagnostic names line 4"
like "$(jget '.diagnostics[0].message')" "unexpected symbol near '='" "with Lua's message"
like "$(jget .error)" "line 4" "the error says where"
printf 'local n = 1\nreturn { description = "no run" }\n' >"$E2E_WORK/norun.lua"
put_source /functions/test/report "$E2E_WORK/norun.lua"
is "$STATUS:$(jget '.diagnostics[0].line')" "400:2" "no run function: 400, at the return"
like "$(jget '.diagnostics[0].message')" "must return a table with a run function" "which says what the contract wants"
printf 'return {\n  run = function(ctx)\n    local f = io.open("/etc/passwd")\n  end,\n}\n' >"$E2E_WORK/io.lua"
put_source /functions/test/report "$E2E_WORK/io.lua"
is "$STATUS:$(jget '.diagnostics[0].line')" "400:3" "a use of io: 400, at line 3"
like "$(jget '.diagnostics[0].message')" "uses io, which the sandbox does not provide" "which says the sandbox lacks it"
api GET /functions/test/report
is "$(jget .version):$(jget '.versions | length')" "2:2" "none of the bad saves stored a version"
api PUT /functions/test/report '{"source": 5}'
is "$STATUS" 400 "a source that is not a string: 400"
api PUT /functions/test/report '{"code": "x"}'
is "$STATUS" 400 "a body without source: 400"
api PUT /functions/a/b/c '{"source": "return {run = function() end}"}'
is "$STATUS" 404 "a function name with three parts: 404"

# --- POST /validate ----------------------------------------------------------------
api POST /validate "$(jq -Rs '{kind: "function", source: .}' <"$E2E_WORK/syntax.lua")"
is "$STATUS:$(jget .ok):$(jget '.diagnostics[0].line')" "200:false:4" "validate: a syntax error at line 4"
api POST /validate "$(jq -Rs '{kind: "function", source: .}' <"$E2E_WORK/report1.lua")"
is "$(jget .ok):$(jget '.diagnostics | length')" "true:0" "validate: a good function has no diagnostics"
printf 'return {\n  stages = {\n    { "a", "distribution/pull" },\n    { "b", "test/missing" },\n  },\n}\n' >"$E2E_WORK/tmissing.lua"
api POST /validate "$(jq -Rs '{kind: "template", source: .}' <"$E2E_WORK/tmissing.lua")"
is "$(jget .ok):$(jget '.diagnostics[0].line')" "false:4" "validate: a template naming a missing function, at that line"
like "$(jget '.diagnostics[0].message')" "no function named 'test/missing'" "which names it"
api POST /validate '{"kind": "policy", "source": "x"}'
is "$STATUS" 400 "validate: an unknown kind is a bad request"
api GET /functions/draft/function
is "$STATUS" 404 "validate saves nothing"

# --- templates: the structured form writes the Lua ------------------------------------
tpl_body='{"description": "with a report", "source_kind": "distribution", "target_kind": "distribution",
  "stages": [{"name": "pull_prepare", "function": "distribution/pull_prepare"},
             {"name": "pull", "function": "distribution/pull"},
             {"name": "pull_post", "function": "distribution/pull_post"},
             {"name": "push_prepare", "function": "distribution/push_prepare"},
             {"name": "push", "function": "distribution/push"},
             {"name": "report", "function": "test/report"}]}'
api PUT /templates/reporting "$tpl_body"
keep
is "$STATUS:$(jget .version)" "201:1" "a template from its stages: version 1"
api GET /templates/reporting
keep
is "$(jget '.stages | map(.name) | join(",")')" "pull_prepare,pull,pull_post,push_prepare,push,report" \
    "GET returns its stages in order"
like "$(jget .source)" '\{ "report", "test/report" \},' "and the Lua the daemon wrote"
is "$(jget '[.origin, .version, .description] | join("|")')" "user|1|with a report" "origin, version, description"
api PUT /templates/reporting '{"stages": [{"name": "x", "function": "test/nope"}]}'
is "$STATUS:$(jget '.diagnostics[0].message')" "400:no function named 'test/nope'" \
    "a template naming a missing function is refused"
api PUT /templates/reporting '{"stages": [{"name": "x"}]}'
is "$STATUS" 400 "a stage with neither function nor remote is refused"
api GET /templates/reporting
is "$(jget .version)" 1 "and nothing was stored"

# --- an execution records and keeps its versions ---------------------------------------
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"slow\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"fn/big\"], \"template\": \"reporting\", \"bandwidth_kbps\": 4096}"
is "$STATUS" 201 "a policy with the user template"
SLOW=$(jget .id)
api POST "/policies/$SLOW/executions"
E1=$(jget .id)
uploads=$REG_DST_STORAGE/docker/registry/v2/repositories/fn/big/_uploads
mid=1
wait_for_upload "$uploads" $((2 << 20)) "$SERVE_PID" && mid=0
ok "$mid" "the execution is mid-blob"
api GET "/executions/$E1"
keep
is "$(jget '.template | [.name, .origin, .version] | join(" ")')" "reporting user 1" \
    "the running execution records its template's version"
is "$(jget '.functions[] | select(.name == "test/report") | [.origin, .version] | join(" ")')" "user 2" \
    "and the version of each function"
is "$(jget '.functions[] | select(.name == "distribution/push") | .origin')" bundled "bundled ones too"
put_source /functions/test/report "$E2E_WORK/report1.lua"
is "$STATUS:$(jget .version)" "200:3" "a save while it runs (version 3, v1's source)"
wait_exec "$E1" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "the execution succeeds"
api GET "/executions/$E1/tasks"
keep
is "$(jget '.[0].stages[5] | [.name, .output.marker, .function_origin, .function_version] | join(" ")')" \
    "report v2 user 2" "it ran the version it started with, and its stage result says so"
is "$(jget '.[0].stages[1] | [.function_origin, .function_version] | join(" ")')" "bundled 0" \
    "a bundled stage's result records version 0"
api POST "/policies/$SLOW/executions"
E2=$(jget .id)
wait_exec "$E2" Succeeded Failed Stopped
api GET "/executions/$E2/tasks"
is "$(jget '.[0].stages[5] | [.output.marker, .function_version] | join(" ")')" "v1 3" \
    "the next execution runs the new version, with no restart"

# --- overlay and reset -------------------------------------------------------------------
cat >"$E2E_WORK/pp.lua" <<'EOF'
return {
  description = "user pull_post",
  run = function(ctx, input) return { shadowed = true } end,
}
EOF
put_source /functions/distribution/pull_post "$E2E_WORK/pp.lua"
is "$STATUS:$(jget .version)" "201:1" "a user version of a bundled function"
api GET /functions/distribution/pull_post
is "$(jget '[.origin, .version, .bundled, .description] | join(" ")')" "user 1 true user pull_post" \
    "it shadows the bundled one"
api GET /functions/distribution/pull_post/versions/0
is "$(jget .source)" "$(cat "$ROOT/scripts/stages/distribution/pull_post.lua")" "version 0 is the bundled source"
api POST /policies "{\"name\": \"plain\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"fn/app\"], \"dest_namespace\": \"plain\"}"
PLAIN=$(jget .id)
api POST "/policies/$PLAIN/executions"
E3=$(jget .id)
wait_exec "$E3" Succeeded Failed Stopped
api GET "/executions/$E3/tasks"
is "$(jget '.[0].stages[2] | [.output.shadowed, .function_origin] | join(" ")')" "true user" \
    "an execution of the bundled template runs the user pull_post"
api DELETE /functions/distribution/pull_post
is "$STATUS" 204 "reset to bundled: DELETE the user version"
api GET /functions/distribution/pull_post
is "$(jget '[.origin, .version, (.versions | length)] | join(" ")')" "bundled 0 0" \
    "the bundled one is back, and the history went with the user version"
is "$(sha256sum "$ROOT/scripts/stages/distribution/pull_post.lua" | cut -d' ' -f1)" "$bundled_pp" \
    "the bundled file was never written"
api DELETE /functions/distribution/pull_post
is "$STATUS" 409 "a bundled function cannot be deleted"

# --- in use: 409 ---------------------------------------------------------------------------
api DELETE /functions/test/report
is "$STATUS" 409 "deleting a function a policy's template needs: 409"
like "$(jget .error)" "needed by template reporting, which policy slow uses" "the error says who needs it"
api GET /functions/test/report
is "$(jget .version)" 3 "and it is still there"
api DELETE /templates/reporting
is "$STATUS" 409 "deleting a template a policy uses: 409"
api GET /templates/reporting
is "$(jget '.used_by | map(.name) | join(",")')" slow "the template lists the policy that uses it"
api GET /functions/test/report
is "$(jget '.used_by | join(",")')" reporting "the function lists the template that uses it"

# --- draft runs ------------------------------------------------------------------------------
draft='return { run = function(ctx, input) return { marker = "draft" } end }'
api POST "/policies/$SLOW/executions" "$(jq -n --arg s "$draft" '{function_overrides: {"test/report": $s}}')"
is "$STATUS:$(jget .draft)" "202:true" "a draft run with an edited function is accepted"
DR=$(jget .id)
wait_exec "$DR" Succeeded Failed Stopped
is "$(jget .draft)" true "the execution is marked as a draft"
is "$(jget '.functions[] | select(.name == "test/report") | .origin')" draft "its function is the draft's"
api GET "/executions/$DR/tasks"
is "$(jget '.[0].stages[5] | [.output.marker, .function_origin] | join(" ")')" "draft draft" "and the draft's code ran"
api GET /functions/test/report
is "$(jget .version):$(jget '.versions | length')" "3:3" "a draft stores no version"
api POST "/policies/$SLOW/executions" "$(jq -n '{function_overrides: {"test/report": "return {\n run = = 1 }"}}')"
is "$STATUS:$(jget '.diagnostics[0].line')" "400:2" "a draft that does not validate: 400 with the line"
tdraft=$(sed 's/"report", "test\/report"/"report", "common\/pass"/' <<<"$(api GET /templates/reporting; jget .source)")
api POST "/policies/$SLOW/executions" "$(jq -n --arg s "$tdraft" '{template_source: $s}')"
is "$STATUS" 202 "a draft run with an edited template"
DT=$(jget .id)
wait_exec "$DT" Succeeded Failed Stopped
is "$(jget '.template | [.origin, .name] | join(" ")')" "draft reporting" "runs the draft template"
api GET "/executions/$DT/tasks"
is "$(jget '.[0].stages[5] | .function')" common/pass "whose last stage is the one it names"

# --- a resumed execution runs the sources it pinned --------------------------------------
api PUT /templates/marking "$(jq -c '.stages[5] = {name: "mark", function: "test/mark"}' <<<"$tpl_body")"
is "$STATUS" 201 "a template whose last stage is a file of the operator's root"
api POST /policies "{\"name\": \"resume\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"fn/big\"], \"dest_namespace\": \"resume\", \"template\": \"marking\", \"bandwidth_kbps\": 4096}"
RP=$(jget .id)
api POST "/policies/$RP/executions"
ER=$(jget .id)
mid=1
wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/resume/fn/big/_uploads" $((2 << 20)) "$SERVE_PID" && mid=0
ok "$mid" "an execution is mid-blob"
serve_kill9
mark file-v2
serve_start functions --scripts "$E2E_WORK/root"
wait_exec "$ER" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "after kill -9 and a changed file, the execution resumes and succeeds"
api GET "/executions/$ER/tasks"
is "$(jget '.[0].stages[5].output.mark')" file-v1 "it ran the source it pinned when it started, not the changed file"
api POST "/policies/$RP/executions"
ER2=$(jget .id)
wait_exec "$ER2" Succeeded Failed Stopped
api GET "/executions/$ER2/tasks"
is "$(jget '.[0].stages[5].output.mark')" file-v2 "a new execution runs the changed file"

# --- the executions list: filters, totals and counts per status --------------------------
api GET "/executions?draft=true"
is "$(jget 'map(.draft) | unique | join(",")'):$(jget length)" "true:2" "?draft=true lists the two drafts"
api GET "/executions/counts?policy=$SLOW"
is "$(jget .total):$(jget .by_status.Succeeded):$(jget .by_status.Failed)" "4:4:0" \
    "counts per status of one policy's executions"
api GET "/executions/counts?trigger=cron"
is "$(jget .total)" 0 "?trigger=cron: none"
api GET "/executions?trigger=bogus"
is "$STATUS" 400 "a bad trigger filter: 400"
total=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" "$API/executions?page_size=1" |
        sed -n 's/^X-Total-Count: //Ip' | tr -d '\r')
is "$total" "$(sqlite3 "$SERVE_DB" 'SELECT count(*) FROM executions')" "X-Total-Count gives the total past one page"

# --- no paths ----------------------------------------------------------------------------------
api GET /templates
keep
api GET /functions
keep
if grep -q -e "$ROOT" -e '/scripts/' -e '"path"' "$all"; then paths=found; else paths=none; fi
is "$paths" none "no response shows a filesystem path"

serve_stop
done_testing
