# shellcheck shell=bash
# tests/registry.sh — CNCF Distribution registries (Debian's docker-registry)
# on loopback for the replica test suite.
#
# Source this file, then:
#   registry_start NAME DIR [none|basic|token]
#                       start one registry with its config and logs in DIR and
#                       its storage under /dev/shm; wait until /v2/ answers
#   registry_sidecar_start NAME DIR
#                       start tests/tokenserver.py --sidecar in front of the
#                       anonymous registry NAME: a tags-list paging stand-in
#                       (Distribution 2.8 does not page tags), blob GET faults
#                       and corruption of stored blobs
#   registry_restart NAME DIR
#                       kill registry NAME and start it again on its port
#   registry_stop_all   stop everything started (idempotent, EXIT-trap safe)
#
# Exports after registry_start NAME (NAME upper-cased, "-" becomes "_"):
#   REG_<NAME>_URL        http://127.0.0.1:PORT
#   REG_<NAME>_STORAGE    the storage root (blobs under docker/registry/v2/blobs)
#   REG_<NAME>_USER, REG_<NAME>_PASS    basic and token only
#   REG_<NAME>_TOKEN_URL  token only: the token server (/token, /stats, /control;
#                         see tests/tokenserver.py)
# and after registry_sidecar_start NAME: REG_<NAME>_SIDECAR_URL.
# With TEST_REGISTRY_STORAGE set (not REGISTRY_*: docker-registry reads those
# as its own settings), the storage is that directory (kept at the
# end) instead of a fresh one under /dev/shm. Deletes are enabled.
# Notifications are off unless REGISTRY_NOTIFY_URL is set when
# registry_start runs: then the registry POSTs its events there,
# with the header "Authorization: $REGISTRY_NOTIFY_AUTH" when that is set.
# With TEST_REGISTRY_TLS=CA (a CA made by tests/lib/tls.sh's tls_ca: CA.pem
# and CA.key) the registry serves HTTPS with a certificate CA signs, made in
# DIR; its URL is then https://127.0.0.1:PORT and REG_<NAME>_CA is CA.pem.
# With TEST_REGISTRY_CLIENT_CA=CA2 as well, it asks for a client certificate
# CA2 signed (mTLS) and refuses a handshake without one; registry_start
# makes one in DIR and exports it as REG_<NAME>_CERT and REG_<NAME>_KEY.
# With REGISTRY_ACCESSLOG set, the registry writes an access line per request
# (Apache's combined format) to DIR/registry.log.
# The processes run as background children of the sourcing shell.

_REGISTRY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The port, liveness and stop helpers are shared with the other test servers.
# shellcheck source-path=SCRIPTDIR source=servers.sh
declare -F _servers_free_port >/dev/null || source "$_REGISTRY_ROOT/tests/servers.sh"
_REGISTRY_PIDS=(${_REGISTRY_PIDS[@]+"${_REGISTRY_PIDS[@]}"})   # kept if sourced twice
_REGISTRY_SHM=(${_REGISTRY_SHM[@]+"${_REGISTRY_SHM[@]}"})
_REGISTRY_PORT=""   # the port the last _registry_start_* bound

# Print one error line to stderr and fail.
_registry_err() {
    echo "registry.sh: error: $*" >&2
    return 1
}

