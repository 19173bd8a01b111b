#!/usr/bin/env bash
# `replica function` as a FaaS platform runs it: POST / carries one whole
# task with sealed credentials and answers its six stage results (200 also
# when the task failed), the bearer token is checked, bad invocations are
# 4xx, the probes say when it is busy or draining, SIGTERM lets the task in
# flight finish, a callback hears the stages in order, and no password ever
# shows up in its output or answers.
set -euo pipefail
source "$(dirname "$0")/../lib/function.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL DA=$REG_DST_USER:$REG_DST_PASS
seed "$S" fn/app v1,v2 oci 2 2048 first >/dev/null
seed "$S" fn/multi v1 oci-index 2 2048 first >/dev/null
SEALED=$(seal "$D" "$REG_DST_USER" "$REG_DST_PASS")
unlike "$SEALED" "$REG_DST_PASS" "sealed credentials do not hold the password in clear"

# task REPO TAGS_JSON [JQ_EDIT]: an invocation copying REPO from S to D.
task() {
    jq -nc --arg s "$S" --arg d "$D" --arg c "$SEALED" --arg r "$1" --argjson t "$2" \
        '{kind: "task", attempt: 3, template: "distribution", source: {url: $s},
          target: {url: $d, credentials: $c}, repository: $r, tags: $t}' | jq -c "${3:-.}"
}
stages() { jget '[.stages[] | .name + ":" + .status] | join(" ")'; }
SIX="pull_prepare:succeeded pull:succeeded pull_post:succeeded push_prepare:succeeded push:succeeded push_post:succeeded"

sink_start
fn_start fn --max-inflight 1 --drain-timeout 20 --max-body 65536
probe /_/health
is "$STATUS" 200 "the health probe answers without a token"

invoke "$(task fn/app '["v1","v2"]' ".callback_url = \"$SINK_URL\"")"
is "$STATUS" 200 "a whole-task invocation answers 200"
is "$(jget '.kind + " " + (.attempt|tostring) + " " + .status')" "task 3 succeeded" "with its kind, attempt and status"
is "$(stages)" "$SIX" "and the six stage results in template order"
is "$(manifest_digest "$D" fn/app v2 "$DA")" "$(manifest_digest "$S" fn/app v2)" "the image is on the Basic-auth target"
events=$(cut -f2 "$SINK_FILE" | jq -r 'select(.event != "bytes") | .event + ":" + .stage' | paste -sd' ')
is "$events" "stage_start:pull_prepare stage_end:pull_prepare stage_start:pull stage_end:pull stage_start:pull_post stage_end:pull_post stage_start:push_prepare stage_end:push_prepare stage_start:push stage_end:push stage_start:push_post stage_end:push_post" \
    "the callback heard every stage start and end, in order"
is "$(cut -f1 "$SINK_FILE" | sort -u)" "" "without a callback_token, with no Authorization: the function's own token goes nowhere"

: >"$SINK_FILE"
invoke "$(task fn/multi '["v1"]' ".callback_url = \"$SINK_URL\" | .callback_token = \"cb-token\"")"
is "$STATUS:$(stages)" "200:$SIX" "a multi-arch image copies too"
is "$(cut -f1 "$SINK_FILE" | sort -u)" "Bearer cb-token" "its callbacks carry the invocation's callback_token"
is "$(manifest_digest "$D" fn/multi v1 "$DA")" "$(manifest_digest "$S" fn/multi v1)" "its index digest is the source's"

invoke "$(task fn/app '["v1","v2"]')"
is "$STATUS:$(jget .status)" "200:succeeded" "a re-invocation succeeds"
is "$(jget '[.stages[] | select(.name == "push") | .output | .pushed, .blobs_copied] | join(",")')" "0,0" \
    "and copies nothing"

invoke "$(task fn/app '["v1"]' '.source = {url: "http://127.0.0.1:1", kind: "distribution"}')"
is "$STATUS:$(jget .status)" "200:failed" "a task whose source is dead answers 200 with status failed"
like "$(jget '[.stages[] | select(.status == "failed") | .name + ": " + .error] | first')" "^pull_prepare: " \
    "and the error in its stage"

invoke "$(task fn/app '["v1"]')" ""
is "$STATUS" 401 "no token: 401"
invoke "$(task fn/app '["v1"]')" wrong-token
is "$STATUS" 401 "a wrong token: 401"
invoke '{"kind": "task", '
is "$STATUS:$(jget 'has("error")')" "400:true" "bad JSON: 400 with an error"
head -c 100000 /dev/zero | tr '\0' ' ' >"$E2E_WORK/big.json"
is "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $FN_TOKEN" --data-binary @"$E2E_WORK/big.json" "$FN_URL/")" \
    413 "a body over --max-body: 413"
invoke "$(task fn/app '["v1"]' 'del(.tags)')"
is "$STATUS" 400 "missing tags: 400"
like "$(jget .error)" "tags" "naming the field"
invoke "$(task fn/app '["v1"]' 'del(.target)')"
is "$STATUS" 400 "a missing target: 400"
invoke "$(task 'Fn/App' '["v1"]')"
is "$STATUS" 400 "a repository name outside the OCI grammar: 400"
invoke "$(task fn/app '["v1"]' '.template = "nosuch"')"
is "$STATUS" 400 "an unknown template: 400"
invoke "$(task fn/app '["v1"]' ".target.credentials = {username: \"$REG_DST_USER\", password: \"x\"}")"
is "$STATUS" 400 "plain credentials are refused"

