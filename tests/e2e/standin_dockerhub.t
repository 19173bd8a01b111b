#!/usr/bin/env bash
# The Docker Hub stand-in (tests/standins/dockerhub.py) behaves as
# registry-kinds.md section 2 describes: three hosts (registry, auth, hub),
# the token flow with password or PAT, partial scopes, names that are not
# NAMESPACE/NAME refused, create-on-push in your
# own namespace, the Hub API (JWT login, namespaces' repositories and tags
# paged with count/next/previous, creation, tag deletion), the pull rate-limit
# headers (GET counts, HEAD does not) and the 429 past them, manifest DELETE
# refused with 405, the faults and token expiry; pushes land upstream.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

standin_start dockerhub d "$SI_WORK/d"
R=$STANDIN_D_URL AU=$STANDIN_D_AUTH_URL HUB=$STANDIN_D_HUB_URL UP=$STANDIN_D_UPSTREAM_URL
U=$STANDIN_D_USER P=$STANDIN_D_PASS PAT=$STANDIN_D_PAT ORG=$STANDIN_D_ORG
tok() {   # tok CREDS SCOPE...: a registry token
    local q="service=registry.docker.io" s c=$1
    shift
    for s in "$@"; do q+="&scope=$s"; done
    curl -s ${c:+-u "$c"} "$AU/token?$q" | jq -r .token
}

# --- registry auth ------------------------------------------------------------------
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Bearer realm=\"$AU/token\",service=\"registry.docker.io\"" \
    "/v2/ without a token: 401, realm on the auth host, service registry.docker.io"
is "$(jb '.errors[0].code'):$(jb '.errors[0].message')" "UNAUTHORIZED:authentication required" "UNAUTHORIZED, authentication required"
http GET "$R/v2/$U/app/manifests/v1"
is "$(hdr www-authenticate)" "Bearer realm=\"$AU/token\",service=\"registry.docker.io\",scope=\"repository:$U/app:pull\"" \
    "a repository endpoint's challenge has the scope"
http GET "$AU/token?service=registry.docker.io&scope=repository:$U/app:pull" -u "$U:wrong"
is "$STATUS" 401 "token with a wrong password: 401"
http GET "$AU/token?service=registry.docker.io&scope=repository:$U/app:pull,push" -u "$U:$P"
is "$STATUS:$(jb '[has("token"), has("access_token"), (.expires_in|type), (.issued_at|type)] | map(tostring) | join(",")')" \
    "200:true,true,number,string" "token with the password: token, access_token, expires_in, issued_at"
