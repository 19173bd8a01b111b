#!/usr/bin/env bash
# bench/replicate.sh - the replication benchmark (the end of `make bench`):
# `replica run` against its peers on the same real registries in one run.
#   1  many small images: 40 repositories x 10 tags (a shared base layer, 1-2
#      unique gzip layers, JSON configs, every 4th repository multi-arch),
#      replica --jobs 8 against skopeo sync 8 repositories at a time; wall
#      time and client CPU (user+sys, the registries' CPU not counted)
#   2  one repository with 1200 tags of small images sharing layers,
#      replica against one skopeo sync
#   3  one 500 MiB layer, replica against curl streaming the blob from the
#      source into an upload session of the target; replica's peak RSS
#   4  replica's second run of workload 1, with nothing to copy, against its
#      first run
#   5  workload 1 with --executor faas: each task sent through nginx to one
#      of two `replica function` instances on loopback, against the local
#      executor's runs of workload 1
# Registries are Debian's docker-registry on loopback with storage in
# /dev/shm (tests/registry.sh); each source is seeded once (bench/seed.py),
# and every run of every tool gets a fresh target. Runs alternate replica and
# its peer; the table shows medians. Each run of replica and skopeo is
# checked: every source tag must resolve to the same digest on the target
# (skopeo too, so both did the same work); curl's blob must be there.
#   REPLICA      the engine binary (default build/release/replica)
#   BENCH_RUNS   runs per tool and workload (default 3; workload 3 does 2 more)
# Exits 0 when every run completed and checked out, whatever the figures; a
# failed run or a target digest that differs from the source exits 1.
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
SEED=$ROOT/bench/seed.py
RUNS=${BENCH_RUNS:-3}
RUNS_BIG=$((RUNS + 2))  # workload 3 is quick and the noisiest: two more runs
JOBS=8              # replica --jobs, and skopeo processes at once
MANY=1200           # tags in workload 2
BIG_MIB=500         # layer size in workload 3
# Targets: replica/peer ratios (lower is better) and replica's peak RSS.
T_SMALL=0.5 T_SMALL_CPU=0.25 T_MANY=0.6 T_BIG=1.05 T_BIG_RSS=64 T_NOOP=0.15 T_FAAS=1.10

[[ -x $REPLICA ]] || { echo "bench: $REPLICA not found (run make)" >&2; exit 1; }
for tool in skopeo docker-registry python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deps-bench)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "bench: /usr/bin/time not found (package time)" >&2; exit 1; }

source "$ROOT/tests/registry.sh"
source "$ROOT/tests/servers.sh"
source "$ROOT/tests/lib/gateway.sh"
WORK=$(mktemp -d /tmp/replica-bench-repl.XXXXXX)
FN_PIDS=()
cleanup() {
    gateway_stop
    for p in "${FN_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    registry_stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT

source "$ROOT/bench/lib.sh"

read -r load _ </proc/loadavg
echo "replication bench: $(nproc) CPUs (load average $load at start), docker-registry $(
    dpkg-query -W -f='${Version}' docker-registry 2>/dev/null), skopeo $(skopeo --version | awk '{print $3}'),"
echo "  median of $RUNS runs ($RUNS_BIG for workload 3) alternating replica and its peer; a fresh target"
echo "  registry (storage on /dev/shm) per run and tool"

# --- Workloads 1 and 4: many small images --------------------------------
registry_start small "$WORK/small"
S=$REG_SMALL_URL
python3 "$SEED" small "$S" >"$WORK/small.list" || fail "seeding workload 1 failed"
mapfile -t small_repos < <(cut -d: -f1 "$WORK/small.list" | sort -u)
n_small=$(wc -l <"$WORK/small.list")

