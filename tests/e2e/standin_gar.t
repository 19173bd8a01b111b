#!/usr/bin/env bash
# The Artifact Registry stand-in (tests/standins/gar.py) behaves as
# registry-kinds.md sections 6 and 10 describe: the OAuth2 JWT-bearer grant
# (RS256 checked by hand against the public key, aud, iat/exp, scope) with
# its error bodies, Bearer access tokens straight on /v2/ and the registry
# token flow (oauth2accesstoken, _json_key, _json_key_base64), the challenges,
# repositories that must be created first through the v1 API (Operation, 409),
# uploads under /artifacts-uploads/, listing with pageToken, deletion, faults
# and token expiry; what is pushed lands in the Distribution registry behind.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

while read -r line; do
    [[ $line == ok* ]]; ok $? "RS256 by hand: ${line#* - }"
done < <(python3 "$ROOT/tests/standins/rsakeys.py" self-test || true)

standin_start gar g "$SI_WORK/g"
R=$STANDIN_G_URL OAUTH=$STANDIN_G_OAUTH_URL API=$STANDIN_G_API_URL UP=$STANDIN_G_UPSTREAM_URL
KEYJSON=$STANDIN_G_KEY_JSON
is "$(jq -r .token_uri "$KEYJSON")" "$OAUTH/token" "the key file's token_uri is the oauth listener"
jq -r .private_key "$KEYJSON" >"$SI_WORK/sa.key"
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
# assertion CLAIMS [HEADER]: a JWT signed with the service account's key (openssl).
assertion() {
    local h p
    h=$(printf '%s' "${2:-{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"$(jq -r .private_key_id "$KEYJSON")\"\}}" | b64url)
    p=$(printf '%s' "$1" | b64url)
    printf '%s.%s.%s' "$h" "$p" "$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$SI_WORK/sa.key" | b64url)"
}
now=$(date +%s)
EMAIL=$(jq -r .client_email "$KEYJSON")
claims() {   # claims [SCOPE] [AUD] [IAT] [EXP]
    jq -cn --arg iss "$EMAIL" --arg scope "${1-https://www.googleapis.com/auth/cloud-platform}" \
        --arg aud "${2:-$OAUTH/token}" --argjson iat "${3:-$now}" --argjson exp "${4:-$((now + 3600))}" \
        '{iss: $iss, aud: $aud, iat: $iat, exp: $exp} + (if $scope == "" then {} else {scope: $scope} end)'
}
grant() {    # grant ASSERTION: POST it to the token endpoint
    http POST "$OAUTH/token" --data-urlencode 'grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer' \
        --data-urlencode "assertion=$1"
}

