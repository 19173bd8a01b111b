#!/usr/bin/env bash
# bench/faas.sh - the coordinator's own cost with the faas executor (the end
# of `make bench`): `replica serve --gateway` dispatching tasks to a function
# that answers at once (nginx returning a task result, so that only the
# coordinator works). Tasks come from Distribution webhook events, one
# repository each, so no registry is planned or read.
#   1  10,000 tasks at --faas-concurrency 64: tasks per second (first task
#      started to last task finished) and serve's peak RSS
#   2  1,000 tasks at --faas-concurrency 1: the dispatch overhead per task in
#      ms (two transactions with fsync, the sealed invocation, the HTTP
#      round trip)
#   REPLICA  the engine binary (default build/release/replica)
# Exits 1 when a task does not succeed, whatever the figures.
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
MANY=${FAAS_TASKS:-10000} FEW=${FAAS_SERIAL_TASKS:-1000}

for tool in nginx curl jq sqlite3; do
    command -v "$tool" >/dev/null || command -v "/usr/sbin/$tool" >/dev/null ||
        { echo "bench: $tool not found (make deps-bench)" >&2; exit 1; }
done
source "$ROOT/tests/servers.sh"
WORK=$(mktemp -d /tmp/replica-bench-faas.XXXXXX)
SERVE_PID="" NGINX_PID=""
cleanup() {
    [[ -n $SERVE_PID ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "bench: $*" >&2; exit 1; }

# The function that answers at once: every POST gets a succeeded task
# result for attempt 1.
nport=$(_servers_free_port)
mkdir -p "$WORK/nginx/tmp"
user=""
((EUID == 0)) && user="user root root;"
cat >"$WORK/nginx/nginx.conf" <<CONF
$user
daemon off;
worker_processes 1;
pid "$WORK/nginx/nginx.pid";
error_log "$WORK/nginx/error.log" warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path "$WORK/nginx/tmp/body";
    proxy_temp_path "$WORK/nginx/tmp/proxy";
    fastcgi_temp_path "$WORK/nginx/tmp/fastcgi";
    uwsgi_temp_path "$WORK/nginx/tmp/uwsgi";
    scgi_temp_path "$WORK/nginx/tmp/scgi";
    server {
        listen 127.0.0.1:$nport;
        client_max_body_size 1m;
        client_body_buffer_size 64k;
        location / {
            default_type application/json;
            return 200 '{"kind":"task","attempt":1,"template":"distribution","status":"succeeded","stages":[]}';
        }
    }
}
CONF
/usr/sbin/nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" </dev/null >"$WORK/nginx/out" 2>&1 &
NGINX_PID=$!
for _ in $(seq 1 250); do curl -s -o /dev/null -X POST "http://127.0.0.1:$nport/" && break; sleep 0.02; done

head -c 32 /dev/urandom >"$WORK/seal.key"
chmod 600 "$WORK/seal.key"
SECRET=bench-faas-webhook-secret-0123456789

# run_case NAME TASKS CONCURRENCY: one daemon, TASKS events, every task
# dispatched; prints "TASKS SECONDS_SPAN RSS_KB INGEST_SECONDS".
run_case() {
    local name=$1 n=$2 conc=$3 port api token src dst pol res done_n end
    port=$(_servers_free_port)
    api=http://127.0.0.1:$port/api/v1
    REPLICA_FUNCTION_TOKEN=bench "$REPLICA" serve --db "$WORK/$name.db" --listen "127.0.0.1:$port" --log-level warn \
        --gateway "http://127.0.0.1:$nport/" --seal-key-file "$WORK/seal.key" --faas-concurrency "$conc" \
        --max-body 4194304 >"$WORK/$name.out" 2>"$WORK/$name.log" &
    SERVE_PID=$!
    for _ in $(seq 1 500); do curl -s -o /dev/null "$api/health" && break; sleep 0.02; done
    token=$(sed -n 's/.*stored): //p' "$WORK/$name.out")
    [[ -n $token ]] || fail "serve did not start: $(cat "$WORK/$name.log")"
    call() { curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
    src=$(call -d "{\"name\": \"src\", \"url\": \"http://127.0.0.1:9\", \"webhook_secret\": \"$SECRET\"}" "$api/registries" | jq .id)
    dst=$(call -d "{\"name\": \"dst\", \"url\": \"http://127.0.0.1:9\", \"username\": \"u\", \"password\": \"bench-pw\"}" "$api/registries" | jq .id)
    pol=$(call -d "{\"name\": \"fleet\", \"source_registry\": $src, \"target_registry\": $dst, \"trigger\": \"event\", \"executor\": \"faas\"}" "$api/policies" | jq .id)
    [[ $pol =~ ^[0-9]+$ ]] || fail "no policy"
    res=$("$REPLICA" script "$ROOT/bench/faas_events.lua" "$api/webhooks/distribution" "$SECRET" "$n" 500)
    [[ $(jq -r '.accepted == .posts' <<<"$res") == true ]] || fail "events refused: $res"
    end=$((SECONDS + 600))
    while :; do
        done_n=$(sqlite3 "$WORK/$name.db" "SELECT count(*) FROM tasks WHERE status = 'Succeeded'")
        [[ $done_n -ge $n ]] && break
        [[ $(sqlite3 "$WORK/$name.db" "SELECT count(*) FROM tasks WHERE status IN ('Failed', 'Stopped')") == 0 ]] ||
            fail "$name: a task failed: $(sqlite3 "$WORK/$name.db" "SELECT error FROM tasks WHERE status = 'Failed' LIMIT 1")"
        ((SECONDS < end)) || fail "$name: only $done_n of $n tasks succeeded in 600 s"
        sleep 0.2
    done
    local rss
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
    kill "$SERVE_PID" && wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
    echo "$n $(sqlite3 "$WORK/$name.db" "SELECT max(finished) - min(started) FROM tasks") $rss $(jq -r .seconds <<<"$res")"
}

echo "faas coordinator: replica serve dispatching to a function that answers at once (nginx)"
read -r n span rss ingest < <(run_case many "$MANY" 64)
awk -v n="$n" -v s="$span" -v r="$rss" -v i="$ingest" 'BEGIN {
    printf "  %d tasks, --faas-concurrency 64: %.1f s, %.0f tasks/s; peak RSS %.1f MiB (events ingested in %.1f s)\n",
        n, s, n / s, r / 1024, i }'
read -r n span rss ingest < <(run_case serial "$FEW" 1)
awk -v n="$n" -v s="$span" 'BEGIN {
    printf "  %d tasks, --faas-concurrency 1: %.2f ms per task (the dispatch overhead: attempt and result written, one round trip)\n",
        n, s * 1000 / n }'
