/* lua_httpd.c - sys.listen: the HTTP/1.1 server for trusted Lua, on
 * libevent bufferevents with http-parser. Every request runs its handler in
 * a new task; the handler answers with req:respond, or streams with
 * req:start / req:write / req:finish.
 *
 * Limits, all enforced before any Lua handler runs:
 * - connections: at most max_connections in all (the listener is disabled
 *   while at the cap) and max_per_address from one client address (more are
 *   answered 503 and closed); when accept() fails (no descriptors left) the
 *   listener pauses for ACCEPT_BACKOFF and the error is logged rate-limited;
 * - deadlines: the request line and headers must be complete within
 *   header_timeout of the connection's start or of the previous response,
 *   the body within body_timeout of the headers; slow clients are dropped;
 * - authorize(method, path, authorization) runs when the headers are
 *   complete, before a body byte is read: a refusal is answered 401 and the
 *   connection closed without reading the body;
 * - the request head is capped at 64 KiB and the body at max_body: a body
 *   over it is not read, the handler sees req.too_large, and the connection
 *   closes after the response.
 *
 * Ownership: the server owns its connections (struct conn, freed by
 * conn_free). A connection owns the request being parsed (struct msg) until
 * it is complete; then the req object (Lua userdata) owns it and frees it in
 * __gc. While its response is outstanding the req object is anchored in the
 * registry and linked with its connection (r->c, c->req); the link is cut
 * when the response is complete or the connection goes away. An open server
 * is anchored too: it listens until server:close() or the VM shuts down.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <http_parser.h>
#include <lauxlib.h>

#include "sched.h"
#include "lua_headers.h"
#include "sys.h"

#define SERVER_MT "replica.httpd.server"
#define REQ_MT "replica.httpd.request"
#define WAIT_MT "replica.httpd.wait"

#define DEFAULT_MAX_BODY (1L << 20)
#define DEFAULT_MAX_CONNS 1024
#define DEFAULT_MAX_PER_ADDR 64
#define DEFAULT_HEADER_TIMEOUT 10.0
#define MAX_HEADERS_SIZE (64L << 10)  /* request line and headers together */
#define HOLD_READ_MAX (64 << 10)      /* bytes read ahead while a request is outstanding */
#define SLOW_BYTES (4UL << 20)        /* req:write refuses past this much unsent output */
#define LINGER_SECS 2                 /* input is read and dropped this long before a close */
#define ACCEPT_BACKOFF_MS 500         /* accepting pauses this long after accept() fails */
#define LOG_EVERY_SECS 10             /* a repeated error is logged at most this often */

/* User values of a req object: fields cached as Lua values. */
enum { UV_PATH = 1, UV_URI, UV_QUERY, UV_BODY, UV_HEADERS, UV_PEER, NUV = UV_PEER };

enum resp_state { RESP_NONE, RESP_STREAMING, RESP_DONE };

/* What a connection is doing. */
enum conn_state {
    C_HEAD,    /* reading a request line and headers (header deadline) */
    C_BODY,    /* reading a body (body deadline) */
    C_HANDLER, /* the request is with its handler; input is held, not parsed */
    C_FLUSH,   /* the response is complete and being written */
    C_LINGER,  /* written and shut down; input is dropped (on_drain) until EOF or the timer */
};

/* Why accepting is paused (bits of server.paused). */
enum { PAUSE_CAP = 1, PAUSE_ERROR = 2 };

struct wait_op;
struct conn;

/* A rate limit for a repeated log line: at most one per LOG_EVERY_SECS. */
struct log_limit {
    time_t last;         /* monotonic seconds of the last line, 0 = never */
    unsigned long quiet; /* occurrences not logged since */
};

struct server {
    struct vm *vm;
    struct evconnlistener *listener; /* NULL once closed */
    struct event *backoff;           /* re-enables accepting after an accept() error */
    struct conn *conns;              /* every open connection */
    int nconns;
    int paused;                      /* PAUSE_* bits; the listener is disabled while set */
    int handler_ref;                 /* the handler function */
    int authorize_ref;               /* the authorize function, or LUA_NOREF */
    int self_ref;                    /* anchors the object while open */
    size_t max_body;
    int max_conns, max_per_addr;
    struct timeval timeout;          /* write inactivity */
    struct timeval header_timeout, body_timeout;
    struct log_limit accept_log;
    int port;
};

/* One parsed request: owned by its connection while it is read, then by the
 * req object. */
struct msg {
    enum evhttp_cmd_type method;     /* 0 when not one we serve */
    unsigned short major, minor;
    char *uri;                       /* NUL-terminated, as sent */
    struct evhttp_uri *uri_elems;
    struct evkeyvalq headers;
    struct evbuffer *body;
    size_t body_len;
    int too_large;                   /* the body is over max_body and was not read */
    int keepalive;                   /* the client asked to keep the connection */
    int close;                       /* the client asked to close it */
};

struct conn {
    struct server *s;
    struct conn *prev, *next;
    struct bufferevent *bev;
    struct event *timer;             /* the header or body deadline, or the linger */
    struct event *drain;             /* reads and drops input while lingering, or NULL */
    enum conn_state state;
    http_parser parser;
    struct msg *m;                   /* the request being read, or NULL */
    struct evbuffer *field, *value;  /* the header being read */
    int in_value;                    /* the last header callback was a value */
    size_t head_bytes;               /* request line and headers so far */
    int head_done, msg_done;         /* set by the parser callbacks */
    int error_status;                /* set by a callback to answer and close */
    int close_after;                 /* close once the response is written */
    struct hreq *req;                /* the request with its handler, or NULL */
    char addr[INET6_ADDRSTRLEN];     /* the client's address, without port */
    char peer[INET6_ADDRSTRLEN + 10];
};