T=$(jb .token)
http GET "$R/v2/" -H "Authorization: Bearer $T"
is "$STATUS" 200 "the token works on /v2/"
http GET "$AU/token?service=registry.docker.io&scope=repository:$U/app:pull,push&scope=repository:someone/else:push&offline_token=true&client_id=replica" -u "$U:$PAT"
is "$STATUS" 200 "token with the PAT, one scope not grantable: 200 all the same (partial grant)"
claims=$(jb .token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
is "$(jq -c '[.access[] | {name, actions}]' <<<"$claims" 2>/dev/null)" \
    "[{\"name\":\"$U/app\",\"actions\":[\"pull\",\"push\"]},{\"name\":\"someone/else\",\"actions\":[]}]" \
    "the token grants what it can: push in your namespace, nothing elsewhere"
RT=$(jb .refresh_token)
like "$RT" '.{20,}' "offline_token=true returns a refresh_token"
http GET "$AU/token?service=registry.docker.io&scope=repository:$U/tools/app:pull,push" -u "$U:$PAT"
is "$STATUS:$BODY" '400:{"details": "invalid repository name"}' "a scope naming a repository deeper than NAMESPACE/NAME: 400 invalid repository name"
http GET "$AU/token?service=registry.docker.io&scope=repository:app:pull"
is "$STATUS" 400 "so does one without a namespace"
http POST "$AU/token" -d grant_type=refresh_token -d service=registry.docker.io -d "refresh_token=$RT" -d "scope=repository:$U/app:pull"
is "$STATUS:$(jb '.access_token | length > 10')" 200:true "POST /token with the refresh token: an access_token"
http GET "$AU/token?service=registry.docker.io&scope=repository:$U/app:pull"
is "$STATUS" 200 "an anonymous token request: 200"
ANON=$(jb .token)

# --- pushes: create on push ---------------------------------------------------------------
http POST "$R/v2/someone/else/blobs/uploads/" -H "Authorization: Bearer $T"
is "$STATUS:$(jb '.errors[0].message')" "401:requested access to the resource is denied" \
    "a push outside your namespaces: denied"
like "$(hdr www-authenticate)" 'error="insufficient_scope"' "with error=insufficient_scope"
d1=$(standin_push "$R" "$U/app" v1 -H "Authorization: Bearer $T")
standin_push "$R" "$U/app" v2 -H "Authorization: Bearer $T" >/dev/null
d3=$(standin_push "$R" "$U/app" v3 -H "Authorization: Bearer $T")
is "$(curl -s "$UP/v2/$U/app/tags/list" | jq -r '.tags | sort | join(",")')" v1,v2,v3 "pushed tags are in the upstream"
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/$U/app/manifests/v3" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d3" \
    "with the digests pushed"
OT=$(tok "$U:$P" "repository:$ORG/tool:pull,push")
standin_push "$R" "$ORG/tool" v1 -H "Authorization: Bearer $OT" >/dev/null
ok $? "a push into an org of yours works"
http GET "$R/v2/$U/app/tags/list" -H "Authorization: Bearer $ANON"
is "$STATUS" 401 "the anonymous token (issued before the repository existed) grants nothing"
http GET "$R/v2/$U/app/tags/list" -H "Authorization: Bearer $(tok "" "repository:$U/app:pull")"
is "$STATUS:$(jb '.tags | length')" 200:3 "a repository created by a push is public: anonymous pull works"
http DELETE "$R/v2/$U/app/manifests/$d1" -H "Authorization: Bearer $(tok "$U:$P" "repository:$U/app:pull,push,delete")"
is "$STATUS:$BODY" '405:{"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}' \
    "manifest DELETE on the registry: 405 UNSUPPORTED"
http GET "$R/v2/_catalog" -H "Authorization: Bearer $T"
is "$STATUS" 401 "no usable /v2/_catalog"

# --- rate limits --------------------------------------------------------------------
PT=$(tok "$U:$P" "repository:$U/app:pull")
A=(-H "Authorization: Bearer $PT" -H 'Accept: application/vnd.oci.image.manifest.v1+json')
http HEAD "$R/v2/$U/app/manifests/v1" "${A[@]}"
is "$(hdr ratelimit-limit)" "" "no limit set: no ratelimit headers"
standin_control d ratelimit_limit=2 >/dev/null
http HEAD "$R/v2/$U/app/manifests/v1" "${A[@]}"
is "$STATUS:$(hdr ratelimit-limit):$(hdr ratelimit-remaining)" "200:2;w=21600:2;w=21600" "HEAD carries ratelimit-limit/-remaining (w=21600) and does not count"
like "$(hdr docker-ratelimit-source)" '^127\.0\.0\.1$' "and docker-ratelimit-source"
http GET "$R/v2/$U/app/manifests/v1" "${A[@]}"
is "$STATUS:$(hdr ratelimit-remaining)" "200:1;w=21600" "a GET counts"
http GET "$R/v2/$U/app/manifests/v2" "${A[@]}"
is "$STATUS:$(hdr ratelimit-remaining)" "200:0;w=21600" "a second GET: none left"
http GET "$R/v2/$U/app/manifests/v3" "${A[@]}"
is "$STATUS:$(jb '.errors[0].code')" 429:TOOMANYREQUESTS "past the limit: 429 TOOMANYREQUESTS"
like "$(jb '.errors[0].message')" '^You have reached your pull rate limit\.' "with Docker's message"
http HEAD "$R/v2/$U/app/manifests/v3" "${A[@]}"
is "$STATUS" 200 "a HEAD still works past the limit"
standin_control d ratelimit_limit=0 >/dev/null
http GET "$R/v2/$U/app/blobs/$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/$U/app/manifests/v1" | jq -r '.layers[0].digest')" -H "Authorization: Bearer $PT"
is "$STATUS:$(hdr ratelimit-limit)" "200:" "blob GETs carry no ratelimit headers"

