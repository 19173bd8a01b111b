#!/usr/bin/env bash
# POST /policies/{id}/preview against real registries: what a run of the
# policy would copy now (repositories, their target names, each tag's source
# and target digest and whether it would be copied, is up to date, or is kept
# because override is off), with the policy's filters, namespace and
# flattening; a preview copies nothing and records no execution, and what it
# predicts is what the run then does. An unknown policy is 404, a source or
# target that cannot be reached is 502 naming it.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src" basic
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL
SC=$REG_SRC_USER:$REG_SRC_PASS DC=$REG_DST_USER:$REG_DST_PASS
expected=$(seed "$S" team/app v1,v2,v3 oci 1 1024 seed "$SC"
           seed "$S" team/multi v1 oci-index 1 1024 seed "$SC"
           seed "$S" team/tools t1,t1-debug docker 1 1024 seed "$SC"
           seed "$S" other/skip v1 oci 1 1024 seed "$SC")
src_digest() { grep "^$1 " <<<"$expected" | cut -d' ' -f2; }

# target_state: every repository:tag of the target with its digest, sorted.
target_state() {
    local repo tag
    for repo in $(curl -s -u "$DC" "$D/v2/_catalog" | jq -r '.repositories[]?'); do
        for tag in $(curl -s -u "$DC" "$D/v2/$repo/tags/list" | jq -r '.tags[]?'); do
            echo "$repo:$tag $(manifest_digest "$D" "$repo" "$tag" "$DC")"
        done
    done | sort
}

serve_start preview
api POST /registries "$(registry_json src "$S" "\"username\": \"$REG_SRC_USER\", \"password\": \"$REG_SRC_PASS\"")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
DST_ID=$(jget .id)
policy() { # NAME EXTRA_FIELDS [SRC] [DST]: creates a policy; its id in $PID_NEW
    api POST /policies "{\"name\": \"$1\", \"source_registry\": ${3:-$SRC_ID}, \"target_registry\": ${4:-$DST_ID}${2:+, $2}}"
    PID_NEW=$(jget .id)
}

# --- the target holds some of it already ------------------------------------------
# v1 of team/app and team/multi copied by an execution; mirror/app:v2 pushed
# with other content.
policy pre '"repositories": ["team/app", "team/multi"], "tags": ["v1"], "dest_namespace": "mirror", "flatten": 1'
api POST "/policies/$PID_NEW/executions"
wait_exec "$(jget .id)" Succeeded Failed
is "$(jget .status)" Succeeded "an execution copies team/app:v1 and team/multi:v1 to mirror/"
other=$(seed "$D" mirror/app v2 oci 1 1024 other "$DC" | cut -d' ' -f2)
ok "$([[ $other != "$(src_digest team/app:v2)" ]]; echo $?)" "the target's mirror/app:v2 has other content than the source's"

# --- a preview: override off, a disabled policy -------------------------------------
policy mirror '"repositories": ["team/**"], "exclude_tags": ["*-debug"], "dest_namespace": "mirror", "flatten": 1, "override": false, "enabled": false'
P=$PID_NEW
before_target=$(target_state)
before_rows=$(sqlite3 "$SERVE_DB" 'SELECT count(*) FROM executions; SELECT count(*) FROM tasks; SELECT max(updated) FROM policies' | tr '\n' ' ')
api POST "/policies/$P/preview"
is "$STATUS" 200 "a disabled policy can be previewed: 200"
is "$(jget '[.repositories[] | "\(.repository)>\(.dest_repository)"] | join(" ")')" \
    "team/app>mirror/app team/multi>mirror/multi team/tools>mirror/tools" \
    "it lists the selected repositories (not other/skip) with their target names (namespace, flatten 1), sorted"
is "$(jget '[.repositories[] | .dest_repository as $d | .tags[] | "\($d):\(.tag)=\(.action)"] | join(" ")')" \
    "mirror/app:v1=up-to-date mirror/app:v2=kept mirror/app:v3=copy mirror/multi:v1=up-to-date mirror/tools:t1=copy" \
    "each tag's action: up-to-date (same digest), kept (other digest, override off), copy (missing); t1-debug is excluded"
is "$(jget '.repositories[0].tags | map("\(.tag)=\(.digest)") | join(" ")')" \
    "v1=$(src_digest team/app:v1) v2=$(src_digest team/app:v2) v3=$(src_digest team/app:v3)" \
    "digest is the source manifest digest"
is "$(jget '.repositories[0].tags | map("\(.tag)=\(.target_digest)") | join(" ")')" \
    "v1=$(src_digest team/app:v1) v2=$other v3=null" \
    "target_digest is what the target holds, null where it lacks the tag"
is "$(jget '.repositories[1].tags[0].digest')" "$(src_digest team/multi:v1)" "an index is compared by its own digest"
is "$(jget '.totals | "\(.repositories) \(.tags) \(.copy) \(.up_to_date) \(.kept)"')" "3 5 2 2 1" \
    "totals: 3 repositories, 5 tags, 2 to copy, 2 up to date, 1 kept"