struct hreq {
    struct vm *vm;
    struct conn *c;            /* set while the response is outstanding on c */
    struct msg *m;             /* owned; NULL once __gc ran */
    int ref;                   /* registry anchor while c is set */
    int closed;                /* the connection went away before the response was complete */
    enum resp_state state;
    int chunked;               /* the started response uses chunked encoding */
    int no_body;               /* the started response carries no body (HEAD, 204, 304) */
    struct wait_op *waiter;    /* the task in req:wait_closed, or NULL */
    char peer[INET6_ADDRSTRLEN + 10];
};

/* A task waiting in req:wait_closed; owned by a userdata on its stack. */
struct wait_op {
    struct task_op op;
    struct task *task;
    struct hreq *r;
    struct event *timer;
};

/* What conn_dispatch hands to its protected setup function. */
struct setup {
    struct server *s;
    struct conn *c;
    struct hreq *r;
};

static const char json_500[] = "{\"error\":\"internal error\"}";

static void conn_free(struct conn *c);
static void conn_continue(struct conn *c);

/* Returns the method's name, a static string. */
static const char *method_name(enum evhttp_cmd_type m)
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

/* Returns the value of hex digit c, or -1. */
static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Pushes s[0..n) percent-decoded the way evhttp_uridecode does (a '%' not
 * followed by two hex digits stays as is); '+' becomes a space when plus is
 * set. Works on slices, so no copy is needed to NUL-terminate them. */
static void push_decoded(lua_State *L, const char *s, size_t n, int plus)
{
    if (!memchr(s, '%', n) && (!plus || !memchr(s, '+', n))) {
        lua_pushlstring(L, s, n);
        return;
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i], hi, lo;
        if (c == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        out[j++] = (char)c;
    }
    luaL_pushresultsize(&b, j);
}

/* Returns seconds on the monotonic clock. */
static time_t mono_secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Returns 1 when a line limited by ll may be logged now, and sets *quiet to
 * the occurrences left out since the last one; 0 (counting this one) if not. */
static int log_limit_pass(struct log_limit *ll, unsigned long *quiet)
{
    time_t now = mono_secs();
    if (ll->last && now - ll->last < LOG_EVERY_SECS) {
        ll->quiet++;
        return 0;
    }
    *quiet = ll->quiet;
    ll->quiet = 0;
    ll->last = now;
    return 1;
}

/* Converts seconds to a timeval. */
static struct timeval secs_tv(lua_Number secs)
{
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (lua_Number)tv.tv_sec) * 1e6);
    return tv;
}

/* ---- libevent's own log lines ---- */

static struct vm *evlog_vm;    /* the VM libevent's warnings go to, while a server is open */
static int evlog_users;        /* open servers */
static struct log_limit evlog_limit;

/* event_set_log_callback target: libevent's warnings and errors go to the
 * VM's log, at most one line per LOG_EVERY_SECS (debug lines are dropped). */
static void on_event_log(int severity, const char *msg)
{
    unsigned long quiet;
    if (severity == EVENT_LOG_DEBUG || !evlog_vm || !log_limit_pass(&evlog_limit, &quiet))
        return;
    if (quiet)
        vm_logf(evlog_vm, NULL, LOG_WARN, "libevent: %s (%lu similar lines not logged)", msg,
                quiet);
    else
        vm_logf(evlog_vm, NULL, LOG_WARN, "libevent: %s", msg);
}

/* Routes libevent's log through on_event_log while vm has an open server. */
static void evlog_hold(struct vm *vm)
{
    if (evlog_users++ == 0) {
        evlog_vm = vm;
        event_set_log_callback(on_event_log);
    }
}

/* Undoes evlog_hold. */
static void evlog_release(void)
{
    if (--evlog_users == 0) {
        event_set_log_callback(NULL);
        evlog_vm = NULL;
    }
}

/* ---- parsed requests ---- */

/* Makes h an empty header list (what TAILQ_INIT does). */
static void headers_init(struct evkeyvalq *h)
{
    h->tqh_first = NULL;
    h->tqh_last = &h->tqh_first;
}

/* Returns a new empty msg (the caller owns it; msg_free), or NULL. */
static struct msg *msg_new(void)
{
    struct msg *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    headers_init(&m->headers);
    m->body = evbuffer_new();
    if (!m->body) {
        free(m);
        return NULL;
    }
    return m;
}

/* Frees m and everything it holds; m may be NULL. */
static void msg_free(struct msg *m)
{
    if (!m)
        return;
    evhttp_clear_headers(&m->headers);
    if (m->uri_elems)
        evhttp_uri_free(m->uri_elems);
    free(m->uri);
    evbuffer_free(m->body);
    free(m);
}

/* Returns the value of header name in m (repeats not joined), or NULL. */
static const char *msg_header(struct msg *m, const char *name)
{
    return evhttp_find_header(&m->headers, name);
}

/* ---- the listener ---- */

