#!/usr/bin/env bash
# Replicated deletions into every registry kind: one `replica serve`, one
# source Distribution registry sending webhooks, and one stand-in per kind
# (tests/standins/), each the target of an event policy with
# replicate_deletion and a repository filter of its own. For each kind a
# push to the source is replicated, and a DELETE at the source runs a
# deletion execution that succeeds and removes the image from the target,
# through the kind's documented way of deleting: Harbor's artifacts API,
# ECR's BatchDeleteImage (its registry refuses DELETE), Docker Hub's tag
# DELETEs on the Hub API, GHCR's package version DELETE, and the registry's
# DELETE by digest for Quay, GitLab, Artifact Registry and ACR. A deletion
# the target refuses (a GitLab protected tag, an ACR repository with
# deletion disabled) fails the execution naming the kind, the step and the
# registry's answer, and leaves the image where it is; once allowed again, a
# retry of that execution deletes it. No credential appears in any answer,
# log or stand-in record, nor in clear in serve's database.
# shellcheck disable=SC2016  # '$oauthtoken' is Quay's own username, not an expansion
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
source "$ROOT/tests/standins.sh"
source "$ROOT/tests/lib/kindtest.sh"

serve_start kinds
HOOK_SECRET=kinds-hook-secret-0123456789
REGISTRY_NOTIFY_URL=$API/webhooks/distribution REGISTRY_NOTIFY_AUTH="Bearer $HOOK_SECRET" \
    registry_start src "$E2E_WORK/src"
S=$REG_SRC_URL
api POST /registries "$(registry_json src "$S" "\"webhook_secret\": \"$HOOK_SECRET\"")"
SRC=$(jget .id)

standin_start harbor h "$E2E_WORK/h"
standin_start ecr e "$E2E_WORK/e"
standin_start dockerhub d "$E2E_WORK/d"
standin_start ghcr g "$E2E_WORK/g"
standin_start quay q "$E2E_WORK/q"
standin_start gitlab l "$E2E_WORK/l" --projects grp/proj
standin_start gar r "$E2E_WORK/r"
standin_start acr a "$E2E_WORK/a"
KEY=$(cat "$STANDIN_R_KEY_JSON")

# KINDS: kind letter source-repository target-repository; each kind's
# policy selects the source repositories under the first level of its own.
KINDS=(
    "harbor h harbor/tools/app harbor/tools/app"
    "ecr e ecr/app ecr/app"
    "dockerhub d hub/app replica-org/app"
    "ghcr g ghcr/app replica-org/ghcr/app"
    "quay q quay/app quay/app"
    "gitlab l gitlab/app grp/proj/gitlab/app"
    "gar r gar/app replica-test/gar/app"
    "acr a acr/app acr/app"
)
declare -A POLICY
# wire KIND REGISTRY_JSON [POLICY_JSON]: the kind's registry, and its policy
# for the source repositories under the first level of the kind's in KINDS.
wire() {
    local k src
    for k in "${KINDS[@]}"; do [[ $k == "$1 "* ]] && read -r _ _ src _ <<<"$k"; done
    kind_wire "$1" "$SRC" "${src%%/*}/**" "$2" "${3:-}" || return 1
    POLICY[$1]=$WIRED_POLICY
}
wire harbor "$(jq -nc --arg u "$STANDIN_H_URL" --arg p "$STANDIN_H_PASS" \
    '{url: $u, kind: "harbor", username: "replica", password: $p}')"
wire ecr "$(jq -nc --arg u "$STANDIN_E_URL" --arg k "$STANDIN_E_ACCESS_KEY_ID" --arg s "$STANDIN_E_SECRET_ACCESS_KEY" \
    --arg api "$STANDIN_E_API_URL" \
    '{url: $u, kind: "ecr", credentials: {access_key_id: $k, secret_access_key: $s, region: "us-east-1"},
      options: {api_url: $api}}')"
wire dockerhub "$(jq -nc --arg u "$STANDIN_D_URL" --arg p "$STANDIN_D_PAT" --arg hub "$STANDIN_D_HUB_URL" \
    '{url: $u, kind: "dockerhub", username: "replica", password: $p, options: {hub_url: $hub}}')" \
    '{"dest_namespace": "replica-org", "flatten": 1}'
