#!/usr/bin/env bash
# --log-format json as a log shipper reads it: every line replica serve and
# replica run write on stderr is one JSON object with time (RFC 3339, ms,
# UTC), level and message; a line logged for an execution's task carries
# the execution's id (replica_execution) and the task's (replica_task), two
# executions keep theirs apart, and a message with control characters and
# invalid UTF-8 (text from a registry or a script) still parses, each bad
# byte as U+FFFD. The watchdog thread's report of a held loop is such a line
# too, naming the holder's ids. replica run's lines all carry one id of
# their run.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" lj/app v1,v2 oci 1 1024 >/dev/null
seed "$S" lj/other v1 oci 1 1024 >/dev/null

# A stage that logs what a hostile registry could send, then the copy.
W=$E2E_WORK/scripts
mkdir -p "$W/stages/x" "$W/templates"
cat >"$W/stages/x/noisy.lua" <<'EOF'
return {
  description = "logs control characters and invalid UTF-8",
  run = function(ctx)
    log.warn("noisy %s: \1\27[31m red \255\192 \"q\" \\ tab\there\nline2 caf\195\169", ctx.task.repository)
    if ctx.task.repository == "lj/other" then test_block(0.8) end -- REPLICA_TEST_HOOKS=1 only
    return {}
  end,
}
EOF
cat >"$W/templates/noisy.lua" <<'EOF'
return {
  stages = {
    { "noisy", "x/noisy" },
    { "pull_prepare", "distribution/pull_prepare" }, { "pull", "distribution/pull" },
    { "pull_post", "distribution/pull_post" }, { "push_prepare", "distribution/push_prepare" },
    { "push", "distribution/push" }, { "push_post", "distribution/verify" },
  },
}
EOF

REPLICA_TEST_HOOKS=1 serve_start lj --log-format json --scripts "$W" --watchdog 0.2
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"a\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"lj/app\"], \"template\": \"noisy\"}"
PA=$(jget .id)
api POST /policies "{\"name\": \"b\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"lj/other\"], \"template\": \"noisy\"}"
PB=$(jget .id)
api POST "/policies/$PA/executions"
EA=$(jget .id)
api POST "/policies/$PB/executions"
EB=$(jget .id)
wait_exec "$EA" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "execution $EA succeeds"
wait_exec "$EB" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "execution $EB succeeds"
# A draft run: its announcement is logged by the request, not the execution.
api POST "/policies/$PA/executions" "$(jq -n --rawfile t "$W/templates/noisy.lua" '{template_source: $t}')"
ED=$(jget .id)
wait_exec "$ED" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "a draft run $ED succeeds"
api GET "/executions/$EA/tasks"
TA=$(jget '.[0].id')
api GET "/executions/$EB/tasks"
TB=$(jget '.[0].id')
api GET "/executions/$ED/tasks"
TD=$(jget '.[0].id')
serve_stop # its SIGTERM line is in the log too

