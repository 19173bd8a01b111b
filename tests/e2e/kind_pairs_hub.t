#!/usr/bin/env bash
# Cross pairs of registry kinds with Docker Hub and GHCR as the source,
# through the one template, each side against its stand-in: Docker Hub ->
# Harbor (the Hub API lists, `ubuntu` is library/ubuntu, Harbor's projects
# are created first, the pull quota counts one pull per manifest) and GHCR
# -> ECR (the packages API lists, ECR's repositories are created first): a
# multi-arch and a plain image verified by digest on the registry behind
# the target, both sides' logins at once.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries src
kind_images replica-org pairs-hub
standin_start dockerhub d "$E2E_WORK/d"
standin_start ghcr g "$E2E_WORK/g"
standin_start harbor h "$E2E_WORK/h"
standin_start ecr e "$E2E_WORK/e"
HUB_FROM=(--from "$STANDIN_D_URL" --from-kind dockerhub --from-cred username=replica --from-option "hub_url=$STANDIN_D_HUB_URL")
GHCR_FROM=(--from "$STANDIN_G_URL" --from-kind ghcr --from-cred username=replica --from-option "api_url=$STANDIN_G_API_URL")
HARBOR_TO=(--to "$STANDIN_H_URL" --to-kind harbor --to-cred username=replica)
ECR_TO=(--to "$STANDIN_E_URL" --to-kind ecr --to-cred "region=$STANDIN_E_REGION" --to-option "api_url=$STANDIN_E_API_URL")
# pair ENV... -- ARGS...: replica run with the sides' secrets in the environment only
pair() {
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    set +e
    OUT=$(env "${envs[@]}" "$REPLICA" run "$@" 2>&1)
    RC=$?
    set -e
}
project_exists() {
    curl -s -o /dev/null -w '%{http_code}' -I -u "replica:$STANDIN_H_PASS" "$STANDIN_H_URL/api/v2.0/projects?project_name=$1"
}

# the source images into Docker Hub and GHCR
pair "REPLICA_TO_CRED_PASSWORD=$STANDIN_D_PAT" -- --from "$S" --to "$STANDIN_D_URL" --to-kind dockerhub --to-cred username=replica --repo 'replica-org/**'
is "$RC" 0 "the source images are in Docker Hub"
pair "REPLICA_TO_CRED_PASSWORD=$STANDIN_G_PAT" -- --from "$S" --to "$STANDIN_G_URL" --to-kind ghcr --to-cred username=replica --repo 'replica-org/**'
is "$RC" 0 "and in GHCR"
standin_control d add_repo=library/ubuntu >/dev/null
want_ubuntu=$(seed "$STANDIN_D_UPSTREAM_URL" library/ubuntu 24.04 oci-index 1 2048 pairs-hub | sed -n 's|^library/ubuntu:24.04 ||p')

# --- Docker Hub -> Harbor ------------------------------------------------------------------------
standin_control d ratelimit_limit=100 ratelimit_window=21600 >/dev/null
pair "REPLICA_FROM_CRED_PASSWORD=$STANDIN_D_PAT" "REPLICA_TO_CRED_PASSWORD=$STANDIN_H_PASS" -- \
    "${HUB_FROM[@]}" "${HARBOR_TO[@]}" --repo 'replica-org/**' --repo ubuntu
is "$RC" 0 "dockerhub -> harbor succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$STANDIN_H_UPSTREAM_URL" replica-org/app v1)" "$want_app" "a plain image verifies by digest in Harbor"
is "$(manifest_digest "$STANDIN_H_UPSTREAM_URL" replica-org/multi v1)" "$want_multi" "a multi-arch image too"
is "$(manifest_digest "$STANDIN_H_UPSTREAM_URL" library/ubuntu 24.04)" "$want_ubuntu" "and the official ubuntu, as library/ubuntu"
is "$(project_exists replica-org):$(project_exists library)" "200:200" "Harbor's projects were created before the pushes"
is "$(curl -s "$STANDIN_D_URL/_standin/state" | jq .pulls)" 7 \
    "Docker Hub counted 7 pulls: one per manifest (1 + 3 + 3), none for the HEADs"
pair "REPLICA_FROM_CRED_PASSWORD=$STANDIN_D_PAT" "REPLICA_TO_CRED_PASSWORD=$STANDIN_H_PASS" -- \
    "${HUB_FROM[@]}" "${HARBOR_TO[@]}" --repo 'replica-org/**' --repo ubuntu
is "$RC:$(curl -s "$STANDIN_D_URL/_standin/state" | jq .pulls)" "0:7" "a re-run succeeds without one more pull"

# --- GHCR -> ECR -----------------------------------------------------------------------------------
pair "REPLICA_FROM_CRED_PASSWORD=$STANDIN_G_PAT" "REPLICA_TO_CRED_ACCESS_KEY_ID=$STANDIN_E_ACCESS_KEY_ID" \
     "REPLICA_TO_CRED_SECRET_ACCESS_KEY=$STANDIN_E_SECRET_ACCESS_KEY" -- \
    "${GHCR_FROM[@]}" "${ECR_TO[@]}" --repo 'replica-org/**'
is "$RC" 0 "ghcr -> ecr succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$STANDIN_E_UPSTREAM_URL" replica-org/app v1)" "$want_app" "a plain image verifies by digest in ECR"
is "$(manifest_digest "$STANDIN_E_UPSTREAM_URL" replica-org/multi v1)" "$want_multi" "a multi-arch image too"
is "$(curl -s "$STANDIN_E_URL/_standin/state" | jq -r '.repositories | join(",")')" "replica-org/app,replica-org/multi" \
    "ECR's repositories were created before the pushes"
done_testing
