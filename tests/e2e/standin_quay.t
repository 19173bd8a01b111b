#!/usr/bin/env bash
# The Quay stand-in (tests/standins/quay.py) behaves as registry-kinds.md
# section 4 describes: the /v2/auth token flow ($oauthtoken too), repositories
# created at token time in an existing namespace and none for a missing one,
# organization and repository creation (201, then 400 "already exists"),
# _catalog and the REST listing paged with next_page, tags paged with
# page/limit/has_additional, deletion by tag on both APIs, the schema-1 quirk
# of a manifest PUT without a media type, nginx's HTML 429, token expiry;
# pushes land in the Distribution registry behind it.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

RT=robot$RANDOM$RANDOM$RANDOM
standin_start quay q "$SI_WORK/q" --page-size 2 --robot "robots+mirror:$RT"
R=$STANDIN_Q_URL UP=$STANDIN_Q_UPSTREAM_URL U=$STANDIN_Q_USER P=$STANDIN_Q_PASS OT=$STANDIN_Q_OAUTH_TOKEN
A=(-H "Authorization: Bearer $OT")
tok() {   # tok CREDS SCOPE
    curl -s ${1:+-u "$1"} "$R/v2/auth?service=${R#http://}&scope=$2" | jq -r .token
}

# --- auth ----------------------------------------------------------------------------
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Bearer realm=\"$R/v2/auth\",service=\"${R#http://}\"" \
    "/v2/: 401, realm <origin>/v2/auth, service the host"
http GET "$R/v2/$U/app/tags/list"
is "$(hdr www-authenticate)" "Bearer realm=\"$R/v2/auth\",service=\"${R#http://}\",scope=\"repository:$U/app:pull\"" \
    "a repository endpoint adds the scope"
http GET "$R/v2/auth?service=${R#http://}"
is "$STATUS" 401 "/v2/auth with no user and no scope: 401"
http GET "$R/v2/auth?service=${R#http://}&scope=repository:$U/app:pull" -u "$U:wrong"
is "$STATUS" 401 "/v2/auth with a wrong password: 401"
http GET "$R/v2/auth?service=${R#http://}&scope=repository:$U/app:pull,push" -u "$U:$P"
is "$STATUS:$(jb 'keys | join(",")')" "200:token" "/v2/auth with the password: {\"token\"}"
T=$(jb .token)
http GET "$R/v2/" -H "Authorization: Bearer $T"
is "$STATUS" 200 "the token works on /v2/"
http GET "$R/api/v1/repository/$U/app" "${A[@]}"
is "$STATUS:$(jb .is_public)" 200:false "asking for push created $U/app at token time, private"
http GET "$R/v2/auth?service=${R#http://}&scope=repository:neworg/app:pull,push" -u "\$oauthtoken:$OT"
is "$STATUS" 200 "\$oauthtoken:<token> is accepted"
NT=$(jb .token)
http POST "$R/v2/neworg/app/blobs/uploads/" -H "Authorization: Bearer $NT"
is "$STATUS" 401 "a missing namespace got no access: the push is refused"
http GET "$R/api/v1/repository/neworg/app" "${A[@]}"
is "$STATUS:$(jb .error_type)" 404:not_found "and no repository was made"

# --- organizations and repositories ----------------------------------------------------
http POST "$R/api/v1/organization/" -H 'Content-Type: application/json' -d '{"name":"neworg","email":"neworg@quay.io"}'
is "$STATUS:$(jb .error_type)" 401:invalid_token "the API without the OAuth token: 401"
http GET "$R/api/v1/organization/neworg" "${A[@]}"
is "$STATUS" 404 "GET /api/v1/organization/neworg: 404 before creation"
standin_control q deny_create=1 >/dev/null
http POST "$R/api/v1/organization/" "${A[@]}" -H 'Content-Type: application/json' -d '{"name":"neworg","email":"neworg@quay.io"}'
is "$STATUS" 403 "deny_create: 403"
standin_control q deny_create=0 >/dev/null
http POST "$R/api/v1/organization/" "${A[@]}" -H 'Content-Type: application/json' -d '{"name":"neworg","email":"neworg@quay.io"}'
is "$STATUS:$BODY" '201:"Created"' "POST /api/v1/organization/: 201 \"Created\""
http POST "$R/api/v1/organization/" "${A[@]}" -H 'Content-Type: application/json' -d '{"name":"neworg","email":"neworg@quay.io"}'
is "$STATUS:$(jb .error_type):$(jb .detail)" "400:invalid_request:A user or organization with this name already exists" \
    "the same again: 400 invalid_request, already exists"