head -c 32 /dev/urandom >"$E2E_WORK/other.key"
chmod 600 "$E2E_WORK/other.key"
other=$(seal "$D" "$REG_DST_USER" "$REG_DST_PASS" "$E2E_WORK/other.key")
invoke "$(task fn/app '["v1"]' ".target.credentials = \"$other\" | .dest_repository = \"wrongkey/app\"")"
is "$STATUS" 422 "credentials sealed under another key: 4xx"
like "$(jget .error)" "could not be opened with this key" "saying so"
is "$(manifest_digest "$D" wrongkey/app v1 "$DA")" missing "and nothing is pushed"

# One slow task (16 MiB at 4 MiB/s) holds the only slot; SIGTERM drains it.
head -c $((16 << 20)) /dev/urandom >"$E2E_WORK/big.bin"
want=$(push_big_image "$S" fn/big v1 "$E2E_WORK/big.bin")
curl -s -m 60 -X POST -H "Authorization: Bearer $FN_TOKEN" --data-binary \
    "$(task fn/big '["v1"]' '.options.bandwidth = "4M"')" -o "$E2E_WORK/slow.json" -w '%{http_code}' \
    "$FN_URL/" >"$E2E_WORK/slow.status" &
slow=$!
wait_ready 429
is "$STATUS" 429 "ready answers 429 at --max-inflight"
invoke "$(task fn/app '["v1"]')"
is "$STATUS" 429 "and so does a POST"
kill -TERM "$FN_PID"
wait_ready 503
is "$STATUS" 503 "after SIGTERM ready answers 503"
invoke "$(task fn/app '["v1"]')"
is "$STATUS" 503 "and a new POST 503"
wait "$slow"
is "$(cat "$E2E_WORK/slow.status"):$(jq -r .status "$E2E_WORK/slow.json")" "200:succeeded" \
    "the task in flight completes with 200"
is "$(manifest_digest "$D" fn/big v1 "$DA")" "$want" "and its image is on the target"
fn_wait
is "$FN_RC" 0 "the function exits 0 once drained"

# A task still running at --drain-timeout is cancelled: 503, and the process ends.
fn_start fn2 --drain-timeout 1
curl -s -m 60 -X POST -H "Authorization: Bearer $FN_TOKEN" --data-binary \
    "$(task fn/big '["v1"]' '.options.bandwidth = "1M" | .dest_repository = "cut/big"')" -o "$E2E_WORK/cut.json" \
    -w '%{http_code}' "$FN_URL/" >"$E2E_WORK/cut.status" &
cut=$!
wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/cut/big/_uploads" 100000 "$cut" || true
fn_stop
wait "$cut" || true
is "$(cat "$E2E_WORK/cut.status"):$FN_RC" "503:0" "a task cut off at --drain-timeout answers 503, and the function exits 0"
like "$(jq -r .error "$E2E_WORK/cut.json")" "drain timeout" "saying why"
is "$(manifest_digest "$D" cut/big v1 "$DA")" missing "and its image is not pushed"

# A cancel names a call id: the task with it stops (409), no manifest lands;
# a call id that runs nowhere here answers 404.
fn_start fn3
curl -s -m 60 -X POST -H "Authorization: Bearer $FN_TOKEN" --data-binary \
    "$(task fn/big '["v1"]' '.options.bandwidth = "1M" | .dest_repository = "cancel/big" | .call_id = "c-1"')" \
    -o "$E2E_WORK/cancel.json" -w '%{http_code}' "$FN_URL/" >"$E2E_WORK/cancel.status" &
cancelled=$!
wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/cancel/big/_uploads" 100000 "$cancelled" || true
invoke '{"cancel": "c-2"}'
is "$STATUS:$(jget .error)" "404:no invocation with call id c-2 runs on this instance" "a cancel of an unknown call id: 404"
invoke '{"cancel": "c-1"}'
is "$STATUS:$(jget .cancelled)" "200:c-1" "a cancel of the running call: 200"
wait "$cancelled" || true
is "$(cat "$E2E_WORK/cancel.status")" 409 "the cancelled invocation answers 409 (no coordinator retries it)"
like "$(jq -r .error "$E2E_WORK/cancel.json")" "cancelled: cancelled by request" "saying why"
is "$(manifest_digest "$D" cancel/big v1 "$DA")" missing "and its image is not pushed"
invoke '{"cancel": 7}'
is "$STATUS" 400 "a cancel must name a call id"
fn_stop

leaks=$(grep -l -F -- "$REG_DST_PASS" "$E2E_WORK"/fn*.log "$E2E_WORK"/fn*.out "$E2E_WORK/answers" "$E2E_WORK/cut.json" "$E2E_WORK/slow.json" "$SINK_FILE" 2>/dev/null || true)
is "$leaks" "" "the registry password is in none of its output, answers or callbacks"
done_testing
