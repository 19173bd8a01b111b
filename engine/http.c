/* http.c - asynchronous HTTP on libevent through curl's multi_socket API.
 *
 * The glue follows curl's docs/examples/multi-event.c: the socket callback
 * keeps one libevent event per socket, the timer callback keeps one timer, and
 * both only arm events. libcurl is driven from those events, and finished
 * transfers are collected after curl_multi_socket_action returns, so done
 * callbacks never run inside libcurl.
 */
#include "http.h"
#include "tls_probe.h"
#include "tally.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <ctype.h>

enum { REQ_IDLE, REQ_QUEUED, REQ_ACTIVE, REQ_DONE };

/* Easy handles kept for reuse: creating one per request costs an allocation
 * of its receive buffer and setup work on every request. */
#define EASY_POOL 256

/* The longest a Retry-After holds an origin (retry.lua's MAX_AFTER). */
#define HOLD_MAX 60.0

struct http_host {
    char *key;                 /* scheme://host:port, then #lane for a lane */
    long active;
    double hold_until;         /* no request starts before (monotonic s) */
    struct http_req *qhead, *qtail;
    struct http_host *next;
};

struct http_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct http_host *hosts;
    long max_per_host;
    long pending;
    char *user_agent;
    char *capath;              /* the system CA directory, kept when an extra CA is added */
    CURL *pool[EASY_POOL];     /* reset easy handles kept for reuse */
    int npool;
    struct http_req *active;   /* requests handed to libcurl */
    long nactive, max_active;  /* how many, and the global limit (0 = none) */
    struct event *sweep;       /* the stall detector, armed while any are active */
    struct event *hold;        /* ends the earliest hold of an origin */
    struct http_watch watch;   /* watch.done NULL and no dry origin: none */
    int watching;
    struct tally counts;       /* finished requests by host, method and status */
};

struct sock_ctx {
    struct event *ev;
    struct http_client *c;
};

static void check_multi_info(struct http_client *c);
static void pump(struct http_client *c, struct http_host *h);
static void pump_host(struct http_client *c, struct http_host *h);
static double now_mono(void);

/* Links r into the client's active list and arms the sweep. */
static void active_add(struct http_client *c, struct http_req *r)
{
    static const struct timeval second = { 1, 0 };
    c->nactive++;
    r->anext = c->active;
    r->aprev = NULL;
    if (c->active)
        c->active->aprev = r;
    c->active = r;
    if (!evtimer_pending(c->sweep, NULL))
        evtimer_add(c->sweep, &second);
}

/* Unlinks r from the active list; the sweep stops when it empties, so an
 * idle client never keeps the loop alive. */
static void active_remove(struct http_client *c, struct http_req *r)
{
    if (r->aprev)
        r->aprev->anext = r->anext;
    else if (c->active == r)
        c->active = r->anext;
    if (r->anext)
        r->anext->aprev = r->aprev;
    r->anext = r->aprev = NULL;
    c->nactive--;
    if (!c->active)
        evtimer_del(c->sweep);
}

/* Counts finished request r by the host:port of its queue's origin, its
 * method, and its status (the error's name when the transfer failed). */
static void count_done(struct http_client *c, const struct http_req *r)
{
    char host[TALLY_KEYLEN], status[16];
    const char *k = strstr(r->host->key, "://");
    k = k ? k + 3 : r->host->key;
    size_t len = strcspn(k, "#");
    if (len >= sizeof(host))
        len = sizeof(host) - 1;
    memcpy(host, k, len);
    host[len] = 0;
    if (r->err == HTTP_OK)
        snprintf(status, sizeof(status), "%ld", r->status);
    else
        snprintf(status, sizeof(status), "%s", http_strerror(r->err));
    tally_add(&c->counts, host, r->method, status);
}