# Check that the required tools exist (packages are installed by `make deps`).
_registry_check_deps() {
    local missing=()
    command -v docker-registry >/dev/null 2>&1 || missing+=("docker-registry (package docker-registry)")
    command -v htpasswd >/dev/null 2>&1 || missing+=("htpasswd (package apache2-utils)")
    command -v python3 >/dev/null 2>&1 || missing+=("python3")
    command -v openssl >/dev/null 2>&1 || missing+=("openssl")
    command -v curl >/dev/null 2>&1 || missing+=("curl")
    if ((${#missing[@]})); then
        _registry_err "missing: $(IFS=,; echo "${missing[*]}") — run 'make deps'"
        return 1
    fi
}

# Print the HTTP status of GET URL, extra curl args after it (000 when
# nothing answers).
_registry_status() {
    curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$@" 2>/dev/null || true
}

# Poll URL (extra curl args after it) until it answers 200 or 401, or PID
# dies; ~10 s bound.
_registry_wait() {
    local pid=$1 url=$2 i code
    shift 2
    for ((i = 0; i < 100; i++)); do
        code=$(_registry_status "$url" "$@")
        [[ $code == 200 || $code == 401 ]] && return 0
        _servers_alive "$pid" || return 2
        sleep 0.1
    done
    return 1
}

# Print a random password of letters and digits.
_registry_password() {
    local p=""
    while ((${#p} < 16)); do
        p+=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    done
    echo "${p:0:16}"
}

# Start tests/tokenserver.py with a fresh signing key in DIR; set _REGISTRY_PORT.
_registry_start_tokens() {
    local dir=$1 service=$2 user=$3 pass=$4 pid i
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/token.key" -out "$dir/token.pem" \
        -days 7 -subj "/CN=replica test token issuer" >"$dir/openssl.log" 2>&1 ||
        { _registry_err "token key generation failed, see $dir/openssl.log"; return 1; }
    rm -f "$dir/token.port"
    TOKEN_USER=$user TOKEN_PASS=$pass python3 "$_REGISTRY_ROOT/tests/tokenserver.py" \
        --key "$dir/token.key" --cert "$dir/token.pem" --issuer replica-test-issuer \
        --service "$service" --port-file "$dir/token.port" \
        </dev/null >"$dir/tokenserver.log" 2>&1 &
    pid=$!
    _REGISTRY_PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        [[ -s $dir/token.port ]] && break
        _servers_alive "$pid" || break
        sleep 0.1
    done
    [[ -s $dir/token.port ]] || { _registry_err "token server did not come up (see $dir/tokenserver.log)"; return 1; }
    _REGISTRY_PORT=$(<"$dir/token.port")
}

# Print the registry's JSON config: storage root, port, an optional auth
# block and an optional http.tls block.
_registry_config() {
    local storage=$1 port=$2 auth=$3 tls=$4
    cat <<EOF
{"version": 0.1,
 "log": {"level": "error", "accesslog": {"disabled": $([[ -n ${REGISTRY_ACCESSLOG:-} ]] && echo false || echo true)}},
 "storage": {"filesystem": {"rootdirectory": "$storage"},
             "delete": {"enabled": true},
             "maintenance": {"uploadpurging": {"enabled": false}}},
 "http": {"addr": "127.0.0.1:$port", "secret": "replica-test-$port"${tls:+, \"tls\": $tls}}${auth:+,
 \"auth\": $auth}$(_registry_notifications)}
EOF
}

# Print the notifications block (with its leading comma) when
# REGISTRY_NOTIFY_URL is set.
_registry_notifications() {
    [[ -n ${REGISTRY_NOTIFY_URL:-} ]] || return 0
    local headers="{}"
    [[ -n ${REGISTRY_NOTIFY_AUTH:-} ]] && headers="{\"Authorization\": [\"$REGISTRY_NOTIFY_AUTH\"]}"
    printf ',\n "notifications": {"endpoints": [{"name": "replica", "url": "%s", "headers": %s, "timeout": "2s", "threshold": 3, "backoff": "500ms"}]}' \
        "$REGISTRY_NOTIFY_URL" "$headers"
}

# Print the http.tls block for TEST_REGISTRY_TLS (and TEST_REGISTRY_CLIENT_CA),
# making the certificates in DIR; print nothing without TEST_REGISTRY_TLS.
_registry_tls() {
    local dir=$1
    [[ -n ${TEST_REGISTRY_TLS:-} ]] || return 0
    tls_cert "$dir" server "$TEST_REGISTRY_TLS" server || return 1
    if [[ -n ${TEST_REGISTRY_CLIENT_CA:-} ]]; then
        tls_cert "$dir" client "$TEST_REGISTRY_CLIENT_CA" client || return 1
        printf '{"certificate": "%s", "key": "%s", "clientcas": ["%s"]}' \
            "$dir/server.pem" "$dir/server.key" "$TEST_REGISTRY_CLIENT_CA.pem"
    else
        printf '{"certificate": "%s", "key": "%s"}' "$dir/server.pem" "$dir/server.key"
    fi
}

# Print the curl arguments that reach the registry of DIR through its TLS
# (none without TEST_REGISTRY_TLS), one a line.
_registry_curl_tls() {
    local dir=$1
    [[ -n ${TEST_REGISTRY_TLS:-} ]] || return 0
    printf '%s\n' --cacert "$TEST_REGISTRY_TLS.pem"
    [[ -z ${TEST_REGISTRY_CLIENT_CA:-} ]] || printf '%s\n' --cert "$dir/client.pem" --key "$dir/client.key"
}

# Start docker-registry with DIR/config.json on a fresh port (retrying if the
# port was taken meanwhile); set _REGISTRY_PORT.
_registry_start_server() {
    local dir=$1 storage=$2 auth=$3 attempt rc port pid tls scheme=http curl_tls
    tls=$(_registry_tls "$dir") || return 1
    [[ -z $tls ]] || scheme=https
    mapfile -t curl_tls < <(_registry_curl_tls "$dir")
    for ((attempt = 1; attempt <= 5; attempt++)); do
        port=$(_servers_free_port) || return 1
        _registry_config "$storage" "$port" "$auth" "$tls" >"$dir/config.json" || return 1
        docker-registry serve "$dir/config.json" </dev/null >"$dir/registry.log" 2>&1 &
        pid=$!
        rc=0
        _registry_wait "$pid" "$scheme://127.0.0.1:$port/v2/" ${curl_tls[@]+"${curl_tls[@]}"} || rc=$?
        if ((rc == 0)); then
            _REGISTRY_PIDS+=("$pid")
            _REGISTRY_PORT=$port
            return 0
        fi
        _servers_stop_pid "$pid"
        if ((rc == 2)) && grep -q "address already in use" "$dir/registry.log" 2>/dev/null; then
            continue
        fi
        _registry_err "docker-registry did not come up (see $dir/registry.log): $(tail -n 1 "$dir/registry.log" 2>/dev/null)"
        return 1
    done
    _registry_err "docker-registry: could not bind a free port after retries"
}

# Start one registry NAME with state in DIR and auth MODE; export its addresses.
registry_start() {
    local name=${1:?usage: registry_start NAME DIR [none|basic|token]} dir=${2:?usage: registry_start NAME DIR [none|basic|token]}
    local mode=${3:-none} var storage auth="" user="" pass="" tport="" port scheme=http
    var=REG_$(echo "$name" | tr 'a-z-' 'A-Z_')
    [[ $mode == none || $mode == basic || $mode == token ]] ||
        { _registry_err "unknown auth mode '$mode' (none, basic or token)"; return 1; }
    _registry_check_deps || return 1
    mkdir -p "$dir" || { _registry_err "cannot create $dir"; return 1; }
    dir=$(cd "$dir" && pwd) || return 1
    if [[ -n ${TEST_REGISTRY_STORAGE:-} ]]; then # the caller's (a small tmpfs, say), left in place
        storage=$TEST_REGISTRY_STORAGE
    else
        storage=$(mktemp -d /dev/shm/replica-registry.XXXXXX) || { _registry_err "cannot create storage under /dev/shm"; return 1; }
        _REGISTRY_SHM+=("$storage")
    fi

    if [[ $mode != none ]]; then
        user=replica
        pass=$(_registry_password)
    fi
    if [[ $mode == basic ]]; then
        htpasswd -Bbn "$user" "$pass" >"$dir/htpasswd" 2>"$dir/htpasswd.log" ||
            { _registry_err "htpasswd failed, see $dir/htpasswd.log"; return 1; }
        auth="{\"htpasswd\": {\"realm\": \"replica-test\", \"path\": \"$dir/htpasswd\"}}"
    elif [[ $mode == token ]]; then
        _registry_start_tokens "$dir" "replica-$name" "$user" "$pass" || return 1
        tport=$_REGISTRY_PORT
        auth="{\"token\": {\"realm\": \"http://127.0.0.1:$tport/token\", \"service\": \"replica-$name\",
          \"issuer\": \"replica-test-issuer\", \"rootcertbundle\": \"$dir/token.pem\"}}"
    fi
    _registry_start_server "$dir" "$storage" "$auth" || return 1
    port=$_REGISTRY_PORT

    if [[ -n ${TEST_REGISTRY_TLS:-} ]]; then
        scheme=https
        export "${var}_CA=$TEST_REGISTRY_TLS.pem"
        if [[ -n ${TEST_REGISTRY_CLIENT_CA:-} ]]; then
            export "${var}_CERT=$dir/client.pem" "${var}_KEY=$dir/client.key"
        fi
    fi
    export "${var}_URL=$scheme://127.0.0.1:$port" "${var}_STORAGE=$storage"
    if [[ $mode != none ]]; then
        export "${var}_USER=$user" "${var}_PASS=$pass"
    fi
    if [[ $mode == token ]]; then
        export "${var}_TOKEN_URL=http://127.0.0.1:$tport"
    fi
}

# Start the sidecar (tests/tokenserver.py --sidecar) in front of registry NAME:
# tags paging, blob GET faults, storage corruption; export REG_<NAME>_SIDECAR_URL.
registry_sidecar_start() {
    local name=${1:?usage: registry_sidecar_start NAME DIR} dir=${2:?usage: registry_sidecar_start NAME DIR}
    local var upstream storage pid i
    var=REG_$(echo "$name" | tr 'a-z-' 'A-Z_')
    upstream=${var}_URL
    upstream=${!upstream:-}
    storage=${var}_STORAGE
    storage=${!storage:-}
    [[ -n $upstream ]] || { _registry_err "registry $name is not started"; return 1; }
    mkdir -p "$dir" || { _registry_err "cannot create $dir"; return 1; }
    rm -f "$dir/sidecar.port"
    python3 "$_REGISTRY_ROOT/tests/tokenserver.py" --sidecar "$upstream" --storage "$storage" --page 2 \
        --port-file "$dir/sidecar.port" </dev/null >"$dir/sidecar.log" 2>&1 &
    pid=$!
    _REGISTRY_PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        [[ -s $dir/sidecar.port ]] && break
        _servers_alive "$pid" || break
        sleep 0.1
    done
    [[ -s $dir/sidecar.port ]] || { _registry_err "sidecar did not come up (see $dir/sidecar.log)"; return 1; }
    export "${var}_SIDECAR_URL=http://127.0.0.1:$(<"$dir/sidecar.port")"
}

# registry_restart NAME DIR: kills registry NAME (started with state in DIR)
# with SIGKILL and starts it again on its port with its storage; waits until
# it answers.
registry_restart() {
    local name=$1 dir=$2 var url pid curl_tls=()
    var=REG_$(echo "$name" | tr 'a-z-' 'A-Z_')
    url=${var}_URL
    url=${!url:?registry $name is not started}
    if [[ $url == https:* ]]; then
        local ca=${var}_CA cert=${var}_CERT key=${var}_KEY
        curl_tls=(--cacert "${!ca}")
        [[ -z ${!cert:-} ]] || curl_tls+=(--cert "${!cert}" --key "${!key}")
    fi
    pid=$(pgrep -f "docker-registry serve $dir/config.json" | head -n 1)
    [[ -n $pid ]] && kill -9 "$pid" && while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    docker-registry serve "$dir/config.json" </dev/null >>"$dir/registry.log" 2>&1 &
    pid=$!
    _REGISTRY_PIDS+=("$pid")
    _registry_wait "$pid" "$url/v2/" ${curl_tls[@]+"${curl_tls[@]}"} || { _registry_err "docker-registry $name did not come back (see $dir/registry.log)"; return 1; }
}

# Stop every process started here and remove the storage; safe to call repeatedly.
registry_stop_all() {
    local pid dir
    for pid in ${_REGISTRY_PIDS[@]+"${_REGISTRY_PIDS[@]}"}; do
        _servers_stop_pid "$pid"
    done
    for dir in ${_REGISTRY_SHM[@]+"${_REGISTRY_SHM[@]}"}; do
        [[ $dir == /dev/shm/replica-registry.* ]] && rm -rf "$dir"
    done
    _REGISTRY_PIDS=()
    _REGISTRY_SHM=()
    return 0
}
