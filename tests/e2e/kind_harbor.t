#!/usr/bin/env bash
# The harbor kind (scripts/kinds/harbor.lua) against the Harbor stand-in
# (tests/standins/harbor.py, a real Distribution behind it): Distribution ->
# Harbor creates the project first (once: a re-run creates and copies
# nothing), a multi-arch and a plain image verify by digest; Harbor ->
# Distribution lists through the projects API; Harbor is detected by its
# systeminfo without --to-kind; a project that cannot be created fails the
# push_prepare stage naming the kind and the step, with nothing pushed.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

kind_registries
kind_images team harbor-kind
standin_start harbor h "$E2E_WORK/h"
H=$STANDIN_H_URL HU=$STANDIN_H_UPSTREAM_URL
export REPLICA_TO_CRED_PASSWORD=$STANDIN_H_PASS
project_count() { curl -s -u "replica:$STANDIN_H_PASS" "$H/api/v2.0/projects?page_size=100" | jq length; }
p0=$(project_count)

# --- Distribution -> Harbor ----------------------------------------------------------
replica_run --from "$S" --to "$H" --to-kind harbor --to-cred username=replica --repo 'team/**' --json
is "$RC" 0 "distribution -> harbor succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$HU" team/app v1)" "$want_app" "a plain image verifies by digest"
is "$(manifest_digest "$HU" team/multi v1)" "$want_multi" "a multi-arch image too"
is "$(( $(project_count) - p0 ))" 1 "the project team was created before the push"
http_code=$(curl -s -o /dev/null -w '%{http_code}' -I -u "replica:$STANDIN_H_PASS" "$H/api/v2.0/projects?project_name=team")
is "$http_code" 200 "Harbor has it"
replica_run --from "$S" --to "$H" --to-kind harbor --to-cred username=replica --repo 'team/**' --json
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$RC:$(jq -r '.summary.pushed' <<<"$json"):$(( $(project_count) - p0 ))" "0:0:1" \
    "a re-run creates nothing and copies nothing"

# --- detection -------------------------------------------------------------------------
seed "$S" other/app v1 oci 1 1024 harbor-kind >/dev/null
replica_run --from "$S" --to "$H" --to-cred username=replica --repo 'other/app'
is "$RC" 0 "without --to-kind the target is detected as Harbor"
like "$OUT" "registry kind harbor \(probe\)" "by its systeminfo"
is "$(( $(project_count) - p0 ))" 2 "and its project was created"

# --- Harbor -> Distribution, listing through the API --------------------------------------
REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CRED_PASSWORD=$STANDIN_H_PASS \
    replica_run --from "$H" --from-kind harbor --from-cred username=replica --to "$D" --repo '**' --json
is "$RC" 0 "harbor -> distribution succeeds"
[[ $RC == 0 ]] || diag "$OUT"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
like "$(jq -r '[.tasks[].repository] | sort | join(",")' <<<"$json")" "other/app,team/app,team/multi" \
    "every repository was found through the projects API"
is "$(manifest_digest "$D" team/multi v1)" "$want_multi" "and copied by digest"

# --- Harbor's label filter ------------------------------------------------------------
curl -s -o /dev/null -u "replica:$STANDIN_H_PASS" -H 'Content-Type: application/json' \
    -d '{"name": "release", "scope": "g"}' "$H/api/v2.0/labels"
LID=$(curl -s -u "replica:$STANDIN_H_PASS" "$H/api/v2.0/labels?name=release" | jq '.[0].id')
st=$(curl -s -o /dev/null -w '%{http_code}' -u "replica:$STANDIN_H_PASS" -H 'Content-Type: application/json' \
    -d "{\"id\": $LID}" "$H/api/v2.0/projects/team/repositories/app/artifacts/v1/labels")
is "$st" 200 "team/app:v1 carries the label release in Harbor"
REPLICA_TO_CRED_PASSWORD= REPLICA_FROM_CRED_PASSWORD=$STANDIN_H_PASS \
    replica_run --from "$H" --from-kind harbor --from-cred username=replica --to "$D" --repo 'team/**' \
    --label release --dest-namespace labelled --json
is "$RC" 0 "harbor -> distribution with --label release succeeds"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '[.tasks[] | .repository + ":" + (.tags | join(","))] | join(" ")' <<<"$json")" "team/app:v1" \
    "only the labelled artifact is planned"
is "$(manifest_digest "$D" labelled/team/app v1):$(manifest_digest "$D" labelled/team/multi v1)" "$want_app:missing" \
    "and only it is copied"
replica_run --from "$S" --to "$D" --repo 'team/**' --label release
is "$RC" 1 "a label filter on a source that has no labels is refused"
like "$OUT" "the distribution kind cannot filter by label" "saying why"

# --- a project that cannot be created -------------------------------------------------------
standin_control h deny_create=1 >/dev/null
seed "$S" denied/app v1 oci 1 1024 harbor-kind >/dev/null
replica_run --from "$S" --to "$H" --to-kind harbor --to-cred username=replica --repo 'denied/app'
is "$RC" 1 "a project Harbor refuses to create fails the run"
like "$OUT" "stage push_prepare: harbor: creating project denied: POST /api/v2.0/projects: http 403" \
    "naming the kind, the step and Harbor's answer"
is "$(manifest_digest "$HU" denied/app v1)" missing "and nothing was pushed"
standin_control h deny_create=0 >/dev/null

# --- wrong credentials ----------------------------------------------------------------------
REPLICA_TO_CRED_PASSWORD=wrong replica_run --from "$S" --to "$H" --to-kind harbor --to-cred username=replica --repo 'denied/app'
is "$RC" 1 "wrong credentials fail"
like "$OUT" "stage push_prepare: harbor: reaching the target: GET [^ ]*/service/token: http 401" \
    "at the first step that needs them, naming the kind and the step"
if grep -q -- "$STANDIN_H_PASS" <<<"$OUT"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the password appears in no output"
done_testing