/* The sweep, once a second: a request whose bytes have not moved for its
 * stall timeout, and that its owner has not paused, ends with "timeout".
 * (curl's own low-speed check averages over several seconds: it fires late.) */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct http_client *c = arg;
    (void)fd;
    (void)what;
    double now = now_mono();
    for (struct http_req *r = c->active; r; r = r->anext) {
        if (r->seen_dl != r->swept_dl || r->seen_ul != r->swept_ul || r->paused) {
            r->swept_dl = r->seen_dl;
            r->swept_ul = r->seen_ul;
            r->last_progress = now;
        }
    }
    for (;;) {
        struct http_req *r = c->active;
        while (r && (r->paused || now - r->last_progress <= (double)r->stall_timeout))
            r = r->anext;
        if (!r)
            break;
        /* Finish it like a completion; done may free or start requests, so
         * the scan starts over. */
        curl_multi_remove_handle(c->multi, r->easy);
        active_remove(c, r);
        r->state = REQ_DONE;
        r->host->active--;
        c->pending--;
        r->err = HTTP_ETIMEOUT;
        snprintf(r->errbuf, sizeof(r->errbuf), "no data moved for %ld s", r->stall_timeout);
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
        struct http_host *h = r->host;
        count_done(c, r);
        if (c->watching && c->watch.done)
            c->watch.done(c->watch.ud, r);
        r->done(r, r->ud);
        pump(c, h);
    }
    if (c->active) {
        static const struct timeval second = { 1, 0 };
        evtimer_add(c->sweep, &second);
    }
}

/* True when errbuf (libcurl's message for a failed read or write) says
 * the peer ended the connection with a TLS alert. A server that wants a
 * client certificate it did not get, or refuses the one it got, sends
 * one after a TLS 1.3 handshake that looked complete to the client, so
 * the failure reaches the first read. OpenSSL names every alert it
 * receives "sslv3 alert ...", "tlsv1 alert ..." or "tlsv13 alert ...". */
static int tls_alert(const char *errbuf)
{
    return strstr(errbuf, "SSL") && (strstr(errbuf, "sslv3 alert ") || strstr(errbuf, "tlsv1 alert ") ||
                                     strstr(errbuf, "tlsv13 alert "));
}

/* Maps a finished transfer's CURLcode (and libcurl's message errbuf) to
 * the documented error set. */
static enum http_err map_curl_error(CURLcode rc, const char *errbuf)
{
    switch (rc) {
    case CURLE_OK:
        return HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTP_ETIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return HTTP_ECONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return HTTP_ETLS;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return tls_alert(errbuf) ? HTTP_ETLS : HTTP_ECLOSED;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SEND_FAIL_REWIND: /* the connection died mid-upload */
        return HTTP_ECLOSED;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return HTTP_EBADURL;
    default:
        return HTTP_EPROTO;
    }
}

const char *http_strerror(enum http_err e)
{
    switch (e) {
    case HTTP_OK: return "ok";
    case HTTP_ETIMEOUT: return "timeout";
    case HTTP_ECONNECT: return "connect";
    case HTTP_ETLS: return "tls";
    case HTTP_ECLOSED: return "closed";
    case HTTP_ECANCELLED: return "cancelled";
    case HTTP_ETOOLARGE: return "too large";
    case HTTP_EBADURL: return "bad url";
    case HTTP_EPROTO: return "protocol";
    case HTTP_EDRY: return "dry mode";
    }
    return "protocol";
}

/* libevent callback for socket activity: hands it to libcurl. */
static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct http_client *c = arg;
    int flags = 0, running = 0;
    if (what & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    /* An error here leaves transfers to time out; nothing to undo. */
    (void)curl_multi_socket_action(c->multi, fd, flags, &running);
    check_multi_info(c);
}

/* libevent callback for curl's timer. */
static void on_timer_event(evutil_socket_t fd, short what, void *arg)
{
    struct http_client *c = arg;
    int running = 0;
    (void)fd;
    (void)what;
    (void)curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
}