http POST "$R/api/v1/repository" "${A[@]}" -H 'Content-Type: application/json' \
    -d '{"repository":"web","visibility":"public","namespace":"neworg","description":"","repo_kind":"image"}'
is "$STATUS:$BODY" '201:{"namespace": "neworg", "name": "web", "kind": "image"}' "POST /api/v1/repository: 201"
http POST "$R/api/v1/repository" "${A[@]}" -H 'Content-Type: application/json' \
    -d '{"repository":"web","visibility":"public","namespace":"neworg","description":""}'
is "$STATUS:$(jb .detail)" "400:Repository already exists" "again: 400 Repository already exists"
for r in a b c; do
    curl -s -o /dev/null "${A[@]}" -H 'Content-Type: application/json' \
        -d "{\"repository\":\"$r\",\"visibility\":\"private\",\"namespace\":\"neworg\",\"description\":\"\"}" "$R/api/v1/repository"
done

# --- pushes -------------------------------------------------------------------------------
NT=$(tok "$U:$P" "repository:neworg/app:pull,push")
d1=$(standin_push "$R" neworg/app v1 -H "Authorization: Bearer $NT")
for t in v2 v3; do standin_push "$R" neworg/app "$t" -H "Authorization: Bearer $NT" >/dev/null; done
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/neworg/app/manifests/v1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d1" \
    "with the org existing, the push lands upstream"
cfg=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/neworg/app/manifests/v1")
http PUT "$R/v2/neworg/app/manifests/v9" -H "Authorization: Bearer $NT" -H 'Content-Type: application/json' --data-binary "$cfg"
is "$STATUS:$(jb '.errors[0].code')" 400:MANIFEST_INVALID "a manifest PUT with Content-Type application/json is parsed as schema 1: refused"
http PUT "$R/v2/neworg/app/manifests/v9" -H "Authorization: Bearer $NT" -H 'Content-Type:' --data-binary "$cfg"
is "$STATUS" 400 "and one without Content-Type too"
http GET "$R/v2/neworg/web/tags/list" -H "Authorization: Bearer $(tok "" repository:neworg/web:pull)"
is "$STATUS" 200 "a public repository: anonymous pull works"
http GET "$R/v2/neworg/a/tags/list" -H "Authorization: Bearer $(tok "" repository:neworg/a:pull)"
is "$STATUS" 401 "a private one: refused"

# --- listing --------------------------------------------------------------------------------
http GET "$R/v2/_catalog?n=2" -H "Authorization: Bearer $T"
is "$(jb '.repositories | join(",")')" "neworg/a,neworg/app" "_catalog n=2: the first two visible"
like "$(hdr link)" "^<$R/v2/_catalog\\?n=2&next_page=[A-Za-z0-9_-]+>; rel=\"next\"\$" "Link with an opaque next_page"
http GET "$(hdr link | sed 's/^<\(.*\)>.*/\1/')" -H "Authorization: Bearer $T"
is "$(jb '.repositories | join(",")')" "neworg/b,neworg/c" "following it gives the next two"
http GET "$R/v2/_catalog?n=2&next_page=forged" -H "Authorization: Bearer $T"
is "$STATUS" 400 "a forged next_page: 400"
http GET "$R/v2/_catalog?n=500"
is "$(jb '.repositories | join(",")')" "neworg/web" "anonymous: public repositories only, n capped"
http GET "$R/api/v1/repository" "${A[@]}"
is "$STATUS:$(jb .error_type)" 400:invalid_request "GET /api/v1/repository without namespace/starred/public: 400"
http GET "$R/api/v1/repository?namespace=neworg" "${A[@]}"
is "$(jb '[.repositories[].name] | join(",")')" a,app "REST listing, page 1"
np=$(jb .next_page)
http GET "$R/api/v1/repository?namespace=neworg&next_page=$np" "${A[@]}"
is "$(jb '[.repositories[].name] | join(",")')" b,c "next_page: page 2"
http GET "$R/api/v1/repository?namespace=neworg&next_page=$(jb .next_page)" "${A[@]}"
is "$(jb '[.repositories[].name] | join(",")'):$(jb .next_page)" web:null "the last page has no next_page"
http GET "$R/api/v1/repository/neworg/app/tag/?limit=2" "${A[@]}"
is "$(jb '[.tags[].name] | join(",")'):$(jb .page):$(jb .has_additional)" v1,v2:1:true "tags limit=2: page 1, has_additional"
is "$(jb '.tags[0].manifest_digest')" "$d1" "with manifest_digest"
http GET "$R/api/v1/repository/neworg/app/tag/?limit=2&page=2" "${A[@]}"
is "$(jb '[.tags[].name] | join(",")'):$(jb .has_additional)" v3:false "page 2: the last"

