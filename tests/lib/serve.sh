# shellcheck shell=bash
# tests/lib/serve.sh - what the end-to-end tests of `replica serve` share, on
# top of tests/lib/e2e.sh: starting, killing and restarting the daemon, and
# calling its API over real HTTP with curl (JSON checked with jq).
#   serve_start NAME [ARGS]  start serve with database $E2E_WORK/NAME.db (or
#                            $SERVE_DB_DIR/NAME.db) on a free port; sets API,
#                            SERVE_PID, SERVE_LOG (stderr), SERVE_OUT
#                            (stdout), and TOKEN (printed at the first start)
#   serve_stop               SIGTERM and wait
#   serve_kill9              kill -9, as a crash
#   api METHOD PATH [BODY]   call the API with the token; the status in
#                            $STATUS, the body in $BODY
#   wait_exec ID STATUS...   wait (up to 60 s) until execution ID reaches one
#                            of the statuses; its JSON in $BODY
#   scrape [TOKEN]           GET /metrics (see below)
source "$(dirname "${BASH_SOURCE[0]}")/e2e.sh"

SERVE_PID=""
_serve_cleanup() {
    [[ -n $SERVE_PID ]] && kill -9 "$SERVE_PID" 2>/dev/null || true
    if declare -F _fn_cleanup >/dev/null; then _fn_cleanup; else _e2e_cleanup; fi # with tests/lib/function.sh
}
trap _serve_cleanup EXIT

serve_start() {
    local name=$1
    shift
    SERVE_DB=${SERVE_DB_DIR:-$E2E_WORK}/$name.db
    SERVE_LOG=$E2E_WORK/$name.log
    SERVE_OUT=$E2E_WORK/$name.out
    _SERVE_ARGS=("$@")
    start_on_free_port "replica serve" "${SERVE_PORT:-}" _serve_launch _serve_ready "$SERVE_LOG" "$SERVE_OUT" ||
        { SERVE_PID=""; return 1; }
    SERVE_PID=$STARTED_PID SERVE_PORT=$STARTED_PORT
    API=http://127.0.0.1:$SERVE_PORT/api/v1
    local t
    t=$(sed -n 's/.*admin token (shown once[^:]*: \(rpl_[A-Za-z0-9_-]*\).*/\1/p' "$SERVE_OUT" | head -n 1)
    [[ -n $t ]] && TOKEN=$t
    return 0
}

# serve_start's LAUNCH and READY (tests/servers.sh's start_on_free_port).
_serve_launch() {
    "$REPLICA" serve --db "$SERVE_DB" --listen "127.0.0.1:$1" "${_SERVE_ARGS[@]}" >>"$SERVE_OUT" 2>>"$SERVE_LOG" &
}
_serve_ready() {
    curl -s -o /dev/null -m 1 "http://127.0.0.1:$1/api/v1/health"
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

# scrape [TOKEN]: GET /metrics with the bearer TOKEN (none when empty); the
# status in $STATUS, the Content-Type in $CTYPE, the text in
# $E2E_WORK/metrics.txt.
scrape() {
    local out
    out=$(curl -s -m 10 ${1:+-H "Authorization: Bearer $1"} -o "$E2E_WORK/metrics.txt" \
        -w '%{http_code} %{content_type}' "${API%/api/v1}/metrics")
    STATUS=${out%% *} CTYPE=${out#* }
}

# metrics_parse: the last scrape read by tests/lib/prom_text.py (a strict
# reader of the text format): its samples as JSON in $BODY. Fails, with the
# reader's complaint on stderr, when the text does not parse.
metrics_parse() {
    BODY=$(python3 "$ROOT/tests/lib/prom_text.py" <"$E2E_WORK/metrics.txt")
}

# metric NAME [LABEL_TEST]: from $BODY (metrics_parse's), the value of the
# one sample named NAME whose labels pass the jq test (e.g.
# '.status == "Succeeded"'), or "none".
metric() {
    jget "[.[] | select(.name == \"$1\") | select(.labels | ${2:-true})] |
          if length == 1 then .[0].value else \"none\" end"
}
