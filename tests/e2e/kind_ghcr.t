#!/usr/bin/env bash
# The ghcr kind (scripts/kinds/ghcr.lua) against the GHCR stand-in
# (tests/standins/ghcr.py: ghcr.io's token flow with a PAT and tokens
# without expires_in, the GitHub packages REST API with scopes and Link
# paging, a real Distribution behind): Distribution -> GHCR with a PAT as
# the password and any username (packages created private on first push; a
# re-run copies nothing; the token cache copes with tokens that carry no
# lifetime); GHCR -> Distribution lists through the packages API (orgs and
# users, Link paging, names with '/'); 429s with Retry-After on the
# registry and on the API are retried; a token expiring mid-upload (after a
# chunk) is renewed; a wrong PAT, or one without write:packages, fails
# naming the kind and the step with nothing pushed; a layer over 4 MiB goes
# up in PATCHes of at most 4 MiB (the stand-in refuses larger ones, as GHCR
# is reported to), with or without --chunk-size, and a smaller --chunk-size
# is kept; no secret appears in any output or in the stand-in's record. (A
# deletion replicated to GHCR, through the packages API, is tested with
# every kind's in tests/e2e/kind_delete.t.)
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images replica-org ghcr-kind v1 tools/multi
want_mine=$(seed "$S" replica/app v1 oci 1 1024 ghcr-kind | sed -n 's|^replica/app:v1 ||p')
standin_start ghcr g "$E2E_WORK/g"
G=$STANDIN_G_URL GU=$STANDIN_G_UPSTREAM_URL API_URL=$STANDIN_G_API_URL
export REPLICA_TO_CRED_PASSWORD=$STANDIN_G_PAT REPLICA_FROM_CRED_PASSWORD=$STANDIN_G_PAT
TO=(--to "$G" --to-kind ghcr --to-cred username=any-name)
FROM=(--from "$G" --from-kind ghcr --from-cred username=replica --from-option "api_url=$API_URL")
ALL=""
run() { replica_run "$@"; ALL+=$OUT$'\n'; }
summary() { grep '^{' <<<"$OUT" | tail -n 1 | jq -r "$1"; }
state() { curl -s "$G/_standin/state" | jq -r "$1"; }
records() { curl -s "$G/_standin/requests"; }
clear_records() { curl -s -X DELETE "$G/_standin/requests" >/dev/null; }

# --- Distribution -> GHCR ------------------------------------------------------------------
clear_records
run --from "$S" "${TO[@]}" --repo 'replica-org/**' --repo 'replica/**' --json
is "$RC" 0 "distribution -> ghcr succeeds with a PAT as the password (any username)"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$GU" replica-org/app v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$GU" replica-org/tools/multi v1)" "$want_multi" "a multi-arch image with a '/' in its package name too"
is "$(manifest_digest "$GU" replica/app v1)" "$want_mine" "and one in the user's own namespace"
is "$(state '[.packages[].visibility] | unique | join(",")')" private "the pushes created the packages, private"
tokens=$(records | jq '[.[] | select(.path | startswith("/token"))] | length')
authorized=$(records | jq '[.[] | select(.listener == "registry" and (.path | startswith("/v2/")) and (.authorization // "" | startswith("Bearer")))] | length')
ok "$(( tokens * 3 < authorized ? 0 : 1 ))" "tokens without expires_in are cached: $tokens fetched for $authorized authorized requests"
run --from "$S" "${TO[@]}" --repo 'replica-org/**' --json
is "$RC:$(summary .summary.pushed):$(summary .summary.skipped)" "0:0:2" "a re-run copies nothing"

# --- GHCR -> Distribution, listing through the packages API -------------------------------
scopes=""
for i in $(seq -w 1 101); do scopes+="&scope=repository:replica-org/empty$i:pull,push"; done
push_token=$(curl -s -u "replica:$STANDIN_G_PAT" "$G/token?service=ghcr.io$scopes" | jq -r .token)
made=0
for i in $(seq -w 1 101); do
    standin_push "$G" "replica-org/empty$i" v1 -H "Authorization: Bearer $push_token" >/dev/null && made=$((made + 1))
