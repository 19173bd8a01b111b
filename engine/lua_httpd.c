/* lua_httpd.c - sys.listen: the HTTP server for trusted Lua, on libevent's
 * evhttp. Every request runs its handler in a new task; the handler answers
 * with req:respond, or streams with req:start / req:write / req:finish.
 *
 * Ownership of a request (libevent 2.1):
 * - evhttp owns the evhttp_request until the response is complete; then it
 *   frees it once the bytes are written. Our pointer (r->ev) is dropped at
 *   evhttp_send_reply / evhttp_send_reply_end, before libevent can free it.
 * - If the connection fails first (client gone, write timeout), evhttp
 *   detaches the request (its connection becomes NULL), frees the connection
 *   and calls our close callback: from then on the request is ours
 *   (r->owned) and the req object frees it in __gc. If the connection is
 *   freed with the request still attached (server:close), libevent frees the
 *   request right after the close callback, so we only drop the pointer.
 * - While libevent holds a pointer to the req object (the close callback's
 *   argument), the object is anchored in the registry.
 * - An open server is anchored too (it is the request callback's argument):
 *   it listens until server:close() or the VM shuts down.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <lauxlib.h>

#include "sched.h"
#include "lua_headers.h"
#include "sys.h"

#define SERVER_MT "replica.httpd.server"
#define REQ_MT "replica.httpd.request"
#define WAIT_MT "replica.httpd.wait"

#define DEFAULT_MAX_BODY (1L << 20)
#define MAX_HEADERS_SIZE (64L << 10)  /* request line and headers together */
#define HOLD_READ_MAX (64 << 10)      /* bytes read ahead while a request is outstanding */
#define SLOW_BYTES (4UL << 20)        /* req:write refuses past this much unsent output */

/* User values of a req object: fields cached as Lua values. */
enum { UV_PATH = 1, UV_URI, UV_QUERY, UV_BODY, UV_HEADERS, UV_PEER, NUV = UV_PEER };

enum resp_state { RESP_NONE, RESP_STREAMING, RESP_DONE };

struct wait_op;

struct server {
    struct vm *vm;
    struct evhttp *http;      /* NULL once closed */
    int handler_ref;          /* the handler function */
    int self_ref;             /* anchors the object while open */
    size_t max_body;
    struct timeval timeout;
    int port;
};

struct hreq {
    struct vm *vm;
    struct evhttp_request *ev; /* see the ownership notes at the top */
    int owned;                 /* ev was detached from its connection: __gc frees it */
    int ref;                   /* registry anchor while libevent may call back with us */
    int closed;                /* the connection went away before the response was complete */
    enum resp_state state;
    int too_large;
    enum evhttp_cmd_type method;
    struct timeval timeout;    /* the server's connection timeout, restored when done */
    struct wait_op *waiter;    /* the task in req:wait_closed, or NULL */
};

/* A task waiting in req:wait_closed; owned by a userdata on its stack. */
struct wait_op {
    struct task_op op;
    struct task *task;
    struct hreq *r;
    struct event *timer;
};

/* What the request callback hands to its protected setup function. */
struct setup {
    struct server *s;
    struct evhttp_request *ev;
    struct hreq *r;
};

static const char json_500[] = "{\"error\":\"internal error\"}";

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

/* ---- the connection while a request is outstanding ---- */

static void on_conn_close(struct evhttp_connection *evcon, void *arg);

/* Watches the request's connection until the response is complete: registers
 * the close callback and keeps reading (without evhttp's read callback,
 * which aborts on bytes arriving in this state in libevent 2.1) so that a
 * client leaving is seen at once. The idle read timeout is off meanwhile: a
 * handler or a stream may take as long as it needs. */
static void conn_hold(struct hreq *r)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->ev);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    bufferevent_data_cb wcb;
    bufferevent_event_cb ecb;
    void *arg;
    evhttp_connection_set_closecb(evcon, on_conn_close, r);
    bufferevent_getcb(bev, NULL, &wcb, &ecb, &arg);
    bufferevent_setcb(bev, NULL, wcb, ecb, arg);
    bufferevent_setwatermark(bev, EV_READ, 0, HOLD_READ_MAX);
    bufferevent_set_timeouts(bev, NULL, &r->timeout);
    bufferevent_enable(bev, EV_READ);
}

/* Undoes conn_hold before the response is handed to evhttp (which restores
 * its own callbacks when it reads the next request). */
static void conn_release(struct hreq *r)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->ev);
    if (!evcon)
        return;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bufferevent_set_timeouts(bev, &r->timeout, &r->timeout);
}

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
    return r->ev && !r->closed;
}

