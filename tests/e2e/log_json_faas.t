#!/usr/bin/env bash
# --log-format json across a coordinator and its function: replica serve
# sends a faas policy's task to replica function (its URL as the gateway),
# and the function's lines for that invocation carry the coordinator's
# execution and task ids (replica_execution, replica_task), so one grep on
# a shared log finds an execution's lines on both; every line of both logs
# is a JSON object. An invocation with a bad id is refused.
set -euo pipefail
source "$(dirname "$0")/../lib/serve_faas.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL DA=
seed "$S" ljf/app v1,v2 oci 1 2048 >/dev/null

fn_start fn --log-format json
export REPLICA_FUNCTION_TOKEN=$FN_TOKEN
serve_start ljf --log-format json --gateway "$FN_URL" --seal-key-file "$FN_KEY"
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
policy faas '["ljf/app"]' '"executor": "faas"'
run_policy "$POL"
wait_exec "$EXEC" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "the execution on the function succeeds"
tasks "$EXEC"
T=$(tq '.[0].id')
is "$(tq '.[0].attempts')" 1 "its task ran in one attempt"

invoke '{"template": "distribution", "repository": "ljf/app", "tags": ["v1"], "source": {"url": "http://127.0.0.1:1"}, "target": {"url": "http://127.0.0.1:1"}, "execution": "7"}'
is "$STATUS" 400 "an invocation whose execution is not an integer is refused"
like "$(jget .error)" "execution must be a positive integer" "and says why"
serve_stop
fn_stop

# lines FILE: prints "ok N", or the first line that is not a JSON object.
lines() {
    python3 -c '
import json, sys
n = 0
for raw in open(sys.argv[1], "rb"):
    n += 1
    try:
        assert isinstance(json.loads(raw.decode("utf-8")), dict)
    except Exception as e:
        print(f"line {n}: {e!r}: {raw[:200]!r}"); sys.exit(0)
print(f"ok {n}")' "$1"
}
like "$(lines "$FN_LOG")" '^ok [1-9]' "every line of the function's log is a JSON object ($(lines "$FN_LOG"))"
like "$(lines "$SERVE_LOG")" '^ok [1-9]' "and every line of serve's ($(lines "$SERVE_LOG"))"

# ids FILE TASK: how many of FILE's lines about the repository carry the
# execution (and the task, when TASK is given), and how many there are.
ids() {
    python3 -c '
import json, sys
e, t = int(sys.argv[2]), sys.argv[3] and int(sys.argv[3])
ls = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
mine = [l for l in ls if "ljf/app" in l["message"]]
good = [l for l in mine if l.get("replica_execution") == e and (not t or l.get("replica_task") == t)]
print(len(good), len(mine))' "$1" "$EXEC" "$2"
}
read -r good all < <(ids "$FN_LOG" "$T")
ok $(( all > 0 && good == all ? 0 : 1 )) "the function's lines about the task carry execution $EXEC and task $T ($good of $all)"
# serve's dispatching task is not tagged with the task's id (its log, in
# the API, holds the stages' lines): its lines carry the execution.
read -r good all < <(ids "$SERVE_LOG" "")
ok $(( all > 0 && good == all ? 0 : 1 )) "serve's lines about it carry execution $EXEC ($good of $all)"

done_testing
