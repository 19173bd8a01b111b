#!/usr/bin/env bash
# replica serve when its database cannot be written. On a full disk (a
# small tmpfs) every API write is answered 503 with a JSON error saying the
# database is full, and changes nothing; reads keep working and the daemon
# stays up; an execution running meanwhile loses no stored row and does not
# spin; once there is room, writes work again and the execution resumes and
# completes. When the filesystem turns read-only under the daemon (ext4
# after an error), writes get 503 and reads keep working, and a start on it
# is refused with a message that says the database is read-only. After each
# the database passes SQLite's integrity check and the rows written before
# are intact.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
source "$ROOT/tests/lib/proxy.sh"

dbdir=$E2E_WORK/dbdisk
mkdir -p "$dbdir"
if ! mount -t tmpfs -o size=16m tmpfs "$dbdir" 2>/dev/null; then
    ok 0 "# SKIP a tmpfs cannot be mounted here (not root?): the database faults are not run"
    done_testing
    exit 0
fi
trap 'umount -l "$dbdir" 2>/dev/null || true; _serve_cleanup' EXIT

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" small/app v1 oci 1 4096 small >/dev/null
big=$(seed "$S" big/app v1 oci 2 $((1 << 20)) big)
proxy_start slow "$S" --rate-down 4m # 512 KiB/s: the big image takes about 4 s

SERVE_DB_DIR=$dbdir serve_start state
DB=$SERVE_DB

# rows: what the database holds that must survive, one line per row.
rows() {
    sqlite3 "$DB" "SELECT 'registry', id, name, url FROM registries ORDER BY id;
                   SELECT 'policy', id, name, description FROM policies ORDER BY id;
                   SELECT 'execution', id, status, total, succeeded FROM executions WHERE id = $E1;
                   SELECT 'task', id, status, repository FROM tasks WHERE execution = $E1;
                   SELECT 'stage', task, seq, name, status FROM stage_results
                     WHERE task IN (SELECT id FROM tasks WHERE execution = $E1) ORDER BY task, seq"
}

# serve_refused DB: runs serve on DB expecting it to refuse to start; its exit
# code in $RC and its standard error in $ERR.
serve_refused() {
    set +e
    ERR=$(timeout 30 "$REPLICA" serve --db "$1" --listen 127.0.0.1:0 --console none 2>&1 >/dev/null)
    RC=$?
    set -e
}

# wal_truncate DB: checkpoints DB's write-ahead log and truncates it to
# nothing (retrying while the daemon is writing), so that once the disk is
# full the daemon's next commit needs space it cannot get; fails the test
# when it cannot.
wal_truncate() {
    local r=""
    for _ in $(seq 1 100); do
        r=$(sqlite3 -cmd '.timeout 2000' "$1" 'PRAGMA wal_checkpoint(TRUNCATE)' 2>&1 || true)
        [[ $r == "0|0|0" ]] && return 0
        sleep 0.05
    done
    echo "# the write-ahead log could not be truncated: $r"
    return 1
}

# cpu_ticks: the daemon's user + system CPU time so far, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$SERVE_PID/stat"
}

# --- before: state worth keeping ----------------------------------------------------
api POST /registries "$(registry_json src "$S" '"webhook_secret": "db-faults-hook-secret-0123"')"
SRC=$(jget .id)
api POST /registries "$(registry_json slowsrc "$PROXY_SLOW_URL")"
SLOW=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST=$(jget .id)
api POST /registries "$(registry_json spare "$D")"
SPARE=$(jget .id)
api POST /policies "{\"name\": \"small\", \"source_registry\": $SRC, \"target_registry\": $DST, \"repositories\": [\"small/**\"], \"description\": \"kept\"}"
P1=$(jget .id)
api POST /policies "{\"name\": \"slow\", \"source_registry\": $SLOW, \"target_registry\": $DST, \"repositories\": [\"big/**\"]}"
P2=$(jget .id)
api POST "/policies/$P1/executions"
E1=$(jget .id)
wait_exec "$E1" Succeeded Failed
is "$(jget .status)" Succeeded "before the disk fills, an execution succeeds"
before=$(rows)

