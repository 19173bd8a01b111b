#!/usr/bin/env bash
# Registry kinds in replica serve: GET /kinds lists the kinds of the script
# roots with their credential fields; a registry names its kind, which must
# load; a kind's own credential fields are write-only and sealed at rest
# (the view names them only); fields a kind does not take are refused; and
# an execution speaks to each side as its registry's kind says (here a kind
# from an operator's --scripts root, tests/lib/tenantreg.sh: a registry
# that wants a tenant header and a namespace created first).
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
source "$ROOT/tests/lib/tenantreg.sh"

registry_start src "$E2E_WORK/src"
registry_start back "$E2E_WORK/back"
S=$REG_SRC_URL
want_app=$(seed "$S" team/app v1 oci 2 4096 serve-kind | sed -n 's|^team/app:v1 ||p')
tenantreg_start t-serve mirror 'tenant-pw-0123456789' "$REG_BACK_URL"
trap 'kill $TPID 2>/dev/null || true; _serve_cleanup' EXIT
tenantreg_kind "$E2E_WORK/kinds-root"

serve_start kinds --scripts "$E2E_WORK/kinds-root"
api GET /kinds
is "$STATUS" 200 "GET /kinds"
is "$(jget '[.[].name] | sort | join(",")' | tr ',' '\n' | grep -c -x -e distribution -e harbor -e tenantreg)" 3 \
    "it lists the bundled kinds and the one of the operator's root"
is "$(jget '.[] | select(.name == "tenantreg") | [.credentials[] | .name + (if .required then "!" else "" end)] | join(",")')" \
    "username,password,tenant!" "with the credential fields each takes (and which are required)"
is "$(jget '.[] | select(.name == "harbor") | .credentials[] | select(.name == "password") | .secret')" true \
    "and which are secret"

api POST /registries "$(registry_json bogus "$T" '"kind": "nosuchkind"')"
is "$STATUS" 400 "a registry of a kind that does not exist is refused"
like "$(jget .error)" "no registry kind named 'nosuchkind'" "naming it"
api POST /registries "$(registry_json t "$T" '"kind": "tenantreg", "username": "mirror", "password": "tenant-pw-0123456789", "credentials": {"colour": "blue"}')"
is "$STATUS" 400 "a credential field the kind does not take is refused"
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json t "$T" '"kind": "tenantreg", "username": "mirror", "password": "tenant-pw-0123456789", "credentials": {"tenant": "t-wrong"}')"
is "$STATUS:$(jget .kind)" "201:tenantreg" "a registry of the operator's kind"
T_ID=$(jget .id)
is "$(jget '.credentials_set | join(",")')" tenant "the view names the fields that are set"
unlike "$BODY" "t-wrong" "but never their values"
if grep -a -q "t-wrong" "$SERVE_DB" "$SERVE_DB-wal" 2>/dev/null; then clear=yes; else clear=no; fi
is "$clear" no "the kind's credentials are sealed at rest"
api POST "/registries/$T_ID/ping"
is "$(jget .ok)" false "ping with the wrong tenant fails"
like "$(jget .error)" "unknown tenant" "with the registry's reason"
api PUT "/registries/$T_ID" '{"credentials": {"tenant": "t-serve"}}'
is "$STATUS" 200 "the tenant is changed"
api POST "/registries/$T_ID/ping"
is "$(jget .ok)" true "and ping succeeds with the stored credentials"

api POST /policies "{\"name\": \"labelled\", \"source_registry\": $SRC_ID, \"target_registry\": $T_ID, \"repositories\": [\"team/app\"], \"labels\": [\"release\"]}"
is "$STATUS:$(jget '.labels | join(",")')" "201:release" "a policy keeps a label filter"
LP=$(jget .id)
api POST "/policies/$LP/executions"
LE=$(jget .id)
wait_exec "$LE" Succeeded Failed Stopped
is "$(jget .status)" Failed "a label filter on a source whose kind has no labels fails the execution"
like "$(jget .error)" "cannot filter by label" "saying why"
api POST /policies "{\"name\": \"to-tenant\", \"source_registry\": $SRC_ID, \"target_registry\": $T_ID, \"repositories\": [\"team/app\"]}"
PID=$(jget .id)
api POST "/policies/$PID/executions"
E=$(jget .id)
wait_exec "$E" Succeeded Failed Stopped
is "$(jget .status)" Succeeded "an execution into the operator's kind succeeds"
is "$(manifest_digest "$REG_BACK_URL" team/app v1)" "$want_app" "the image landed with the source digest"
api GET "/executions/$E/tasks"
is "$(jget '.[0].stages[3].output.namespace.created')" true "push_prepare created the namespace through the kind"
if grep -r -q -e "tenant-pw-0123456789" -e "t-serve" "$SERVE_LOG" "$SERVE_OUT"; then leaked=yes; else leaked=no; fi
is "$leaked" no "no credential reaches the daemon's log"
api GET "/tasks/$(jget '.[0].id')/log"
unlike "$BODY" "tenant-pw-0123456789" "nor the task log"

serve_stop
done_testing