/* Enables or disables accepting to match s->paused. */
static void listener_update(struct server *s)
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
    struct server *s = arg;
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
    struct server *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    unsigned long quiet;
    (void)l;
    if (log_limit_pass(&s->accept_log, &quiet)) {
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
static int conns_from(const struct server *s, const char *addr)
{
    int n = 0;
    for (const struct conn *c = s->conns; c; c = c->next)
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
static void conn_reset_parser(struct conn *c);

/* Arms the connection's timer for tv. Returns 0 or -1. */
static int conn_arm(struct conn *c, const struct timeval *tv)
{
    return evtimer_add(c->timer, tv);
}

/* The listener's callback: takes a new connection fd (ours from here) unless
 * its address is at the cap; disables accepting at the total cap. */
static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct server *s = arg;
    char addr[INET6_ADDRSTRLEN], peer[INET6_ADDRSTRLEN + 10];
    (void)l;
    (void)salen;
    format_addr(sa, addr, sizeof(addr), peer, sizeof(peer));
    if (conns_from(s, addr) >= s->max_per_addr) {
        refuse(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
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
    if (++s->nconns >= s->max_conns) {
        s->paused |= PAUSE_CAP;
        listener_update(s);
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_set_timeouts(c->bev, NULL, &s->timeout);
    conn_reset_parser(c);
    if (conn_arm(c, &s->header_timeout) != 0 || bufferevent_enable(c->bev, EV_READ) != 0) {
        vm_logf(s->vm, NULL, LOG_ERROR, "http: cannot watch a connection from %s", peer);
        conn_free(c);
    }
}

/* ---- the request with its handler ---- */

/* Drops the registry anchor of r (not while lua_close runs). */
static void req_unanchor(struct hreq *r)
{
    if (r->ref != LUA_NOREF && !r->vm->closing)
        luaL_unref(r->vm->L, LUA_REGISTRYINDEX, r->ref);
    r->ref = LUA_NOREF;
}

/* Wakes the task in req:wait_closed, if any. */
static void req_wake(struct hreq *r)
{
    struct wait_op *w = r->waiter;
    if (!w)
        return;
    r->waiter = NULL;
    if (w->timer)
        event_del(w->timer);
    task_wake(w->task);
}

/* Returns 1 when bytes can still be sent to the client. */
static int req_writable(const struct hreq *r)
{
    return r->c && !r->closed;
}

/* Returns 1 when nothing more can be sent: the client or the server went
 * away, or the response is complete. */
static int req_is_closed(const struct hreq *r)
{
    return r->closed || r->state == RESP_DONE || !r->c;
}

/* Cuts the link between r and its connection because the connection is
 * going away: r is closed from here. */
static void req_detach(struct hreq *r)
{
    r->c->req = NULL;
    r->c = NULL;
    r->closed = 1;
    req_unanchor(r);
    req_wake(r);
}

/* Whether the connection of m closes after the response whose headers are
 * out (the response's own Connection header, if any). */
static int must_close(const struct conn *c, const struct msg *m, const struct evkeyvalq *out)
{
    const char *conn = evhttp_find_header(out, "Connection");
    return c->close_after || m->close || (m->minor == 0 && !m->keepalive) ||
           (conn && evutil_ascii_strcasecmp(conn, "close") == 0);
}

/* Writes the status line and headers of a response to m on c: adds Date,
 * Content-Type (application/json), Content-Length (len, when >= 0 and the
 * response has a body) and Connection the way evhttp did. Sets *close when
 * the connection must close after it. Returns 0 or -1 (out of memory). */
static int write_head(struct conn *c, struct msg *m, int status, struct evkeyvalq *out,
                      ev_ssize_t len, int chunked, int *close)
{
    int needs_body = status != 204 && status != 304 && m->method != EVHTTP_REQ_HEAD;
    char num[32];
    if (m->minor >= 1 && !evhttp_find_header(out, "Date")) {
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
    *close = must_close(c, m, out);
    evhttp_remove_header(out, "Connection");
    if (*close)
        evhttp_add_header(out, "Connection", "close");
    else if (m->minor == 0)
        evhttp_add_header(out, "Connection", "keep-alive");

    struct evbuffer *o = bufferevent_get_output(c->bev);
    if (evbuffer_add_printf(o, "HTTP/1.%d %d %s\r\n", m->minor >= 1 ? 1 : 0, status,
                            status_phrase(status)) < 0)
        return -1;
    for (struct evkeyval *kv = out->tqh_first; kv; kv = kv->next.tqe_next)
        if (evbuffer_add_printf(o, "%s: %s\r\n", kv->key, kv->value) < 0)
            return -1;
    return evbuffer_add(o, "\r\n", 2);
}

/* The response to r is complete (its bytes are queued): the connection
 * goes on to flush it, then to the next request or the close. */
static void req_complete(struct hreq *r, int close)
{
    struct conn *c = r->c;
    c->req = NULL;
    r->c = NULL;
    r->state = RESP_DONE;
    if (close)
        c->close_after = 1;
    c->state = C_FLUSH;
    req_unanchor(r);
    req_wake(r);
    /* on_write goes on once the output is written, from the event loop. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

/* Sends a whole response to r: status, the headers in out (consumed) and
 * body[0..len). Returns 0, or -1 when out of memory (the connection is
 * dropped then). */
static int req_send(struct hreq *r, int status, struct evkeyvalq *out, const char *body, size_t len)
{
    struct conn *c = r->c;
    int close = 0;
    int no_body = status == 204 || status == 304 || r->m->method == EVHTTP_REQ_HEAD;
    int rc = write_head(c, r->m, status, out, (ev_ssize_t)len, 0, &close);
    evhttp_clear_headers(out);
    if (rc == 0 && !no_body && len > 0)
        rc = evbuffer_add(bufferevent_get_output(c->bev), body, len);
    if (rc != 0) {
        conn_free(c);
        return -1;
    }
    req_complete(r, close);
    return 0;
}

/* Sends 500 {"error":"internal error"} when the handler gave no response. */
static void req_fallback(struct hreq *r)
{
    if (r->state != RESP_NONE)
        return;
    if (!req_writable(r)) {
        r->state = RESP_DONE;
        req_wake(r);
        return;
    }
    struct evkeyvalq out;
    headers_init(&out);
    evhttp_add_header(&out, "Content-Type", "application/json");
    req_send(r, 500, &out, json_500, sizeof(json_500) - 1);
}

/* ---- the handler task ---- */

/* Message handler of the handler call: logs the traceback at debug level and
 * passes the error value on unchanged. */
static int handler_msgh(lua_State *L)
{
    struct vm *vm = vm_of(L);
    if (vm->log_level <= LOG_DEBUG) {
        const char *msg = lua_tostring(L, 1);
        luaL_traceback(L, L, msg ? msg : luaL_typename(L, 1), 1);
        vm_logf(vm, task_current(vm), LOG_DEBUG, "%s", lua_tostring(L, -1));
    }
    lua_settop(L, 1);
    return 1;
}

/* Continuation of runner: answers 500 if the handler did not respond, then
 * re-raises its error so the scheduler reports the task as failed. */
static int runner_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    struct hreq *r = luaL_checkudata(L, 2, REQ_MT);
    req_fallback(r);
    if (status != LUA_OK && status != LUA_YIELD)
        return lua_error(L);
    return 0;
}

/* The body of every request task: runner(handler, req) calls handler(req). */
static int runner(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushcfunction(L, handler_msgh);
    lua_replace(L, 1); /* msgh, req, handler, req */
    return runner_done(L, lua_pcallk(L, 1, 0, 1, 0, runner_done), 0);
}

/* Returns the path of m's URI ("/" when empty). */
static const char *msg_path(const struct msg *m)
{
    const char *path = evhttp_uri_get_path(m->uri_elems);
    return path && *path ? path : "/";
}

/* Runs in protected mode from conn_dispatch: builds the req object (which
 * takes c's msg), anchors it and spawns the handler task. Argument: the
 * struct setup. */
static int setup_request(lua_State *L)
{
    struct setup *st = lua_touserdata(L, 1);
    struct server *s = st->s;
    struct conn *c = st->c;
    const char *path = msg_path(c->m);

    struct hreq *r = lua_newuserdatauv(L, sizeof(*r), NUV);
    memset(r, 0, sizeof(*r));
    r->vm = s->vm;
    r->ref = LUA_NOREF;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    luaL_setmetatable(L, REQ_MT);
    r->m = c->m; /* the req object owns the msg from here (freed in __gc) */
    c->m = NULL;
    int ridx = lua_gettop(L);
    push_decoded(L, path, strlen(path), 0);
    char name[256];
    snprintf(name, sizeof(name), "http %s %s", method_name(r->m->method), lua_tostring(L, -1));
    for (char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?'; /* the name goes into log lines */
    lua_setiuservalue(L, ridx, UV_PATH);

    lua_pushvalue(L, ridx);
    r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    st->r = r;
    lua_pushcfunction(L, runner);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->handler_ref);
    lua_pushvalue(L, ridx);
    struct task_opts o = { name, 0, 0, 0 };
    if (!task_spawn(s->vm, L, 2, &o, NULL))
        return luaL_error(L, "out of memory");
    r->c = c;
    c->req = r;
    return 0;
}

/* Answers status with a JSON error body {"error": why} (plus a
 * WWW-Authenticate challenge when given) on a request that will not reach
 * a handler, and closes the connection after it. Returns 0, or -1 when out
 * of memory: c is freed then. */
static int conn_reject(struct conn *c, int status, const char *why, const char *challenge)
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
    if (rc >= 0)
        rc = evbuffer_add(o, "\r\n", 2);
    if (rc == 0 && !head)
        rc = evbuffer_add_buffer(o, body);
    evbuffer_free(body);
    if (rc != 0) {
        conn_free(c);
        return -1;
    }
    msg_free(c->m);
    c->m = NULL;
    c->close_after = 1;
    c->state = C_FLUSH;
    evtimer_del(c->timer);
    bufferevent_setwatermark(c->bev, EV_READ, 0, HOLD_READ_MAX);
    return 0;
}

/* Starts the handler of the complete request on c (c->m). On failure
 * answers 500 and closes. */
static void conn_dispatch(struct conn *c)
{
    struct server *s = c->s;
    lua_State *L = s->vm->L;
    int top = lua_gettop(L);
    struct setup st = { s, c, NULL };
    int rc = LUA_ERRMEM;
    evtimer_del(c->timer);
    c->state = C_HANDLER;
    bufferevent_setwatermark(c->bev, EV_READ, 0, HOLD_READ_MAX);
    if (lua_checkstack(L, 4)) {
        lua_pushcfunction(L, handler_msgh);
        lua_pushcfunction(L, setup_request);
        lua_pushlightuserdata(L, &st);
        rc = lua_pcall(L, 1, 0, top + 1);
    }
    if (rc != LUA_OK && !(st.r && st.r->c)) {
        const char *err = rc == LUA_ERRMEM ? "out of memory" : lua_tostring(L, -1);
        vm_logf(s->vm, NULL, LOG_ERROR, "http: cannot start the handler of a request: %s",
                err ? err : "error");
        if (st.r)
            req_unanchor(st.r); /* it owns the msg: conn_reject answers HTTP/1.1 */
        conn_reject(c, 500, "internal error", NULL);
    }
    lua_settop(L, top);
}

/* Calls the server's authorize(method, path, authorization) for the
 * complete head in c->m. Returns 1 when the request may go on; otherwise
 * the refusal (401, or 500 if authorize raised) is queued and 0 returned,
 * or -1 when c had to be freed.
 * Runs from the event loop, on the main state, and must not yield. */
static int conn_authorize(struct conn *c)
{
    struct server *s = c->s;
    if (s->authorize_ref == LUA_NOREF)
        return 1;
    lua_State *L = s->vm->L;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 6))
        return conn_reject(c, 500, "internal error", NULL);
    lua_pushcfunction(L, handler_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->authorize_ref);
    lua_pushstring(L, method_name(c->m->method));
    const char *path = msg_path(c->m);
    push_decoded(L, path, strlen(path), 0);
    int n = 0;
    for (struct evkeyval *kv = c->m->headers.tqh_first; kv; kv = kv->next.tqe_next) {
        if (evutil_ascii_strcasecmp(kv->key, "Authorization") != 0)
            continue;
        if (n++)
            lua_pushliteral(L, ", ");
        lua_pushstring(L, kv->value);
        if (n > 1)
            lua_concat(L, 3);
    }
    if (!n)
        lua_pushnil(L);
    int rc = lua_pcall(L, 3, 3, top + 1);
    if (rc != LUA_OK) {
        vm_logf(s->vm, NULL, LOG_ERROR, "http: authorize raised: %s",
                lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
        lua_settop(L, top);
        return conn_reject(c, 500, "internal error", NULL);
    }
    if (lua_toboolean(L, top + 2)) {
        lua_settop(L, top);
        return 1;
    }
    const char *why = lua_tostring(L, top + 3);
    const char *challenge = lua_tostring(L, top + 4);
    if (challenge && strpbrk(challenge, "\r\n"))
        challenge = NULL;
    int rc2 = conn_reject(c, 401, why ? why : "unauthorized", challenge);
    lua_settop(L, top);
    return rc2;
}

/* ---- reading requests ---- */

/* Adds at[0..n) to the head size; returns -1 (and sets the 431/400 answer)
 * past MAX_HEADERS_SIZE. */
static int head_grow(struct conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > MAX_HEADERS_SIZE) {
        c->error_status = 400;
        return -1;
    }
    return 0;
}

/* Moves the header assembled in c->field / c->value into c->m. */
static int header_flush(struct conn *c)
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
    struct conn *c = p->data;
    if (!c->m && !(c->m = msg_new())) {
        c->error_status = 500;
        return -1;
    }
    return 0;
}

/* http-parser: a piece of the request target. */
static int on_hp_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
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
    struct conn *c = p->data;
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
    struct conn *c = p->data;
    if (head_grow(c, n) != 0)
        return -1;
    c->in_value = 1;
    return evbuffer_add(c->value, at, n);
}

