#!/usr/bin/env bash
# The acr kind (scripts/kinds/acr.lua) against the ACR stand-in
# (tests/standins/acr.py: Basic and /oauth2/token, the Entra ID exchange at
# /oauth2/exchange, metadata_read for tag lists, a relative Link on pages of
# at most 2 entries here, a real Distribution behind): Distribution -> ACR
# with a service principal through Entra ID (a re-run copies nothing), or as
# Basic; ACR -> Distribution with the admin user, a refresh token or an
# Entra ID access token, listing _catalog and tags over relative Links with
# metadata_read; without credentials, anonymous pull of named repositories
# (a glob fails: the catalog needs credentials; with anonymous pull off a
# clear refusal); a refresh token dying mid-run means a new login; a 429 is
# retried after its Retry-After; a push ACR refuses and wrong credentials
# fail naming the kind and the step with nothing pushed; no secret appears
# in any output or in the stand-in's record.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images team acr-kind v1,v2,v3
standin_start acr a "$E2E_WORK/a" --max-page 2
A=$STANDIN_A_URL AU=$STANDIN_A_UPSTREAM_URL AAD=$STANDIN_A_AAD_URL
U=$STANDIN_A_USER P=$STANDIN_A_PASS CID=$STANDIN_A_CLIENT_ID CSEC=$STANDIN_A_CLIENT_SECRET TID=$STANDIN_A_TENANT
RTK=$STANDIN_A_REFRESH_TOKEN
ALL=""
run() { replica_run "$@"; ALL+=$OUT; }
json_of() { grep '^{' <<<"$OUT" | tail -n 1; }
records() { curl -s "$A/_standin/requests"; }
clear_records() { curl -s -X DELETE "$A/_standin/requests" >/dev/null; }
count() { records | jq "[.[] | select($1)] | length"; }
# a service principal through Entra ID (the secret in the environment)
export REPLICA_TO_CRED_CLIENT_SECRET=$CSEC
TO=(--to "$A" --to-kind acr --to-cred "client_id=$CID" --to-cred "tenant=$TID" --to-option "aad_url=$AAD")

# --- Distribution -> ACR, a service principal through Entra ID -------------------------------------
run --from "$S" "${TO[@]}" --repo 'team/**' --json
is "$RC" 0 "distribution -> acr succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$AU" team/app v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$AU" team/multi v1)" "$want_multi" "a multi-arch image too"
is "$(tag_list "$AU" team/app | paste -sd,)" "v1,v2,v3" "with every tag"
is "$(count '.listener == "aad" and .method == "POST"'):$(count '.path == "/oauth2/exchange" and .status == 200')" "1:1" \
    "the service principal got one Entra ID token, exchanged once for an ACR refresh token"
is "$(count '(.path | startswith("/v2/")) and (.authorization // "" | startswith("Basic"))')" 0 \
    "and the registry saw only ACR access tokens"
clear_records
run --from "$S" "${TO[@]}" --repo 'team/**' --json
is "$RC:$(jq -r '.summary.pushed' <<<"$(json_of)")" "0:0" "a re-run copies nothing"
is "$(count '.method != "GET" and .method != "HEAD" and (.path | startswith("/v2/"))')" 0 "and changes nothing"

# the service principal as Basic (no tenant), and the admin user
seed "$S" basic/sp v1 oci 1 1024 acr-kind >/dev/null
run --from "$S" --to "$A" --to-kind acr --to-cred "client_id=$CID" --repo 'basic/sp'
is "$RC" 0 "a service principal without a tenant goes as Basic"
REPLICA_TO_CRED_CLIENT_SECRET= REPLICA_TO_CRED_USERNAME=$U REPLICA_TO_CRED_PASSWORD=$P \
    run --from "$S" --to "$A" --to-kind acr --repo 'basic/sp' --dest-namespace admin
is "$RC" 0 "so does the admin user"
is "$(manifest_digest "$AU" basic/sp v1):$(manifest_digest "$AU" admin/basic/sp v1)" \
    "$(manifest_digest "$S" basic/sp v1):$(manifest_digest "$S" basic/sp v1)" "both verify by digest"

# --- ACR -> Distribution ---------------------------------------------------------------------------------
export REPLICA_TO_CRED_CLIENT_SECRET=
clear_records
REPLICA_FROM_CRED_USERNAME=$U REPLICA_FROM_CRED_PASSWORD=$P \
    run --from "$A" --from-kind acr --to "$D" --repo '**' --json
is "$RC" 0 "acr -> distribution succeeds (the admin user)"
[[ $RC == 0 ]] || diag "$OUT"
is "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$(json_of)")" "admin/basic/sp,basic/sp,team/app,team/multi" \
    "every repository was listed"
