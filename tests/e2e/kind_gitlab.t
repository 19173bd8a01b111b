#!/usr/bin/env bash
# The gitlab kind (scripts/kinds/gitlab.lua) against the GitLab stand-in
# (tests/standins/gitlab.py: /jwt/auth JWTs granted only under existing
# projects, at most two levels deep; the /api/v4 registry API with
# PRIVATE-TOKEN and X-Next-Page paging; a real Distribution behind):
# Distribution -> GitLab into a nested group's project (a re-run creates
# and copies nothing), found by its probe without --to-kind; a missing
# project, or one too far up, fails before any push naming the kind and the
# step; a token without API access still pushes; GitLab -> Distribution
# lists through /api/v4, paged: a filter naming a group (grp/**, or the
# nested grp/sub/**) through the group's registry endpoint alone, one naming
# a project or a user's namespace (the group endpoint's 404) through the
# member projects, and the projects option's projects;
# a 429 is retried after its Retry-After; a token expiring mid-run is
# fetched again; wrong credentials fail clearly; the token appears in no
# output and not in the stand-in's record.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images team gitlab-kind
standin_start gitlab g "$E2E_WORK/g" --projects grp/sub/proj,other/proj
G=$STANDIN_G_URL GU=$STANDIN_G_UPSTREAM_URL PAT=$STANDIN_G_TOKEN
NS=grp/sub/proj
ALL=""
run() { replica_run "$@"; ALL+=$OUT; }
json_of() { grep '^{' <<<"$OUT" | tail -n 1; }
records() { curl -s "$G/_standin/requests"; }
clear_records() { curl -s -X DELETE "$G/_standin/requests" >/dev/null; }
export REPLICA_TO_CRED_USERNAME=replica REPLICA_TO_CRED_PASSWORD=$PAT
TO=(--to "$G" --to-kind gitlab)

# --- Distribution -> GitLab, into a project of a nested group ----------------------------------
run --from "$S" "${TO[@]}" --repo 'team/**' --dest-namespace "$NS" --json
is "$RC" 0 "distribution -> gitlab succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$GU" "$NS/team/app" v1)" "$want_app" "a plain image verifies by digest ($NS/team/app)"
is "$(manifest_digest "$GU" "$NS/team/multi" v1)" "$want_multi" "a multi-arch image too"
json=$(json_of)
is "$(jq -r '[.tasks[].stages[] | select(.name == "push_prepare") | .output.namespace | "\(.project):\(.created)"] | join(",")' <<<"$json")" \
    "$NS:false,$NS:false" "each found its project through the API (the API's host from the token realm), creating nothing"
clear_records
run --from "$S" "${TO[@]}" --repo 'team/**' --dest-namespace "$NS" --json
is "$RC:$(jq -r '.summary.pushed' <<<"$(json_of)")" "0:0" "a re-run copies nothing"
is "$(records | jq '[.[] | select(.method != "GET" and .method != "HEAD")] | length')" 0 "and changes nothing"

seed "$S" team/probe v1 oci 1 1024 gitlab-kind >/dev/null
run --from "$S" --to "$G" --repo 'team/probe' --dest-namespace "$NS"
is "$RC" 0 "without --to-kind"
like "$OUT" "registry kind gitlab \\(probe\\)" "the target is found to be GitLab by its challenge"

# --- a project that does not exist ------------------------------------------------------------------
clear_records
run --from "$S" "${TO[@]}" --repo 'team/app' --dest-namespace nosuch/group
is "$RC" 1 "an image outside any project fails"
like "$OUT" "stage push_prepare: gitlab: no project holds nosuch/group/team/app: an image lives in an existing project, at most two levels below it" \
    "before the push, naming the kind and the step"
run --from "$S" "${TO[@]}" --repo 'team/app' --dest-namespace "$NS/deep"
is "$RC" 1 "so does an image three levels below its project"
like "$OUT" "stage push_prepare: gitlab: no project holds $NS/deep/team/app" "with the same reason"
is "$(records | jq '[.[] | select(.method != "GET" and .method != "HEAD")] | length')" 0 "and nothing was pushed"
is "$(manifest_digest "$GU" nosuch/group/team/app v1):$(manifest_digest "$GU" "$NS/deep/team/app" v1)" "missing:missing" \
    "nothing is in the registry"