# --- deletion --------------------------------------------------------------------------------
http DELETE "$R/api/v1/repository/neworg/app/tag/v2" "${A[@]}"
is "$STATUS" 204 "DELETE /api/v1/repository/{ns}/{repo}/tag/{tag}: 204"
DT=$(tok "$U:$P" "repository:neworg/app:pull,push,delete")
http DELETE "$R/v2/neworg/app/manifests/v3" -H "Authorization: Bearer $DT"
is "$STATUS" 202 "registry DELETE by tag: 202"
http DELETE "$R/v2/neworg/app/manifests/$d1" -H "Authorization: Bearer $DT"
is "$STATUS" 202 "registry DELETE by digest: 202"
is "$(curl -s "$UP/v2/neworg/app/tags/list" | jq -r '.tags // [] | length')" 0 "all three are gone upstream"

# --- robot accounts ------------------------------------------------------------------------------
http GET "$R/v2/auth?service=${R#http://}&scope=repository:robots/app:pull,push" -u "robots+mirror:wrong"
is "$STATUS" 401 "a robot account with a wrong token: 401"
RTOK=$(tok "robots+mirror:$RT" "repository:robots/app:pull,push")
standin_push "$R" robots/app v1 -H "Authorization: Bearer $RTOK" >/dev/null
is "$(curl -s "$UP/v2/robots/app/tags/list" | jq -r '.tags | join(",")')" v1 \
    "robots+mirror pushes into its own namespace (the repository is created at token time)"
http POST "$R/v2/neworg/app/blobs/uploads/" -H "Authorization: Bearer $(tok "robots+mirror:$RT" "repository:neworg/app:pull,push")"
is "$STATUS" 401 "but nowhere else"
http GET "$R/v2/_catalog" -H "Authorization: Bearer $(tok "robots+mirror:$RT" "repository:robots/app:pull")"
is "$(jb '.repositories | join(",")')" "neworg/web,robots/app" "its catalog: its namespace and public repositories"

# --- faults and expiry --------------------------------------------------------------------------
standin_control q fail_next=1 status=429 retry_after=3 >/dev/null
http GET "$R/v2/neworg/web/tags/list" -H "Authorization: Bearer $T"
is "$STATUS:$(hdr content-type):$(hdr retry-after)" "429:text/html:3" "fail_next: nginx's HTML 429 with Retry-After"
like "$BODY" '<title>429 Too Many Requests</title>' "the nginx page"
standin_control q expire_tokens=1 >/dev/null
http GET "$R/v2/" -H "Authorization: Bearer $T"
is "$STATUS" 401 "expire_tokens: the token stops working"
http GET "$R/v2/" -H "Authorization: Bearer $(tok "$U:$P" "repository:neworg/web:pull")"
is "$STATUS" 200 "a new token works"

recs=$(curl -s "$R/_standin/requests")
if grep -q -- "$P\|$OT\|$T\|$RT" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "no password, OAuth token or registry token appears in the record"

done_testing
