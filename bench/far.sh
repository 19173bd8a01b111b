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
# table shows medians.
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
python3 "$SEED" small "$REG_SMALL_URL" >"$WORK/small.list" || fail "seeding F1 failed"
mapfile -t small_repos < <(cut -d: -f1 "$WORK/small.list" | sort -u)
n_small=$(wc -l <"$WORK/small.list")
proxy_start far "$REG_SMALL_URL" --rtt "$RTT" --rate "$RATE"
FAR=$PROXY_FAR_URL

declare -a rw=() rq=() sw=() sq=()
for ((i = 1; i <= RUNS; i++)); do
    before=$(source_requests far)
    out=$(
        trap registry_stop_all EXIT
        fresh_target "replica-far-$i"
        replica_run "$WORK/replica-far-$i.log" "$FAR" "$TARGET" --repo '**' --jobs "$JOBS"
        check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "F1, replica"
    )
    read -r w _ <<<"$out"
    rw+=("$w") rq+=("$(($(source_requests far) - before))")
    before=$(source_requests far)
    out=$(
        trap registry_stop_all EXIT
        fresh_target "skopeo-far-$i"
        yaml "$WORK/skopeo-far-$i" "$FAR" "${small_repos[@]}"
        skopeo_sync "$WORK/skopeo-far-$i" "${TARGET#http://}/bench"
        check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "F1, skopeo"
    )
    read -r w _ <<<"$out"
    sw+=("$w") sq+=("$(($(source_requests far) - before))")
done

# --- F2: F1 over TLS -------------------------------------------------------------------
mkdir -p "$WORK/ca" "$WORK/certs"
tls_ca "$WORK/ca" ca || fail "cannot make a CA"
cp "$WORK/ca/ca.pem" "$WORK/certs/ca.crt"
TEST_REGISTRY_TLS=$WORK/ca/ca TEST_REGISTRY_STORAGE=$REG_SMALL_STORAGE registry_start smalltls "$WORK/smalltls" ||
    fail "cannot start the TLS registry"
proxy_start fartls "$REG_SMALLTLS_URL" --rtt "$RTT" --rate "$RATE"
FARTLS=https://${PROXY_FARTLS_URL#http://}
declare -a tw=() stw=()
for ((i = 1; i <= RUNS; i++)); do
    out=$(
        trap registry_stop_all EXIT
        fresh_target "replica-fartls-$i"
        replica_run "$WORK/replica-fartls-$i.log" "$FARTLS" "$TARGET" --repo '**' --jobs "$JOBS" --from-ca "$WORK/ca/ca.pem"
        check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "F2, replica"
    )
    read -r w _ <<<"$out"
    tw+=("$w")
    out=$(
        trap registry_stop_all EXIT
        fresh_target "skopeo-fartls-$i"
        YAML_CERT_DIR=$WORK/certs yaml "$WORK/skopeo-fartls-$i" "$FARTLS" "${small_repos[@]}"
        skopeo_sync "$WORK/skopeo-fartls-$i" "${TARGET#http://}/bench"
        check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "F2, skopeo"
    )
    read -r w _ <<<"$out"
    stw+=("$w")
done

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
        start=$EPOCHREALTIME
        loc=$(curl -sf -o /dev/null -X POST -w '%header{location}' "$TARGET/v2/bench/big/blobs/uploads/")
        [[ -n $loc ]] || fail "curl: no upload session"
        curl -sSf "$FARBIG/v2/bench/big/blobs/$blob" |
            curl -sSf -T - -X PUT -o /dev/null -H 'Content-Type: application/octet-stream' "$loc&digest=$blob" ||
            fail "curl: streaming the blob failed"
        wall=$(since "$start")
        [[ $(curl -s -o /dev/null -I -w '%{http_code}' "$TARGET/v2/bench/big/blobs/$blob") == 200 ]] ||
            fail "curl: the blob is not on the target"
        echo "$wall"
    )
    cw+=("$out")
done

# --- The table -----------------------------------------------------------------------
rows=()
# shellcheck disable=SC2046  # medians of whole lists
{
    row "F1 small images, far: wall s" "skopeo sync x$JOBS" $(median "${rw[@]}") $(median "${sw[@]}") "$T_FAR"
    row "F2 the same over TLS: wall s" "skopeo sync x$JOBS" $(median "${tw[@]}") $(median "${stw[@]}") "$T_FAR"
    row "F3 $BIG_MIB MiB layer, far: wall s" "curl | curl" $(median "${bw[@]}") $(median "${cw[@]}") "$T_FAR_BIG"
}
per_tag() { awk -v n="$1" -v t="$n_small" 'BEGIN { printf "%.1f", n / t }'; }
echo
printf '%-34s %-16s %9s %9s %6s  %-8s %s\n' "replica run vs peer, far source" "peer" "replica" "peer" "ratio" "target" ""
for r in "${rows[@]}"; do echo "$r"; done
printf '%-34s %-16s %9s %9s\n' "F1 requests to the source per tag" "skopeo sync x$JOBS" \
    "$(per_tag "$(median "${rq[@]}")")" "$(per_tag "$(median "${sq[@]}")")"
echo "  F1: $n_small tags in ${#small_repos[@]} repositories through faultproxy --rtt $RTT --rate $RATE;"
echo "      requests counted by the proxy (every one a round trip at least)"
echo "  F2: the same storage served over https (a CA made for the run), the TLS bytes through the proxy"
echo "  runs, wall s: F1 replica ${rw[*]} | skopeo ${sw[*]};  F2 replica ${tw[*]} | skopeo ${stw[*]}"
echo "                F3 replica ${bw[*]} | curl ${cw[*]}"
echo "  runs, source requests: F1 replica ${rq[*]} | skopeo ${sq[*]}"
echo "  every replica and skopeo run checked: all target digests match the source"
