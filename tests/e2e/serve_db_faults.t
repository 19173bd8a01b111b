#!/usr/bin/env bash
# replica serve when its database cannot be written. On a full disk (a
# small tmpfs) every API write is answered 503 with a JSON error saying the
# database is full, and changes nothing; reads keep working and the daemon
# stays up; an execution running meanwhile loses no stored row and does not
# spin; once there is room, writes work again and the execution resumes and
# completes. A database on a read-only filesystem is refused at start with a
# message that says so. Afterwards the database passes SQLite's integrity
# check and the rows written before are intact.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

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
big=$(seed "$S" big/app v1 oci 2 $((768 << 10)) big)

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

# cpu_ticks: the daemon's user + system CPU time so far, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$SERVE_PID/stat"
}

# --- before: state worth keeping ----------------------------------------------------
api POST /registries "$(registry_json src "$S")"
SRC=$(jget .id)
api POST /registries "$(registry_json dst "$D")"
DST=$(jget .id)
api POST /registries "$(registry_json spare "$D")"
SPARE=$(jget .id)
api POST /policies "{\"name\": \"small\", \"source_registry\": $SRC, \"target_registry\": $DST, \"repositories\": [\"small/**\"], \"description\": \"kept\"}"
P1=$(jget .id)
api POST /policies "{\"name\": \"slow\", \"source_registry\": $SRC, \"target_registry\": $DST, \"repositories\": [\"big/**\"], \"bandwidth_kbps\": 512}"
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
sqlite3 "$DB" 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null
dd if=/dev/zero of="$dbdir/fill" bs=64k 2>/dev/null || true
lines0=$(wc -l <"$SERVE_LOG")
is "$(df --output=avail "$dbdir" | tail -n 1 | tr -d ' ')" 0 "the database's disk is full, with execution $E2 copying"

api POST /registries "$(registry_json more "$D")"
is "$STATUS" 503 "creating a registry: 503"
like "$(jget .error)" "^the database is full" "... with a JSON error saying the database is full"
api PUT "/policies/$P1" '{"description": "changed"}'
is "$STATUS" 503 "updating a policy: 503"
api POST "/policies/$P1/executions"
is "$STATUS" 503 "triggering a policy: 503"
api DELETE "/registries/$SPARE"
is "$STATUS" 503 "deleting a registry: 503"

api GET /registries
is "$STATUS:$(jget 'map(.name) | join(",")')" "200:src,dst,spare" "reads work: the registries are listed, none added or deleted"
api GET "/policies/$P1"
is "$(jget .description)" kept "the policy was not changed"
api GET "/executions/$E1"
is "$STATUS:$(jget .status)" "200:Succeeded" "the earlier execution reads as before"
is "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" 200 "the health check answers"

# the running execution cannot record its end: it must neither crash the
# daemon nor spin
n=0
for _ in $(seq 1 500); do
    n=$(grep -c "database unavailable (full)" "$SERVE_LOG" || true)
    ((n > 4)) && break
    sleep 0.02
done
ok $((n > 0 ? 0 : 1)) "execution $E2's writes fail, and the log says why"
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

# --- a read-only database ---------------------------------------------------------------
mount -o remount,ro "$dbdir"
set +e
ERR=$(timeout 30 "$REPLICA" serve --db "$DB" --listen 127.0.0.1:0 --console none 2>&1 >/dev/null)
RC=$?
set -e
ok $((RC == 0)) "a database on a read-only filesystem: the daemon does not start (exit $RC)"
like "$ERR" "read-only" "... and says the database is read-only"
echo "# $ERR"
mount -o remount,rw "$dbdir"

done_testing