# --- Hub API -----------------------------------------------------------------------------
http POST "$HUB/v2/auth/token" -H 'Content-Type: application/json' -d "{\"identifier\":\"$U\",\"secret\":\"wrong\"}"
is "$STATUS" 401 "hub /v2/auth/token with a wrong secret: 401"
http POST "$HUB/v2/auth/token" -H 'Content-Type: application/json' -d "{\"identifier\":\"$U\",\"secret\":\"$PAT\"}"
is "$STATUS" 200 "hub /v2/auth/token with the PAT: 200"
HT=$(jb .access_token)
is "$(cut -d. -f2 <<<"$HT" | tr '_-' '/+' | base64 -d 2>/dev/null | jq '.exp - .iat')" 600 "its JWT lives 10 minutes"
like "$(hdr x-ratelimit-limit) $(hdr x-ratelimit-remaining) $(hdr x-ratelimit-reset)" '^[0-9]+ [0-9]+ [0-9]{10}$' \
    "Hub API answers carry X-RateLimit-Limit/-Remaining/-Reset"
H=(-H "Authorization: Bearer $HT")
http POST "$HUB/v2/users/login" -H 'Content-Type: application/json' -d "{\"username\":\"$U\",\"password\":\"$P\"}"
is "$STATUS:$(jb '.token | length > 10')" 200:true "the deprecated /v2/users/login still works"
http HEAD "$HUB/v2/namespaces/$U/repositories/made" "${H[@]}"
is "$STATUS" 404 "HEAD a repository that does not exist: 404"
http POST "$HUB/v2/namespaces/$U/repositories" -H 'Content-Type: application/json' -d '{"name":"made","is_private":true}'
is "$STATUS" 401 "creating a repository without a token: 401"
standin_control d deny_create=1 >/dev/null
http POST "$HUB/v2/namespaces/$U/repositories" "${H[@]}" -H 'Content-Type: application/json' -d '{"name":"made","is_private":true}'
is "$STATUS" 403 "deny_create: 403"
standin_control d deny_create=0 >/dev/null
http POST "$HUB/v2/namespaces/$U/repositories" "${H[@]}" -H 'Content-Type: application/json' -d '{"name":"made","is_private":true,"description":"x"}'
is "$STATUS:$(jb .name):$(jb .is_private)" 201:made:true "POST /v2/namespaces/{ns}/repositories: 201"
http POST "$HUB/v2/namespaces/$U/repositories" "${H[@]}" -H 'Content-Type: application/json' -d '{"name":"made"}'
is "$STATUS" 409 "the same again: 409"
http POST "$HUB/v2/namespaces/someone/repositories" "${H[@]}" -H 'Content-Type: application/json' -d '{"name":"made"}'
is "$STATUS" 403 "in someone else's namespace: 403"
http HEAD "$HUB/v2/namespaces/$U/repositories/made" "${H[@]}"
is "$STATUS" 200 "HEAD it now: 200"
http GET "$AU/token?service=registry.docker.io&scope=repository:$U/made:pull"
http GET "$R/v2/$U/made/tags/list" -H "Authorization: Bearer $(jb .token)"
is "$STATUS" 401 "a private repository: no anonymous pull"
http GET "$HUB/v2/namespaces/$U/repositories?page_size=1" "${H[@]}"
is "$(jb .count):$(jb '.results[0].name'):$(jb .previous)" 2:app:null "repositories page 1 of size 1: count 2"
is "$(jb .next)" "$HUB/v2/namespaces/$U/repositories?page_size=1&page=2" "next is the absolute URL of page 2"
http GET "$(jb .next)" "${H[@]}"
is "$(jb '.results[0].name'):$(jb .next):$(jb .previous | sed 's/.*page=//')" made:null:1 "page 2: the last, previous page=1"
http GET "$HUB/v2/namespaces/$U/repositories?page=3&page_size=1" "${H[@]}"
is "$STATUS" 404 "a page beyond the range: 404"
http GET "$HUB/v2/namespaces/$U/repositories" 
is "$(jb '[.results[].name] | join(",")')" app "anonymous: the public repositories only"
http GET "$HUB/v2/namespaces/$U/repositories/app/tags?page_size=2" "${H[@]}"
is "$(jb .count):$(jb '[.results[].name] | join(",")')" 3:v1,v2 "tags page 1 of size 2: count 3"
is "$(jb '.results[0].digest'):$(jb '.results[0].full_size > 0'):$(jb '.results[0].images[0].digest')" "$d1:true:$d1" \
    "a tag has digest, full_size and images"
