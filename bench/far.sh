#!/usr/bin/env bash
# bench/far.sh - the far-registry benchmark (part of `make bench`): the
# source sits behind tests/faultproxy.c, which makes the link look like one
# between regions (FAR_RTT ms round trip, FAR_RATE shared by all
# connections, a handshake's round trip per new connection).
#   F1  workload 1 of bench/replicate.sh (40 repositories x 10 tags, shared
#       base layers, every 4th repository multi-arch): replica --jobs 8
#       against skopeo sync, 8 processes at once, both through the proxy
#   F2  F1 over TLS: the same storage served by Distribution over https with
#       a CA made for the run (replica --from-ca, skopeo's cert-dir); the
#       proxy carries the TLS bytes with the same delay and rate
#   F3  one 500 MiB layer at FAR_RTT, no rate cap: replica against curl
#       streaming the blob through the same proxy into an upload session
# Each run gets a fresh target (on loopback: only the source is far), is
# checked (every target digest is the source's), and its requests to the
# source are counted by the proxy: the table prints them per tag (F1) so
# that needless round trips show. Runs alternate replica and its peer; the
# table shows medians. Every F1 replica run is followed by one with the
# source on loopback (no proxy), and F1 prints the CPU that each tool's runs
# cost the two registries: when replica takes as long on loopback as from
# afar, the round trips are hidden and what bounds it is CPU, on cores that
# the registries share.
#   REPLICA      the engine binary (default build/release/replica)
#   BENCH_RUNS   runs per tool and workload (default 3)
#   FAR_RTT      round trip in ms (default 40);  FAR_RATE  bits/s (default 200m)
# Exits 0 when every run completed and checked out, whatever the figures.
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
SEED=$ROOT/bench/seed.py
RUNS=${BENCH_RUNS:-3}
RTT=${FAR_RTT:-40}
RATE=${FAR_RATE:-200m}
JOBS=8
BIG_MIB=500
T_FAR=0.25 T_FAR_BIG=1.05 # replica/peer wall-time targets

[[ -x $REPLICA ]] || { echo "bench: $REPLICA not found (run make)" >&2; exit 1; }
[[ -x $ROOT/build/faultproxy ]] || { echo "bench: build/faultproxy not found (make build/faultproxy)" >&2; exit 1; }
for tool in skopeo docker-registry python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deps-bench)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "bench: /usr/bin/time not found (package time)" >&2; exit 1; }

source "$ROOT/tests/registry.sh"
source "$ROOT/tests/servers.sh"
source "$ROOT/tests/lib/tls.sh"
WORK=$(mktemp -d /tmp/replica-bench-far.XXXXXX)
E2E_WORK=$WORK # where tests/lib/proxy.sh keeps its proxies
source "$ROOT/tests/lib/proxy.sh"
trap 'registry_stop_all; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"

# source_requests NAME: requests the proxy NAME carried so far.
source_requests() {
    proxy_stat "$1" requests
}

read -r load _ </proc/loadavg
echo "far-registry bench: $(nproc) CPUs (load average $load at start); the source behind faultproxy"
echo "  at ${RTT} ms RTT (F1 also at $RATE), the target on loopback; median of $RUNS runs alternating"
echo "  replica and its peer, a fresh target per run"

# --- F1: workload 1 from afar ----------------------------------------------------------
registry_start small "$WORK/small"
SMALL_PID=${_REGISTRY_PIDS[-1]}
python3 "$SEED" small "$REG_SMALL_URL" >"$WORK/small.list" || fail "seeding F1 failed"
mapfile -t small_repos < <(cut -d: -f1 "$WORK/small.list" | sort -u)
n_small=$(wc -l <"$WORK/small.list")
proxy_start far "$REG_SMALL_URL" --rtt "$RTT" --rate "$RATE"
FAR=$PROXY_FAR_URL

# copy LABEL SRC_PID COMMAND...: one run of COMMAND into a fresh target
# WORK/LABEL (COMMAND reads its URL from TARGET and prints "wall cpu ..."),
# then checked. Prints "wall cpu registries_cpu": the copier's CPU seconds,
# and what the source registry (process SRC_PID) and the target spent
# meanwhile, read before the check (which HEADs every tag).
copy() {
    local label=$1 src_pid=$2 s0 t0 out w c
    shift 2
    s0=$(proc_cpu "$src_pid")
    (
        trap registry_stop_all EXIT
        fresh_target "$label"
        t0=$(proc_cpu "$TARGET_PID")
        out=$("$@")
        read -r w c _ <<<"$out"
        awk -v w="$w" -v c="$c" -v s0="$s0" -v s1="$(proc_cpu "$src_pid")" -v t0="$t0" \
            -v t1="$(proc_cpu "$TARGET_PID")" 'BEGIN { printf "%s %s %.2f\n", w, c, s1 - s0 + t1 - t0 }'
        check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "$label"
    )
}

