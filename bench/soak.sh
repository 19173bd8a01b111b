#!/usr/bin/env bash
# bench/soak.sh - `make soak`: replica serve under a steady mixed load for
# SOAK_MINUTES (default 30), watching for leaks:
#   - a cron policy that fires every minute (20 tags, up to date after the
#     first run: the steady state of a mirror)
#   - a burst of 50 Distribution webhook events every minute (5 repositories
#     of 10 tags, an event-triggered policy)
#   - every 3 minutes, a rate-limited copy (a 8 MiB layer into a fresh
#     namespace) stopped mid-blob and then retried
#   - every minute, API reads under wrk (GET /api/v1/executions and
#     GET /metrics, 3 s each)
#   - every 10 s, the daemon's RSS and open file descriptors (/proc/PID),
#     the sizes of the database file and of its WAL, the bytes its tables
#     hold (SQLite's dbstat), and each policy's count of ended executions
# The daemon keeps SOAK_KEEP_EXECUTIONS (default 5) ended executions per
# policy, and webhook events and audit records for SOAK_KEEP_DAYS (default
# 0.004 days, 5.8 minutes), so retention deletes most of what the run makes
# and the database should stop growing after the warm-up.
# After a warm-up (the first third), it fits a least-squares line to each
# series and prints its slope per hour. The open fds are counted apart
# from the connections to the registries that libcurl keeps for reuse (at
# most --max-per-host, 64, to each registry; their number follows the
# busiest moment of the last minutes, not a leak). It fails when the RSS
# grows faster than SOAK_RSS_MIB_PER_H (default 32 MiB/h) or the floor of
# the other fds (each minute's lowest) faster than SOAK_FDS_PER_H (default
# 30/h: a leak of one per cron run would be 60/h), when those fds after the
# warm-up exceed their warm-up peak by more than 16, when the kept
# connections pass 128, when requests are still in flight or queued at the
# end (a request never finished holds its connection outside the cache),
# when a policy holds more ended executions than it keeps, when the
# database file, the bytes of the tables retention bounds by count or those
# of the tables it bounds by age (the webhook events and the audit) grow
# faster than SOAK_DB_KIB_PER_H (default 256 KiB/h: keeping every execution
# and event grows the file by about 3 MiB/h; judged from SOAK_MINUTES=24,
# when the warm-up outlasts the events' window), when the WAL is ever larger
# than the size the daemon cuts it back to (4 MiB) plus one automatic
# checkpoint's worth of frames (its size moves in steps, up to where a
# checkpoint restarts it, so it is bounded rather than fitted: a checkpoint
# kept from finishing would let it grow), when wrk sees an answer that is not 2xx, or
# when an execution ends in a state it should not (everything Succeeded at
# the end: the stopped runs were retried). Retention deletes most
# executions, so each sample also lists the newest 100 with their status
# (an ended one stays for minutes, until 5 newer ones of its policy end):
# an execution's state is the last one seen.
#   REPLICA  the engine binary (default build/release/replica)
#   SOAK_SAMPLES=FILE  keeps the samples ("SECONDS RSS_KIB FDS DB_BYTES
#                      KEPT_BYTES DAYS_BYTES MOST_ENDED POOLED OTHER_FDS
#                      WAL_BYTES")
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
SEED=$ROOT/bench/seed.py
MINUTES=${SOAK_MINUTES:-30}
RSS_BOUND=${SOAK_RSS_MIB_PER_H:-32}
FDS_BOUND=${SOAK_FDS_PER_H:-30}
KEEP=${SOAK_KEEP_EXECUTIONS:-5}
KEEP_DAYS=${SOAK_KEEP_DAYS:-0.004}
DB_BOUND=${SOAK_DB_KIB_PER_H:-256}
FDS_SLACK=16
POOL_CAP=128 # CURLMOPT_MAX_HOST_CONNECTIONS, the default --max-per-host of 64, x 2 registries
# STORE_WAL_LIMIT (engine/store.h) + the 1,000 frames (4,096-byte pages with
# 24-byte headers) after which SQLite checkpoints, + the WAL's 32-byte header
WAL_CAP=$((4 * 1024 * 1024 + 1000 * 4120 + 32))
SAMPLE=10 BURST_EVERY=60 READS_EVERY=60 STOP_EVERY=180