http GET "$HUB/v2/namespaces/$U/repositories/app/tags?page_size=101" "${H[@]}"
is "$STATUS" 400 "page_size above 100: refused"
http GET "$HUB/v2/repositories/$U/?page_size=100" "${H[@]}"
is "$(jb .count)" 2 "Harbor's older path /v2/repositories/{ns}/ lists too"
http GET "$HUB/v2/repositories/namespaces" "${H[@]}"
is "$(jb '.namespaces | join(",")')" "$U,$ORG" "/v2/repositories/namespaces: the user and the org"
http GET "$HUB/v2/orgs/$ORG/" "${H[@]}"
is "$STATUS" 200 "GET /v2/orgs/{org}/: 200"
http GET "$HUB/v2/orgs/neworg/" "${H[@]}"
is "$STATUS" 404 "an unknown org: 404"
http POST "$HUB/v2/orgs/" "${H[@]}" -H 'Content-Type: application/json' -d '{"orgname":"neworg","full_name":"","company":"","location":"","profile_url":"","gravatar_email":""}'
is "$STATUS" 201 "POST /v2/orgs/: 201"
http POST "$HUB/v2/orgs/" "${H[@]}" -H 'Content-Type: application/json' -d '{"orgname":"neworg"}'
is "$STATUS" 409 "the same org again: 409"
http DELETE "$HUB/v2/repositories/$U/app/tags/v2/" "${H[@]}"
is "$STATUS" 204 "DELETE /v2/repositories/{ns}/{repo}/tags/{tag}/: 204"
is "$(curl -s "$UP/v2/$U/app/tags/list" | jq -r '.tags | sort | join(",")')" v1,v3 "the tag is gone upstream"
http DELETE "$HUB/v2/repositories/$U/app/tags/v2/" "${H[@]}"
is "$STATUS" 404 "again: 404"

# --- faults and expiry ----------------------------------------------------------------------
standin_control d fail_next=1 status=429 retry_after=5 fail_listener=hub >/dev/null
http GET "$HUB/v2/namespaces/$U/repositories" "${H[@]}"
is "$STATUS:$(hdr retry-after)" 429:5 "fail_next on hub: 429 with Retry-After in seconds"
like "$(hdr x-ratelimit-reset)" '^[0-9]{10}$' "and X-RateLimit-Reset"
standin_control d fail_next=1 status=429 fail_listener=registry >/dev/null
http GET "$R/v2/$U/app/tags/list" -H "Authorization: Bearer $PT"
is "$STATUS:$BODY" "429:Too Many Requests" "on the registry: the plain abuse-limit 429"
standin_control d expire_tokens=1 >/dev/null
http GET "$R/v2/$U/app/tags/list" -H "Authorization: Bearer $PT"
is "$STATUS" 401 "expire_tokens: the registry token stops working"
like "$(hdr www-authenticate)" 'error="invalid_token"' "with error=invalid_token"
http GET "$HUB/v2/namespaces/$U/repositories" "${H[@]}"
is "$STATUS" 401 "and so does the Hub JWT"
http GET "$R/v2/$U/app/tags/list" -H "Authorization: Bearer $(tok "$U:$P" "repository:$U/app:pull")"
is "$STATUS" 200 "a new token works"

recs=$(for u in "$R" "$AU" "$HUB"; do curl -s "$u/_standin/requests"; done)
if grep -q -- "$P\|$PAT\|$HT" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "no password, PAT or token appears in the records"

done_testing
