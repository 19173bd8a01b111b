/* httpd.c - the HTTP/1.1 server of sys.listen, on libevent bufferevents
 * with http-parser; no Lua here (the binding is lua_httpd.c, the interface
 * httpd.h).
 *
 * Limits, all enforced before a request reaches its user's dispatch:
 * - connections: at most max_conns in all (the listener is disabled while
 *   at the cap) and max_per_addr from one client address (more are
 *   answered 503 and closed); when accept() fails (no descriptors left) the
 *   listener pauses for ACCEPT_BACKOFF and the error is logged rate-limited;
 * - deadlines: the request line and headers must be complete within
 *   header_timeout of the connection's start or of the previous response,
 *   the body within body_timeout of the headers; slow clients are dropped;
 * - the authorize callback runs when the headers are complete, before a
 *   body byte is read: a refusal is answered and the connection closed
 *   without reading the body;
 * - the request head is capped at 64 KiB and the body at max_body: a body
 *   over it is not read, the request is marked too_large, and the
 *   connection closes after the response.
 *
 * Ownership: the caller owns the server; the server owns its connections
 * (struct httpd_conn, freed by conn_free only). A connection owns the
 * request being parsed (struct httpd_msg, c->m) until dispatch takes it.
 * While a request is with its handler the connection holds the user's
 * token for it (c->req); the token is dropped when the response is
 * complete, or handed to closed() when the connection goes away first.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>

#include "evlog.h"
#include "httpd.h"

#define MAX_HEADERS_SIZE (64L << 10)  /* request line and headers together */
#define HOLD_READ_MAX (64 << 10)      /* bytes read ahead while a request is outstanding */
#define LINGER_SECS 2                 /* input is read and dropped this long before a close */
#define ACCEPT_BACKOFF_MS 500         /* accepting pauses this long after accept() fails */

/* What a connection is doing. */
enum conn_state {
    C_HEAD,    /* reading a request line and headers (header deadline) */
    C_BODY,    /* reading a body (body deadline) */
    C_HANDLER, /* the request is with its handler; input is held, not parsed */
    C_FLUSH,   /* the response is complete and being written */
    C_LINGER,  /* written and shut down; input is dropped (on_drain) until EOF or the timer */
};

/* Why accepting is paused (bits of httpd.paused). */
enum { PAUSE_CAP = 1, PAUSE_ERROR = 2 };

struct httpd {
    struct vm *vm;                   /* its event base and its log */
    struct evconnlistener *listener;
    struct event *backoff;           /* re-enables accepting after an accept() error */
    struct httpd_conn *conns;        /* every open connection */
    int nconns;
    int paused;                      /* PAUSE_* bits; the listener is disabled while set */
    struct httpd_opts o;
    struct httpd_callbacks cb;
    void *ud;                        /* passed to every callback */
    struct evlog_limit accept_log;
    int port;
};

/* What answering a request needs from it: copied from its msg at dispatch,
 * since the msg goes to the handler. */
struct answer {
    unsigned short minor;
    int head;                        /* the method is HEAD */
    int keepalive, close;            /* the client's Connection header */
};

struct httpd_conn {
    struct httpd *s;
    struct httpd_conn *prev, *next;
    struct bufferevent *bev;
    struct event *timer;             /* the header or body deadline, or the linger */
    struct event *drain;             /* reads and drops input while lingering, or NULL */
    enum conn_state state;
    http_parser parser;
    struct httpd_msg *m;             /* the request being read, or NULL */
    struct evbuffer *field, *value;  /* the header being read */
    int in_value;                    /* the last header callback was a value */
    size_t head_bytes;               /* request line and headers so far */
    int head_done, msg_done;         /* set by the parser callbacks */
    int error_status;                /* set by a callback to answer and close */
    int close_after;                 /* close once the response is written */
    void *req;                       /* dispatch's token for the request with its handler */
    struct answer a;                 /* of the request with its handler */
    int chunked;                     /* the started response uses chunked encoding */
    int no_body;                     /* the started response carries no body (HEAD, 204, 304) */
    char addr[INET6_ADDRSTRLEN];     /* the client's address, without port */
    char peer[HTTPD_PEER_LEN];
};