is "$(jget .truncated)" false "not truncated"
is "$(target_state)" "$before_target" "the preview changed nothing on the target (tags and digests)"
is "$(sqlite3 "$SERVE_DB" 'SELECT count(*) FROM executions; SELECT count(*) FROM tasks; SELECT max(updated) FROM policies' | tr '\n' ' ')" \
    "$before_rows" "and wrote nothing to the database (no execution, no task)"
api GET "/executions?policy=$P"
is "$STATUS:$(jget length)" "200:0" "the policy has no execution"

# --- the cap on the answer ------------------------------------------------------------
api POST "/policies/$P/preview?max_tags=2"
is "$STATUS:$(jget .truncated):$(jget .totals.tags):$(jget .totals.repositories)" "200:true:2:1" \
    "?max_tags=2: the first two tags, and truncated: true"
api POST "/policies/$P/preview?max_tags=10001"
is "$STATUS:$(jget .error)" "400:max_tags must be 1..10000" "max_tags above 10,000: 400"

# --- override on, then the run does what the preview said ------------------------------
api PUT "/policies/$P" '{"override": true, "enabled": true}'
api POST "/policies/$P/preview"
is "$(jget '[.repositories[].tags[] | "\(.tag)=\(.action)"] | join(" ")')" \
    "v1=up-to-date v2=copy v3=copy v1=up-to-date t1=copy" "override on: the tag with other content is copied"
is "$(jget '.totals | "\(.copy) \(.up_to_date) \(.kept)"')" "3 2 0" "totals: 3 to copy, 2 up to date, none kept"
api POST "/policies/$P/executions"
EID=$(jget .id)
wait_exec "$EID" Succeeded Failed
is "$(jget .status):$(jget .total)" "Succeeded:3" "the run succeeds with a task per previewed repository"
api GET "/executions/$EID/tasks"
is "$(jget '[.[].stages[] | select(.name == "push") | .output] | "\(map(.pushed) | add) \(map(.skipped) | add) \(map(.kept) | add)"')" \
    "3 2 0" "it pushed the 3 tags the preview said it would copy and skipped the 2 up to date"
is "$(manifest_digest "$D" mirror/app v2 "$DC")" "$(src_digest team/app:v2)" "mirror/app:v2 now has the source's content"
api POST "/policies/$P/preview"
is "$(jget '.totals | "\(.tags) \(.copy) \(.up_to_date)"')" "5 0 5" "a preview after the run: all 5 tags up to date"

# --- errors ------------------------------------------------------------------------------
api POST /policies/999/preview
is "$STATUS:$(jget .error)" "404:policy 999 not found" "an unknown policy: 404"
api POST /policies/abc/preview
is "$STATUS" 404 "a non-numeric id: 404"
api GET "/policies/$P/preview"
is "$STATUS" 405 "GET: 405"
policy deep '"repositories": ["team/**"], "dest_namespace": "mirror", "flatten": 3'
api POST "/policies/$PID_NEW/preview"
is "$STATUS" 409 "a flattening deeper than the repositories: 409"
like "$(jget .error)" "cannot be planned: repository \"team/[a-z]+\" has 1 level\(s\) before its name, fewer than the flattening level 3" "... saying why"

# A target nothing listens on.
api POST /registries "$(registry_json nowhere "http://127.0.0.1:$(_servers_free_port)")"
policy to-nowhere '"repositories": ["team/app"]' "$SRC_ID" "$(jget .id)"
api POST "/policies/$PID_NEW/preview"
is "$STATUS" 502 "a target that cannot be reached: 502"
like "$(jget .error)" "^target registry 'nowhere' \(http://127\.0\.0\.1:[0-9]+\): team/app:v[0-9]: .*connect" \
    "... naming the target registry and the failure"

# A source registry that stops.
registry_start gone "$E2E_WORK/gone" none
seed "$REG_GONE_URL" lone/app v1 oci 1 1024 >/dev/null
api POST /registries "$(registry_json gone "$REG_GONE_URL")"
policy from-gone '' "$(jget .id)" "$DST_ID"
G=$PID_NEW
api POST "/policies/$G/preview"
is "$STATUS:$(jget '.totals.copy')" "200:1" "a preview from a third registry while it runs"
gone_pid=$(pgrep -f "docker-registry serve $E2E_WORK/gone/config.json")
kill "$gone_pid"
wait "$gone_pid" 2>/dev/null || true
api POST "/policies/$G/preview"
is "$STATUS" 502 "the source registry stopped: 502"
like "$(jget .error)" "^source registry 'gone' \(http://127\.0\.0\.1:[0-9]+\): listing the source catalog: .*connect" \
    "... naming the source registry and what failed"
is "$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM executions WHERE policy IN ($G, $P)")" 1 \
    "failed previews record no execution either"

serve_stop
done_testing
