# shellcheck shell=bash
# tests/standins.sh - the registry-kind stand-ins (tests/standins/KIND.py) on
# loopback, each in front of its own Distribution registry.
#
# Source this file (it sources tests/registry.sh when needed), then:
#   standin_start KIND NAME DIR [EXTRA_ARGS...]
#                  start an upstream Distribution registry (registry_start,
#                  mode none) and the KIND stand-in in front of it, with state
#                  and logs in DIR; wait until both answer
#   standin_stop_all
#                  stop every stand-in and upstream (idempotent; also runs on
#                  EXIT, after any EXIT trap set before this file was sourced)
#   standin_control NAME KEY=VALUE...
#                  POST /_standin/control on the stand-in (prints the settings)
#   standin_push URL REPO TAG [CURL_ARGS...]
#                  push a one-layer OCI image with curl (monolithic uploads),
#                  CURL_ARGS carrying the auth (-u U:P, -H "Authorization: ...");
#                  prints the manifest digest, fails on the first non-2xx
#
# Exports after standin_start KIND NAME (NAME upper-cased, "-" becomes "_"):
#   STANDIN_<NAME>_URL            the registry listener as a client sees it
#   STANDIN_<NAME>_<LISTENER>_URL each listener (REGISTRY, API, AUTH, HUB,
#                                 OAUTH, ...), the registry one included
#   STANDIN_<NAME>_UPSTREAM_URL   the Distribution registry behind
#   STANDIN_<NAME>_USER, _PASS    the kind's credentials
#   kind-specific: ecr: _ACCESS_KEY_ID _SECRET_ACCESS_KEY _REGION _ACCOUNT;
#   gar: _KEY_JSON (a service-account key file whose token_uri is the oauth
#   listener) _PROJECT _LOCATION _PUBLIC_KEY; dockerhub/ghcr: _PAT, _ORG;
#   acr: _REFRESH_TOKEN _TENANT _CLIENT_ID _CLIENT_SECRET; gitlab: _TOKEN;
#   quay: _OAUTH_TOKEN.
_STANDINS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
declare -F registry_start >/dev/null || source "$_STANDINS_ROOT/tests/registry.sh"
_STANDINS_PIDS=(${_STANDINS_PIDS[@]+"${_STANDINS_PIDS[@]}"})
declare -A _STANDINS_CONTROL=()

_standins_err() {
    echo "standins.sh: error: $*" >&2
    return 1
}

# A random secret of letters and digits (length $1, default 24).
_standins_secret() {
    local n=${1:-24} p=""
    while ((${#p} < n)); do
        p+=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    done
    echo "${p:0:n}"
}

standin_start() {
    local kind=${1:?usage: standin_start KIND NAME DIR [ARGS...]} name=${2:?usage: standin_start KIND NAME DIR}
    local dir=${3:?usage: standin_start KIND NAME DIR}
    shift 3
    local var up upvar storage pass pid i ports listener port extra=() lvar
    [[ -f $_STANDINS_ROOT/tests/standins/$kind.py ]] || { _standins_err "unknown kind '$kind'"; return 1; }
    command -v jq >/dev/null 2>&1 || { _standins_err "jq is missing (package jq)"; return 1; }
    var=STANDIN_$(echo "$name" | tr 'a-z-' 'A-Z_')
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd) || return 1
    registry_start "standin-$name" "$dir/upstream" none || return 1
    upvar=REG_STANDIN_$(echo "$name" | tr 'a-z-' 'A-Z_')
    up=${upvar}_URL
    up=${!up}
    storage=${upvar}_STORAGE
    storage=${!storage}
    pass=$(_standins_secret 20)
    export "${var}_USER=replica" "${var}_PASS=$pass" "${var}_UPSTREAM_URL=$up"
    case $kind in
    ecr)
        export "${var}_ACCESS_KEY_ID=AKIA$(_standins_secret 16 | tr '[:lower:]' '[:upper:]')" \
            "${var}_SECRET_ACCESS_KEY=$(_standins_secret 40)" "${var}_REGION=us-east-1" \
            "${var}_ACCOUNT=123456789012"
        lvar=${var}_ACCESS_KEY_ID; extra+=(--access-key-id "${!lvar}")
        lvar=${var}_SECRET_ACCESS_KEY; extra+=(--secret-access-key "${!lvar}")
        extra+=(--region us-east-1 --account 123456789012)
        ;;
    gar)
        export "${var}_PROJECT=replica-test" "${var}_LOCATION=us" \
            "${var}_PUBLIC_KEY=$_STANDINS_ROOT/tests/fixtures/keys/gar-sa.pub.pem"
        extra+=(--public-key "$_STANDINS_ROOT/tests/fixtures/keys/gar-sa.pub.pem"
                --project replica-test --location us
                --client-email replica@replica-test.iam.gserviceaccount.com --repository-required)
        ;;
    dockerhub | ghcr)
        if [[ $kind == ghcr ]]; then lvar=ghp_; else lvar=dckr_pat_; fi
        export "${var}_PAT=$lvar$(_standins_secret 36)" "${var}_ORG=replica-org"
        lvar=${var}_PAT; extra+=(--pat "${!lvar}" --org replica-org)
        ;;
    quay)
        export "${var}_OAUTH_TOKEN=$(_standins_secret 40)"
        lvar=${var}_OAUTH_TOKEN; extra+=(--oauth-token "${!lvar}")
        ;;
    gitlab)
        export "${var}_TOKEN=glpat-$(_standins_secret 20)"
        lvar=${var}_TOKEN; extra+=(--pat "${!lvar}")
        ;;
    acr)
        export "${var}_TENANT=00000000-0000-0000-0000-0000000000aa" \
            "${var}_CLIENT_ID=11111111-2222-3333-4444-555555555555" \
            "${var}_CLIENT_SECRET=$(_standins_secret 32)"
        lvar=${var}_CLIENT_ID; extra+=(--client-id "${!lvar}")
        lvar=${var}_CLIENT_SECRET; extra+=(--client-secret "${!lvar}")
        lvar=${var}_TENANT; extra+=(--tenant "${!lvar}")
        ;;
    esac
    rm -f "$dir/ports.json"
    PYTHONDONTWRITEBYTECODE=1 python3 "$_STANDINS_ROOT/tests/standins/$kind.py" --upstream "$up" --upstream-storage "$storage" \
        --port-file "$dir/ports.json" --user replica --password "$pass" "${extra[@]}" "$@" \
        </dev/null >"$dir/standin.log" 2>&1 &
    pid=$!
    _STANDINS_PIDS+=("$pid")
    _REGISTRY_PIDS+=("$pid")   # so that registry_stop_all stops it too
    for ((i = 0; i < 100; i++)); do
        [[ -s $dir/ports.json ]] && break
        _servers_alive "$pid" || break
        sleep 0.1
    done
    [[ -s $dir/ports.json ]] || { _standins_err "$kind stand-in did not come up (see $dir/standin.log)"; return 1; }
    ports=$(<"$dir/ports.json")
    for listener in $(jq -r 'keys[]' <<<"$ports"); do
        port=$(jq -r --arg l "$listener" '.[$l]' <<<"$ports")
        for ((i = 0; i < 100; i++)); do
            [[ $(_registry_status "http://127.0.0.1:$port/_standin/health") == 200 ]] && break
            sleep 0.05
        done
        export "${var}_$(echo "$listener" | tr 'a-z-' 'A-Z_')_URL=http://127.0.0.1:$port"
    done
    lvar=${var}_REGISTRY_URL
    export "${var}_URL=${!lvar}"
    _STANDINS_CONTROL[$name]=${!lvar}
    if [[ $kind == gar ]]; then
        lvar=${var}_OAUTH_URL
        jq --arg uri "${!lvar}/token" '.token_uri = $uri' \
            "$_STANDINS_ROOT/tests/fixtures/keys/gar-sa.json" >"$dir/gar-sa.json"
        export "${var}_KEY_JSON=$dir/gar-sa.json"
    fi
    if [[ $kind == acr ]]; then
        lvar=${var}_URL
        export "${var}_REFRESH_TOKEN=$(curl -sf "${!lvar}/_standin/refresh-token" | jq -r .refresh_token)"
    fi
}

