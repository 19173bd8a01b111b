# shellcheck shell=bash
# tests/fakereg.sh - tests/fakereg.py, the registry stand-in that names other
# origins and lists invalid names, on loopback.
#
# Source this file (after tests/servers.sh), then:
#   fakereg_start DIR [UPSTREAM_URL]
#                  start it with its port file and log in DIR; with
#                  servers_start run before, its tls listener uses the test
#                  certificate (TEST_CA verifies it); with UPSTREAM_URL, /evil/
#                  passes requests through to that registry
#   fakereg_stop   stop it (idempotent, EXIT-trap safe)
#
# Exports after fakereg_start: FAKEREG_URL (http://127.0.0.1:PORT),
# FAKEREG_TLS_URL (https://127.0.0.1:PORT, when there is a certificate) and
# FAKEREG_OTHER_URL (the other origin).
_FAKEREG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
declare -F _servers_alive >/dev/null || source "$_FAKEREG_ROOT/tests/servers.sh"
_FAKEREG_PID=${_FAKEREG_PID:-}

# Start the stand-in and wait (up to ~10 s) until its port file appears.
fakereg_start() {
    local dir=${1:?usage: fakereg_start DIR [UPSTREAM_URL]} upstream=${2:-} i tls=()
    mkdir -p "$dir" || return 1
    rm -f "$dir/ports.json"
    if [[ -n ${SERVERS_DIR:-} && -f $SERVERS_DIR/server.pem ]]; then
        tls=(--cert "$SERVERS_DIR/server.pem" --key "$SERVERS_DIR/server.key")
    fi
    python3 "$_FAKEREG_ROOT/tests/fakereg.py" --port-file "$dir/ports.json" "${tls[@]}" \
        ${upstream:+--upstream "$upstream"} </dev/null >"$dir/fakereg.log" 2>&1 &
    _FAKEREG_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $dir/ports.json ]] && break
        _servers_alive "$_FAKEREG_PID" || break
        sleep 0.1
    done
    [[ -s $dir/ports.json ]] || { echo "fakereg.sh: error: fakereg.py did not come up (see $dir/fakereg.log)" >&2; return 1; }
    local ports
    ports=$(<"$dir/ports.json")
    _fakereg_port() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" <<<"$ports"; }
    FAKEREG_URL=http://127.0.0.1:$(_fakereg_port main)
    FAKEREG_OTHER_URL=http://127.0.0.1:$(_fakereg_port other)
    FAKEREG_TLS_URL=""
    [[ -n $(_fakereg_port tls) ]] && FAKEREG_TLS_URL=https://127.0.0.1:$(_fakereg_port tls)
    export FAKEREG_URL FAKEREG_OTHER_URL FAKEREG_TLS_URL
}

# Stop the stand-in if it runs.
fakereg_stop() {
    _servers_stop_pid "$_FAKEREG_PID"
    _FAKEREG_PID=""
}