static void conn_free(struct httpd_conn *c);
static void conn_continue(struct httpd_conn *c);

const char *httpd_method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "UNKNOWN";
    }
}

/* Returns the method we serve for an http-parser method, or 0. */
static enum evhttp_cmd_type method_of(unsigned m)
{
    switch (m) {
    case HTTP_GET: return EVHTTP_REQ_GET;
    case HTTP_POST: return EVHTTP_REQ_POST;
    case HTTP_HEAD: return EVHTTP_REQ_HEAD;
    case HTTP_PUT: return EVHTTP_REQ_PUT;
    case HTTP_DELETE: return EVHTTP_REQ_DELETE;
    case HTTP_OPTIONS: return EVHTTP_REQ_OPTIONS;
    case HTTP_PATCH: return EVHTTP_REQ_PATCH;
    default: return 0;
    }
}

/* Returns the reason phrase of an HTTP status, a static string. */
static const char *status_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:
        return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error"
                                                                              : "Server Error";
    }
}

/* ---- parsed requests ---- */

void httpd_headers_init(struct evkeyvalq *h)
{
    h->tqh_first = NULL;
    h->tqh_last = &h->tqh_first;
}

/* Returns a new empty msg (the caller owns it; httpd_msg_free), or NULL. */
static struct httpd_msg *msg_new(void)
{
    struct httpd_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    httpd_headers_init(&m->headers);
    m->body = evbuffer_new();
    if (!m->body) {
        free(m);
        return NULL;
    }
    return m;
}

void httpd_msg_free(struct httpd_msg *m)
{
    if (!m)
        return;
    evhttp_clear_headers(&m->headers);
    if (m->uri_elems)
        evhttp_uri_free(m->uri_elems);
    free(m->uri);
    free(m->who);
    evbuffer_free(m->body);
    free(m);
}

/* Returns the value of header name in m (repeats not joined), or NULL. */
static const char *msg_header(struct httpd_msg *m, const char *name)
{
    return evhttp_find_header(&m->headers, name);
}

/* ---- the listener ---- */

/* Enables or disables accepting to match s->paused. */
static void listener_update(struct httpd *s)
{
    if (!s->listener)
        return;
    int rc = s->paused ? evconnlistener_disable(s->listener) : evconnlistener_enable(s->listener);
    if (rc != 0)
        vm_logf(s->vm, NULL, LOG_ERROR, "http: cannot %s accepting connections",
                s->paused ? "pause" : "resume");
}

/* Timer of the accept backoff: accepting resumes. */
static void on_backoff(evutil_socket_t fd, short what, void *arg)
{
    struct httpd *s = arg;
    (void)fd;
    (void)what;
    s->paused &= ~PAUSE_ERROR;
    listener_update(s);
}

/* The listener's error callback: accept() failed with an error that is not
 * a retry (out of descriptors, above all). Pauses accepting for
 * ACCEPT_BACKOFF_MS, so the loop does not spin, and logs rate-limited. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct httpd *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    unsigned long quiet;
    (void)l;
    if (evlog_limit_pass(&s->accept_log, &quiet)) {
        char more[64] = "";
        if (quiet)
            snprintf(more, sizeof(more), " (%lu more since the last report)", quiet);
        vm_logf(s->vm, NULL, LOG_WARN, "http: accept() on port %d failed: %s; pausing %d ms%s",
                s->port, evutil_socket_error_to_string(e), ACCEPT_BACKOFF_MS, more);
    }
    s->paused |= PAUSE_ERROR;
    listener_update(s);
    struct timeval tv = { 0, ACCEPT_BACKOFF_MS * 1000 };
    if (evtimer_add(s->backoff, &tv) != 0) {
        s->paused &= ~PAUSE_ERROR;
        listener_update(s);
    }
}

/* Returns the open connections from client address addr. */
static int conns_from(const struct httpd *s, const char *addr)
{
    int n = 0;
    for (const struct httpd_conn *c = s->conns; c; c = c->next)
        n += strcmp(c->addr, addr) == 0;
    return n;
}

