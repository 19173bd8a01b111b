/* lua_blob.c - the `blob` module: blob.copy{...} streams a blob from a
 * source GET into a target upload in C (stream.c) and yields until both
 * ends are done. Blob bytes never enter Lua. */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "lua_crypto.h"
#include "lua_http.h"
#include "sched.h"
#include "stream.h"
#include "vm.h"

#define BLOB_MT "replica.blob.op"
#define DEFAULT_BUFFER (4L << 20)
#define MAX_BUFFER (64L << 20)
#define MIN_BUFFER (512L << 10) /* stream.c's smallest ring */

struct blob_op {
    struct task_op op;
    struct task *task;
    struct http_req *get, *put;  /* until the stream owns them */
    struct stream *s;
    struct acct *held;           /* the budget the ring is charged to, or NULL */
    size_t held_bytes;
};

/* Gives the ring's bytes back to the budget they were charged to. */
static void release_ring(struct blob_op *o, struct vm *vm)
{
    vm_unreserve(vm, o->held, o->held_bytes);
    o->held = NULL;
    o->held_bytes = 0;
}

static void on_done(struct stream *s, void *ud)
{
    struct blob_op *o = ud;
    (void)s;
    task_wake(o->task);
}

static void op_cancel(struct task_op *op)
{
    struct blob_op *o = (struct blob_op *)op;
    if (o->s)
        stream_cancel(o->s);
}

/* __gc: frees whatever the operation still owns; safe to run twice. */
static int op_gc(lua_State *L)
{
    struct blob_op *o = luaL_checkudata(L, 1, BLOB_MT);
    release_ring(o, vm_of(L));
    stream_free(o->s);
    http_req_free(o->get);
    http_req_free(o->put);
    o->s = NULL;
    o->get = o->put = NULL;
    return 0;
}

static int push_outcome(lua_State *L, struct blob_op *o);

/* Continuation: the outcome of the copy. */
static int copy_done(lua_State *L, int status, lua_KContext ctx)
{
    struct blob_op *o = (struct blob_op *)ctx;
    (void)status;
    int n = push_outcome(L, o);
    /* Free the ring now: Lua's collector does not see its megabytes. */
    stream_free(o->s);
    o->s = NULL;
    release_ring(o, vm_of(L));
    return n;
}

/* Pushes the outcome of a finished copy. */
static int push_outcome(lua_State *L, struct blob_op *o)
{
    const struct stream_result *r = stream_result(o->s);
    if (o->op.cancelled || r->err == STREAM_ECANCELLED) {
        return task_push_cancelled(L);
    }
    if (r->err != STREAM_OK) {
        char buf[32];
        lua_pushnil(L);
        lua_pushstring(L, stream_strerror(r, buf, sizeof(buf)));
        lua_pushstring(L, r->detail);
        return 3;
    }
    struct http_req *up = stream_upload(o->s);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, (lua_Integer)r->bytes);
    lua_setfield(L, -2, "bytes");
    if (up) {
        lhttp_push_headers(L, &up->head);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, up->body.data ? up->body.data : "", up->body.len);
        lua_setfield(L, -2, "body");
    }
    return 1;
}

/* Reads an endpoint table field (from/to) and its url; leaves the table at
 * the returned index. */
static int endpoint(lua_State *L, const char *field, const char **url)
{
    if (lua_getfield(L, 1, field) != LUA_TTABLE)
        luaL_error(L, "blob.copy: '%s' must be a table", field);
    lua_getfield(L, -1, "url");
    *url = lua_tostring(L, -1);
    if (!*url)
        luaL_error(L, "blob.copy: '%s.url' is required", field);
    lua_pop(L, 1); /* the string stays alive in the table */
    return lua_gettop(L);
}

/* blob.copy{from={url=, headers=, tls=}, to={url=, headers=, tls=, method=},
 *           digest="sha256:...", size=N, timeout=60, buffer=4 MiB, hash=h,
 *           max_speed=bytes/s}
 * -> {status=, bytes=, headers=, body=} | nil, err, detail
 * Without `to`, the source is only read (and hashed into h). Without
 * `digest` (a PATCH chunk), only the size is checked. */
