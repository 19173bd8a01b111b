# shellcheck shell=bash
# tests/lib/kindtest.sh - what the registry kinds' end-to-end tests share,
# on top of tests/lib/e2e.sh (or serve.sh: api, jget) and tests/standins.sh
# (standin_start): the Distribution registries and the two images each test
# copies; for `replica serve`, wiring a kind's registry and event policy and
# waiting for executions and webhook events (polling, each wait bounded by
# SETTLE_TIMEOUT seconds, default 60); reading a stand-in's request record.
#   kind_registries [src] [dst] the registries src and dst: S and D their URLs
#   kind_images NS SEED [TAGS] [MULTI]
#                           NS/app (a plain image) and NS/multi (an index) on S
#   settled POLICY N        wait until POLICY has N executions, all finished
#   events_matched N        wait until serve has matched N webhook events
#   kind_wire NAME SOURCE FILTER REGISTRY_JSON [POLICY_JSON]
#                           a registry and an event policy replicating deletions
#   exec_error ID           the errors of execution ID's failed tasks
#   standin_records NAME, standin_clear NAME, standin_calls NAME JQ_FILTER
#                           a stand-in's request record
#   retry_waited NAME       how long the client waited after the first fault

# kind_registries NAME...: starts the Distribution registries NAME (src, dst;
# default both), each under $E2E_WORK/NAME; sets S (src) and D (dst).
# shellcheck disable=SC2034  # S and D are for the caller
kind_registries() {
    local name
    (($#)) || set -- src dst
    for name in "$@"; do
        registry_start "$name" "$E2E_WORK/$name"
        case $name in
        src) S=$REG_SRC_URL ;;
        dst) D=$REG_DST_URL ;;
        esac
    done
}

# kind_images NS SEED [TAGS] [MULTI]: seeds on S the plain image NS/app
# (tags TAGS, default v1; two 4 KiB layers) and the index NS/multi (or NS/MULTI)
# v1, their content drawn from SEED; sets want_app and want_multi to the
# digests of their v1.
# shellcheck disable=SC2034  # want_app and want_multi are for the caller
kind_images() {
    local ns=$1 seed=$2 tags=${3:-v1} multi=${4:-multi}
    want_app=$(seed "$S" "$ns/app" "$tags" oci 2 4096 "$seed" | sed -n "s|^$ns/app:v1 ||p")
    want_multi=$(seed "$S" "$ns/$multi" v1 oci-index 2 4096 "$seed" | sed -n "s|^$ns/$multi:v1 ||p")
}

# settled POLICY N: waits until policy POLICY has at least N executions and
# none is Pending or Running; their list (newest first) is left in $BODY.
# Returns 1, with a comment on stderr, when that does not happen in time.
settled() {
    local policy=$1 n=$2 count busy end=$((SECONDS + ${SETTLE_TIMEOUT:-60}))
    while ((SECONDS < end)); do
        api GET "/executions?policy=$policy"
        if [[ $STATUS == 200 ]]; then
            count=$(jget length)
            busy=$(jget '[.[] | select(.status == "Pending" or .status == "Running")] | length')
            ((count >= n && busy == 0)) && return 0
        fi
        sleep 0.05
    done
    echo "# policy $policy did not settle with $n executions: $BODY" >&2
    return 1
}

# events_matched N: waits until at least N of the webhook events serve
# received (the last 500) were matched to policies, so that the executions
# they make exist. Returns 1, with a comment on stderr, when not in time.
events_matched() {
    local n=$1 got=0 end=$((SECONDS + ${SETTLE_TIMEOUT:-60}))
    while ((SECONDS < end)); do
        api GET "/events/received?page_size=500"
        [[ $STATUS == 200 ]] && got=$(jget '[.[] | select(.status == "matched")] | length')
        ((got >= n)) && return 0
        sleep 0.05
    done
    echo "# $got webhook events matched, not $n" >&2
    return 1
}

# kind_wire NAME SOURCE FILTER REGISTRY_JSON [POLICY_JSON]: creates the
# registry NAME (REGISTRY_JSON: its url, kind, credentials, options) and the
# event policy to-NAME from registry id SOURCE to it, for the repository
# filter FILTER, replicating deletions (POLICY_JSON adds or overrides fields:
# dest_namespace, flatten). Sets WIRED_REGISTRY and WIRED_POLICY to their
# ids; returns 1, with the answer on stderr, when a create fails.
# shellcheck disable=SC2034  # WIRED_REGISTRY and WIRED_POLICY are for the caller
kind_wire() {
    local name=$1 source=$2 filter=$3 reg=$4 pol=${5:-"{}"}
    api POST /registries "$(jq -c --arg n "$name" '. + {name: $n}' <<<"$reg")"
    if [[ $STATUS != 201 ]]; then
        echo "# kind_wire: registry $name: $STATUS $BODY" >&2
        return 1
    fi
    WIRED_REGISTRY=$(jget .id)
    api POST /policies "$(jq -c --arg n "to-$name" --arg f "$filter" --argjson s "$source" --argjson t "$WIRED_REGISTRY" \
        '{name: $n, source_registry: $s, target_registry: $t, repositories: [$f], trigger: "event",
          replicate_deletion: true} + .' <<<"$pol")"
    if [[ $STATUS != 201 ]]; then
        echo "# kind_wire: policy to-$name: $STATUS $BODY" >&2
        return 1
    fi
    WIRED_POLICY=$(jget .id)
}

# exec_error ID: prints the errors of execution ID's failed tasks, joined
# with "; ".
exec_error() {
    api GET "/executions/$1/tasks?status=Failed"
    jget '[.[].error] | join("; ")'
}

# _kindtest_standin NAME: prints the URL of the stand-in NAME (started with
# standin_start), or fails naming it.
_kindtest_standin() {
    local url=${_STANDINS_CONTROL[$1]:-}
    [[ -n $url ]] || { echo "kindtest.sh: stand-in $1 is not started" >&2; return 1; }
    echo "$url"
}

# standin_records NAME: prints the stand-in's request record (JSON, every
# listener's requests).
standin_records() {
    local url
    url=$(_kindtest_standin "$1") || return 1
    curl -s "$url/_standin/requests"
}

# standin_clear NAME: clears the stand-in's request record.
standin_clear() {
    local url
    url=$(_kindtest_standin "$1") || return 1
    curl -s -X DELETE "$url/_standin/requests" >/dev/null
}

# standin_calls NAME JQ_FILTER: prints "METHOD LISTENER PATH STATUS" of each
# recorded request that JQ_FILTER selects, joined with ";".
standin_calls() {
    standin_records "$1" | jq -r "[.[] | select($2) | \"\(.method) \(.listener) \(.path) \(.status)\"] | join(\";\")"
}

# retry_waited NAME: prints the seconds (2 decimals) between the first request
# the stand-in NAME answered with a fault (standin_control NAME fail_next=...)
# and the next request to the same path, the client's retry.
retry_waited() {
    standin_records "$1" | jq '(map(select(.fault)) | .[0]) as $f
        | [.[] | select(.path == $f.path and (.fault | not))][0].time - $f.time | . * 100 | round / 100'
}
