#!/usr/bin/env bash
# replica run through a faulty link (tests/faultproxy.c in front of each
# registry): resets mid-blob on both sides, truncated manifests, a 429 storm
# (its Retry-After honoured: no retry before the time it names), 5xx bursts,
# a stall mid-body, the target killed and restarted, and the target's disk
# full. Each run either completes through retries or fails clearly; a re-run
# then completes it, and the target never holds a tag whose content is not
# exactly the source's.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/lib/proxy.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL
export REPLICA_TO_CREDS=$REG_DST_USER:$REG_DST_PASS
DA=$REG_DST_USER:$REG_DST_PASS
proxy_start src "$S"
proxy_start dst "$D"
PS=$PROXY_SRC_URL PD=$PROXY_DST_URL

# three repositories of two tags, two 1 MiB layers each (a reset at 200000
# bytes is mid-blob)
expected=""
for r in a b c; do
    expected+=$(seed "$S" "fault/$r" v1,v2 oci 2 $((1 << 20)) "seed-$r")$'\n'
done

# verify NS: every source tag is on the target under NS/ at the source's
# digest; prints the tags that are not, or nothing.
verify() {
    local ns=$1 ref digest
    while read -r ref digest; do
        [[ -n $ref ]] || continue
        [[ $(manifest_digest "$D" "$ns/${ref%%:*}" "${ref#*:}" "$DA") == "$digest" ]] || echo "$ref"
    done <<<"$expected"
}

# no_partial NS: every tag the target has under NS/fault/* is exact (a tag
# that is there at all is the source's digest); prints the others.
no_partial() {
    local ns=$1 ref digest got
    while read -r ref digest; do
        [[ -n $ref ]] || continue
        got=$(manifest_digest "$D" "$ns/${ref%%:*}" "${ref#*:}" "$DA")
        [[ $got == missing || $got == "$digest" ]] || echo "$ref:$got"
    done <<<"$expected"
}

# fired NAME RULE: how many requests proxy NAME's rule RULE answered or cut.
fired() {
    proxy_log "$1" | awk -v r="$2" '$6 == r' | wc -l
}

run_via() { # run_via NS [ARGS]: replica run through both proxies into NS/
    local ns=$1
    shift
    replica_run --from "$PS" --to "$PD" --repo 'fault/**' --dest-namespace "$ns" "$@"
}

# --- request counts, before any fault: run --json's against the proxies' ------------
bs=$(proxy_stat src requests) bd=$(proxy_stat dst requests)
proxy_clear src
proxy_clear dst
run_via counted --json
is "$RC" 0 "a clean run through both proxies"
# heads NAME: the HEAD requests proxy NAME saw, a path each
heads() { proxy_log "$1" | awk '$3 == "HEAD" { print $4 }'; }
is "$(heads src)" "" "the source got no HEAD: the planner's listing showed each repository readable"
is "$(heads dst)" "" \
    "the target got no HEAD: none before, for none of the repositories was there (one tags/list each said so), and none after, for each tag PUT's answer named the digest stored"
is "$(grep '^{' <<<"$OUT" | jq -c '[.tasks[].stages[] | select(.name == "push_post") | .output] | [map(.verified), map(.confirmed), map(.read_back)] | map(add)')" \
    "[6,6,0]" "push_post counts the 6 pushed tags verified, all by their PUT's confirmation, none read back"
counts=$(grep '^{' <<<"$OUT" | jq -r '.summary.requests | "\(.source.total) \(.target.total) \(.other)"')
is "$counts" "$(($(proxy_stat src requests) - bs)) $(($(proxy_stat dst requests) - bd)) 0" \
    "run --json counts the requests each registry got, as the proxies in front of them saw them"
ok "$(grep '^{' <<<"$OUT" | jq -e '.summary.requests | .per_tag > 0 and .per_blob > 0 and .source.GET > 0 and .target.PUT > 0' >/dev/null; echo $?)" \
    "with the rates per tag and per blob, and the methods"

