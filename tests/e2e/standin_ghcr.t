#!/usr/bin/env bash
# The GHCR stand-in (tests/standins/ghcr.py) behaves as registry-kinds.md
# section 3 describes: the ghcr.io challenge (a placeholder scope on /v2/),
# tokens for user:PAT with no expires_in, Basic refused on /v2/, packages
# private on first push, no _catalog, no registry DELETE, a PATCH over 4 MiB
# refused with 416 (its size in the record), and the packages
# REST API (scopes, Link paging, versions with their tags, version deletion);
# faults and token expiry; pushes land in the Distribution registry behind.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

standin_start ghcr g "$SI_WORK/g"
R=$STANDIN_G_URL API=$STANDIN_G_API_URL UP=$STANDIN_G_UPSTREAM_URL
U=$STANDIN_G_USER PAT=$STANDIN_G_PAT ORG=$STANDIN_G_ORG
tok() {   # tok CREDS SCOPE
    curl -s ${1:+-u "$1"} "$R/token?scope=$2&service=ghcr.io" | jq -r .token
}
GH=(-H "Authorization: Bearer $PAT" -H 'Accept: application/vnd.github+json')

# --- registry auth ------------------------------------------------------------------
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Bearer realm=\"$R/token\",service=\"ghcr.io\",scope=\"repository:user/image:pull\"" \
    "/v2/: 401 with the placeholder scope repository:user/image:pull"
is "$BODY" '{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}' "and GHCR's body"
http GET "$R/v2/$ORG/app/tags/list"
is "$(hdr www-authenticate)" "Bearer realm=\"$R/token\",service=\"ghcr.io\",scope=\"repository:$ORG/app:pull\"" \
    "a repository endpoint names the real scope"
http GET "$R/v2/" -u "$U:$PAT"
is "$STATUS:$(jb '.errors[0].code'):$(jb '.errors[0].message')" "403:DENIED:invalid token" "Basic straight on /v2/: DENIED invalid token"
http GET "$R/token?scope=repository:$ORG/app:pull,push&service=ghcr.io" -u "$U:ghp_wrong"
is "$STATUS:$(jb '.errors[0].code')" 403:DENIED "the token endpoint with a wrong PAT: refused"
http GET "$R/token?scope=repository:$ORG/app:pull,push&service=ghcr.io" -u "$U:$PAT"
is "$STATUS:$(jb 'keys | join(",")')" "200:token" "with the PAT: {\"token\"} only, no expires_in"
T=$(jb .token)
http GET "$R/v2/" -H "Authorization: Bearer $T"
is "$STATUS" 200 "the token works on /v2/"

# --- pushes ---------------------------------------------------------------------------
d1=$(standin_push "$R" "$ORG/app" v1 -H "Authorization: Bearer $T")
d2=$(standin_push "$R" "$ORG/app" v2 -H "Authorization: Bearer $T")
standin_push "$R" "$ORG/app" latest -H "Authorization: Bearer $T" >/dev/null
T2=$(tok "$U:$PAT" "repository:$ORG/tools/cli:pull,push")
standin_push "$R" "$ORG/tools/cli" v1 -H "Authorization: Bearer $T2" >/dev/null
UT=$(tok "$U:$PAT" "repository:$U/mine:pull,push")
standin_push "$R" "$U/mine" v1 -H "Authorization: Bearer $UT" >/dev/null
is "$(curl -s "$UP/v2/_catalog" | jq -r '.repositories | join(",")')" "$U/mine,$ORG/app,$ORG/tools/cli" "the packages are in the upstream"
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/$ORG/app/manifests/v2" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d2" \
    "with the digests pushed"