# Workload 5's functions: two instances (each takes all $JOBS tasks at
# once, so nginx's round robin never meets a 429) behind nginx.
export REPLICA_FUNCTION_TOKEN=bench-$RANDOM$RANDOM
head -c 32 /dev/urandom >"$WORK/seal.key"
chmod 600 "$WORK/seal.key"
fn_urls=()
for n in 1 2; do
    port=$(_servers_free_port)
    "$REPLICA" function --listen "127.0.0.1:$port" --seal-key-file "$WORK/seal.key" --max-inflight "$JOBS" \
        >"$WORK/fn$n.log" 2>&1 &
    FN_PIDS+=($!)
    _servers_wait_url "$!" "http://127.0.0.1:$port/_/ready" || fail "replica function $n did not start"
    fn_urls+=("http://127.0.0.1:$port")
done
gateway_start "$WORK/gateway" "${fn_urls[@]}" || fail "nginx (the gateway) did not start"

declare -a r1w=() r1c=() r4w=() r4c=() s1w=() s1c=() f5w=()
for ((i = 1; i <= RUNS; i++)); do
    out=$(
        trap registry_stop_all EXIT
        fresh_target "replica-small-$i"
        first=$(replica_run "$WORK/replica-small-$i.log" "$S" "$TARGET" --repo '**' --jobs "$JOBS")
        check "$S" "$TARGET" "$WORK/small.list" "workload 1, replica"
        again=$(replica_run "$WORK/replica-noop-$i.log" "$S" "$TARGET" --repo '**' --jobs "$JOBS")
        check "$S" "$TARGET" "$WORK/small.list" "workload 4, replica"
        echo "$first $again"
    )
    read -r w c _ w2 c2 _ <<<"$out"
    r1w+=("$w") r1c+=("$c") r4w+=("$w2") r4c+=("$c2")
    out=$(
        trap registry_stop_all EXIT
        fresh_target "skopeo-small-$i"
        yaml "$WORK/skopeo-small-$i" "$S" "${small_repos[@]}"
        skopeo_sync "$WORK/skopeo-small-$i" "${TARGET#http://}/bench"
        check "$S" "$TARGET" "$WORK/small.list" "workload 1, skopeo"
    )
    read -r w c <<<"$out"
    s1w+=("$w") s1c+=("$c")
    out=$(
        trap registry_stop_all EXIT
        fresh_target "faas-small-$i"
        replica_run "$WORK/faas-small-$i.log" "$S" "$TARGET" --repo '**' --executor faas --gateway "$GW_URL" \
            --seal-key-file "$WORK/seal.key" --faas-concurrency "$JOBS"
        check "$S" "$TARGET" "$WORK/small.list" "workload 5, replica --executor faas"
    )
    read -r w _ <<<"$out"
    f5w+=("$w")
done

# --- Workload 2: one repository with many tags ---------------------------
registry_start many "$WORK/many"
M=$REG_MANY_URL
python3 "$SEED" many "$M" bench/many "$MANY" >"$WORK/many.list" || fail "seeding workload 2 failed"
declare -a r2w=() r2c=() s2w=() s2c=()
for ((i = 1; i <= RUNS; i++)); do
    out=$(
        trap registry_stop_all EXIT
        fresh_target "replica-many-$i"
        replica_run "$WORK/replica-many-$i.log" "$M" "$TARGET" --repo bench/many --jobs "$JOBS"
        check "$M" "$TARGET" "$WORK/many.list" "workload 2, replica"
    )
    read -r w c _ <<<"$out"
    r2w+=("$w") r2c+=("$c")
    out=$(
        trap registry_stop_all EXIT
        fresh_target "skopeo-many-$i"
        yaml "$WORK/skopeo-many-$i" "$M" bench/many
        skopeo_sync "$WORK/skopeo-many-$i" "${TARGET#http://}/bench"
        check "$M" "$TARGET" "$WORK/many.list" "workload 2, skopeo"
    )
    read -r w c <<<"$out"
    s2w+=("$w") s2c+=("$c")
done

