/* lua_httpd.c - sys.listen: the HTTP/1.1 server (httpd.c) for trusted Lua.
 * Every request runs its handler in a new task; the handler answers with
 * req:respond, or streams with req:start / req:write / req:finish. The
 * server's limits (connection caps, deadlines, head size) are enforced in
 * httpd.c before a handler runs; a body over max_body is not read and the
 * handler sees req.too_large. authorize(method, path, authorization,
 * address) runs from httpd's authorize callback, before a body byte is
 * read: a refusal is answered 401 (or the status it names: 403, 429, 503,
 * with Retry-After when it gives one) and the connection closed without
 * reading the body.
 *
 * Ownership: the server object (Lua userdata) owns its struct httpd, which
 * owns the connections. At dispatch the req object (Lua userdata) takes
 * the request (struct httpd_msg) and frees it in __gc. While its response
 * is outstanding the req object is anchored in the registry and linked
 * with its connection (r->c, and the connection holds r as its token); the
 * link is cut when the response is complete (req_done) or the connection
 * goes away (on_closed). An open server is anchored too: it listens until
 * server:close() or the VM shuts down.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <lauxlib.h>

#include "httpd.h"
#include "lua_headers.h"
#include "sched.h"
#include "sys.h"

#define SERVER_MT "replica.httpd.server"
#define REQ_MT "replica.httpd.request"
#define WAIT_MT "replica.httpd.wait"

#define DEFAULT_MAX_BODY (1L << 20)
#define DEFAULT_MAX_CONNS 1024
#define DEFAULT_MAX_PER_ADDR 64
#define DEFAULT_HEADER_TIMEOUT 10.0

/* User values of a req object: fields cached as Lua values. */
enum { UV_PATH = 1, UV_URI, UV_QUERY, UV_BODY, UV_HEADERS, UV_PEER, NUV = UV_PEER };

enum resp_state { RESP_NONE, RESP_STREAMING, RESP_DONE };

struct wait_op;

/* The server object: the Lua side of one struct httpd. */
struct server {
    struct vm *vm;
    struct httpd *h;                 /* owned; NULL once closed */
    int handler_ref;                 /* the handler function */
    int authorize_ref;               /* the authorize function, or LUA_NOREF */
    int self_ref;                    /* anchors the object while open */
    int port;                        /* the bound port, kept after close */
    char secret_prefix[64];          /* paths under it hold a secret: not in task names */
};

/* The req object: one request, from its dispatch until __gc. */
struct hreq {
    struct vm *vm;
    struct httpd_conn *c;      /* set while the response is outstanding on c */
    struct httpd_msg *m;       /* owned; NULL once __gc ran */
    int ref;                   /* registry anchor while c is set */
    int closed;                /* the connection went away before the response was complete */
    enum resp_state state;
    int status;                /* the status answered (sent, started, or meant for a client
                                * that had gone), 0 before */
    struct wait_op *waiter;    /* the task in req:wait_closed, or NULL */
    char peer[HTTPD_PEER_LEN];
};

/* A task waiting in req:wait_closed; owned by a userdata on its stack. */
struct wait_op {
    struct task_op op;
    struct task *task;
    struct hreq *r;
    struct event *timer;
};

/* What on_dispatch hands to its protected setup function. */
struct setup {
    struct server *s;
    struct httpd_conn *c;
    struct httpd_msg **m;      /* the connection's; setup_request takes it */
    struct hreq *r;
};

static const char json_500[] = "{\"error\":\"internal error\"}";

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

/* Converts seconds to a timeval. */
static struct timeval secs_tv(lua_Number secs)
{
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (lua_Number)tv.tv_sec) * 1e6);
    return tv;
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

/* httpd closed callback: the connection of r is going away before its
 * response was complete; r is closed from here. At VM shutdown the waiting
 * task may be gone already, so it is not woken then. */
static void on_closed(void *ud, void *req)
{
    struct hreq *r = req;
    (void)ud;
    r->c = NULL;
    r->closed = 1;
    if (r->vm->closing)
        r->waiter = NULL;
    req_unanchor(r);
    req_wake(r);
}

/* The response to r is complete (httpd_respond or httpd_finish returned 0):
 * r lets go of its connection, which is the server's again. */
static void req_done(struct hreq *r)
{
    r->c = NULL;
    r->state = RESP_DONE;
    req_unanchor(r);
    req_wake(r);
}

/* Sends a whole response to r: status, the headers in out (consumed) and
 * body[0..len). Returns 0, or -1 when out of memory (the connection is
 * dropped then). */
