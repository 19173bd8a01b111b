#!/usr/bin/env bash
# The quay kind (scripts/kinds/quay.lua) against the Quay stand-in
# (tests/standins/quay.py: /v2/auth tokens, repositories created at token
# time only in existing namespaces, the /api/v1 organization and repository
# API, next_page paging, schema-1 parsing of a manifest PUT without a media
# type, nginx's HTML 429, a real Distribution behind): Distribution -> Quay
# with $oauthtoken creates the organisation and the repositories first, with
# the visibility asked (a re-run creates and copies nothing); a robot account
# pushes into its own namespace and is stopped before any push elsewhere;
# Quay -> Distribution lists through the API (with an OAuth token) or
# /v2/_catalog (a robot), both paged, and anonymously pulls a public
# repository; a 429 is retried after its Retry-After; a refused creation,
# wrong credentials and a wrong OAuth token fail naming the kind and the
# step with nothing pushed; no secret appears in any output or in the
# stand-in's record.
# shellcheck disable=SC2016  # '$oauthtoken' is Quay's own username, not an expansion
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images team quay-kind
RT=$(head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
standin_start quay q "$E2E_WORK/q" --page-size 2 --robot "robots+mirror:$RT"
Q=$STANDIN_Q_URL QU=$STANDIN_Q_UPSTREAM_URL OT=$STANDIN_Q_OAUTH_TOKEN P=$STANDIN_Q_PASS
API=(-H "Authorization: Bearer $OT")
ALL=""
run() { replica_run "$@"; ALL+=$OUT; }
json_of() { grep '^{' <<<"$OUT" | tail -n 1; }
records() { curl -s "$Q/_standin/requests"; }
clear_records() { curl -s -X DELETE "$Q/_standin/requests" >/dev/null; }
api_get() { curl -s "${API[@]}" "$Q/api/v1/$1"; }
# as $oauthtoken with the OAuth token as the password (also the API's token)
export REPLICA_TO_CRED_USERNAME='$oauthtoken' REPLICA_TO_CRED_PASSWORD=$OT
TO=(--to "$Q" --to-kind quay)

# --- Distribution -> Quay, as $oauthtoken -------------------------------------------------
run --from "$S" "${TO[@]}" --to-option visibility=public --repo 'team/**' --json
is "$RC" 0 "distribution -> quay succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$QU" team/app v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$QU" team/multi v1)" "$want_multi" "a multi-arch image too"
is "$(api_get organization/team | jq -r .name)" team "the organisation team was created"
is "$(api_get repository/team/app | jq -r .is_public),$(api_get repository/team/multi | jq -r .is_public)" "true,true" \
    "and both repositories, public as the option asked"
json=$(json_of)
is "$(jq -r '[.tasks[].stages[] | select(.name == "push_prepare") | .output.namespace.created] | map(tostring) | join(",")' <<<"$json")" \
    "true,true" "each repository was created through the API before its push"
is "$(records | jq '[.[] | select(.method == "POST" and .path == "/api/v1/organization/" and .status == 201)] | length')" 1 \
    "the organisation once (the second repository found it there)"
puts=$(records | jq -c '[.[] | select(.method == "PUT" and (.path | test("/manifests/")))] | [length, (map(select(.status == 201)) | length)]')
is "$(jq -r '.[0] > 0 and .[0] == .[1]' <<<"$puts")" true \
    "every manifest PUT was accepted ($puts): each carried its media type, which Quay needs"
body=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$QU/v2/team/app/manifests/v1")
tok=$(curl -s -u "\$oauthtoken:$OT" "$Q/v2/auth?service=${Q#http://}&scope=repository:team/app:pull,push" | jq -r .token)
is "$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    --data-binary "$body" "$Q/v2/team/app/manifests/schema1")" 400 "(while the same manifest as application/json is refused as schema 1)"

clear_records
run --from "$S" "${TO[@]}" --repo 'team/**' --json
is "$RC:$(jq -r '.summary.pushed' <<<"$(json_of)")" "0:0" "a re-run copies nothing"
is "$(records | jq '[.[] | select(.method == "POST" or .method == "PUT")] | length')" 0 "and creates nothing"

# a new repository in an existing organisation, private by default
seed "$S" team/third v1 oci 1 1024 quay-kind >/dev/null
run --from "$S" "${TO[@]}" --repo 'team/third' --json
is "$RC" 0 "a repository in an existing organisation"
is "$(api_get repository/team/third | jq -r .is_public)" false "is created private by default"
is "$(records | jq '[.[] | select(.path == "/api/v1/organization/" and .method == "POST")] | length')" 0 \
    "and the organisation is not created again"

# --- a robot account -----------------------------------------------------------------------------
REPLICA_TO_CRED_USERNAME='robots+mirror' REPLICA_TO_CRED_PASSWORD=$RT \
    run --from "$S" "${TO[@]}" --repo 'team/**' --dest-namespace robots --flatten -1
is "$RC" 0 "a robot account pushes into its own namespace"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$QU" robots/app v1):$(manifest_digest "$QU" robots/multi v1)" "$want_app:$want_multi" \
    "the images verify by digest (Quay made the repositories at token time)"
clear_records
REPLICA_TO_CRED_USERNAME='robots+mirror' REPLICA_TO_CRED_PASSWORD=$RT \
    run --from "$S" "${TO[@]}" --repo 'team/app' --dest-namespace elsewhere
is "$RC" 1 "a robot account cannot push into another namespace"
like "$OUT" "stage push_prepare: quay: the robot account robots\\+mirror can push only into its namespace robots, not elsewhere" \
    "said before any push, naming the kind"
is "$(records | jq '[.[] | select((.path | test("^/v2/elsewhere/")) and .method != "HEAD" and .method != "GET")] | length')" 0 \
    "no upload was tried there"

# --- Quay -> Distribution ------------------------------------------------------------------------
curl -s -o /dev/null "${API[@]}" -H 'Content-Type: application/json' \
    -d '{"namespace":"team","repository":"empty","visibility":"private","description":""}' "$Q/api/v1/repository"
clear_records
REPLICA_TO_CRED_USERNAME= REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CRED_USERNAME='$oauthtoken' REPLICA_FROM_CRED_PASSWORD=$OT \
    run --from "$Q" --from-kind quay --to "$D" --repo 'team/**' --json
is "$RC" 0 "quay -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$(json_of)")" "team/app,team/multi,team/third" \
    "every repository of the namespace was listed"