done
is "$made" 101 "101 more packages in replica-org: the listing takes two pages of 100"
clear_records
run "${FROM[@]}" --to "$D" --repo 'replica-org/app' --repo 'replica-org/tools/*' --json
is "$RC" 0 "ghcr -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(summary '[.tasks[].repository] | join(",")')" "replica-org/app,replica-org/tools/multi" \
    "the packages were found through the packages API"
is "$(records | jq -r '[.[] | select(.listener == "api") | .path | capture("[?&]page=(?<p>[0-9]+)").p // "1"] | join(",")')" \
    "1,2" "the organisation's packages listed in two pages, following Link rel=next"
is "$(records | jq '[.[] | select(.path | test("_catalog"))] | length')" 0 "and /v2/_catalog was never asked"
is "$(manifest_digest "$D" replica-org/app v1):$(manifest_digest "$D" replica-org/tools/multi v1)" "$want_app:$want_multi" \
    "and both images verify by digest"
clear_records
run "${FROM[@]}" --from-option namespace=replica,replica-org --to "$D" --repo '*/app' --json
is "$RC:$(summary '[.tasks[].repository] | join(",")')" "0:replica-org/app,replica/app" \
    "a filter naming no owner lists the owners of the option namespace"
like "$(records | jq -r '[.[] | select(.listener == "api") | "\(.status) \(.path)"] | join(";")')" \
    "404 /orgs/replica/packages.*200 /users/replica/packages" "a user's packages after the orgs path said 404"
is "$(manifest_digest "$D" replica/app v1)" "$want_mine" "and the user's image verifies"

# --- 429 with Retry-After ----------------------------------------------------------------------
clear_records
standin_control g fail_next=2 status=429 retry_after=1 fail_listener=registry 'fail_path=/manifests/' >/dev/null
run "${FROM[@]}" --to "$D" --repo 'replica-org/tools/multi' --dest-namespace again
is "$RC" 0 "two 429s with Retry-After on the registry are retried"
[[ $RC == 0 ]] || diag "$OUT"
is "$(records | jq '[.[] | select(.fault)] | length'):$(manifest_digest "$D" again/replica-org/tools/multi v1)" "2:$want_multi" \
    "both were answered, and the image verifies"
standin_control g fail_next=1 status=429 retry_after=1 fail_listener=api >/dev/null
run "${FROM[@]}" --to "$D" --repo 'replica-org/a*' --json
is "$RC:$(summary '[.tasks[].repository] | join(",")')" "0:replica-org/app" "a 429 with Retry-After on the packages API is retried"

# --- a token that expires mid-upload -------------------------------------------------------------
big=$E2E_WORK/big.bin
head -c $((6 << 20)) /dev/urandom >"$big" # two chunks: 4 MiB, then 2 MiB
want_big=$(push_big_image "$S" replica-org/big v1 "$big")
clear_records
standin_control g expire_after_patches=1 >/dev/null # every token dies once the first chunk is in
run --from "$S" "${TO[@]}" --repo 'replica-org/big'
is "$RC" 0 "its registry token expired mid-upload, after the first chunk, and the run still succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(records | jq -r '[.[] | select(.method == "PATCH") | .status] | map(tostring) | join(",")')" "202,401,202,202" \
    "the next chunk was refused with the dead token, and the upload made again"
tokens=$(records | jq '[.[] | select(.path | test("^/token.*big%3Apull%2Cpush"))] | length')
ok "$(( tokens >= 2 ? 0 : 1 ))" "with a new push token ($tokens fetched)"
is "$(manifest_digest "$GU" replica-org/big v1)" "$want_big" "and the image verifies"

