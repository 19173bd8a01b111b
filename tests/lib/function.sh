# shellcheck shell=bash
# tests/lib/function.sh - what the end-to-end tests of `replica function`
# share, on top of tests/lib/e2e.sh: starting it on a free port (waiting for
# /_/ready with a deadline), invoking it with curl, sealing credentials, and
# a callback sink that records what the function POSTs.
#   fn_start NAME [ARGS]   start `replica function` with REPLICA_FUNCTION_TOKEN=$FN_TOKEN
#                          and --seal-key-file $FN_KEY; sets FN_URL, FN_PID,
#                          FN_LOG (stderr), FN_OUT (stdout)
#   fn_stop                SIGTERM and wait; the exit code in $FN_RC
#   fn_wait                wait for it to end (a second SIGTERM would end it
#                          at once); the exit code in $FN_RC
#   invoke BODY [TOKEN]    POST / ; the status in $STATUS, the body in $BODY
#                          (also appended to $E2E_WORK/answers)
#   probe PATH             GET PATH; the status in $STATUS
#   wait_ready STATUS      poll /_/ready (up to 20 s) until it answers STATUS
#   seal URL USER PASS     the sealed credentials for URL under $FN_KEY
#   sink_start             a callback receiver; sets SINK_URL, SINK_FILE (one
#                          JSON body a line)
#   gateway_start DIR URL...  (tests/lib/gateway.sh) nginx as the gateway
source "$(dirname "${BASH_SOURCE[0]}")/e2e.sh"
source "$(dirname "${BASH_SOURCE[0]}")/gateway.sh"

FN_PID="" SINK_PID=""
FN_TOKEN=fn-$RANDOM-$RANDOM-token
FN_KEY=$E2E_WORK/seal.key
head -c 32 /dev/urandom >"$FN_KEY"
chmod 600 "$FN_KEY"

_fn_cleanup() {
    local p
    gateway_stop_all
    asyncgw_stop
    for p in $FN_PID $SINK_PID; do
        { kill -9 "$p" && wait "$p"; } 2>/dev/null || true
    done
    _e2e_cleanup
}
trap _fn_cleanup EXIT

fn_start() {
    local name=$1
    shift
    FN_LOG=$E2E_WORK/$name.log
    FN_OUT=$E2E_WORK/$name.out
    _FN_ARGS=("$@")
    start_on_free_port "replica function" "" _fn_launch _fn_ready "$FN_LOG" "$FN_OUT" || { FN_PID=""; return 1; }
    FN_PID=$STARTED_PID
    FN_URL=http://127.0.0.1:$STARTED_PORT
}

# fn_start's LAUNCH and READY (tests/servers.sh's start_on_free_port).
_fn_launch() {
    REPLICA_FUNCTION_TOKEN=$FN_TOKEN "$REPLICA" function --listen "127.0.0.1:$1" \
        --seal-key-file "$FN_KEY" "${_FN_ARGS[@]}" >>"$FN_OUT" 2>>"$FN_LOG" &
}
_fn_ready() {
    [[ $(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/_/ready") == 200 ]]
}

fn_stop() {
    [[ -n $FN_PID ]] || return 0
    kill -TERM "$FN_PID" 2>/dev/null || true
    fn_wait
}

fn_wait() {
    [[ -n $FN_PID ]] || return 0
    set +e
    wait "$FN_PID"
    FN_RC=$?
    set -e
    FN_PID=""
}

invoke() {
    local out
    out=$(curl -s -m 60 -X POST -H "Authorization: Bearer ${2-$FN_TOKEN}" -H 'Content-Type: application/json' \
        --data-binary "$1" -w '\n%{http_code}' "$FN_URL/")
    STATUS=${out##*$'\n'}
    BODY=${out%$'\n'*}
    printf '%s\n' "$BODY" >>"$E2E_WORK/answers"
}

probe() {
    STATUS=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$FN_URL$1")
}

wait_ready() {
    local end=$((SECONDS + 20))
    while ((SECONDS < end)); do
        probe /_/ready
        [[ $STATUS == "$1" ]] && return 0
        sleep 0.02
    done
    return 1
}

seal() {
    printf '{"url": "%s", "username": "%s", "password": "%s"}' "$1" "$2" "$3" |
        "$REPLICA" function seal --seal-key-file "${4:-$FN_KEY}"
}

sink_start() {
    local port
    SINK_FILE=$E2E_WORK/sink.jsonl
    : >"$SINK_FILE"
    port=$(_servers_free_port)
    python3 - "$port" "$SINK_FILE" <<'PY' &
import http.server, sys
port, path = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(path, "a") as f:
            f.write(self.headers.get("Authorization", "") + "\t" + body.decode() + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
    SINK_PID=$!
    SINK_URL=http://127.0.0.1:$port/events
    local end=$((SECONDS + 10))
    until curl -s -o /dev/null -X POST "$SINK_URL" -d '' 2>/dev/null; do
        ((SECONDS < end)) || return 1
        sleep 0.02
    done
    : >"$SINK_FILE"
}

# jget FILTER: applies a jq filter to $BODY (raw output).
jget() {
    jq -r "$1" <<<"$BODY"
}

