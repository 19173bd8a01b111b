/* tls_probe.c - notes, during a connection's TLS handshake, that the server
 * asked for a client certificate the client did not have (tls_probe.h).
 *
 * The note lives in a small cell shared by the request that opened the
 * connection and the connection's SSL_CTX: each holds one reference, the
 * request until it is freed, the SSL_CTX until libcurl frees it (through
 * the ex_data free callback), so neither side ever points at freed memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "tls_probe.h"

struct tls_probe {
    int refs;
    int asked; /* the server sent a CertificateRequest and no certificate was set */
};

static int probe_index = -1; /* the SSL_CTX ex_data slot of the probe */

/* Drops one reference to p, freeing it with the last. */
static void probe_unref(struct tls_probe *p)
{
    if (p && --p->refs == 0)
        free(p);
}

/* ex_data free callback: the SSL_CTX's reference ends with it. */
static void probe_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    probe_unref(ptr);
}

/* OpenSSL calls this when the server asks for a client certificate and
 * none is set: the probe notes it, and the handshake goes on without one
 * (a server that only offers mTLS still accepts the connection). */
static int on_cert_request(SSL *ssl, X509 **x509, EVP_PKEY **pkey)
{
    (void)x509, (void)pkey;
    struct tls_probe *p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), probe_index);
    if (p)
        p->asked = 1;
    return 0;
}

/* CURLOPT_SSL_CTX_FUNCTION: runs for each connection the request opens,
 * before its handshake. A failure here only leaves the connection
 * unwatched. */
static CURLcode on_ssl_ctx(CURL *easy, void *sslctx, void *ud)
{
    (void)easy;
    struct http_req *r = ud;
    if (probe_index < 0)
        probe_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, probe_ex_free);
    struct tls_probe *p = probe_index < 0 ? NULL : calloc(1, sizeof(*p));
    if (!p)
        return CURLE_OK;
    p->refs = 2;
    if (!SSL_CTX_set_ex_data(sslctx, probe_index, p)) {
        free(p);
        return CURLE_OK;
    }
    SSL_CTX_set_client_cert_cb(sslctx, on_cert_request);
    tls_probe_release(r); /* a redirect's second connection replaces the first's */
    r->tls_probe = p;
    return CURLE_OK;
}

int tls_probe_install(struct http_req *r)
{
    CURLcode rc = curl_easy_setopt(r->easy, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(r->easy, CURLOPT_SSL_CTX_DATA, r);
    return rc == CURLE_OK ? 0 : -1;
}

void tls_probe_explain(struct http_req *r)
{
    if (!r->tls_probe || !r->tls_probe->asked || r->status != 0 ||
        (r->err != HTTP_ECLOSED && r->err != HTTP_ETLS))
        return;
    char was[CURL_ERROR_SIZE];
    snprintf(was, sizeof(was), "%s", r->errbuf);
    r->err = HTTP_ETLS;
    snprintf(r->errbuf, sizeof(r->errbuf),
             "the server asked for a client certificate and none is configured%s%.160s%s",
             was[0] ? " (" : "", was, was[0] ? ")" : "");
}

void tls_probe_release(struct http_req *r)
{
    probe_unref(r->tls_probe);
    r->tls_probe = NULL;
}
