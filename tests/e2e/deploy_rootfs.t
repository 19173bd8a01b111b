#!/usr/bin/env bash
# `replica function` as deploy/ runs it, without a container runtime (none can
# run here): in a mount namespace whose / is a read-only bind of this
# machine's, with only /tmp writable (the image's VOLUME, Knative's emptyDir)
# and as UID 10001 (the image's USER), it copies an image into a Basic-auth
# registry, and drains on SIGTERM. Its seal key is mounted as Kubernetes and
# OpenFaaS mount a secret: root-owned, mode 0644, reached through ..data
# symbolic links, on a read-only tmpfs; the same key on a writable file
# system is refused. Needs root, unshare and setpriv; skipped otherwise.
set -euo pipefail
source "$(dirname "$0")/../lib/function.sh"

if [[ $(id -u) != 0 ]] || ! command -v unshare >/dev/null || ! command -v setpriv >/dev/null ||
    ! unshare -m true 2>/dev/null; then
    echo "1..0 # SKIP needs root, unshare -m and setpriv"
    exit 0
fi

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" ro/app v1 oci 2 2048 first >/dev/null
SEALED=$(seal "$D" "$REG_DST_USER" "$REG_DST_PASS")

chmod 755 "$E2E_WORK"
RO=$E2E_WORK/root
mkdir "$RO"
# rootfs CMD...: CMD under the read-only root, as 10001; rootfs-replica
# ARGS: $REPLICA so. Every step execs, so fn_start's PID is the function's
# and SIGTERM reaches it.
cat >"$E2E_WORK/rootfs" <<SH
#!/bin/sh
exec unshare -m --propagation private sh -ec '
    mount --bind / "$RO"; mount -o remount,bind,ro "$RO"
    mount --bind /tmp "$RO/tmp"; mount --rbind /dev "$RO/dev"; mount -t proc proc "$RO/proc"
    mount -t tmpfs -o size=64k tmpfs "$RO/mnt"; mkdir "$RO/mnt/..2026_12_02"
    cp "$FN_KEY" "$RO/mnt/..2026_12_02/replica-seal-key"; chmod 0644 "$RO/mnt/..2026_12_02/replica-seal-key"
    ln -s ..2026_12_02 "$RO/mnt/..data"; ln -s ..data/replica-seal-key "$RO/mnt/replica-seal-key"
    mount -o remount,ro "$RO/mnt"
    exec chroot "$RO" setpriv --reuid 10001 --regid 10001 --clear-groups env HOME=/tmp "\$@"' sh "\$@"
SH
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$E2E_WORK/rootfs" "$REPLICA" >"$E2E_WORK/rootfs-replica"
chmod 755 "$E2E_WORK/rootfs" "$E2E_WORK/rootfs-replica"

out=$("$E2E_WORK/rootfs" sh -c 'id -u; touch /replica-rootfs-check 2>&1; touch /tmp/replica-rootfs-check && echo tmp-ok' || true)
like "$out" '^10001$' "the sandbox runs as UID 10001"
like "$out" 'Read-only file system' "its / is read-only"
like "$out" 'tmp-ok' "its /tmp is writable"
rm -f /tmp/replica-rootfs-check

REPLICA=$E2E_WORK/rootfs-replica fn_start fn --max-inflight 4 --drain-timeout 30 --seal-key-file /mnt/replica-seal-key
ok 0 "replica function starts and is ready under the read-only root, with a root-owned 0644 key behind ..data links"
invoke "$(jq -nc --arg s "$S" --arg d "$D" --arg c "$SEALED" \
    '{template: "distribution", source: {url: $s}, target: {url: $d, credentials: $c},
      repository: "ro/app", tags: ["v1"]}')"
is "$STATUS" 200 "an invocation answers 200"
is "$(jget .status)" succeeded "and its task succeeded"
is "$(curl -s -u "$REG_DST_USER:$REG_DST_PASS" "$D/v2/ro/app/tags/list" | jq -c .tags)" '["v1"]' "the image is in the target registry"
fn_stop
is "$FN_RC" 0 "SIGTERM: it drains and exits 0"
unlike "$(cat "$FN_LOG")" 'Read-only|Permission denied' "nothing it did was refused by the file system"

cp "$FN_KEY" "$E2E_WORK/shared.key"
chmod 0644 "$E2E_WORK/shared.key"
out=$(REPLICA_FUNCTION_TOKEN=t "$REPLICA" function --listen 127.0.0.1:0 --seal-key-file "$E2E_WORK/shared.key" 2>&1 || true)
like "$out" "key file .*shared.key: mode 0644 lets group or others access it" \
    "the same key, readable by others on a writable file system, is refused"
ln -s shared.key "$E2E_WORK/linked.key"
chmod 0600 "$E2E_WORK/shared.key"
out=$(REPLICA_FUNCTION_TOKEN=t "$REPLICA" function --listen 127.0.0.1:0 --seal-key-file "$E2E_WORK/linked.key" 2>&1 || true)
like "$out" "key file .*linked.key: is a symbolic link, refusing it \(a link is accepted only to a read-only mount" \
    "and so is a symbolic link to a key there"

done_testing
