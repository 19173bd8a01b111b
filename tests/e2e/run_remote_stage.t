#!/usr/bin/env bash
# A template stage {name, function, remote = URL} runs on `replica function`
# instances (behind nginx): the coordinator sends the one-stage invocation
# with the functions' token and the registries' credentials sealed, sends it
# again as the next attempt when the platform loses it (an instance killed
# with -9), and records the stage's output and attempts as that stage's
# result; the task's data (the pulled artifacts) travels with the stage and
# back. A wrong token fails the stage at once; no password reaches a log.
set -euo pipefail
source "$(dirname "$0")/../lib/serve_faas.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL DA=$REG_DST_USER:$REG_DST_PASS
for i in 1 2 3; do
    seed "$S" "fleet/app$i" v1,v2 oci 2 65536 "remote$i" >/dev/null
done
seed "$S" fleet/multi v1 oci-index 2 4096 remotemulti >/dev/null
head -c $((16 << 20)) /dev/urandom >"$E2E_WORK/big.bin"
push_big_image "$S" big/app v1 "$E2E_WORK/big.bin" >/dev/null

# The template, in a script root the coordinator and the functions share:
# the distribution stages, with push sent to the gateway.
ROOTDIR=$E2E_WORK/scripts
mkdir -p "$ROOTDIR/templates"
fn_start fn1 --scripts "$ROOTDIR"
FN1_PID=$FN_PID FN1_URL=$FN_URL FN1_LOG=$FN_LOG
fn_start fn2 --scripts "$ROOTDIR"
FN2_PID=$FN_PID FN2_URL=$FN_URL FN2_LOG=$FN_LOG
FN_PID="$FN1_PID $FN2_PID"
gateway_start "$E2E_WORK/gw" "$FN1_URL" "$FN2_URL"
cat >"$ROOTDIR/templates/remote-push.lua" <<EOF
return {
  description = "distribution, with push on the functions",
  stages = {
    { "pull_prepare", "distribution/pull_prepare" },
    { "pull", "distribution/pull" },
    { "pull_post", "distribution/pull_post" },
    { "push_prepare", "distribution/push_prepare" },
    { "push", "distribution/push", remote = "$GW_URL" },
    { "push_post", "distribution/verify" },
  },
}
EOF
export REPLICA_FUNCTION_TOKEN=$FN_TOKEN
result() { tail -n 1 <<<"$OUT" | jq -r "$1"; }
remote_run() {
    replica_run --from "$S" --to "$D" --to-creds "$DA" --scripts "$ROOTDIR" --template remote-push \
        --seal-key-file "$FN_KEY" --json "$@"
}

# 1. The fleet, with push on the functions.
remote_run --repo "fleet/*"
is "$RC:$(result '.summary.succeeded')/$(result '.summary.tasks')" "0:4/4" "the run succeeds"
is "$(same_tags "" fleet/app1 fleet/app2 fleet/app3 fleet/multi)" 0 "every tag is on the target with the source's digest"
is "$(result '[.tasks[] | [.stages[].name] | join(" ")] | unique | .[]')" \
    "pull_prepare pull pull_post push_prepare push push_post" "six stages in template order"
is "$(result '[.tasks[].stages[] | select(.name == "push") | "\(.status):\(.attempts)"] | unique | join(",")')" \
    "succeeded:1" "each push ran remotely, in one attempt"
is "$(result '[.tasks[].stages[] | select(.name == "push") | .output.pushed] | add')" 7 \
    "the push stages' outputs are their results: 7 tags pushed"
is "$(result '[.tasks[].stages[] | select(.name == "push_post") | .output.verified] | add')" 7 \
    "and push_post, here, verified the 7 (the data came back)"
served=$(cat "$FN1_LOG" "$FN2_LOG" | grep -c ': stage push succeeded' || true)
is "$served" 4 "the functions ran the four push stages"

# 2. An instance killed with -9 mid-push: the stage's next attempt finishes it.
"$REPLICA" run --from "$S" --to "$D" --to-creds "$DA" --scripts "$ROOTDIR" --template remote-push \
    --seal-key-file "$FN_KEY" --json --repo big/app --bandwidth 2M >"$E2E_WORK/big.out" 2>&1 &
RUN_PID=$!
victim=$(busy "$FN1_URL=$FN1_PID" "$FN2_URL=$FN2_PID") || victim=""
ok "$([[ -n $victim ]] && echo 0 || echo 1)" "an instance runs the push ($victim)"
kill -9 "$victim"
{ wait "$victim"; } 2>/dev/null || true
finish_run "$RUN_PID" "$E2E_WORK/big.out"
is "$RC" 0 "the run succeeds"
is "$(result '.tasks[0].stages[] | select(.name == "push") | "\(.status):\(.attempts)"')" "succeeded:2" \
    "the push stage took two attempts"
like "$OUT" "remote stage push at .*: http 502 \(attempt 1\); attempt 2 in" "the lost attempt is reported"
is "$(manifest_digest "$D" big/app v1 "$DA")" "$(manifest_digest "$S" big/app v1)" "the image verifies"

# 3. serve runs the same template, push on the functions.
serve_start remote --scripts "$ROOTDIR" --seal-key-file "$FN_KEY"
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"remote\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"fleet/app1\"], \"template\": \"remote-push\", \"dest_namespace\": \"served\"}"
api POST "/policies/$(jget .id)/executions"
EXEC=$(jget .id)
wait_exec "$EXEC" Succeeded Failed
is "$(jget .status)" Succeeded "a serve execution with a remote push succeeds"
api GET "/executions/$EXEC/tasks"
is "$(jget '.[0].stages[] | select(.name == "push") | "\(.status):\(.attempts):\(.output.pushed)"')" "succeeded:1:2" \
    "its push stage result is the function's output, in one attempt"
serve_stop

# 4. Refusals.
REPLICA_FUNCTION_TOKEN=wrong-token remote_run --repo fleet/app2 --dest-namespace wrong
is "$RC" 1 "a wrong token fails the run"
is "$(result '.tasks[0].stages[] | select(.name == "push") | "\(.status):\(.attempts)"')" "failed:1" \
    "the push stage fails in one attempt"
like "$(result '.tasks[0].stages[] | select(.name == "push") | .error')" "http 401: wrong bearer token" "with the 401"
REPLICA_FUNCTION_TOKEN= REPLICA_TO_CREDS=$DA replica_run --from "$S" --to "$D" --scripts "$ROOTDIR" \
    --template remote-push --seal-key-file "$FN_KEY" --repo fleet/app2
like "$RC:$OUT" "^1:.*remote stages: need the functions' token" "a seal key without a token is refused"

# 5. No password anywhere.
leaks=$(cat "$E2E_WORK"/fn*.log "$E2E_WORK"/fn*.out "$E2E_WORK"/gw/access.log "$E2E_WORK"/gw/error.log \
    "$E2E_WORK/big.out" "$E2E_WORK"/remote.log "$E2E_WORK"/remote.out | grep -c -- "$REG_DST_PASS" || true)
is "$leaks" 0 "the target's password is in no log"

done_testing
