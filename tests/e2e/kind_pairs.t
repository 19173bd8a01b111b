#!/usr/bin/env bash
# Cross pairs of registry kinds through the one template, each against its
# stand-in: ECR -> Artifact Registry and Harbor -> ECR (a multi-arch and a
# plain image, verified by digest on the registry behind the target), with
# both sides' kinds, logins and namespace creation at once.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries src
kind_images team pairs
standin_start ecr e "$E2E_WORK/e"
standin_start gar g "$E2E_WORK/g"
standin_start harbor h "$E2E_WORK/h"
side() { # SIDE (from|to) KIND: the flags of one side
    case $2 in
    ecr) echo "--$1 $STANDIN_E_URL --$1-kind ecr --$1-cred region=$STANDIN_E_REGION --$1-option api_url=$STANDIN_E_API_URL" ;;
    gar) echo "--$1 $STANDIN_G_URL --$1-kind gar --$1-option api_url=$STANDIN_G_API_URL --$1-option location=$STANDIN_G_LOCATION" ;;
    harbor) echo "--$1 $STANDIN_H_URL --$1-kind harbor --$1-cred username=replica" ;;
    esac
}
creds() { # SIDE KIND: the environment of one side's secrets
    local up=${1^^}
    case $2 in
    ecr) echo "REPLICA_${up}_CRED_ACCESS_KEY_ID=$STANDIN_E_ACCESS_KEY_ID REPLICA_${up}_CRED_SECRET_ACCESS_KEY=$STANDIN_E_SECRET_ACCESS_KEY" ;;
    gar) echo "REPLICA_${up}_CRED_KEY_JSON=$(jq -c . "$STANDIN_G_KEY_JSON" | base64 -w0)" ;;
    harbor) echo "REPLICA_${up}_CRED_PASSWORD=$STANDIN_H_PASS" ;;
    esac
}
# run_pair FROM TO ARGS...: replica run between two stand-ins, their secrets in the environment
run_pair() {
    local from=$1 to=$2 e
    shift 2
    local envs=()
    for e in $(creds from "$from") $(creds to "$to"); do
        if [[ $e == *_KEY_JSON=* ]]; then envs+=("${e%%=*}=$(base64 -d <<<"${e#*=}")"); else envs+=("$e"); fi
    done
    # shellcheck disable=SC2046
    set +e
    OUT=$(env "${envs[@]}" "$REPLICA" run $(side from "$from") $(side to "$to") "$@" 2>&1)
    RC=$?
    set -e
}

# seed Harbor and ECR from the plain registry
set +e
OUT=$(REPLICA_TO_CRED_PASSWORD=$STANDIN_H_PASS "$REPLICA" run --from "$S" $(side to harbor) --repo 'team/**' 2>&1); RC=$?
set -e
is "$RC" 0 "the source images are in Harbor"

run_pair harbor ecr --repo 'team/**'
is "$RC" 0 "harbor -> ecr succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$STANDIN_E_UPSTREAM_URL" team/app v1)" "$want_app" "a plain image verifies by digest in ECR"
is "$(manifest_digest "$STANDIN_E_UPSTREAM_URL" team/multi v1)" "$want_multi" "a multi-arch image too"

run_pair ecr gar --repo 'team/**' --dest-namespace "$STANDIN_G_PROJECT"
is "$RC" 0 "ecr -> gar succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$STANDIN_G_UPSTREAM_URL" "$STANDIN_G_PROJECT/team/app" v1)" "$want_app" "a plain image verifies by digest in Artifact Registry"
is "$(manifest_digest "$STANDIN_G_UPSTREAM_URL" "$STANDIN_G_PROJECT/team/multi" v1)" "$want_multi" "a multi-arch image too"
done_testing