# f1_replica LABEL URL [ARG...]: replica copies F1's fleet from URL to TARGET.
f1_replica() {
    replica_run "$WORK/$1.log" "$2" "$TARGET" --repo '**' --jobs "$JOBS" "${@:3}"
}

# f1_skopeo LABEL URL: skopeo sync copies F1's fleet from URL to TARGET.
f1_skopeo() {
    YAML_CERT_DIR=$WORK/certs yaml "$WORK/$1" "$2" "${small_repos[@]}"
    skopeo_sync "$WORK/$1" "${TARGET#http://}/bench"
}

# fleet NAME URL PROXY SRC_PID NEAR_URL [REPLICA_ARG...]: RUNS runs of
# replica and of skopeo copying F1's fleet from URL (through proxy PROXY, to
# the registry process SRC_PID) into fresh targets, alternating. Appends
# wall times, the source requests the proxy saw, the tool's CPU and the
# registries' CPU to the arrays NAME_rw, NAME_rq, NAME_rc, NAME_rg (replica)
# and NAME_sw, NAME_sq, NAME_sc, NAME_sg (skopeo). Unless NEAR_URL is empty,
# each replica run is followed by one from NEAR_URL (the same registry
# without the proxy), whose wall times go to NAME_nw. An https URL is
# verified: REPLICA_ARG gives replica the CA, and skopeo gets the certs
# directory $WORK/certs.
fleet() {
    local name=$1 url=$2 proxy=$3 src_pid=$4 near=$5 i before out w c g
    shift 5
    local -n f_rw=${name}_rw f_rq=${name}_rq f_rc=${name}_rc f_rg=${name}_rg \
        f_sw=${name}_sw f_sq=${name}_sq f_sc=${name}_sc f_sg=${name}_sg f_nw=${name}_nw
    for ((i = 1; i <= RUNS; i++)); do
        before=$(source_requests "$proxy")
        out=$(copy "replica-$name-$i" "$src_pid" f1_replica "replica-$name-$i" "$url" "$@")
        read -r w c g <<<"$out"
        f_rw+=("$w") f_rc+=("$c") f_rg+=("$g") f_rq+=("$(($(source_requests "$proxy") - before))")
        if [[ -n $near ]]; then
            out=$(copy "replica-$name-near-$i" "$src_pid" f1_replica "replica-$name-near-$i" "$near" "$@")
            read -r w _ <<<"$out"
            f_nw+=("$w")
        fi
        before=$(source_requests "$proxy")
        out=$(copy "skopeo-$name-$i" "$src_pid" f1_skopeo "skopeo-$name-$i" "$url")
        read -r w c g <<<"$out"
        f_sw+=("$w") f_sc+=("$c") f_sg+=("$g") f_sq+=("$(($(source_requests "$proxy") - before))")
    done
}
# shellcheck disable=SC2034  # filled and read through namerefs
declare -a f1_rw=() f1_rq=() f1_rc=() f1_rg=() f1_sw=() f1_sq=() f1_sc=() f1_sg=() f1_nw=()
# shellcheck disable=SC2034
declare -a f2_rw=() f2_rq=() f2_rc=() f2_rg=() f2_sw=() f2_sq=() f2_sc=() f2_sg=() f2_nw=()
fleet f1 "$FAR" far "$SMALL_PID" "$REG_SMALL_URL"

# --- F2: F1 over TLS -------------------------------------------------------------------
mkdir -p "$WORK/ca" "$WORK/certs"
tls_ca "$WORK/ca" ca || fail "cannot make a CA"
cp "$WORK/ca/ca.pem" "$WORK/certs/ca.crt"
TEST_REGISTRY_TLS=$WORK/ca/ca TEST_REGISTRY_STORAGE=$REG_SMALL_STORAGE registry_start smalltls "$WORK/smalltls" ||
    fail "cannot start the TLS registry"
SMALLTLS_PID=${_REGISTRY_PIDS[-1]}
proxy_start fartls "$REG_SMALLTLS_URL" --rtt "$RTT" --rate "$RATE"
FARTLS=https://${PROXY_FARTLS_URL#http://}
fleet f2 "$FARTLS" fartls "$SMALLTLS_PID" "" --from-ca "$WORK/ca/ca.pem"

