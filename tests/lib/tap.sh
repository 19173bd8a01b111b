# shellcheck shell=bash
# tests/lib/tap.sh - TAP for the bash end-to-end tests: ok/is/like print one
# line per check and a failure's details as comments (on stderr too, so that
# prove shows them without -v, as in CI); done_testing prints the plan and
# sets the exit code. A test file may define tap_on_fail, called after a
# failure's details, to print more (tests/lib/e2e.sh prints the last run's
# output).
_TAP_N=0
_TAP_FAILED=0

# ok COND_EXIT_CODE DESCRIPTION: passes when the first argument is 0.
ok() {
    local rc=$1 desc=$2
    _TAP_N=$((_TAP_N + 1))
    if [[ $rc == 0 ]]; then
        echo "ok $_TAP_N - $desc"
    else
        _TAP_FAILED=$((_TAP_FAILED + 1))
        echo "not ok $_TAP_N - $desc"
    fi
}

# _tap_details LINE...: a failure's details, as comments on stdout and stderr,
# then whatever tap_on_fail adds.
_tap_details() {
    local line more_lines=()
    if declare -F tap_on_fail >/dev/null; then mapfile -t more_lines < <(tap_on_fail); fi
    for line in "$@" "${more_lines[@]}"; do
        echo "# $line"
        echo "# $line" >&2
    done
}

# is GOT WANT DESCRIPTION
is() {
    local got=$1 want=$2 desc=$3
    if [[ $got == "$want" ]]; then
        ok 0 "$desc"
    else
        ok 1 "$desc"
        _tap_details "  got:  '$got'" "  want: '$want'"
    fi
}

# like TEXT REGEX DESCRIPTION (extended regex, grep -E)
like() {
    local text=$1 re=$2 desc=$3
    if grep -Eq -- "$re" <<<"$text"; then
        ok 0 "$desc"
    else
        ok 1 "$desc"
        _tap_details "  text: $(head -c 600 <<<"$text")" "  does not match: $re"
    fi
}

# unlike TEXT REGEX DESCRIPTION
unlike() {
    local text=$1 re=$2 desc=$3
    if grep -Eq -- "$re" <<<"$text"; then
        ok 1 "$desc"
        _tap_details "  matches: $re"
    else
        ok 0 "$desc"
    fi
}

# diag MESSAGE: a comment line.
diag() {
    echo "# $*"
}

# done_testing: the plan, and exit 1 when anything failed.
done_testing() {
    echo "1..$_TAP_N"
    ((_TAP_FAILED == 0))
}