# --- Workload 3: one big layer -------------------------------------------
registry_start big "$WORK/big"
B=$REG_BIG_URL
python3 "$SEED" big "$B" bench/big "$BIG_MIB" "$REG_BIG_STORAGE" >"$WORK/big.list" || fail "seeding workload 3 failed"
read -r _ _ blob _ < <(grep '^# blob ' "$WORK/big.list")
sed -i '/^#/d' "$WORK/big.list"
declare -a r3w=() r3c=() r3m=() c3w=() c3c=()
for ((i = 1; i <= RUNS_BIG; i++)); do
    out=$(
        trap registry_stop_all EXIT
        fresh_target "replica-big-$i"
        replica_run "$WORK/replica-big-$i.log" "$B" "$TARGET" --repo bench/big --jobs "$JOBS"
        check "$B" "$TARGET" "$WORK/big.list" "workload 3, replica"
    )
    read -r w c m <<<"$out"
    r3w+=("$w") r3c+=("$c") r3m+=("$m")
    out=$(
        trap registry_stop_all EXIT
        fresh_target "curl-big-$i"
        curl_copy "$B" "$TARGET" "$blob" "$WORK/curl-big-$i.time"
    )
    read -r w c <<<"$out"
    c3w+=("$w") c3c+=("$c")
done

# --- The table -------------------------------------------------------------
rows=()
# shellcheck disable=SC2046  # medians of whole lists
{
    row "1 small images: wall s" "skopeo sync x$JOBS" $(median "${r1w[@]}") $(median "${s1w[@]}") "$T_SMALL"
    row "1 small images: CPU s (user+sys)" "skopeo sync x$JOBS" $(median "${r1c[@]}") $(median "${s1c[@]}") "$T_SMALL_CPU"
    row "2 $MANY tags: wall s" "skopeo sync" $(median "${r2w[@]}") $(median "${s2w[@]}") "$T_MANY"
    row "3 $BIG_MIB MiB layer: wall s" "curl | curl" $(median "${r3w[@]}") $(median "${c3w[@]}") "$T_BIG"
    row "4 re-run of 1 (no-op): wall s" "replica 1st run" $(median "${r4w[@]}") $(median "${r1w[@]}") "$T_NOOP"
    row "5 1 via 2 functions: wall s" "replica local" $(median "${f5w[@]}") $(median "${r1w[@]}") "$T_FAAS"
    rss=$(awk -v k="$(median "${r3m[@]}")" 'BEGIN { printf "%.1f", k / 1024 }')
}
echo
printf '%-34s %-16s %9s %9s %6s  %-8s %s\n' "replica run vs peer" "peer" "replica" "peer" "ratio" "target" ""
for r in "${rows[@]}"; do echo "$r"; done
printf '%-34s %-16s %9.1f %9s %6s  <= %-5s %s\n' "3 $BIG_MIB MiB layer: peak RSS MiB" "" "$rss" "" "" \
    "$T_BIG_RSS" "$(verdict "$rss" "$T_BIG_RSS")"
echo "  1: $n_small tags in ${#small_repos[@]} repositories (every 4th multi-arch), 1 MiB shared base layer,"
echo "     1-2 unique 200 kB gzip layers per image; skopeo: one process per repository, $JOBS at once."
echo "  CPU: user+sys of replica's process against the sum over the skopeo processes (the registries'"
echo "       CPU is not counted). Ratios: replica / peer, lower is better."
echo "  runs, wall s: 1 replica ${r1w[*]} | skopeo ${s1w[*]};  2 replica ${r2w[*]} | skopeo ${s2w[*]}"
echo "                3 replica ${r3w[*]} | curl ${c3w[*]};  4 replica ${r4w[*]};  5 faas ${f5w[*]}"
echo "  5: replica run --executor faas --faas-concurrency $JOBS through nginx to two replica function"
echo "     instances on this machine (the coordinator plans; each task is one POST, its credentials sealed)."
echo "  runs, CPU s:  1 replica ${r1c[*]} | skopeo ${s1c[*]};  2 replica ${r2c[*]} | skopeo ${s2c[*]}"
echo "                3 replica ${r3c[*]} | curl ${c3c[*]};  4 replica ${r4c[*]};  3 peak RSS KiB ${r3m[*]}"
echo "  every replica and skopeo run checked: all target digests match the source"