wire ghcr "$(jq -nc --arg u "$STANDIN_G_URL" --arg p "$STANDIN_G_PAT" --arg api "$STANDIN_G_API_URL" \
    '{url: $u, kind: "ghcr", username: "replica", password: $p, options: {api_url: $api}}')" \
    '{"dest_namespace": "replica-org"}'
wire quay "$(jq -nc --arg u "$STANDIN_Q_URL" --arg p "$STANDIN_Q_OAUTH_TOKEN" \
    '{url: $u, kind: "quay", username: "$oauthtoken", password: $p}')"
wire gitlab "$(jq -nc --arg u "$STANDIN_L_URL" --arg p "$STANDIN_L_TOKEN" \
    '{url: $u, kind: "gitlab", username: "replica", password: $p}')" '{"dest_namespace": "grp/proj"}'
wire gar "$(jq -nc --arg u "$STANDIN_R_URL" --arg k "$KEY" --arg api "$STANDIN_R_API_URL" \
    '{url: $u, kind: "gar", credentials: {key_json: $k}, options: {api_url: $api, location: "us"}}')" \
    '{"dest_namespace": "replica-test"}'
wire acr "$(jq -nc --arg u "$STANDIN_A_URL" --arg p "$STANDIN_A_PASS" \
    '{url: $u, kind: "acr", username: "replica", password: $p}')"
is "${#POLICY[@]}" 8 "a registry and an event policy replicating deletions for each of the 8 kinds"

# matched_now: how many webhook events serve has matched to policies so far.
matched_now() { api GET "/events/received?page_size=500"; jget '[.[] | select(.status == "matched")] | length'; }
# upstream LETTER: the Distribution registry behind a stand-in.
upstream() { local v=STANDIN_${1^^}_UPSTREAM_URL; echo "${!v}"; }
ALL=""

# --- a push to the source reaches each kind ----------------------------------------------------
declare -A WANT
for k in "${KINDS[@]}"; do
    read -r kind _ src _ <<<"$k"
    WANT[$kind]=$(seed "$S" "$src" v1 oci 1 1024 "delete-$kind" | sed -n "s|^$src:v1 ||p")
done
for k in "${KINDS[@]}"; do
    read -r kind letter _ dest <<<"$k"
    settled "${POLICY[$kind]}" 1 || true
    ALL+=$BODY
    is "$(jget '[.[].status] | join(",")'):$(manifest_digest "$(upstream "$letter")" "$dest" v1)" "Succeeded:${WANT[$kind]}" \
        "$kind: the push is replicated by an event execution, to $dest"
done

# --- a DELETE at the source deletes on each kind ---------------------------------------------------
# Distribution sends two events for a DELETE by digest, the manifest's and
# its tag's: one deletion execution or two (when the second comes before the
# first is under way, it joins it); the tag's finds it gone.
matched=$(matched_now)
for k in "${KINDS[@]}"; do
    read -r kind letter src _ <<<"$k"
    standin_clear "$letter"
    curl -s -o /dev/null -X DELETE "$S/v2/$src/manifests/${WANT[$kind]}"