/* CURLMOPT_SOCKETFUNCTION: keeps one persistent event per socket. It only arms
 * or frees events; it never calls back into libcurl. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct http_client *c = userp;
    struct sock_ctx *sc = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            event_free(sc->ev);
            free(sc);
            curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    short kind = EV_PERSIST;
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    if (!sc) {
        sc = calloc(1, sizeof(*sc));
        if (!sc)
            return -1;
        sc->c = c;
        sc->ev = event_new(c->base, s, kind, on_socket_event, c);
        if (!sc->ev) {
            free(sc);
            return -1;
        }
        curl_multi_assign(c->multi, s, sc);
    } else {
        event_del(sc->ev);
        if (event_assign(sc->ev, c->base, s, kind, on_socket_event, c) != 0)
            return -1;
    }
    if (what != CURL_POLL_NONE && event_add(sc->ev, NULL) != 0)
        return -1;
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: arms (or, on -1, disarms) the single timer. A zero
 * timeout is deferred to the next loop turn rather than acted on here. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_client *c = userp;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
        return 0;
    }
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return evtimer_add(c->timer, &tv) == 0 ? 0 : -1;
}

int http_origin_key(const char *url, char *key, size_t n)
{
    size_t slen;
    if (strncasecmp(url, "http://", 7) == 0)
        slen = 4;
    else if (strncasecmp(url, "https://", 8) == 0)
        slen = 5;
    else
        return -1;
    const char *auth = url + slen + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', alen);
    if (at) {
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    /* A port after the host (after "]" for an IPv6 literal), or none. */
    const char *close = memchr(auth, ']', alen);
    const char *after = close ? close + 1 : auth;
    int has_port = memchr(after, ':', alen - (size_t)(after - auth)) != NULL;
    const char *port = has_port ? "" : (slen == 4 ? ":80" : ":443");
    if (alen == 0 || slen + 3 + alen + strlen(port) + 1 > n)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < slen; i++)
        key[k++] = (char)tolower((unsigned char)url[i]);
    memcpy(key + k, "://", 3);
    k += 3;
    for (size_t i = 0; i < alen; i++)
        key[k++] = (char)tolower((unsigned char)auth[i]);
    strcpy(key + k, port);
    return 0;
}

/* Whether queue h is origin[0..olen)'s: the origin's own queue or one of
 * its lanes ("ORIGIN#lane"). */
static int of_origin(const struct http_host *h, const char *origin, size_t olen)
{
    return strncmp(h->key, origin, olen) == 0 && (h->key[olen] == 0 || h->key[olen] == '#');
}

/* Finds or creates the queue for a URL's origin (and lane). Returns NULL on a
 * URL that is not http(s), or when out of memory (err tells which). */
static struct http_host *host_for(struct http_client *c, const char *url, const char *lane,
                                  enum http_err *err)
{
    char key[512];
    if (http_origin_key(url, key, sizeof(key) - 64) != 0) {
        *err = HTTP_EBADURL;
        return NULL;
    }
    if (lane) {
        strcat(key, "#");
        strncat(key, lane, 62);
    }
    struct http_host *h;
    for (h = c->hosts; h; h = h->next)
        if (strcmp(h->key, key) == 0)
            return h;
    h = calloc(1, sizeof(*h));
    if (!h || !(h->key = strdup(key))) {
        free(h);
        *err = HTTP_EPROTO;
        return NULL;
    }
    size_t olen = strcspn(key, "#"); /* a new lane is held with its origin */
    for (struct http_host *o = c->hosts; o; o = o->next)
        if (of_origin(o, key, olen) && o->hold_until > h->hold_until)
            h->hold_until = o->hold_until;
    h->next = c->hosts;
    c->hosts = h;
    return h;
}

/* Arms the hold timer for the earliest hold still to end (or disarms it). */
static void hold_arm(struct http_client *c)
{
    double now = now_mono(), next = 0;
    for (struct http_host *h = c->hosts; h; h = h->next)
        if (h->hold_until > now && h->qhead && (next == 0 || h->hold_until < next))
            next = h->hold_until;
    if (next == 0) {
        evtimer_del(c->hold);
        return;
    }
    double d = next - now + 0.001;
    struct timeval tv = { (time_t)d, (suseconds_t)((d - (double)(time_t)d) * 1e6) };
    evtimer_add(c->hold, &tv);
}

