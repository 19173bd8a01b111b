#!/usr/bin/env bash
# tests/fuzz/run.sh [NAME...] - runs each fuzz target (build/fuzz/fuzz_NAME,
# built by `make fuzz`) for FUZZ_SECS seconds (default 60), one at a time
# and one job each (the machine is shared), from its corpus in
# tests/fuzz/corpus/NAME; fresh finds go to build/fuzz/new-corpus/NAME, not
# the tree. Prints per target the executions, exec/s and coverage (cov and
# ft from libFuzzer's final status line); fails when any target crashed,
# leaving the input and the log in build/fuzz/findings/NAME.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ="$ROOT/build/fuzz"
SECS=${FUZZ_SECS:-60}
if (($# == 0)); then
    set -- $(cd "$ROOT/tests/fuzz" && ls fuzz_*.c | sed -e 's/^fuzz_//' -e 's/\.c$//')
fi

failed=0
printf '%-14s %10s %8s %6s %7s  %s\n' target execs exec/s cov ft result
for name in "$@"; do
    bin="$FUZZ/fuzz_$name"
    seeds="$ROOT/tests/fuzz/corpus/$name"
    fresh="$FUZZ/new-corpus/$name"
    out="$FUZZ/findings/$name"
    if [[ ! -x $bin || ! -d $seeds ]]; then
        echo "fuzz: no $bin or no $seeds" >&2
        failed=1
        continue
    fi
    rm -rf "$out"
    mkdir -p "$fresh" "$out"
    args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -jobs=1 -workers=1 -artifact_prefix="$out/")
    [[ -f $ROOT/tests/fuzz/$name.dict ]] && args+=(-dict="$ROOT/tests/fuzz/$name.dict")
    # -jobs=1 runs the fuzzer in one child that logs to fuzz-0.log in the
    # working directory: the findings directory.
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" "${args[@]}" "$fresh" "$seeds" >/dev/null 2>&1)
    log="$out/fuzz-0.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    result=ok
    if compgen -G "$out/crash-*" >/dev/null || compgen -G "$out/timeout-*" >/dev/null ||
        compgen -G "$out/oom-*" >/dev/null || compgen -G "$out/leak-*" >/dev/null ||
        grep -qE '^==[0-9]+==ERROR|^SUMMARY: |deadly signal' "$log"; then
        result="FAILED: see $out"
        failed=1
    elif [[ -z $execs ]]; then
        result="FAILED: no final stats in $log"
        failed=1
    fi
    printf '%-14s %10s %8s %6s %7s  %s\n' "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $failed
