# shellcheck shell=bash
# tests/lib/proxy.sh - the fault and latency proxy (tests/faultproxy.c) in
# front of a test server. Source it after tests/lib/e2e.sh (its processes
# stop with the registries when the test exits).
#
#   proxy_start NAME UPSTREAM_URL [FLAG...]   e.g. proxy_start src "$REG_SRC_URL" --rtt 40
#       exports PROXY_<NAME>_URL (http://127.0.0.1:PORT, the proxy) and
#       PROXY_<NAME>_CTL (its control server)
#   proxy_rules NAME < RULES       replaces the rules (faultproxy.c's header)
#   proxy_config NAME KEY=VALUE... changes the link (rtt, rate, ...)
#   proxy_log NAME                 prints the request log
#   proxy_clear NAME               empties the request log
#   proxy_stat NAME KEY            prints one counter of GET /stats
[[ -n ${_PROXY_LOADED:-} ]] && return 0
_PROXY_LOADED=1
FAULTPROXY=${FAULTPROXY:-$ROOT/build/faultproxy}

# _proxy_var NAME: the variable prefix of proxy NAME.
_proxy_var() {
    echo "PROXY_$(echo "$1" | tr 'a-z-' 'A-Z_')"
}

# proxy_start NAME UPSTREAM_URL [FLAG...]: starts a proxy to the host and
# port of UPSTREAM_URL; waits for its port file; exports its two URLs.
proxy_start() {
    local name=$1 upstream=$2 var dir hostport pid i
    shift 2
    var=$(_proxy_var "$name")
    [[ -x $FAULTPROXY ]] || { echo "proxy_start: $FAULTPROXY is missing (make build/faultproxy)" >&2; return 1; }
    hostport=${upstream#*://}
    hostport=${hostport%%/*}
    dir=$E2E_WORK/proxy-$name
    mkdir -p "$dir"
    rm -f "$dir/ports"
    "$FAULTPROXY" --upstream "$hostport" --port-file "$dir/ports" "$@" </dev/null >"$dir/proxy.log" 2>&1 &
    pid=$!
    _REGISTRY_PIDS+=("$pid")
    for ((i = 0; i < 250; i++)); do
        [[ -s $dir/ports ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    [[ -s $dir/ports ]] || { echo "proxy_start: the proxy did not come up: $(cat "$dir/proxy.log")" >&2; return 1; }
    local ports
    read -r -a ports <"$dir/ports"
    export "${var}_URL=http://127.0.0.1:${ports[0]}" "${var}_CTL=http://127.0.0.1:${ports[1]}" "${var}_PID=$pid"
}

# _proxy_ctl NAME: the control URL of proxy NAME.
_proxy_ctl() {
    local v
    v=$(_proxy_var "$1")_CTL
    echo "${!v:?proxy $1 is not started}"
}

# proxy_rules NAME: replaces proxy NAME's rules with stdin; fails (with the
# proxy's message on stderr) when it refuses them.
proxy_rules() {
    local out
    out=$(curl -s -w '\n%{http_code}' -X PUT --data-binary @- "$(_proxy_ctl "$1")/rules")
    [[ ${out##*$'\n'} == 204 ]] || { echo "proxy_rules: ${out%$'\n'*}" >&2; return 1; }
}

# proxy_config NAME KEY=VALUE...: changes proxy NAME's link settings.
proxy_config() {
    local name=$1 out
    shift
    out=$(printf '%s\n' "$@" | curl -s -w '\n%{http_code}' -X PUT --data-binary @- "$(_proxy_ctl "$name")/config")
    [[ ${out##*$'\n'} == 204 ]] || { echo "proxy_config: ${out%$'\n'*}" >&2; return 1; }
}

# proxy_log NAME: the request log, a line per request: MS CONN METHOD PATH STATUS RULE.
proxy_log() {
    curl -sf "$(_proxy_ctl "$1")/log"
}

# proxy_clear NAME: empties the request log.
proxy_clear() {
    curl -sf -X DELETE "$(_proxy_ctl "$1")/log"
}

# proxy_stat NAME KEY: one counter (connections, open, requests, answered,
# bytes_up, bytes_down).
proxy_stat() {
    curl -sf "$(_proxy_ctl "$1")/stats" | awk -v k="$2" '$1 == k { print $2 }'
}