# --- F3: one big layer from afar ------------------------------------------------------
registry_start big "$WORK/big"
python3 "$SEED" big "$REG_BIG_URL" bench/big "$BIG_MIB" "$REG_BIG_STORAGE" >"$WORK/big.list" || fail "seeding F3 failed"
read -r _ _ blob _ < <(grep '^# blob ' "$WORK/big.list")
sed -i '/^#/d' "$WORK/big.list"
proxy_start farbig "$REG_BIG_URL" --rtt "$RTT"
FARBIG=$PROXY_FARBIG_URL
declare -a bw=() cw=()
for ((i = 1; i <= RUNS; i++)); do
    out=$(
        trap registry_stop_all EXIT
        fresh_target "replica-farbig-$i"
        replica_run "$WORK/replica-farbig-$i.log" "$FARBIG" "$TARGET" --repo bench/big
        check "$REG_BIG_URL" "$TARGET" "$WORK/big.list" "F3, replica"
    )
    read -r w _ <<<"$out"
    bw+=("$w")
    out=$(
        trap registry_stop_all EXIT
        fresh_target "curl-farbig-$i"
        curl_copy "$FARBIG" "$TARGET" "$blob" "$WORK/curl-farbig-$i.time"
    )
    read -r w _ <<<"$out"
    cw+=("$w")
done

# --- The table -----------------------------------------------------------------------
rows=()
# shellcheck disable=SC2046  # medians of whole lists
{
    row "F1 small images, far: wall s" "skopeo sync x$JOBS" $(median "${f1_rw[@]}") $(median "${f1_sw[@]}") "$T_FAR"
    row "F2 the same over TLS: wall s" "skopeo sync x$JOBS" $(median "${f2_rw[@]}") $(median "${f2_sw[@]}") "$T_FAR"
    row "F3 $BIG_MIB MiB layer, far: wall s" "curl | curl" $(median "${bw[@]}") $(median "${cw[@]}") "$T_FAR_BIG"
}
per_tag() { awk -v n="$1" -v t="$n_small" 'BEGIN { printf "%.1f", n / t }'; }
echo
printf '%-34s %-16s %9s %9s %6s  %-8s %s\n' "replica run vs peer, far source" "peer" "replica" "peer" "ratio" "target" ""
for r in "${rows[@]}"; do echo "$r"; done
printf '%-34s %-16s %9s %9s\n' "F1 requests to the source per tag" "skopeo sync x$JOBS" \
    "$(per_tag "$(median "${f1_rq[@]}")")" "$(per_tag "$(median "${f1_sq[@]}")")"
echo "  F1: $n_small tags in ${#small_repos[@]} repositories through faultproxy --rtt $RTT --rate $RATE;"
echo "      requests counted by the proxy (every one a round trip at least)"
# shellcheck disable=SC2046  # medians of whole lists
read -r rw nw rc rg sw sc sg < <(echo $(median "${f1_rw[@]}") $(median "${f1_nw[@]}") $(median "${f1_rc[@]}") \
    $(median "${f1_rg[@]}") $(median "${f1_sw[@]}") $(median "${f1_sc[@]}") $(median "${f1_sg[@]}"))
awk -v rw="$rw" -v nw="$nw" -v rc="$rc" -v rg="$rg" -v sw="$sw" -v sc="$sc" -v sg="$sg" -v n="$(nproc)" \
    -v jobs="$JOBS" 'BEGIN {
    printf "  F1 replica from loopback (no proxy): %.2f s, so from afar it takes %.2fx as long\n", nw, rw / nw
    printf "  F1 CPU a run (user+sys s, medians): replica %.2f and the two registries %.2f;\n", rc, rg
    printf "      skopeo %.2f (its %s processes) and the registries %.2f\n", sc, jobs, sg
    printf "  F1 CPU floor: replica and the registries need (%.2f + %.2f) / %d CPUs = %.2f s a run,\n", rc, rg, n, (rc + rg) / n
    printf "      %.2fx skopeo\047s wall time; the registries alone %.2fx\n", (rc + rg) / n / sw, rg / n / sw
}'
echo "  F2: the same storage served over https (a CA made for the run), the TLS bytes through the proxy"
echo "  runs, wall s: F1 replica ${f1_rw[*]} | from loopback ${f1_nw[*]} | skopeo ${f1_sw[*]}"
echo "                F2 replica ${f2_rw[*]} | skopeo ${f2_sw[*]}"
echo "                F3 replica ${bw[*]} | curl ${cw[*]}"
echo "  runs, source requests: F1 replica ${f1_rq[*]} | skopeo ${f1_sq[*]} (F2's are inside TLS, which the proxy does not read)"
echo "  runs, registries' CPU s: F1 with replica ${f1_rg[*]} | with skopeo ${f1_sg[*]}"
echo "  every replica and skopeo run checked: all target digests match the source"
