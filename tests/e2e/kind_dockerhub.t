#!/usr/bin/env bash
# The dockerhub kind (scripts/kinds/dockerhub.lua) against the Docker Hub
# stand-in (tests/standins/dockerhub.py: registry-1.docker.io with the token
# flow at auth.docker.io, the Hub API at hub.docker.com, pull limits in a
# sliding window, a real Distribution behind): Distribution -> Docker Hub
# with a personal access token (a re-run copies nothing; the option private
# creates the repository first); Docker Hub -> Distribution lists through
# the Hub API (paging with `next`), reads `ubuntu` as library/ubuntu, and
# spares the pull quota (HEADs first, one GET per digest, nothing the
# target has); near the end of the quota it slows down, a quota used up is
# waited out (also one used up behind its back), and max_wait bounds the
# wait; a 429 with Retry-After is retried, on the registry and on the Hub
# API; a token expiring mid-upload is renewed; wrong credentials fail
# naming the kind and the step, with nothing pushed; a destination name
# that is not NAMESPACE/NAME fails its task in push_prepare before anything
# is pushed (the other tasks succeed; --flatten -1 --dest-namespace makes
# it fit), as does a namespace the account cannot write, naming it; no
# secret appears in any output or in the stand-in's record.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images replica-org hub-kind
standin_start dockerhub h "$E2E_WORK/h"
H=$STANDIN_H_URL HU=$STANDIN_H_UPSTREAM_URL HUB=$STANDIN_H_HUB_URL
export REPLICA_TO_CRED_PASSWORD=$STANDIN_H_PAT REPLICA_FROM_CRED_PASSWORD=$STANDIN_H_PAT
TO=(--to "$H" --to-kind dockerhub --to-cred username=replica --to-option "hub_url=$HUB")
FROM=(--from "$H" --from-kind dockerhub --from-cred username=replica --from-option "hub_url=$HUB")
ALL=""
run() { replica_run "$@"; ALL+=$OUT$'\n'; }
summary() { grep '^{' <<<"$OUT" | tail -n 1 | jq -r "$1"; }
state() { curl -s "$H/_standin/state" | jq -r "$1"; }
records() { curl -s "$H/_standin/requests"; }
clear_records() { curl -s -X DELETE "$H/_standin/requests" >/dev/null; }
# pulls: the manifest GETs the registry counted (answered 200) since the record was cleared
pulls() { records | jq '[.[] | select(.listener == "registry" and .method == "GET" and (.path | test("/manifests/")) and .status == 200)] | length'; }
refused() { records | jq '[.[] | select(.listener == "registry" and .status == 429)] | length'; }

# --- Distribution -> Docker Hub ----------------------------------------------------------
run --from "$S" "${TO[@]}" --repo 'replica-org/**' --json
is "$RC" 0 "distribution -> dockerhub succeeds with a personal access token"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$HU" replica-org/app v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$HU" replica-org/multi v1)" "$want_multi" "a multi-arch image too"
is "$(state '.repositories["replica-org/app"].is_private')" false "the push created the repository, with Docker Hub's default visibility"
run --from "$S" "${TO[@]}" --repo 'replica-org/**' --json
is "$RC:$(summary .summary.pushed):$(summary .summary.skipped)" "0:0:2" "a re-run copies nothing"

seed "$S" replica-org/secret v1 oci 1 1024 hub-kind >/dev/null
run --from "$S" "${TO[@]}" --to-option private=true --repo 'replica-org/secret' --json
is "$RC" 0 "with the option private=true"
is "$(state '.repositories["replica-org/secret"].is_private')" true "the repository was created private through the Hub API before the push"
is "$(summary '.tasks[0].stages[] | select(.name == "push_prepare") | .output.namespace.created')" true "as push_prepare reports"

# --- Docker Hub -> Distribution, listing through the Hub API ----------------------------
hub_token=$(curl -s -H 'Content-Type: application/json' \
    -d "{\"identifier\": \"replica\", \"secret\": \"$STANDIN_H_PAT\"}" "$HUB/v2/auth/token" | jq -r .access_token)