http POST "$R/v2/someone/else/blobs/uploads/" -H "Authorization: Bearer $(tok "$U:$PAT" repository:someone/else:pull,push)"
is "$STATUS:$(jb '.errors[0].code')" 403:DENIED "a push under another owner: 403 DENIED"
http GET "$R/v2/$ORG/app/tags/list" -H "Authorization: Bearer $(tok "" "repository:$ORG/app:pull")"
is "$STATUS" 401 "a new package is private: no anonymous pull"
standin_control g "make_public=$ORG/app" >/dev/null
http GET "$R/v2/$ORG/app/tags/list" -H "Authorization: Bearer $(tok "" "repository:$ORG/app:pull")"
is "$STATUS:$(jb '.tags | length')" 200:3 "once public: anonymous pull works"
http GET "$R/v2/_catalog" -H "Authorization: Bearer $T"
is "$STATUS" 404 "/v2/_catalog: 404"
http DELETE "$R/v2/$ORG/app/manifests/$d1" -H "Authorization: Bearer $T"
is "$STATUS:$(jb '.errors[0].code')" 405:UNSUPPORTED "manifest DELETE on the registry: not supported"
standin_control g pat_scopes=read:packages >/dev/null
http POST "$R/v2/$ORG/app/blobs/uploads/" -H "Authorization: Bearer $(tok "$U:$PAT" "repository:$ORG/app:pull,push")"
is "$STATUS" 403 "a PAT without write:packages cannot push"
standin_control g pat_scopes=read:packages,write:packages,delete:packages >/dev/null
head -c $((4 << 20)) /dev/zero >"$SI_WORK/4m"
head -c $(((4 << 20) + 1)) /dev/zero >"$SI_WORK/4m1"
http POST "$R/v2/$ORG/app/blobs/uploads/" -H "Authorization: Bearer $T"
loc=$(hdr location)
[[ $loc == /* ]] && loc=$R$loc
http PATCH "$loc" -H "Authorization: Bearer $T" -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-$(((4 << 20)))" --data-binary @"$SI_WORK/4m1"
is "$STATUS:$(jb '.errors[0].code'):$(jb '.errors[0].message')" \
    "416:REQUESTED_RANGE_NOT_SATISFIABLE:the request body is too large and exceeds the maximum permissible limit of 4.00MiB" \
    "a PATCH of 4 MiB and a byte: 416, as GHCR is reported to answer"
http PATCH "$loc" -H "Authorization: Bearer $T" -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-$(((4 << 20) - 1))" --data-binary @"$SI_WORK/4m"
is "$STATUS" 202 "one of 4 MiB: accepted"
is "$(curl -s "$R/_standin/requests" | jq -r '[.[] | select(.method == "PATCH") | "\(.bytes):\(.status)"] | join(",")')" \
    "4194305:416,4194304:202" "the record holds each PATCH's size"

# --- the packages API -------------------------------------------------------------------
http GET "$API/orgs/$ORG/packages?package_type=container"
is "$STATUS:$(jb .message)" "401:Requires authentication" "no token: 401 Requires authentication"
http GET "$API/orgs/$ORG/packages?package_type=container" -H "Authorization: Bearer ghp_wrong"
is "$STATUS:$(jb .message)" "401:Bad credentials" "a wrong token: 401 Bad credentials"
http GET "$API/orgs/$ORG/packages" "${GH[@]}"
is "$STATUS" 422 "without package_type: 422"
http GET "$API/orgs/$ORG/packages?package_type=container&per_page=1" "${GH[@]}"
is "$STATUS:$(jb '[.[].name] | join(",")'):$(jb '.[0].visibility')" "200:app:public" "org packages, per_page=1: app"
is "$(hdr link)" "<$API/orgs/$ORG/packages?package_type=container&per_page=1&page=2>; rel=\"next\", <$API/orgs/$ORG/packages?package_type=container&per_page=1&page=2>; rel=\"last\"" \
    "Link has next and last"
is "$(hdr x-ratelimit-limit):$(hdr x-ratelimit-resource)" 5000:core "and x-ratelimit headers"
http GET "$API/orgs/$ORG/packages?package_type=container&per_page=1&page=2" "${GH[@]}"
is "$(jb '.[0].name'):$(jb '.[0].visibility')" tools/cli:private "page 2: tools/cli, private"
like "$(hdr link)" 'rel="prev".*rel="first"' "with prev and first"
http GET "$API/user/packages?package_type=container" "${GH[@]}"
is "$(jb '[.[].name] | join(",")')" mine "/user/packages: the user's own"
http GET "$API/users/$U/packages?package_type=container" "${GH[@]}"
is "$(jb '[.[].name] | join(",")')" mine "/users/{u}/packages too"
http GET "$API/orgs/$ORG/packages/container/tools%2Fcli" "${GH[@]}"
is "$STATUS:$(jb .name)" 200:tools/cli "a package whose name has / (encoded %2F)"
http GET "$API/orgs/$ORG/packages/container/app/versions" "${GH[@]}"
is "$STATUS:$(jb length)" 200:3 "versions of app: 3"
is "$(jb '[.[] | .name + "=" + (.metadata.container.tags | join("+"))] | sort | join(",")' | tr ',' '\n' | grep -c '^sha256:.*=\(v1\|v2\|latest\)$')" 3 \
    "each version is a digest with metadata.container.tags"
vid=$(jb ".[] | select(.name == \"$d1\") | .id")
standin_control g pat_scopes=read:packages >/dev/null
http DELETE "$API/orgs/$ORG/packages/container/app/versions/$vid" "${GH[@]}"
is "$STATUS" 403 "deleting a version without delete:packages: 403"
http GET "$API/orgs/$ORG/packages?package_type=container" "${GH[@]}"
is "$STATUS" 200 "listing with read:packages only: 200"
standin_control g pat_scopes= >/dev/null
http GET "$API/orgs/$ORG/packages?package_type=container" "${GH[@]}"
is "$STATUS:$(jb .message)" "403:You need at least read:packages scope to list packages." "listing without read:packages: 403"
standin_control g pat_scopes=read:packages,write:packages,delete:packages >/dev/null
http DELETE "$API/orgs/$ORG/packages/container/app/versions/$vid" "${GH[@]}"
is "$STATUS" 204 "DELETE a version: 204"
is "$(curl -s "$UP/v2/$ORG/app/tags/list" | jq -r '.tags | sort | join(",")'):$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/$ORG/app/manifests/$d1")" \
    "latest,v2:404" "its tag and manifest are gone upstream"
http DELETE "$API/orgs/$ORG/packages/container/app/versions/$vid" "${GH[@]}"
is "$STATUS" 404 "again: 404"

# --- faults and expiry -------------------------------------------------------------------
standin_control g fail_next=1 status=429 retry_after=7 fail_listener=api >/dev/null
http GET "$API/orgs/$ORG/packages?package_type=container" "${GH[@]}"
is "$STATUS:$(hdr retry-after):$(hdr x-ratelimit-remaining)" 429:7:0 "fail_next on the API: 429, Retry-After, x-ratelimit-remaining 0"
standin_control g fail_next=1 status=429 retry_after=2 fail_listener=registry >/dev/null
http GET "$R/v2/$ORG/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS:$(hdr retry-after)" 429:2 "on the registry: 429 with Retry-After"
standin_control g expire_tokens=1 >/dev/null
http GET "$R/v2/$ORG/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS" 401 "expire_tokens: the token stops working"
http GET "$R/v2/$ORG/app/tags/list" -H "Authorization: Bearer $(tok "$U:$PAT" "repository:$ORG/app:pull")"
is "$STATUS" 200 "a new token works"

recs=$(for u in "$R" "$API"; do curl -s "$u/_standin/requests"; done)
if grep -q -- "$PAT\|$T" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "neither the PAT nor a token appears in the records"

done_testing
