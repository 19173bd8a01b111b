# shellcheck shell=bash
# tests/lib/gateway.sh - Debian's nginx as the stand-in FaaS gateway: an
# upstream of `replica function` instances, as an OpenFaaS gateway or a
# Kubernetes service spreads invocations. nginx never re-sends a POST it has
# sent, so an instance that dies mid-task gives the caller a 502. Needs
# tests/servers.sh (free ports, readiness). Used by the tests and make bench.
#   gateway_start DIR URL...  start it in DIR over the function URLs; sets
#                             GW_URL, GW_PID and GW_LOG (its access log:
#                             method, status, upstream address and status)
#   gateway_stop              stop it (SIGTERM, then wait)
GW_PID=""
gateway_start() {
    local dir=$1 port i servers="" u user=""
    shift
    mkdir -p "$dir/tmp"
    for u in "$@"; do servers+="        server ${u#http://};"$'\n'; done
    ((EUID == 0)) && user="user root root;"
    GW_LOG=$dir/access.log
    for ((i = 0; i < 5; i++)); do
        port=$(_servers_free_port)
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
$servers    }
    server {
        listen 127.0.0.1:$port;
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
        GW_PID=$!
        GW_URL=http://127.0.0.1:$port/
        _servers_wait_url "$GW_PID" "${GW_URL}_/health" && { : >"$GW_LOG"; return 0; }
        kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
        GW_PID=""
        grep -q "Address already in use" "$dir/error.log" "$dir/nginx.out" || break
    done
    echo "# nginx (the gateway) did not come up:" >&2
    sed 's/^/#   /' "$dir/error.log" "$dir/nginx.out" >&2
    return 1
}

gateway_stop() {
    [[ -n $GW_PID ]] || return 0
    kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null || true
    GW_PID=""
}
