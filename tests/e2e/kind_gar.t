#!/usr/bin/env bash
# The gar kind (scripts/kinds/gar.lua) against the Artifact Registry stand-in
# (tests/standins/gar.py: the JWT-bearer grant checked with the key's
# public half, Google's token flow on the registry, the v1 repositories API,
# a real Distribution behind): Distribution -> GAR signs a JWT with the
# service-account key, trades it for an access token, creates the
# repository first (a re-run creates and copies nothing) and verifies by
# digest; GAR -> Distribution reads it back; a repository that cannot be
# created and a key the token endpoint refuses fail clearly; the key appears
# in no output.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images team gar-kind
standin_start gar g "$E2E_WORK/g"
G=$STANDIN_G_URL GU=$STANDIN_G_UPSTREAM_URL P=$STANDIN_G_PROJECT
KEY=$(cat "$STANDIN_G_KEY_JSON")
export REPLICA_TO_CRED_KEY_JSON=$KEY
TO=(--to "$G" --to-kind gar --to-option "api_url=$STANDIN_G_API_URL" --to-option "location=$STANDIN_G_LOCATION")
ar_repos() { curl -s "$G/_standin/state" | jq -c '.' ; }

replica_run --from "$S" "${TO[@]}" --repo 'team/**' --dest-namespace "$P" --json
is "$RC" 0 "distribution -> gar succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$GU" "$P/team/app" v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$GU" "$P/team/multi" v1)" "$want_multi" "a multi-arch image too"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '[.tasks[].stages[] | select(.name == "push_prepare") | .output.namespace.created] | map(tostring) | sort | join(",")' <<<"$json")" \
    "false,true" "the repository team was created once, before the first push"
replica_run --from "$S" "${TO[@]}" --repo 'team/**' --dest-namespace "$P" --json
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$RC:$(jq -r '.summary.pushed' <<<"$json")" "0:0" "a re-run copies nothing"

REPLICA_TO_CRED_KEY_JSON= REPLICA_FROM_CRED_KEY_JSON=$KEY \
    replica_run --from "$G" --from-kind gar --from-option "api_url=$STANDIN_G_API_URL" --to "$D" \
    --repo "$P/team/app" --repo "$P/team/multi"
is "$RC" 0 "gar -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$D" "$P/team/multi" v1)" "$want_multi" "and copies by digest"

standin_control g deny_create=1 >/dev/null
seed "$S" denied/app v1 oci 1 1024 gar-kind >/dev/null
replica_run --from "$S" "${TO[@]}" --repo 'denied/app' --dest-namespace "$P"
is "$RC" 1 "a repository Artifact Registry refuses to create fails the run"
like "$OUT" "stage push_prepare: gar: creating repository $P/denied: http 403 PERMISSION_DENIED" \
    "naming the kind, the step and Google's error"
is "$(manifest_digest "$GU" "$P/denied/app" v1)" missing "and nothing was pushed"
standin_control g deny_create=0 >/dev/null

other_key=$(jq --arg k "$(cat "$ROOT/tests/fixtures/keys/google-sa.json" | jq -r .private_key)" '.private_key = $k' "$STANDIN_G_KEY_JSON")
REPLICA_TO_CRED_KEY_JSON=$other_key replica_run --from "$S" "${TO[@]}" --repo 'denied/app' --dest-namespace "$P"
is "$RC" 1 "a key whose signature the token endpoint refuses fails"
like "$OUT" "gar: token request to [^ ]*: http 400 invalid_grant: Invalid JWT Signature" "with Google's error"

key=$(jq -r .private_key "$STANDIN_G_KEY_JSON" | sed -n 2p)
if grep -q -F -- "$key" <<<"$OUT"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the private key appears in no output"
done_testing
