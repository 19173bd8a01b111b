# shellcheck shell=bash
# bench/lib.sh - what the replication benchmarks (bench/replicate.sh,
# bench/far.sh) share: medians and ratios, a fresh target registry per run,
# a timed `replica run`, skopeo sync JOBS at a time, and the digest check.
# The caller sets ROOT, REPLICA, SEED, WORK and JOBS and sources
# tests/registry.sh first.

fail() {
    echo "bench: $*" >&2
    exit 1
}

# Prints the median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"
}

# Prints A / B with 2 decimals.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}

# Prints "ok" when VALUE <= TARGET, else "MISSED".
verdict() {
    awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t ? "ok" : "MISSED") }'
}

# Prints the seconds elapsed since START (an $EPOCHREALTIME).
since() {
    awk -v s="$1" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.2f", n - s }'
}

# fresh_target LABEL: starts a fresh target registry for one run, with its
# config and log in WORK/LABEL; sets TARGET to its URL and TARGET_PID to its
# process. Call it in the subshell that makes the run, after
# `trap registry_stop_all EXIT`: the subshell forgets the registries of its
# parent, so it stops only its own.
fresh_target() {
    _REGISTRY_PIDS=() _REGISTRY_SHM=()
    registry_start target "$WORK/$1" || fail "cannot start a target registry"
    TARGET=$REG_TARGET_URL TARGET_PID=${_REGISTRY_PIDS[-1]}
}

# proc_cpu PID: prints the CPU seconds (user + system) that process PID has
# used so far, from /proc/PID/stat; 0 when it is gone.
proc_cpu() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    # after "pid (comm) " the fields count from state: utime is the 12th
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' <<<"$stat"
}

# replica_run LOG SRC DST ARGS...: one timed `replica run`; prints
# "wall user+sys maxrss_kib". A failed run shows its output and exits 1.
replica_run() {
    local log=$1 src=$2 dst=$3 tm=$1.time
    shift 3
    if ! /usr/bin/time -o "$tm" -f '%e %U %S %M' \
        "$REPLICA" run --from "$src" --to "$dst" "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        fail "replica run failed: $*"
    fi
    awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$tm"
}

# check SRC DST LIST WHO: every "REPO:TAG DIGEST" of LIST must resolve to the
# same digest on DST.
check() {
    local out
    out=$(python3 "$SEED" verify "$1" "$2" "$3") || fail "$4: target digests differ from the source: $out"
}

# skopeo_sync DIR DST_NS: one skopeo sync per YAML file in DIR, JOBS at a
# time; prints "wall user+sys" (user+sys summed over the skopeo processes).
skopeo_sync() {
    local dir=$1 ns=$2 start wall
    mkdir -p "$dir/times"
    start=$EPOCHREALTIME
    if ! (cd "$dir" && printf '%s\n' *.yml | xargs -P "$JOBS" -I{} /usr/bin/time -o "times/{}" -f '%U %S' \
        skopeo sync --all --src yaml --dest docker --src-tls-verify=false --dest-tls-verify=false \
        {} "$ns" >"$dir/skopeo.log" 2>&1); then
        tail -n 20 "$dir/skopeo.log" >&2
        fail "skopeo sync failed (see above)"
    fi
    wall=$(since "$start")
    cat "$dir"/times/*.yml | awk -v w="$wall" '{ c += $1 + $2 } END { printf "%s %.2f\n", w, c }'
}

# yaml DIR SRC_URL REPO...: one skopeo sync YAML file per repository in DIR.
# An https:// SRC_URL is verified against the CA in YAML_CERT_DIR (its ca.crt).
yaml() {
    local dir=$1 host=${2#http://} repo tls="  tls-verify: false"
    shift 2
    if [[ $host == https://* ]]; then
        host=${host#https://}
        tls=$(printf '  tls-verify: true\n  cert-dir: %s' "${YAML_CERT_DIR:?yaml: an https source needs YAML_CERT_DIR}")
    fi
    mkdir -p "$dir"
    for repo in "$@"; do
        printf '%s:\n%s\n  images:\n    %s: []\n' "$host" "$tls" "$repo" >"$dir/${repo//\//_}.yml"
    done
}


# row NAME PEER REPLICA PEER_FIGURE RATIO_TARGET: adds a line of the table
# to the array rows: the two figures, their ratio and the verdict.
row() {
    local name=$1 peer=$2 rv=$3 pv=$4 target=$5 r
    r=$(ratio "$rv" "$pv")
    rows+=("$(printf '%-34s %-16s %9.2f %9.2f %6s  <= %-5s %s' "$name" "$peer" "$rv" "$pv" "$r" "$target" \
        "$(verdict "$r" "$target")")")
}

# curl_copy SRC_URL TARGET BLOB TIMES: curl's copy of blob BLOB of
# bench/big: POST an upload session on TARGET, then stream GET SRC_URL's
# blob | PUT ?digest= (the registry checks the digest of what it receives);
# each curl's user and sys seconds are appended to the file TIMES. Prints
# "wall cpu" (cpu: the curls' user+sys).
curl_copy() {
    local src=$1 target=$2 blob=$3 tm=$4 start loc wall
    start=$EPOCHREALTIME
    loc=$(/usr/bin/time -o "$tm" -a -f '%U %S' curl -sf -o /dev/null -X POST -w '%header{location}' \
        "$target/v2/bench/big/blobs/uploads/")
    [[ -n $loc ]] || fail "curl: no upload session"
    /usr/bin/time -o "$tm" -a -f '%U %S' curl -sSf "$src/v2/bench/big/blobs/$blob" |
        /usr/bin/time -o "$tm" -a -f '%U %S' curl -sSf -T - -X PUT -o /dev/null \
            -H 'Content-Type: application/octet-stream' "$loc&digest=$blob" ||
        fail "curl: streaming the blob failed"
    wall=$(since "$start")
    [[ $(curl -s -o /dev/null -I -w '%{http_code}' "$target/v2/bench/big/blobs/$blob") == 200 ]] ||
        fail "curl: the blob is not on the target"
    awk -v w="$wall" '{ c += $1 + $2 } END { printf "%s %.2f\n", w, c }' "$tm"
}
