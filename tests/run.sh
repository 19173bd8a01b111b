#!/usr/bin/env bash
# tests/run.sh - the test suite: starts the loopback servers, runs every C
# unit test, Lua spec and end-to-end file through TAP::Harness (prove's
# engine, tests/harness.pl), stops the servers.
#   REPLICA  the engine binary to test          (set by the Makefile)
#   UNIT     the C unit test binary             (set by the Makefile)
#   VALGRIND=1  run under valgrind's leak check, on the specs listed in
#               tests/valgrind.list only (the rest are too slow there)
#   SANITIZED=1 the ASan + UBSan run of `make check`: the stand-ins' own
#               tests (tests/e2e/standin_*.t), the kinds' tests
#               (tests/e2e/kind_*.t), serve_faas_async.t and
#               run_remote_stage.t are left out
#   TEST_JOBS   files run at once (default: the number of cores). The
#               specs share the registries started here, so they run one
#               after another, beside the rest (tests/harness.pl); each
#               end-to-end file starts its own servers on free ports.
#   FILE...     run just these test files
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ROOT REPLICA UNIT
: "${REPLICA:?set REPLICA}" "${UNIT:?set UNIT}"

source "$ROOT/tests/servers.sh"
source "$ROOT/tests/registry.sh"
source "$ROOT/tests/fakereg.sh"
WORK=$(mktemp -d /tmp/replica-test.XXXXXX)
export WORK
cleanup() {
    registry_stop_all
    fakereg_stop
    servers_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
servers_start "$WORK/servers" >/dev/null
# Registries for the OCI client specs; the end-to-end tests start their own.
registry_start anon "$WORK/reg-anon" none
registry_sidecar_start anon "$WORK/reg-anon"
registry_start basic "$WORK/reg-basic" basic
registry_start token "$WORK/reg-token" token
# The stand-in that names other origins and invalid repositories.
fakereg_start "$WORK/fakereg"

if (($#)); then
    files=("$@") # tests/run.sh FILE...: just these (make test T='FILE...')
elif [[ ${VALGRIND:-} == 1 ]]; then
    mapfile -t files < <(sed -e 's/#.*//' -e '/^$/d' "$ROOT/tests/valgrind.list")
else
    files=("$ROOT/tests/unit.t" "$ROOT"/spec/*_spec.lua "$ROOT"/tests/e2e/*.t)
    if [[ ${SANITIZED:-} == 1 ]]; then
        # The stand-ins' own tests run no replica code, and the kinds' tests
        # run Lua over C paths the other tests already take (the C the kinds
        # added, rsa and the clock formats, has its specs here): `make check`
        # leaves both to `make test`, to keep within its time.
        # Likewise async FaaS mode and remote stages: Lua flows over the C
        # that serve_faas.t, run_faas.t and function.t take. The licence
        # check reads what the binary links, which the sanitizers change
        # (their runtimes are not what ships).
        mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -v -e '/tests/e2e/standin_[^/]*\.t$' -e '/tests/e2e/kind_[^/]*\.t$' \
            -e '/tests/e2e/serve_faas_async\.t$' -e '/tests/e2e/run_remote_stage\.t$' -e '/tests/e2e/licenses\.t$')
    fi
fi
cd "$ROOT"
# failure_digest prints, after the harness's summary (the end of the output, which
# is what a CI log keeps), what each failed file said of its failures: every
# `not ok` line with the lines after it, or the end of its output when it
# failed without one (a bail-out, a crash, no plan), and the end of its
# stderr, where the shell tests' diagnostics go.
failure_digest() {
    local rc log
    echo "Failure digest"
    for rc in "$TAP_LOGS"/*.rc; do
        [[ -e $rc ]] || continue
        log=${rc%.rc}
        if [[ $(cat "$rc") == 0 ]] && ! grep -q '^not ok' "$log.out"; then continue; fi
        echo "== $(basename "$log") (exit $(cat "$rc"))"
        if grep -q '^not ok' "$log.out"; then
            grep -A 14 '^not ok' "$log.out" | head -n 40
        else
            tail -n 20 "$log.out"
        fi
        if [[ -s $log.err ]]; then
            echo "-- its stderr ends:"
            tail -n 25 "$log.err"
        fi
    done
}
TAP_LOGS=$WORK/tap-logs
export TAP_LOGS
mkdir -p "$TAP_LOGS"
perl "$ROOT/tests/harness.pl" "${TEST_JOBS:-$(nproc)}" "$ROOT/tests/tap-exec" "${files[@]}" ||
    { rc=$?; failure_digest; exit "$rc"; }
