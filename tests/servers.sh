# shellcheck shell=bash
# tests/servers.sh — loopback test servers for the replica test suite.
#
# Source this file, then:
#   servers_start DIR   start nginx (HTTP/1.1 + HTTPS/HTTP2) and the fault
#                       server on free 127.0.0.1 ports, wait until they serve
#   servers_stop        stop everything started (idempotent, EXIT-trap safe)
#
# Exports after servers_start: HTTP_PORT HTTPS_PORT FAULT_PORT HTTP_URL
# HTTPS_URL FAULT_URL TEST_CA SERVERS_DIR.
# Optional input: FAULTSERVER=/path/to/binary (default: build/faultserver,
# compiled from tests/faultserver.c when missing or older than the source).
# Both servers run as background children of the sourcing shell; a bare
# `wait` in the caller would therefore block until servers_stop.

_SERVERS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_SERVERS_NGINX_BIN=/usr/sbin/nginx
_SERVERS_ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
_SERVERS_NGINX_PID=${_SERVERS_NGINX_PID:-}   # kept if sourced twice
_SERVERS_FAULT_PID=${_SERVERS_FAULT_PID:-}
# shellcheck source-path=SCRIPTDIR source=lib/tls.sh
source "$_SERVERS_ROOT/tests/lib/tls.sh"

# Print one error line to stderr and fail.
_servers_err() {
    echo "servers.sh: error: $*" >&2
    return 1
}