/* Returns 1 when nothing more can be sent: the client or the server went
 * away, or the response is complete. */
static int req_is_closed(const struct hreq *r)
{
    return r->closed || r->state == RESP_DONE || !r->ev;
}

/* Hands the response to evhttp (finish = end a stream, else send a whole
 * reply with the status); libevent owns the request from here. */
static void req_complete(struct hreq *r, int finish, int status)
{
    struct evhttp_request *ev = r->ev;
    conn_release(r);
    r->ev = NULL;
    r->state = RESP_DONE;
    if (finish)
        evhttp_send_reply_end(ev);
    else
        evhttp_send_reply(ev, status, NULL, NULL);
    req_unanchor(r);
    req_wake(r);
}

/* The connection's close callback: the client left, the connection failed,
 * or the server is being freed. Marks the request closed and gives up or
 * takes over the evhttp_request (see the notes at the top). */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct hreq *r = arg;
    (void)evcon;
    if (!r->ev || r->closed)
        return;
    r->closed = 1;
    if (evhttp_request_get_connection(r->ev) == NULL)
        r->owned = 1;
    else
        r->ev = NULL;
    req_unanchor(r);
    req_wake(r);
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
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);
    struct evbuffer *body = evhttp_request_get_output_buffer(r->ev);
    evhttp_clear_headers(out);
    evbuffer_drain(body, evbuffer_get_length(body));
    evhttp_add_header(out, "Content-Type", "application/json");
    if (r->method != EVHTTP_REQ_HEAD)
        evbuffer_add(body, json_500, sizeof(json_500) - 1);
    req_complete(r, 0, 500);
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

/* Runs in protected mode from on_request: builds the req object, anchors it
 * and spawns the handler task. Arguments: the struct setup. */
static int setup_request(lua_State *L)
{
    struct setup *st = lua_touserdata(L, 1);
    struct server *s = st->s;
    struct evhttp_request *ev = st->ev;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(ev));
    if (!path || !*path)
        path = "/";

    struct hreq *r = lua_newuserdatauv(L, sizeof(*r), NUV);
    memset(r, 0, sizeof(*r));
    r->vm = s->vm;
    r->ref = LUA_NOREF;
    r->method = evhttp_request_get_command(ev);
    r->timeout = s->timeout;
    r->too_large = evbuffer_get_length(evhttp_request_get_input_buffer(ev)) > s->max_body;
    luaL_setmetatable(L, REQ_MT);
    int ridx = lua_gettop(L);
    push_decoded(L, path, strlen(path), 0);
    char name[256];
    snprintf(name, sizeof(name), "http %s %s", method_name(r->method), lua_tostring(L, -1));
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
    r->ev = ev;
    conn_hold(r);
    return 0;
}

/* The evhttp request callback: rejects URIs it cannot take, then starts a
 * task for the handler. Runs from the event loop, never inside a task. */
static void on_request(struct evhttp_request *ev, void *arg)
{
    struct server *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    /* evhttp already answered 400 to a URI it cannot parse; a NUL in the
     * decoded path would only reach the handler to cause trouble. */
    if (!uri || (path && strstr(path, "%00"))) {
        evhttp_send_error(ev, 400, NULL);
        return;
    }
    lua_State *L = s->vm->L;
    int top = lua_gettop(L);
    struct setup st = { s, ev, NULL };
    int rc = LUA_ERRMEM;
    if (lua_checkstack(L, 4)) {
        lua_pushcfunction(L, handler_msgh);
        lua_pushcfunction(L, setup_request);
        lua_pushlightuserdata(L, &st);
        rc = lua_pcall(L, 1, 0, top + 1);
    }
    if (rc != LUA_OK && !(st.r && st.r->ev)) {
        vm_logf(s->vm, NULL, LOG_ERROR, "http: cannot start the handler of a %s request: %s",
                method_name(evhttp_request_get_command(ev)),
                rc == LUA_ERRMEM ? "out of memory" : lua_tostring(L, -1));
        if (st.r)
            req_unanchor(st.r);
        evhttp_send_error(ev, 500, NULL);
    }
    lua_settop(L, top);
}

/* ---- the req object ---- */

/* Returns the req object at idx. */
static struct hreq *check_req(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, REQ_MT);
}

/* Pushes the request's headers as a table: lower-case name -> value, with
 * repeated headers joined by ", ". */
static void push_headers(lua_State *L, struct evhttp_request *ev)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(ev);
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
static void push_query(lua_State *L, struct evhttp_request *ev)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(ev));
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

