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
python3 "$SEED" small "$REG_SMALL_URL" >"$WORK/small.list" || fail "seeding F1 failed"
mapfile -t small_repos < <(cut -d: -f1 "$WORK/small.list" | sort -u)
n_small=$(wc -l <"$WORK/small.list")
proxy_start far "$REG_SMALL_URL" --rtt "$RTT" --rate "$RATE"
FAR=$PROXY_FAR_URL

# fleet NAME URL PROXY [REPLICA_ARG...]: RUNS runs of replica and of skopeo
# copying F1's fleet from URL (through proxy PROXY) into fresh targets,
# alternating; appends wall times and the source requests the proxy saw to
# the arrays NAME_rw, NAME_rq (replica) and NAME_sw, NAME_sq (skopeo). An
# https URL is verified: REPLICA_ARG gives replica the CA, and skopeo gets
# the certs directory $WORK/certs.
fleet() {
    local name=$1 url=$2 proxy=$3 i before out w
    shift 3
    local -n f_rw=${name}_rw f_rq=${name}_rq f_sw=${name}_sw f_sq=${name}_sq
    for ((i = 1; i <= RUNS; i++)); do
        before=$(source_requests "$proxy")
        out=$(
            trap registry_stop_all EXIT
            fresh_target "replica-$name-$i"
            replica_run "$WORK/replica-$name-$i.log" "$url" "$TARGET" --repo '**' --jobs "$JOBS" "$@"
            check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "$name, replica"
        )
        read -r w _ <<<"$out"
        f_rw+=("$w") f_rq+=("$(($(source_requests "$proxy") - before))")
        before=$(source_requests "$proxy")
        out=$(
            trap registry_stop_all EXIT
            fresh_target "skopeo-$name-$i"
            YAML_CERT_DIR=$WORK/certs yaml "$WORK/skopeo-$name-$i" "$url" "${small_repos[@]}"
            skopeo_sync "$WORK/skopeo-$name-$i" "${TARGET#http://}/bench"
            check "$REG_SMALL_URL" "$TARGET" "$WORK/small.list" "$name, skopeo"
        )
        read -r w _ <<<"$out"
        f_sw+=("$w") f_sq+=("$(($(source_requests "$proxy") - before))")
    done
}
declare -a f1_rw=() f1_rq=() f1_sw=() f1_sq=() f2_rw=() f2_rq=() f2_sw=() f2_sq=()
fleet f1 "$FAR" far

# --- F2: F1 over TLS -------------------------------------------------------------------
mkdir -p "$WORK/ca" "$WORK/certs"
tls_ca "$WORK/ca" ca || fail "cannot make a CA"
cp "$WORK/ca/ca.pem" "$WORK/certs/ca.crt"
TEST_REGISTRY_TLS=$WORK/ca/ca TEST_REGISTRY_STORAGE=$REG_SMALL_STORAGE registry_start smalltls "$WORK/smalltls" ||
    fail "cannot start the TLS registry"
proxy_start fartls "$REG_SMALLTLS_URL" --rtt "$RTT" --rate "$RATE"
FARTLS=https://${PROXY_FARTLS_URL#http://}
fleet f2 "$FARTLS" fartls --from-ca "$WORK/ca/ca.pem"

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
echo "  F2: the same storage served over https (a CA made for the run), the TLS bytes through the proxy"
echo "  runs, wall s: F1 replica ${f1_rw[*]} | skopeo ${f1_sw[*]};  F2 replica ${f2_rw[*]} | skopeo ${f2_sw[*]}"
echo "                F3 replica ${bw[*]} | curl ${cw[*]}"
echo "  runs, source requests: F1 replica ${f1_rq[*]} | skopeo ${f1_sq[*]} (F2's are inside TLS, which the proxy does not read)"
echo "  every replica and skopeo run checked: all target digests match the source"