# Check that the required tools exist (packages are installed by `make deps`).
_servers_check_deps() {
    local missing=()
    [[ -x $_SERVERS_NGINX_BIN ]] || missing+=("nginx ($_SERVERS_NGINX_BIN, package nginx-light)")
    [[ -f $_SERVERS_ECHO_MODULE ]] || missing+=("nginx echo module (package libnginx-mod-http-echo)")
    command -v openssl >/dev/null 2>&1 || missing+=("openssl")
    command -v curl >/dev/null 2>&1 || missing+=("curl")
    if ((${#missing[@]})); then
        _servers_err "missing: $(IFS=,; echo "${missing[*]}") — run 'make deps'"
        return 1
    fi
}

# True if PID is a live (non-zombie) process.
_servers_alive() {
    local pid=$1 stat
    [[ -n $pid ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }          # drop "pid (comm) "; the state letter follows
    [[ ${stat:0:1} != Z ]]
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
_servers_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print a random free port below the ephemeral range, not in EXCLUDE... args.
_servers_free_port() {
    local lo=20000 hi=32767 range listening p tries ex taken
    if read -r range _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && ((range > lo + 1000)); then
        hi=$((range - 1))
    fi
    listening=" $(ss -Hltn 2>/dev/null | awk '{n=split($4,a,":"); printf "%s ", a[n]}') "
    for ((tries = 0; tries < 200; tries++)); do
        p=$(( ((RANDOM << 15) | RANDOM) % (hi - lo + 1) + lo ))
        taken=0
        for ex in "$@"; do [[ $ex == "$p" ]] && taken=1; done
        ((taken)) && continue
        [[ $listening == *" $p "* ]] && continue
        _servers_port_open "$p" && continue
        echo "$p"
        return 0
    done
    _servers_err "no free TCP port found"
}

# start_on_free_port NAME PORT LAUNCH READY LOG...: starts a server of the
# tests on a free port (PORT first, when not empty). `LAUNCH PORT` starts it
# in the background; `READY PORT` succeeds once it serves, and is polled every
# 0.02 s (10 s at most) while the server runs. A server that ended with
# "address already in use" in one of the LOGs (a port race) is started again
# on another port, up to 5 times. Sets STARTED_PID and STARTED_PORT. On
# failure it stops the server, prints NAME and the LOGs as TAP comments on
# stderr, and returns 1.
start_on_free_port() {
    local name=$1 port=$2 launch=$3 ready=$4 i j
    shift 4
    for ((i = 0; i < 5; i++)); do
        [[ -n $port ]] || port=$(_servers_free_port) || return 1
        "$launch" "$port"
        STARTED_PID=$! STARTED_PORT=$port
        for ((j = 0; j < 500; j++)); do
            "$ready" "$port" && return 0
            kill -0 "$STARTED_PID" 2>/dev/null || break
            sleep 0.02
        done
        kill -TERM "$STARTED_PID" 2>/dev/null || true
        wait "$STARTED_PID" 2>/dev/null || true
        STARTED_PID=""
        grep -qi "address already in use" "$@" 2>/dev/null || break
        port=""
    done
    echo "# $name did not come up:" >&2
    sed 's/^/#   /' "$@" >&2
    return 1
}

# Ensure the fault server binary exists and is up to date; print its path.
_servers_faultserver_bin() {
    local src=$_SERVERS_ROOT/tests/faultserver.c
    local bin=${FAULTSERVER:-$_SERVERS_ROOT/build/faultserver}
    if [[ -x $bin && ( ! -f $src || ! $src -nt $bin ) ]]; then
        echo "$bin"
        return 0
    fi
    [[ -f $src ]] || { _servers_err "fault server $bin not found"; return 1; }
    command -v cc >/dev/null 2>&1 || { _servers_err "cc not found (needed to build $bin)"; return 1; }
    mkdir -p "$(dirname "$bin")" || return 1
    # Build to a temporary name and rename, so concurrent runs never see a partial binary.
    if ! cc -std=c11 -Wall -Wextra -O2 "$src" -o "$bin.tmp.$$" >&2; then
        rm -f "$bin.tmp.$$"
        _servers_err "failed to build $bin"
        return 1
    fi
    mv -f "$bin.tmp.$$" "$bin" && echo "$bin"
}

# Generate a fresh test CA and a server certificate for 127.0.0.1/localhost
# in DIR: ca.pem, server.pem and their keys (tests/lib/tls.sh).
_servers_make_certs() {
    tls_ca "$1" ca && tls_cert "$1" server "$1/ca" server
}

# Create the static files served under /files/.
_servers_make_files() {
    local files=$1/www/files
    mkdir -p "$files" || return 1
    printf 'hello from nginx\n' >"$files/small.txt"
    head -c 1024 /dev/urandom >"$files/1k.bin"
    head -c 65536 /dev/urandom >"$files/64k.bin"
    head -c 1048576 /dev/urandom >"$files/1m.bin"
}

# Print the locations shared by the HTTP and HTTPS servers.
_servers_nginx_locations() {
    local dir=$1 code
    cat <<EOF
        location /files/ {
            root "$dir/www";
        }
        location = /echo {
            echo_read_request_body;
            echo "method=\$request_method";
            echo "x-test=\$http_x_test";
            echo "body=\$request_body";
        }
        location /slow/ {
            echo_sleep 1;
            echo "slow";
        }
        location = /headers {
            add_header Link '<http://127.0.0.1/next>; rel="next"' always;
            add_header Link '<http://127.0.0.1/prev>; rel="prev"' always;
            add_header X-Multi one always;
            add_header X-Multi two always;
            return 200 "ok";
        }
        location = /status/204 { return 204; }
        location = /status/301 { return 301 /files/small.txt; }
        location = /status/302 { return 302 /files/small.txt; }
        location = /status/401 {
            add_header WWW-Authenticate 'Bearer realm="http://127.0.0.1/token",service="test"' always;
            return 401 "status 401\n";
        }
EOF
    for code in 200 201 202 400 404 500 503; do
        printf '        location = /status/%s { return %s "status %s\\n"; }\n' "$code" "$code" "$code"
    done
}

# Write DIR/nginx.conf for the given HTTP and HTTPS ports.
_servers_nginx_conf() {
    local dir=$1 http_port=$2 https_port=$3 locations user="" nofile=65536 hard
    locations=$(_servers_nginx_locations "$dir")
    # Workers default to "nobody" under root and could not read a mktemp (0700) DIR.
    ((EUID == 0)) && user="user root root;"
    # An unprivileged container cannot raise the hard limit; avoid a setrlimit alert.
    hard=$(ulimit -Hn)
    [[ $hard =~ ^[0-9]+$ ]] && ((hard < nofile)) && nofile=$hard
    cat >"$dir/nginx.conf" <<EOF
# Generated by tests/servers.sh — do not edit.
load_module $_SERVERS_ECHO_MODULE;
$user
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $nofile;
pid "$dir/nginx.pid";
error_log "$dir/nginx-error.log" warn;

events {
    worker_connections 16384;
}

http {
    access_log off;
    default_type text/plain;
    types {
        text/plain txt;
        application/octet-stream bin;
    }
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    client_body_temp_path "$dir/tmp/body";
    proxy_temp_path "$dir/tmp/proxy";
    fastcgi_temp_path "$dir/tmp/fastcgi";
    uwsgi_temp_path "$dir/tmp/uwsgi";
    scgi_temp_path "$dir/tmp/scgi";

    server {
        listen 127.0.0.1:$http_port;
        server_name localhost 127.0.0.1;
$locations
    }

    server {
        listen 127.0.0.1:$https_port ssl http2;
        server_name localhost 127.0.0.1;
        ssl_certificate "$dir/server.pem";
        ssl_certificate_key "$dir/server.key";
        ssl_protocols TLSv1.2 TLSv1.3;
$locations
    }
}
EOF
}

# Poll URL with curl (extra curl args after URL) until it answers or PID dies; ~10 s bound.
_servers_wait_url() {
    local pid=$1 url=$2 i
    shift 2
    for ((i = 0; i < 100; i++)); do
        if curl -sf -o /dev/null --max-time 1 "$@" "$url"; then
            return 0
        fi
        _servers_alive "$pid" || return 2
        sleep 0.1
    done
    return 1
}

# Start nginx on fresh ports (retrying if a port was taken meanwhile).
_servers_start_nginx() {
    local dir=$1 attempt rc
    for ((attempt = 1; attempt <= 5; attempt++)); do
        HTTP_PORT=$(_servers_free_port) || return 1
        HTTPS_PORT=$(_servers_free_port "$HTTP_PORT") || return 1
        _servers_nginx_conf "$dir" "$HTTP_PORT" "$HTTPS_PORT" || return 1
        : >"$dir/nginx-error.log"; : >"$dir/nginx.out"   # fresh logs per attempt
        "$_SERVERS_NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" \
            </dev/null >"$dir/nginx.out" 2>&1 &
        _SERVERS_NGINX_PID=$!
        rc=0
        _servers_wait_url "$_SERVERS_NGINX_PID" "http://127.0.0.1:$HTTP_PORT/files/small.txt" &&
            _servers_wait_url "$_SERVERS_NGINX_PID" "https://127.0.0.1:$HTTPS_PORT/files/small.txt" \
                --cacert "$dir/ca.pem" || rc=$?
        ((rc == 0)) && return 0
        _servers_stop_pid "$_SERVERS_NGINX_PID"
        _SERVERS_NGINX_PID=""
        # Exit before readiness on a bind error means a port race: retry.
        if ((rc == 2)) && grep -q "Address already in use" "$dir/nginx-error.log" "$dir/nginx.out" 2>/dev/null; then
            continue
        fi
        _servers_err "nginx did not come up (see $dir/nginx-error.log): $(tail -n 1 "$dir/nginx-error.log" 2>/dev/null)"
        return 1
    done
    _servers_err "nginx: could not bind free ports after retries"
}

# Start the fault server on a fresh port (retrying if the port was taken).
_servers_start_fault() {
    local dir=$1 bin attempt rc
    bin=$(_servers_faultserver_bin) || return 1
    for ((attempt = 1; attempt <= 5; attempt++)); do
        FAULT_PORT=$(_servers_free_port "$HTTP_PORT" "$HTTPS_PORT") || return 1
        "$bin" "$FAULT_PORT" </dev/null >"$dir/faultserver.log" 2>&1 &
        _SERVERS_FAULT_PID=$!
        rc=0
        _servers_wait_url "$_SERVERS_FAULT_PID" "http://127.0.0.1:$FAULT_PORT/ok" || rc=$?
        ((rc == 0)) && return 0
        _servers_stop_pid "$_SERVERS_FAULT_PID"
        _SERVERS_FAULT_PID=""
        if ((rc == 2)) && grep -q "in use" "$dir/faultserver.log" 2>/dev/null; then
            continue
        fi
        _servers_err "fault server did not come up (see $dir/faultserver.log)"
        return 1
    done
    _servers_err "fault server: could not bind a free port after retries"
}

# Start all test servers with state in DIR and export their addresses.
servers_start() {
    local dir=${1:?usage: servers_start DIR}
    if [[ -n $_SERVERS_NGINX_PID || -n $_SERVERS_FAULT_PID ]]; then
        _servers_err "servers already started (call servers_stop first)"
        return 1
    fi
    _servers_check_deps || return 1
    mkdir -p "$dir" "$dir/tmp" || { _servers_err "cannot create $dir"; return 1; }
    dir=$(cd "$dir" && pwd) || return 1
    SERVERS_DIR=$dir
    TEST_CA=$dir/ca.pem
    HTTP_PORT="" HTTPS_PORT="" FAULT_PORT=""
    export SERVERS_DIR TEST_CA HTTP_PORT HTTPS_PORT FAULT_PORT

    if ! { _servers_make_certs "$dir" && _servers_make_files "$dir" &&
           _servers_start_nginx "$dir" && _servers_start_fault "$dir"; }; then
        servers_stop
        return 1
    fi
    HTTP_URL=http://127.0.0.1:$HTTP_PORT
    HTTPS_URL=https://127.0.0.1:$HTTPS_PORT
    FAULT_URL=http://127.0.0.1:$FAULT_PORT
    export HTTP_URL HTTPS_URL FAULT_URL
}

# Print the pids of PID's direct children (e.g. nginx workers).
_servers_children() {
    local f stat ppid
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        stat=${stat##*) }
        read -r _ ppid _ <<<"$stat"
        [[ $ppid == "$1" ]] && echo "${f//[^0-9]/}"
    done
    return 0
}

# TERM PID, wait up to ~5 s, then KILL it and its children; reap it if it is our child.
_servers_stop_pid() {
    local pid=$1 i kids
    [[ -n $pid ]] || return 0
    kids=$(_servers_children "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        _servers_alive "$pid" || break
        sleep 0.1
    done
    if _servers_alive "$pid"; then
        # shellcheck disable=SC2086  # word splitting of the pid list is intended
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    return 0
}

# Stop every server started by servers_start; safe to call repeatedly or from a trap.
servers_stop() {
    local pid
    for pid in "$_SERVERS_FAULT_PID" "$_SERVERS_NGINX_PID"; do
        _servers_stop_pid "$pid"
    done
    _SERVERS_FAULT_PID=""
    _SERVERS_NGINX_PID=""
    return 0
}
