#!/usr/bin/env bash
# replica serve with registries over TLS: a registry object names its CA
# (ca_file) and, for a registry that requires client certificates (mTLS),
# its client certificate and key (cert_file, key_file: paths on the
# daemon's machine, stored as paths, never the key). Ping and an execution
# work with them; without the certificate the ping fails with "tls",
# naming the host; a key without its certificate is refused.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

W=$E2E_WORK
tls_ca "$W" regs
tls_ca "$W" users
TEST_REGISTRY_TLS=$W/regs registry_start src "$W/src"
TEST_REGISTRY_TLS=$W/regs TEST_REGISTRY_CLIENT_CA=$W/users registry_start mtls "$W/mtls"
S=$REG_SRC_URL M=$REG_MTLS_URL CA=$W/regs.pem CERT=$REG_MTLS_CERT KEY=$REG_MTLS_KEY
expected=$(E2E_TLS=$CA seed "$S" team/app v1,v2 oci 2 4096 && E2E_TLS=$CA seed "$S" team/multi v1 oci-index)

serve_start tls
api POST /registries "$(registry_json src "$S" "\"ca_file\": \"$CA\"")"
is "$STATUS" 201 "a registry with its CA is created"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json mtls "$M" "\"ca_file\": \"$CA\", \"key_file\": \"$KEY\"")"
is "$STATUS:$(jget .error)" "400:field 'key_file': needs 'cert_file' (the client certificate the key belongs to)" \
    "a client key without its certificate is refused"
api POST /registries "$(registry_json mtls "$M" "\"ca_file\": \"$CA\"")"
is "$STATUS" 201 "the mTLS registry, without a client certificate yet"
MTLS_ID=$(jget .id)

api POST "/registries/$SRC_ID/ping"
is "$(jget .ok)" true "the registry on TLS answers a ping"
api POST "/registries/$MTLS_ID/ping"
is "$(jget .ok)" false "the mTLS registry refuses a ping without a client certificate"
like "$(jget .error)" "https://${M#https://}/v2/: tls \(the server asked for a client certificate and none is configured" \
    "with tls, naming the host and saying why"

api PUT "/registries/$MTLS_ID" "{\"cert_file\": \"$CERT\", \"key_file\": \"$KEY\"}"
is "$STATUS:$(jget .cert_file):$(jget .key_file)" "200:$CERT:$KEY" "a PUT adds the client certificate and key, as paths"
api PUT "/registries/$MTLS_ID" '{"cert_file": null}'
is "$STATUS" 400 "removing the certificate but not its key is refused"
is "$(sqlite3 "$SERVE_DB" "SELECT cert_file || ' ' || key_file FROM registries WHERE id = $MTLS_ID")" "$CERT $KEY" \
    "the database holds the two paths"
is "$(cat "$SERVE_DB"* | grep -c 'PRIVATE KEY' || true)" 0 "and no key material (database, WAL)"
api POST "/registries/$MTLS_ID/ping"
is "$(jget .ok)" true "with them the mTLS registry answers a ping"

api POST /policies "{\"name\": \"mirror\", \"source_registry\": $SRC_ID, \"target_registry\": $MTLS_ID, \"repositories\": [\"team/**\"], \"dest_namespace\": \"mirror\"}"
is "$STATUS" 201 "a policy from the TLS registry to the mTLS one"
api POST "/policies/$(jget .id)/executions"
EID=$(jget .id)
wait_exec "$EID" Succeeded Failed
is "$(jget .status):$(jget .total):$(jget .succeeded)" "Succeeded:2:2" "its execution succeeds, one task per repository"
bad=0
while read -r ref want; do
    got=$(E2E_TLS="$CA $CERT $KEY" manifest_digest "$M" "mirror/${ref%%:*}" "${ref#*:}")
    [[ $got == "$want" ]] || { bad=$((bad + 1)); diag "mirror/$ref: $got, want $want"; }
done <<<"$expected"
is "$bad" 0 "every tag is on the mTLS registry with the source's digest"

done_testing
