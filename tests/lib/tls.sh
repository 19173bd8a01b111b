# shellcheck shell=bash
# tests/lib/tls.sh - certificates made at test time with openssl: a test CA,
# and server or client certificates it signs. tests/servers.sh (nginx) and
# tests/registry.sh (Distribution over TLS) use it; so may a test.
#
#   tls_ca DIR NAME            a fresh CA: DIR/NAME.pem and DIR/NAME.key
#   tls_cert DIR NAME CA KIND  DIR/NAME.pem and DIR/NAME.key signed by the CA
#                              CA.pem/CA.key (CA is the path without .pem);
#                              KIND server: for 127.0.0.1 and localhost;
#                              KIND client: a client certificate, CN=NAME
# Both log openssl's output to DIR/openssl.log and fail with a line on stderr.
[[ -n ${_TLS_LOADED:-} ]] && return 0
_TLS_LOADED=1

# tls_ca DIR NAME: a self-signed P-256 CA valid for 7 days, "replica test
# CA NAME" (the name "ca" keeps servers.sh's "replica test CA").
tls_ca() {
    local dir=$1 name=$2 cn="replica test CA"
    [[ $name == ca ]] || cn="replica test CA $name"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name.key" -out "$dir/$name.pem" -days 7 -subj "/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" >>"$dir/openssl.log" 2>&1 ||
        { echo "tls.sh: error: CA $name: generation failed, see $dir/openssl.log" >&2; return 1; }
}

# tls_cert DIR NAME CA KIND: a P-256 certificate signed by CA, valid for
# 7 days, for a server (KIND server) or a client (KIND client).
tls_cert() {
    local dir=$1 name=$2 ca=$3 kind=$4 cn usage
    case $kind in
    server) cn=127.0.0.1 usage=serverAuth ;;
    client) cn=$name usage=clientAuth ;;
    *) echo "tls.sh: error: tls_cert: KIND is server or client, not '$kind'" >&2; return 1 ;;
    esac
    {
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=$usage" \
            "subjectKeyIdentifier=hash" \
            "authorityKeyIdentifier=keyid:always" >"$dir/$name.ext" &&
        if [[ $kind == server ]]; then echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >>"$dir/$name.ext"; fi &&
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$cn" &&
        openssl x509 -req -in "$dir/$name.csr" -CA "$ca.pem" -CAkey "$ca.key" \
            -CAcreateserial -days 7 -extfile "$dir/$name.ext" -out "$dir/$name.pem"
    } >>"$dir/openssl.log" 2>&1 ||
        { echo "tls.sh: error: certificate $name: generation failed, see $dir/openssl.log" >&2; return 1; }
}