/* http-parser: the head is complete; the parser pauses so that on_read can
 * check the request before any body byte is taken. */
static int on_hp_headers_done(http_parser *p)
{
    struct conn *c = p->data;
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
    struct conn *c = p->data;
    struct msg *m = c->m;
    if (m->body_len + n > c->s->max_body) {
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
    struct conn *c = p->data;
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
static void conn_reset_parser(struct conn *c)
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

/* Checks the complete head in c->m: the URI, the method, then authorize.
 * Returns 1 when the body may be read, 0 when an answer is queued or the
 * request is complete (too large to read), -1 when c was freed. */
static int conn_check_head(struct conn *c)
{
    struct msg *m = c->m;
    struct server *s = c->s;
    if (!m->uri || !(m->uri_elems = evhttp_uri_parse_with_flags(m->uri, EVHTTP_URI_NONCONFORMANT))) {
        return conn_reject(c, 400, "bad request", NULL);
    }
    const char *path = evhttp_uri_get_path(m->uri_elems);
    /* A NUL in the decoded path would only reach the handler to cause trouble. */
    if (path && strstr(path, "%00")) {
        return conn_reject(c, 400, "bad request", NULL);
    }
    if (!m->method)
        return conn_reject(c, 501, "method not implemented", NULL);
    int ok = conn_authorize(c);
    if (ok <= 0)
        return ok;
    uint64_t len = c->parser.content_length;
    int chunked = (c->parser.flags & F_CHUNKED) != 0;
    int has_body = chunked || (len > 0 && len != ULLONG_MAX);
    if (has_body && !chunked && len > s->max_body) {
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
        if (conn_arm(c, &s->body_timeout) != 0) {
            conn_free(c);
            return -1;
        }
    }
    return 1;
}

/* Feeds the buffered input of c to the parser until it pauses or the input
 * is used up, acting on what it finds. c may be freed on return. */
static void conn_parse(struct conn *c)
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
            conn_reject(c, c->error_status ? c->error_status : 400,
                        c->error_status == 500 ? "internal error" : "bad request", NULL);
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
    struct conn *c = arg;
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
static void conn_continue(struct conn *c)
{
    struct server *s = c->s;
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
    if (conn_arm(c, &s->header_timeout) != 0 || bufferevent_enable(c->bev, EV_READ) != 0) {
        conn_free(c);
        return;
    }
    conn_parse(c);
}

/* bufferevent read callback. */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
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
    struct conn *c = arg;
    (void)bev;
    if (c->state == C_FLUSH)
        conn_continue(c);
}

/* bufferevent event callback: EOF, an error or the write timeout end the
 * connection. */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
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
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->state == C_HEAD || c->state == C_BODY || c->state == C_LINGER)
        conn_free(c);
}