made=$(for i in $(seq -w 1 101); do
    curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $hub_token" -H 'Content-Type: application/json' \
        -d "{\"name\": \"empty$i\"}" "$HUB/v2/namespaces/replica-org/repositories"
done | sort | uniq -c | awk '{print $2 "x" $1}')
is "$made" "201x101" "101 more (empty) repositories in replica-org: the listing takes two pages of 100"
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/app' --repo 'replica-org/m*' --json
is "$RC" 0 "dockerhub -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(summary '[.tasks[].repository] | join(",")')" "replica-org/app,replica-org/multi" "the repositories were found through the Hub API"
is "$(records | jq -r '[.[] | select(.listener == "hub" and .method == "GET") | .path | capture("page=(?<p>[0-9]+)").p // "1"] | join(",")')" \
    "1,2" "its namespace listed in two pages, following next"
is "$(records | jq '[.[] | select(.path | test("_catalog"))] | length')" 0 "and /v2/_catalog was never asked"
is "$(manifest_digest "$D" replica-org/app v1):$(manifest_digest "$D" replica-org/multi v1)" "$want_app:$want_multi" \
    "and both images verify by digest"

# --- official images are library/ ----------------------------------------------------------
standin_control h add_repo=library/ubuntu >/dev/null
want_ubuntu=$(seed "$HU" library/ubuntu 22.04 oci 1 2048 hub-kind | sed -n 's|^library/ubuntu:22.04 ||p')
clear_records
REPLICA_FROM_CRED_PASSWORD= run --from "$H" --from-kind dockerhub --to "$D" --repo ubuntu --json
is "$RC" 0 "an anonymous pull of 'ubuntu' succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(summary '.tasks[0].repository')" library/ubuntu "the repository hook named it library/ubuntu"
is "$(manifest_digest "$D" library/ubuntu 22.04)" "$want_ubuntu" "and it verifies by digest"

# --- the pull quota: HEADs first, one GET per digest, nothing the target has ---------------
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/app' --repo 'replica-org/multi' --json
is "$RC:$(summary .summary.skipped)" "0:2" "a re-run finds every tag up to date"
is "$(pulls)" 0 "with HEADs only: not one pull counted"
m=$(curl -s -H 'Accept: application/vnd.oci.image.index.v1+json' "$HU/v2/replica-org/multi/manifests/v1")
curl -s -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' --data-binary "$m" \
    "$HU/v2/replica-org/multi/manifests/latest"
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/multi' --json
is "$RC:$(manifest_digest "$D" replica-org/multi latest)" "0:$want_multi" "a new tag at a digest the target has is copied"
is "$(pulls)" 0 "without a pull: the manifest was read from the target"
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/multi' --dest-namespace fresh --json
is "$RC:$(manifest_digest "$D" fresh/replica-org/multi v1):$(manifest_digest "$D" fresh/replica-org/multi latest)" \
    "0:$want_multi:$want_multi" "a multi-arch image with two tags copied afresh"
is "$(pulls)" 3 "counts 3 pulls: the index and its two images, once for both tags"

# --- near the end of the quota, and past it --------------------------------------------------
tags=$(seq -f 't%02g' 1 12 | paste -sd,)
seed "$HU" replica-org/many "$tags" oci 1 512 hub-kind >/dev/null
standin_control h ratelimit_limit=5 ratelimit_window=3 >/dev/null
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/many' --json
is "$RC:$(summary .summary.pushed)" "0:12" "12 pulls against a limit of 5 per 3 s succeed"
[[ $RC == 0 ]] || diag "$OUT"
is "$(refused)" 0 "without a single 429: the client waited before the quota ran out"
like "$OUT" "pull limit \(5 per 3 s\) is nearly used up .*slowing down" "it slowed down near the end"
like "$OUT" "pull limit \(5 per 3 s\) is used up: waiting for it to come back" "and waited for the window"
is "$(pulls)" 12 "each image was pulled once"
max_in_window=$(records | jq '[.[] | select(.listener == "registry" and .method == "GET" and (.path | test("/manifests/"))) | .time] as $t
    | [$t[] as $a | [$t[] | select(. >= $a and . < $a + 3)] | length] | max')
ok "$(( max_in_window <= 5 ? 0 : 1 ))" "never more than 5 GETs in any 3 s ($max_in_window at most)"

seed "$HU" replica-org/behind b1,b2 oci 1 512 hub-kind >/dev/null
standin_control h ratelimit_limit=2 ratelimit_window=2 ratelimit_headers=0 >/dev/null
standin_control h ratelimit_used=2 >/dev/null
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/behind' --json
is "$RC:$(summary .summary.pushed)" "0:2" "a quota used up behind the client's back (no headers until the 429) is waited out"
[[ $RC == 0 ]] || diag "$OUT"
ok "$(( $(refused) >= 1 ? 0 : 1 ))" "after the registry's 429 TOOMANYREQUESTS"
is "$(manifest_digest "$D" replica-org/behind b2)" "$(manifest_digest "$HU" replica-org/behind b2)" "and the images verify"

seed "$HU" replica-org/late l1 oci 1 512 hub-kind >/dev/null
standin_control h ratelimit_limit=1 ratelimit_window=3600 ratelimit_headers=1 >/dev/null
standin_control h ratelimit_used=1 >/dev/null
run "${FROM[@]}" --from-option max_wait=1 --to "$D" --repo 'replica-org/late'
is "$RC" 1 "a quota that stays used up past max_wait fails the run"
like "$OUT" "stage pull: dockerhub: the pull limit \(1 per 3600 s\) is used up, and it was not back within max_wait \(1 s\)" \
    "naming the kind, the step and the bound"
is "$(manifest_digest "$D" replica-org/late l1)" missing "and nothing was pushed"
run "${FROM[@]}" --from-option max_wait=soon --to "$D" --repo 'replica-org/late'
is "$RC" 1 "a max_wait that is no duration is refused"
like "$OUT" "--from: .*the option max_wait must be a duration \(90, 15m, 6h\), not \"soon\"" "before anything is sent, saying why"
standin_control h ratelimit_limit=0 >/dev/null

# --- 429 with Retry-After ----------------------------------------------------------------------
seed "$HU" replica-org/slow s1 oci 1 512 hub-kind >/dev/null
clear_records
standin_control h fail_next=2 status=429 retry_after=1 fail_listener=registry 'fail_path=/manifests/' >/dev/null
run "${FROM[@]}" --to "$D" --repo 'replica-org/slow'
is "$RC" 0 "two 429s with Retry-After on the registry are retried"
[[ $RC == 0 ]] || diag "$OUT"
is "$(records | jq '[.[] | select(.fault)] | length')" 2 "both were answered"
standin_control h fail_next=1 status=429 retry_after=1 fail_listener=hub >/dev/null
run "${FROM[@]}" --to "$D" --repo 'replica-org/[as]*' --json
is "$RC:$(summary '[.tasks[].repository] | join(",")')" "0:replica-org/app,replica-org/secret" \
    "a 429 with Retry-After on the Hub API is retried too"

# --- a token that expires mid-upload ---------------------------------------------------------------
big=$E2E_WORK/big.bin
head -c $((6 << 20)) /dev/urandom >"$big"
want_big=$(push_big_image "$S" replica-org/big v1 "$big")
clear_records
"$REPLICA" run --from "$S" "${TO[@]}" --repo 'replica-org/big' --bandwidth 2M >"$E2E_WORK/expiring.out" 2>&1 &
RUN=$!
mid=1
for _ in $(seq 1 500); do # until the blob's upload is under way
    if records | jq -e '[.[] | select((.method == "PUT" or .method == "PATCH") and (.path | test("/blobs/uploads/")) and .status == null)] | length > 0' >/dev/null; then
        mid=0; break
    fi
    kill -0 $RUN 2>/dev/null || break
    sleep 0.02
done
ok "$mid" "a run is in the middle of a blob upload"
standin_control h expire_tokens=1 >/dev/null
finish_run $RUN "$E2E_WORK/expiring.out"
ALL+=$OUT
is "$RC" 0 "its registry token expired mid-run, and the run still succeeds"
[[ $RC == 0 ]] || diag "$OUT"
tokens=$(records | jq '[.[] | select(.listener == "auth" and (.path | test("big%3Apull%2Cpush")))] | length')
ok "$(( tokens >= 2 ? 0 : 1 ))" "it fetched a new push token ($tokens fetched)"
is "$(manifest_digest "$HU" replica-org/big v1)" "$want_big" "and the image verifies"

# --- wrong credentials -------------------------------------------------------------------------------
seed "$S" replica-org/denied v1 oci 1 1024 hub-kind >/dev/null
REPLICA_TO_CRED_PASSWORD=wrong-token-0123456789 run --from "$S" "${TO[@]}" --repo 'replica-org/denied'
is "$RC" 1 "a wrong access token fails"
like "$OUT" "stage push_prepare: dockerhub: reaching the target: GET [^ ]*/token: http 401" \
    "at the first step that needs it, naming the kind and the step"
is "$(manifest_digest "$HU" replica-org/denied v1)" missing "and nothing was pushed"
REPLICA_FROM_CRED_PASSWORD=wrong-token-0123456789 run "${FROM[@]}" --to "$D" --repo 'replica-org/**'
is "$RC" 1 "a wrong access token on the source fails the listing"
like "$OUT" "listing the source catalog: dockerhub: logging in to the Hub API: POST [^ ]*/v2/auth/token: http 401" \
    "naming the kind and the step"

# --- destination names: exactly NAMESPACE/NAME, in a namespace the account can write ---------------
seed "$S" team/tools/app t1 oci 1 1024 hub-kind >/dev/null
seed "$S" flat t1 oci 1 1024 hub-kind >/dev/null
want_fits=$(seed "$S" replica-org/fits t1 oci 1 1024 hub-kind | sed -n 's|^replica-org/fits:t1 ||p')
clear_records
run --from "$S" "${TO[@]}" --repo 'team/tools/app' --repo flat --repo 'replica-org/fits' --json
is "$RC" 1 "a run with destination names Docker Hub cannot hold fails"
is "$(summary '[.tasks[] | "\(.repository):\(.status)"] | join(",")')" "flat:failed,replica-org/fits:succeeded,team/tools/app:failed" \
    "in those tasks only: the other one succeeds"
is "$(manifest_digest "$HU" replica-org/fits t1)" "$want_fits" "and its image verifies by digest"
is "$(summary '[.tasks[] | select(.status == "failed") | .stages[] | select(.status == "failed") | .name] | unique | join(",")')" push_prepare \
    "the others fail in push_prepare"
# why REPO: the error of the failed stage of REPO's task in the last JSON summary
why() { summary "[.tasks[] | select(.repository == \"$1\") | .stages[] | select(.status == \"failed\") | .error] | .[0]"; }
like "$(why team/tools/app)" "^dockerhub: naming the destination team/tools/app: a Docker Hub repository is NAMESPACE/NAME, with exactly one '/' \\(this has 2\\); choose --dest-namespace and --flatten so that names fit" \
    "naming the kind, the step and the rule, with the way out"
like "$(why flat)" "^dockerhub: naming the destination flat: a Docker Hub repository is NAMESPACE/NAME, with exactly one '/' \\(this has 0\\)" \
    "a name without '/' too"
is "$(records | jq '[.[] | select(.listener == "registry" and .method != "GET" and .method != "HEAD" and (.path | test("^/v2/(team/tools/app|flat)/")))] | length'):$(manifest_digest "$HU" team/tools/app t1)" \
    "0:missing" "before anything was pushed"
clear_records
run --from "$S" "${TO[@]}" --repo 'team/tools/app' --flatten -1 --dest-namespace replica-org --json
is "$RC:$(summary '.tasks[0].dest_repository')" "0:replica-org/app" "with --flatten -1 --dest-namespace replica-org, team/tools/app lands as replica-org/app"
is "$(manifest_digest "$HU" replica-org/app t1)" "$(manifest_digest "$S" team/tools/app t1)" "and verifies by digest"

run --from "$S" "${TO[@]}" --repo 'replica-org/fits' --flatten -1 --dest-namespace otherorg
is "$RC" 1 "a push into a namespace the account cannot write fails"
like "$OUT" "stage push_prepare: dockerhub: checking push access: POST [^ ]*/v2/otherorg/fits/blobs/uploads/: http 401 DENIED .*: the account replica cannot push into the namespace otherorg: it must be your Docker ID or an existing organisation you may push to \\(replica creates no organisation" \
    "naming the kind, the step and the namespace, and that organisations are not created"
is "$(manifest_digest "$HU" otherorg/fits t1)" missing "and nothing was pushed"

# --- no secret anywhere ---------------------------------------------------------------------------------
everything=$ALL$(records)$(cat "$E2E_WORK/h/standin.log")
if grep -q -F -e "$STANDIN_H_PAT" -e "$STANDIN_H_PASS" -e "$hub_token" <<<"$everything"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the access token, the password and the Hub token appear in no output and nowhere in the stand-in's record"
done_testing
