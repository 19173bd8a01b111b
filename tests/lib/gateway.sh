# shellcheck shell=bash
# tests/lib/gateway.sh - Debian's nginx as the stand-in FaaS gateway: an
# upstream of `replica function` instances, as an OpenFaaS gateway or a
# Kubernetes service spreads invocations. nginx never re-sends a POST it has
# sent, so an instance that dies mid-task gives the caller a 502. Needs
# tests/servers.sh (start_on_free_port). Used by the tests and make bench.
#   gateway_start DIR URL...  start it in DIR over the function URLs; sets
#                             GW_URL, GW_PID and GW_LOG (its access log:
#                             method, status, upstream address and status)
#   gateway_stop              stop it (SIGTERM, then wait)
#   gateway_stop_all          stop every gateway started (a test's cleanup)
#   asyncgw_start DIR URL..., asyncgw_stop   the stand-in OpenFaaS gateway with
#                             its async queue (tests/faasgw.py), below
GW_PID=""
_GW_ALL=()
gateway_start() {
    local u
    _GW_DIR=$1 _GW_SERVERS=""
    shift
    mkdir -p "$_GW_DIR/tmp"
    for u in "$@"; do _GW_SERVERS+="        server ${u#http://};"$'\n'; done
    GW_LOG=$_GW_DIR/access.log
    start_on_free_port "nginx (the gateway)" "" _gw_launch _gw_ready "$_GW_DIR/error.log" "$_GW_DIR/nginx.out" ||
        { GW_PID=""; return 1; }
    GW_PID=$STARTED_PID
    _GW_ALL+=("$GW_PID")
    GW_URL=http://127.0.0.1:$STARTED_PORT/
    : >"$GW_LOG" # without the readiness probe's line
}

# gateway_start's LAUNCH (the config for port $1, then nginx) and READY
# (tests/servers.sh's start_on_free_port).
_gw_launch() {
    local dir=$_GW_DIR user=""
    ((EUID == 0)) && user="user root root;"
    cat >"$dir/nginx.conf" <<EOF
$user
daemon off;
worker_processes 1;
pid "$dir/nginx.pid";
error_log "$dir/error.log" warn;
events { worker_connections 1024; }
http {
    log_format gw '\$request_method \$status \$upstream_addr \$upstream_status';
    access_log "$GW_LOG" gw;
    client_body_temp_path "$dir/tmp/body";
    proxy_temp_path "$dir/tmp/proxy";
    fastcgi_temp_path "$dir/tmp/fastcgi";
    uwsgi_temp_path "$dir/tmp/uwsgi";
    scgi_temp_path "$dir/tmp/scgi";
    upstream functions {
$_GW_SERVERS    }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://functions;
            proxy_read_timeout 600s;
            client_max_body_size 1m;
        }
    }
}
EOF
    : >"$dir/error.log"
    /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" </dev/null >"$dir/nginx.out" 2>&1 &
}
_gw_ready() {
    curl -sf -o /dev/null -m 1 "http://127.0.0.1:$1/_/health"
}

gateway_stop() {
    [[ -n $GW_PID ]] || return 0
    kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
    GW_PID=""
}

# gateway_stop_all: stops every gateway gateway_start started, not only the
# latest (a test that starts several would leave the others running).
gateway_stop_all() {
    local p
    for p in ${_GW_ALL[@]+"${_GW_ALL[@]}"}; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    _GW_ALL=() GW_PID=""
}

# asyncgw_start DIR URL... (tests/faasgw.py): the stand-in OpenFaaS gateway
# with its async queue over the function URLs; sets AGW_URL (its base:
# /function/NAME, /async-function/NAME, /_/stats, /_/control), AGW_PID and
# AGW_LOG. Extra faasgw.py flags go in AGW_ARGS (an array).
AGW_PID=""
asyncgw_start() {
    local dir=$1 u args=() end
    shift
    mkdir -p "$dir"
    for u in "$@"; do args+=(--upstream "$u"); done
    AGW_LOG=$dir/gateway.log
    rm -f "$dir/port"
    python3 "$(dirname "${BASH_SOURCE[0]}")/../faasgw.py" --port-file "$dir/port" --log "$AGW_LOG" \
        "${args[@]}" ${AGW_ARGS[@]+"${AGW_ARGS[@]}"} </dev/null >"$dir/gateway.out" 2>&1 &
    AGW_PID=$!
    end=$((SECONDS + 20))
    until [[ -s $dir/port ]]; do
        if ((SECONDS >= end)) || ! kill -0 "$AGW_PID" 2>/dev/null; then
            echo "# the stand-in gateway did not start: $(tail -n 3 "$dir/gateway.out")" >&2
            return 1
        fi
        sleep 0.02
    done
    AGW_URL=http://127.0.0.1:$(cat "$dir/port")
}

asyncgw_stop() {
    [[ -n $AGW_PID ]] || return 0
    kill -TERM "$AGW_PID" 2>/dev/null && wait "$AGW_PID" 2>/dev/null || true
    AGW_PID=""
}