/* Answers 503 on a connection over the per-address cap, without waiting,
 * and closes it. */
static void refuse(evutil_socket_t fd)
{
    static const char body[] = "{\"error\":\"too many connections from this client address\"}";
    char resp[256];
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                       sizeof(body) - 1, body);
    ssize_t n = send(fd, resp, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)n; /* best effort: the client may not read it */
    evutil_closesocket(fd);
}

/* Formats the address of sa into addr (without port) and peer (ip:port). */
static void format_addr(const struct sockaddr *sa, char *addr, size_t alen, char *peer, size_t plen)
{
    int port = 0;
    addr[0] = '\0';
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &in->sin_addr, addr, alen);
        port = ntohs(in->sin_port);
        snprintf(peer, plen, "%s:%d", addr, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &in6->sin6_addr, addr, alen);
        port = ntohs(in6->sin6_port);
        snprintf(peer, plen, "[%s]:%d", addr, port);
    } else {
        snprintf(peer, plen, "?");
    }
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void on_conn_timer(evutil_socket_t fd, short what, void *arg);
static void conn_reset_parser(struct httpd_conn *c);

/* Arms the connection's timer for tv. Returns 0 or -1. */
static int conn_arm(struct httpd_conn *c, const struct timeval *tv)
{
    return evtimer_add(c->timer, tv);
}

/* The listener's callback: takes a new connection fd (ours from here) unless
 * its address is at the cap; disables accepting at the total cap. */