done
events_matched $((matched + 2 * ${#KINDS[@]})) || true
for k in "${KINDS[@]}"; do
    read -r kind letter _ dest <<<"$k"
    settled "${POLICY[$kind]}" 2 || true
    ALL+=$BODY
    is "$(jget '[.[].status] | unique | join(",")'):$(manifest_digest "$(upstream "$letter")" "$dest" v1)" "Succeeded:missing" \
        "$kind: the deletion succeeds, and the image is gone from $dest"
    api GET "/executions/$(jget '.[0].id')/tasks"
    ALL+=$BODY
    is "$(jget '[.[] | "\(.kind) \(.dest_repository)"] | join(",")')" "delete $dest" "$kind: run as a deletion task of $dest"
done
# deleted LETTER: the DELETEs that did delete ("METHOD LISTENER PATH STATUS").
deleted() { standin_calls "$1" '.method == "DELETE" and .status < 300'; }
# registry_deletes LETTER: how many DELETEs the registry was sent.
registry_deletes() { standin_records "$1" | jq '[.[] | select(.method == "DELETE" and .listener == "registry" and (.path | startswith("/v2/")))] | length'; }
D=${WANT[harbor]}
is "$(deleted h):$(registry_deletes h)" "DELETE registry /api/v2.0/projects/harbor/repositories/tools%252Fapp/artifacts/$D 200:0" \
    "harbor: the artifact was deleted through the API (the repository's name encoded twice), not with the registry's DELETE"
is "$(standin_calls e '.operation == "BatchDeleteImage"' | tr ';' '\n' | sort -u):$(registry_deletes e)" "POST api / 200:0" \
    "ecr: the image was deleted with BatchDeleteImage, and the registry was sent no DELETE"
is "$(deleted d):$(registry_deletes d)" "DELETE hub /v2/namespaces/replica-org/repositories/app/tags/v1 204:0" \
    "dockerhub: its tag was deleted through the Hub API, not with the registry's DELETE"
like "$(deleted g):$(registry_deletes g)" "^DELETE api /orgs/replica-org/packages/container/ghcr%2Fapp/versions/[0-9]+ 204:0$" \
    "ghcr: its package version was deleted through the API (the name's '/' as %2F), not with the registry's DELETE"
for k in quay:q:quay/app gitlab:l:grp/proj/gitlab/app gar:r:replica-test/gar/app acr:a:acr/app; do
    IFS=: read -r kind letter dest <<<"$k"
    is "$(deleted "$letter")" "DELETE registry /v2/$dest/manifests/${WANT[$kind]} 202" \
        "$kind: deleted with the registry's DELETE by digest"
done

# --- deletions the target refuses fail, and a retry completes them --------------------------------------
locked_gl=$(seed "$S" gitlab/locked v1 oci 1 1024 delete-locked | sed -n 's|^gitlab/locked:v1 ||p')
locked_acr=$(seed "$S" acr/locked v1 oci 1 1024 delete-locked | sed -n 's|^acr/locked:v1 ||p')
GL=${POLICY[gitlab]} ACR=${POLICY[acr]}
settled "$GL" 3 || true
n_gl=$(jget length)
is "$(jget '.[0].status'):$(manifest_digest "$STANDIN_L_UPSTREAM_URL" grp/proj/gitlab/locked v1)" "Succeeded:$locked_gl" \
    "gitlab: another image is replicated"
settled "$ACR" 3 || true
n_acr=$(jget length)
is "$(jget '.[0].status'):$(manifest_digest "$STANDIN_A_UPSTREAM_URL" acr/locked v1)" "Succeeded:$locked_acr" \
    "acr: another image is replicated"
standin_control l 'protect_tags=v1' >/dev/null
# acr_delete true|false: turns deletion on or off for the ACR repository acr/locked.
acr_delete() {
    curl -s -o /dev/null -w '%{http_code}' -X PATCH -u "replica:$STANDIN_A_PASS" -H 'Content-Type: application/json' \
        -d "{\"deleteEnabled\": $1}" "$STANDIN_A_URL/acr/v1/acr/locked"
}
is "$(acr_delete false)" 200 "acr: deletion is disabled on the repository acr/locked"
standin_clear l
standin_clear a
matched=$(matched_now)
curl -s -o /dev/null -X DELETE "$S/v2/gitlab/locked/manifests/$locked_gl"
curl -s -o /dev/null -X DELETE "$S/v2/acr/locked/manifests/$locked_acr"
events_matched $((matched + 4)) || true
settled "$GL" $((n_gl + 1)) || true
GL_FAILED=$(jget '[.[] | select(.status == "Failed") | .id] | join(" ")')
is "$(jget "[.[:length - $n_gl][].status] | unique | join(\",\")")" Failed \
    "gitlab: the deletion of an image with a protected tag fails its execution"
like "$(exec_error "${GL_FAILED%% *}")" "gitlab: deleting grp/proj/gitlab/locked@$locked_gl: DELETE [^ ]*/v2/grp/proj/gitlab/locked/manifests/$locked_gl: http 403 DENIED: .*protected" \
    "naming the kind, the step and GitLab's answer (http 403)"
is "$(manifest_digest "$STANDIN_L_UPSTREAM_URL" grp/proj/gitlab/locked v1)" "$locked_gl" "and the image is still on GitLab"
settled "$ACR" $((n_acr + 1)) || true
ACR_FAILED=$(jget '[.[] | select(.status == "Failed") | .id] | join(" ")')
is "$(jget "[.[:length - $n_acr][].status] | unique | join(\",\")")" Failed \
    "acr: the deletion in a repository with deletion disabled fails its execution"
like "$(exec_error "${ACR_FAILED%% *}")" "acr: deleting acr/locked@$locked_acr: DELETE [^ ]*/v2/acr/locked/manifests/$locked_acr: http 405 DENIED: The operation is disallowed on this registry, repository or image\." \
    "naming the kind, the step and ACR's answer"
is "$(manifest_digest "$STANDIN_A_UPSTREAM_URL" acr/locked v1)" "$locked_acr" "and the image is still on ACR"
ALL+=$(exec_error "${GL_FAILED%% *}")$(exec_error "${ACR_FAILED%% *}")
# changes LETTER: the statuses of the requests that could change something (neither GET nor HEAD), unique.
changes() { standin_records "$1" | jq -r '[.[] | select(.method != "GET" and .method != "HEAD") | "\(.method) \(.status)"] | unique | join(",")'; }
is "$(changes l)|$(changes a)" "DELETE 403|DELETE 405" \
    "nothing else was tried on either target: the refused DELETEs were the only requests that change anything"

standin_control l protect_tags= >/dev/null
is "$(acr_delete true)" 200 "acr: deletion is enabled again"
standin_clear l
standin_clear a
retried=""
for id in $GL_FAILED $ACR_FAILED; do
    api POST "/executions/$id/retry"
    retried+="$STATUS:$(jget .retried) "
done
like "$retried" "^(202:1 )+$" "the failed executions are retried"
settled "$GL" $((n_gl + 1)) || true
is "$(jget '[.[].status] | unique | join(",")'):$(manifest_digest "$STANDIN_L_UPSTREAM_URL" grp/proj/gitlab/locked v1)" Succeeded:missing \
    "gitlab: the retry succeeds once the tag is no longer protected, and the image is gone"
settled "$ACR" $((n_acr + 1)) || true
is "$(jget '[.[].status] | unique | join(",")'):$(manifest_digest "$STANDIN_A_UPSTREAM_URL" acr/locked v1)" Succeeded:missing \
    "acr: the retry succeeds once deletion is enabled, and the image is gone"
is "$(deleted l)|$(deleted a)" \
    "DELETE registry /v2/grp/proj/gitlab/locked/manifests/$locked_gl 202|DELETE registry /v2/acr/locked/manifests/$locked_acr 202" \
    "both with the registry's DELETE"

# --- no secret anywhere ------------------------------------------------------------------------------------
everything=$ALL
for letter in h e d g q l r a; do
    everything+=$(standin_records "$letter")$(cat "$E2E_WORK/$letter/standin.log")
done
api GET /registries
everything+=$BODY$(cat "$SERVE_LOG" "$SERVE_OUT")
declare -A SECRETS=([harbor password]=$STANDIN_H_PASS [ecr secret key]=$STANDIN_E_SECRET_ACCESS_KEY
    [dockerhub PAT]=$STANDIN_D_PAT [ghcr PAT]=$STANDIN_G_PAT [quay OAuth token]=$STANDIN_Q_OAUTH_TOKEN
    [gitlab token]=$STANDIN_L_TOKEN [gar private key]=$(jq -r .private_key <<<"$KEY" | sed -n 2p)
    [acr password]=$STANDIN_A_PASS [webhook secret]=$HOOK_SECRET)
leaked="" sealed=""
for name in "${!SECRETS[@]}"; do
    grep -q -F -e "${SECRETS[$name]}" <<<"$everything" && leaked+="$name; "
    grep -a -q -F -e "${SECRETS[$name]}" "$SERVE_DB" "$SERVE_DB-wal" 2>/dev/null && sealed+="$name; "
done
is "${leaked:-none}" none "no password, token, PAT, secret key or private key appears in an answer, a log or a stand-in's record"
is "${sealed:-none}" none "and none is in clear in serve's database"
serve_stop
done_testing