is "$(records | jq -r '[.[] | select(.path | startswith("/api/v1/repository?")) | (.path | test("next_page="))] | map(tostring) | join(",")')" \
    "false,true" "through the API, following next_page (2 per page)"
is "$(manifest_digest "$D" team/app v1):$(manifest_digest "$D" team/multi v1)" "$want_app:$want_multi" "and copied by digest"

# a robot lists through /v2/_catalog, paged by next_page past 100 repositories
for i in $(seq -w 0 100); do
    curl -s -o /dev/null "${API[@]}" -H 'Content-Type: application/json' \
        -d "{\"namespace\":\"robots\",\"repository\":\"a$i\",\"visibility\":\"private\",\"description\":\"\"}" "$Q/api/v1/repository"
done
clear_records
REPLICA_TO_CRED_USERNAME= REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CRED_USERNAME='robots+mirror' REPLICA_FROM_CRED_PASSWORD=$RT \
    run --from "$Q" --from-kind quay --to "$D" --repo 'robots/**' --dest-namespace from-robot --json
is "$RC" 0 "quay -> distribution with a robot account succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$(json_of)")" "robots/app,robots/multi,robots/third" \
    "its repositories were found after the 101 empty ones"
is "$(records | jq -r '[.[] | select(.path | startswith("/v2/_catalog")) | (.path | test("next_page="))] | map(tostring) | join(",")')" \
    "false,true" "through /v2/_catalog, following Link with next_page"
is "$(manifest_digest "$D" from-robot/robots/multi v1)" "$want_multi" "and copied by digest"

REPLICA_TO_CRED_USERNAME= REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CREDS= \
    run --from "$Q" --from-kind quay --to "$D" --repo 'team/app' --dest-namespace anonymous