# --- the disk fills while an execution runs ------------------------------------------
api POST "/policies/$P2/executions"
E2=$(jget .id)
for _ in $(seq 1 500); do
    [[ $(sqlite3 "$DB" "SELECT count(*) FROM stage_results s JOIN tasks t ON t.id = s.task
                         WHERE t.execution = $E2 AND s.name = 'push' AND s.status = 'running'") == 1 ]] && break
    sleep 0.02
done
wal_truncate "$DB"
dd if=/dev/zero of="$dbdir/fill" bs=64k 2>/dev/null || true
lines0=$(wc -l <"$SERVE_LOG")
is "$(df --output=avail "$dbdir" | tail -n 1 | tr -d ' ')" 0 "the database's disk is full"
api GET "/executions/$E2"
is "$(jget .status)" Running "... with execution $E2 copying (two 1 MiB layers at 512 KiB/s)"

api POST /registries "$(registry_json more "$D")"
is "$STATUS" 503 "creating a registry: 503"
like "$(jget .error)" "^the database is full" "... with a JSON error saying the database is full"
api PUT "/policies/$P1" '{"description": "changed"}'
is "$STATUS" 503 "updating a policy: 503"
api POST "/policies/$P1/executions"
is "$STATUS" 503 "triggering a policy: 503"
api DELETE "/registries/$SPARE"
is "$STATUS" 503 "deleting a registry: 503"
api POST "/executions/$E2/stop"
is "$STATUS" 503 "stopping the running execution: 503 (it goes on)"
hook='{"events": [{"action": "push", "target": {"repository": "small/app", "tag": "v2", "mediaType": "application/vnd.oci.image.manifest.v1+json"}, "request": {"host": "x"}}]}'
is "$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H 'Authorization: db-faults-hook-secret-0123' \
      -H 'Content-Type: application/json' --data "$hook" "$API/webhooks/distribution")" 503 \
    "a webhook: 503, so the registry sends it again"

api GET /registries
is "$STATUS:$(jget 'map(.name) | join(",")')" "200:src,slowsrc,dst,spare" "reads work: the registries are listed, none added or deleted"
api GET "/policies/$P1"
is "$(jget .description)" kept "the policy was not changed"
api GET "/executions/$E1"
is "$STATUS:$(jget .status)" "200:Succeeded" "the earlier execution reads as before"
is "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" 200 "the health check answers"

# the running execution cannot record its end: it must neither crash the
# daemon nor spin
n=0
for _ in $(seq 1 1500); do
    n=$(grep -c "execution $E2: the database cannot be written; it resumes in 5 s: .*database unavailable (full)" "$SERVE_LOG" || true)
    ((n > 0)) && break
    sleep 0.02
done
ok $((n > 0 ? 0 : 1)) "execution $E2 copied, but cannot record it: the log says why, and that it resumes later"
t0=$(cpu_ticks)
sleep 2 # measuring: the CPU the daemon uses over two idle seconds
t1=$(cpu_ticks)
ok $((t1 - t0 < 50 ? 0 : 1)) "meanwhile the daemon does not spin ($((t1 - t0)) ticks of CPU in 2 s)"
ok "$(kill -0 "$SERVE_PID" 2>/dev/null; echo $?)" "the daemon is still running"
lines=$(($(wc -l <"$SERVE_LOG") - lines0))
ok $((lines < 40 ? 0 : 1)) "nor does it flood its log ($lines lines while the disk was full)"

# --- room again -----------------------------------------------------------------------
rm -f "$dbdir/fill"
api POST /registries "$(registry_json more "$D")"
is "$STATUS" 201 "with room again, creating a registry works"
api PUT "/policies/$P1" '{"description": "changed"}'
is "$STATUS:$(jget .description)" "200:changed" "and so does an update"
wait_exec "$E2" Succeeded Failed
is "$(jget .status)" Succeeded "execution $E2 resumes and completes"
is "$(manifest_digest "$D" big/app v1)" "${big#* }" "and the image is on the target"

serve_stop

is "$(sqlite3 "$DB" 'PRAGMA integrity_check')" ok "the database passes SQLite's integrity check"
after=$(rows)
is "$(sed 's/|changed$/|kept/' <<<"$after" | grep -v '|more|')" "$before" "the rows written before the disk filled are intact"

# --- a start on a full disk ---------------------------------------------------------------
# a crash in the middle of execution $E1 (as the database has it) leaves
# its -wal and -shm; the start must write to recover the execution
SERVE_DB_DIR=$dbdir serve_start state
sqlite3 "$DB" "UPDATE executions SET status = 'Running', finished = NULL WHERE id = $E1;
               UPDATE tasks SET status = 'Running', finished = NULL WHERE execution = $E1"
wal_truncate "$DB"
dd if=/dev/zero of="$dbdir/fill" bs=64k 2>/dev/null || true
serve_kill9
serve_refused "$DB"
is "$RC" 1 "after a crash, a start on the full disk is refused"
like "$ERR" "the database .* cannot be written, so what the last run left cannot be recovered.*database unavailable \(full\)" \
    "... saying the database cannot be written"
rm -f "$dbdir/fill"
SERVE_DB_DIR=$dbdir serve_start state
wait_exec "$E1" Succeeded Failed
is "$(jget .status)" Succeeded "with room again it starts and resumes the interrupted execution"
serve_stop
dd if=/dev/zero of="$dbdir/fill" bs=64k 2>/dev/null || true
serve_refused "$DB"
is "$RC" 1 "after a clean stop (no -wal or -shm left), a start on the full disk is refused"
like "$ERR" "the database .* is on a full disk: free some space" "... saying the disk is full"
rm -f "$dbdir/fill"

# a clean stop left no -wal or -shm: SQLite cannot even set up the database
mount -o remount,ro "$dbdir"
serve_refused "$DB"
ok $((RC == 0)) "a database on a read-only filesystem: the daemon does not start (exit $RC)"
like "$ERR" "the database .* is read-only" "... and says the database is read-only"
mount -o remount,rw "$dbdir"

# --- the filesystem turns read-only under the daemon ------------------------------------
# ext4 on a loop device, mounted errors=remount-ro: an error it is told of
# (trigger_fs_error) makes it read-only at once, open files and all, the
# way a failing disk does.
if ! command -v mkfs.ext4 >/dev/null || ! truncate -s 32M "$E2E_WORK/ext4.img" ||
    ! mkfs.ext4 -q -F "$E2E_WORK/ext4.img" || ! loopdev=$(losetup -f --show "$E2E_WORK/ext4.img" 2>/dev/null); then
    ok 0 "# SKIP no loop device or mkfs.ext4 here: the read-only filesystem is not run"
    done_testing
    exit 0
fi
rodir=$E2E_WORK/ext4
mkdir -p "$rodir"
trap 'umount -l "$rodir" 2>/dev/null; losetup -d "$loopdev" 2>/dev/null; umount -l "$dbdir" 2>/dev/null || true; _serve_cleanup' EXIT
mount -o errors=remount-ro "$loopdev" "$rodir"
SERVE_DB_DIR=$rodir serve_start ro
DB=$SERVE_DB
api POST /registries "$(registry_json src "$S")"
api POST /registries "$(registry_json dst "$D")"
kept=$(sqlite3 "$DB" 'SELECT id, name, url FROM registries ORDER BY id')
wal_truncate "$DB"
sync -f "$DB"
echo 1 >"/sys/fs/ext4/${loopdev#/dev/}/trigger_fs_error"
like "$(awk -v d="$rodir" '$2 == d { print $4 }' /proc/mounts)" "(^|,)(ro|emergency_ro)(,|$)" \
    "the database's filesystem turned read-only with the daemon running"
api POST /registries "$(registry_json more "$D")"
is "$STATUS" 503 "creating a registry: 503"
like "$(jget .error)" "^the database cannot be written" "... with a JSON error saying the database cannot be written"
api GET /registries
is "$STATUS:$(jget 'map(.name) | join(",")')" "200:src,dst" "reads work"
is "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" 200 "the health check answers"
ok "$(kill -0 "$SERVE_PID" 2>/dev/null; echo $?)" "the daemon is still running"
serve_stop

serve_refused "$DB"
ok $((RC == 0)) "a start on the read-only filesystem is refused (exit $RC)"
like "$ERR" "the database .* is read-only" "... with a message saying the database is read-only"
umount "$rodir"
mount "$loopdev" "$rodir"
SERVE_DB_DIR=$rodir serve_start ro
api POST /registries "$(registry_json more "$D")"
is "$STATUS" 201 "mounted writable again, the daemon starts and writes work"
serve_stop
is "$(sqlite3 "$DB" 'PRAGMA integrity_check')" ok "the database passes SQLite's integrity check"
is "$(sqlite3 "$DB" "SELECT id, name, url FROM registries WHERE name <> 'more' ORDER BY id")" "$kept" \
    "the rows written before are intact"

done_testing
