#!/usr/bin/env bash
# replica run over TLS, against Distribution registries serving certificates
# of a CA made at test time: trusted with --from-ca/--to-ca the copy is
# exact; without the CA, or with another CA, a side fails with "tls", naming
# its host and port, and nothing is copied; --from-insecure/--to-insecure
# works and warns. A registry that requires client certificates (mTLS)
# refuses a run without one, saying so, and takes one with
# --to-cert/--to-key (or --from-cert/--from-key).
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

W=$E2E_WORK
tls_ca "$W" regs   # signs the registries' certificates
tls_ca "$W" other  # another CA, trusted by nobody here
tls_ca "$W" users  # signs the client certificates the mTLS registry accepts
TEST_REGISTRY_TLS=$W/regs registry_start src "$W/src"
TEST_REGISTRY_TLS=$W/regs registry_start dst "$W/dst"
TEST_REGISTRY_TLS=$W/regs TEST_REGISTRY_CLIENT_CA=$W/users registry_start mtls "$W/mtls"
S=$REG_SRC_URL D=$REG_DST_URL M=$REG_MTLS_URL CA=$W/regs.pem
is "${S%%://*}:${D%%://*}:${M%%://*}" "https:https:https" "the registries serve HTTPS only"

expected=$(E2E_TLS=$CA seed "$S" lib/app v1,v2 oci 2 4096 && E2E_TLS=$CA seed "$S" lib/multi v1 oci-index)

# same_content URL NS [E2E_TLS]: how many seeded tags are not under NS/ on
# the registry at URL with the source's digest (0: the copy is exact).
same_content() {
    local url=$1 ns=$2 ref want got bad=0
    while read -r ref want; do
        got=$(E2E_TLS=${3:-$CA} manifest_digest "$url" "$ns/${ref%%:*}" "${ref#*:}")
        [[ $got == "$want" ]] || { bad=$((bad + 1)); diag "$ns/$ref: $got, want $want" >&2; }
    done <<<"$expected"
    echo "$bad"
}

replica_run --from "$S" --to "$D" --repo 'lib/**' --dest-namespace ca --from-ca "$CA" --to-ca "$CA"
is "$RC" 0 "with --from-ca and --to-ca the run succeeds"
like "$OUT" "2/2 repositories succeeded; tags: 3 pushed" "and pushes every tag"
is "$(same_content "$D" ca)" 0 "every target tag has the source's digest"
is "$(E2E_TLS=$CA tag_list "$D" ca/lib/app | paste -sd,)" "v1,v2" "and no other tag"

host_of() { local h=${1#*://}; echo "${h%%/*}"; }
replica_run --from "$S" --to "$D" --repo 'lib/**' --dest-namespace noca
is "$RC" 1 "without --from-ca the run fails"
like "$OUT" "GET https://$(host_of "$S")/v2/: tls \(SSL certificate problem: unable to get local issuer certificate\)" \
    "with tls, naming the source's host and port"
replica_run --from "$S" --to "$D" --repo 'lib/**' --dest-namespace noca --from-ca "$CA"
is "$RC" 1 "without --to-ca it fails"
like "$OUT" "FAILED lib/app:v1,v2  stage push_prepare: GET https://$(host_of "$D")/v2/: tls \(SSL certificate problem" \
    "with tls, naming the target's host and port"
replica_run --from "$S" --to "$D" --repo 'lib/**' --dest-namespace noca --from-ca "$W/other.pem" --to-ca "$CA"
is "$RC" 1 "with another CA than the source's it fails"
like "$OUT" "GET https://$(host_of "$S")/v2/: tls \(SSL certificate problem: unable to get local issuer certificate\)" \
    "the same way"
is "$(E2E_TLS=$CA manifest_digest "$D" noca/lib/app v1)" missing "and none of those runs copied anything"

replica_run --from "$S" --to "$D" --repo 'lib/**' --dest-namespace insecure --from-insecure --to-insecure
is "$RC" 0 "--from-insecure and --to-insecure work without the CA"
like "$OUT" "WARN .*--from-insecure: the TLS certificate of $S is not verified" "and warn for the source"
like "$OUT" "WARN .*--to-insecure: the TLS certificate of $D is not verified" "and for the target"
is "$(same_content "$D" insecure)" 0 "the copy is exact"

mtls_creds="$CA $REG_MTLS_CERT $REG_MTLS_KEY"
replica_run --from "$S" --to "$M" --repo 'lib/**' --from-ca "$CA" --to-ca "$CA"
is "$RC" 1 "a target that requires a client certificate refuses a run without one"
like "$OUT" "FAILED lib/app:v1,v2  stage push_prepare: GET https://$(host_of "$M")/v2/: tls \(the server asked for a client certificate and none is configured" \
    "with tls, naming the host and saying why"
is "$(E2E_TLS=$mtls_creds manifest_digest "$M" lib/app v1)" missing "and nothing is pushed"

replica_run --from "$S" --to "$M" --repo 'lib/**' --from-ca "$CA" --to-ca "$CA" --to-cert "$W/nowhere.pem"
is "$RC" 1 "a client certificate that cannot be read fails the run"
like "$OUT" "GET https://$(host_of "$M")/v2/: tls \(could not load PEM client certificate from $W/nowhere.pem" \
    "with tls, naming the host and the file"

replica_run --from "$S" --to "$M" --repo 'lib/**' --from-ca "$CA" --to-ca "$CA" --to-key "$REG_MTLS_KEY"
is "$RC:$OUT" "2:replica run: --to-key needs --to-cert (the client certificate it belongs to)" \
    "a key without its certificate is refused"

replica_run --from "$S" --to "$M" --repo 'lib/**' --dest-namespace mtls --from-ca "$CA" --to-ca "$CA" \
    --to-cert "$REG_MTLS_CERT" --to-key "$REG_MTLS_KEY"
is "$RC" 0 "with --to-cert and --to-key the run succeeds"
is "$(same_content "$M" mtls "$mtls_creds")" 0 "and the copy on the mTLS registry is exact"

replica_run --from "$M" --to "$D" --repo 'mtls/lib/**' --dest-namespace back --flatten 1 --from-ca "$CA" --to-ca "$CA" \
    --from-cert "$REG_MTLS_CERT" --from-key "$REG_MTLS_KEY"
is "$RC" 0 "the mTLS registry as the source, with --from-cert and --from-key, works too"
is "$(same_content "$D" back)" 0 "and its copy is exact"

done_testing
