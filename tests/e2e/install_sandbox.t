#!/usr/bin/env bash
# The installed daemon inside the sandbox deploy/replica.service asks for,
# as far as it can be had without systemd as PID 1 (none runs here): a
# read-only root (ProtectSystem=strict) with one writable state directory
# (StateDirectory) and a private-style /tmp, a UID with no passwd entry
# (DynamicUser), no capabilities (CapabilityBoundingSet=), no new
# privileges (NoNewPrivileges), and no memory both writable and executable
# (MemoryDenyWriteExecute, here the kernel's PR_SET_MDWE). Started from the
# install's bin/, with no environment, it creates its database and key in
# the state directory, serves the installed console, and replicates an
# image between two real registries. Needs root, unshare, setpriv and
# Linux 6.3's PR_SET_MDWE; skipped otherwise.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

[[ -f $ROOT/build/web/index.html ]] || { echo "1..0 # SKIP the console is not built (make web)"; exit 0; }
MDWE='import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)' # PR_SET_MDWE, REFUSE_EXEC_GAIN
if [[ $(id -u) != 0 ]] || ! command -v unshare >/dev/null || ! command -v setpriv >/dev/null ||
    ! unshare -m true 2>/dev/null || ! python3 -c "$MDWE" 2>/dev/null; then
    echo "1..0 # SKIP needs root, unshare -m, setpriv and PR_SET_MDWE (Linux 6.3)"
    exit 0
fi

BUILD=$(cd "$(dirname "$REPLICA")" && pwd)
DEST=$E2E_WORK/dest
make --no-print-directory -s -C "$ROOT" install DESTDIR="$DEST" PREFIX=/usr/local BUILD="$BUILD" \
    -o "$BUILD/replica" -o build/web/index.html >"$E2E_WORK/install.out" 2>&1
INST=$DEST/usr/local/bin/replica
chmod 755 "$E2E_WORK"
DYN=61234 # no passwd entry, as DynamicUser's
STATE=$E2E_WORK/state
RO=$E2E_WORK/root
mkdir -m 700 "$STATE" && chown "$DYN:$DYN" "$STATE"
mkdir "$RO"

# sandbox PROG ARGS...: PROG in the sandbox, the state directory at /mnt.
# Every step execs, so the PID serve_start records is replica's.
cat >"$E2E_WORK/sandbox" <<SH
#!/bin/sh
exec unshare -m --propagation private sh -ec '
    mount --bind / "$RO"; mount -o remount,bind,ro "$RO"
    mount --bind /tmp "$RO/tmp"; mount --rbind /dev "$RO/dev"; mount -t proc proc "$RO/proc"
    mount --bind "$STATE" "$RO/mnt"
    exec chroot "$RO" setpriv --reuid $DYN --regid $DYN --clear-groups --no-new-privs \
        --bounding-set -all --inh-caps -all env -i HOME=/nonexistent PATH=/usr/bin:/bin \
        python3 -c "import ctypes, os, sys; assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0; os.execv(sys.argv[1], sys.argv[1:])" "\$@"' sh "\$@"
SH
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$E2E_WORK/sandbox" "$INST" >"$E2E_WORK/sandboxed-replica"
chmod 755 "$E2E_WORK/sandbox" "$E2E_WORK/sandboxed-replica"

out=$("$E2E_WORK/sandbox" /bin/sh -c 'id -u; touch /usr/replica-check 2>&1; touch /mnt/check && echo state-ok;
    grep -E "^(NoNewPrivs|CapBnd|CapEff):" /proc/self/status' 2>&1 || true)
like "$out" "^$DYN\$" "the sandbox runs as UID $DYN"
like "$out" 'Read-only file system' "its / is read-only"
like "$out" 'state-ok' "its state directory is writable"
like "$out" 'NoNewPrivs:[[:space:]]+1' "no new privileges"
like "$out" 'CapBnd:[[:space:]]+0+$' "an empty capability bounding set"
out=$("$E2E_WORK/sandbox" /usr/bin/python3 -c 'import mmap; mmap.mmap(-1, 4096, prot=7); print("mapped")' 2>&1 || true)
like "$out" 'PermissionError' "a writable and executable mapping is refused in it"
rm -f "$STATE/check"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" sb/app v1,v2 oci 2 4096 >/dev/null

REPLICA=$E2E_WORK/sandboxed-replica serve_start sb --db /mnt/replica.db
ok 0 "the installed replica serve starts in the sandbox"
like "$(cat "$SERVE_OUT")" 'database /mnt/replica\.db' "on the state directory's database"
is "$(stat -c '%u %a' "$STATE/replica.db.key")" "$DYN 600" "its key file is created there, the sandbox user's, mode 600"
page=$(curl -s "${API%/api/v1}/")
like "$page" '<script type="module" src="/assets/app.js">' "it serves the installed console"
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"sb\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"sb/**\"]}"
api POST "/policies/$(jget .id)/executions"
wait_exec "$(jget .id)" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "an execution in the sandbox succeeds (curl, OpenSSL, SQLite and Lua with no W+X page)"
is "$(tag_list "$D" sb/app | tr '\n' ' ')" "v1 v2 " "and the target has the tags"
serve_stop
is "$(find "$STATE" -newer "$E2E_WORK/sandbox" ! -user "$DYN" | wc -l)" 0 "everything it wrote in the state directory is the sandbox user's"

done_testing
