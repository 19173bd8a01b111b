#!/usr/bin/env bash
# More cross pairs of registry kinds through the one template, each against
# its stand-in: Harbor -> Quay and ACR -> GitLab (a multi-arch and a plain
# image, verified by digest on the registry behind the target; a re-run
# copies nothing), with both sides' kinds, logins and namespace handling at
# once: Harbor's project listing and token service, Quay's organisation and
# repository creation; ACR's Entra ID login, metadata_read and relative
# Link paging, GitLab's project check and /jwt/auth.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries src
kind_images team pairs-more v1,v2
standin_start harbor h "$E2E_WORK/h"
standin_start quay q "$E2E_WORK/q"
standin_start acr a "$E2E_WORK/a" --max-page 1
standin_start gitlab g "$E2E_WORK/g" --projects mirror/acr
side() { # SIDE (from|to) KIND: the flags of one side
    case $2 in
    harbor) echo "--$1 $STANDIN_H_URL --$1-kind harbor --$1-cred username=replica" ;;
    quay) echo "--$1 $STANDIN_Q_URL --$1-kind quay" ;;
    acr) echo "--$1 $STANDIN_A_URL --$1-kind acr --$1-cred client_id=$STANDIN_A_CLIENT_ID --$1-cred tenant=$STANDIN_A_TENANT --$1-option aad_url=$STANDIN_A_AAD_URL" ;;
    gitlab) echo "--$1 $STANDIN_G_URL --$1-kind gitlab --$1-cred username=replica" ;;
    esac
}
creds() { # SIDE KIND: the environment of one side's secrets
    local up=${1^^}
    case $2 in
    harbor) echo "REPLICA_${up}_CRED_PASSWORD=$STANDIN_H_PASS" ;;
    quay) echo "REPLICA_${up}_CRED_USERNAME=\$oauthtoken REPLICA_${up}_CRED_PASSWORD=$STANDIN_Q_OAUTH_TOKEN" ;;
    acr) echo "REPLICA_${up}_CRED_CLIENT_SECRET=$STANDIN_A_CLIENT_SECRET" ;;
    gitlab) echo "REPLICA_${up}_CRED_PASSWORD=$STANDIN_G_TOKEN" ;;
    esac
}
# run_pair FROM TO ARGS...: replica run between two kinds (FROM may be
# "plain", the source registry), their secrets in the environment
run_pair() {
    local from=$1 to=$2 e envs=() fromflags
    shift 2
    if [[ $from == plain ]]; then fromflags="--from $S"; else fromflags=$(side from "$from"); fi
    for e in $( [[ $from == plain ]] || creds from "$from") $(creds to "$to"); do envs+=("$e"); done
    set +e
    # shellcheck disable=SC2046,SC2086
    OUT=$(env "${envs[@]}" "$REPLICA" run $fromflags $(side to "$to") "$@" 2>&1)
    RC=$?
    set -e
    ALL+=$OUT
}
ALL=""
pushed() { grep -o '[0-9]* pushed' <<<"$OUT" | cut -d' ' -f1; }

# seed Harbor and ACR from the plain registry
run_pair plain harbor --repo 'team/**'
is "$RC" 0 "the source images are in Harbor"
run_pair plain acr --repo 'team/**'
is "$RC" 0 "and in ACR"

# --- Harbor -> Quay ------------------------------------------------------------------------------------
run_pair harbor quay --repo 'team/**'
is "$RC" 0 "harbor -> quay succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$STANDIN_Q_UPSTREAM_URL" team/app v1)" "$want_app" "a plain image verifies by digest in Quay"
is "$(manifest_digest "$STANDIN_Q_UPSTREAM_URL" team/multi v1)" "$want_multi" "a multi-arch image too"
is "$(tag_list "$STANDIN_Q_UPSTREAM_URL" team/app | paste -sd,)" "v1,v2" "with every tag"
is "$(curl -s -H "Authorization: Bearer $STANDIN_Q_OAUTH_TOKEN" "$STANDIN_Q_URL/api/v1/repository?namespace=team" |
      jq -r '[.repositories[].name] | sort | join(",")')" "app,multi" "Quay's organisation team holds both repositories"
run_pair harbor quay --repo 'team/**'
is "$RC:$(pushed)" "0:0" "a re-run copies nothing"

# --- ACR -> GitLab ------------------------------------------------------------------------------------
run_pair acr gitlab --repo 'team/**' --dest-namespace mirror/acr
is "$RC" 0 "acr -> gitlab succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$STANDIN_G_UPSTREAM_URL" mirror/acr/team/app v1)" "$want_app" "a plain image verifies by digest in GitLab"
is "$(manifest_digest "$STANDIN_G_UPSTREAM_URL" mirror/acr/team/multi v1)" "$want_multi" "a multi-arch image too"
is "$(tag_list "$STANDIN_G_UPSTREAM_URL" mirror/acr/team/app | paste -sd,)" "v1,v2" \
    "with every tag (listed from ACR one per page, with metadata_read)"
run_pair acr gitlab --repo 'team/**' --dest-namespace mirror/acr
is "$RC:$(pushed)" "0:0" "a re-run copies nothing"

all=$(curl -s "$STANDIN_H_URL/_standin/requests")$(curl -s "$STANDIN_Q_URL/_standin/requests")
all+=$(curl -s "$STANDIN_A_URL/_standin/requests")$(curl -s "$STANDIN_G_URL/_standin/requests")
leaked=no
for secret in "$STANDIN_H_PASS" "$STANDIN_Q_OAUTH_TOKEN" "$STANDIN_A_CLIENT_SECRET" "$STANDIN_G_TOKEN"; do
    if grep -q -F -- "$secret" <<<"$ALL$all"; then leaked=yes; fi
done
is "$leaked" no "no secret of either side appears in any output or in the stand-ins' records"
done_testing
