#!/usr/bin/env bash
# The Harbor stand-in (tests/standins/harbor.py) behaves as registry-kinds.md
# section 1 describes: the v2auth challenges, the token service, projects
# (HEAD/GET with q=name={...}/POST 201, 409, 400, 403), listing with
# X-Total-Count and Link paging and twice-encoded repository names, tag
# deletion, the push refusal into a missing project, the fault controls and
# token expiry; what is pushed lands in the Distribution registry behind it.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

standin_start harbor h "$SI_WORK/h"
U=$STANDIN_H_URL UP=$STANDIN_H_UPSTREAM_URL AUTH="replica:$STANDIN_H_PASS"
token() {   # token SCOPE...: a token from /service/token with the right credentials
    local q="service=harbor-registry" s
    for s in "$@"; do q+="&scope=$s"; done
    curl -s -u "$AUTH" "$U/service/token?$q" | jq -r .token
}

# --- auth ----------------------------------------------------------------------
http GET "$U/v2/"
is "$STATUS" 401 "/v2/ without credentials: 401"
is "$(hdr www-authenticate)" "Bearer realm=\"$U/service/token\",service=\"harbor-registry\"" \
    "the challenge names the token service on the same origin and service harbor-registry"
is "$(hdr docker-distribution-api-version)" "registry/2.0" "with Docker-Distribution-Api-Version"
is "$(jb '.errors[0].code')" UNAUTHORIZED "and an UNAUTHORIZED error body"
http GET "$U/v2/" -u replica:wrong
is "$STATUS:$(hdr www-authenticate)" '401:Basic realm="harbor"' "wrong Basic credentials: 401 with Basic realm=\"harbor\""
http GET "$U/v2/" -u "$AUTH"
is "$STATUS" 200 "right Basic credentials on /v2/: 200"
http GET "$U/service/token?service=harbor-registry&scope=repository:library/app:pull" -u replica:wrong
is "$STATUS" 401 "token service, wrong credentials: 401"
http GET "$U/service/token?service=other&scope=repository:library/app:pull" -u "$AUTH"
is "$STATUS" 400 "token service, unknown service: 400"
http POST "$U/service/token?service=harbor-registry" -u "$AUTH"
is "$STATUS" 405 "token service, POST: 405"
http GET "$U/service/token?service=harbor-registry&scope=repository:library/app:pull,push" -u "$AUTH"
is "$STATUS" 200 "token service, right credentials: 200"
is "$(jb '[has("token"), has("access_token"), .expires_in, (.issued_at | test("^[0-9-]+T"))] | @tsv')" \
    "$(printf 'true\ttrue\t300\ttrue')" "with token, access_token, expires_in (the --token-ttl) and issued_at"
claims=$(jb .token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null || true)
is "$(jq -c '[.aud, .access]' <<<"$claims" 2>/dev/null)" \
    '["harbor-registry",[{"type":"repository","name":"library/app","actions":["pull","push"]}]]' \
    "a JWT whose access claim grants the requested actions"
T=$(jb .token)
http GET "$U/v2/" -H "Authorization: Bearer $T"
is "$STATUS" 200 "the token works on /v2/"

# --- projects --------------------------------------------------------------------
http HEAD "$U/api/v2.0/projects?project_name=team" -u "$AUTH"
is "$STATUS" 404 "HEAD ?project_name=team before creation: 404"
http POST "$U/v2/team/app/blobs/uploads/" -u "$AUTH"
is "$STATUS:$BODY" '404:{"errors": [{"code": "NOT_FOUND", "message": "project team not found"}]}' \
    "a push into a missing project: 404 NOT_FOUND \"project team not found\""
http POST "$U/api/v2.0/projects" -H 'Content-Type: application/json' -d '{"project_name":"team","metadata":{"public":"false"}}'
is "$STATUS" 401 "creating a project without credentials: 401"
http POST "$U/api/v2.0/projects" -u "$AUTH" -H 'Content-Type: application/json' -d '{"project_name":"team","metadata":{"public":false}}'
is "$STATUS" 400 "metadata values must be strings: 400"
http POST "$U/api/v2.0/projects" -u "$AUTH" -H 'Content-Type: application/json' -d '{"project_name":"Bad Name"}'
is "$STATUS:$(jb '.errors[0].code')" 400:BAD_REQUEST "an invalid project name: 400 BAD_REQUEST"
standin_control h deny_create=1 >/dev/null
http POST "$U/api/v2.0/projects" -u "$AUTH" -H 'Content-Type: application/json' -d '{"project_name":"team","metadata":{"public":"false"}}'
is "$STATUS:$(jb '.errors[0].code')" 403:FORBIDDEN "deny_create: 403 FORBIDDEN"
standin_control h deny_create=0 >/dev/null
http POST "$U/api/v2.0/projects" -u "$AUTH" -H 'Content-Type: application/json' -d '{"project_name":"team","metadata":{"public":"false"}}'
is "$STATUS" 201 "POST /api/v2.0/projects: 201"
like "$(hdr location)" '^/api/v2.0/projects/[0-9]+$' "with a Location"
http POST "$U/api/v2.0/projects" -u "$AUTH" -H 'Content-Type: application/json' -d '{"project_name":"team","metadata":{"public":"false"}}'
is "$STATUS:$(jb '.errors[0].code')" 409:CONFLICT "the same project again: 409 CONFLICT"
http HEAD "$U/api/v2.0/projects?project_name=team" -u "$AUTH"
is "$STATUS" 200 "HEAD ?project_name=team now: 200"
http GET "$U/api/v2.0/projects?q=name%3D%7B%27team%27+%27nope%27%7D&with_detail=false" -u "$AUTH"
is "$(jb '[.[].name] | join(",")'):$(jb '.[0].registry_id'):$(jb '.[0].metadata.public')" "team:0:false" \
    "q=name={'team' 'nope'} finds team only, registry_id 0, metadata as strings"