# --- a token without API access still pushes -----------------------------------------------------
standin_control g pat_scopes=read_registry,write_registry >/dev/null
seed "$S" team/third v1 oci 1 1024 gitlab-kind >/dev/null
run --from "$S" "${TO[@]}" --repo 'team/third' --dest-namespace "$NS" --json
is "$RC" 0 "a token the API refuses (read_registry, write_registry) still pushes into an existing project"
[[ $RC == 0 ]] || diag "$OUT"
is "$(jq -r '.tasks[0].stages[] | select(.name == "push_prepare") | .output.namespace.checked' <<<"$(json_of)")" false \
    "the project check is left to the registry"
REPLICA_TO_CRED_USERNAME= REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CRED_USERNAME=replica REPLICA_FROM_CRED_PASSWORD=$PAT \
    run --from "$G" --from-kind gitlab --to "$D" --repo 'grp/**'
is "$RC" 1 "but listing needs the API"
like "$OUT" "listing the source catalog: gitlab: listing the repositories of group grp: GET $G/api/v4/groups/grp/registry/repositories\\?[^ ]*: http 401: 401 Unauthorized \\(the token needs the api or read_api scope\\)" \
    "and says so"
standin_control g pat_scopes=api,read_registry,write_registry >/dev/null

# --- GitLab -> Distribution ---------------------------------------------------------------------------
for i in $(seq -w 0 100); do standin_control g "add_project=many/p$i" >/dev/null; done
standin_control g add_project=grp/wide >/dev/null
cfg=$(curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$GU/v2/$NS/team/app/manifests/v1" | jq -r .config.digest)
made=$(for i in $(seq -w 1 101); do # repositories holding one blob (a mount), no tag
    curl -s -o /dev/null -w '%{http_code}\n' -X POST "$GU/v2/grp/wide/e$i/blobs/uploads/?mount=$cfg&from=$NS/team/app"
done | sort | uniq -c | awk '{print $2 "x" $1}')
is "$made" 201x101 "101 more repositories in the group grp (project grp/wide): its listing takes two pages of 100"
export REPLICA_TO_CRED_USERNAME= REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CRED_USERNAME=replica REPLICA_FROM_CRED_PASSWORD=$PAT
api_paths() { records | jq -r '[.[] | select(.path | startswith("/api/v4/")) | "\(.status) \(.path | sub("\\?.*"; ""))"] | unique | join(",")'; }
clear_records
run --from "$G" --from-kind gitlab --to "$D" --repo 'grp/**' --exclude-repo 'grp/wide/**' --json
is "$RC" 0 "gitlab -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$(json_of)")" "$NS/team/app,$NS/team/multi,$NS/team/probe,$NS/team/third" \
    "every repository under the filter was listed"
is "$(api_paths)" "200 /api/v4/groups/grp/registry/repositories" \
    "through the group's endpoint alone: one listing for its projects and subgroups, no project walk"
is "$(records | jq -r '[.[] | select(.path | startswith("/api/v4/groups/")) | .path | capture("[?&]page=(?<p>[0-9]+)").p] | join(",")')" \
    "1,2" "over two pages, following X-Next-Page"
is "$(manifest_digest "$D" "$NS/team/app" v1):$(manifest_digest "$D" "$NS/team/multi" v1)" "$want_app:$want_multi" \
    "and copied by digest"

clear_records
run --from "$G" --from-kind gitlab --to "$D" --repo 'grp/sub/**' --dry-run
is "$RC:$(grep -c ' -> ' <<<"$OUT")" 0:4 "a nested group's filter (grp/sub/**) selects its repositories"
is "$(api_paths)" "200 /api/v4/groups/grp%2Fsub/registry/repositories" "through that subgroup's endpoint, its path URL-encoded"

standin_control g add_project=replica/tools >/dev/null
seed "$GU" replica/tools/app v1 oci 1 512 gitlab-kind >/dev/null
seed "$GU" other/proj/tool v1 oci 1 512 gitlab-kind >/dev/null
clear_records
run --from "$G" --from-kind gitlab --to "$D" --repo 'other/proj/**' --repo 'replica/**' --dry-run
is "$RC:$(grep ' -> ' <<<"$OUT" | cut -d' ' -f1 | paste -sd,)" "0:other/proj/tool:v1,replica/tools/app:v1" \
    "filters naming a project and a user's namespace select their repositories"
is "$(records | jq -r '[.[] | select(.path | startswith("/api/v4/groups/")) | "\(.status) \(.path | sub("\\?.*"; ""))"] | join(",")')" \
    "404 /api/v4/groups/other%2Fproj/registry/repositories,404 /api/v4/groups/replica/registry/repositories" \
    "the group endpoint answered 404 for both (no group)"
is "$(records | jq -r '[.[] | select(.path | startswith("/api/v4/projects?")) | .path | capture("[?&]page=(?<p>[0-9]+)").p] | join(",")')" \
    "1,2" "so the kind fell back to the member projects (105, over two pages by X-Next-Page)"
