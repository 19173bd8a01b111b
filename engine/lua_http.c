/* lua_http.c - the `http` module: http.request{...} yields until the response
 * is complete and returns a table, or nil, err, detail. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "http.h"
#include "lua_http.h"
#include "sched.h"
#include "sys.h"
#include "tally.h"
#include "vm.h"

#define OP_MT "replica.http.op"
#define DEFAULT_MAX_BODY (64L << 20)

/* One request in flight, owned by a userdata on the caller's stack so that it
 * is freed even when the task dies. */
struct http_op {
    struct task_op op;
    struct task *task;
    struct http_req *req;
};

/* Completion from the event loop: wake the task; the body is read on resume. */
static void on_done(struct http_req *req, void *ud)
{
    struct http_op *o = ud;
    (void)req;
    task_wake(o->task);
}

/* task_op cancel: stop the transfer now. */
static void op_cancel(struct task_op *op)
{
    struct http_op *o = (struct http_op *)op;
    if (o->req)
        http_req_cancel(o->req);
}

/* __gc: frees the request; safe to run twice. */
static int op_gc(lua_State *L)
{
    struct http_op *o = luaL_checkudata(L, 1, OP_MT);
    http_req_free(o->req);
    o->req = NULL;
    return 0;
}

void lhttp_push_headers(lua_State *L, const struct buf *head)
{
    lua_newtable(L);
    const char *p = head->data, *end = p ? p + head->len : NULL;
    if (!p)
        return;
    /* skip the status line */
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    p = nl ? nl + 1 : end;
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            luaL_Buffer b;
            char *name = luaL_buffinitsize(L, &b, (size_t)(colon - p));
            for (const char *q = p; q < colon; q++)
                name[q - p] = (char)tolower((unsigned char)*q);
            luaL_pushresultsize(&b, (size_t)(colon - p));
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_rawset(L, -3);
        }
        p = nl ? nl + 1 : end;
    }
}

/* Continuation: builds the outcome of the request. */
static int request_done(lua_State *L, int status, lua_KContext ctx)
{
    struct http_op *o = (struct http_op *)ctx;
    struct http_req *r = o->req;
    (void)status;
    if (o->op.cancelled || r->err == HTTP_ECANCELLED) {
        return task_push_cancelled(L);
    }
    if (r->err != HTTP_OK) {
        lua_pushnil(L);
        lua_pushstring(L, http_strerror(r->err));
        lua_pushstring(L, r->errbuf[0] ? r->errbuf : http_strerror(r->err));
        return 3;
    }
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lhttp_push_headers(L, &r->head);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(L, -2, "body");
    char *url = NULL;
    if (curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url) {
        lua_pushstring(L, url);
        lua_setfield(L, -2, "url");
    }
    long ver = 0;
    curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &ver);
    lua_pushstring(L, ver == CURL_HTTP_VERSION_2_0 ? "2"
                      : ver == CURL_HTTP_VERSION_1_0 ? "1.0" : ver == CURL_HTTP_VERSION_3 ? "3"
                                                                                         : "1.1");
    lua_setfield(L, -2, "version");
    http_req_free(r);
    o->req = NULL;
    return 1;
}

/* Reads an optional integer field of the options table. */
static lua_Integer opt_int(lua_State *L, const char *k, lua_Integer def)
{
    lua_getfield(L, 1, k);
    lua_Integer v = lua_isnil(L, -1) ? def : (lua_Integer)luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Returns 1 if s[0..n) is a header name: a non-empty RFC 9110 token. */
static int header_name_ok(const char *s, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c && strchr(extra, c))))
            return 0;
    }
    return 1;
}

/* Returns 1 if s[0..n) can be sent as a header value (no CR, LF or NUL). */
static int header_value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 0;
    return 1;
}

void lhttp_each_header(lua_State *L, int idx, const char *what, lhttp_header_fn fn, void *ud)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t nl;
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
        if (!name || !header_name_ok(name, nl))
            luaL_error(L, "%s: invalid header name", what);
        int multi = lua_istable(L, -1);
        lua_Integer n = multi ? luaL_len(L, -1) : 1;
        for (lua_Integer i = 1; i <= n; i++) {
            if (multi)
                lua_geti(L, -1, i);
            size_t vl;
            const char *v = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
                                ? lua_tolstring(L, -1, &vl) : NULL;
            if (!v || !header_value_ok(v, vl))
                luaL_error(L, "%s: invalid value for header '%s'", what, name);
            fn(L, ud, name, v);
            if (multi)
                lua_pop(L, 1);
        }
        lua_pop(L, 1); /* the value; the key stays for lua_next */
    }
}

/* lhttp_each_header callback: adds "name: value" to the request ud. */
static void add_request_header(lua_State *L, void *ud, const char *name, const char *value)
{
    lua_pushfstring(L, "%s: %s", name, value);
    if (http_req_header(ud, lua_tostring(L, -1)) != 0)
        luaL_error(L, "http.request: out of memory");
    lua_pop(L, 1);
}

