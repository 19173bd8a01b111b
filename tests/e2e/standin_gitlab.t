#!/usr/bin/env bash
# The GitLab stand-in (tests/standins/gitlab.py) behaves as registry-kinds.md
# section 5 describes: the /jwt/auth token flow (PAT scopes, CI job token pull
# only), image paths at most two levels under an existing project, the
# insufficient_scope refusal, the /api/v4 registry API with PRIVATE-TOKEN and
# X-Next-Page paging (a project's repositories, and a group's with its
# subgroups', 404 for a project or the user's namespace), tag deletion (403
# for a protected tag, on the API and on the registry), bulk deletion
# (name_regex_delete, never latest, once an hour), faults and token expiry;
# pushes land in the Distribution registry behind it.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"

standin_start gitlab l "$SI_WORK/l" --projects group/app,group/sub/tool --job-token job-secret-123
R=$STANDIN_L_URL UP=$STANDIN_L_UPSTREAM_URL U=$STANDIN_L_USER PAT=$STANDIN_L_TOKEN
PT=(-H "PRIVATE-TOKEN: $PAT")
tok() {   # tok CREDS SCOPE
    curl -s ${1:+-u "$1"} "$R/jwt/auth?service=container_registry&scope=$2" | jq -r .token
}

# --- auth ----------------------------------------------------------------------------
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Bearer realm=\"$R/jwt/auth\",service=\"container_registry\"" \
    "/v2/: 401, realm /jwt/auth on the GitLab host, service container_registry"
http GET "$R/jwt/auth?service=container_registry&scope=repository:group/app:pull" -u "$U:wrong"
is "$STATUS" 401 "/jwt/auth with a wrong token: 401"
like "$(jb '.errors[0].message')" '^HTTP Basic: Access denied\.' "with GitLab's message"
http GET "$R/jwt/auth?service=container_registry&scope=repository:group/app:pull,push" -u "$U:$PAT"
is "$STATUS:$(jb 'keys | join(",")')" "200:token" "/jwt/auth with the PAT: {\"token\"}"
T=$(jb .token)
is "$(jb .token | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null | jq '.exp - .iat')" 300 "the JWT lives 5 minutes (the self-managed default)"

# --- pushes ------------------------------------------------------------------------------
d1=$(standin_push "$R" group/app v1 -H "Authorization: Bearer $T")
T2=$(tok "$U:$PAT" "repository:group/app/web/api:pull,push")
standin_push "$R" group/app/web/api v1 -H "Authorization: Bearer $T2" >/dev/null
ok $? "an image two levels under the project can be pushed"
for t in v2 v3 latest; do standin_push "$R" group/app "$t" -H "Authorization: Bearer $T" >/dev/null; done
T3=$(tok "$U:$PAT" "repository:group/sub/tool:pull,push")
standin_push "$R" group/sub/tool v1 -H "Authorization: Bearer $T3" >/dev/null
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/group/app/manifests/v1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d1" \
    "the push landed upstream"
http POST "$R/v2/group/app/a/b/c/blobs/uploads/" -H "Authorization: Bearer $(tok "$U:$PAT" "repository:group/app/a/b/c:pull,push")"
is "$STATUS" 401 "three levels under the project: refused"
like "$(hdr www-authenticate)" 'error="insufficient_scope"' "with insufficient_scope"
http POST "$R/v2/nogroup/x/blobs/uploads/" -H "Authorization: Bearer $(tok "$U:$PAT" "repository:nogroup/x:pull,push")"
is "$STATUS" 401 "no such project: refused"
JT=$(tok "gitlab-ci-token:job-secret-123" "repository:group/app:pull,push")
http GET "$R/v2/group/app/tags/list" -H "Authorization: Bearer $JT"
is "$STATUS" 200 "CI_JOB_TOKEN (gitlab-ci-token): pull works"
http POST "$R/v2/group/app/blobs/uploads/" -H "Authorization: Bearer $JT"
is "$STATUS" 401 "but not push"
standin_control l pat_scopes=api,read_registry >/dev/null
http POST "$R/v2/group/app/blobs/uploads/" -H "Authorization: Bearer $(tok "$U:$PAT" "repository:group/app:pull,push")"
is "$STATUS" 401 "a PAT with read_registry only cannot push"
standin_control l pat_scopes=api,read_registry,write_registry >/dev/null

