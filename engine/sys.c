/* sys.c - the privileged `sys` table (see sys.h): the keyring that seals
 * registry credentials, random bytes, and task log capture. The database
 * (lua_db.c) and the HTTP server (lua_httpd.c) add their own functions. */
#include "sys.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <openssl/rand.h>

#include "sched.h"
#include "secret.h"

#define KEYRING_MT "replica.sys.keyring"
#define LOG_CAP 20000 /* captured lines held until drained; more are dropped */

struct keyring {
    unsigned char key[SECRET_KEY_LEN];
    int loaded;
};

/* sys.keyring(path [, {create = true}]) -> keyring | nil, err, kind. Loads
 * the 32-byte key file, creating it (mode 0600) when absent unless create is
 * false; kind is "missing" (absent and not created) or "error". The keyring
 * object owns the key and wipes it on __gc. */
static int l_keyring(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int create = 1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "create") != LUA_TNIL) {
            luaL_argcheck(L, lua_isboolean(L, -1), 2, "create must be a boolean");
            create = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
    }
    struct keyring *k = lua_newuserdatauv(L, sizeof(*k), 0);
    memset(k, 0, sizeof(*k));
    luaL_setmetatable(L, KEYRING_MT);
    char err[512];
    enum secret_key_rc rc = secret_key_load(path, k->key, create, err, sizeof(err));
    if (rc != SECRET_KEY_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushstring(L, rc == SECRET_KEY_MISSING ? "missing" : "error");
        return 3;
    }
    k->loaded = 1;
    return 1;
}

static int keyring_gc(lua_State *L)
{
    struct keyring *k = luaL_checkudata(L, 1, KEYRING_MT);
    secret_wipe(k->key, sizeof(k->key));
    k->loaded = 0;
    return 0;
}

/* Returns the optional aad argument at idx; raises when it holds a NUL
 * (secret.c takes it as a C string). */
static const char *check_aad(lua_State *L, int idx)
{
    size_t n;
    const char *aad = luaL_optlstring(L, idx, "", &n);
    luaL_argcheck(L, strlen(aad) == n, idx, "must not contain NUL bytes");
    return aad;
}

/* keyring:seal(plain [, aad]) -> "v1:..." */
static int keyring_seal(lua_State *L)
{
    struct keyring *k = luaL_checkudata(L, 1, KEYRING_MT);
    size_t len;
    const char *plain = luaL_checklstring(L, 2, &len);
    const char *aad = check_aad(L, 3);
    luaL_argcheck(L, k->loaded, 1, "keyring not loaded");
    char *sealed = secret_seal(k->key, plain, len, aad);
    if (!sealed)
        return luaL_error(L, "keyring:seal failed");
    lua_pushstring(L, sealed);
    free(sealed);
    return 1;
}

/* keyring:open(sealed [, aad]) -> plain | nil, err */
static int keyring_open(lua_State *L)
{
    struct keyring *k = luaL_checkudata(L, 1, KEYRING_MT);
    const char *sealed = luaL_checkstring(L, 2);
    const char *aad = check_aad(L, 3);
    luaL_argcheck(L, k->loaded, 1, "keyring not loaded");
    size_t len = 0;
    char *plain = secret_open(k->key, sealed, aad, &len);
    if (!plain) {
        lua_pushnil(L);
        lua_pushliteral(L, "cannot decrypt (wrong key file, or the value was tampered with)");
        return 2;
    }
    lua_pushlstring(L, plain, len);
    secret_wipe(plain, len);
    free(plain);
    return 1;
}

/* sys.random(n) -> n bytes from the OpenSSL CSPRNG */
static int l_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= 4096, 1, "must be 1..4096");
    unsigned char buf[4096];
    if (RAND_bytes(buf, (int)n) != 1)
        return luaL_error(L, "sys.random: no randomness available");
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

/* sys.task_log(tag) -> previous tag. Lines logged by the running task and
 * the tasks it spawns afterwards are captured under tag (> 0) for
 * sys.log_drain; 0 stops capturing. */
static int l_task_log(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer tag = luaL_checkinteger(L, 1);
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "sys.task_log must be called from a task");
    lua_pushinteger(L, t->log_tag);
    t->log_tag = tag > 0 ? (long)tag : 0;
    return 1;
}

/* sys.log_execution(id) -> previous id. Lines logged by the running task
 * and the tasks it spawns afterwards carry replica_execution = id (> 0) in
 * JSON logs; 0 stops it. */
static int l_log_execution(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer id = luaL_checkinteger(L, 1);
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "sys.log_execution must be called from a task");
    lua_pushinteger(L, t->log_exec);
    t->log_exec = id > 0 ? (long)id : 0;
    return 1;
}

/* Captured log lines, oldest first. */
struct logline {
    long tag;
    double ts;
    enum log_level lvl;
    char *msg;
};

struct capture {
    vm_log_fn prev;
    void *prev_ud;
    struct logline *lines;
    size_t n, cap;
    unsigned long dropped;
};

/* The VM's log function while capturing: passes every line on, and keeps a
 * copy of those from tagged tasks. */
