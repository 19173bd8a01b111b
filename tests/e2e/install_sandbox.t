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
# image between two real registries; under strace, its system calls and
# socket families are all ones the unit allows. Needs root, unshare,
# setpriv and Linux 6.3's PR_SET_MDWE (strace and systemd-analyze for the
# last part); skipped otherwise.
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

# The unit's SystemCallFilter and RestrictAddressFamilies: the same daemon
# and execution under strace, as the same UID with no_new_privs (outside
# the mount namespace, whose set-up needs privileged calls; as root, SQLite
# would also chown its files), every system call it makes checked against
# the filter as this systemd expands it, and every socket's family against
# the list.
if command -v strace >/dev/null && command -v systemd-analyze >/dev/null; then
    TRACE=$STATE/trace
    printf '#!/bin/sh\nexec setpriv --reuid %s --regid %s --clear-groups --no-new-privs env -i PATH=/usr/bin:/bin strace -f -qq -o "%s" "%s" "$@"\n' \
        "$DYN" "$DYN" "$TRACE" "$INST" >"$E2E_WORK/traced-replica"
    chmod 755 "$E2E_WORK/traced-replica"
    REPLICA=$E2E_WORK/traced-replica serve_start traced --db "$STATE/traced.db"
    api POST /registries "$(registry_json src "$S")"
    SRC_ID=$(jget .id)
    api POST /registries "$(registry_json dst "$D")"
    DST_ID=$(jget .id)
    api POST /policies "{\"name\": \"tr\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"sb/**\"], \"dest_namespace\": \"traced\"}"
    api POST "/policies/$(jget .id)/executions"
    wait_exec "$(jget .id)" Succeeded Failed Stopped
    is "$(jget .status)" Succeeded "an execution under strace succeeds"
    # SIGTERM to replica itself (strace's child), then strace ends with it
    kill -TERM "$(pgrep -P "$SERVE_PID" | head -n 1)"
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
    UNIT_FILE=$DEST/usr/local/lib/systemd/system/replica.service
    verdict=$(python3 - "$TRACE" "$UNIT_FILE" <<'PY'
import re, subprocess, sys
def expand(name):
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        w = line.strip()
        if w and not w.startswith("#"):
            names |= expand(w) if w.startswith("@") else {w}
    return names
allowed, denied, families = set(), set(), set()
for line in open(sys.argv[2]):
    k, _, v = line.strip().partition("=")
    if k == "SystemCallFilter":
        for w in v.split():
            if w.startswith("~"):
                denied |= expand(w[1:]) if w[1:].startswith("@") else {w[1:]}
            else:
                allowed |= expand(w) if w.startswith("@") else {w}
    if k == "RestrictAddressFamilies":
        families |= set(v.split())
used, socks = set(), set()
for line in open(sys.argv[1]):
    m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
    if m:
        used.add(m.group(1))
    m = re.match(r"^\d+\s+socket\((AF_[A-Z0-9]+)", line)
    if m:
        socks.add(m.group(1))
bad = sorted(s for s in used if s not in allowed or s in denied)
print(f"calls {len(used)} allowed {len(allowed - denied)} outside {' '.join(bad) or '-'}")
print(f"families {' '.join(sorted(socks))} outside {' '.join(sorted(socks - families)) or '-'}")
PY
)
    like "$(sed -n 1p <<<"$verdict")" 'outside -$' "every system call it made is in the unit's SystemCallFilter (${verdict%%$'\n'*})"
    like "$(sed -n 2p <<<"$verdict")" 'outside -$' "and every socket it opened is of a family RestrictAddressFamilies allows ($(sed -n 2p <<<"$verdict"))"
else
    ok 0 "# SKIP strace or systemd-analyze is not installed"
fi

done_testing
