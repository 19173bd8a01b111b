#!/usr/bin/env bash
# replica run's options as an operator uses them: --dry-run changes nothing,
# --json carries every stage's result in template order, --no-override keeps
# a target tag that points elsewhere and reports it, --platform narrows a
# multi-arch image, and credentials come from a docker credential helper.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL

expected=$(seed "$S" opt/app v1,v2 oci 2 2048 first
           seed "$S" opt/multi v1 oci-index 2 2048 first)

replica_run --from "$S" --to "$D" --repo 'opt/**' --dry-run
is "$RC" 0 "a dry run succeeds"
like "$OUT" "opt/app:v1 -> opt/app:v1" "it lists what would be copied"
like "$OUT" "2 repositories, would copy up to 3 tags \(dry run\)" "with the totals"
is "$(manifest_digest "$D" opt/app v1)" missing "and copies nothing"

replica_run --from "$S" --to "$D" --repo opt/app --json
is "$RC" 0 "a --json run succeeds"
stages=$(python3 -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1]); print(" ".join(s["name"]+":"+s["status"] for s in d["tasks"][0]["stages"]))' <<<"$OUT")
is "$stages" "pull_prepare:succeeded pull:succeeded pull_post:succeeded push_prepare:succeeded push:succeeded push_post:succeeded" \
    "the JSON has the six stage results in template order"

# The source moves on: v1 now points at a new image.
new=$(seed "$S" opt/app v1 oci 2 2048 second)
replica_run --from "$S" --to "$D" --repo opt/app --no-override
is "$RC" 0 "a --no-override run succeeds"
like "$OUT" "KEPT opt/app:v1  target has sha256:" "it reports the tag it kept"
is "$(manifest_digest "$D" opt/app v1)" "$(grep 'opt/app:v1 ' <<<"$expected" | cut -d' ' -f2)" \
    "and the target's v1 is unchanged"
replica_run --from "$S" --to "$D" --repo opt/app
is "$(manifest_digest "$D" opt/app v1)" "${new#* }" "without --no-override the tag is replaced"

replica_run --from "$S" --to "$D" --repo opt/multi --platform linux/arm64 --dest-namespace arm
is "$RC" 0 "a --platform run succeeds"
arm_child=$(curl -s -H 'Accept: application/vnd.oci.image.index.v1+json' "$S/v2/opt/multi/manifests/v1" |
    python3 -c 'import json,sys; print([m["digest"] for m in json.load(sys.stdin)["manifests"] if m["platform"]["architecture"]=="arm64"][0])')
is "$(manifest_digest "$D" arm/opt/multi v1)" "$arm_child" "the tag points at the arm64 image only"

replica_run --from "$S" --to "$D" --repo opt/typo
is "$RC" 1 "a repository named on the command line that does not exist fails the run"
like "$OUT" "repository opt/typo not found on the source" "and says so"

# A docker credential helper, as with `credsStore` in config.json.
registry_start locked "$E2E_WORK/locked" basic
mkdir -p "$E2E_WORK/bin" "$E2E_WORK/docker"
cat >"$E2E_WORK/bin/docker-credential-e2e" <<HELPER
#!/bin/sh
read -r server
[ "\$1" = get ] && [ "\$server" = "${REG_LOCKED_URL#http://}" ] || exit 1
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\n' "\$server" "$REG_LOCKED_USER" "$REG_LOCKED_PASS"
HELPER
chmod +x "$E2E_WORK/bin/docker-credential-e2e"
printf '{"credsStore": "e2e"}\n' >"$E2E_WORK/docker/config.json"
PATH=$E2E_WORK/bin:$PATH DOCKER_CONFIG=$E2E_WORK/docker replica_run --from "$S" --to "$REG_LOCKED_URL" --repo opt/app
is "$RC" 0 "credentials from a credential helper (credsStore) open a Basic-auth target"
unlike "$OUT" "$REG_LOCKED_PASS" "and the secret is not printed"

# --bandwidth caps a repository's copy: 16 MiB at 2 MiB/s takes about 6 s
# (curl lets a few MiB through at full speed before its limiter settles),
# unlimited it takes a fraction of a second here.
head -c $((16 << 20)) /dev/urandom >"$E2E_WORK/bw.bin"
want=$(push_big_image "$S" bw/app v1 "$E2E_WORK/bw.bin")
t0=$EPOCHREALTIME
replica_run --from "$S" --to "$D" --repo bw/app --bandwidth 2M
secs=$(awk -v s="$t0" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }')
is "$RC:$(manifest_digest "$D" bw/app v1)" "0:$want" "a run with --bandwidth completes"
ok "$(awk -v s="$secs" 'BEGIN { exit !(s >= 4) }'; echo $?)" "and 16 MiB at 2 MiB/s took at least 4 s ($secs s)"
# and in chunks too: each PATCH is a request of its own, and the upload keeps
# the pace across them (1 MiB chunks would otherwise each go at full speed)
t0=$EPOCHREALTIME
replica_run --from "$S" --to "$D" --repo bw/app --dest-namespace chunked --bandwidth 4M --chunk-size 1M
secs=$(awk -v s="$t0" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }')
is "$RC:$(manifest_digest "$D" chunked/bw/app v1)" "0:$want" "a chunked run with --bandwidth completes"
ok "$(awk -v s="$secs" 'BEGIN { exit !(s >= 3) }'; echo $?)" "and 16 MiB in 1 MiB chunks at 4 MiB/s took at least 3 s ($secs s)"
replica_run --from "$S" --to "$D" --repo bw/app --bandwidth 1
like "$OUT" "--bandwidth must be a byte rate of at least 1K" "a bandwidth below 1K is refused"

done_testing