# check_lines FILE: "ok" when every line of FILE is a JSON object with the
# three fields, else the first line that is not, and why.
check_lines() {
    python3 - "$1" <<'PY'
import json, re, sys
n = 0
for raw in open(sys.argv[1], "rb"):
    n += 1
    try:
        o = json.loads(raw.decode("utf-8"))
        assert isinstance(o, dict), "not an object"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"]), "time " + o["time"]
        assert o["level"] in ("debug", "info", "warn", "error"), "level"
        assert isinstance(o["message"], str), "message"
    except Exception as e:
        print(f"line {n}: {e!r}: {raw[:200]!r}")
        sys.exit(0)
print(f"ok {n}")
PY
}
res=$(check_lines "$SERVE_LOG")
like "$res" '^ok [0-9]+$' "every line of serve's log is a JSON object with time, level and message ($res)"
ok $(( ${res#ok } >= 10 ? 0 : 1 )) "and there are lines to check (${res#ok })"

# facts: what the lines say about the two executions.
facts=$(python3 - "$SERVE_LOG" "$EA" "$TA" "$EB" "$TB" "$ED" "$TD" <<'PY'
import json, sys
path, ea, ta, eb, tb, ed, td = sys.argv[1], *map(int, sys.argv[2:])
lines = [json.loads(l) for l in open(path, encoding="utf-8")]
of = {ta: ea, tb: eb, td: ed}
tagged = [l for l in lines if "replica_task" in l]
print("tagged_a", sum(1 for l in tagged if l["replica_task"] == ta))
print("tagged_b", sum(1 for l in tagged if l["replica_task"] == tb))
print("wrong_exec", sum(1 for l in tagged if l.get("replica_execution") != of.get(l["replica_task"])))
print("exec_a", sum(1 for l in lines if l.get("replica_execution") == ea))
print("exec_b", sum(1 for l in lines if l.get("replica_execution") == eb))
draft = [l for l in lines if "a draft run of policy" in l["message"]]
print("draft", len(draft) == 1 and draft[0].get("replica_execution") == ed and draft[0]["task"].startswith("http POST"))
noisy = [l for l in lines if l["message"].startswith("noisy lj/app:") and l.get("replica_execution") == ea]
print("noisy_count", len(noisy))
if noisy:
    n = noisy[0]
    want = "noisy lj/app: \x01\x1b[31m red \ufffd\ufffd \"q\" \\ tab\there\nline2 caf\u00e9"
    print("noisy_exact", n["message"] == want)
    print("noisy_level", n["level"])
    print("noisy_ids", n.get("replica_execution") == ea and n.get("replica_task") == ta)
    print("noisy_task", n.get("task", ""))
print("signal", any("signal 15" in l["message"] for l in lines))
stall = [l for l in lines if "watchdog: the event loop has made no progress" in l["message"]]
print("stall", bool(stall) and stall[0]["level"] == "warn" and stall[0].get("replica_execution") == eb
      and stall[0].get("replica_task") == tb and stall[0].get("task") == "stage noisy")
PY
)
fact() { sed -n "s/^$1 //p" <<<"$facts"; }
ok $(( $(fact tagged_a) > 0 && $(fact tagged_b) > 0 ? 0 : 1 )) "lines of each execution's task carry replica_task ($(fact tagged_a), $(fact tagged_b))"
is "$(fact wrong_exec)" 0 "every line with a replica_task carries that task's execution as replica_execution"
ok $(( $(fact exec_a) > $(fact tagged_a) ? 0 : 1 )) "the execution's own lines (outside its task) carry its id too ($(fact exec_a))"
ok $(( $(fact exec_b) > 0 ? 0 : 1 )) "and so do the other execution's ($(fact exec_b))"
is "$(fact noisy_count)" 1 "the hostile message is one line"
is "$(fact draft)" True "a request's line about a draft run carries that execution's id"
is "$(fact noisy_exact)" True "it decodes to the message, controls kept and each invalid byte as U+FFFD"
is "$(fact noisy_level)" warn "at its level"
is "$(fact noisy_ids)" True "with its execution's and task's ids"
like "$(fact noisy_task)" 'stage' "and the engine task's name"
is "$(fact signal)" True "the SIGTERM line at shutdown is JSON too"
is "$(fact stall)" True "the watchdog's stall report is a warn line naming the held stage and its ids"
unlike "$(cat "$SERVE_LOG")" $'\e' "no raw escape character reaches the log"

# replica run: its lines carry the run's id; a failure's line is JSON too.
run_json() {
    set +e
    "$REPLICA" run --log-format json --log-level debug "$@" >"$E2E_WORK/run.out" 2>"$E2E_WORK/run.err"
    RC=$?
    set -e
}
run_ids() {
    python3 -c 'import json,sys; print(" ".join(sorted({json.loads(l).get("replica_execution","-") for l in open(sys.argv[1])})))' "$1"
}
run_json --from "$S" --to "$D" --repo lj/app --dest-namespace again
is "$RC" 0 "replica run --log-format json succeeds"
like "$(cat "$E2E_WORK/run.out")" '1/1 repositories succeeded' "its summary is on stdout as before"
res=$(check_lines "$E2E_WORK/run.err")
like "$res" '^ok [1-9][0-9]*$' "every line it logs is a JSON object ($res)"
id1=$(run_ids "$E2E_WORK/run.err")
like "$id1" '^run-[0-9a-f]{16}$' "and every line carries one run id as replica_execution ($id1)"
run_json --from "$S" --to "$D" --repo lj/app --dest-namespace again --json
id2=$(run_ids "$E2E_WORK/run.err")
like "$id2" '^run-[0-9a-f]{16}$' "a second run's lines carry one id too"
is "$(tail -n 1 "$E2E_WORK/run.out" | jq -r .run_id)" "$id2" "and its --json result names the same id (run_id)"
isnt=$([[ $id1 != "$id2" ]] && echo different || echo same)
is "$isnt" different "and it is another id"
run_json --from "http://127.0.0.1:1" --to "$D" --repo lj/app
ok $(( RC != 0 ? 0 : 1 )) "a run from a closed port fails (exit $RC)"
res=$(check_lines "$E2E_WORK/run.err")
like "$res" '^ok [1-9][0-9]*$' "its lines, the failure's included, are JSON ($res)"
like "$(python3 -c 'import json,sys; print([json.loads(l)["level"] for l in open(sys.argv[1])][-1])' "$E2E_WORK/run.err")" error \
    "the last says why, at level error"

set +e
bad=$("$REPLICA" run --log-format xml --from "$S" --to "$D" 2>&1)
rc=$?
set -e
is "$rc" 2 "--log-format xml is refused"
like "$bad" "bad value for option --log-format" "and it says so"

done_testing
