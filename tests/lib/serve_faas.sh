# shellcheck shell=bash
# tests/lib/serve_faas.sh - what the tests of `replica serve` with the faas
# executor share, on top of tests/lib/function.sh and tests/lib/serve.sh.
# They set S, D, DA (the source, the target and its user:password) and, once
# the registries exist in serve, SRC_ID and DST_ID.
#   same_tags PREFIX REPO...  how many source tags are not on the target
#                             (under PREFIX) with the source's digest
#   tasks EXEC                the execution's tasks, as JSON in $TASKS; tq FILTER
#                             applies a jq filter to them
#   busy URL=PID...           waits (20 s) until an instance has an invocation
#                             in flight (its /_/ready says so); prints its PID
#   wait_log FILE PATTERN     waits (20 s) for a line matching PATTERN
#   policy NAME REPOS_JSON [FIELDS]  creates a policy; its id in $POL
#   run_policy ID             triggers it; the execution's id in $EXEC
source "$(dirname "${BASH_SOURCE[0]}")/function.sh"
source "$(dirname "${BASH_SOURCE[0]}")/serve.sh"

same_tags() {
    local prefix=$1 r t bad=0
    shift
    for r in "$@"; do
        for t in $(tag_list "$S" "$r"); do
            [[ $(manifest_digest "$D" "$prefix$r" "$t" "$DA") == "$(manifest_digest "$S" "$r" "$t")" ]] || bad=$((bad + 1))
        done
    done
    echo "$bad"
}

tasks() {
    api GET "/executions/$1/tasks?page_size=100"
    TASKS=$BODY
}
tq() { jq -r "$1" <<<"$TASKS"; }

busy() {
    local end=$((SECONDS + 20)) i n
    while ((SECONDS < end)); do
        for i in "$@"; do
            n=$(curl -s -m 1 "${i%=*}/_/ready" | jq -r '.inflight // 0' 2>/dev/null || echo 0)
            if ((n > 0)); then
                echo "${i#*=}"
                return 0
            fi
        done
        sleep 0.02
    done
    return 1
}

wait_log() {
    local end=$((SECONDS + 20))
    while ((SECONDS < end)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.02
    done
    echo "# no line matching '$2' in $1" >&2
    return 1
}

policy() {
    api POST /policies "{\"name\": \"$1\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": $2${3:+, $3}}"
    [[ $STATUS == 201 ]] || echo "# policy $1: $STATUS $BODY" >&2
    POL=$(jget .id)
}

run_policy() {
    api POST "/policies/$1/executions"
    EXEC=$(jget .id)
}