static int l_copy(lua_State *L)
{
    struct vm *vm = vm_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "blob.copy must be called from a task");
    task_check_yieldable(L, t);

    const char *src, *dst = NULL;
    int from = endpoint(L, "from", &src);
    int to = 0;
    if (lua_getfield(L, 1, "to") != LUA_TNIL) {
        lua_pop(L, 1);
        to = endpoint(L, "to", &dst);
    }
    lua_getfield(L, 1, "digest");
    const char *digest = lua_tostring(L, -1);
    lua_getfield(L, 1, "size");
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
        return luaL_error(L, "blob.copy: 'size' must be a non-negative integer");
    lua_Integer size = lua_tointeger(L, -1);
    lua_getfield(L, 1, "timeout");
    lua_Integer timeout = luaL_optinteger(L, -1, 60);
    lua_getfield(L, 1, "buffer");
    lua_Integer bufsize = luaL_optinteger(L, -1, DEFAULT_BUFFER);
    lua_getfield(L, 1, "max_speed");
    lua_Integer max_speed = luaL_optinteger(L, -1, 0);
    if (max_speed < 0)
        return luaL_error(L, "blob.copy: 'max_speed' must not be negative");
    const char *method = "PUT";
    if (to) {
        lua_getfield(L, to, "method");
        method = luaL_optstring(L, -1, "PUT");
    }
    int hash_idx = 0;
    if (lua_getfield(L, 1, "hash") != LUA_TNIL) {
        lhash_check(L, -1);
        hash_idx = lua_gettop(L);
    }
    if (timeout <= 0 || bufsize <= 0 || bufsize > MAX_BUFFER)
        return luaL_error(L, "blob.copy: 'timeout' must be positive and 'buffer' 1..64 MiB");
    if (strcmp(method, "PUT") != 0 && strcmp(method, "PATCH") != 0)
        return luaL_error(L, "blob.copy: 'to.method' must be PUT or PATCH");
    if (!digest && to && strcmp(method, "PUT") == 0)
        return luaL_error(L, "blob.copy: 'digest' is required to complete an upload with PUT");
    if (t->cancelled) {
        return task_push_cancelled(L);
    }

    /* A PUT completes the upload: it names the digest the target verifies. */
    const char *put_url = NULL;
    if (to) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, dst);
        if (strcmp(method, "PUT") == 0) {
            luaL_addchar(&b, strchr(dst, '?') ? '&' : '?');
            luaL_addstring(&b, "digest=");
            for (const char *p = digest; *p; p++) {
                if (*p == ':')
                    luaL_addstring(&b, "%3A");
                else
                    luaL_addchar(&b, *p);
            }
        }
        luaL_pushresult(&b);
        put_url = lua_tostring(L, -1);
    }

    struct blob_op *o = lua_newuserdatauv(L, sizeof(*o), 1);
    memset(o, 0, sizeof(*o));
    luaL_setmetatable(L, BLOB_MT);
    if (hash_idx) { /* keep the running hash alive while bytes flow into it */
        lua_pushvalue(L, hash_idx);
        lua_setiuservalue(L, -2, 1);
    }
    o->op.cancel = op_cancel;
    o->task = t;
    /* The ring is C memory: what of it the copy can touch (the ring, or
     * the blob when smaller) counts against the task's memory budget while
     * the copy runs. Under a tight budget the ring shrinks, to 512 KiB. */
    while (to) {
        size_t touched = (lua_Unsigned)size < (lua_Unsigned)bufsize ? (size_t)size : (size_t)bufsize;
        if ((o->held = vm_reserve(vm, touched, bufsize <= MIN_BUFFER))) {
            o->held_bytes = touched;
            break;
        }
        if (bufsize <= MIN_BUFFER)
            return luaL_error(L, "blob.copy: its buffer does not fit the memory limit");
        bufsize = bufsize / 2 > MIN_BUFFER ? bufsize / 2 : MIN_BUFFER;
    }
    o->get = http_req_new(vm->http, "GET", src, (long)timeout, 10);
    o->put = to ? http_req_new(vm->http, method, put_url, (long)timeout, 10) : NULL;
    if (!o->get || (to && !o->put))
        return luaL_error(L, "blob.copy: out of memory");
    o->get->max_body = 0;
    o->get->hold_origin = 1; /* both ends are registries */
    if (o->put)
        o->put->hold_origin = 1;
    lhttp_configure(L, from, o->get, "GET", 0);
    /* The download sets the pace; the upload follows it through the ring. */
    if (max_speed > 0)
        curl_easy_setopt(o->get->easy, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)max_speed);
    if (to) {
        lua_getfield(L, to, "headers");
        int has_type = 0;
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                lua_pop(L, 1);
                if (lua_type(L, -1) == LUA_TSTRING &&
                    strcasecmp(lua_tostring(L, -1), "content-type") == 0)
                    has_type = 1;
            }
        }
        lua_pop(L, 1);
        if (!has_type && http_req_header(o->put, "Content-Type: application/octet-stream") != 0)
            return luaL_error(L, "blob.copy: out of memory");
        lhttp_configure(L, to, o->put, method, 0);
    }

    char err[128];
    struct http_req *get = o->get, *put = o->put;
    o->get = o->put = NULL; /* stream_new takes them, even when it fails */
    o->s = stream_new(vm->base, get, put, digest, (int64_t)size, (size_t)bufsize, err, sizeof(err));
    if (!o->s)
        return luaL_error(L, "blob.copy: %s", err);
    if (hash_idx)
        stream_tap(o->s, lhash_check(L, hash_idx)->ctx);
    if (stream_start(o->s, on_done, o) != 0) {
        char buf[32];
        const struct stream_result *r = stream_result(o->s);
        lua_pushnil(L);
        lua_pushstring(L, stream_strerror(r, buf, sizeof(buf)));
        lua_pushstring(L, r->detail);
        return 3;
    }
    return task_yield(L, t, &o->op, copy_done, (lua_KContext)o);
}

void inject_blob_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    luaL_newmetatable(L, BLOB_MT);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, op_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_copy);
    lua_setfield(L, -2, "copy");
    lua_setfield(L, -2, "blob");
}
