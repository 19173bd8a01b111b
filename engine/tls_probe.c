/* tls_probe.c - notes, during a connection's TLS handshake, that the server
 * asked for a client certificate, and whether the client had one
 * (tls_probe.h).
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
    int asked;    /* the server sent a CertificateRequest */
    int had_cert; /* and the client had a certificate to send */
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

/* OpenSSL calls this on a client when the server asks for a certificate,
 * before one is chosen: the probe notes it and whether there is one, and
 * the handshake goes on (a server that only offers mTLS still accepts a
 * connection without one). */
static int on_cert_request(SSL *ssl, void *arg)
{
    (void)arg;
    struct tls_probe *p = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), probe_index);
    if (p) {
        p->asked = 1;
        p->had_cert = SSL_get_certificate(ssl) != NULL;
    }
    return 1;
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
    SSL_CTX_set_cert_cb(sslctx, on_cert_request, NULL);
    tls_probe_release(r); /* a redirect's second connection replaces the first's */
    r->tls_probe = p;
    return CURLE_OK;
}

int tls_probe_install(struct http_req *r)
{
    CURLcode rc = curl_easy_setopt(r->easy, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    if (rc == CURLE_NOT_BUILT_IN || rc == CURLE_UNKNOWN_OPTION)
        return 0; /* a libcurl on another TLS library: no probe, plain "closed" */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(r->easy, CURLOPT_SSL_CTX_DATA, r);
    return rc == CURLE_OK ? 0 : -1;
}

/* A server's refusal of the client's certificate comes right after the
 * handshake; a failure later than this is something else. */
#define REFUSAL_WINDOW_US 2000000

void tls_probe_explain(struct http_req *r)
{
    if (!r->tls_probe || !r->tls_probe->asked || r->status != 0 ||
        (r->err != HTTP_ECLOSED && r->err != HTTP_ETLS))
        return;
    /* No handshake time: the connection died before libcurl saw the
     * handshake end, after the server's request for a certificate. */
    curl_off_t handshake = 0, total = 0;
    if (curl_easy_getinfo(r->easy, CURLINFO_APPCONNECT_TIME_T, &handshake) != CURLE_OK ||
        curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME_T, &total) != CURLE_OK ||
        (handshake > 0 && total - handshake > REFUSAL_WINDOW_US))
        return;
    char was[CURL_ERROR_SIZE];
    snprintf(was, sizeof(was), "%s", r->errbuf);
    r->err = HTTP_ETLS;
    snprintf(r->errbuf, sizeof(r->errbuf), "%s%s%.150s%s",
             r->tls_probe->had_cert ? "the server did not accept the client certificate"
                                    : "the server asked for a client certificate and none is configured",
             was[0] ? " (" : "", was, was[0] ? ")" : "");
}

void tls_probe_release(struct http_req *r)
{
    probe_unref(r->tls_probe);
    r->tls_probe = NULL;
}
