#!/usr/bin/env bash
# tests/run.sh - the test suite: starts the loopback servers, runs every C
# unit test and Lua spec through prove (TAP), stops the servers.
#   REPLICA  the engine binary to test          (set by the Makefile)
#   UNIT     the C unit test binary             (set by the Makefile)
#   VALGRIND=1  run under valgrind's leak check, on the specs listed in
#               tests/valgrind.list only (the rest are too slow there)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ROOT REPLICA UNIT
: "${REPLICA:?set REPLICA}" "${UNIT:?set UNIT}"

source "$ROOT/tests/servers.sh"
WORK=$(mktemp -d /tmp/replica-test.XXXXXX)
export WORK
cleanup() {
    servers_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
servers_start "$WORK/servers" >/dev/null

if [[ ${VALGRIND:-} == 1 ]]; then
    mapfile -t files < <(sed -e 's/#.*//' -e '/^$/d' "$ROOT/tests/valgrind.list")
else
    files=("$ROOT/tests/unit.t" "$ROOT"/spec/*_spec.lua)
fi
cd "$ROOT"
prove --exec "$ROOT/tests/tap-exec" "${files[@]}"