void lhttp_configure(lua_State *L, int idx, struct http_req *r, const char *method, int with_body)
{
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, idx, "headers") == LUA_TTABLE)
        lhttp_each_header(L, -1, "http.request", add_request_header, r);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "'headers' must be a table");
    lua_pop(L, 1);

    int follow = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (lua_getfield(L, idx, "follow") != LUA_TNIL)
        follow = lua_toboolean(L, -1);
    lua_pop(L, 1);
    http_req_follow(r, follow ? 5 : 0);

    if (with_body) {
        if (lua_getfield(L, idx, "body") != LUA_TNIL) {
            size_t n;
            const char *b = luaL_checklstring(L, -1, &n);
            if (http_req_body(r, b, n) != 0)
                luaL_error(L, "out of memory");
        } else if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0 ||
                   strcmp(method, "PATCH") == 0) {
            http_req_body(r, "", 0);
        }
        lua_pop(L, 1);
    }

    if (lua_getfield(L, idx, "tls") == LUA_TTABLE) {
        struct http_tls tls = { 0 };
        lua_getfield(L, -1, "ca_file");
        tls.ca_file = luaL_optstring(L, -1, NULL);
        lua_getfield(L, -2, "insecure");
        tls.insecure = lua_toboolean(L, -1);
        lua_getfield(L, -3, "cert_file");
        tls.cert_file = luaL_optstring(L, -1, NULL);
        lua_getfield(L, -4, "key_file");
        tls.key_file = luaL_optstring(L, -1, NULL);
        if (tls.key_file && !tls.cert_file)
            luaL_error(L, "tls.key_file needs tls.cert_file");
        if (http_req_tls(r, &tls) != 0)
            luaL_error(L, "cannot apply tls options");
        lua_pop(L, 4);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "'tls' must be a table");
    }
    lua_pop(L, 1);

    /* A body without an explicit type goes with none, rather than curl's
     * form default. */
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        return;
    int has_ct = 0;
    for (struct curl_slist *h = r->headers; h; h = h->next)
        if (strncasecmp(h->data, "content-type:", 13) == 0)
            has_ct = 1;
    if (!has_ct && http_req_header(r, "Content-Type:") != 0)
        luaL_error(L, "out of memory");
}

/* http.request{method=, url=, headers=, body=, timeout=, connect_timeout=,
 * follow=, max_body=, hold_origin=, tls={ca_file=, insecure=, cert_file=, key_file=}} */
static int l_request(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "http.request must be called from a task");
    task_check_yieldable(L, t);

    lua_getfield(L, 1, "url");
    const char *url = luaL_optstring(L, -1, NULL);
    if (!url)
        return luaL_error(L, "http.request: 'url' is required");
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, "GET");
    for (const char *p = method; *p; p++)
        if (!isupper((unsigned char)*p))
            return luaL_error(L, "http.request: invalid method '%s'", method);
    long timeout = (long)opt_int(L, "timeout", 60);
    long ctimeout = (long)opt_int(L, "connect_timeout", 10);
    lua_Integer max_body = opt_int(L, "max_body", DEFAULT_MAX_BODY);
    if (timeout <= 0 || ctimeout <= 0 || max_body < 0)
        return luaL_error(L, "http.request: timeouts must be positive and max_body >= 0");

    if (t->cancelled) {
        return task_push_cancelled(L);
    }

    struct http_op *o = lua_newuserdatauv(L, sizeof(*o), 0);
    memset(o, 0, sizeof(*o));
    luaL_setmetatable(L, OP_MT);
    o->op.cancel = op_cancel;
    o->task = t;
    o->req = http_req_new(vm->http, method, url, timeout, ctimeout);
    if (!o->req)
        return luaL_error(L, "http.request: out of memory");
    struct http_req *r = o->req;
    /* The body is C memory until it becomes a string: never more than the
     * task's memory budget has left. */
    size_t left = vm_budget_left(vm);
    r->max_body = (size_t)max_body < left ? (size_t)max_body : left;
    lua_getfield(L, 1, "hold_origin");
    r->hold_origin = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lhttp_configure(L, 1, r, method, 1);

    if (http_req_start(r, on_done, o) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, http_strerror(r->err));
        lua_pushstring(L, r->errbuf);
        return 3;
    }
    return task_yield(L, t, &o->op, request_done, (lua_KContext)o);
}

/* sys.http_stats() -> {active=, queued=, requests={{host=, method=, status=,
 * count=}, ...}}: the requests of the engine's HTTP client in flight
 * (handed to libcurl), waiting in their hosts' queues, and finished, by
 * host, method and status (http_client_counts). A new table, the caller's. */
static int l_http_stats(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    const struct tally *t = http_client_counts(vm->http);
    long active = http_client_active(vm->http);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, active);
    lua_setfield(L, -2, "active");
    lua_pushinteger(L, http_client_pending(vm->http) - active);
    lua_setfield(L, -2, "queued");
    lua_createtable(L, (int)t->n, 0);
    static const char *const parts[] = { "host", "method", "status" };
    for (size_t i = 0; i < t->n; i++) {
        lua_createtable(L, 0, 4);
        for (int j = 0; j < 3; j++) {
            lua_pushstring(L, t->rows[i].key[j]);
            lua_setfield(L, -2, parts[j]);
        }
        lua_pushinteger(L, (lua_Integer)t->rows[i].n);
        lua_setfield(L, -2, "count");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "requests");
    return 1;
}

void sys_add_http(struct vm *vm, lua_State *L)
{
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_http_stats, 1);
    lua_setfield(L, -2, "http_stats");
}

void inject_http_api(struct vm *vm, lua_State *L)
{
    luaL_newmetatable(L, OP_MT);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_request, 1);
    lua_setfield(L, -2, "request");
    lua_setfield(L, -2, "http");
}