# --- API ------------------------------------------------------------------------------------
http GET "$R/api/v4/projects?membership=1"
is "$STATUS:$BODY" '401:{"message": "401 Unauthorized"}' "the API without PRIVATE-TOKEN: 401"
http GET "$R/api/v4/projects?membership=1&per_page=1" "${PT[@]}"
is "$(jb '[.[].path_with_namespace] | join(",")'):$(hdr x-total):$(hdr x-next-page)" "group/app:2:2" \
    "projects per_page=1: X-Total 2, X-Next-Page 2"
is "$(jb '.[0].container_registry_enabled')" true "with container_registry_enabled"
http GET "$R/api/v4/projects?membership=1&per_page=1&page=2" "${PT[@]}"
is "$(jb '.[0].path_with_namespace'):$(hdr x-next-page):$(hdr x-prev-page)" "group/sub/tool::1" "page 2: X-Next-Page empty"
http GET "$R/api/v4/projects?search=tool&membership=true&search_namespaces=true" -H "Authorization: Bearer $PAT"
is "$(jb '[.[].path_with_namespace] | join(",")')" group/sub/tool "search=tool (Bearer works too)"
http GET "$R/api/v4/projects/group%2Fsub%2Ftool" "${PT[@]}"
is "$STATUS:$(jb .path_with_namespace)" 200:group/sub/tool "GET /projects/:id by its URL-encoded path"
http GET "$R/api/v4/projects/group%2Fsub" "${PT[@]}"
is "$STATUS:$(jb .message)" "404:404 Project Not Found" "a group is not a project: 404"
pid=$(curl -s "${PT[@]}" "$R/api/v4/projects" | jq -r '.[] | select(.path_with_namespace == "group/app") | .id')
http GET "$R/api/v4/projects/$pid/registry/repositories?per_page=50" "${PT[@]}"
is "$(jb '[.[] | .path + "=" + .name] | join(",")')" "group/app=,group/app/web/api=web/api" "the project's registry repositories (path, name)"
is "$(jb '.[0].location')" "${R#http://}/group/app" "with location"
rid=$(jb '.[0].id')
http GET "$R/api/v4/projects/group%2Fapp/registry/repositories" "${PT[@]}"
is "$(jb length)" 2 "the project can be named by its URL-encoded path"
http GET "$R/api/v4/groups/group/registry/repositories?per_page=2" "${PT[@]}"
is "$STATUS:$(jb '[.[].path] | join(",")'):$(hdr x-total):$(hdr x-next-page)" "200:group/app,group/app/web/api:3:2" \
    "a group's registry repositories (its URL-encoded path), per_page=2: X-Total 3, X-Next-Page 2"
is "$(jb '[.[0] | has("id", "name", "path", "project_id", "location", "created_at")] | all')" true \
    "each with id, name, path, project_id, location, created_at"
http GET "$R/api/v4/groups/group/registry/repositories?per_page=2&page=2" "${PT[@]}"
is "$(jb '[.[].path] | join(",")'):$(hdr x-next-page)" "group/sub/tool:" "page 2: the subgroup's project's repository, the last page"
http GET "$R/api/v4/groups/group%2Fsub/registry/repositories" "${PT[@]}"
is "$(jb '[.[].path] | join(",")')" group/sub/tool "a nested group: its own projects only"
http GET "$R/api/v4/groups/group%2Fapp/registry/repositories" "${PT[@]}"
is "$STATUS:$BODY" '404:{"message": "404 Group Not Found"}' "a project is no group: 404 Group Not Found"
standin_control l add_project=$U/own >/dev/null
http GET "$R/api/v4/groups/$U/registry/repositories" "${PT[@]}"
is "$STATUS" 404 "nor is the user's own namespace"
http GET "$R/api/v4/projects/$pid/registry/repositories/$rid/tags?per_page=2" "${PT[@]}"
is "$(jb '[.[].name] | join(",")'):$(hdr x-total):$(hdr x-total-pages):$(hdr x-next-page)" "latest,v1:4:2:2" "tags per_page=2: X-Total 4, 2 pages"
like "$(hdr link)" 'rel="next"' "and a Link"
http GET "$R/api/v4/projects/$pid/registry/repositories/$rid/tags/v1" "${PT[@]}"
is "$(jb .digest):$(jb .path)" "$d1:group/app:v1" "tag details: digest and path"
http GET "$R/api/v4/registry/repositories/$rid?tags=true&tags_count=true" "${PT[@]}"
is "$(jb .tags_count):$(jb '.tags | length')" 4:4 "registry/repositories/:id with tags and tags_count"