static int req_send(struct hreq *r, int status, struct evkeyvalq *out, const char *body, size_t len)
{
    if (httpd_respond(r->c, status, out, body, len) != 0)
        return -1;
    r->status = status;
    req_done(r);
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
    httpd_headers_init(&out);
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

/* Runs in protected mode from on_dispatch: builds the req object (which
 * takes the connection's msg), anchors it and spawns the handler task.
 * Argument: the struct setup. */
static int setup_request(lua_State *L)
{
    struct setup *st = lua_touserdata(L, 1);
    struct server *s = st->s;
    struct httpd_conn *c = st->c;
    const char *path = httpd_msg_path(*st->m);

    struct hreq *r = lua_newuserdatauv(L, sizeof(*r), NUV);
    memset(r, 0, sizeof(*r));
    r->vm = s->vm;
    r->ref = LUA_NOREF;
    snprintf(r->peer, sizeof(r->peer), "%s", httpd_conn_peer(c));
    luaL_setmetatable(L, REQ_MT);
    r->m = *st->m; /* the req object owns the msg from here (freed in __gc) */
    *st->m = NULL;
    int ridx = lua_gettop(L);
    push_decoded(L, path, strlen(path), 0);
    char name[256];
    const char *shown = lua_tostring(L, -1);
    size_t plen = strlen(s->secret_prefix);
    if (plen && strncmp(shown, s->secret_prefix, plen) == 0)
        snprintf(name, sizeof(name), "http %s %s...", httpd_method_name(r->m->method), s->secret_prefix);
    else
        snprintf(name, sizeof(name), "http %s %s", httpd_method_name(r->m->method), shown);
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
    r->c = c; /* on_dispatch hands r to the connection as its token */
    return 0;
}

/* httpd dispatch callback: the request *m on c is complete. Builds its req
 * object (which takes *m) and starts its handler task; returns the req
 * object as the connection's token, or NULL (logged) on failure. */
static void *on_dispatch(void *ud, struct httpd_conn *c, struct httpd_msg **m)
{
    struct server *s = ud;
    lua_State *L = s->vm->L;
    int top = lua_gettop(L);
    struct setup st = { s, c, m, NULL };
    int rc = LUA_ERRMEM;
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
            req_unanchor(st.r); /* it owns the msg: httpd answers HTTP/1.1 */
        lua_settop(L, top);
        return NULL;
    }
    lua_settop(L, top);
    return st.r;
}

/* The status of a refusal from authorize's fourth result: 403, 429 or 503
 * when it names one, else 401. */
static int refusal_status(lua_State *L, int idx)
{
    lua_Integer st = lua_isinteger(L, idx) ? lua_tointeger(L, idx) : 401;
    return st == 403 || st == 429 || st == 503 ? (int)st : 401;
}

/* httpd authorize callback: calls the server's authorize(method, path,
 * authorization, address) for the complete head m on c. Returns 1 when the
 * request may go on; otherwise the refusal (authorize's false, why
 * [, challenge [, status [, retry_after]]], or 500 if it raised) is queued
 * with httpd_reject and 0 returned, or -1 when c had to be freed. Runs
 * from the event loop, on the main state, and must not yield. */
static int on_authorize(void *ud, struct httpd_conn *c, struct httpd_msg *m)
{
    struct server *s = ud;
    lua_State *L = s->vm->L;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 8))
        return httpd_reject(c, 500, "internal error", NULL, 0);
    lua_pushcfunction(L, handler_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->authorize_ref);
    lua_pushstring(L, httpd_method_name(m->method));
    const char *path = httpd_msg_path(m);
    push_decoded(L, path, strlen(path), 0);
    int n = 0;
    for (struct evkeyval *kv = m->headers.tqh_first; kv; kv = kv->next.tqe_next) {
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
    lua_pushstring(L, httpd_conn_addr(c));
    int rc = lua_pcall(L, 4, 5, top + 1);
    if (rc != LUA_OK) {
        vm_logf(s->vm, NULL, LOG_ERROR, "http: authorize raised: %s",
                lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
        lua_settop(L, top);
        return httpd_reject(c, 500, "internal error", NULL, 0);
    }
    if (lua_toboolean(L, top + 2)) {
        /* authorize may name the client: req.who, so the handler need not
         * look it up again */
        const char *who = lua_tostring(L, top + 3);
        free(m->who);
        m->who = who ? strdup(who) : NULL;
        lua_settop(L, top);
        return 1;
    }
    const char *why = lua_tostring(L, top + 3);
    const char *challenge = lua_tostring(L, top + 4);
    if (challenge && strpbrk(challenge, "\r\n"))
        challenge = NULL;
    int status = refusal_status(L, top + 5);
    lua_Integer retry = lua_isinteger(L, top + 6) ? lua_tointeger(L, top + 6) : 0;
    if (retry < 0 || retry > 86400)
        retry = 0;
    int rc2 = httpd_reject(c, status, why ? why : "unauthorized", challenge, (long)retry);
    lua_settop(L, top);
    return rc2;
}

/* ---- the req object ---- */

/* Returns the req object at idx. */
static struct hreq *check_req(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, REQ_MT);
}

