#!/usr/bin/env bash
# bench/run.sh - `make bench`: GET throughput of Lua tasks against a plain C
# libcurl multi loop, and memory per in-flight request. Starts the loopback
# servers (tests/servers.sh), prints a table, stops the servers. Then the
# replication (near and far), daemon, FaaS coordinator and console
# benchmarks (bench/replicate.sh, far.sh, serve.sh, faas.sh, console.sh).
#   REPLICA  the engine binary (set by the Makefile; default build/release/replica)
# Exits 0 when every run completed and every response checked out, whatever
# the figures; a failed run (bad status, short body, error) exits 1.
#
# Both clients share the machine with nginx (one worker), so absolute rates
# depend on the host; compare the Lua/C ratio within one run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
CLOOP=$ROOT/build/bench_curl_multi
RUNS=3              # runs per side and workload; the median is reported
C=64                # requests in flight, and --max-per-host for replica
K=10000             # parked requests for the memory figure
TARGET=0.7          # Lua/C throughput ratio we aim for

[[ -x $REPLICA ]] || { echo "bench: $REPLICA not found (run make)" >&2; exit 1; }
command -v ss >/dev/null || { echo "bench: ss not found (package iproute2)" >&2; exit 1; }

source "$ROOT/tests/servers.sh"
WORK=$(mktemp -d /tmp/replica-bench.XXXXXX)
INFLIGHT_PID=""
cleanup() {
    if [[ -n $INFLIGHT_PID ]]; then
        kill "$INFLIGHT_PID" 2>/dev/null || true
        wait "$INFLIGHT_PID" 2>/dev/null || true
    fi
    servers_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
servers_start "$WORK/servers" >/dev/null

mkdir -p "$ROOT/build"
# shellcheck disable=SC2046  # pkg-config output is a list of flags
cc -O2 -std=c11 -Wall -Wextra $(pkg-config --cflags libcurl) "$ROOT/bench/curl_multi.c" \
    -o "$CLOOP" $(pkg-config --libs libcurl)

# Prints the number after "KEY": in a one-line JSON file.
json_num() {
    sed -n "s/.*\"$2\":\(-\{0,1\}[0-9.]*\).*/\1/p" "$1"
}

# Prints the median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"
}

# Runs one measurement: SIDE (c, cfresh or lua) URL N. Prints "rps cpu_us_per_request".
# The client's own CPU time (user + sys) comes from bash's time keyword.
measure() {
    local side=$1 url=$2 n=$3 out=$WORK/run.json err=$WORK/run.err tm=$WORK/run.time
    local -a cmd
    case $side in
    c) cmd=("$CLOOP" "$url" "$n" "$C") ;;
    cfresh) cmd=("$CLOOP" --fresh "$url" "$n" "$C") ;;
    lua) cmd=("$REPLICA" script --max-per-host "$C" "$ROOT/bench/gets.lua" "$url" "$n" "$C") ;;
    esac
    local TIMEFORMAT='%3U %3S'
    if ! { time "${cmd[@]}" >"$out" 2>"$err"; } 2>"$tm"; then
        echo "bench: $side run failed: ${cmd[*]}" >&2
        cat "$err" >&2
        exit 1
    fi
    local rps cpu usr sys
    rps=$(json_num "$out" rps)
    [[ -n $rps ]] || { echo "bench: no rps from ${cmd[*]}:" >&2; cat "$out" "$err" >&2; exit 1; }
    read -r usr sys <"$tm"
    cpu=$(awk -v u="$usr" -v s="$sys" -v n="$n" 'BEGIN { printf "%.1f", (u + s) * 1e6 / n }')
    echo "$rps $cpu"
}

# Runs a workload RUNS times, alternating the sides; sets ROW_* to medians.
workload() {
    local url=$1 n=$2 i side r
    local -A rps=() cpu=()
    for ((i = 1; i <= RUNS; i++)); do
        for side in c lua cfresh; do
            r=$(measure "$side" "$url" "$n")
            rps[$side]+="${r%% *} "
            cpu[$side]+="${r##* } "
        done
    done
    # shellcheck disable=SC2086  # the lists are space-separated on purpose
    {
        ROW_C=$(median ${rps[c]}) ROW_LUA=$(median ${rps[lua]}) ROW_FRESH=$(median ${rps[cfresh]})
        ROW_CCPU=$(median ${cpu[c]}) ROW_LCPU=$(median ${cpu[lua]}) ROW_FCPU=$(median ${cpu[cfresh]})
        ROW_ALL="C ${rps[c]}| Lua ${rps[lua]}| C fresh ${rps[cfresh]}"
    }
}

read -r load _ </proc/loadavg
echo "replica bench: $(nproc) CPUs (load average $load at start), nginx worker_processes 1," \
     "median of $RUNS runs alternating C, Lua, C-fresh"

# Warm-up: page cache, nginx, both binaries.
measure c "$HTTP_URL/files/small.txt" 5000 >/dev/null
measure lua "$HTTP_URL/files/small.txt" 5000 >/dev/null
measure c "$HTTP_URL/files/64k.bin" 1000 >/dev/null
measure lua "$HTTP_URL/files/64k.bin" 1000 >/dev/null