is "$RC" 0 "a public repository is pulled anonymously"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$D" anonymous/team/app v1)" "$want_app" "and verifies by digest"

# --- a 429 is retried after its Retry-After ---------------------------------------------------------
seed "$S" thr/app v1 oci 1 1024 quay-kind >/dev/null
clear_records
standin_control q fail_next=1 status=429 retry_after=1 fail_path='^/api/v1/' >/dev/null
run --from "$S" "${TO[@]}" --repo 'thr/app'
is "$RC" 0 "a 429 from the API (nginx's HTML page) is retried"
[[ $RC == 0 ]] || diag "$OUT"
waited=$(retry_waited q)
ok "$(jq -n --argjson w "$waited" 'if $w >= 0.95 then 0 else 1 end')" "after its Retry-After of 1 s (waited $waited s)"
seed "$S" thr/reg v1 oci 1 1024 quay-kind >/dev/null
standin_control q fail_next=1 status=429 retry_after=1 fail_path='/manifests/' >/dev/null
run --from "$S" "${TO[@]}" --repo 'thr/reg'
is "$RC:$(records | jq '[.[] | select(.fault)] | length')" 0:2 "so is a 429 from the registry"
is "$(manifest_digest "$QU" thr/app v1):$(manifest_digest "$QU" thr/reg v1)" \
    "$(manifest_digest "$S" thr/app v1):$(manifest_digest "$S" thr/reg v1)" "and both images land"

# --- a namespace that cannot be created ---------------------------------------------------------------
standin_control q deny_create=1 >/dev/null
seed "$S" denied/app v1 oci 1 1024 quay-kind >/dev/null
clear_records
run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "an organisation Quay refuses to create fails the run"
like "$OUT" "stage push_prepare: quay: creating organization denied: POST /api/v1/organization/: http 403 insufficient_scope: Unauthorized" \
    "naming the kind, the step and Quay's answer"
is "$(manifest_digest "$QU" denied/app v1):$(records | jq '[.[] | select((.path | test("^/v2/denied/")) and (.method | test("^(POST|PUT|PATCH|DELETE)$")))] | length')" \
    "missing:0" "and nothing was pushed (no upload was even started)"
seed "$S" denied/other v1 oci 1 1024 quay-kind >/dev/null
run --from "$S" "${TO[@]}" --repo 'denied/other' --dest-namespace team --flatten -1
is "$RC" 1 "so does a repository it refuses to create in an existing organisation"
like "$OUT" "stage push_prepare: quay: creating repository team/other: POST /api/v1/repository: http 403" "naming the step"
is "$(manifest_digest "$QU" team/other v1)" missing "with nothing pushed"
standin_control q deny_create=0 >/dev/null

# --- wrong credentials -------------------------------------------------------------------------------
REPLICA_TO_CRED_PASSWORD=wrong-oauth-token-0123456789 run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "a wrong OAuth token as the password fails"
like "$OUT" "stage push_prepare: quay: reaching the target: GET [^ ]*/v2/auth: http 401" \
    "at the token service, naming the kind and the step"
REPLICA_TO_CRED_USERNAME=replica REPLICA_TO_CRED_PASSWORD=$P REPLICA_TO_CRED_OAUTH_TOKEN=wrong-api-token-0123456789 \
    run --from "$S" "${TO[@]}" --repo 'denied/app'
is "$RC" 1 "a right password with a wrong API token fails"
like "$OUT" "stage push_prepare: quay: checking repository denied/app: GET /api/v1/repository/denied/app: http 401 invalid_token" \
    "at the API, naming the step"
is "$(manifest_digest "$QU" denied/app v1)" missing "and nothing was pushed"

all=$(records)$(cat "$E2E_WORK/q/standin.log")
leaked=no
for secret in "$OT" "$RT" "$P"; do
    if grep -q -F -- "$secret" <<<"$ALL$all"; then leaked=yes; fi
done
is "$leaked" no "no password, robot token or OAuth token appears in any output or in the stand-in's record"
done_testing