/* Closes c and frees it; a request still with its handler sees the close. */
static void conn_free(struct conn *c)
{
    struct server *s = c->s;
    if (c->req)
        req_detach(c->req);
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
    msg_free(c->m);
    free(c);
    s->nconns--;
    if ((s->paused & PAUSE_CAP) && s->nconns < s->max_conns) {
        s->paused &= ~PAUSE_CAP;
        listener_update(s);
    }
}

/* ---- the req object ---- */

/* Returns the req object at idx. */
static struct hreq *check_req(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, REQ_MT);
}

/* Pushes the request's headers as a table: lower-case name -> value, with
 * repeated headers joined by ", ". */
static void push_headers(lua_State *L, struct msg *m)
{
    struct evkeyvalq *h = &m->headers;
    lua_newtable(L);
    for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next) {
        size_t n = strlen(kv->key);
        luaL_Buffer b;
        char *name = luaL_buffinitsize(L, &b, n);
        for (size_t i = 0; i < n; i++) {
            char c = kv->key[i];
            name[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        luaL_pushresultsize(&b, n);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            lua_pushliteral(L, ", ");
            lua_pushstring(L, kv->value);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, kv->value);
        }
        lua_rawset(L, -3);
    }
}

/* Pushes the query parameters of the request as a table (keys and values
 * decoded, '+' as a space, the last of a repeated name wins). A parameter
 * without '=' has the value "". */
static void push_query(lua_State *L, struct msg *m)
{
    const char *q = evhttp_uri_get_query(m->uri_elems);
    lua_newtable(L);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        const char *kend = eq ? eq : end;
        if (kend > q) {
            push_decoded(L, q, (size_t)(kend - q), 1);
            if (eq)
                push_decoded(L, eq + 1, (size_t)(end - eq - 1), 1);
            else
                lua_pushliteral(L, "");
            lua_rawset(L, -3);
        }
        q = amp ? amp + 1 : NULL;
    }
}

/* Pushes the body ("" when none), or nil when it is over max_body. */
static void push_body(lua_State *L, struct msg *m)
{
    size_t n = evbuffer_get_length(m->body);
    if (m->too_large)
        lua_pushnil(L);
    else if (n == 0)
        lua_pushliteral(L, "");
    else
        lua_pushlstring(L, (const char *)evbuffer_pullup(m->body, -1), n);
}

