#!/usr/bin/env bash
# The ACR stand-in (tests/standins/acr.py) behaves as registry-kinds.md
# section 8 describes: Basic (admin user, service principal) straight on the
# registry, the /oauth2/token flow (access_token, not token) with Basic, a
# refresh token (00000000-... user) and the Entra ID exchange, anonymous
# tokens for pull and metadata_read only when anonymous pull is on, metadata_read
# for tags/list, _catalog and tags paged with the relative Link and orderby=,
# the /acr/v1 REST API, DELETE by tag (202), deletion disabled per repository,
# faults and token expiry; pushes land in the Distribution registry behind.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

standin_start acr a "$SI_WORK/a"
R=$STANDIN_A_URL AAD=$STANDIN_A_AAD_URL UP=$STANDIN_A_UPSTREAM_URL
U=$STANDIN_A_USER P=$STANDIN_A_PASS SVC=${R#http://}
CID=$STANDIN_A_CLIENT_ID CSEC=$STANDIN_A_CLIENT_SECRET TID=$STANDIN_A_TENANT RTK=$STANDIN_A_REFRESH_TOKEN
NULLU=00000000-0000-0000-0000-000000000000
tok() {   # tok SCOPE...: an access token through the refresh-token grant
    local args=(-d grant_type=refresh_token -d "service=$SVC" -d "refresh_token=$RTK") s
    for s in "$@"; do args+=(-d "scope=$s"); done
    curl -s -X POST "${args[@]}" "$R/oauth2/token" | jq -r .access_token
}

# --- auth ----------------------------------------------------------------------------
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Bearer realm=\"$R/oauth2/token\",service=\"$SVC\"" "/v2/: 401, realm /oauth2/token, service the host"
is "$(jb '.errors[0].message')" "authentication required, visit https://aka.ms/acr/authorization for more information." "ACR's message"
http GET "$R/v2/team/app/tags/list"
is "$(hdr www-authenticate)" "Bearer realm=\"$R/oauth2/token\",service=\"$SVC\",scope=\"repository:team/app:metadata_read\"" \
    "tags/list asks for metadata_read"
http GET "$R/v2/_catalog"
like "$(hdr www-authenticate)" 'scope="registry:catalog:\*"' "_catalog asks for registry:catalog:*"
http GET "$R/v2/" -u "$U:$P"
is "$STATUS" 200 "Basic (admin user) straight on the registry: 200"
http GET "$R/v2/" -u "$CID:$CSEC"
is "$STATUS" 200 "Basic (service principal) too"
http GET "$R/v2/" -u "$U:wrong"
is "$STATUS" 401 "wrong Basic credentials: 401"
http GET "$R/oauth2/token?service=$SVC&scope=repository:team/app:pull,push" -u "$U:$P"
is "$STATUS:$(jb 'keys | join(",")')" "200:access_token" "GET /oauth2/token with Basic: {\"access_token\"} (not token)"
claims=$(jb .access_token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
is "$(jq -c '[.iss, .aud, .access]' <<<"$claims" 2>/dev/null)" \
    "[\"Azure Container Registry\",\"$SVC\",[{\"type\":\"repository\",\"name\":\"team/app\",\"actions\":[\"pull\",\"push\"]}]]" \
    "its claims: iss Azure Container Registry, aud the host, access"
T=$(jb .access_token)
http GET "$R/oauth2/token?service=$SVC&scope=repository:team/app:pull" -u "$U:wrong"
is "$STATUS" 401 "/oauth2/token with wrong credentials: 401"
http GET "$R/oauth2/token?service=$SVC&scope=repository:team/app:pull" -u "$NULLU:$RTK"
is "$STATUS" 200 "the refresh token with user 00000000-0000-0000-0000-000000000000 (docker login): 200"
http GET "$R/oauth2/token?service=$SVC&scope=repository:team/app:pull"
is "$STATUS:$(jb '.errors[0].code'):$(jb '.errors[0].message')" \
    "401:UNAUTHORIZED:authentication required, visit https://aka.ms/acr/authorization for more information." \
    "no credentials, anonymous pull off (the default): 401 with ACR's body"
standin_control a anonymous_pull=1 >/dev/null
http GET "$R/oauth2/token?service=$SVC&scope=repository:team/app:pull,push,metadata_read&scope=registry:catalog:*"
claims=$(jb .access_token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
is "$STATUS:$(jq -c '.access' <<<"$claims" 2>/dev/null)" \
    '200:[{"type":"repository","name":"team/app","actions":["pull","metadata_read"]}]' \
    "anonymous pull on: a token for pull and metadata_read only (no push, no catalog)"
http GET "$R/oauth2/token?service=$SVC"
is "$STATUS" 200 "and one for no scope at all"
standin_control a anonymous_pull=0 >/dev/null

# --- Entra ID exchange ------------------------------------------------------------------
http POST "$AAD/$TID/oauth2/v2.0/token" -d grant_type=client_credentials -d "client_id=$CID" -d client_secret=wrong \
    -d scope=https://containerregistry.azure.net/.default
is "$STATUS:$(jb .error)" 401:invalid_client "Entra ID with a wrong secret: invalid_client"
http POST "$AAD/$TID/oauth2/v2.0/token" -d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" \
    -d scope=https://containerregistry.azure.net/.default
is "$STATUS:$(jb .token_type)" 200:Bearer "Entra ID client credentials: an access token"
AADT=$(jb .access_token)
http POST "$R/oauth2/exchange" -H 'Content-Type: application/x-www-form-urlencoded' \
    -d grant_type=access_token -d "service=$SVC" -d "tenant=$TID" -d "access_token=$AADT"
is "$STATUS:$(jb '.refresh_token | length > 10')" 200:true "POST /oauth2/exchange: a refresh_token"
RT2=$(jb .refresh_token)
http POST "$R/oauth2/exchange" -d grant_type=access_token -d "service=$SVC" -d "tenant=$TID" -d access_token=bogus
is "$STATUS" 401 "exchanging a bogus Entra ID token: 401"
http POST "$R/oauth2/token" -d grant_type=refresh_token -d "service=$SVC" -d "refresh_token=$RT2" \
    -d scope=repository:team/app:pull -d scope=repository:team/other:pull
is "$STATUS" 200 "POST /oauth2/token grant_type=refresh_token, scope repeated: 200"
is "$(jb .access_token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | jq -r '[.access[].name] | join(",")')" "team/app,team/other" \
    "both scopes are in the token"

# --- pushes and listing -------------------------------------------------------------------
d1=$(standin_push "$R" team/app v1 -H "Authorization: Bearer $T")
for t in v2 v3; do standin_push "$R" team/app "$t" -H "Authorization: Bearer $T" >/dev/null; done
standin_push "$R" team/other v1 -u "$U:$P" >/dev/null
standin_push "$R" team/third v1 -u "$CID:$CSEC" >/dev/null
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/team/app/manifests/v1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d1" \
    "a push with the access token lands upstream"
http GET "$R/v2/team/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS" 401 "a pull,push token cannot list tags (metadata_read needed)"
like "$(hdr www-authenticate)" 'error="insufficient_scope"' "insufficient_scope"
MT=$(tok repository:team/app:metadata_read)
http GET "$R/v2/team/app/tags/list?n=2" -H "Authorization: Bearer $MT"
is "$(jb '.tags | join(",")'):$(hdr link)" 'v1,v2:</v2/team/app/tags/list?last=v2&n=2&orderby=>; rel="next"' \
    "tags/list n=2 with metadata_read: a relative Link with orderby="
http GET "$R/v2/team/app/tags/list?last=v2&n=2&orderby=" -H "Authorization: Bearer $MT"
is "$(jb '.tags | join(",")'):$(hdr link)" "v3:" "the last page has no Link"
CT=$(tok registry:catalog:*)
http GET "$R/v2/_catalog?n=2" -H "Authorization: Bearer $CT"
is "$(jb '.repositories | join(",")'):$(hdr link)" 'team/app,team/other:</v2/_catalog?last=team%2Fother&n=2&orderby=>; rel="next"' \
    "_catalog n=2 with registry:catalog:*: the relative Link"
http GET "$R/v2/_catalog?n=2" -H "Authorization: Bearer $MT"
is "$STATUS" 401 "_catalog without the catalog scope: 401"

# --- /acr/v1 and deletion ------------------------------------------------------------------
http GET "$R/acr/v1/_catalog" -u "$U:$P"
is "$(jb '.repositories | join(",")')" "team/app,team/other,team/third" "GET /acr/v1/_catalog"
http GET "$R/acr/v1/team/app/_tags" -u "$U:$P"
is "$(jb '[.tags[].name] | join(",")'):$(jb '.tags[0].digest'):$(jb '.tags[0].changeableAttributes.deleteEnabled')" "v1,v2,v3:$d1:true" \
    "GET /acr/v1/{name}/_tags: names, digests, changeableAttributes"
http GET "$R/acr/v1/team/app/_manifests" -u "$U:$P"
is "$(jb '.manifests | length')" 3 "GET /acr/v1/{name}/_manifests"
http DELETE "$R/v2/team/app/manifests/v2" -H "Authorization: Bearer $(tok repository:team/app:delete)"
is "$STATUS" 202 "DELETE /v2/<repo>/manifests/<tag>: 202"
is "$(curl -s "$UP/v2/team/app/tags/list" | jq -r '.tags | sort | join(",")')" v1,v3 "the tag is gone upstream"
http DELETE "$R/acr/v1/team/app/_tags/v3" -u "$U:$P"
is "$STATUS" 202 "DELETE /acr/v1/{name}/_tags/{tag}: 202"
http PATCH "$R/acr/v1/team/other" -u "$U:$P" -H 'Content-Type: application/json' -d '{"deleteEnabled":false}'
is "$STATUS:$(jb .changeableAttributes.deleteEnabled)" 200:false "PATCH /acr/v1/{name} deleteEnabled=false"
http DELETE "$R/v2/team/other/manifests/v1" -u "$U:$P"
is "$STATUS:$(jb '.errors[0].message')" "405:The operation is disallowed on this registry, repository or image." \
    "then a DELETE is refused"
http DELETE "$R/acr/v1/team/third" -u "$U:$P"
is "$STATUS:$(jb '.tagsDeleted | join(",")')" 202:v1 "DELETE /acr/v1/{name}: 202, its tags deleted"

# --- faults, creation refusal and expiry -----------------------------------------------------
standin_control a deny_create=1 >/dev/null
http POST "$R/v2/team/new/blobs/uploads/" -u "$U:$P"
is "$STATUS:$(jb '.errors[0].code')" 403:DENIED "deny_create: a push that would create a repository is refused"
http POST "$R/v2/team/app/blobs/uploads/" -u "$U:$P"
is "$STATUS" 202 "an existing one still takes pushes"
standin_control a deny_create=0 >/dev/null
standin_control a fail_next=1 status=429 retry_after=2 >/dev/null
http GET "$R/v2/team/app/tags/list" -H "Authorization: Bearer $MT"
is "$STATUS:$(hdr retry-after)" 429:2 "fail_next: 429 with Retry-After"
standin_control a expire_tokens=1 >/dev/null
http GET "$R/v2/team/app/tags/list" -H "Authorization: Bearer $MT"
is "$STATUS" 401 "expire_tokens: the access token stops working"
like "$(hdr www-authenticate)" 'error="invalid_token"' "with error=invalid_token"
http POST "$R/oauth2/token" -d grant_type=refresh_token -d "service=$SVC" -d "refresh_token=$RTK" -d scope=repository:team/app:pull
is "$STATUS" 401 "and so does the refresh token"
http GET "$R/v2/team/app/tags/list" -u "$U:$P"
is "$STATUS" 200 "Basic credentials still work"

recs=$(for u in "$R" "$AAD"; do curl -s "$u/_standin/requests"; done)
if grep -q -- "$P\|$CSEC\|$RTK\|$T" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "no secret or token appears in the records"

done_testing
