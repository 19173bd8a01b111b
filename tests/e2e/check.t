#!/usr/bin/env bash
# replica check validates every stage function and template it can find:
# the bundled ones pass, and a root of broken ones reports each problem.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
REPLICA=${REPLICA:-$ROOT/replica}
source "$ROOT/tests/lib/tap.sh"
W=$(mktemp -d /tmp/replica-check.XXXXXX)
trap 'rm -rf "$W"' EXIT

set +e
out=$("$REPLICA" check 2>&1); rc=$?
set -e
is "$rc" 0 "the bundled stages and templates pass"
like "$out" "[0-9]+ stage\(s\), [0-9]+ template\(s\), [0-9]+ kind\(s\) checked, 0 problem\(s\)" "with a count of what was checked"

mkdir -p "$W/stages/broken" "$W/templates"
printf 'return { run = function(ctx) return { ok = true end }\n' >"$W/stages/broken/syntax.lua"
printf 'return { description = "no run" }\n' >"$W/stages/broken/norun.lua"
printf 'return { run = function() local f = io.open("/etc/passwd") return {} end }\n' >"$W/stages/broken/io.lua"
printf 'return { run = function() os.execute("true") return {} end }\n' >"$W/stages/broken/exec.lua"
printf 'return { run = function() return { s = "io.open is only text here" } end }\n' >"$W/stages/broken/fine.lua"
printf 'return { stages = { { "pull", "broken/missing" } } }\n' >"$W/templates/dangling.lua"
printf 'return { stages = { { "a", "common/pass" }, { "a", "common/pass" } } }\n' >"$W/templates/twice.lua"
mkdir -p "$W/kinds"
printf 'return { description = "broken", login = 5 }\n' >"$W/kinds/badhook.lua"

set +e
out=$("$REPLICA" check --scripts "$W" 2>&1); rc=$?
set -e
is "$rc" 1 "a root with broken scripts fails the check"
like "$out" "stages broken/syntax: line 1: .*expected" "a syntax error is reported with its line and the parser's message"
like "$out" "stages broken/norun: line 1: .*run function" "a stage without run is reported"
like "$out" "stages broken/io: line 1: uses io" "use of io is reported"
like "$out" "stages broken/exec: line 1: uses os.execute" "use of os.execute is reported"
unlike "$out" "broken/fine" "a name inside a string is not mistaken for a use"
like "$out" "templates dangling: line 1: no function named 'broken/missing'" "a template naming a missing stage is reported"
like "$out" "templates twice: .*used twice" "a template reusing a stage name is reported"
like "$out" "kinds badhook: kind badhook: login must be a function" "a kind whose hook is not a function is reported"

done_testing