http GET "$U/api/v2.0/projects" 
is "$(jb '[.[].name] | join(",")')" library "anonymous listing shows the public projects only"

# --- push through the stand-in -------------------------------------------------------
http GET "$U/v2/team/app/tags/list"
is "$STATUS" 401 "a private repository without credentials: 401"
is "$(hdr www-authenticate)" "Bearer realm=\"$U/service/token\",service=\"harbor-registry\",scope=\"repository:team/app:pull\"" \
    "the challenge carries the repository scope"
http HEAD "$U/v2/library/app/manifests/v1"
is "$STATUS" 401 "HEAD on a repository without an Authorization header: 401 even when public"
PT=$(token repository:team/app:pull)
http POST "$U/v2/team/app/blobs/uploads/" -H "Authorization: Bearer $PT"
is "$STATUS:$(hdr www-authenticate)" '401:Basic realm="harbor"' "a pull-only token cannot push: 401, Basic challenge (a header was sent)"
is "$(jb '.errors[0].message')" "unauthorized to access repository: team/app, action: push" "saying which action"
T=$(token repository:team/app:pull,push)
d1=$(standin_push "$U" team/app v1 -H "Authorization: Bearer $T")
d2=$(standin_push "$U" team/app v2 -H "Authorization: Bearer $T")
d3=$(standin_push "$U" team/app v3 -u "$AUTH")
standin_push "$U" team/sub/app v1 -u "$AUTH" >/dev/null
got=$(for t in v1 v2 v3; do curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/team/app/manifests/$t" |
      tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'; done | tr '\n' ' ')
is "$got" "$d1 $d2 $d3 " "the three manifests pushed through the stand-in are in the upstream registry"
layer=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/team/app/manifests/v1" | jq -r '.layers[0].digest')
is "$(curl -s -o /dev/null -w '%{http_code}' -I "$UP/v2/team/app/blobs/$layer")" 200 "and so is the layer"
http GET "$U/v2/team/app/blobs/$layer" -H "Authorization: Bearer $T"
is "$STATUS:$(hdr docker-content-digest)" "200:$layer" "a blob GET through the stand-in keeps Docker-Content-Digest"
http GET "$U/v2/team/app/blobs/$layer" -H "Authorization: Bearer $T" -H 'Range: bytes=0-4'
is "$STATUS:${#BODY}:$(hdr content-range)" "206:5:bytes 0-4/$(curl -s "$UP/v2/team/app/blobs/$layer" | wc -c)" "a Range request is passed through (206, Content-Range)"
head -c 300000 /dev/urandom >"$SI_WORK/blob"
bd=sha256:$(sha256sum "$SI_WORK/blob" | cut -d' ' -f1)
loc=$(curl -s -D - -o /dev/null -X POST -u "$AUTH" "$U/v2/team/app/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
http PATCH "$loc" -u "$AUTH" -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/octet-stream' --data-binary @"$SI_WORK/blob"
is "$STATUS:$(hdr range)" "202:0-299999" "a PATCH sent with Transfer-Encoding: chunked is streamed through (Range 0-299999)"
http PUT "$(hdr location)&digest=${bd/:/%3A}" -u "$AUTH"
is "$STATUS:$(curl -s "$UP/v2/team/app/blobs/$bd" | sha256sum | cut -d' ' -f1)" "201:${bd#sha256:}" "and the blob is whole upstream"
http POST "$U/v2/team/app/blobs/uploads/" -H "Authorization: Bearer $T"
like "$(hdr location)" "^$U/v2/team/app/blobs/uploads/" "an upload Location names the stand-in's origin, not the upstream's"

# --- listing -------------------------------------------------------------------------
http GET "$U/api/v2.0/projects/team/repositories" -u "$AUTH"
is "$(hdr x-total-count):$(jb '[.[].name] | join(",")')" "2:team/app,team/sub/app" "repositories of team, X-Total-Count 2"
http GET "$U/api/v2.0/projects/team/repositories/app/artifacts?page_size=2&with_tag=true" -u "$AUTH"
is "$STATUS:$(hdr x-total-count):$(jb length)" 200:3:2 "artifacts page 1 of size 2: 2 of 3"
is "$(hdr link)" '</api/v2.0/projects/team/repositories/app/artifacts?page=2&page_size=2&with_tag=true>; rel="next"' \
    "Link rel=\"next\" keeps the other query parameters"
http GET "$U/api/v2.0/projects/team/repositories/app/artifacts?page=2&page_size=2&with_tag=true" -u "$AUTH"
is "$(jb length):$(hdr link)" '1:</api/v2.0/projects/team/repositories/app/artifacts?page=1&page_size=2&with_tag=true>; rel="prev"' \
    "page 2: the last artifact, and only a rel=\"prev\" link"
http GET "$U/api/v2.0/projects/team/repositories/app/artifacts?page_size=101" -u "$AUTH"
is "$STATUS" 422 "page_size above 100: 422"
http GET "$U/api/v2.0/projects/team/repositories/sub%252Fapp/artifacts" -u "$AUTH"
is "$STATUS:$(jb '.[0].tags[0].name')" 200:v1 "a repository name with / encoded twice (sub%252Fapp) is found"
http GET "$U/api/v2.0/projects/team/repositories/sub%2Fapp/artifacts" -u "$AUTH"
is "$STATUS" 404 "encoded once (sub%2Fapp): 404"
http GET "$U/api/v2.0/repositories?q=blob_digest=$layer&page_size=1&page_number=1" -u "$AUTH"
is "$(jb '.[0].name')" team/app "the mount-source lookup by blob digest finds team/app"
http GET "$U/api/version"
is "$BODY" '{"version": "v2.0"}' "/api/version: v2.0"
http GET "$U/v2/_catalog" -H "Authorization: Bearer $T"
is "$STATUS:$(hdr www-authenticate)" '401:Basic realm="harbor"' "_catalog without catalog permission: 401 Basic realm=\"harbor\""
http GET "$U/v2/_catalog" -u "$AUTH"
is "$(jb '.repositories | join(",")')" "team/app,team/sub/app" "_catalog as the admin"

# --- deletion ------------------------------------------------------------------------
http DELETE "$U/api/v2.0/projects/team/repositories/app/artifacts/v2/tags/v2" -u "$AUTH"
is "$STATUS" 200 "DELETE .../artifacts/v2/tags/v2: 200"
is "$(curl -s "$UP/v2/team/app/tags/list" | jq -r '.tags | sort | join(",")')" v1,v3 "the tag is gone upstream, the others stay"
http DELETE "$U/api/v2.0/projects/team/repositories/app/artifacts/$d1/tags/v9" -u "$AUTH"
is "$STATUS:$(jb '.errors[0].code')" 404:NOT_FOUND "deleting a tag that is not there: 404 NOT_FOUND"

# --- faults and expiry ---------------------------------------------------------------
standin_control h fail_next=1 status=429 retry_after=2 >/dev/null
http GET "$U/v2/team/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS:$(hdr retry-after)" 429:2 "fail_next=1 status=429 retry_after=2: a 429 with Retry-After: 2"
http GET "$U/v2/team/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS" 200 "the next request succeeds"
standin_control h expire_tokens=1 >/dev/null
http GET "$U/v2/team/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS:$(hdr www-authenticate)" '401:Basic realm="harbor"' "expire_tokens: the token stops working mid-run (401)"
http GET "$U/v2/team/app/tags/list" -H "Authorization: Bearer $(token repository:team/app:pull)"
is "$STATUS" 200 "a fresh token works"
standin_control h token_ttl=1 >/dev/null
T1=$(token repository:team/app:pull)
expired=0
for _ in $(seq 1 60); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $T1" "$U/v2/team/app/tags/list") == 401 ]] &&
        { expired=1; break; }
    sleep 0.1
done
is "$expired" 1 "a token issued with token_ttl=1 stops working after its lifetime"

# --- the record ------------------------------------------------------------------------
recs=$(curl -s "$U/_standin/requests")
is "$(jq '[.[] | select(.path == "/api/v2.0/projects" and .method == "POST")] | length' <<<"$recs")" 6 \
    "the record has every project POST"
like "$(jq -r '[.[] | .authorization // empty] | unique | join(" ")' <<<"$recs")" '^((Basic|Bearer) sha256:[0-9a-f]{16} ?)+$' \
    "Authorization is recorded as a scheme and a hash"
if grep -q -- "$STANDIN_H_PASS\|$(printf '%s' "$AUTH" | base64 -w0)" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "the password appears nowhere in the record, not even base64-encoded"

done_testing