is "$(records | jq -r '[.[] | select(.path | startswith("/v2/_catalog")) | .path] | join(" ")')" \
    "/v2/_catalog?n=1000 /v2/_catalog?last=basic%2Fsp&n=2&orderby=" \
    "through _catalog, two per page, following ACR's relative Link"
is "$(records | jq -r '[.[] | select(.path | startswith("/v2/team/app/tags/list")) | .path] | join(" ")')" \
    "/v2/team/app/tags/list?n=1000 /v2/team/app/tags/list?last=v2&n=2&orderby=" "so were the tags"
is "$(count '(.path | startswith("/v2/")) and .status == 401 and (.path | test("tags/list"))')" 0 \
    "with a token for metadata_read, which ACR needs to list tags (no tag list was refused)"
is "$(count '(.path | startswith("/oauth2/token")) and (.path | test("metadata_read"))')" 4 "one per repository"
is "$(tag_list "$D" team/app | paste -sd,):$(manifest_digest "$D" team/multi v1)" "v1,v2,v3:$want_multi" \
    "every tag copied, by digest"

REPLICA_FROM_CRED_REFRESH_TOKEN=$RTK run --from "$A" --from-kind acr --to "$D" --repo 'team/multi' --dest-namespace refresh
is "$RC:$(manifest_digest "$D" refresh/team/multi v1)" "0:$want_multi" "a refresh token as the credential"
[[ $RC == 0 ]] || diag "$OUT"
aadt=$(curl -s "$AAD/$TID/oauth2/v2.0/token" -d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" \
       -d scope=https://containerregistry.azure.net/.default | jq -r .access_token)
clear_records
REPLICA_FROM_CRED_AAD_ACCESS_TOKEN=$aadt run --from "$A" --from-kind acr --to "$D" --repo 'team/app' --dest-namespace aad
is "$RC:$(manifest_digest "$D" aad/team/app v1)" "0:$want_app" "an Entra ID access token as the credential"
[[ $RC == 0 ]] || diag "$OUT"
is "$(records | jq -r '[.[] | select(.path == "/oauth2/exchange") | .status] | join(",")')" 200 \
    "exchanged for a refresh token (its tenant read from the token)"

# --- anonymous pull: a source without credentials ---------------------------------------------------
standin_control a anonymous_pull=1 >/dev/null
clear_records
run --from "$A" --from-kind acr --to "$D" --repo team/app --repo team/multi --dest-namespace anon --json
is "$RC" 0 "with anonymous pull enabled, a source without credentials is pulled"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$D" anon/team/app v1):$(manifest_digest "$D" anon/team/multi v1)" "$want_app:$want_multi" \
    "a plain and a multi-arch image verify by digest"
is "$(tag_list "$D" anon/team/app | paste -sd,)" "v1,v2,v3" "with every tag (the anonymous token lists tags too)"
tokens=$(count '(.path | startswith("/oauth2/token")) and .status == 200')
ok "$(( tokens > 0 ? 0 : 1 ))" "through anonymous tokens from /oauth2/token ($tokens granted)"
is "$(count '(.path | startswith("/oauth2/")) and .authorization != null'):$(count '.authorization // "" | startswith("Basic")')" "0:0" \
    "asked for with no Authorization: no credentials went anywhere"
clear_records
run --from "$A" --from-kind acr --to "$D" --repo 'team/**' --dest-namespace anon
is "$RC" 1 "a repository glob without credentials fails"
like "$OUT" "listing the source catalog: acr: listing repositories: the registry's catalog \\(/v2/_catalog\\) needs credentials, and none were given .*name each repository exactly" \
    "naming the kind and the step: the catalog needs credentials"
is "$(count '.path | startswith("/v2/_catalog")')" 0 "before asking for it"
standin_control a anonymous_pull=0 >/dev/null
run --from "$A" --from-kind acr --to "$D" --repo team/app --dest-namespace off
is "$RC" 1 "with anonymous pull off, a source without credentials fails"
like "$OUT" "acr: anonymous pull \\(no credentials given\\): GET $A/oauth2/token\\?service=[^ ]*: http 401 UNAUTHORIZED: authentication required, visit https://aka.ms/acr/authorization for more information.: the registry does not allow anonymous pull" \
    "naming the kind and the step, with ACR's refusal"
is "$(manifest_digest "$D" off/team/app v1)" missing "and nothing was copied"

# --- a refresh token that dies mid-run means a new login ------------------------------------------------
export REPLICA_TO_CRED_CLIENT_SECRET=$CSEC
big=$E2E_WORK/big.bin
head -c $((6 << 20)) /dev/urandom >"$big"
want_big=$(push_big_image "$S" big/app v1 "$big")
clear_records
"$REPLICA" run --from "$S" "${TO[@]}" --repo 'big/app' --bandwidth 2M --chunk-size 1M >"$E2E_WORK/expiring.out" 2>&1 &
RUN=$!
mid=1
for _ in $(seq 1 500); do # until the blob's chunked upload is under way
    if records | jq -e '[.[] | select(.method == "PATCH" and .status == 202)] | length > 0' >/dev/null; then
        mid=0; break
    fi
    kill -0 $RUN 2>/dev/null || break
    sleep 0.02
done
ok "$mid" "a run is in the middle of a chunked blob upload"
t_exp=$(standin_control a expire_tokens=1 >/dev/null; date +%s.%N)
set +e; wait $RUN; RC=$?; set -e
ALL+=$(cat "$E2E_WORK/expiring.out")
is "$RC" 0 "every token (Entra ID, refresh and access) expired mid-run, and the run still succeeds"
[[ $RC == 0 ]] || diag "$(cat "$E2E_WORK/expiring.out")"
again=$(records | jq --argjson t "$t_exp" '[.[] | select(.time > $t and .path == "/oauth2/exchange" and .status == 200)] | length')
is "$again" 1 "it logged in again: a new Entra ID token exchanged for a new refresh token"
is "$(manifest_digest "$AU" big/app v1)" "$want_big" "and the image verifies"

# --- a 429 is retried after its Retry-After -----------------------------------------------------------------
seed "$S" thr/app v1 oci 1 1024 acr-kind >/dev/null
clear_records
standin_control a fail_next=1 status=429 retry_after=1 fail_path='^/oauth2/exchange' >/dev/null
run --from "$S" "${TO[@]}" --repo 'thr/app'
is "$RC" 0 "a 429 on the exchange is retried"
[[ $RC == 0 ]] || diag "$OUT"
waited=$(retry_waited a)
ok "$(jq -n --argjson w "$waited" 'if $w >= 0.95 then 0 else 1 end')" "after its Retry-After of 1 s (waited $waited s)"
seed "$S" thr/reg v1 oci 1 1024 acr-kind >/dev/null
standin_control a fail_next=1 status=429 retry_after=1 fail_path='/manifests/' >/dev/null
run --from "$S" "${TO[@]}" --repo 'thr/reg'
is "$RC:$(count '.fault')" 0:2 "so is a 429 from the registry"
is "$(manifest_digest "$AU" thr/app v1):$(manifest_digest "$AU" thr/reg v1)" \
    "$(manifest_digest "$S" thr/app v1):$(manifest_digest "$S" thr/reg v1)" "and both images land"

# --- a push ACR refuses --------------------------------------------------------------------------------------
standin_control a deny_create=1 >/dev/null
seed "$S" denied/app v1 oci 1 1024 acr-kind >/dev/null
clear_records
run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "a push that would create a repository ACR refuses fails the run"
like "$OUT" "stage push_prepare: acr: checking push access: POST [^ ]*/v2/denied/app/blobs/uploads/: http 403 DENIED" \
    "naming the kind, the step and ACR's answer"
is "$(manifest_digest "$AU" denied/app v1):$(count '(.path | test("^/v2/denied/")) and .method == "PUT"')" "missing:0" \
    "and nothing was pushed"
standin_control a deny_create=0 >/dev/null

# --- wrong credentials -----------------------------------------------------------------------------------------
REPLICA_TO_CRED_CLIENT_SECRET=wrong-secret-0123456789 run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "a wrong service principal secret fails"
like "$OUT" "stage push_prepare: acr: reaching the target: GET [^ ]*/oauth2/token: acr: Entra ID login of $CID: POST $AAD/$TID/oauth2/v2.0/token: http 401 invalid_client: AADSTS7000215: Invalid client secret provided." \
    "at the Entra ID login, naming the kind and the step"
REPLICA_TO_CRED_CLIENT_SECRET= REPLICA_TO_CRED_USERNAME=$U REPLICA_TO_CRED_PASSWORD=wrong-password-0123 \
    run --from "$S" --to "$A" --to-kind acr --repo 'denied/app'
is "$RC" 1 "a wrong admin password fails"
like "$OUT" "stage push_prepare: acr: reaching the target: GET [^ ]*/oauth2/token: http 401 for scope '' \\(check the username and password\\)" \
    "at the token service"
is "$(manifest_digest "$AU" denied/app v1)" missing "and nothing was pushed"

all=$(records)$(cat "$E2E_WORK/a/standin.log")
leaked=no
for secret in "$P" "$CSEC" "$RTK" "$aadt"; do
    if grep -q -F -- "$secret" <<<"$ALL$all"; then leaked=yes; fi
done
is "$leaked" no "no password, secret, refresh token or Entra ID token appears in any output or in the stand-in's record"
done_testing