/* The hold timer: starts what the ended holds kept queued. */
static void on_hold(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_client *c = arg;
    for (struct http_host *h = c->hosts; h; h = h->next)
        pump_host(c, h);
    hold_arm(c);
}

/* Seconds a response's Retry-After asks for (delta-seconds or an HTTP-date),
 * from the header lines in head; 0 when it has none or it has passed. */
static double retry_after(const struct buf *head)
{
    const char *p = head->data, *end = head->data + head->len;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((eol ? eol : end) - p);
        if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
            char v[128];
            size_t i = 12, n = 0;
            while (i < len && (p[i] == ' ' || p[i] == '\t'))
                i++;
            while (i < len && p[i] != '\r' && n < sizeof(v) - 1)
                v[n++] = p[i++];
            v[n] = 0;
            if (n && strspn(v, "0123456789") == n)
                return atof(v);
            time_t t = curl_getdate(v, NULL);
            return t > 0 && t > time(NULL) ? (double)(t - time(NULL)) : 0;
        }
        p = eol ? eol + 1 : NULL;
    }
    return 0;
}

/* After a 429 or 503 with Retry-After from r's final URL (r a request to a
 * registry: r->hold_origin): no new request to that origin (any lane)
 * starts before the time it names (at most HOLD_MAX): a registry that asks
 * a client to wait is asked nothing meanwhile. Requests under way go on;
 * queued ones wait. (Not for a FaaS gateway, whose 429 is one instance's.) */
static void hold_origin(struct http_client *c, struct http_req *r)
{
    double after = retry_after(&r->head);
    char *url = NULL;
    char key[512];
    if (after <= 0 || curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || !url ||
        http_origin_key(url, key, sizeof(key)) != 0)
        return;
    double until = now_mono() + (after < HOLD_MAX ? after : HOLD_MAX);
    size_t olen = strlen(key);
    enum http_err err;
    host_for(c, url, NULL, &err); /* so that the hold is kept for the origin */
    for (struct http_host *h = c->hosts; h; h = h->next)
        if (of_origin(h, key, olen) && h->hold_until < until)
            h->hold_until = until;
}

/* Hands a request to libcurl. On failure the request is finished with an error
 * and reported like any other completion. */
static void activate(struct http_client *c, struct http_req *r)
{
    r->state = REQ_ACTIVE;
    r->host->active++;
    r->last_progress = now_mono();
    active_add(c, r);
    if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
        active_remove(c, r);
        r->host->active--;
        r->state = REQ_DONE;
        r->err = HTTP_EPROTO;
        snprintf(r->errbuf, sizeof(r->errbuf), "curl_multi_add_handle failed");
        c->pending--;
        r->done(r, r->ud);
    }
}

/* Starts queued requests of host h while it is under its limit and the
 * client under its global one. */
static void pump_host(struct http_client *c, struct http_host *h)
{
    if (h->hold_until > 0 && h->qhead && h->hold_until > now_mono()) {
        hold_arm(c);
        return;
    }
    while (h->qhead && h->active < c->max_per_host &&
           (c->max_active == 0 || c->nactive < c->max_active)) {
        struct http_req *r = h->qhead;
        h->qhead = r->qnext;
        if (!h->qhead)
            h->qtail = NULL;
        r->qnext = NULL;
        activate(c, r);
    }
}

/* After a request of host h ended: refills h first, then, if the global
 * limit was what held them, the other hosts. */
static void pump(struct http_client *c, struct http_host *h)
{
    pump_host(c, h);
    for (struct http_host *o = c->hosts; o && c->max_active; o = o->next) {
        if (c->nactive >= c->max_active)
            break;
        if (o != h)
            pump_host(c, o);
    }
}

