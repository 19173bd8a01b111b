#!/usr/bin/env bash
# The sandbox's string.find/match/gmatch/gsub are the engine's own matcher
# (engine/lua_pattern.c): on every case of tests/pattern_cases.lua they give
# exactly what stock Lua 5.4 gives, results and error messages alike.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
REPLICA=${REPLICA:-$ROOT/replica}
source "$ROOT/tests/lib/tap.sh"
if ! command -v lua5.4 >/dev/null; then
    echo "1..0 # SKIP lua5.4 is not installed (tools/deps.sh test)"
    exit 0
fi
W=$(mktemp -d /tmp/replica-pattern.XXXXXX)
trap 'rm -rf "$W"' EXIT
cases="$ROOT/tests/pattern_cases.lua"

set +e
timeout 120 lua5.4 "$cases" >"$W/stock" 2>"$W/stock.err"; rc=$?
set -e
is "$rc" 0 "stock lua5.4 runs the case table"
set +e
timeout 120 "$REPLICA" script "$cases" >"$W/replica" 2>"$W/replica.err"; rc=$?
set -e
is "$rc" 0 "replica script runs the case table"
[[ -s $W/replica.err ]] && diag "$(head -5 "$W/replica.err")"

n=$(tail -1 "$W/stock" | sed -n 's/^cases: //p')
ok "$( ((${n:-0} >= 5000)); echo $?)" "the table has thousands of cases (${n:-0})"
if cmp -s "$W/stock" "$W/replica"; then
    ok 0 "every case gives the same results and errors as stock Lua"
else
    ok 1 "every case gives the same results and errors as stock Lua"
    diff "$W/stock" "$W/replica" | head -20 | sed 's/^/#   /' || true
fi
is "$(grep -c ' -> error "pattern too complex"$' "$W/replica" || true)" \
    "$(grep -c ' -> error "pattern too complex"$' "$W/stock" || true)" \
    "the depth limit is reached on the same cases"

done_testing