/* Pushes a lazily built field (uri, query, body, headers, peer), cached in
 * the user value uv. */
static int push_lazy(lua_State *L, struct hreq *r, int uv)
{
    if (lua_getiuservalue(L, 1, uv) != LUA_TNIL || !r->m)
        return 1;
    lua_pop(L, 1);
    switch (uv) {
    case UV_URI: lua_pushstring(L, r->m->uri); break;
    case UV_QUERY: push_query(L, r->m); break;
    case UV_BODY: push_body(L, r->m); break;
    case UV_HEADERS: push_headers(L, r->m); break;
    default: lua_pushstring(L, r->peer); break;
    }
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, uv);
    return 1;
}

/* __index: fields (method, path, uri, query, body, headers, peer,
 * too_large), then the methods in upvalue 1. */
static int req_index(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    static const char *const lazy[] = { "uri", "query", "body", "headers", "peer", NULL };
    if (strcmp(k, "method") == 0) {
        lua_pushstring(L, r->m ? method_name(r->m->method) : "UNKNOWN");
        return 1;
    }
    if (strcmp(k, "path") == 0) {
        lua_getiuservalue(L, 1, UV_PATH);
        return 1;
    }
    if (strcmp(k, "too_large") == 0) {
        lua_pushboolean(L, r->m && r->m->too_large);
        return 1;
    }
    for (int i = 0; lazy[i]; i++)
        if (strcmp(k, lazy[i]) == 0)
            return push_lazy(L, r, UV_URI + i);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* req:header(name) -> value | nil. Case-insensitive; repeated headers are
 * joined with ", ". */
static int req_header(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (!r->m) {
        lua_pushnil(L);
        return 1;
    }
    int found = 0;
    for (struct evkeyval *kv = r->m->headers.tqh_first; kv; kv = kv->next.tqe_next) {
        if (evutil_ascii_strcasecmp(kv->key, name) != 0)
            continue;
        if (found++) {
            lua_pushliteral(L, ", ");
            lua_pushstring(L, kv->value);
            lua_concat(L, 3);
        } else {
            lua_pushstring(L, kv->value);
        }
    }
    if (!found)
        lua_pushnil(L);
    return 1;
}

/* Adds the headers in the table at idx (name = value or name = {values})
 * to the response; raises on an invalid name or value. */
struct resp_headers {
    struct evkeyvalq *out;
};

/* lhttp_each_header callback: adds one response header. */
static void add_response_header(lua_State *L, void *ud, const char *name, const char *value)
{
    struct resp_headers *h = ud;
    if (evhttp_add_header(h->out, name, value) != 0)
        luaL_error(L, "cannot add response header '%s'", name);
}

/* Protected part of add_headers: walks the table at 2 into the struct
 * resp_headers at 1. */
static int collect_headers(lua_State *L)
{
    struct resp_headers *h = lua_touserdata(L, 1);
    lhttp_each_header(L, 2, "response", add_response_header, h);
    return 0;
}

/* Fills out from the header table at idx (nil = none). Raises on an invalid
 * header, with out emptied. */
static void add_headers(lua_State *L, int idx, struct evkeyvalq *out)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    struct resp_headers h = { out };
    lua_pushcfunction(L, collect_headers);
    lua_pushlightuserdata(L, &h);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        evhttp_clear_headers(out);
        lua_error(L);
    }
}

/* Checks the status argument: an integer 200..599. */
static int check_status(lua_State *L, int idx)
{
    lua_Integer st = luaL_checkinteger(L, idx);
    luaL_argcheck(L, st >= 200 && st <= 599, idx, "status must be 200..599");
    return (int)st;
}

/* Pushes nil, "closed": the client is gone. */
static int push_closed(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
}

/* req:respond(status [, headers [, body]]) -> true | nil, "closed". Sends
 * the whole response; raises if a response was already sent or started. */
static int req_respond(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    int status = check_status(L, 2);
    size_t blen = 0;
    const char *body = luaL_optlstring(L, 4, NULL, &blen);
    if (r->state != RESP_NONE)
        return luaL_error(L, "req:respond: the response was already %s",
                          r->state == RESP_STREAMING ? "started" : "sent");
    if (!req_writable(r)) {
        if (!lua_isnoneornil(L, 3))
            luaL_checktype(L, 3, LUA_TTABLE);
        r->state = RESP_DONE;
        req_wake(r);
        return push_closed(L);
    }
    struct evkeyvalq out;
    headers_init(&out);
    add_headers(L, 3, &out);
    if (req_send(r, status, &out, body, blen) != 0)
        return luaL_error(L, "req:respond: out of memory");
    lua_pushboolean(L, 1);
    return 1;
}

/* req:start(status [, headers]) -> true | nil, "closed". Sends the status
 * and headers; the body follows with req:write (chunked for HTTP/1.1). */
static int req_start(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    int status = check_status(L, 2);
    if (r->state != RESP_NONE)
        return luaL_error(L, "req:start: the response was already %s",
                          r->state == RESP_STREAMING ? "started" : "sent");
    if (!req_writable(r)) {
        r->state = RESP_STREAMING;
        return push_closed(L);
    }
    struct evkeyvalq out;
    headers_init(&out);
    add_headers(L, 3, &out);
    r->no_body = status == 204 || status == 304 || r->m->method == EVHTTP_REQ_HEAD;
    r->chunked = !r->no_body && r->m->minor >= 1 && !evhttp_find_header(&out, "Content-Length");
    int close = 0;
    int rc = write_head(r->c, r->m, status, &out, -1, r->chunked, &close);
    evhttp_clear_headers(&out);
    if (rc != 0) {
        conn_free(r->c);
        return luaL_error(L, "req:start: out of memory");
    }
    if (close)
        r->c->close_after = 1;
    r->state = RESP_STREAMING;
    lua_pushboolean(L, 1);
    return 1;
}

/* req:write(chunk) -> true | nil, "closed" | nil, "slow". Queues chunk and
 * never yields. "slow": the client has more than 4 MiB unread, so chunk was
 * not queued. */