for tool in wrk docker-registry python3 curl jq sqlite3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool not found (make deps-bench)" >&2; exit 1; }
done
[[ $MINUTES =~ ^[0-9]+$ ]] && ((MINUTES >= 3)) || { echo "soak: SOAK_MINUTES must be a whole number >= 3" >&2; exit 2; }
[[ $KEEP =~ ^[1-9][0-9]*$ ]] || { echo "soak: SOAK_KEEP_EXECUTIONS must be a whole number >= 1" >&2; exit 2; }
source "$ROOT/tests/registry.sh"
WORK=$(mktemp -d /tmp/replica-soak.XXXXXX)
SERVE_PID=""
cleanup() {
    [[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    registry_stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "soak: $*" >&2; exit 1; }

registry_start src "$WORK/src"
registry_start dst "$WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
python3 "$SEED" many "$S" soak/cron 20 >"$WORK/cron.list" || fail "seeding soak/cron failed"
: >"$WORK/hook.list"
for r in 1 2 3 4 5; do
    python3 "$SEED" many "$S" "soak/hook$r" 10 >>"$WORK/hook.list" || fail "seeding soak/hook$r failed"
done
python3 "$SEED" big "$S" soak/slow 8 "$REG_SRC_STORAGE" >/dev/null || fail "seeding soak/slow failed"

port=$(_servers_free_port)
API=http://127.0.0.1:$port/api/v1
"$REPLICA" serve --db "$WORK/replica.db" --listen "127.0.0.1:$port" --log-level warn --keep-executions "$KEEP" \
    --keep-events "$KEEP_DAYS" --keep-audit "$KEEP_DAYS" \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 500); do curl -s -o /dev/null "$API/health" && break; sleep 0.02; done
TOKEN=$(sed -n 's/.*stored): //p' "$WORK/serve.out")
[[ -n $TOKEN ]] || fail "serve did not start: $(cat "$WORK/serve.log")"
api() { curl -sf -m 30 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
SECRET=soak-webhook-secret-0123456789
SRC_ID=$(api -d "{\"name\": \"src\", \"url\": \"$S\", \"webhook_secret\": \"$SECRET\"}" "$API/registries" | jq .id)
DST_ID=$(api -d "{\"name\": \"dst\", \"url\": \"$D\"}" "$API/registries" | jq .id)
policy() { api -d "{\"name\": \"$1\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, $2}" "$API/policies" | jq .id; }
CRON=$(policy cron '"repositories": ["soak/cron"], "trigger": "cron", "cron": "* * * * *"')
policy hooks '"repositories": ["soak/hook*"], "trigger": "event"' >/dev/null
SLOW=$(policy slow '"repositories": ["soak/slow"], "bandwidth_kbps": 1024, "dest_namespace": "cycle0"')

# What the database holds, read beside the running daemon (WAL readers do
# not block it): "KEPT_BYTES DAYS_BYTES MOST_ENDED", the bytes of the pages
# of the tables kept by count and of those kept for days (events and audit,
# with their indexes), and the most ended executions one policy holds.
DB_SQL="SELECT coalesce(sum(CASE WHEN s.tbl_name IN ('events', 'audit') THEN 0 ELSE d.pgsize END), 0),
               coalesce(sum(CASE WHEN s.tbl_name IN ('events', 'audit') THEN d.pgsize ELSE 0 END), 0),
               (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM executions
                 WHERE status IN ('Succeeded', 'Failed', 'Stopped') GROUP BY policy))
          FROM dbstat d JOIN sqlite_schema s ON s.name = d.name;"

# pooled: the daemon's established TCP connections to the two registries
# (what libcurl's connection cache keeps between transfers).
REG_PORTS=" ${S##*:} ${D##*:} "
pooled() {
    ss -Htnp state established 2>/dev/null |
        awk -v pid="pid=$SERVE_PID," -v ports="$REG_PORTS" 'index($0, pid) {
            n = split($4, a, ":"); if (index(ports, " " a[n] " ")) c++ } END { print c + 0 }'
}