# --- wrong credentials ------------------------------------------------------------------------------
seed "$S" replica-org/denied v1 oci 1 1024 ghcr-kind >/dev/null
REPLICA_TO_CRED_PASSWORD=ghp_wrong0123456789 run --from "$S" "${TO[@]}" --repo 'replica-org/denied'
is "$RC" 1 "a wrong PAT fails"
like "$OUT" "stage push_prepare: ghcr: reaching the target: GET [^ ]*/token: http 403" \
    "at the first step that needs it, naming the kind and the step"
is "$(manifest_digest "$GU" replica-org/denied v1)" missing "and nothing was pushed"
standin_control g pat_scopes=read:packages >/dev/null
run --from "$S" "${TO[@]}" --repo 'replica-org/denied'
is "$RC" 1 "a PAT without write:packages fails"
like "$OUT" "stage push_prepare: ghcr: checking push access: POST [^ ]*/v2/replica-org/denied/blobs/uploads/: http 403 DENIED" \
    "when push access is checked, naming the kind and the step"
is "$(manifest_digest "$GU" replica-org/denied v1)" missing "and nothing was pushed"
standin_control g "pat_scopes=read:packages,write:packages,delete:packages" >/dev/null
REPLICA_FROM_CRED_PASSWORD=ghp_wrong0123456789 run "${FROM[@]}" --to "$D" --repo 'replica-org/**'
is "$RC" 1 "a wrong PAT on the source fails the listing"
like "$OUT" "listing the source catalog: ghcr: listing the packages of replica-org: GET [^ ]*/orgs/replica-org/packages[^ ]*: http 401: Bad credentials" \
    "naming the kind and the step, with GitHub's message"

# --- chunks of at most 4 MiB (GHCR refuses a larger PATCH) --------------------------------------
# patches: "bytes:status" of each blob PATCH the stand-in saw since the record was cleared
patches() { records | jq -r '[.[] | select(.method == "PATCH" and (.path | test("/blobs/uploads/"))) | "\(.bytes):\(.status)"] | join(",")'; }
chunky=$E2E_WORK/chunky.bin
head -c $((10 << 20)) /dev/urandom >"$chunky"
want_chunky=$(push_big_image "$S" replica-org/chunky v1 "$chunky")
clear_records
run --from "$S" "${TO[@]}" --repo 'replica-org/chunky'
is "$RC" 0 "a 10 MiB layer is pushed to GHCR without --chunk-size"
[[ $RC == 0 ]] || diag "$OUT"
is "$(patches)" "4194304:202,4194304:202,2097152:202" "in PATCHes of at most 4 MiB (the kind's max_chunk), each accepted"
is "$(manifest_digest "$GU" replica-org/chunky v1)" "$want_chunky" "and it verifies by digest"
clear_records
run --from "$S" "${TO[@]}" --repo 'replica-org/chunky' --dest-namespace replica-org/big8 --chunk-size 8M
is "$RC:$(patches)" "0:4194304:202,4194304:202,2097152:202" "a larger --chunk-size (8M) is lowered to 4 MiB"
clear_records
run --from "$S" "${TO[@]}" --repo 'replica-org/chunky' --dest-namespace replica-org/small --chunk-size 1M
is "$RC:$(patches | tr ',' '\n' | sort | uniq -c | awk '{print $2 "x" $1}' | paste -sd,)" "0:1048576:202x10" \
    "a smaller one (1M) is kept: ten 1 MiB chunks"
is "$(manifest_digest "$GU" replica-org/small/replica-org/chunky v1):$(manifest_digest "$GU" replica-org/big8/replica-org/chunky v1)" \
    "$want_chunky:$want_chunky" "both verify by digest"

# --- no secret anywhere -----------------------------------------------------------------------------------
everything=$ALL$(records)$(cat "$E2E_WORK/g/standin.log")
if grep -q -F -e "$STANDIN_G_PAT" -e "$STANDIN_G_PASS" -e "$push_token" <<<"$everything"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the PAT, the password and the registry token appear in no output, no log and nowhere in the stand-in's record"
done_testing