/* Pushes "ip:port" (or "[ip]:port") of the client, or nil once the
 * connection is gone. */
static void push_peer(lua_State *L, struct evhttp_request *ev)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    char *addr = NULL;
    ev_uint16_t port = 0;
    if (evcon)
        evhttp_connection_get_peer(evcon, &addr, &port);
    if (!addr)
        lua_pushnil(L);
    else if (strchr(addr, ':'))
        lua_pushfstring(L, "[%s]:%d", addr, (int)port);
    else
        lua_pushfstring(L, "%s:%d", addr, (int)port);
}

/* Pushes the body ("" when none), or nil when it is over max_body. */
static void push_body(lua_State *L, struct hreq *r)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ev);
    size_t n = evbuffer_get_length(in);
    if (r->too_large)
        lua_pushnil(L);
    else if (n == 0)
        lua_pushliteral(L, "");
    else
        lua_pushlstring(L, (const char *)evbuffer_pullup(in, -1), n);
}

/* Pushes a lazily built field (uri, query, body, headers, peer): cached in
 * the user value uv; built from the request while we still hold it, nil
 * after that if it was never read. */
static int push_lazy(lua_State *L, struct hreq *r, int uv)
{
    if (lua_getiuservalue(L, 1, uv) != LUA_TNIL || !r->ev)
        return 1;
    lua_pop(L, 1);
    switch (uv) {
    case UV_URI: lua_pushstring(L, evhttp_request_get_uri(r->ev)); break;
    case UV_QUERY: push_query(L, r->ev); break;
    case UV_BODY: push_body(L, r); break;
    case UV_HEADERS: push_headers(L, r->ev); break;
    default: push_peer(L, r->ev); break;
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
        lua_pushstring(L, method_name(r->method));
        return 1;
    }
    if (strcmp(k, "path") == 0) {
        lua_getiuservalue(L, 1, UV_PATH);
        return 1;
    }
    if (strcmp(k, "too_large") == 0) {
        lua_pushboolean(L, r->too_large);
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
    if (!r->ev) {
        /* The request is gone: answer from the headers table if it was built. */
        if (lua_getiuservalue(L, 1, UV_HEADERS) != LUA_TTABLE)
            return 1;
        size_t n = strlen(name);
        luaL_Buffer b;
        char *low = luaL_buffinitsize(L, &b, n);
        for (size_t i = 0; i < n; i++)
            low[i] = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] - 'A' + 'a') : name[i];
        luaL_pushresultsize(&b, n);
        lua_rawget(L, -2);
        return 1;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(r->ev);
    int found = 0;
    for (struct evkeyval *kv = h->tqh_first; kv; kv = kv->next.tqe_next) {
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
 * to the response; raises on an invalid name or value. Sets *has_len when
 * a Content-Length is among them. */
struct resp_headers {
    struct evkeyvalq *out;
    int has_len;
};

/* lhttp_each_header callback: adds one response header. */
static void add_response_header(lua_State *L, void *ud, const char *name, const char *value)
{
    struct resp_headers *h = ud;
    if (evhttp_add_header(h->out, name, value) != 0)
        luaL_error(L, "cannot add response header '%s'", name);
    if (evutil_ascii_strcasecmp(name, "Content-Length") == 0)
        h->has_len = 1;
}

static void add_headers(lua_State *L, int idx, struct evkeyvalq *out, int *has_len)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    struct resp_headers h = { out, 0 };
    lhttp_each_header(L, idx, "response", add_response_header, &h);
    if (h.has_len)
        *has_len = 1;
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
    struct evkeyvalq *out = evhttp_request_get_output_headers(r->ev);
    int has_len = 0;
    add_headers(L, 3, out, &has_len);
    int no_body = status == 204 || status == 304;
    if (r->method == EVHTTP_REQ_HEAD) {
        /* A HEAD response tells the length a GET would have, without it. */
        if (!has_len && !no_body) {
            char len[32];
            snprintf(len, sizeof(len), "%zu", blen);
            evhttp_add_header(out, "Content-Length", len);
        }
    } else if (blen > 0 && !no_body &&
               evbuffer_add(evhttp_request_get_output_buffer(r->ev), body, blen) != 0) {
        return luaL_error(L, "req:respond: out of memory");
    }
    req_complete(r, 0, status);
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
    int has_len = 0;
    add_headers(L, 3, evhttp_request_get_output_headers(r->ev), &has_len);
    r->state = RESP_STREAMING;
    evhttp_send_reply_start(r->ev, status, NULL);
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
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->ev);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    if (evbuffer_get_length(bufferevent_get_output(bev)) > SLOW_BYTES) {
        lua_pushnil(L);
        lua_pushliteral(L, "slow");
        return 2;
    }
    struct evbuffer *buf = evhttp_request_get_output_buffer(r->ev);
    if (n > 0) {
        if (evbuffer_add(buf, chunk, n) != 0)
            return luaL_error(L, "req:write: out of memory");
        evhttp_send_reply_chunk(r->ev, buf);
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
    req_complete(r, 1, 0);
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
        struct timeval tv;
        tv.tv_sec = (time_t)secs;
        tv.tv_usec = (suseconds_t)((secs - (lua_Number)tv.tv_sec) * 1e6);
        if (evtimer_add(w->timer, &tv) != 0)
            return luaL_error(L, "req:wait_closed: cannot arm timer");
    }
    r->waiter = w;
    return task_yield(L, t, &w->op, wait_done, (lua_KContext)w);
}