/* Collects finished transfers, reports them, and refills the host queues. */
static void check_multi_info(struct http_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct http_req *r = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(c->multi, easy);
        active_remove(c, r);
        r->state = REQ_DONE;
        r->host->active--;
        c->pending--;
        if (r->err == HTTP_OK)
            r->err = map_curl_error(rc, r->errbuf);
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->status);
        tls_probe_explain(r);
        if (r->hold_origin && (r->status == 429 || r->status == 503))
            hold_origin(c, r);
        struct http_host *h = r->host;
        count_done(c, r);
        if (c->watching && c->watch.done)
            c->watch.done(c->watch.ud, r);
        r->done(r, r->ud);
        pump(c, h);
    }
}

struct http_client *http_client_new(struct event_base *base, const struct http_client_opts *o)
{
    struct http_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->max_per_host = o && o->max_per_host > 0 ? o->max_per_host : 64;
    c->max_active = o && o->max_total > 0 ? o->max_total : 0;
    c->user_agent = strdup(o && o->user_agent ? o->user_agent : "replica/0.1");
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, on_timer_event, c);
    c->sweep = evtimer_new(base, on_sweep, c);
    c->hold = evtimer_new(base, on_hold, c);
    if (!c->user_agent || !c->multi || !c->timer || !c->sweep || !c->hold) {
        http_client_free(c);
        return NULL;
    }
    CURL *probe = curl_easy_init();
    char *capath = NULL;
    if (probe && curl_easy_getinfo(probe, CURLINFO_CAPATH, &capath) == CURLE_OK && capath)
        c->capath = strdup(capath);
    else
        c->capath = strdup("/etc/ssl/certs");
    curl_easy_cleanup(probe);
    if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c->max_per_host) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, c->max_per_host * 4) != CURLM_OK ||
        (o && o->max_total > 0 &&
         curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, o->max_total) != CURLM_OK)) {
        http_client_free(c);
        return NULL;
    }
    return c;
}

void http_client_free(struct http_client *c)
{
    if (!c)
        return;
    if (c->multi)
        curl_multi_cleanup(c->multi); /* may call on_curl_socket(REMOVE) */
    if (c->timer)
        event_free(c->timer);
    if (c->sweep)
        event_free(c->sweep);
    if (c->hold)
        event_free(c->hold);
    while (c->hosts) {
        struct http_host *h = c->hosts;
        c->hosts = h->next;
        free(h->key);
        free(h);
    }
    while (c->npool > 0)
        curl_easy_cleanup(c->pool[--c->npool]);
    free(c->user_agent);
    free(c->capath);
    tally_free(&c->counts);
    free(c);
}

long http_client_pending(const struct http_client *c)
{
    return c->pending;
}

long http_client_active(const struct http_client *c)
{
    return c->nactive;
}

const struct tally *http_client_counts(const struct http_client *c)
{
    return &c->counts;
}

/* CURLOPT_HEADERFUNCTION: keeps the header block of the last response only. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_req *r = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0)
        r->head.len = 0;
    if (r->head.len + len > 1024 * 1024 || buf_append(&r->head, p, len) != 0)
        return 0;
    return len;
}

/* Monotonic seconds. */
static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CURLOPT_XFERINFOFUNCTION: notes the byte counts; the sweep timer notices
 * when they stop moving. No clock read here: this runs for every chunk. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct http_req *r = ud;
    (void)dltotal;
    (void)ultotal;
    r->seen_dl = dlnow; /* the sweep compares these with what it saw last */
    r->seen_ul = ulnow;
    return 0;
}

void http_req_paused(struct http_req *r, int paused)
{
    r->paused = paused;
    if (!paused)
        r->last_progress = now_mono();
}