static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct httpd *s = arg;
    char addr[INET6_ADDRSTRLEN], peer[HTTPD_PEER_LEN];
    (void)l;
    (void)salen;
    format_addr(sa, addr, sizeof(addr), peer, sizeof(peer));
    if (conns_from(s, addr) >= s->o.max_per_addr) {
        refuse(fd);
        return;
    }
    struct httpd_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->s = s;
    memcpy(c->addr, addr, sizeof(addr));
    memcpy(c->peer, peer, sizeof(peer));
    c->bev = bufferevent_socket_new(s->vm->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(s->vm->base, on_conn_timer, c);
    c->field = evbuffer_new();
    c->value = evbuffer_new();
    if (!c->bev || !c->timer || !c->field || !c->value) {
        if (!c->bev)
            evutil_closesocket(fd);
        else
            bufferevent_free(c->bev);
        if (c->timer)
            event_free(c->timer);
        if (c->field)
            evbuffer_free(c->field);
        if (c->value)
            evbuffer_free(c->value);
        free(c);
        vm_logf(s->vm, NULL, LOG_ERROR, "http: out of memory for a connection from %s", peer);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (++s->nconns >= s->o.max_conns) {
        s->paused |= PAUSE_CAP;
        listener_update(s);
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_set_timeouts(c->bev, NULL, &s->o.timeout);
    conn_reset_parser(c);
    if (conn_arm(c, &s->o.header_timeout) != 0 || bufferevent_enable(c->bev, EV_READ) != 0) {
        vm_logf(s->vm, NULL, LOG_ERROR, "http: cannot watch a connection from %s", peer);
        conn_free(c);
    }
}

/* ---- answering ---- */

/* Whether c closes after the response whose headers are out (the
 * response's own Connection header, if any). */
static int must_close(const struct httpd_conn *c, const struct evkeyvalq *out)
{
    const char *conn = evhttp_find_header(out, "Connection");
    return c->close_after || c->a.close || (c->a.minor == 0 && !c->a.keepalive) ||
           (conn && evutil_ascii_strcasecmp(conn, "close") == 0);
}

/* Writes the status line and headers of a response to the request with its
 * handler on c: adds Date, Content-Type (application/json), Content-Length
 * (len, when >= 0 and the response has a body) and Connection the way
 * evhttp did. Sets *close when the connection must close after it. Returns
 * 0 or -1 (out of memory). */
static int write_head(struct httpd_conn *c, int status, struct evkeyvalq *out, ev_ssize_t len,
                      int chunked, int *close)
{
    int needs_body = status != 204 && status != 304 && !c->a.head;
    char num[32];
    if (c->a.minor >= 1 && !evhttp_find_header(out, "Date")) {
        char date[64];
        if (evutil_date_rfc1123(date, sizeof(date), NULL) > 0)
            evhttp_add_header(out, "Date", date);
    }
    if (chunked)
        evhttp_add_header(out, "Transfer-Encoding", "chunked");
    else if (len >= 0 && status != 204 && status != 304 &&
             !evhttp_find_header(out, "Content-Length")) {
        /* A HEAD response tells the length a GET would have, without it. */
        snprintf(num, sizeof(num), "%zd", len);
        evhttp_add_header(out, "Content-Length", num);
    }
    if (needs_body && !evhttp_find_header(out, "Content-Type"))
        evhttp_add_header(out, "Content-Type", "application/json");
    /* A streamed body without a length ends when the connection does. */
    if (!chunked && len < 0 && needs_body && !evhttp_find_header(out, "Content-Length"))
        c->close_after = 1;
    *close = must_close(c, out);
    evhttp_remove_header(out, "Connection");
    if (*close)
        evhttp_add_header(out, "Connection", "close");
    else if (c->a.minor == 0)
        evhttp_add_header(out, "Connection", "keep-alive");

    struct evbuffer *o = bufferevent_get_output(c->bev);
    if (evbuffer_add_printf(o, "HTTP/1.%d %d %s\r\n", c->a.minor >= 1 ? 1 : 0, status,
                            status_phrase(status)) < 0)
        return -1;
    for (struct evkeyval *kv = out->tqh_first; kv; kv = kv->next.tqe_next)
        if (evbuffer_add_printf(o, "%s: %s\r\n", kv->key, kv->value) < 0)
            return -1;
    return evbuffer_add(o, "\r\n", 2);
}

/* The response on c is complete (its bytes are queued): c drops the
 * request's token and goes on to flush it, then to the next request or the
 * close. */
static void conn_complete(struct httpd_conn *c, int close)
{
    c->req = NULL;
    if (close)
        c->close_after = 1;
    c->state = C_FLUSH;
    /* on_write goes on once the output is written, from the event loop. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

int httpd_respond(struct httpd_conn *c, int status, struct evkeyvalq *out, const char *body,
                  size_t len)
{
    int close = 0;
    int no_body = status == 204 || status == 304 || c->a.head;
    int rc = write_head(c, status, out, (ev_ssize_t)len, 0, &close);
    evhttp_clear_headers(out);
    if (rc == 0 && !no_body && len > 0)
        rc = evbuffer_add(bufferevent_get_output(c->bev), body, len);
    if (rc != 0) {
        conn_free(c);
        return -1;
    }
    conn_complete(c, close);
    return 0;
}

int httpd_start(struct httpd_conn *c, int status, struct evkeyvalq *out)
{
    c->no_body = status == 204 || status == 304 || c->a.head;
    c->chunked = !c->no_body && c->a.minor >= 1 && !evhttp_find_header(out, "Content-Length");
    int close = 0;
    int rc = write_head(c, status, out, -1, c->chunked, &close);
    evhttp_clear_headers(out);
    if (rc != 0) {
        conn_free(c);
        return -1;
    }
    if (close)
        c->close_after = 1;
    return 0;
}

int httpd_write(struct httpd_conn *c, const char *chunk, size_t n)
{
    struct evbuffer *o = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(o) > HTTPD_SLOW_BYTES)
        return 1;
    if (n > 0 && !c->no_body) {
        int rc = 0;
        if (c->chunked)
            rc = evbuffer_add_printf(o, "%zx\r\n", n) < 0 ? -1 : 0;
        if (rc == 0)
            rc = evbuffer_add(o, chunk, n);
        if (rc == 0 && c->chunked)
            rc = evbuffer_add(o, "\r\n", 2);
        if (rc != 0) {
            conn_free(c);
            return -1;
        }
    }
    return 0;
}

int httpd_finish(struct httpd_conn *c)
{
    if (c->chunked && evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5) != 0) {
        conn_free(c);
        return -1;
    }
    conn_complete(c, 0);
    return 0;
}

const char *httpd_msg_path(const struct httpd_msg *m)
{
    const char *path = evhttp_uri_get_path(m->uri_elems);
    return path && *path ? path : "/";
}

const char *httpd_conn_peer(const struct httpd_conn *c)
{
    return c->peer;
}

const char *httpd_conn_addr(const struct httpd_conn *c)
{
    return c->addr;
}

int httpd_reject(struct httpd_conn *c, int status, const char *why, const char *challenge,
                 long retry_after)
{
    struct evbuffer *o = bufferevent_get_output(c->bev);
    struct evbuffer *body = evbuffer_new();
    int minor = c->m ? c->m->minor : 1;
    int head = c->m && c->m->method == EVHTTP_REQ_HEAD;
    char date[64];
    if (!body) {
        conn_free(c);
        return -1;
    }
    evbuffer_add(body, "{\"error\":\"", 10);
    for (const unsigned char *p = (const unsigned char *)why; *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(body, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            evbuffer_add_printf(body, "\\u%04x", *p);
        else
            evbuffer_add(body, p, 1);
    }
    evbuffer_add(body, "\"}", 2);
    if (evutil_date_rfc1123(date, sizeof(date), NULL) == 0)
        date[0] = '\0';
    int rc = evbuffer_add_printf(o,
                                 "HTTP/1.%d %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n"
                                 "Content-Length: %zu\r\nConnection: close\r\n",
                                 minor >= 1 ? 1 : 0, status, status_phrase(status), date,
                                 evbuffer_get_length(body));
    if (rc >= 0 && challenge)
        rc = evbuffer_add_printf(o, "WWW-Authenticate: %s\r\n", challenge);
    if (rc >= 0 && retry_after > 0)
        rc = evbuffer_add_printf(o, "Retry-After: %ld\r\n", retry_after);
    if (rc >= 0)
        rc = evbuffer_add(o, "\r\n", 2);
    if (rc == 0 && !head)
        rc = evbuffer_add_buffer(o, body);
    evbuffer_free(body);
    if (rc != 0) {
        conn_free(c);
        return -1;
    }
    httpd_msg_free(c->m);
    c->m = NULL;
    c->close_after = 1;
    c->state = C_FLUSH;
    evtimer_del(c->timer);
    bufferevent_setwatermark(c->bev, EV_READ, 0, HOLD_READ_MAX);
    return 0;
}

/* Hands the complete request on c (c->m) to the dispatch callback; from
 * here it is with its handler. On failure answers 500 and closes. */
static void conn_dispatch(struct httpd_conn *c)
{
    struct httpd *s = c->s;
    struct httpd_msg *m = c->m;
    evtimer_del(c->timer);
    c->state = C_HANDLER;
    bufferevent_setwatermark(c->bev, EV_READ, 0, HOLD_READ_MAX);
    c->a.minor = m->minor;
    c->a.head = m->method == EVHTTP_REQ_HEAD;
    c->a.keepalive = m->keepalive;
    c->a.close = m->close;
    c->chunked = c->no_body = 0;
    c->req = s->cb.dispatch(s->ud, c, &c->m);
    if (!c->req)
        httpd_reject(c, 500, "internal error", NULL, 0); /* HTTP/1.1 when the msg was taken */
}

/* ---- reading requests ---- */

/* Adds at[0..n) to the head size; returns -1 (and sets the 431/400 answer)
 * past MAX_HEADERS_SIZE. */
static int head_grow(struct httpd_conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > MAX_HEADERS_SIZE) {
        c->error_status = 400;
        return -1;
    }
    return 0;
}

/* Moves the header assembled in c->field / c->value into c->m. */
static int header_flush(struct httpd_conn *c)
{
    if (evbuffer_get_length(c->field) == 0)
        return 0;
    if (evbuffer_add(c->field, "", 1) != 0 || evbuffer_add(c->value, "", 1) != 0)
        return -1;
    char *k = (char *)evbuffer_pullup(c->field, -1);
    char *v = (char *)evbuffer_pullup(c->value, -1);
    size_t vn = strlen(v);
    while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
        v[--vn] = '\0';
    int rc = evhttp_add_header(&c->m->headers, k, v);
    evbuffer_drain(c->field, evbuffer_get_length(c->field));
    evbuffer_drain(c->value, evbuffer_get_length(c->value));
    if (rc != 0)
        c->error_status = 400;
    return rc;
}

/* http-parser: a request begins. */
static int on_hp_begin(http_parser *p)
{
    struct httpd_conn *c = p->data;
    if (!c->m && !(c->m = msg_new())) {
        c->error_status = 500;
        return -1;
    }
    return 0;
}

/* http-parser: a piece of the request target. */
static int on_hp_url(http_parser *p, const char *at, size_t n)
{
    struct httpd_conn *c = p->data;
    if (head_grow(c, n) != 0)
        return -1;
    size_t old = c->m->uri ? strlen(c->m->uri) : 0;
    char *u = realloc(c->m->uri, old + n + 1);
    if (!u) {
        c->error_status = 500;
        return -1;
    }
    memcpy(u + old, at, n);
    u[old + n] = '\0';
    c->m->uri = u;
    return 0;
}

/* http-parser: a piece of a header name. */
static int on_hp_field(http_parser *p, const char *at, size_t n)
{
    struct httpd_conn *c = p->data;
    if (head_grow(c, n + 4) != 0)
        return -1;
    if (c->in_value && header_flush(c) != 0)
        return -1;
    c->in_value = 0;
    return evbuffer_add(c->field, at, n);
}

/* http-parser: a piece of a header value. */
static int on_hp_value(http_parser *p, const char *at, size_t n)
{
    struct httpd_conn *c = p->data;
    if (head_grow(c, n) != 0)
        return -1;
    c->in_value = 1;
    return evbuffer_add(c->value, at, n);
}

/* http-parser: the head is complete; the parser pauses so that on_read can
 * check the request before any body byte is taken. */
static int on_hp_headers_done(http_parser *p)
{
    struct httpd_conn *c = p->data;
    if (header_flush(c) != 0)
        return -1;
    c->in_value = 0;
    c->m->method = method_of(p->method);
    c->m->major = p->http_major;
    c->m->minor = p->http_minor;
    const char *conn = msg_header(c->m, "Connection");
    c->m->keepalive = conn && evutil_ascii_strcasecmp(conn, "keep-alive") == 0;
    c->m->close = conn && evutil_ascii_strcasecmp(conn, "close") == 0;
    c->head_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

/* http-parser: a piece of the body; past max_body the body is dropped, the
 * request marked too large and the parser paused for good. */
static int on_hp_body(http_parser *p, const char *at, size_t n)
{
    struct httpd_conn *c = p->data;
    struct httpd_msg *m = c->m;
    if (m->body_len + n > c->s->o.max_body) {
        m->too_large = 1;
        evbuffer_drain(m->body, evbuffer_get_length(m->body));
        c->close_after = 1;
        c->msg_done = 1;
        http_parser_pause(p, 1);
        return 0;
    }
    m->body_len += n;
    if (evbuffer_add(m->body, at, n) != 0) {
        c->error_status = 500;
        return -1;
    }
    return 0;
}

/* http-parser: the request is complete; the parser pauses until its
 * response is written. */
static int on_hp_done(http_parser *p)
{
    struct httpd_conn *c = p->data;
    c->msg_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings hp_settings = {
    .on_message_begin = on_hp_begin,
    .on_url = on_hp_url,
    .on_header_field = on_hp_field,
    .on_header_value = on_hp_value,
    .on_headers_complete = on_hp_headers_done,
    .on_body = on_hp_body,
    .on_message_complete = on_hp_done,
};

/* Gets c ready to read a new request. */
static void conn_reset_parser(struct httpd_conn *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = C_HEAD;
    c->head_bytes = 0;
    c->head_done = c->msg_done = 0;
    c->in_value = 0;
    c->error_status = 0;
    evbuffer_drain(c->field, evbuffer_get_length(c->field));
    evbuffer_drain(c->value, evbuffer_get_length(c->value));
}

/* Checks the complete head in c->m: the URI, the method, then the
 * authorize callback.
 * Returns 1 when the body may be read, 0 when an answer is queued or the
 * request is complete (too large to read), -1 when c was freed. */
static int conn_check_head(struct httpd_conn *c)
{
    struct httpd_msg *m = c->m;
    struct httpd *s = c->s;
    if (!m->uri || !(m->uri_elems = evhttp_uri_parse_with_flags(m->uri, EVHTTP_URI_NONCONFORMANT))) {
        return httpd_reject(c, 400, "bad request", NULL, 0);
    }
    const char *path = evhttp_uri_get_path(m->uri_elems);
    /* A NUL in the decoded path would only reach the handler to cause trouble. */
    if (path && strstr(path, "%00")) {
        return httpd_reject(c, 400, "bad request", NULL, 0);
    }
    if (!m->method)
        return httpd_reject(c, 501, "method not implemented", NULL, 0);
    int ok = s->cb.authorize ? s->cb.authorize(s->ud, c, m) : 1;
    if (ok <= 0)
        return ok;
    uint64_t len = c->parser.content_length;
    int chunked = (c->parser.flags & F_CHUNKED) != 0;
    int has_body = chunked || (len > 0 && len != ULLONG_MAX);
    if (has_body && !chunked && len > s->o.max_body) {
        /* Not read at all: the handler answers, then the connection closes. */
        m->too_large = 1;
        c->close_after = 1;
        c->msg_done = 1;
        return 0;
    }
    const char *expect = msg_header(m, "Expect");
    if (has_body && expect && m->minor >= 1 && evutil_ascii_strcasecmp(expect, "100-continue") == 0 &&
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0) {
        conn_free(c);
        return -1;
    }
    if (has_body) {
        c->state = C_BODY;
        if (conn_arm(c, &s->o.body_timeout) != 0) {
            conn_free(c);
            return -1;
        }
    }
    return 1;
}

/* Feeds the buffered input of c to the parser until it pauses or the input
 * is used up, acting on what it finds. c may be freed on return. */
static void conn_parse(struct httpd_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == C_HEAD || c->state == C_BODY) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return;
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t used = http_parser_execute(&c->parser, &hp_settings, v.iov_base, v.iov_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        evbuffer_drain(in, used);
        if (e != HPE_OK && e != HPE_PAUSED) {
            httpd_reject(c, c->error_status ? c->error_status : 400,
                        c->error_status == 500 ? "internal error" : "bad request", NULL, 0);
            return;
        }
        if (c->head_done) {
            c->head_done = 0;
            int ok = conn_check_head(c);
            if (ok < 0)
                return; /* c is gone */
            if (ok == 0 && !c->msg_done)
                return; /* answered */
        }
        if (c->msg_done) {
            c->msg_done = 0;
            conn_dispatch(c);
            return;
        }
        if (e == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
    }
}

/* The drain event of a lingering connection: reads and drops what the
 * client still sends, into a stack buffer (nothing is allocated), until EOF
 * or an error end the connection. */
static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct httpd_conn *c = arg;
    char buf[16384];
    (void)what;
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_free(c);
        return;
    }
}

/* After a response is written: reads the next request, or shuts the
 * connection down (dropping input for up to LINGER_SECS, so that the
 * client reads the response rather than a reset). */
static void conn_continue(struct httpd_conn *c)
{
    struct httpd *s = c->s;
    if (c->close_after) {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        if (fd < 0 || shutdown(fd, SHUT_WR) != 0) {
            conn_free(c);
            return;
        }
        c->state = C_LINGER;
        struct timeval tv = { LINGER_SECS, 0 };
        bufferevent_disable(c->bev, EV_READ);
        evbuffer_drain(bufferevent_get_input(c->bev),
                       evbuffer_get_length(bufferevent_get_input(c->bev)));
        c->drain = event_new(s->vm->base, fd, EV_READ | EV_PERSIST, on_drain, c);
        if (!c->drain || event_add(c->drain, NULL) != 0 || conn_arm(c, &tv) != 0)
            conn_free(c);
        return;
    }
    conn_reset_parser(c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    if (conn_arm(c, &s->o.header_timeout) != 0 || bufferevent_enable(c->bev, EV_READ) != 0) {
        conn_free(c);
        return;
    }
    conn_parse(c);
}

/* bufferevent read callback. */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct httpd_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    switch (c->state) {
    case C_HEAD:
    case C_BODY:
        conn_parse(c);
        break;
    case C_HANDLER:
    case C_FLUSH:
        break; /* held (up to HOLD_READ_MAX) for the next request */
    case C_LINGER:
        evbuffer_drain(in, evbuffer_get_length(in));
        break;
    }
}

/* bufferevent write callback: the output is empty. */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct httpd_conn *c = arg;
    (void)bev;
    if (c->state == C_FLUSH)
        conn_continue(c);
}

/* bufferevent event callback: EOF, an error or the write timeout end the
 * connection. */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct httpd_conn *c = arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state == C_FLUSH) {
        /* The client shut down its side after the request: it may still read. */
        c->close_after = 1;
        if (bufferevent_disable(bev, EV_READ) == 0)
            return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        conn_free(c);
}

