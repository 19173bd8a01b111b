#!/usr/bin/env bash
# replica run over TLS, against Distribution registries serving certificates
# of a CA made at test time: trusted with --from-ca/--to-ca the copy is
# exact; without the CA, or with another CA, a side fails with "tls", naming
# its host and port, and nothing is copied; --from-insecure/--to-insecure
# works and warns.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

W=$E2E_WORK
tls_ca "$W" regs   # signs the registries' certificates
tls_ca "$W" other  # another CA, trusted by nobody here
TEST_REGISTRY_TLS=$W/regs registry_start src "$W/src"
TEST_REGISTRY_TLS=$W/regs registry_start dst "$W/dst"
S=$REG_SRC_URL D=$REG_DST_URL CA=$W/regs.pem
is "${S%%://*}:${D%%://*}" "https:https" "the registries serve HTTPS only"

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

done_testing
