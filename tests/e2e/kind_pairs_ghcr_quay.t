#!/usr/bin/env bash
# The cross pair GHCR -> Quay through the one template, against both
# stand-ins: GHCR listed through its packages API with a PAT, Quay's
# organisation and repositories created with an OAuth token; a multi-arch
# and a plain image verified by digest behind Quay; a re-run copies
# nothing; no secret of either side in any output or stand-in record.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries src
kind_images replica-org ghcr-quay v1,v2
standin_start ghcr g "$E2E_WORK/g"
standin_start quay q "$E2E_WORK/q"
GHCR_FROM=(--from "$STANDIN_G_URL" --from-kind ghcr --from-cred username=replica --from-option "api_url=$STANDIN_G_API_URL")
QUAY_TO=(--to "$STANDIN_Q_URL" --to-kind quay)
run() { # ENV... -- ARGS...
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    set +e
    OUT=$(env "${envs[@]}" "$REPLICA" run "$@" 2>&1)
    RC=$?
    set -e
    ALL+=$OUT
}
ALL=""

run "REPLICA_TO_CRED_PASSWORD=$STANDIN_G_PAT" -- --from "$S" --to "$STANDIN_G_URL" --to-kind ghcr --to-cred username=replica \
    --repo 'replica-org/**'
is "$RC" 0 "the source images are in GHCR"
run "REPLICA_FROM_CRED_PASSWORD=$STANDIN_G_PAT" "REPLICA_TO_CRED_USERNAME=\$oauthtoken" "REPLICA_TO_CRED_PASSWORD=$STANDIN_Q_OAUTH_TOKEN" -- \
    "${GHCR_FROM[@]}" "${QUAY_TO[@]}" --repo 'replica-org/**' --json
is "$RC" 0 "ghcr -> quay succeeds"
[[ $RC == 0 ]] || diag "$OUT"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$json")" "replica-org/app,replica-org/multi" \
    "the repositories were found through GHCR's packages API"
is "$(manifest_digest "$STANDIN_Q_UPSTREAM_URL" replica-org/app v1)" "$want_app" "a plain image verifies by digest in Quay"
is "$(manifest_digest "$STANDIN_Q_UPSTREAM_URL" replica-org/multi v1)" "$want_multi" "a multi-arch image too"
is "$(curl -s -H "Authorization: Bearer $STANDIN_Q_OAUTH_TOKEN" "$STANDIN_Q_URL/api/v1/repository?namespace=replica-org" |
      jq -r '[.repositories[].name] | sort | join(",")')" "app,multi" "Quay's organisation holds both repositories"
run "REPLICA_FROM_CRED_PASSWORD=$STANDIN_G_PAT" "REPLICA_TO_CRED_USERNAME=\$oauthtoken" "REPLICA_TO_CRED_PASSWORD=$STANDIN_Q_OAUTH_TOKEN" -- \
    "${GHCR_FROM[@]}" "${QUAY_TO[@]}" --repo 'replica-org/**' --json
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$RC:$(jq -r '.summary.pushed' <<<"$json")" "0:0" "a re-run copies nothing"

all=$(curl -s "$STANDIN_G_URL/_standin/requests")$(curl -s "$STANDIN_Q_URL/_standin/requests")
leaked=no
for secret in "$STANDIN_G_PAT" "$STANDIN_Q_OAUTH_TOKEN"; do
    if grep -q -F -- "$secret" <<<"$ALL$all"; then leaked=yes; fi
done
is "$leaked" no "no secret of either side appears in any output or in the stand-ins' records"
done_testing