/* Timer of a connection: the header or body deadline passed, or the linger
 * is over. */
static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    struct httpd_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->state == C_HEAD || c->state == C_BODY || c->state == C_LINGER)
        conn_free(c);
}

/* Closes c and frees it; a request still with its handler is handed to the
 * closed callback first. */
static void conn_free(struct httpd_conn *c)
{
    struct httpd *s = c->s;
    if (c->req) {
        void *req = c->req;
        c->req = NULL;
        s->cb.closed(s->ud, req);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->drain)
        event_free(c->drain);
    bufferevent_free(c->bev);
    event_free(c->timer);
    evbuffer_free(c->field);
    evbuffer_free(c->value);
    httpd_msg_free(c->m);
    free(c);
    s->nconns--;
    if ((s->paused & PAUSE_CAP) && s->nconns < s->o.max_conns) {
        s->paused &= ~PAUSE_CAP;
        listener_update(s);
    }
}

/* ---- the server ---- */

/* Returns the port a listening socket is bound to, or 0. */
static int bound_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

struct httpd *httpd_new(struct vm *vm, const char *host, int port, const struct httpd_opts *o,
                        const struct httpd_callbacks *cb, void *ud, const char **why)
{
    *why = NULL;
    struct httpd *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->vm = vm;
    s->o = *o;
    s->cb = *cb;
    s->ud = ud;

    struct evutil_addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = evutil_getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        *why = evutil_gai_strerror(gai);
        free(s);
        return NULL;
    }
    s->backoff = evtimer_new(vm->base, on_backoff, s);
    if (!s->backoff) {
        evutil_freeaddrinfo(ai);
        free(s);
        return NULL;
    }
    errno = 0;
    s->listener = evconnlistener_new_bind(vm->base, on_accept, s,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                              LEV_OPT_CLOSE_ON_EXEC,
                                          -1, ai->ai_addr, (int)ai->ai_addrlen);
    int e = errno;
    evutil_freeaddrinfo(ai);
    if (!s->listener) {
        event_free(s->backoff);
        free(s);
        *why = e ? evutil_socket_error_to_string(e) : "bind failed";
        return NULL;
    }
    evconnlistener_set_error_cb(s->listener, on_accept_error);
    evlog_hold(vm);
    s->port = bound_port(evconnlistener_get_fd(s->listener));
    return s;
}

void httpd_free(struct httpd *s)
{
    if (!s)
        return;
    evconnlistener_free(s->listener);
    s->listener = NULL; /* conn_free below must not re-enable it */
    while (s->conns)
        conn_free(s->conns);
    event_free(s->backoff);
    evlog_release();
    free(s);
}

int httpd_port(const struct httpd *s)
{
    return s->port;
}

int httpd_connections(const struct httpd *s)
{
    return s->nconns;
}