# --- a target that does not say what it stored -----------------------------------
# Its answers to manifest PUTs lack Docker-Content-Digest, so push_post reads
# every pushed tag back; one that the target then does not show fails its task.
proxy_clear dst
proxy_rules dst <<'EOF'
PUT /v2/*/manifests/* drop-header=Docker-Content-Digest
HEAD /v2/unconfirmed/fault/b/manifests/v2 status=404
EOF
run_via unconfirmed --json
is "$RC" 1 "a tag the target does not show when read back fails the run"
post() { grep '^{' <<<"$OUT" | jq -c --arg r "fault/$1" '.tasks[] | select(.repository == $r) | .stages[] | select(.name == "push_post") | '"$2"; }
is "$(post a '.output | [.verified, .confirmed, .read_back]') $(post c '.output | [.verified, .confirmed, .read_back]')" \
    "[2,0,2] [2,0,2]" "push_post read back each tag whose PUT was not confirmed (verified, confirmed, read back)"
like "$(post b .error)" "v2: missing on the target" "and names the tag it could not find"
is "$(heads dst | sort)" "$(for r in a b c; do for t in v1 v2; do echo "/v2/unconfirmed/fault/$r/manifests/$t"; done; done)" \
    "with one HEAD for each pushed tag, and no other"
proxy_rules dst </dev/null
run_via unconfirmed
is "$RC" 0 "a re-run completes"
is "$(verify unconfirmed)" "" "every tag is on the target, exact"
proxy_clear dst

# --- resets mid-blob, on both sides ------------------------------------------------
proxy_rules src <<'EOF'
GET /v2/*/blobs/sha256:* nth=2 times=3 reset=200000
EOF
proxy_rules dst <<'EOF'
PUT /v2/*/blobs/uploads/* nth=3 times=2 reset-up=300000
PATCH /v2/*/blobs/uploads/* nth=1 times=1 reset-up=300000
EOF
run_via resets
is "$RC" 0 "blob downloads reset mid-body and uploads reset mid-body: the run completes through retries"
is "$(fired src 1) $(( $(fired dst 1) + $(fired dst 2) ))" "3 2" "the proxies cut three downloads and two uploads"
like "$OUT" "retry 1/4" "the retries are logged"
is "$(verify resets)" "" "every tag is on the target, exact"

# --- truncated manifests ----------------------------------------------------------
proxy_clear src
proxy_rules src <<'EOF'
GET /v2/fault/*/manifests/* times=2 truncate=100
EOF
proxy_rules dst </dev/null
run_via truncated
if ((RC == 0)); then
    ok 0 "truncated manifest bodies: the run completes through retries"
else
    like "$OUT" "FAILED fault/.* (closed|short|truncated|size)" "truncated manifest bodies: the run fails clearly"
fi
is "$(fired src 1)" 2 "the proxy cut two manifests short"
is "$(no_partial truncated)" "" "no tag on the target holds anything but the source's content"
proxy_rules src </dev/null
run_via truncated
is "$RC" 0 "a re-run completes"
is "$(verify truncated)" "" "and every tag is exact"

# --- a 429 storm, with Retry-After ----------------------------------------------------
proxy_clear src
proxy_clear dst
proxy_rules src <<'EOF'
GET /v2/fault/*/manifests/* nth=2 times=4 status=429 retry-after=2
GET /v2/*/blobs/* nth=3 times=2 status=429 retry-after=1
EOF
proxy_rules dst <<'EOF'
POST /v2/*/blobs/uploads/ nth=2 times=3 status=429 retry-after=1
EOF
run_via storm
is "$RC" 0 "a 429 storm on both sides: the run completes"
is "$(fired src 1) $(fired src 2) $(fired dst 1)" "4 2 3" "after 4 + 2 answers 429 from the source and 3 from the target"
is "$(verify storm)" "" "every tag is on the target, exact"
# honoured: after a 429 (at MS, waiting S), no request to that registry
# comes before MS + S * 1000, but for those the client had sent before the
# 429 reached it (taken as those within 100 ms of it)
early() { # early NAME: requests to proxy NAME that came too soon, as "PATH early by MS ms"
    proxy_log "$1" | awk '
        $5 == 429 { at = $1; until = $1 + ($4 ~ /manifests/ ? 2000 : 1000); if (until > end) end = until; next }
        $1 > at + 100 && $1 < end { print $3 " " $4 " early by " end - $1 " ms" }'
}
retried() { # retried NAME: how many 429s were followed by a request for the same path
    proxy_log "$1" | awk '{ k = $3 " " $4; last[k] = NR } $5 == 429 { at[NR] = k }
        END { for (i in at) if (last[at[i]] > i + 0) n++; print n + 0 }'
}
is "$(early src)$(early dst)" "" "no request after a 429 came before the time its Retry-After names"
is "$(retried src) $(retried dst)" "6 3" "and each one was retried"

