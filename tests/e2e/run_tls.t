#!/usr/bin/env bash
# replica run over TLS, against Distribution registries serving certificates
# of a CA made at test time: trusted with --from-ca/--to-ca the copy is
# exact; without the CA, or with another CA, a side fails with "tls", naming
# its host and port, and nothing is copied; --from-insecure/--to-insecure
# works and warns. A registry that requires client certificates (mTLS)
# refuses a run without one, saying so, and takes one with
# --to-cert/--to-key (or --from-cert/--from-key), and a certificate of
# another CA, saying so too; with --executor faas the CA, certificate and
# key paths travel in the invocation and the function presents them. Through nginx with HTTP/2
# in front of each registry, a run multiplexes: all its requests to a side
# share one or two TCP connections, many streams at once on one (the same
# run through nginx without http2 opens dozens of connections, one request
# at a time on each).
set -euo pipefail
source "$(dirname "$0")/../lib/function.sh"
source "$ROOT/tests/lib/tlsproxy.sh"

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

# same_content URL NS [E2E_TLS [SEEDED]]: how many seeded tags (SEEDED:
# seed's lines, default $expected) are not under NS/ on the registry at URL
# with the source's digest (0: the copy is exact).
same_content() {
    local url=$1 ns=$2 ref want got bad=0
    while read -r ref want; do
        got=$(E2E_TLS=${3:-$CA} manifest_digest "$url" "$ns/${ref%%:*}" "${ref#*:}")
        [[ $got == "$want" ]] || { bad=$((bad + 1)); diag "$ns/$ref: $got, want $want" >&2; }
    done <<<"${4:-$expected}"
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

tls_cert "$W" stranger "$W/other" client
replica_run --from "$S" --to "$M" --repo 'lib/**' --from-ca "$CA" --to-ca "$CA" \
    --to-cert "$W/stranger.pem" --to-key "$W/stranger.key"
is "$RC" 1 "a client certificate of another CA is refused"
like "$OUT" "FAILED lib/app:v1,v2  stage push_prepare: GET https://$(host_of "$M")/v2/: tls \(the server did not accept the client certificate" \
    "with tls, naming the host and saying why"

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

fn_start fn
replica_run --from "$S" --to "$M" --repo 'lib/**' --dest-namespace faas --from-ca "$CA" --to-ca "$CA" \
    --to-cert "$REG_MTLS_CERT" --to-key "$REG_MTLS_KEY" \
    --executor faas --gateway "$FN_URL/" --seal-key-file "$FN_KEY" --function-token-file <(printf '%s' "$FN_TOKEN")
is "$RC" 0 "--executor faas: the function presents the client certificate named in the invocation"
is "$(same_content "$M" faas "$mtls_creds")" 0 "and its copy on the mTLS registry is exact"

# --- HTTP/2 through nginx: multiplexing ----------------------------------------
# Plain-HTTP registries, each behind nginx serving TLS, with http2 (h2) and
# without (h1, the control). conn_stats LOG prints, from a tlsproxy access
# log: requests, TCP connections (distinct $connection), the protocols seen,
# and the most requests under way at once on one connection (from each
# request's start and end, in ms).
conn_stats() {
    awk '{ n++; conns[$1]++; protos[$3]++; c[n] = $1; e[n] = $4 * 1000; b[n] = e[n] - $5 * 1000 }
        END {
            for (k in conns) nc++
            for (p in protos) ps = ps (ps ? "," : "") p
            for (i = 1; i <= n; i++) {
                k = 1
                for (j = 1; j <= n; j++) if (j != i && c[j] == c[i] && b[j] <= b[i] && b[i] < e[j]) k++
                if (k > most) most = k
            }
            print n + 0, nc + 0, ps, most + 0
        }' "$1"
}
registry_start hsrc "$W/hsrc"
registry_start hdst "$W/hdst"
tlsproxy_start h2src "$REG_HSRC_URL" "$W/regs"
tlsproxy_start h2dst "$REG_HDST_URL" "$W/regs"
tlsproxy_start h1src "$REG_HSRC_URL" "$W/regs" http1
tlsproxy_start h1dst "$REG_HDST_URL" "$W/regs" http1
seeded=$(for i in 1 2 3 4 5 6 7 8; do seed "$REG_HSRC_URL" "team/app$i" v1,v2 oci 3 131072; done)

replica_run --from "$TLSPROXY_H2SRC_URL" --to "$TLSPROXY_H2DST_URL" --repo 'team/**' --dest-namespace h2 --jobs 8 \
    --from-ca "$CA" --to-ca "$CA"
is "$RC" 0 "a run of 8 repositories through nginx with HTTP/2 succeeds"
is "$(same_content "$REG_HDST_URL" h2 "" "$seeded")" 0 "and its copy is exact"
for side in src dst; do
    log=TLSPROXY_H2${side^^}_LOG
    read -r requests connections protocols most < <(conn_stats "${!log}")
    diag "h2, the $side side: $requests requests on $connections connections ($protocols), at most $most at once on one"
    is "$protocols" HTTP/2.0 "$side side: every request came over HTTP/2"
    ok "$((connections >= 1 && connections <= 2 ? 0 : 1))" "$side side: on one or two TCP connections ($connections)"
    ok "$((requests > 10 * connections ? 0 : 1))" "$side side: more than 10 requests per connection ($requests on $connections)"
    ok "$((most >= 4 ? 0 : 1))" "$side side: with streams under way at once on one connection ($most): multiplexed"
done

replica_run --from "$TLSPROXY_H1SRC_URL" --to "$TLSPROXY_H1DST_URL" --repo 'team/**' --dest-namespace h1 --jobs 8 \
    --from-ca "$CA" --to-ca "$CA"
is "$RC" 0 "the same run through nginx without http2 succeeds"
for side in src dst; do
    log=TLSPROXY_H1${side^^}_LOG
    read -r requests connections protocols most < <(conn_stats "${!log}")
    diag "h1, the $side side: $requests requests on $connections connections ($protocols), at most $most at once on one"
    is "$protocols" HTTP/1.1 "the control, $side side: HTTP/1.1"
    ok "$((connections > 2 && most < 4 ? 0 : 1))" \
        "the control, $side side: the checks above fail without multiplexing ($connections connections, $most at once)"
done

done_testing