# --- the JWT-bearer grant -------------------------------------------------------------
grant "$(assertion "$(claims)")"
is "$STATUS:$(jb .token_type):$(jb .expires_in)" 200:Bearer:3600 "a valid assertion: 200, Bearer, expires_in 3600"
like "$(jb .access_token)" '^ya29\.' "the access token looks like Google's (ya29.)"
AT=$(jb .access_token)
a=$(assertion "$(claims)")
grant "${a%.*}.$(printf 'x%.0s' {1..10} | b64url)${a##*.}"
is "$STATUS:$(jb .error):$(jb .error_description)" "400:invalid_grant:Invalid JWT Signature." "a bad signature: 400 invalid_grant, Invalid JWT Signature."
grant "$(assertion "$(claims)" '{"alg":"RS256","typ":"JWT"}')"
is "$STATUS" 200 "a header without kid is accepted (kid is optional)"
grant "$(assertion "$(claims "" )")"
is "$STATUS:$(jb .error)" 400:invalid_scope "no scope claim: 400 invalid_scope"
grant "$(assertion "$(claims "" https://oauth2.googleapis.com/token | jq -c '. + {scope: "https://www.googleapis.com/auth/cloud-platform"}')")"
is "$STATUS:$(jb .error)" 400:invalid_grant "aud not the token URI: 400 invalid_grant"
like "$(jb .error_description)" "audience" "saying the audience is wrong"
grant "$(assertion "$(claims https://www.googleapis.com/auth/cloud-platform "" "$now" $((now + 3601)))")"
like "$STATUS:$(jb .error):$(jb .error_description)" '^400:invalid_grant:Invalid JWT: Token must be a short-lived token \(60 minutes\)' \
    "exp more than 3600 s after iat: invalid_grant, short-lived token"
grant "$(assertion "$(claims https://www.googleapis.com/auth/cloud-platform "" $((now - 4000)) $((now - 400)))")"
is "$STATUS:$(jb .error)" 400:invalid_grant "an expired assertion: invalid_grant"
grant "$(assertion "$(claims)" '{"alg":"HS256","typ":"JWT"}')"
is "$STATUS:$(jb .error)" 400:invalid_grant "alg HS256: invalid_grant"
grant "$(assertion "$(claims | jq -c '.iss = "someone@else.iam.gserviceaccount.com"')")"
is "$STATUS:$(jb .error)" 400:invalid_grant "another service account: invalid_grant"
http POST "$OAUTH/token" -d grant_type=password -d username=x
is "$STATUS:$(jb .error)" 400:unsupported_grant_type "another grant_type: unsupported_grant_type"

# --- registry auth ---------------------------------------------------------------------
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Bearer realm=\"$R/v2/token\"" "/v2/ without credentials: 401, a realm and no service"
http GET "$R/v2/replica-test/docker/app/tags/list"
is "$(hdr www-authenticate)" "Bearer realm=\"$R/v2/token\",service=\"${R#http://}\",scope=\"repository:replica-test/docker/app:pull\"" \
    "a repository endpoint's challenge carries service and scope"
like "$(jb '.errors[0].message')" '^Unauthenticated request\. .*downloadArtifacts.*projects/replica-test/locations/us/repositories/docker' \
    "with GAR's UNAUTHORIZED message"
BA=(-H "Authorization: Bearer $AT")
http GET "$R/v2/" "${BA[@]}"
is "$STATUS" 200 "Bearer <access token> straight on /v2/: 200"

# --- repositories through the API ----------------------------------------------------------
REPOS=$API/v1/projects/replica-test/locations/us/repositories
http POST "$REPOS?repositoryId=docker" -H 'Content-Type: application/json' -d '{"format":"DOCKER"}'
is "$STATUS:$(jb .error.status)" 401:UNAUTHENTICATED "creating a repository without a token: 401 UNAUTHENTICATED"
http POST "$R/v2/replica-test/docker/app/blobs/uploads/" "${BA[@]}"
is "$STATUS:$BODY" '404:{"errors": [{"code": "NAME_UNKNOWN", "message": "Repository \"docker\" not found"}]}' \
    "a push into a repository not created: 404 NAME_UNKNOWN Repository \"docker\" not found"
standin_control g deny_create=1 >/dev/null
http POST "$REPOS?repositoryId=docker" "${BA[@]}" -H 'Content-Type: application/json' -d '{"format":"DOCKER"}'
is "$STATUS:$(jb .error.status)" 403:PERMISSION_DENIED "deny_create: 403 PERMISSION_DENIED"
standin_control g deny_create=0 >/dev/null
http POST "$REPOS?repositoryId=Bad_Id" "${BA[@]}" -H 'Content-Type: application/json' -d '{"format":"DOCKER"}'
is "$STATUS:$(jb .error.status)" 400:INVALID_ARGUMENT "an invalid repositoryId: 400 INVALID_ARGUMENT"
http POST "$REPOS?repositoryId=docker" "${BA[@]}" -H 'Content-Type: application/json' -d '{"format":"DOCKER","description":"d"}'
is "$STATUS:$(jb .done):$(jb .response.name)" "200:true:projects/replica-test/locations/us/repositories/docker" \
    "create: an Operation, done, whose response is the Repository"
like "$(jb .name)" '^projects/replica-test/locations/us/operations/' "the Operation has a name under the location"
op=$(jb .name)
http GET "$API/v1/$op" "${BA[@]}"
is "$STATUS:$(jb .done)" 200:true "and it can be fetched"
http POST "$REPOS?repositoryId=docker" "${BA[@]}" -H 'Content-Type: application/json' -d '{"format":"DOCKER"}'
is "$STATUS:$(jb .error.code):$(jb .error.status)" 409:409:ALREADY_EXISTS "the same again: 409 ALREADY_EXISTS"
for r in more other; do
    curl -s -o /dev/null "${BA[@]}" -H 'Content-Type: application/json' -d '{"format":"DOCKER"}' "$REPOS?repositoryId=$r"
done
http GET "$REPOS?pageSize=2" "${BA[@]}"
is "$(jb '[.repositories[].name | split("/") | last] | join(",")')" docker,more "list pageSize=2: the first two"
http GET "$REPOS?pageSize=2&pageToken=$(jb .nextPageToken)" "${BA[@]}"
is "$(jb '[.repositories[].name | split("/") | last] | join(",")'):$(jb .nextPageToken)" other:null "the next page: the last, no nextPageToken"

# --- pushes ----------------------------------------------------------------------------
http POST "$R/v2/replica-test/docker/app/blobs/uploads/" "${BA[@]}"
like "$STATUS $(hdr location)" "^202 $R/artifacts-uploads/namespaces/replica-test/repositories/docker/uploads/" \
    "an upload's Location is under /artifacts-uploads/ on the same host"
http PATCH "$(hdr location)" -H 'Content-Type: application/octet-stream' --data-binary abc
is "$STATUS" 401 "an /artifacts-uploads/ request without the Authorization header: 401"
d1=$(standin_push "$R" replica-test/docker/app v1 "${BA[@]}")
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/replica-test/docker/app/manifests/v1" |
      tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d1" \
    "pushed with the access token (uploads through /artifacts-uploads/): the manifest is in the upstream"
http GET "$R/v2/token?service=${R#http://}&scope=repository:replica-test/docker/app:pull,push" -u "oauth2accesstoken:$AT"
is "$STATUS:$(jb '.token | length > 10')" 200:true "/v2/token with oauth2accesstoken:<access token>: a registry token"
RT=$(jb .token)
d2=$(standin_push "$R" replica-test/docker/app v2 -H "Authorization: Bearer $RT")
is "$(curl -s "$UP/v2/replica-test/docker/app/tags/list" | jq -r '.tags | sort | join(",")')" v1,v2 "a push with the registry token lands too"
http GET "$R/v2/token?scope=repository:replica-test/docker/app:pull" -u "_json_key:$(jq -c '.token_uri = "x"' "$KEYJSON")"
is "$STATUS" 200 "/v2/token with _json_key:<key JSON>: 200"
http GET "$R/v2/replica-test/docker/app/tags/list" -H "Authorization: Bearer $(jb .token)"
is "$STATUS" 200 "and its token pulls"
http GET "$R/v2/token?scope=repository:replica-test/docker/app:pull" -u "_json_key_base64:$(base64 -w0 <"$KEYJSON")"
is "$STATUS" 200 "/v2/token with _json_key_base64: 200"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$SI_WORK/other.key" 2>/dev/null
http GET "$R/v2/token?scope=repository:replica-test/docker/app:pull" \
    -u "_json_key:$(jq -c --arg k "$(cat "$SI_WORK/other.key")" '.private_key = $k' "$KEYJSON")"
is "$STATUS" 401 "_json_key with another private key: 401"
http GET "$R/v2/token?scope=repository:replica-test/docker/app:pull" -u "oauth2accesstoken:ya29.wrong"
is "$STATUS" 401 "oauth2accesstoken with an unknown token: 401"
grant "$(assertion "$(claims https://www.googleapis.com/auth/devstorage.read_only)")"
RO=$(jb .access_token)
http GET "$R/v2/replica-test/docker/app/tags/list" -H "Authorization: Bearer $RO"
is "$STATUS" 200 "a devstorage.read_only token pulls"
http POST "$R/v2/replica-test/docker/app/blobs/uploads/" -H "Authorization: Bearer $RO"
is "$STATUS:$(jb '.errors[0].code')" 403:DENIED "but cannot push: 403 DENIED"
http GET "$REPOS" -H "Authorization: Bearer $RO"
is "$STATUS:$(jb .error.message)" "403:Request had insufficient authentication scopes." "nor use the API"
http POST "$R/v2/replica-test/nope/app/blobs/uploads/" "${BA[@]}"
is "$STATUS:$(jb '.errors[0].message')" '404:Repository "nope" not found' "another missing repository: 404"
http POST "$R/v2/other-project/docker/app/blobs/uploads/" "${BA[@]}"
is "$STATUS:$(jb '.errors[0].code')" 403:DENIED "another project: 403 DENIED"

# --- listing and deletion -----------------------------------------------------------------
http GET "$REPOS/docker/dockerImages" "${BA[@]}"
is "$(jb '[.dockerImages[] | .tags | join("+")] | sort | join(",")')" v1,v2 "dockerImages lists both images with their tags"
like "$(jb '.dockerImages[0].uri')" "^${R#http://}/replica-test/docker/app@sha256:" "with their uri"
http GET "$R/v2/replica-test/docker/app/tags/list" "${BA[@]}"
is "$(jb '.tags | sort | join(",")')" v1,v2 "tags/list through the stand-in"
http DELETE "$R/v2/replica-test/docker/app/manifests/v1" "${BA[@]}"
is "$STATUS" 202 "DELETE /v2/.../manifests/<tag>: 202"
is "$(curl -s "$UP/v2/replica-test/docker/app/tags/list" | jq -r '.tags | join(",")')" v2 "the tag is gone upstream"
http DELETE "$R/v2/replica-test/docker/app/manifests/$d2" "${BA[@]}"
is "$STATUS" 202 "DELETE by digest: 202"
http DELETE "$REPOS/more" "${BA[@]}"
is "$STATUS:$(jb .done)" 200:true "deleting a repository: a done Operation"
http GET "$REPOS/more" "${BA[@]}"
is "$STATUS:$(jb .error.status)" 404:NOT_FOUND "then it is NOT_FOUND"

# --- faults and expiry --------------------------------------------------------------------
standin_control g fail_next=1 status=429 retry_after=4 fail_listener=registry >/dev/null
http GET "$R/v2/replica-test/docker/app/tags/list" "${BA[@]}"
is "$STATUS:$(hdr retry-after):$(jb '.errors[0].code')" 429:4:TOOMANYREQUESTS "fail_next: 429 with Retry-After"
standin_control g fail_next=1 status=429 fail_listener=api >/dev/null
http GET "$REPOS" "${BA[@]}"
is "$STATUS:$(jb .error.status)" 429:RESOURCE_EXHAUSTED "on the API: 429 RESOURCE_EXHAUSTED"
standin_control g expire_tokens=1 >/dev/null
http GET "$R/v2/replica-test/docker/app/tags/list" "${BA[@]}"
is "$STATUS" 401 "expire_tokens: the access token stops working on the registry"
http GET "$R/v2/replica-test/docker/app/tags/list" -H "Authorization: Bearer $RT"
is "$STATUS" 401 "and so does the registry token"
http GET "$REPOS" "${BA[@]}"
is "$STATUS:$(jb .error.status)" 401:UNAUTHENTICATED "and on the API"
grant "$(assertion "$(claims)")"
http GET "$R/v2/replica-test/docker/app/tags/list" -H "Authorization: Bearer $(jb .access_token)"
is "$STATUS" 200 "a new grant works"

recs=$(for u in "$R" "$OAUTH" "$API"; do curl -s "$u/_standin/requests"; done)
if grep -q -- "$AT\|$RT\|PRIVATE KEY" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "no token and no key appears in the records"

done_testing
