/* http.h - asynchronous HTTP on libevent through curl's multi_socket API.
 *
 * A client owns one CURLM plugged into an event_base. Requests are queued per
 * host (scheme://host:port) so that no host sees more than max_per_host
 * requests at once, and no more than max_total run in all; the rest wait in
 * FIFO order per host. Completion is reported through
 * a callback that runs from the event loop, never from inside a libcurl
 * callback, so the callback may start, cancel or free requests.
 */
#ifndef REPLICA_HTTP_H
#define REPLICA_HTTP_H

#include <curl/curl.h>
#include <event2/event.h>

#include "buf.h"

/* The documented failure set; http_strerror gives the Lua-visible string. */
enum http_err {
    HTTP_OK = 0,
    HTTP_ETIMEOUT,   /* "timeout": connect timeout, or no progress for `timeout` s */
    HTTP_ECONNECT,   /* "connect": refused, unreachable, DNS failure */
    HTTP_ETLS,       /* "tls": handshake or certificate verification failed */
    HTTP_ECLOSED,    /* "closed": the peer closed or reset mid-exchange */
    HTTP_ECANCELLED, /* "cancelled": the owner cancelled the request */
    HTTP_ETOOLARGE,  /* "too large": the body passed max_body */
    HTTP_EBADURL,    /* "bad url": not an http(s) URL */
    HTTP_EPROTO,     /* "protocol": any other transfer failure */
    HTTP_EDRY,       /* "dry mode": a write the client's watch refused (replica repl --dry) */
};

struct http_client_opts {
    long max_per_host;   /* requests in flight per host; default 64 */
    long max_total;      /* requests in flight (and connections) in all; 0 = no limit */
    const char *user_agent;
};

struct http_tls {
    const char *ca_file; /* extra CA bundle trusted besides the system store */
    int insecure;        /* 1 = do not verify the peer (explicit opt-out) */
    const char *cert_file; /* client certificate (PEM) presented for mTLS, or NULL */
    const char *key_file;  /* its private key (PEM); NULL: the key is in cert_file */
};

struct http_req;
struct http_client;
struct http_host;

typedef void (*http_done_fn)(struct http_req *req, void *ud);

struct http_req {
    CURL *easy;
    struct http_client *client;
    struct curl_slist *headers;
    struct buf body;        /* response body (unless the owner installed its own writer) */
    struct buf head;        /* header lines of the final response, CRLF-separated */
    size_t max_body;        /* 0 = no limit */
    int hold_origin;        /* a 429/503 answer's Retry-After holds the origin (registries) */
    long status;            /* HTTP status of the final response */
    char method[16];        /* as given to http_req_new (truncated) */
    double started;         /* when it was queued (monotonic seconds) */
    enum http_err err;
    char errbuf[CURL_ERROR_SIZE];
    /* private */
    http_done_fn done;
    void *ud;
    struct http_host *host;
    struct http_req *qnext;
    int state;
    const char *lane;
    long stall_timeout;     /* seconds without progress before "timeout" */
    double last_progress;
    curl_off_t seen_dl, seen_ul;    /* byte counts, from the progress callback */
    curl_off_t swept_dl, swept_ul;  /* the counts at the last sweep */
    int paused;             /* paused by its owner: not a stall */
    struct http_req *anext, *aprev; /* the client's active list */
    struct tls_probe *tls_probe;    /* its connection's handshake notes (tls_probe.c) */
};

/* Creates a client on base. Returns NULL on failure. The caller owns it and
 * frees it with http_client_free after every request is finished or freed. */
struct http_client *http_client_new(struct event_base *base, const struct http_client_opts *o);
void http_client_free(struct http_client *c);

/* Returns the number of requests started or queued and not yet finished. */
long http_client_pending(const struct http_client *c);

/* Returns the number of requests handed to libcurl and not yet finished
 * (the rest of the pending ones wait in their hosts' queues). */
long http_client_active(const struct http_client *c);

struct tally;
/* Returns the counts of the client's finished requests (tally.h), keyed by
 * the host:port of the origin they were queued for, the method, and the
 * HTTP status, or the error's name (http_strerror) when the transfer
 * failed; a request cancelled by its owner is not counted. The client owns
 * them; they are valid until the next request ends. */
const struct tally *http_client_counts(const struct http_client *c);

/* A watcher of every request of a client (`replica repl`: its trace and its
 * dry mode). done runs after each transfer ends (also for a request refused
 * as a dry-mode write), before the request's own done; a request cancelled
 * by its owner is not reported. dry_origin, when set, is an origin key (see
 * http_origin_key) to which every method but GET and HEAD is refused with
 * HTTP_EDRY instead of being sent (except a credential exchange: a POST
 * under /oauth2/). */
struct http_watch {
    void (*done)(void *ud, const struct http_req *r);
    void *ud;
    char dry_origin[300];
};

/* Installs w (copied; NULL removes it). */
void http_client_watch(struct http_client *c, const struct http_watch *w);

/* Creates a request: method (GET, HEAD, PUT, POST, PATCH, DELETE, ...) and URL.
 * timeout is the stall limit in seconds (no byte moved for that long,
 * checked about once a second), and
 * connect_timeout bounds connection setup. The caller owns the request and
 * frees it with http_req_free. Returns NULL when out of memory. */
struct http_req *http_req_new(struct http_client *c, const char *method, const char *url,
                              long timeout, long connect_timeout);

/* Adds a request header line "Name: value"; returns 0 or -1. */
int http_req_header(struct http_req *r, const char *line);

/* Sets a request body (copied). Returns 0 or -1. */
int http_req_body(struct http_req *r, const char *data, size_t len);

/* Applies TLS options; libcurl copies the strings. Returns 0 or -1. */
int http_req_tls(struct http_req *r, const struct http_tls *tls);

/* Puts the request in a separate queue of its host (e.g. "upload"), with a
 * limit of its own: a paired download and upload to one host must not wait
 * for each other's slots. lane must outlive the request. */
void http_req_lane(struct http_req *r, const char *lane);

/* Tells the stall detector that the owner paused (1) or resumed (0) the
 * transfer on purpose; resuming restarts the stall clock. */
void http_req_paused(struct http_req *r, int paused);

/* Follows up to max redirects (0 = none). */
void http_req_follow(struct http_req *r, long max);

/* Queues the request. done(req, ud) is called exactly once, from the event
 * loop, unless the request is cancelled or freed first. Returns 0, or -1 with
 * r->err set (done is then not called). */
int http_req_start(struct http_req *r, http_done_fn done, void *ud);

/* Stops a queued or running request without calling done; r->err becomes
 * HTTP_ECANCELLED. Must not be called from inside a libcurl callback. */
void http_req_cancel(struct http_req *r);

/* Cancels if needed and frees the request; NULL is allowed. */
void http_req_free(struct http_req *r);

/* Returns the Lua-visible string for an error code. */
const char *http_strerror(enum http_err e);

/* Writes the origin of an http(s) URL into key: "scheme://host:port", with
 * scheme and host lower-cased, no user info, and the default port made
 * explicit, so "https://R.example" and "https://r.example:443" share one
 * per-host queue. Returns 0, or -1 for another scheme, a URL without a host
 * or a key that does not fit in n. Done by hand: it runs for every request. */
int http_origin_key(const char *url, char *key, size_t n);

#endif
