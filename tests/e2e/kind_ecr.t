#!/usr/bin/env bash
# The ecr kind (scripts/kinds/ecr.lua) against the ECR stand-in
# (tests/standins/ecr.py: SigV4 checked on every control-plane call, Basic
# AWS:<password> on the registry, a real Distribution behind): Distribution
# -> ECR creates the repository first (a re-run creates and copies nothing),
# with the password GetAuthorizationToken gave; a password that expires
# mid-run is fetched again; ECR -> Distribution lists through
# DescribeRepositories; throttling is retried; a repository that cannot be
# created fails push_prepare naming the kind and the step; a wrong secret
# fails clearly; chunked uploads keep to 5 MiB parts; no secret appears in
# any output.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images team ecr-kind
standin_start ecr e "$E2E_WORK/e"
E=$STANDIN_E_URL EU=$STANDIN_E_UPSTREAM_URL
export REPLICA_TO_CRED_ACCESS_KEY_ID=$STANDIN_E_ACCESS_KEY_ID REPLICA_TO_CRED_SECRET_ACCESS_KEY=$STANDIN_E_SECRET_ACCESS_KEY
TO=(--to "$E" --to-kind ecr --to-cred "region=$STANDIN_E_REGION" --to-option "api_url=$STANDIN_E_API_URL")
calls() { curl -s "$E/_standin/requests" | jq -r "[.[] | select(.listener == \"api\")] | length"; }
repos() { curl -s "$E/_standin/state" | jq -r '.repositories // .namespaces | keys | join(",")' 2>/dev/null || true; }

# --- Distribution -> ECR ---------------------------------------------------------------
replica_run --from "$S" "${TO[@]}" --repo 'team/**' --json
is "$RC" 0 "distribution -> ecr succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$EU" team/app v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$EU" team/multi v1)" "$want_multi" "a multi-arch image too"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '[.tasks[].stages[] | select(.name == "push_prepare") | .output.namespace.created] | map(tostring) | join(",")' <<<"$json")" \
    "true,true" "each repository was created before its push (an ECR repository is the whole path)"
replica_run --from "$S" "${TO[@]}" --repo 'team/**' --json
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$RC:$(jq -r '.summary.pushed' <<<"$json")" "0:0" "a re-run copies nothing"
is "$(jq -r '[.tasks[].stages[] | select(.name == "push_prepare") | .output.namespace.created // "n/a"] | map(tostring) | join(",")' <<<"$json")" \
    "n/a,n/a" "and creates nothing: every tag was up to date, so push_prepare had nothing to prepare"

# --- throttling is retried ---------------------------------------------------------------------
seed "$S" thr/app v1 oci 1 1024 ecr-kind >/dev/null
standin_control e fail_next=2 status=400 fail_listener=api >/dev/null
replica_run --from "$S" "${TO[@]}" --repo 'thr/app'
is "$RC" 0 "two ThrottlingExceptions are retried with backoff"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$EU" thr/app v1)" "$(manifest_digest "$S" thr/app v1)" "and the image lands"

# --- ECR -> Distribution, listing through DescribeRepositories ----------------------------------
REPLICA_TO_CRED_ACCESS_KEY_ID= REPLICA_TO_CRED_SECRET_ACCESS_KEY= \
REPLICA_FROM_CRED_ACCESS_KEY_ID=$STANDIN_E_ACCESS_KEY_ID REPLICA_FROM_CRED_SECRET_ACCESS_KEY=$STANDIN_E_SECRET_ACCESS_KEY \
    replica_run --from "$E" --from-kind ecr --from-cred "region=$STANDIN_E_REGION" --from-option "api_url=$STANDIN_E_API_URL" \
    --to "$D" --repo '**' --json
is "$RC" 0 "ecr -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$json")" "team/app,team/multi,thr/app" \
    "every repository was listed through DescribeRepositories"
is "$(manifest_digest "$D" team/multi v1)" "$want_multi" "and copied by digest"

# --- a repository that cannot be created ---------------------------------------------------------
standin_control e deny_create=1 >/dev/null
seed "$S" denied/app v1 oci 1 1024 ecr-kind >/dev/null
replica_run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "a repository ECR refuses to create fails the run"
like "$OUT" "stage push_prepare: ecr: CreateRepository: AccessDeniedException" "naming the kind, the step and AWS's error"
is "$(manifest_digest "$EU" denied/app v1)" missing "and nothing was pushed"
standin_control e deny_create=0 >/dev/null

# --- a wrong secret ---------------------------------------------------------------------------------
REPLICA_TO_CRED_SECRET_ACCESS_KEY=wrong-secret-0123456789 replica_run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "a wrong secret access key fails"
like "$OUT" "ecr: GetAuthorizationToken: InvalidSignatureException" "with AWS's error, naming the step"

# --- chunked uploads keep to 5 MiB parts -------------------------------------------------------------
big=$E2E_WORK/big.bin
head -c $((11 << 20)) /dev/urandom >"$big"
want_big=$(push_big_image "$S" big/app v1 "$big")
replica_run --from "$S" "${TO[@]}" --repo 'big/app' --chunk-size 1M
is "$RC" 0 "a chunked upload asked with 1 MiB chunks succeeds: ECR's parts are at least 5 MiB"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$EU" big/app v1)" "$want_big" "and the image verifies"

# --- a password that expires mid-run is fetched again ----------------------------------------
curl -s -X DELETE "$E/_standin/requests" >/dev/null
"$REPLICA" run --from "$S" "${TO[@]}" --repo 'big/app' --dest-namespace expiring --bandwidth 2M \
    >"$E2E_WORK/expiring.out" 2>&1 &
RUN=$!
mid=1
for _ in $(seq 1 500); do # until the blob's upload is under way
    if curl -s "$E/_standin/requests" | jq -e '[.[] | select(.method == "PUT" and (.path | test("/blobs/uploads/")) and .status == null)] | length > 0' >/dev/null; then
        mid=0; break
    fi
    kill -0 $RUN 2>/dev/null || break
    sleep 0.02
done
ok "$mid" "a run is in the middle of a blob upload"
standin_control e expire_tokens=1 >/dev/null
set +e; wait $RUN; RC=$?; set -e
is "$RC" 0 "its registry password expired mid-run, and the run still succeeds"
[[ $RC == 0 ]] || diag "$(cat "$E2E_WORK/expiring.out")"
passwords=$(curl -s "$E/_standin/requests" |
            jq '[.[] | select(.listener == "registry" and (.authorization // "" | startswith("Basic"))) | .authorization] | unique | length')
ok "$(( passwords >= 2 ? 0 : 1 ))" "it logged in again for a new password ($passwords passwords used)"
is "$(manifest_digest "$EU" expiring/big/app v1)" "$want_big" "and the image verifies"

all=$(curl -s "$E/_standin/requests")
if grep -q -e "$STANDIN_E_SECRET_ACCESS_KEY" <<<"$OUT$all"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the secret access key appears in no output"
done_testing
