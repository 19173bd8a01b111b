#!/usr/bin/env bash
# What replica run does when things break. A blob corrupted in the source's
# storage fails its tag with a clear error, no manifest is pushed for it, and
# the other tags complete. A registry killed mid-transfer fails the task with
# a clear error, and a re-run completes it. A dead registry is reported.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL

# --- corruption --------------------------------------------------------------
expected=$(seed "$S" c/app good1,good2,bad oci 3 65536)
manifest() { curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$S/v2/c/app/manifests/$1"; }
digests() { grep -o 'sha256:[0-9a-f]\{64\}' | sort -u; }
only_bad=$(comm -23 <(manifest bad | digests) <(manifest good1 | digests))
corrupt=$(tail -n 1 <<<"$only_bad")   # a layer only the bad tag uses
hex=${corrupt#sha256:}
data=$REG_SRC_STORAGE/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
ok $([[ -f $data ]]; echo $?) "found the layer to corrupt in the source's storage"
printf '\xff' | dd of="$data" bs=1 count=1 conv=notrunc status=none

replica_run --from "$S" --to "$D" --repo c/app
is "$RC" 1 "a run with a corrupt source blob exits 1"
like "$OUT" "FAILED c/app:bad +stage push: .*digest mismatch" "the summary names the tag, the stage and the reason"
is "$(manifest_digest "$D" c/app bad)" missing "no manifest is pushed for the corrupt tag"
is "$(blob_status "$D" c/app "$corrupt")" 404 "the corrupt blob is not on the target"
for tag in good1 good2; do
    is "$(manifest_digest "$D" c/app $tag)" "$(grep "c/app:$tag " <<<"$expected" | cut -d' ' -f2)" \
        "the good tag $tag completes"
done

# --- a registry killed mid-transfer -------------------------------------------
big=$E2E_WORK/big.bin
head -c $((256 << 20)) /dev/urandom >"$big"
want=$(push_big_image "$S" big/app v1 "$big")

dst_pid=$(pgrep -f "docker-registry serve $E2E_WORK/dst/config.json")
"$REPLICA" run --from "$S" --to "$D" --repo big/app >"$E2E_WORK/killed.out" 2>&1 &
run_pid=$!
killed=1
if wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/big/app/_uploads" $((16 << 20)) "$run_pid"; then
    kill -9 "$dst_pid"
    killed=0
fi
ok "$killed" "the target registry was killed with the blob upload in progress"
finish_run "$run_pid" "$E2E_WORK/killed.out"
is "$RC" 1 "the run fails"
like "$OUT" "FAILED big/app:v1 +stage (push|push_prepare): .*(closed|connect)" "with a clear error naming the transfer failure"

docker-registry serve "$E2E_WORK/dst/config.json" </dev/null >>"$E2E_WORK/dst/registry.log" 2>&1 &
_REGISTRY_PIDS+=("$!")
for _ in $(seq 1 200); do curl -s -o /dev/null "$D/v2/" && break; sleep 0.05; done
replica_run --from "$S" --to "$D" --repo big/app
is "$RC" 0 "after the registry is back, a re-run succeeds"
is "$(manifest_digest "$D" big/app v1)" "$want" "and the image is complete on the target"

# --- a chunked upload cut off by a restart of the target -----------------------
# Distribution drops an upload whose stored bytes no longer match its state (a
# PATCH cut off midway), so the client finds it cannot resume and starts the
# upload over; resuming itself is covered by spec/oci_chunked_spec.lua.
dst_pid=$(pgrep -f "docker-registry serve $E2E_WORK/dst/config.json" | head -n 1)
"$REPLICA" run --from "$S" --to "$D" --repo big/app --dest-namespace chunked --chunk-size 8M \
    >"$E2E_WORK/chunked.out" 2>&1 &
run_pid=$!
restarted=1
if wait_for_upload "$REG_DST_STORAGE/docker/registry/v2/repositories/chunked/big/app/_uploads" $((20 << 20)) "$run_pid"; then
    kill -9 "$dst_pid"
    docker-registry serve "$E2E_WORK/dst/config.json" </dev/null >>"$E2E_WORK/dst/registry.log" 2>&1 &
    _REGISTRY_PIDS+=("$!")
    restarted=0
fi
ok "$restarted" "the target registry was killed and restarted with a chunked upload in progress"
finish_run "$run_pid" "$E2E_WORK/chunked.out"
is "$RC" 0 "the chunked run completes"
like "$OUT" "resuming" "after asking the target how much of the upload it kept"
is "$(manifest_digest "$D" chunked/big/app v1)" "$want" "and the image is complete and exact on the target"

# --- a dead registry -----------------------------------------------------------
replica_run --from "$S" --to http://127.0.0.1:9 --repo c/app --tag good1
is "$RC" 1 "a target that refuses connections fails the run"
like "$OUT" "FAILED c/app:good1 +stage push_prepare: .*connect" "and says it could not connect"
# once one request found every attempt refused, the later ones are tried
# once each: the run does not wait out the same backoff stage after stage
is "$(grep -c '127.0.0.1:9/v2/: connect, retry' <<<"$OUT")" 4 "only the first request to the dead target is retried"
like "$OUT" "not retried: http://127.0.0.1:9 refused every attempt of an earlier request" "the failure says why it was not retried"

done_testing