/* __gc of a req object: frees the evhttp_request if it became ours. While
 * libevent may still call back with it the object is anchored, so this runs
 * with the request attached only from lua_close; then evhttp_free (server
 * __gc) frees it. */
static int req_gc(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    if (r->owned && r->ev)
        evhttp_request_free(r->ev);
    if (r->owned)
        r->ev = NULL;
    r->waiter = NULL;
    return 0;
}

/* ---- the server object ---- */

/* Frees the evhttp, which closes every connection: outstanding requests see
 * their close callback. Idempotent. */
static void server_free(struct server *s)
{
    if (!s->http)
        return;
    evhttp_free(s->http);
    s->http = NULL;
    if (!s->vm->closing) {
        luaL_unref(s->vm->L, LUA_REGISTRYINDEX, s->handler_ref);
        luaL_unref(s->vm->L, LUA_REGISTRYINDEX, s->self_ref);
    }
    s->handler_ref = s->self_ref = LUA_NOREF;
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

/* sys.listen{host=, port=, handler=, max_body=, timeout=} -> server | nil, err.
 * The server object owns the evhttp and stays open until server:close(). */
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
    if (port != (int)port || port < 0 || port > 65535)
        return luaL_error(L, "sys.listen: 'port' must be an integer 0..65535");
    if (max_body < 0 || max_body > (lua_Number)(EV_SSIZE_MAX / 4))
        return luaL_error(L, "sys.listen: 'max_body' out of range");
    if (!(timeout > 0 && timeout < 1e9))
        return luaL_error(L, "sys.listen: 'timeout' must be a positive number of seconds");
    char where[300];
    if (strchr(host, ':'))
        snprintf(where, sizeof(where), "[%s]:%d", host, (int)port);
    else
        snprintf(where, sizeof(where), "%s:%d", host, (int)port);

    struct server *s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    s->vm = vm;
    s->handler_ref = s->self_ref = LUA_NOREF;
    luaL_setmetatable(L, SERVER_MT);
    int sidx = lua_gettop(L);
    s->max_body = (size_t)max_body;
    s->timeout.tv_sec = (time_t)timeout;
    s->timeout.tv_usec = (suseconds_t)((timeout - (lua_Number)s->timeout.tv_sec) * 1e6);

    /* Resolve first: evhttp would only log why a name does not resolve. */
    struct evutil_addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    int gai = evutil_getaddrinfo(host, "0", &hints, &ai);
    if (gai != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", where, evutil_gai_strerror(gai));
        return 2;
    }
    evutil_freeaddrinfo(ai);

    s->http = evhttp_new(vm->base);
    if (!s->http)
        return luaL_error(L, "sys.listen: out of memory");
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)max_body * 4);
    evhttp_set_max_headers_size(s->http, MAX_HEADERS_SIZE);
    evhttp_set_default_content_type(s->http, "application/json");
    evhttp_set_timeout_tv(s->http, &s->timeout);
    errno = 0;
    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
    if (!bound) {
        int e = errno;
        evhttp_free(s->http);
        s->http = NULL;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", where,
                        e ? evutil_socket_error_to_string(e) : "bind failed");
        return 2;
    }
    s->port = bound_port(evhttp_bound_socket_get_fd(bound));
    lua_pushvalue(L, handler);
    s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, sidx);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    evhttp_set_gencb(s->http, on_request, s);
    lua_pushvalue(L, sidx);
    return 1;
}

void sys_add_httpd(struct vm *vm, lua_State *L)
{
    if (luaL_newmetatable(L, SERVER_MT)) {
        static const luaL_Reg methods[] = { { "port", server_port }, { "close", server_close },
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