standin_control() {
    local name=${1:?usage: standin_control NAME KEY=VALUE...} url q
    shift
    url=${_STANDINS_CONTROL[$name]:-}
    [[ -n $url ]] || { _standins_err "stand-in $name is not started"; return 1; }
    q=$(IFS='&'; echo "$*")
    curl -sf -X POST "$url/_standin/control?$q"
}

standin_stop_all() {
    local pid
    for pid in ${_STANDINS_PIDS[@]+"${_STANDINS_PIDS[@]}"}; do
        _servers_stop_pid "$pid"
    done
    _STANDINS_PIDS=()
    registry_stop_all
}

# Print the Location of an upload started with curl args "$@" (URL last).
_standins_location() {
    curl -s -D - -o /dev/null -X POST "$@" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p'
}

standin_push() {
    local url=${1:?usage: standin_push URL REPO TAG [CURL_ARGS...]} repo=${2:?} tag=${3:?}
    shift 3
    local layer config ld cd loc sep manifest st
    layer="layer $repo:$tag $(date +%s%N)"
    ld=sha256:$(printf '%s' "$layer" | sha256sum | cut -d' ' -f1)
    config='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cd=sha256:$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
    for blob in "$layer" "$config"; do
        loc=$(_standins_location "$@" "$url/v2/$repo/blobs/uploads/")
        [[ -n $loc ]] || { _standins_err "no upload Location for $repo"; return 1; }
        [[ $loc == /* ]] && loc=$url$loc
        sep='?'; [[ $loc == *\?* ]] && sep='&'
        local d=$ld; [[ $blob == "$config" ]] && d=$cd
        st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$@" -H 'Content-Type: application/octet-stream' \
            --data-binary "$blob" "$loc${sep}digest=${d/:/%3A}")
        [[ $st == 201 ]] || { _standins_err "blob PUT for $repo answered $st"; return 1; }
    done
    manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
        "$cd" "${#config}" "$ld" "${#layer}")
    st=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$@" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "$manifest" "$url/v2/$repo/manifests/$tag")
    [[ $st == 201 ]] || { _standins_err "manifest PUT for $repo:$tag answered $st"; return 1; }
    echo "sha256:$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)"
}

# Chain onto an EXIT trap set before this file was sourced.
if [[ $(trap -p EXIT) != *_standins_exit* ]]; then
    _STANDINS_PREV_TRAP=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
    trap _standins_exit EXIT
fi
_standins_exit() {
    standin_stop_all
    if [[ -n ${_STANDINS_PREV_TRAP:-} ]]; then eval "$_STANDINS_PREV_TRAP"; fi
}