# --- deletion ----------------------------------------------------------------------------------
standin_control l 'protect_tags=v.*' >/dev/null
http DELETE "$R/api/v4/projects/$pid/registry/repositories/$rid/tags/v2" "${PT[@]}"
is "$STATUS" 403 "a tag matching a protection rule: 403"
standin_control l protect_tags= >/dev/null
http DELETE "$R/api/v4/projects/$pid/registry/repositories/$rid/tags/v2" "${PT[@]}"
is "$STATUS" 200 "DELETE a tag: 200"
is "$(curl -s "$UP/v2/group/app/tags/list" | jq -r '.tags | sort | join(",")')" latest,v1,v3 "gone upstream"
http DELETE "$R/api/v4/projects/$pid/registry/repositories/$rid/tags/v2" "${PT[@]}"
is "$STATUS" 404 "again: 404"
http DELETE "$R/api/v4/projects/$pid/registry/repositories/$rid/tags" "${PT[@]}"
is "$STATUS" 400 "bulk delete without name_regex_delete: 400"
http DELETE "$R/api/v4/projects/$pid/registry/repositories/$rid/tags" "${PT[@]}" --data-urlencode 'name_regex_delete=.*' -d keep_n=0
is "$STATUS" 202 "bulk delete name_regex_delete=.*: 202"
is "$(curl -s "$UP/v2/group/app/tags/list" | jq -r '.tags | sort | join(",")')" latest "everything but latest is gone"
http DELETE "$R/api/v4/projects/$pid/registry/repositories/$rid/tags" "${PT[@]}" --data-urlencode 'name_regex_delete=.*'
is "$STATUS" 429 "a second bulk delete within the hour: refused"
DT=$(tok "$U:$PAT" "repository:group/sub/tool:delete")
dt=$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/group/sub/tool/manifests/v1" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
standin_control l 'protect_tags=v1' >/dev/null
http DELETE "$R/v2/group/sub/tool/manifests/$dt" -H "Authorization: Bearer $DT"
is "$STATUS:$(jb '.errors[0].code')" 403:DENIED "registry DELETE of a digest a protected tag points at: 403 DENIED"
is "$(curl -s -o /dev/null -w '%{http_code}' -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/group/sub/tool/manifests/$dt")" \
    200 "and the manifest stays"
standin_control l protect_tags= >/dev/null
http DELETE "$R/v2/group/sub/tool/manifests/$dt" -H "Authorization: Bearer $DT"
is "$STATUS" 202 "registry DELETE by digest with a delete scope: 202"

# --- faults and expiry --------------------------------------------------------------------------
standin_control l fail_next=1 status=429 retry_after=6 >/dev/null
http GET "$R/api/v4/projects" "${PT[@]}"
is "$STATUS:$(hdr retry-after):$BODY" "429:6:Retry later" "fail_next: 429 Retry later with Retry-After"
standin_control l expire_tokens=1 >/dev/null
http GET "$R/v2/group/app/tags/list" -H "Authorization: Bearer $T"
is "$STATUS:$(jb '.errors[0].message')" "401:authentication required" "expire_tokens: unauthorized: authentication required (a push past the JWT's life)"
like "$(hdr www-authenticate)" 'error="invalid_token"' "with error=invalid_token"
http GET "$R/v2/group/app/tags/list" -H "Authorization: Bearer $(tok "$U:$PAT" repository:group/app:pull)"
is "$STATUS" 200 "a new token works"

recs=$(curl -s "$R/_standin/requests")
if grep -q -- "$PAT\|$T\|job-secret-123" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "no token appears in the record"
like "$(jq -r '[.[] | .["private-token"] // empty][0]' <<<"$recs")" '^sha256:[0-9a-f]{16}$' "PRIVATE-TOKEN is recorded as a hash"

done_testing
