#!/usr/bin/env bash
# replica repl with piped stdin (no terminal: commands line by line, no
# prompt), against real Distribution registries with Basic auth: stepping
# through the six stages, line breakpoints in a temporary script root with
# :print and :next, a broken stage fixed and reloaded, Lua at the prompt
# that does real I/O, the HTTP trace without credentials, dry mode, and the
# replay of a task replica serve stored as failed.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src" basic
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL SA=$REG_SRC_USER:$REG_SRC_PASS DA=$REG_DST_USER:$REG_DST_PASS
export REPLICA_FROM_CREDS=$REG_SRC_USER:$REG_SRC_PASS REPLICA_TO_CREDS=$REG_DST_USER:$REG_DST_PASS
seed "$S" lib/app v1,v2 oci 2 4096 "" "$SA" >/dev/null
seed "$S" lib/other v1 oci 1 1024 "" "$SA" >/dev/null

# repl_in LINES... [-- ARGS...]: runs replica repl with LINES on stdin; the
# output (stdout and stderr) in $OUT, the exit code in $RC.
repl_in() {
    local lines=() args=()
    while [[ $# -gt 0 && $1 != -- ]]; do lines+=("$1"); shift; done
    [[ $# -gt 0 ]] && shift
    args=("$@")
    set +e
    OUT=$(printf '%s\n' "${lines[@]}" | timeout 120 "$REPLICA" repl "${args[@]}" 2>&1)
    RC=$?
    set -e
}

# --- 1. stepping through the six stages -------------------------------------------
repl_in ':stages' ':s' ':stages' ':s' ':result pull' ':s' ':s' ':s' ':s' ':stages' ':quit' \
    -- --from "$S" --to "$D" --repo lib/app --dest-namespace step
is "$RC" 0 "a session read from a pipe ends with 0 at :quit"
like "$OUT" 'lib/app -> step/lib/app, template distribution, 6 stage\(s\)' "the banner names the task and the template"
like "$OUT" '> 1  pull_prepare +distribution/pull_prepare +pending' ":stages before any step marks the first stage"
like "$OUT" '  1  pull_prepare +distribution/pull_prepare +succeeded +[0-9.]+ s
> 2  pull +distribution/pull +pending' ":stages after one step: the first succeeded, with its duration, the marker on the second"
like "$OUT" 'pull: succeeded in [0-9.]+ s
output: \{
  blobs = 6,' ":result pull prints the stage's output"
for st in pull_prepare pull pull_post push_prepare push push_post; do
    like "$OUT" "\[stage\] $st: succeeded" "stepping ran $st"
done
like "$OUT" '  6  push_post +distribution/verify +succeeded' "the last :stages shows all six succeeded"
unlike "$OUT" 'repl [a-z_]*> ' "no prompt decoration without a terminal"
is "$(manifest_digest "$D" step/lib/app v1 "$DA")" "$(manifest_digest "$S" lib/app v1 "$SA")" "the stepped task copied v1, verified by digest"
is "$(manifest_digest "$D" step/lib/app v2 "$DA")" "$(manifest_digest "$S" lib/app v2 "$SA")" "and v2"

# --- 2. line breakpoints in a temporary script root --------------------------------
R=$E2E_WORK/root
mkdir -p "$R/stages/dbg" "$R/templates"
sed 's|"distribution/pull_post"|"dbg/pull_post"|' "$ROOT/scripts/templates/distribution.lua" >"$R/templates/dbg.lua"
cat >"$R/stages/dbg/pull_post.lua" <<'LUA'
-- dbg/pull_post: counts the tags pulled (a stage to debug).
return {
  run = function(ctx, input)
    local seen = 0
    for _, tag in ipairs(ctx.task.tags) do
      local mark = "tag " .. tag
      seen = seen + 1
    end
    return { counted = seen, blobs = input.blobs }
  end,
}
LUA
repl_in ':break push' ':break dbg/pull_post.lua:6' ':breaks' ':c' ':where' ':p tag' ':p mark' ':n' ':p mark' ':p seen' \
    'seen = 10' ':c' ':c' ':result pull_post' ':quit' \
    -- --from "$S" --to "$D" --repo lib/app --dest-namespace brk --scripts "$R" --template dbg
is "$RC" 0 "the breakpoint session ends with 0"
like "$OUT" 'breakpoint 1 before stage push' ":break STAGE sets a stage breakpoint"
like "$OUT" 'breakpoint 2 at dbg/pull_post.lua:6' ":break FILE:LINE sets a line breakpoint"
like "$OUT" '1  before stage push
2  dbg/pull_post.lua:6' ":breaks lists both"
like "$OUT" '\[paused\] pull_post: stages/dbg/pull_post.lua:6 \(breakpoint 2\)
   6        local mark = "tag " .. tag' ":continue runs to the breakpoint and shows the line"
like "$OUT" 'paused in stage 3/6: pull_post \(dbg/pull_post\)' ":where names the stage and the template position"
like "$OUT" '> #0  stages/dbg/pull_post.lua:6 in' ":where shows the Lua stack"
like "$OUT" '
"v1"
nil
' ":print shows a local, and one not yet assigned as nil"
like "$OUT" 'stages/dbg/pull_post.lua:7 \(next\)' ":next steps over to the next line"
like "$OUT" '
"tag v1"
0
' "after :next the local holds its value; seen is still 0"
like "$OUT" 'stages/dbg/pull_post.lua:6 \(breakpoint 2\)' "the breakpoint hits again for the next tag"
like "$OUT" '\[break\] before stage push \(5/6\)' ":continue stops before a stage with a breakpoint"
like "$OUT" 'counted = 12' "an assignment at the prompt changed the stage's local (10, plus the two tags)"

# --- the other commands ------------------------------------------------------------
cat >"$E2E_WORK/editor.sh" <<'SH'
#!/bin/sh
# an $EDITOR for the test: appends a marker comment to the file it is given
echo "-- edited" >>"$1"
SH
chmod +x "$E2E_WORK/editor.sh"
OUT_CMDS=$(printf '%s\n' ':help' ':b 3' ':b dbg/pull_post.lua:7' ':delete 1' ':breaks' ':s' '' ':input' ':maxlen 30' \
    ':result pull' ':maxlen 4000' ':c' ':l 2' ':where' ':frame 0' ':finish' ':input' ':edit pull_post' ':delete 2' ':run' ':stages' ':quit' |
    EDITOR=$E2E_WORK/editor.sh timeout 120 "$REPLICA" repl --from "$S" --to "$D" --repo lib/app --dest-namespace cmds \
        --scripts "$R" --template dbg 2>&1)
OUT=$OUT_CMDS
like "$OUT" '  :stages +the template' ":help lists the commands"
like "$OUT" '  :replay +\[STAGE\]' "... every one of them"
like "$OUT" 'deleted breakpoint 1' ":delete removes a breakpoint"
like "$OUT" '
2  dbg/pull_post.lua:7
' ":breaks lists what is left"
before_c=$(sed -n '1,/^\[paused\]/p' <<<"$OUT")
is "$(grep -c '^\[stage\] pull: succeeded' <<<"$before_c")" 1 "an empty line repeated :s (pull ran after pull_prepare)"
like "$OUT" '
\{
  blobs = 6,' ":input shows the output of the stage before the current one"
like "$OUT" '\.\.\. \([0-9]+ more characters; :maxlen N shows more\)' ":maxlen cuts printed values, and says so"
like "$OUT" '\[paused\] pull_post: stages/dbg/pull_post.lua:7 \(breakpoint 2\)' ":continue runs to the line breakpoint"
like "$OUT" '    5      for _, tag in ipairs\(ctx.task.tags\) do
    6        local mark = "tag " .. tag
->  7        seen = seen \+ 1
    8      end
    9      return' ":list shows the source around the paused line"
like "$OUT" '#0  stages/dbg/pull_post.lua:7' ":frame 0 selects the paused frame"
like "$OUT" '\[stage\] pull_post: succeeded' ":finish ran the rest of the stage, its breakpoint muted (two tags, one pause)"
n_pauses=$(sed -n '1,/reloaded:/p' <<<"$OUT" | grep -c '^\[paused\]' || true)
is "$n_pauses" 1 "the breakpoint did not pause again after :finish (two tags, one pause)"
like "$OUT" 'reloaded: stages/dbg/pull_post.lua' ":edit ran \$EDITOR on the stage's file, then reloaded it"
is "$(tail -n 1 "$R/stages/dbg/pull_post.lua")" "-- edited" "the file is the one the editor changed"
like "$OUT" '\[done\] every stage succeeded' ":run ran the template from its first stage to the end"
like "$OUT" '  6  push_post +distribution/verify +succeeded' "and :stages shows it"

# --- 3. a broken stage, fixed and reloaded -----------------------------------------
# dbg/push_prepare is distribution's with an error on purpose; the session
# steps to it, sees the error with its line, the file is fixed, :reload, and
# :restart push_prepare finishes the task.
sed 's|"distribution/push_prepare"|"dbg/push_prepare"|' -i "$R/templates/dbg.lua"
awk '{print} /run = function\(ctx\)/ && !done {print "    local broken = nil .. \"on purpose\""; done=1}' \
    "$ROOT/scripts/stages/distribution/push_prepare.lua" >"$R/stages/dbg/push_prepare.lua"
broken_line=$(grep -n 'on purpose' "$R/stages/dbg/push_prepare.lua" | cut -d: -f1)
# wait_out FILE REGEX: waits (up to 60 s) until FILE matches REGEX.
wait_out() {
    local end=$((SECONDS + 60))
    until grep -Eq "$2" "$1" 2>/dev/null; do
        ((SECONDS < end)) || { echo "# $1 never matched $2:" >&2; sed 's/^/#   /' "$1" >&2; return 1; }
        sleep 0.05
    done
}
mkfifo "$E2E_WORK/in3"
timeout 120 "$REPLICA" repl --from "$S" --to "$D" --repo lib/app --dest-namespace fix --scripts "$R" --template dbg \
    <"$E2E_WORK/in3" >"$E2E_WORK/out3" 2>&1 &
RPID=$!
exec 7>"$E2E_WORK/in3"
printf ':s\n:s\n:s\n:s\n' >&7
wait_out "$E2E_WORK/out3" 'push_prepare: failed'
grep -v 'on purpose' "$R/stages/dbg/push_prepare.lua" >"$E2E_WORK/fixed.lua"
mv "$E2E_WORK/fixed.lua" "$R/stages/dbg/push_prepare.lua"
printf ':reload\n:restart push_prepare\n:stages\n:quit\n' >&7
exec 7>&-
set +e; wait "$RPID"; rc3=$?; set -e
OUT=$(cat "$E2E_WORK/out3")
is "$rc3" 0 "the reload session ends with 0"
like "$OUT" "\[stage\] push_prepare: failed in [0-9.]+ s: stages/dbg/push_prepare.lua:$broken_line: attempt to concatenate a nil value" \
    "the broken stage fails with its error and its line"
like "$OUT" 'reloaded: stages/dbg/push_prepare.lua' ":reload names the file that changed"
like "$OUT" '\[stage\] push_prepare: succeeded' ":restart push_prepare runs it again, fixed"
like "$OUT" '\[stage\] push_post: succeeded in [0-9.]+ s
\[done\] every stage succeeded' "and the rest to the end"
like "$OUT" '  3  pull_post +dbg/pull_post +succeeded' "the earlier results were kept"
is "$(manifest_digest "$D" fix/lib/app v1 "$DA"):$(manifest_digest "$D" fix/lib/app v2 "$DA")" \
    "$(manifest_digest "$S" lib/app v1 "$SA"):$(manifest_digest "$S" lib/app v2 "$SA")" "the target verifies: both tags by digest"

# --- 4. Lua at the prompt -------------------------------------------------------------
repl_in 'ctx.src:tags("lib/app")' 'local k = 5' 'k' 'n = 0' 'for _, r in ipairs(ctx.src:catalog()) do' 'n = n + 1' 'end' \
    'n' 'x = #ctx.task.tags' 'x * 10' 'error("my own")' 'ctx.nothing.here' 'y = 1 +' ':quit' \
    -- --from "$S" --to "$D" --repo lib/app
like "$OUT" '\{
  "v[12]",
  "v[12]"
\}' "a yielding call at the prompt returns the source's tag list"
like "$OUT" '
nil
' "a local does not survive its line (as in lua.c)"
like "$OUT" '
2
' "a statement over several lines ran once complete (the source's catalog has 2 repositories)"
like "$OUT" '
20
' "a global set at the prompt stays for the next line"
like "$OUT" 'error: stdin:1: my own' "an error shows the message and the line"
like "$OUT" "error: stdin:1: attempt to index a nil value \(field 'nothing'\)" "and a runtime error too"
like "$OUT" "error: an unfinished Lua statement was dropped: y = 1 \+" "a command after an unfinished statement drops it, and says so"
is "$RC" 0 "the session went on after each error"

# --- 5. the HTTP trace masks credentials ---------------------------------------------
repl_in ':trace on' ':s' ':s' ':trace off' ':s' ':ctx' 'ctx.options' ':quit' -- --from "$S" --to "$D" --repo lib/app --dest-namespace trace
like "$OUT" "\[http\] GET $S/v2/lib/app/manifests/v1 -> 200  [0-9.]+ (B|KiB)  [0-9]+ ms" "the trace prints method, URL, status, bytes and time"
like "$OUT" "\[http\] GET $D/v2/trace/lib/app/tags/list\?n=1 -> 404" "the target's requests too"
n_http=$(grep -c '^\[http\]' <<<"$OUT" || true)
ok "$((n_http < 3))" "several requests were traced ($n_http)"
for secret in "$REG_SRC_PASS" "$REG_DST_PASS" "$(printf '%s' "$REG_SRC_USER:$REG_SRC_PASS" | base64)"; do
    unlike "$OUT" "$secret" "no password (or Basic credential) appears in the session"
done
like "$OUT" 'override = true' ":ctx shows the options"
unlike "$OUT" 'from_creds|to_creds' "and ctx.options holds no credentials (stages never get them)"
after_off=$(sed -n '/trace off/,$p' <<<"$OUT" | grep -c '^\[http\]' || true)
is "$after_off" 0 ":trace off stops the trace"

# --- 7. dry mode -----------------------------------------------------------------------
repl_in ':c' ':quit' -- --from "$S" --to "$D" --repo lib/other --dest-namespace dry --dry
like "$OUT" 'dry mode \(no writes to the target\)' "the banner says dry mode"
like "$OUT" "dry mode: POST $D/v2/dry/lib/other/blobs/uploads/ was not sent" "the refused write is reported with its method and URL"
is "$(curl -s -u "$REG_DST_USER:$REG_DST_PASS" "$D/v2/_catalog" | jq -r '.repositories | map(select(startswith("dry/"))) | length')" 0 \
    "nothing was written to the target"
is "$(manifest_digest "$D" dry/lib/other v1 "$DA")" missing "no manifest"

# dry mode refuses a manifest PUT too: the target holds lib/other's blobs in
# dry2/lib/other already, the source tags the same image v2, and a template
# without push_prepare (which would open an upload first) pushes only the
# manifest.
replica_run --from "$S" --to "$D" --repo lib/other --dest-namespace dry2
is "$RC" 0 "a real run put lib/other:v1 under dry2"
accept=application/vnd.oci.image.manifest.v1+json
curl -s -u "$SA" -H "Accept: $accept" "$S/v2/lib/other/manifests/v1" >"$E2E_WORK/m.json"
curl -s -o /dev/null -u "$SA" -X PUT -H "Content-Type: $accept" --data-binary @"$E2E_WORK/m.json" "$S/v2/lib/other/manifests/v2"
grep -v push_prepare "$ROOT/scripts/templates/distribution.lua" >"$R/templates/nopre.lua"
repl_in ':c' ':quit' -- --from "$S" --to "$D" --repo lib/other --tag v2 --dest-namespace dry2 --dry \
    --scripts "$R" --template nopre
like "$OUT" "dry mode: PUT $D/v2/dry2/lib/other/manifests/v2 was not sent" "the refused manifest PUT is reported"
is "$(manifest_digest "$D" dry2/lib/other v2 "$DA")" missing "and the tag was not written"

# --- limits: a stage past its CPU budget fails with the reason; the session goes on -----
mkdir -p "$R/stages/t"
printf 'return { stages = { { "spin", "t/spin" } } }\n' >"$R/templates/spin.lua"
printf 'return { run = function(ctx) local n = 0 while true do n = n + 1 end end }\n' >"$R/stages/t/spin.lua"
repl_in ':s' ':stages' '6 * 7' ':quit' -- --from "$S" --to "$D" --repo lib/other --scripts "$R" --template spin --cpu 0.5
like "$OUT" '\[stage\] spin: failed in [0-9.]+ s: .*CPU limit' "the stage hit its CPU limit and says so"
like "$OUT" '> 1  spin +t/spin +failed' ":stages after it shows the failure"
like "$OUT" '
42
' "and the session goes on"
printf 'return { stages = { { "hog", "t/hog" } } }\n' >"$R/templates/hog.lua"
printf 'return { run = function(ctx) local t = {} for i = 1, 1e8 do t[i] = ("x"):rep(64) .. i end end }\n' >"$R/stages/t/hog.lua"
repl_in ':s' '6 * 7' ':quit' -- --from "$S" --to "$D" --repo lib/other --scripts "$R" --template hog --memory 16
like "$OUT" '\[stage\] hog: failed in [0-9.]+ s: .*memory limit' "a stage past its memory limit fails with the reason"
like "$OUT" '
42
' "and the session goes on after it too"

# --- 8. replay a task replica serve stored as failed ----------------------------------
# serve runs template dbg with push_prepare broken again; the execution
# fails there. With serve stopped and the file fixed, the REPL loads the
# execution from the database and replays the failed stage with its stored
# input.
awk '{print} /run = function\(ctx\)/ && !done {print "    local broken = nil .. \"on purpose\""; done=1}' \
    "$ROOT/scripts/stages/distribution/push_prepare.lua" >"$R/stages/dbg/push_prepare.lua"
serve_start replay --scripts "$R"
api POST /registries "$(registry_json src "$S" "\"username\": \"$REG_SRC_USER\", \"password\": \"$REG_SRC_PASS\"")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"rp\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"lib/app\"], \"dest_namespace\": \"replay\", \"template\": \"dbg\"}"
is "$STATUS" 201 "a policy with the broken template"
api POST "/policies/$(jget .id)/executions"
EID=$(jget .id)
wait_exec "$EID" Failed
is "$(jget .status)" Failed "serve's execution failed"
serve_stop
grep -v 'on purpose' "$R/stages/dbg/push_prepare.lua" >"$E2E_WORK/fixed.lua"
mv "$E2E_WORK/fixed.lua" "$R/stages/dbg/push_prepare.lua"
unset REPLICA_FROM_CREDS REPLICA_TO_CREDS
repl_in ':stages' ':replay' ':c' ':quit' -- --db "$SERVE_DB" --execution "$EID" --scripts "$R"
is "$RC" 0 "the replay session ends with 0"
like "$OUT" "loaded execution $EID, task [0-9]+ \(Failed\), policy rp; next: push_prepare" "the REPL loads the failed task and stands at its failed stage"
like "$OUT" '  3  pull_post +dbg/pull_post +succeeded' "the stored results of the earlier stages are shown"
like "$OUT" '> 4  push_prepare +dbg/push_prepare +failed' "and the failed one"
like "$OUT" 'running stages 1-3 again first' "the stages before it run again, since ctx.data is not stored"
like "$OUT" 'replaying stage push_prepare with its stored input' ":replay reruns the failed stage"
like "$OUT" 'stored: failed: stages/dbg/push_prepare.lua:[0-9]+: attempt to concatenate a nil value' "it prints the stored outcome"
like "$OUT" 'now: +succeeded' "and the new one, with the fixed file"
like "$OUT" '\[done\] every stage succeeded' ":continue finishes the task"
is "$(manifest_digest "$D" replay/lib/app v1 "$DA")" "$(manifest_digest "$S" lib/app v1 "$SA")" "the replayed task's target verifies"
unlike "$OUT" "$REG_SRC_PASS|$REG_DST_PASS" "the credentials opened from the database never print"

# --- setup errors: clear, and nothing runs ----------------------------------------------
repl_in ':quit' -- --db "$SERVE_DB" --execution "$EID" --task 999
is "$RC:$OUT" "1:replica: task 999 is not a task of execution $EID" "a --task outside the execution is refused"
repl_in ':quit' -- --db "$E2E_WORK/none.db" --execution 1
is "$RC:$OUT" "1:replica: --db: no database at $E2E_WORK/none.db" "a missing database is refused, not created"
ok "$([[ ! -e $E2E_WORK/none.db ]]; echo $?)" "and no file was made"
repl_in ':quit' -- --execution 1
is "$RC:$OUT" "1:replica: --db and --execution go together" "--execution alone is refused"
export REPLICA_FROM_CREDS=$SA REPLICA_TO_CREDS=$DA
repl_in ':quit' -- --from "$S" --to "$D" --repo 'lib/*'
is "$RC:$OUT" "1:replica: --repo names the one repository to debug (a name, not a glob)" "a --repo glob is refused"
repl_in ':quit' -- --from "$S" --to "$D" --repo lib/app --tag 'nope*'
is "$RC:$OUT" "1:replica: no tags of lib/app match the tag filters" "a tag filter matching nothing is refused"

done_testing
