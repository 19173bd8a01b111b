/* tls_probe.h - what the TLS handshake of a request's connection showed,
 * for a failure that libcurl reports only as a closed connection.
 *
 * A TLS 1.3 server that wants a client certificate learns that it got none
 * only after the client's handshake has finished, so its refusal (an alert,
 * often lost to the reset that follows it) reaches the client at its first
 * read or write, as CURLE_RECV_ERROR or CURLE_SEND_ERROR; so does its
 * refusal of the certificate it got.
 * The probe notes during the handshake that the server asked for a client
 * certificate, and whether the client had one, so such a failure can be
 * reported as "tls" and said plainly.
 */
#ifndef REPLICA_TLS_PROBE_H
#define REPLICA_TLS_PROBE_H

#include "http.h"

/* Installs the probe on r's easy handle (CURLOPT_SSL_CTX_FUNCTION); every
 * connection r opens is watched (with a libcurl on another TLS library than
 * OpenSSL, none is). Returns 0 or -1. */
int tls_probe_install(struct http_req *r);

/* After r's transfer failed with err "closed" (or "tls") and no response,
 * during or within 2 s of the handshake of the connection it opened:
 * when the server had asked for a client certificate, sets err to "tls" and
 * says in errbuf that none was configured, or that the server did not
 * accept the one sent. */
void tls_probe_explain(struct http_req *r);

/* Drops r's share of its probe (the connection keeps its own until libcurl
 * frees the connection's SSL_CTX). Safe to call twice. */
void tls_probe_release(struct http_req *r);

#endif