# --- 5xx bursts -------------------------------------------------------------------------
proxy_clear src
proxy_clear dst
proxy_rules src <<'EOF'
* /v2/* nth=4 times=4 status=503
EOF
proxy_rules dst <<'EOF'
* /v2/* nth=6 times=4 status=502
EOF
run_via bursts
is "$RC" 0 "a burst of 503s from the source and of 502s from the target: the run completes"
is "$(fired src 1) $(fired dst 1)" "4 4" "after four of each"
is "$(verify bursts)" "" "every tag is on the target, exact"

# --- a stall mid-body (after its first byte: any blob is longer) ---------------------
proxy_clear src
proxy_rules src <<'EOF'
GET /v2/*/blobs/sha256:* nth=2 times=1 stall=1
EOF
proxy_rules dst </dev/null
run_via stall --stall-timeout 2
is "$RC" 0 "a blob that stops mid-body: the run completes"
is "$(fired src 1)" 1 "the proxy stalled one blob"
like "$OUT" "timeout, retry 1/4" "which timed out after --stall-timeout and was retried"
is "$(verify stall)" "" "every tag is on the target, exact"
replica_run --from "$PS" --to "$PD" --repo 'fault/a' --stall-timeout 0
like "$OUT" "stall-timeout must be a number of seconds above 0" "--stall-timeout 0 is refused"

# --- the target killed and restarted ----------------------------------------------------------
proxy_rules src </dev/null
big=$E2E_WORK/big.bin
head -c $((64 << 20)) /dev/urandom >"$big"
want=$(push_big_image "$S" big/app v1 "$big")
proxy_config dst rate=400m # 64 MiB take more than a second: time to kill it mid-upload
"$REPLICA" run --from "$PS" --to "$PD" --repo big/app >"$E2E_WORK/killed.out" 2>&1 &
run_pid=$!
killed=1
if wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/big/app/_uploads" $((8 << 20)) "$run_pid"; then
    registry_restart dst "$E2E_WORK/dst"
    killed=0
fi
ok "$killed" "the target registry was killed with an upload under way, and started again"
finish_run "$run_pid" "$E2E_WORK/killed.out"
if ((RC == 0)); then
    ok 0 "the run completes through retries"
else
    like "$OUT" "FAILED big/app:v1 +stage (push|push_prepare): .*(closed|connect|http 5)" "the run fails clearly"
fi
got=$(manifest_digest "$D" big/app v1 "$DA")
ok "$([[ $got == missing || $got == "$want" ]]; echo $?)" "the target has the tag exactly, or not at all ($got)"
proxy_config dst rate=0
replica_run --from "$PS" --to "$PD" --repo big/app
is "$RC" 0 "a re-run completes"
is "$(manifest_digest "$D" big/app v1 "$DA")" "$want" "and the image is exact on the target"

# --- the target's disk full ------------------------------------------------------------------
full=$E2E_WORK/full
mkdir -p "$full"
if mount -t tmpfs -o size=24m tmpfs "$full" 2>/dev/null; then
    trap 'umount -l "$full" 2>/dev/null || true; _e2e_cleanup' EXIT
    TEST_REGISTRY_STORAGE=$full registry_start small "$E2E_WORK/small" basic
    export REPLICA_TO_CREDS=$REG_SMALL_USER:$REG_SMALL_PASS
    proxy_start small "$REG_SMALL_URL"
    replica_run --from "$PS" --to "$PROXY_SMALL_URL" --repo big/app
    is "$RC" 1 "a 64 MiB layer into a 24 MiB disk: the run fails"
    like "$OUT" "FAILED big/app:v1 +stage push: .*http 5[0-9][0-9]" "clearly, with the registry's error"
    is "$(manifest_digest "$REG_SMALL_URL" big/app v1 "$REG_SMALL_USER:$REG_SMALL_PASS")" missing "and no tag is pushed"
    mount -o remount,size=256m "$full"
    replica_run --from "$PS" --to "$PROXY_SMALL_URL" --repo big/app
    is "$RC" 0 "with room again, a re-run completes"
    is "$(manifest_digest "$REG_SMALL_URL" big/app v1 "$REG_SMALL_USER:$REG_SMALL_PASS")" "$want" "and the image is exact"
else
    ok 0 "# SKIP a tmpfs cannot be mounted here (not root?): the disk-full case is not run"
fi

done_testing