# size FILE: FILE's size in bytes (0 when it does not exist).
size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# sample SECONDS: appends "SECONDS RSS_KIB FDS DB_BYTES KEPT_BYTES
# DAYS_BYTES MOST_ENDED POOLED OTHER_FDS WAL_BYTES" to samples.txt.
sample() {
    local rss fds db wal held pool
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVE_PID/status")
    pool=$(pooled)
    fds=$(find "/proc/$SERVE_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    db=$(size "$WORK/replica.db") wal=$(size "$WORK/replica.db-wal")
    held=$(sqlite3 -cmd '.timeout 5000' -separator ' ' "$WORK/replica.db" "$DB_SQL") || fail "the database could not be read"
    echo "$1 $rss $fds $db $held $pool $((fds > pool ? fds - pool : 0)) $wal" >>"$WORK/samples.txt"
    seen
}

# seen: appends "ID STATUS" of the newest 100 executions to seen.txt.
seen() {
    api "$API/executions?page_size=100" | jq -r '.[] | "\(.id) \(.status)"' >>"$WORK/seen.txt" ||
        fail "the executions could not be listed"
}

# burst: the webhook events of every hook tag (50), 16 in flight.
burst() {
    local res
    res=$("$REPLICA" script "$ROOT/bench/webhooks.lua" "$API/webhooks/distribution" "$SECRET" "$(cat "$WORK/hook.list")" 16)
    [[ $(jq .accepted <<<"$res") == 50 ]] || fail "a webhook burst was not all accepted: $res"
    BURSTS=$((BURSTS + 1))
}

# reads: wrk on the executions list and on /metrics; appends the req/s.
reads() {
    local path out rps non2xx
    for path in "$API/executions?page_size=20" "${API%/api/v1}/metrics"; do
        out=$(wrk -t1 -c8 -d3s -H "Authorization: Bearer $TOKEN" "$path")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
        [[ -z $non2xx ]] || fail "wrk saw $non2xx non-2xx answers on $path"
        echo "${path##*/} $rps" >>"$WORK/reads.txt"
    done
}

# stop_retry N: points the slow policy at namespace cycleN, runs it, stops
# it while its blob is under way, checks it is Stopped, and retries it.
stop_retry() {
    local e st end=$((SECONDS + 30))
    api -X PUT -d "{\"dest_namespace\": \"cycle$1\"}" "$API/policies/$SLOW" >/dev/null
    e=$(api -X POST "$API/policies/$SLOW/executions" | jq .id)
    while ((SECONDS < end)); do
        st=$(api "$API/executions/$e/tasks" | jq -r '.[0].stages[]? | select(.name == "push") | .status')
        [[ $st == running ]] && break
        sleep 0.05
    done
    [[ $st == running ]] || fail "execution $e never reached its push stage"
    local uploads=$REG_DST_STORAGE/docker/registry/v2/repositories/cycle$1/soak/slow/_uploads size=0
    while ((SECONDS < end && size < 1048576)); do # a MiB of the 8 MiB layer is in: the stop lands mid-blob
        size=$(cat "$uploads"/*/data 2>/dev/null | wc -c || true)
        sleep 0.05
    done
    ((size >= 1048576)) || fail "execution $e: its upload never passed 1 MiB"
    [[ $(api -X POST "$API/executions/$e/stop" | jq -r .status) == Stopped ]] || fail "execution $e: stop did not stop it"
    api -X POST "$API/executions/$e/retry" >/dev/null || fail "execution $e: retry refused"
    STOPS=$((STOPS + 1))
}

BURSTS=0 STOPS=0
: >"$WORK/samples.txt"
: >"$WORK/seen.txt"
: >"$WORK/reads.txt"
total=$((MINUTES * 60))
echo "soak: $MINUTES min; samples every ${SAMPLE}s (RSS, fds, database size); serve pid $SERVE_PID"
start=$SECONDS next_sample=0 next_burst=20 next_reads=40 next_stop=30
while (( (now = SECONDS - start) < total )); do
    kill -0 "$SERVE_PID" 2>/dev/null || fail "serve died: $(tail -5 "$WORK/serve.log")"
    if ((now >= next_sample)); then sample "$now"; next_sample=$((next_sample + SAMPLE)); fi
    if ((now >= next_burst)); then burst; next_burst=$((next_burst + BURST_EVERY)); fi
    if ((now >= next_reads)); then reads; next_reads=$((next_reads + READS_EVERY)); fi
    if ((now >= next_stop)); then stop_retry $((STOPS + 1)); next_stop=$((next_stop + STOP_EVERY)); fi
    sleep 0.5 # the scheduler's tick
done
sample "$((SECONDS - start))"
[[ -z ${SOAK_SAMPLES:-} ]] || cp "$WORK/samples.txt" "$SOAK_SAMPLES"

# Let the last runs end (bounded), then judge the executions.
api -X PUT -d '{"enabled": false}' "$API/policies/$CRON" >/dev/null
end=$((SECONDS + 180))
while ((SECONDS < end)); do
    busy=$(api "$API/executions/counts" | jq '.by_status.Pending + .by_status.Running')
    ((busy == 0)) && break
    sleep 0.5
done
counts=$(api "$API/executions/counts")
((busy == 0)) || fail "executions still busy 180 s after the end: $counts"
seen
# each execution's last status seen: "RAN BAD STATUS N, STATUS N..." (how
# many ran, how many did not end Succeeded, and the count of each status)
read -r ran bad states < <(awk '{ last[$1] = $2 }
    END { for (i in last) { ran++; n[last[i]]++; if (last[i] != "Succeeded") bad++ }
          printf "%d %d", ran, bad; sep = " "; for (s in n) { printf "%s%s %d", sep, s, n[s]; sep = ", " }; print "" }' \
    "$WORK/seen.txt")
curl -sf -H "Authorization: Bearer $TOKEN" "${API%/api/v1}/metrics" >"$WORK/metrics.txt"
python3 "$ROOT/tests/lib/prom_text.py" <"$WORK/metrics.txt" >"$WORK/metrics.json" || fail "GET /metrics does not parse"
metric() { jq -r "[.[] | select(.name == \"$1\") | select(.labels | ${2:-true}) | .value] | add // 0" "$WORK/metrics.json"; }

# fit COLUMN [floor]: "slope_per_hour first last" of column COLUMN of the
# samples after the warm-up (least squares over time). With floor, the fit
# is of each minute's lowest value: open fds go up and down with the
# transfers and kept-alive connections of the moment, and a leak lifts the
# floor.
warm=$((total / 3))
fit() {
    awk -v c="$1" -v w="$warm" -v floor="${2:-}" '$1 >= w {
            k = floor ? int($1 / 60) : NR; if (!(k in v) || $c < v[k]) { v[k] = $c; t[k] = floor ? k * 60 + 30 : $1 }
            if (!n++) first = $c; last = $c }
        END { for (k in v) { m++; x = t[k] / 3600; sx += x; sy += v[k]; sxx += x * x; sxy += x * v[k] }
              d = m * sxx - sx * sx; printf "%.3f %d %d\n", (d > 0 ? (m * sxy - sx * sy) / d : 0), first, last }' \
        "$WORK/samples.txt"
}
warm_fd_peak=$(awk -v w="$warm" '$1 < w && $9 > m { m = $9 } END { print m + 0 }' "$WORK/samples.txt")
late_fd_peak=$(awk -v w="$warm" '$1 >= w && $9 > m { m = $9 } END { print m + 0 }' "$WORK/samples.txt")
pool_peak=$(awk '$8 > m { m = $8 } END { print m + 0 }' "$WORK/samples.txt")
wal_peak=$(awk '$10 > m { m = $10 } END { print m + 0 }' "$WORK/samples.txt")
read -r rss_slope rss_first rss_last <<<"$(fit 2)"
read -r all_slope all_first all_last <<<"$(fit 3 floor)"
read -r fds_slope fds_first fds_last <<<"$(fit 9 floor)"
read -r db_slope db_first db_last <<<"$(fit 4)"
read -r kept_slope kept_first kept_last <<<"$(fit 5)"
read -r days_slope days_first days_last <<<"$(fit 6)"
read -r _ wal_first wal_last <<<"$(fit 10)"
most_ended=$(awk -v w="$warm" '$1 >= w && $7 > m { m = $7 } END { print m + 0 }' "$WORK/samples.txt")
# kilo SLOPE: a slope in units per hour, in thousands of them (KiB/h of
# bytes/h, MiB/h of KiB/h), to one decimal.
kilo() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 1024 }'; }
kept_kib_h=$(kilo "$kept_slope") days_kib_h=$(kilo "$days_slope")
rss_mib_h=$(kilo "$rss_slope") db_kib_h=$(kilo "$db_slope")
rps() { awk -v p="$1" '$1 ~ p { print $2 }' "$WORK/reads.txt" | sort -n | awk '{ a[NR] = $1 } END { printf "%.0f..%.0f (median %.0f)", a[1], a[NR], a[int((NR + 1) / 2)] }'; }

echo
echo "soak: $MINUTES min, $(wc -l <"$WORK/samples.txt") samples, fitted after a warm-up of ${warm} s"
printf '  %-22s %d ran, by the last status seen: %s; %s kept at the end\n' "executions" "$ran" "$states" \
    "$(jq -r '[.by_status[]] | add' <<<"$counts")"
printf '  %-22s %s\n' "tasks succeeded" "$(metric replica_tasks '.status == "Succeeded"')"
printf '  %-22s %s bursts, %s events received, %s matched\n' "webhooks" "$BURSTS" \
    "$(metric replica_webhook_events_received_total)" "$(metric replica_webhook_events_matched_total)"
printf '  %-22s %s (each stopped mid-blob and retried)\n' "stop + retry" "$STOPS"
printf '  %-22s %s req/s\n' "wrk executions" "$(rps executions)"
printf '  %-22s %s req/s\n' "wrk /metrics" "$(rps metrics)"
printf '  %-22s %s outgoing, %s retries\n' "requests" "$(metric replica_http_requests_total)" "$(metric replica_retries_total)"
printf '  %-22s %d -> %d KiB, slope %s MiB/h (bound %s)\n' "RSS" "$rss_first" "$rss_last" "$rss_mib_h" "$RSS_BOUND"
printf '  %-22s %d -> %d, slope of the minute floors %s/h\n' "open fds, all" "$all_first" "$all_last" "$all_slope"
in_flight=$(metric replica_http_requests_in_flight)
queued=$(metric replica_http_requests_queued)
printf '  %-22s at most %d (bound %d); at the end %s requests in flight, %s queued\n' "  kept connections" \
    "$pool_peak" "$POOL_CAP" "$in_flight" "$queued"
printf '  %-22s %d -> %d, slope of the minute floors %s/h (bound %s), peak %d after the warm-up, %d during it\n' \
    "  the other fds" "$fds_first" "$fds_last" "$fds_slope" "$FDS_BOUND" "$late_fd_peak" "$warm_fd_peak"
printf '  %-22s %d -> %d bytes, slope %s KiB/h (bound %s)\n' "database file" "$db_first" "$db_last" "$db_kib_h" "$DB_BOUND"
printf '  %-22s %d -> %d bytes after the warm-up, at most %d (bound %d)\n' "  its WAL" "$wal_first" "$wal_last" \
    "$wal_peak" "$WAL_CAP"
printf '  %-22s %d -> %d bytes, slope %s KiB/h (bound %s); at most %d ended executions a policy (keeps %d)\n' \
    "tables kept by count" "$kept_first" "$kept_last" "$kept_kib_h" "$DB_BOUND" "$most_ended" "$KEEP"
printf '  %-22s %d -> %d bytes, slope %s KiB/h (bound %s; kept %s days)\n' "events + audit" \
    "$days_first" "$days_last" "$days_kib_h" "$DB_BOUND" "$KEEP_DAYS"

verdict=0
awk -v s="$rss_mib_h" -v b="$RSS_BOUND" 'BEGIN { exit !(s > b) }' && { echo "soak: RSS grows $rss_mib_h MiB/h, over $RSS_BOUND" >&2; verdict=1; }
awk -v s="$fds_slope" -v b="$FDS_BOUND" 'BEGIN { exit !(s > b) }' && { echo "soak: fds grow $fds_slope/h, over $FDS_BOUND" >&2; verdict=1; }
((pool_peak <= POOL_CAP)) || { echo "soak: $pool_peak connections kept, over $POOL_CAP" >&2; verdict=1; }
[[ $in_flight == 0 && $queued == 0 ]] ||
    { echo "soak: with every execution ended, $in_flight requests are in flight and $queued queued" >&2; verdict=1; }
((wal_peak <= WAL_CAP)) || { echo "soak: the WAL reached $wal_peak bytes, over $WAL_CAP" >&2; verdict=1; }
((late_fd_peak <= warm_fd_peak + FDS_SLACK)) || { echo "soak: fds reached $late_fd_peak, over the warm-up's $warm_fd_peak + $FDS_SLACK" >&2; verdict=1; }
# The database is judged once the warm-up has outlasted the events' window
# and a pass (before that, the rows it keeps are still filling up to it).
if awk -v w="$warm" -v d="$KEEP_DAYS" 'BEGIN { exit !(w >= d * 86400 + 120) }'; then
    for g in "the database file:$db_kib_h" "the tables kept by count:$kept_kib_h" "the events and audit:$days_kib_h"; do
        awk -v s="${g##*:}" -v b="$DB_BOUND" 'BEGIN { exit !(s > b) }' &&
            { echo "soak: ${g%:*}: grows ${g##*:} KiB/h, over $DB_BOUND" >&2; verdict=1; }
    done
else
    echo "soak: the database's growth is not judged: the warm-up of $warm s is shorter than the events' window" \
        "of $KEEP_DAYS days and a pass (SOAK_MINUTES of 24 or more judges it)"
fi
((most_ended <= KEEP)) || { echo "soak: a policy held $most_ended ended executions, over the $KEEP it keeps" >&2; verdict=1; }
((bad == 0)) || { echo "soak: $bad execution(s) did not end Succeeded: $states" >&2; verdict=1; }
((verdict == 0)) && echo "soak: ok"
exit "$verdict"