rows=()
for spec in "small.txt 50000" "64k.bin 20000"; do
    read -r file n <<<"$spec"
    workload "$HTTP_URL/files/$file" "$n"
    ratio=$(awk -v l="$ROW_LUA" -v c="$ROW_C" 'BEGIN { printf "%.2f", l / c }')
    cratio=$(awk -v l="$ROW_LCPU" -v c="$ROW_CCPU" 'BEGIN { printf "%.2f", c / l }')
    fratio=$(awk -v l="$ROW_LUA" -v c="$ROW_FRESH" 'BEGIN { printf "%.2f", l / c }')
    verdict=$(awk -v r="$ratio" -v t="$TARGET" 'BEGIN { print (r >= t ? "ok" : "BELOW") }')
    rows+=("$(printf '%-20s %8.0f %8.0f %6s %-5s | %7.1f %7.1f %6s | %8.0f %7.1f %6s' \
        "$file x$n" "$ROW_C" "$ROW_LUA" "$ratio" "$verdict" "$ROW_CCPU" "$ROW_LCPU" "$cratio" \
        "$ROW_FRESH" "$ROW_FCPU" "$fratio")")
    rows+=("$(printf '  runs, rps: %s' "$ROW_ALL")")
done

# Memory per in-flight request: K tasks parked on the fault server's /hold.
# Each parked request needs a socket; below that many descriptors, cap the
# requests on the wire and let the rest wait in the per-host queue.
hard=$(ulimit -Hn)
per_host=$K
if [[ $hard != unlimited ]] && ((hard < K + 1024)); then
    per_host=256
fi
out=$WORK/inflight.json
"$REPLICA" script --max-per-host "$per_host" --memory 256 --cpu 120 \
    "$ROOT/bench/inflight.lua" "$FAULT_URL" "$K" 3 >"$out" 2>"$WORK/inflight.err" &
INFLIGHT_PID=$!
# While it holds, count the client sockets the kernel has established.
for ((i = 0; i < 600; i++)); do
    [[ -s $out ]] && break
    kill -0 "$INFLIGHT_PID" 2>/dev/null || break
    sleep 0.1
done
wire=$(ss -Htn state established "( dport = :$FAULT_PORT )" | wc -l)
if ! wait "$INFLIGHT_PID"; then
    INFLIGHT_PID=""
    echo "bench: inflight.lua failed:" >&2
    cat "$out" "$WORK/inflight.err" >&2
    exit 1
fi
INFLIGHT_PID=""
pending=$(json_num "$out" http_pending)

echo
printf '%-20s %8s %8s %6s %-5s | %7s %7s %6s | %8s %7s %6s\n' "GET, $C in flight" "C rps" "Lua rps" \
    "Lua/C" "" "C us" "Lua us" "C/Lua" "C-fr rps" "C-fr us" "Lua/Cf"
for r in "${rows[@]}"; do echo "$r"; done
echo "  Lua/C: throughput ratio (median rps), target >= $TARGET."
echo "  us: client CPU (user+sys) per request; C/Lua: the throughput ratio if the client"
echo "      alone were the bottleneck."
echo "  C-fr: the C loop with a fresh easy handle per request (engine/http.c pools handles)."
echo
awk -v k="$K" -v rss="$(json_num "$out" rss_per_task)" -v lua="$(json_num "$out" lua_per_task)" \
    -v rb="$(json_num "$out" rss_before)" -v ra="$(json_num "$out" rss_after)" \
    -v lb="$(json_num "$out" lua_before)" -v la="$(json_num "$out" lua_after)" \
    -v ramp="$(json_num "$out" ramp_seconds)" -v wire="$wire" -v pending="$pending" \
    -v per_host="$per_host" 'BEGIN {
    printf "in-flight requests: %d tasks parked in http.request (--max-per-host %d), ramp %.2f s\n", k, per_host, ramp
    printf "  http_pending %d: on the wire (ss, established) %d, waiting for a connection %d\n", pending, wire, (pending > wire ? pending - wire : 0)
    printf "  RSS      %7.1f MiB -> %7.1f MiB   per request %7.0f bytes\n", rb / 1048576, ra / 1048576, rss
    printf "  Lua heap %7.1f MiB -> %7.1f MiB   per request %7.0f bytes\n", lb / 1048576, la / 1048576, lua
}'

# Replication: replica run against skopeo sync and curl on real registries.
servers_stop
echo
REPLICA=$REPLICA "$ROOT/bench/replicate.sh"

# Replication from a far registry: the source behind the fault proxy at 40 ms.
echo
REPLICA=$REPLICA "$ROOT/bench/far.sh"

# The daemon: API reads under wrk during an execution, and a webhook burst.
echo
REPLICA=$REPLICA "$ROOT/bench/serve.sh"

# The FaaS coordinator: 10,000 tasks to a function that answers at once.
echo
REPLICA=$REPLICA "$ROOT/bench/faas.sh"

# The web console: its bundle, the execution page, saving a function to a run.
echo
REPLICA=$REPLICA "$ROOT/bench/console.sh"