/* CURLOPT_WRITEFUNCTION: buffers the body up to max_body. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct http_req *r = ud;
    size_t len = size * n;
    if (r->max_body && r->body.len + len > r->max_body) {
        r->err = HTTP_ETOOLARGE;
        return 0;
    }
    if (r->body.cap == 0) {
        /* Size the buffer once from Content-Length instead of doubling. */
        curl_off_t cl = -1;
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (cl > 0 && (!r->max_body || (size_t)cl <= r->max_body) &&
            buf_reserve(&r->body, (size_t)cl) != 0) {
            r->err = HTTP_ETOOLARGE;
            return 0;
        }
    }
    if (buf_append(&r->body, p, len) != 0) {
        r->err = HTTP_ETOOLARGE;
        return 0;
    }
    return len;
}

struct http_req *http_req_new(struct http_client *c, const char *method, const char *url,
                              long timeout, long connect_timeout)
{
    struct http_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->client = c;
    r->easy = c->npool > 0 ? c->pool[--c->npool] : curl_easy_init();
    if (!r->easy) {
        free(r);
        return NULL;
    }
    CURL *e = r->easy;
    CURLcode rc = CURLE_OK;
    snprintf(r->method, sizeof(r->method), "%s", method);
    rc |= curl_easy_setopt(e, CURLOPT_URL, url);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
    rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* A redirect never leaves https for http. */
    rc |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR,
                           strncasecmp(url, "https:", 6) == 0 ? "https" : "http,https");
    /* The path goes out as given: libcurl would otherwise resolve "/../"
     * and turn one repository's URL into another's. */
    rc |= curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
    rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, connect_timeout > 0 ? connect_timeout : 10L);
    r->stall_timeout = timeout > 0 ? timeout : 60L;
    rc |= curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    rc |= curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    rc |= curl_easy_setopt(e, CURLOPT_XFERINFODATA, r);
    rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* Waiting to learn whether a connection multiplexes only pays off over
     * TLS (h2); on plain HTTP it would hold every request behind the first. */
    rc |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncasecmp(url, "https:", 6) == 0 ? 1L : 0L);
    rc |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (strncasecmp(url, "https:", 6) == 0 && tls_probe_install(r) != 0)
        rc = CURLE_FAILED_INIT;
    rc |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    rc |= curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    int bodyless = 1;
    if (strcmp(method, "GET") == 0) {
        /* the default */
    } else if (strcmp(method, "HEAD") == 0) {
        rc |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        rc |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        bodyless = 0;
    }
    /* No 100-continue round trip before a body (GET and HEAD need no list:
     * it would cost allocations on every request). */
    if (rc != CURLE_OK || (!bodyless && http_req_header(r, "Expect:") != 0)) {
        http_req_free(r);
        return NULL;
    }
    return r;
}

int http_req_header(struct http_req *r, const char *line)
{
    struct curl_slist *l = curl_slist_append(r->headers, line);
    if (!l)
        return -1;
    r->headers = l;
    return curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK ? 0 : -1;
}

int http_req_body(struct http_req *r, const char *data, size_t len)
{
    CURLcode rc = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(r->easy, CURLOPT_COPYPOSTFIELDS, data);
    return rc == CURLE_OK ? 0 : -1;
}