static int req_write(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    size_t n;
    const char *chunk = luaL_checklstring(L, 2, &n);
    if (r->state == RESP_NONE)
        return luaL_error(L, "req:write: call req:start first");
    if (r->state == RESP_DONE)
        return luaL_error(L, "req:write: the response is finished");
    if (!req_writable(r))
        return push_closed(L);
    struct evbuffer *o = bufferevent_get_output(r->c->bev);
    if (evbuffer_get_length(o) > SLOW_BYTES) {
        lua_pushnil(L);
        lua_pushliteral(L, "slow");
        return 2;
    }
    if (n > 0 && !r->no_body) {
        int rc = 0;
        if (r->chunked)
            rc = evbuffer_add_printf(o, "%zx\r\n", n) < 0 ? -1 : 0;
        if (rc == 0)
            rc = evbuffer_add(o, chunk, n);
        if (rc == 0 && r->chunked)
            rc = evbuffer_add(o, "\r\n", 2);
        if (rc != 0) {
            conn_free(r->c);
            return luaL_error(L, "req:write: out of memory");
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* req:finish() -> true | nil, "closed". Ends a started response. */
static int req_finish(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    if (r->state == RESP_NONE)
        return luaL_error(L, "req:finish: call req:start first");
    if (r->state == RESP_DONE)
        return luaL_error(L, "req:finish: the response is already finished");
    if (!req_writable(r)) {
        r->state = RESP_DONE;
        req_wake(r);
        return push_closed(L);
    }
    if (r->chunked && evbuffer_add(bufferevent_get_output(r->c->bev), "0\r\n\r\n", 5) != 0) {
        conn_free(r->c);
        return luaL_error(L, "req:finish: out of memory");
    }
    req_complete(r, 0);
    lua_pushboolean(L, 1);
    return 1;
}

/* req:closed() -> boolean: true once nothing more can be sent (the client
 * left, the server closed, or the response is complete). */
static int req_closed(lua_State *L)
{
    lua_pushboolean(L, req_is_closed(check_req(L, 1)));
    return 1;
}

/* Timer of req:wait_closed(timeout). */
static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    struct wait_op *w = arg;
    (void)fd;
    (void)what;
    if (w->r->waiter == w)
        w->r->waiter = NULL;
    task_wake(w->task);
}

/* task_op cancel: stops the timer and unregisters the waiter. */
static void wait_cancel(struct task_op *op)
{
    struct wait_op *w = (struct wait_op *)op;
    if (w->timer)
        event_del(w->timer);
    if (w->r->waiter == w)
        w->r->waiter = NULL;
}

/* __gc of a wait op: frees the timer; safe to run twice. */
static int wait_gc(lua_State *L)
{
    struct wait_op *w = luaL_checkudata(L, 1, WAIT_MT);
    if (w->timer)
        event_free(w->timer);
    w->timer = NULL;
    return 0;
}

/* Continuation of req:wait_closed. */
static int wait_done(lua_State *L, int status, lua_KContext ctx)
{
    struct wait_op *w = (struct wait_op *)ctx;
    (void)status;
    if (w->timer)
        event_free(w->timer);
    w->timer = NULL;
    if (w->op.cancelled)
        return task_push_cancelled(L);
    lua_pushboolean(L, req_is_closed(w->r));
    return 1;
}

/* req:wait_closed([timeout]) -> true | false | nil, "cancelled". Yields
 * until req:closed() would be true (true) or timeout seconds pass (false).
 * One task at a time may wait on a request. */
static int req_wait_closed(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    lua_Number secs = luaL_optnumber(L, 2, -1);
    luaL_argcheck(L, lua_isnoneornil(L, 2) || secs >= 0, 2, "must not be negative");
    struct task *t = task_current(r->vm);
    if (!t)
        return luaL_error(L, "req:wait_closed must be called from a task");
    task_check_yieldable(L, t);
    if (req_is_closed(r)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (r->waiter)
        return luaL_error(L, "req:wait_closed: another task is already waiting");
    if (t->cancelled)
        return task_push_cancelled(L);
    lua_settop(L, 2);
    struct wait_op *w = lua_newuserdatauv(L, sizeof(*w), 0);
    memset(w, 0, sizeof(*w));
    luaL_setmetatable(L, WAIT_MT);
    w->op.cancel = wait_cancel;
    w->task = t;
    w->r = r;
    if (secs >= 0) {
        w->timer = evtimer_new(r->vm->base, on_wait_timer, w);
        if (!w->timer)
            return luaL_error(L, "req:wait_closed: out of memory");
        struct timeval tv = secs_tv(secs);
        if (evtimer_add(w->timer, &tv) != 0)
            return luaL_error(L, "req:wait_closed: cannot arm timer");
    }
    r->waiter = w;
    return task_yield(L, t, &w->op, wait_done, (lua_KContext)w);
}

/* __gc of a req object: frees the msg it owns; safe to run twice. While its
 * connection may still use it the object is anchored, so this runs with
 * r->c set only from lua_close; then the server's __gc cuts the link. */
static int req_gc(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    msg_free(r->m);
    r->m = NULL;
    r->waiter = NULL;
    return 0;
}

/* ---- the server object ---- */

/* Stops listening and closes every connection: outstanding requests see
 * the close. Idempotent. */
static void server_free(struct server *s)
{
    if (!s->listener)
        return;
    evconnlistener_free(s->listener);
    s->listener = NULL;
    while (s->conns) {
        struct hreq *r = s->conns->req;
        if (r && s->vm->closing)
            r->waiter = NULL; /* the waiting task may be gone already */
        conn_free(s->conns);
    }
    event_free(s->backoff);
    s->backoff = NULL;
    evlog_release();
    if (!s->vm->closing) {
        luaL_unref(s->vm->L, LUA_REGISTRYINDEX, s->handler_ref);
        luaL_unref(s->vm->L, LUA_REGISTRYINDEX, s->authorize_ref);
        luaL_unref(s->vm->L, LUA_REGISTRYINDEX, s->self_ref);
    }
    s->handler_ref = s->authorize_ref = s->self_ref = LUA_NOREF;
}

/* Returns the server object at idx. */
static struct server *check_server(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, SERVER_MT);
}

/* server:close(): stops listening and drops every connection. Idempotent. */
static int server_close(lua_State *L)
{
    server_free(check_server(L, 1));
    return 0;
}

/* server:port() -> the bound port number */
static int server_port(lua_State *L)
{
    lua_pushinteger(L, check_server(L, 1)->port);
    return 1;
}

/* server:connections() -> the number of open connections */
static int server_connections(lua_State *L)
{
    lua_pushinteger(L, check_server(L, 1)->nconns);
    return 1;
}

/* __gc: closes the server (only reached at VM shutdown while it is open). */
static int server_gc(lua_State *L)
{
    server_free(check_server(L, 1));
    return 0;
}

/* Reads an optional number field of the options table at 1. */
static lua_Number opt_number(lua_State *L, const char *k, lua_Number def)
{
    lua_getfield(L, 1, k);
    lua_Number v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Reads an optional positive number of seconds from the options table. */
static struct timeval opt_secs(lua_State *L, const char *k, lua_Number def)
{
    lua_Number v = opt_number(L, k, def);
    if (!(v > 0 && v < 1e9))
        luaL_error(L, "sys.listen: '%s' must be a positive number of seconds", k);
    return secs_tv(v);
}

/* Reads an optional positive integer from the options table. */
static int opt_count(lua_State *L, const char *k, int def)
{
    lua_Number v = opt_number(L, k, def);
    if (v != (int)v || v < 1 || v > 1e7)
        luaL_error(L, "sys.listen: '%s' must be a positive integer", k);
    return (int)v;
}

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

/* sys.listen{host=, port=, handler=, authorize=, max_body=, timeout=,
 * header_timeout=, body_timeout=, max_connections=, max_per_address=}
 * -> server | nil, err. The server object owns the listener and its
 * connections and stays open until server:close(). */
static int l_listen(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    lua_Number port = opt_number(L, "port", 0);
    lua_Number max_body = opt_number(L, "max_body", (lua_Number)DEFAULT_MAX_BODY);
    lua_Number timeout = opt_number(L, "timeout", 60);
    if (lua_getfield(L, 1, "handler") != LUA_TFUNCTION)
        return luaL_error(L, "sys.listen: 'handler' must be a function");
    int handler = lua_gettop(L);
    int authorize = 0;
    if (lua_getfield(L, 1, "authorize") != LUA_TNIL) {
        luaL_argexpected(L, lua_isfunction(L, -1), 1, "'authorize' to be a function");
        authorize = lua_gettop(L);
    }
    if (port != (int)port || port < 0 || port > 65535)
        return luaL_error(L, "sys.listen: 'port' must be an integer 0..65535");
    if (max_body < 0 || max_body > (lua_Number)(EV_SSIZE_MAX / 4))
        return luaL_error(L, "sys.listen: 'max_body' out of range");
    if (!(timeout > 0 && timeout < 1e9))
        return luaL_error(L, "sys.listen: 'timeout' must be a positive number of seconds");
    struct timeval header_tv = opt_secs(L, "header_timeout", DEFAULT_HEADER_TIMEOUT);
    struct timeval body_tv = opt_secs(L, "body_timeout", timeout);
    int max_conns = opt_count(L, "max_connections", DEFAULT_MAX_CONNS);
    int max_per_addr = opt_count(L, "max_per_address", DEFAULT_MAX_PER_ADDR);
    char where[300];
    if (strchr(host, ':'))
        snprintf(where, sizeof(where), "[%s]:%d", host, (int)port);
    else
        snprintf(where, sizeof(where), "%s:%d", host, (int)port);

    struct server *s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    s->vm = vm;
    s->handler_ref = s->authorize_ref = s->self_ref = LUA_NOREF;
    luaL_setmetatable(L, SERVER_MT);
    int sidx = lua_gettop(L);
    s->max_body = (size_t)max_body;
    s->timeout = secs_tv(timeout);
    s->header_timeout = header_tv;
    s->body_timeout = body_tv;
    s->max_conns = max_conns;
    s->max_per_addr = max_per_addr;

    struct evutil_addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", (int)port);
    int gai = evutil_getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", where, evutil_gai_strerror(gai));
        return 2;
    }
    s->backoff = evtimer_new(vm->base, on_backoff, s);
    if (!s->backoff) {
        evutil_freeaddrinfo(ai);
        return luaL_error(L, "sys.listen: out of memory");
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
        s->backoff = NULL;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", where,
                        e ? evutil_socket_error_to_string(e) : "bind failed");
        return 2;
    }
    evconnlistener_set_error_cb(s->listener, on_accept_error);
    evlog_hold(vm);
    s->port = bound_port(evconnlistener_get_fd(s->listener));
    lua_pushvalue(L, handler);
    s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (authorize) {
        lua_pushvalue(L, authorize);
        s->authorize_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, sidx);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, sidx);
    return 1;
}

void sys_add_httpd(struct vm *vm, lua_State *L)
{
    if (luaL_newmetatable(L, SERVER_MT)) {
        static const luaL_Reg methods[] = { { "port", server_port },
                                            { "connections", server_connections },
                                            { "close", server_close },
                                            { NULL, NULL } };
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, server_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, REQ_MT)) {
        static const luaL_Reg methods[] = {
            { "header", req_header }, { "respond", req_respond }, { "start", req_start },
            { "write", req_write },   { "finish", req_finish },   { "closed", req_closed },
            { "wait_closed", req_wait_closed }, { NULL, NULL }
        };
        luaL_newlib(L, methods);
        lua_pushcclosure(L, req_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, req_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, WAIT_MT)) {
        lua_pushcfunction(L, wait_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);

    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_listen, 1);
    lua_setfield(L, -2, "listen");
}