/* Pushes the request's headers as a table: lower-case name -> value, with
 * repeated headers joined by ", ". */
static void push_headers(lua_State *L, struct httpd_msg *m)
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
static void push_query(lua_State *L, struct httpd_msg *m)
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
static void push_body(lua_State *L, struct httpd_msg *m)
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
 * too_large, who, status: the status sent, nil before), then the methods
 * in upvalue 1. */
static int req_index(lua_State *L)
{
    struct hreq *r = check_req(L, 1);
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    static const char *const lazy[] = { "uri", "query", "body", "headers", "peer", NULL };
    if (strcmp(k, "method") == 0) {
        lua_pushstring(L, r->m ? httpd_method_name(r->m->method) : "UNKNOWN");
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
    if (strcmp(k, "status") == 0) {
        if (r->status)
            lua_pushinteger(L, r->status);
        else
            lua_pushnil(L);
        return 1;
    }
    if (strcmp(k, "who") == 0) {
        if (r->m && r->m->who)
            lua_pushstring(L, r->m->who);
        else
            lua_pushnil(L);
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
    r->status = status; /* also when the client is gone: what the handler answered */
    if (!req_writable(r)) {
        if (!lua_isnoneornil(L, 3))
            luaL_checktype(L, 3, LUA_TTABLE);
        r->state = RESP_DONE;
        req_wake(r);
        return push_closed(L);
    }
    struct evkeyvalq out;
    httpd_headers_init(&out);
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
    r->status = status;
    if (!req_writable(r)) {
        r->state = RESP_STREAMING;
        return push_closed(L);
    }
    struct evkeyvalq out;
    httpd_headers_init(&out);
    add_headers(L, 3, &out);
    if (httpd_start(r->c, status, &out) != 0)
        return luaL_error(L, "req:start: out of memory");
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
    int rc = httpd_write(r->c, chunk, n);
    if (rc < 0)
        return luaL_error(L, "req:write: out of memory");
    if (rc > 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "slow");
        return 2;
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
    if (httpd_finish(r->c) != 0)
        return luaL_error(L, "req:finish: out of memory");
    req_done(r);
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
    httpd_msg_free(r->m);
    r->m = NULL;
    r->waiter = NULL;
    return 0;
}

/* ---- the server object ---- */

/* Stops listening and closes every connection (outstanding requests see
 * the close, through on_closed), then drops the anchors. Idempotent. */
static void server_free(struct server *s)
{
    if (!s->h)
        return;
    httpd_free(s->h);
    s->h = NULL;
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
    struct server *s = check_server(L, 1);
    lua_pushinteger(L, s->h ? httpd_connections(s->h) : 0);
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

/* sys.listen{host=, port=, handler=, authorize=, max_body=, timeout=,
 * header_timeout=, body_timeout=, max_connections=, max_per_address=,
 * secret_prefix=} -> server | nil, err. The server object owns its struct
 * httpd (the listener and its connections) and stays open until
 * server:close(). secret_prefix: the paths under it carry a secret, so the
 * request's task, whose name shows in log lines, is named by the prefix. */
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
    lua_getfield(L, 1, "secret_prefix");
    const char *secret = luaL_optstring(L, -1, "");
    if (strlen(secret) >= sizeof(((struct server *)0)->secret_prefix))
        return luaL_error(L, "sys.listen: 'secret_prefix' is too long");
    char where[300];
    if (strchr(host, ':'))
        snprintf(where, sizeof(where), "[%s]:%d", host, (int)port);
    else
        snprintf(where, sizeof(where), "%s:%d", host, (int)port);

    struct server *s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    s->vm = vm;
    s->handler_ref = s->authorize_ref = s->self_ref = LUA_NOREF;
    snprintf(s->secret_prefix, sizeof(s->secret_prefix), "%s", secret);
    luaL_setmetatable(L, SERVER_MT);
    int sidx = lua_gettop(L);
    struct httpd_opts o = { (size_t)max_body, max_conns, max_per_addr, secs_tv(timeout),
                            header_tv, body_tv };
    struct httpd_callbacks cb = { authorize ? on_authorize : NULL, on_dispatch, on_closed };
    const char *why;
    s->h = httpd_new(vm, host, (int)port, &o, &cb, s, &why);
    if (!s->h && !why)
        return luaL_error(L, "sys.listen: out of memory");
    if (!s->h) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s: %s", where, why);
        return 2;
    }
    s->port = httpd_port(s->h);
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