int http_req_tls(struct http_req *r, const struct http_tls *tls)
{
    CURLcode rc = CURLE_OK;
    if (tls->insecure) {
        rc |= curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYPEER, 0L);
        rc |= curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (tls->ca_file) {
        /* OpenSSL loads both: the extra file and the system's hashed directory. */
        rc |= curl_easy_setopt(r->easy, CURLOPT_CAINFO, tls->ca_file);
        rc |= curl_easy_setopt(r->easy, CURLOPT_CAPATH, r->client->capath);
    }
    /* A client certificate is part of what libcurl matches a connection
     * on, so one made with it serves only requests that present it. */
    if (tls->cert_file) {
        rc |= curl_easy_setopt(r->easy, CURLOPT_SSLCERT, tls->cert_file);
        rc |= curl_easy_setopt(r->easy, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (tls->key_file) {
        rc |= curl_easy_setopt(r->easy, CURLOPT_SSLKEY, tls->key_file);
        rc |= curl_easy_setopt(r->easy, CURLOPT_SSLKEYTYPE, "PEM");
    }
    return rc == CURLE_OK ? 0 : -1;
}

void http_req_lane(struct http_req *r, const char *lane)
{
    r->lane = lane;
}

void http_req_follow(struct http_req *r, long max)
{
    curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, max > 0 ? 1L : 0L);
    curl_easy_setopt(r->easy, CURLOPT_MAXREDIRS, max);
}

void http_client_watch(struct http_client *c, const struct http_watch *w)
{
    if (w)
        c->watch = *w;
    else
        memset(&c->watch, 0, sizeof(c->watch));
    c->watching = w != NULL;
}

/* Whether the watch's dry mode refuses r: a write to its origin, other than
 * a credential exchange (a POST under /oauth2/, as ACR's token exchange:
 * it writes nothing, and without it nothing can be read either). */
static int dry_refused(const struct http_client *c, const struct http_req *r, const char *url)
{
    char key[sizeof(c->watch.dry_origin)];
    if (!c->watch.dry_origin[0] || strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0)
        return 0;
    if (http_origin_key(url, key, sizeof(key)) != 0 || strcmp(key, c->watch.dry_origin) != 0)
        return 0;
    const char *scheme = strstr(url, "://");
    const char *path = scheme ? strchr(scheme + 3, '/') : NULL;
    return !(path && strncmp(path, "/oauth2/", 8) == 0 && strcmp(r->method, "POST") == 0);
}

int http_req_start(struct http_req *r, http_done_fn done, void *ud)
{
    struct http_client *c = r->client;
    char *url = NULL;
    enum http_err err;
    if (r->state != REQ_IDLE)
        return -1; /* already started: its outcome is still to come */
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
    r->host = url ? host_for(c, url, r->lane, &err) : NULL;
    if (!r->host) {
        r->err = url ? err : HTTP_EBADURL;
        snprintf(r->errbuf, sizeof(r->errbuf), "not an http(s) URL");
        return -1;
    }
    r->started = now_mono();
    if (c->watching && dry_refused(c, r, url)) {
        r->err = HTTP_EDRY;
        snprintf(r->errbuf, sizeof(r->errbuf), "dry mode: %s %s was not sent", r->method, url);
        if (c->watch.done)
            c->watch.done(c->watch.ud, r);
        return -1;
    }
    r->done = done;
    r->ud = ud;
    r->err = HTTP_OK;
    c->pending++;
    r->state = REQ_QUEUED;
    if (r->host->qtail)
        r->host->qtail->qnext = r;
    else
        r->host->qhead = r;
    r->host->qtail = r;
    pump_host(c, r->host);
    return 0;
}

void http_req_cancel(struct http_req *r)
{
    struct http_client *c = r->client;
    if (r->state == REQ_QUEUED) {
        struct http_req **pp = &r->host->qhead, *prev = NULL;
        while (*pp && *pp != r) {
            prev = *pp;
            pp = &(*pp)->qnext;
        }
        if (*pp) {
            *pp = r->qnext;
            if (r->host->qtail == r)
                r->host->qtail = prev;
        }
        r->qnext = NULL;
        c->pending--;
    } else if (r->state == REQ_ACTIVE) {
        curl_multi_remove_handle(c->multi, r->easy);
        active_remove(c, r);
        r->host->active--;
        c->pending--;
        pump(c, r->host);
    } else {
        return;
    }
    r->state = REQ_DONE;
    r->err = HTTP_ECANCELLED;
}

void http_req_free(struct http_req *r)
{
    if (!r)
        return;
    http_req_cancel(r);
    if (r->easy) {
        struct http_client *c = r->client;
        if (c->npool < EASY_POOL) {
            curl_easy_reset(r->easy);
            c->pool[c->npool++] = r->easy;
        } else {
            curl_easy_cleanup(r->easy);
        }
    }
    tls_probe_release(r);
    curl_slist_free_all(r->headers);
    buf_free(&r->body);
    buf_free(&r->head);
    free(r);
}