is "$(records | jq -r '[.[] | select(.path | test("/registry/repositories")) | .path | capture("^/api/v4/projects/(?<p>[^/]+)/").p] | unique | join(",")')" \
    "other%2Fproj,replica%2Ftools" "then the registry repositories of the two projects the filters can match"

clear_records
run --from "$G" --from-kind gitlab --from-option "projects=$NS" --from-option "api_url=$G/api/v4" \
    --to "$D" --repo '**/multi' --dest-namespace again --json
is "$RC:$(jq -r '[.tasks[].repository] | join(",")' <<<"$(json_of)")" "0:$NS/team/multi" \
    "with the option projects, that project is listed"
is "$(records | jq '[.[] | select(.path | startswith("/api/v4/projects?"))] | length')" 0 "and no other"
is "$(manifest_digest "$D" "again/$NS/team/multi" v1)" "$want_multi" "copied by digest"

# --- a 429 is retried after its Retry-After -------------------------------------------------------------
clear_records
standin_control g fail_next=1 status=429 retry_after=1 fail_path='^/api/v4/' >/dev/null
run --from "$G" --from-kind gitlab --from-option "projects=$NS" --to "$D" --repo '**/app' --dest-namespace thr
is "$RC" 0 "a 429 from the API (Rack::Attack's \"Retry later\") is retried"
[[ $RC == 0 ]] || diag "$OUT"
waited=$(retry_waited g)
ok "$(jq -n --argjson w "$waited" 'if $w >= 0.95 then 0 else 1 end')" "after its Retry-After of 1 s (waited $waited s)"
is "$(manifest_digest "$D" "thr/$NS/team/app" v1)" "$want_app" "and the image is copied"
export REPLICA_FROM_CRED_USERNAME= REPLICA_FROM_CRED_PASSWORD= REPLICA_TO_CRED_USERNAME=replica REPLICA_TO_CRED_PASSWORD=$PAT

# --- a token that expires mid-run is fetched again ----------------------------------------------------
big=$E2E_WORK/big.bin
head -c $((6 << 20)) /dev/urandom >"$big"
want_big=$(push_big_image "$S" big/app v1 "$big")
clear_records
"$REPLICA" run --from "$S" "${TO[@]}" --repo 'big/app' --dest-namespace "$NS" --bandwidth 2M >"$E2E_WORK/expiring.out" 2>&1 &
RUN=$!
mid=1
for _ in $(seq 1 500); do # until the blob's upload is under way
    if records | jq -e '[.[] | select(.method == "PUT" and (.path | test("/blobs/uploads/")) and .status == null)] | length > 0' >/dev/null; then
        mid=0; break
    fi
    kill -0 $RUN 2>/dev/null || break
    sleep 0.02
done
ok "$mid" "a run is in the middle of a blob upload"
t_exp=$(standin_control g expire_tokens=1 >/dev/null; date +%s.%N)
set +e; wait $RUN; RC=$?; set -e
ALL+=$(cat "$E2E_WORK/expiring.out")
is "$RC" 0 "its registry token expired mid-run (GitLab's JWTs live 5 minutes), and the run still succeeds"
[[ $RC == 0 ]] || diag "$(cat "$E2E_WORK/expiring.out")"
after=$(records | jq -c --argjson t "$t_exp" '[.[] | select(.time > $t)] |
        [(map(select((.path | startswith("/v2/")) and .status == 401)) | length), (map(select(.path | startswith("/jwt/auth"))) | length)]')
is "$(jq -r '.[0] >= 1 and .[1] >= 1' <<<"$after")" true "the dead token was refused and a new one fetched from /jwt/auth ($after)"
is "$(manifest_digest "$GU" "$NS/big/app" v1)" "$want_big" "and the image verifies"

# --- wrong credentials ---------------------------------------------------------------------------------
REPLICA_TO_CRED_PASSWORD=glpat-wrong-0123456789 run --from "$S" "${TO[@]}" --repo 'team/app' --dest-namespace other/proj
is "$RC" 1 "a wrong token fails"
like "$OUT" "stage push_prepare: gitlab: reaching the target: GET $G/jwt/auth: http 401 for scope '' \\(check the username and password\\)" \
    "at /jwt/auth, naming the kind and the step"
is "$(manifest_digest "$GU" other/proj/team/app v1)" missing "and nothing was pushed"

all=$(records)$(cat "$E2E_WORK/g/standin.log")
if grep -q -F -- "$PAT" <<<"$ALL$all"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the access token appears in no output and not in the stand-in's record"
done_testing
