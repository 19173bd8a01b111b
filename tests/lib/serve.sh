# shellcheck shell=bash
# tests/lib/serve.sh - what the end-to-end tests of `replica serve` share, on
# top of tests/lib/e2e.sh: starting, killing and restarting the daemon, and
# calling its API over real HTTP with curl (JSON checked with jq).
#   serve_start NAME [ARGS]  start serve with database $E2E_WORK/NAME.db on a
#                            free port; sets API, SERVE_PID, SERVE_LOG (stderr),
#                            SERVE_OUT (stdout), and TOKEN (printed at the
#                            first start)
#   serve_stop               SIGTERM and wait
#   serve_kill9              kill -9, as a crash
#   api METHOD PATH [BODY]   call the API with the token; the status in
#                            $STATUS, the body in $BODY
#   wait_exec ID STATUS...   wait (up to 60 s) until execution ID reaches one
#                            of the statuses; its JSON in $BODY
source "$(dirname "${BASH_SOURCE[0]}")/e2e.sh"

SERVE_PID=""
_serve_cleanup() {
    [[ -n $SERVE_PID ]] && kill -9 "$SERVE_PID" 2>/dev/null || true
    _e2e_cleanup
}
trap _serve_cleanup EXIT

serve_start() {
    local name=$1 port i
    shift
    SERVE_DB=$E2E_WORK/$name.db
    SERVE_LOG=$E2E_WORK/$name.log
    SERVE_OUT=$E2E_WORK/$name.out
    for ((i = 0; i < 5; i++)); do
        port=${SERVE_PORT:-$(_servers_free_port)}
        "$REPLICA" serve --db "$SERVE_DB" --listen "127.0.0.1:$port" "$@" >>"$SERVE_OUT" 2>>"$SERVE_LOG" &
        SERVE_PID=$!
        SERVE_PORT=$port
        API=http://127.0.0.1:$port/api/v1
        local up=""
        for ((j = 0; j < 500; j++)); do
            if curl -s -o /dev/null -m 1 "$API/health"; then up=1; break; fi
            kill -0 "$SERVE_PID" 2>/dev/null || break
            sleep 0.02
        done
        if [[ -n $up ]]; then
            local t
            t=$(sed -n 's/.*admin token (shown once[^:]*: \(rpl_[A-Za-z0-9_-]*\).*/\1/p' "$SERVE_OUT" | head -n 1)
            [[ -n $t ]] && TOKEN=$t
            return 0
        fi
        wait "$SERVE_PID" 2>/dev/null || true
        SERVE_PID=""
        grep -q "address already in use\|Address already in use" "$SERVE_LOG" || break
        unset SERVE_PORT
    done
    echo "# replica serve did not come up:" >&2
    sed 's/^/#   /' "$SERVE_LOG" "$SERVE_OUT" >&2
    return 1
}

serve_stop() {
    [[ -n $SERVE_PID ]] || return 0
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
}

serve_kill9() {
    [[ -n $SERVE_PID ]] || return 0
    kill -9 "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
}

api() {
    local method=$1 path=$2 data=${3-} out
    local args=(-s -m 30 -X "$method" -H "Authorization: Bearer $TOKEN" -w '\n%{http_code}')
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    out=$(curl "${args[@]}" "$API$path")
    STATUS=${out##*$'\n'}
    BODY=${out%$'\n'*}
}

# jget FILTER: applies a jq filter to $BODY (raw output).
jget() {
    jq -r "$1" <<<"$BODY"
}

wait_exec() {
    local id=$1 s end=$((SECONDS + 60))
    shift
    while ((SECONDS < end)); do
        api GET "/executions/$id"
        s=$(jget .status)
        for want in "$@"; do [[ $s == "$want" ]] && return 0; done
        sleep 0.02
    done
    echo "# execution $id stayed $s: $BODY" >&2
    return 1
}

# registry_json NAME URL [EXTRA_JSON_FIELDS]: a registry create body.
registry_json() {
    echo "{\"name\": \"$1\", \"url\": \"$2\"${3:+, $3}}"
}