static void capture_log(void *ud, struct task *t, enum log_level lvl, const char *msg)
{
    struct capture *c = ud;
    c->prev(c->prev_ud, t, lvl, msg);
    if (!t || t->log_tag <= 0)
        return;
    if (c->n >= LOG_CAP) {
        c->dropped++;
        return;
    }
    if (c->n == c->cap) {
        size_t ncap = c->cap ? 2 * c->cap : 256;
        struct logline *nl = realloc(c->lines, ncap * sizeof(*nl));
        if (!nl) {
            c->dropped++;
            return;
        }
        c->lines = nl;
        c->cap = ncap;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct logline *l = &c->lines[c->n];
    l->msg = strdup(msg);
    if (!l->msg) {
        c->dropped++;
        return;
    }
    l->tag = t->log_tag;
    l->ts = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    l->lvl = lvl;
    c->n++;
}

#define CAPTURE_MT "replica.sys.capture"
static char capture_key; /* registry[&capture_key]: the installed capture */

/* __gc of the capture object: restores the VM's log function. */
static int capture_gc(lua_State *L)
{
    struct capture **cp = luaL_checkudata(L, 1, CAPTURE_MT);
    struct capture *c = *cp;
    if (!c)
        return 0;
    struct vm *vm = vm_of(L);
    if (vm->log == capture_log && vm->log_ud == c) {
        vm->log = c->prev;
        vm->log_ud = c->prev_ud;
    }
    for (size_t i = 0; i < c->n; i++)
        free(c->lines[i].msg);
    free(c->lines);
    free(c);
    *cp = NULL;
    return 0;
}

/* Returns the capture installed in the VM, installing it on first use. */
static struct capture *capture_get(lua_State *L, struct vm *vm)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &capture_key) == LUA_TUSERDATA) {
        struct capture **cp = lua_touserdata(L, -1);
        lua_pop(L, 1);
        return *cp;
    }
    lua_pop(L, 1);
    struct capture **cp = lua_newuserdatauv(L, sizeof(*cp), 0);
    *cp = NULL;
    luaL_setmetatable(L, CAPTURE_MT);
    struct capture *c = calloc(1, sizeof(*c));
    if (!c)
        luaL_error(L, "out of memory");
    c->prev = vm->log;
    c->prev_ud = vm->log_ud;
    *cp = c;
    vm->log = capture_log;
    vm->log_ud = c;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &capture_key);
    return c;
}

static const char *const level_names[] = { "debug", "info", "warn", "error" };

/* sys.log_drain([max]) -> { {tag=, ts=, level=, message=}, ... }, dropped.
 * Returns and forgets the captured lines (at most max, default all) and how
 * many were dropped since the last drain because the buffer was full. */
static int l_log_drain(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    struct capture *c = capture_get(L, vm);
    lua_Integer max = luaL_optinteger(L, 1, (lua_Integer)LOG_CAP);
    size_t n = max <= 0 ? 0 : (size_t)max < c->n ? (size_t)max : c->n;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        struct logline *l = &c->lines[i];
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, l->tag);
        lua_setfield(L, -2, "tag");
        lua_pushnumber(L, l->ts);
        lua_setfield(L, -2, "ts");
        lua_pushstring(L, level_names[l->lvl]);
        lua_setfield(L, -2, "level");
        lua_pushstring(L, l->msg);
        lua_setfield(L, -2, "message");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    for (size_t i = 0; i < n; i++)
        free(c->lines[i].msg);
    if (n > 0 && n < c->n)
        memmove(c->lines, c->lines + n, (c->n - n) * sizeof(*c->lines));
    c->n -= n;
    lua_pushinteger(L, (lua_Integer)c->dropped);
    c->dropped = 0;
    return 2;
}

/* sys.drain_on_signal() makes the first SIGINT/SIGTERM cancel only the
 * calling task (and its children) instead of every task: a service that
 * drains runs it in a small task of its own, whose end tells it to stop
 * taking work and finish what is in flight. */
static int l_drain_on_signal(lua_State *L)
{
    struct task *t = task_current(lua_touserdata(L, lua_upvalueindex(1)));
    if (!t)
        return luaL_error(L, "sys.drain_on_signal: not in a task");
    t->signal_drain = 1;
    return 0;
}

/* sys.log_capture() starts capturing tagged lines (idempotent). */
static int l_log_capture(lua_State *L)
{
    capture_get(L, lua_touserdata(L, lua_upvalueindex(1)));
    return 0;
}

void sys_push(struct vm *vm, lua_State *L)
{
    if (luaL_newmetatable(L, KEYRING_MT)) {
        static const luaL_Reg methods[] = { { "seal", keyring_seal }, { "open", keyring_open },
                                            { NULL, NULL } };
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, keyring_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, CAPTURE_MT)) {
        lua_pushcfunction(L, capture_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);

    lua_createtable(L, 0, 8);
    lua_pushcfunction(L, l_keyring);
    lua_setfield(L, -2, "keyring");
    lua_pushcfunction(L, l_random);
    lua_setfield(L, -2, "random");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_task_log, 1);
    lua_setfield(L, -2, "task_log");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_log_execution, 1);
    lua_setfield(L, -2, "log_execution");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_log_capture, 1);
    lua_setfield(L, -2, "log_capture");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_log_drain, 1);
    lua_setfield(L, -2, "log_drain");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_drain_on_signal, 1);
    lua_setfield(L, -2, "drain_on_signal");
    sys_add_db(vm, L);
    sys_add_httpd(vm, L);
    sys_add_watchdog(vm, L);
    sys_add_files(vm, L);
    sys_add_http(vm, L);
}

void sys_install(struct vm *vm, lua_State *L)
{
    if (!lua_getupvalue(L, -1, 1))
        return;
    if (lua_istable(L, -1)) {
        sys_push(vm, L);
        lua_setfield(L, -2, "sys");
    }
    lua_pop(L, 1);
}
