/* vm.c - the Lua state: counting allocator, limits, loading, logging. */
#include "vm.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>

#include "sched.h"

/* Every block carries its owner so frees are charged back to the right task.
 * The header keeps malloc's alignment. */
struct blk {
    struct acct *owner;
    size_t pad;
};

double vm_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void vm_acct_release(struct vm *vm, struct acct *a)
{
    while (a && --a->refs == 0 && a != &vm->root) {
        struct acct *up = a->up;
        free(a);
        a = up;
    }
}

/* Adds n bytes to a budget and to every budget it counts against. */
static void acct_add(struct acct *a, size_t n)
{
    for (; a; a = a->up)
        a->bytes += n;
}

/* Takes n bytes off a budget and every budget it counts against. */
static void acct_sub(struct acct *a, size_t n)
{
    for (; a; a = a->up)
        a->bytes -= n;
}

/* Returns the first of a budget and those it counts against that n more
 * bytes would take past its memory limit, or NULL. */
static const struct acct *acct_over(const struct acct *a, size_t n)
{
    for (; a; a = a->up)
        if (a->bytes + n > a->mem_limit)
            return a;
    return NULL;
}

/* Marks t to be killed for memory, naming the limit over budget a. */
static void kill_mem(struct task *t, const struct acct *a)
{
    t->kill = KILL_MEM;
    t->kill_limit = (double)a->mem_limit;
}

/* The lua_Alloc: charges growth to the running task (or the root), refuses
 * growth past the task's budget (or one it counts against) or the state's
 * cap, and never fails a shrink. A block that is reallocated moves to the
 * task that grew it. */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct vm *vm = ud;
    struct task *t = vm->current;
    struct acct *cur = t ? t->acct : &vm->root;
    struct blk *old = ptr ? (struct blk *)ptr - 1 : NULL;
    size_t oldsize = ptr ? osize : 0;

    if (nsize == 0) {
        if (old) {
            acct_sub(old->owner, oldsize);
            vm->mem_used -= oldsize;
            vm_acct_release(vm, old->owner);
            free(old);
        }
        return NULL;
    }
    if (nsize > oldsize) {
        size_t grow = nsize - oldsize;
        if (vm->mem_used + grow > vm->mem_cap)
            return NULL;
        size_t add = nsize - (old && old->owner == cur ? oldsize : 0);
        const struct acct *over = t ? acct_over(cur, add) : NULL;
        if (over) {
            kill_mem(t, over);
            return NULL;
        }
    }
    struct blk *nb = realloc(old, sizeof(struct blk) + nsize);
    if (!nb) {
        if (nsize <= oldsize)
            return ptr; /* keep the larger block; Lua assumes shrinks succeed */
        return NULL;
    }
    if (old) {
        acct_sub(nb->owner, oldsize);
        vm_acct_release(vm, nb->owner);
    }
    nb->owner = cur;
    acct_add(cur, nsize);
    cur->refs++;
    vm->mem_used = vm->mem_used - oldsize + nsize;
    if (vm->mem_used > vm->mem_peak)
        vm->mem_peak = vm->mem_used;
    return nb + 1;
}

size_t vm_budget_left(struct vm *vm)
{
    size_t left = SIZE_MAX;
    if (!vm->current)
        return left;
    for (const struct acct *a = vm->current->acct; a; a = a->up) {
        size_t l = a->bytes >= a->mem_limit ? 0 : a->mem_limit - a->bytes;
        if (l < left)
            left = l;
    }
    return left;
}

struct acct *vm_reserve(struct vm *vm, size_t n, int strict)
{
    struct task *t = vm->current;
    struct acct *a = t ? t->acct : &vm->root;
    const struct acct *over = t ? acct_over(a, n) : NULL;
    if (over && strict)
        kill_mem(t, over);
    if (over || vm->mem_used + n > vm->mem_cap)
        return NULL;
    acct_add(a, n);
    a->refs++;
    vm->mem_used += n;
    if (vm->mem_used > vm->mem_peak)
        vm->mem_peak = vm->mem_used;
    return a;
}

void vm_unreserve(struct vm *vm, struct acct *a, size_t n)
{
    if (!a)
        return;
    acct_sub(a, n);
    vm->mem_used -= n;
    vm_acct_release(vm, a);
}

/* Called by Lua on an error outside any protected call: nothing can be
 * recovered, so say what happened and stop. */
static int on_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "replica: unprotected Lua error: %s\n", msg ? msg : "?");
    abort();
}

/* The default log sink (ud is the VM): one line per message on stderr, in
 * the VM's format, with the task's name, its serve task and execution ids
 * (or the run's id) as context. One write per line. */
static void log_stderr(void *ud, struct task *t, enum log_level lvl, const char *msg)
{
    struct vm *vm = ud;
    char line[LOGLINE_MAX];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct logline_ctx c = { t ? t->name : NULL, t ? t->log_tag : 0, t ? t->log_exec : 0,
                             vm->log_run[0] ? vm->log_run : NULL };
    size_t n = logline_format(line, vm->log_format, &now, (int)lvl, msg, &c);
    fwrite(line, 1, n, stderr);
}

void vm_logf(struct vm *vm, struct task *t, enum log_level lvl, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    if (lvl < vm->log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vm->log(vm->log_ud, t, lvl, msg);
}

int vm_load_buffer_in(struct vm *vm, lua_State *L, const char *s, size_t len, const char *name,
                      int loaded)
{
    loaded = lua_absindex(L, loaded);
    int st = luaL_loadbufferx(L, s, len, name, "t");
    if (st == LUA_OK) {
        sandbox_push_env(vm, L, loaded);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    }
    return st;
}

int vm_load_buffer(struct vm *vm, lua_State *L, const char *s, size_t len, const char *name)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->loaded_ref);
    int st = vm_load_buffer_in(vm, L, s, len, name, -1);
    lua_remove(L, -2);
    return st;
}

int vm_push_stream(lua_State *L, FILE *f, size_t max)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char tmp[8192];
    size_t n, total = 0;
    while (total < max && (n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        luaL_addlstring(&b, tmp, n);
        total += n;
    }
    luaL_pushresult(&b);
    if (ferror(f)) {
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

int vm_push_file(lua_State *L, const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int rc = vm_push_stream(L, f, max);
    fclose(f);
    return rc;
}

/* Sandbox contexts load the same stage and library files once per task,
 * so each file is compiled once into a factory, function(_ENV, ...) with
 * the file's code as its body, and every load calls the factory with a
 * fresh environment: every instance gets its own locals, closures and
 * tables, sharing only the compiled code. The file alone is compiled first,
 * so a file that is not a valid chunk by itself is refused with its own
 * error, and the body of the factory is exactly the file. The cache is
 * keyed by path and checked against the file's size and mtime. */
static char factory_cache_key; /* registry[&factory_cache_key]: path -> entry */

/* Pushes a function that runs the factory fac (at idx) with environment env
 * (on top, popped): a Lua trampoline, so the module's top level may yield
 * where its caller allows. */
static void push_bound(lua_State *L, int fac)
{
    static const char binder[] = "local f, e = ... return function(...) return f(e, ...) end";
    fac = lua_absindex(L, fac);
    int env = lua_gettop(L);
    if (luaL_loadbufferx(L, binder, sizeof(binder) - 1, "=(module)", "t") != LUA_OK)
        lua_error(L);
    lua_pushvalue(L, fac);
    lua_pushvalue(L, env);
    lua_call(L, 2, 1);
    lua_remove(L, env);
}

/* Compiles src (len bytes, chunk name chunkname) into a factory, pushed,
 * and returns LUA_OK, or an error code with the message pushed. */
static int compile_factory(lua_State *L, const char *src, size_t len, const char *chunkname)
{
    int rc = luaL_loadbufferx(L, src, len, chunkname, "t");
    if (rc != LUA_OK)
        return rc;
    lua_pop(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "return function(_ENV, ...) ");
    luaL_addlstring(&b, src, len);
    luaL_addstring(&b, "\nend");
    luaL_pushresult(&b);
    size_t wlen;
    const char *wrapped = lua_tolstring(L, -1, &wlen);
    rc = luaL_loadbufferx(L, wrapped, wlen, chunkname, "t");
    lua_remove(L, -2);
    if (rc != LUA_OK)
        return rc;
    lua_newtable(L); /* the outer chunk only makes the factory: it needs no globals */
    lua_setupvalue(L, -2, 1);
    return lua_pcall(L, 0, 1, 0);
}

/* Pushes the factory cache (creating it): path -> {stamp, size, factory}
 * for files, and at [1] the table of keyed sources, key -> factory. */
static int push_factory_cache(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &factory_cache_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &factory_cache_key);
    }
    return lua_gettop(L);
}

/* Pushes the cached factory of the file at path (compiling it when its size
 * or mtime changed) and returns LUA_OK, or an error code with the message
 * pushed. */
static int push_factory(struct vm *vm, lua_State *L, const char *path, const char *chunkname)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushfstring(L, "cannot read %s", path);
        return LUA_ERRFILE;
    }
    lua_Integer stamp = (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    int cache = push_factory_cache(L);
    if (lua_getfield(L, cache, path) == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        int same = lua_tointeger(L, -2) == stamp && lua_tointeger(L, -1) == (lua_Integer)st.st_size;
        lua_pop(L, 2);
        if (same) {
            lua_rawgeti(L, -1, 3);
            lua_replace(L, cache);
            lua_settop(L, cache);
            return LUA_OK;
        }
    }
    lua_pop(L, 1);
    if (vm_push_file(L, path, (size_t)-1) != 0) {
        lua_settop(L, cache - 1);
        lua_pushfstring(L, "cannot read %s", path);
        return LUA_ERRFILE;
    }
    size_t len;
    const char *src = lua_tolstring(L, -1, &len);
    int rc = compile_factory(L, src, len, chunkname);
    if (rc != LUA_OK) {
        lua_replace(L, cache);
        lua_settop(L, cache);
        return rc;
    }
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, stamp);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 3);
    lua_setfield(L, cache, path);
    lua_replace(L, cache);
    lua_settop(L, cache);
    (void)vm;
    return LUA_OK;
}

/* Keyed sources (stored versions of stage and template files, which the
 * caller names by content hash) are cached the same way, at most this many;
 * past it the keyed cache starts again empty. */
#define KEYED_FACTORIES 512

/* Pushes the cached factory of source src under key (with chunkname, part
 * of the key), compiling it the first time; returns as push_factory. */
static int push_keyed_factory(lua_State *L, const char *key, const char *src, size_t len,
                              const char *chunkname)
{
    int cache = push_factory_cache(L);
    if (lua_rawgeti(L, cache, 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, cache, 1);
    }
    int keyed = lua_gettop(L);
    lua_pushfstring(L, "%s\n%s", key, chunkname);
    int k = lua_gettop(L);
    lua_pushvalue(L, k);
    if (lua_rawget(L, keyed) == LUA_TFUNCTION) {
        lua_replace(L, cache);
        lua_settop(L, cache);
        return LUA_OK;
    }
    lua_pop(L, 1);
    int rc = compile_factory(L, src, len, chunkname);
    if (rc != LUA_OK) {
        lua_replace(L, cache);
        lua_settop(L, cache);
        return rc;
    }
    int fac = lua_gettop(L);
    lua_Integer n = (lua_rawgeti(L, cache, 2), lua_tointeger(L, -1));
    lua_pop(L, 1);
    if (n >= KEYED_FACTORIES) {
        lua_newtable(L);
        lua_replace(L, keyed);
        lua_pushvalue(L, keyed);
        lua_rawseti(L, cache, 1);
        n = 0;
    }
    lua_pushinteger(L, n + 1);
    lua_rawseti(L, cache, 2);
    lua_pushvalue(L, k);
    lua_pushvalue(L, fac);
    lua_rawset(L, keyed);
    lua_pushvalue(L, fac);
    lua_replace(L, cache);
    lua_settop(L, cache);
    return LUA_OK;
}

/* Replaces the factory on top (or passes on the error rc left there) with
 * an instance bound to a fresh environment of the context at loaded. */
static int bind_factory(struct vm *vm, lua_State *L, int rc, int loaded)
{
    if (rc != LUA_OK)
        return rc;
    sandbox_push_env(vm, L, loaded);
    push_bound(L, -2);
    lua_remove(L, -2);
    return LUA_OK;
}

int vm_load_keyed_in(struct vm *vm, lua_State *L, const char *key, const char *src, size_t len,
                     const char *chunkname, int loaded)
{
    loaded = lua_absindex(L, loaded);
    if (sandbox_is_trusted(vm, L, loaded))
        return vm_load_buffer_in(vm, L, src, len, chunkname, loaded);
    return bind_factory(vm, L, push_keyed_factory(L, key, src, len, chunkname), loaded);
}

int vm_load_file_in(struct vm *vm, lua_State *L, const char *path, const char *chunkname,
                    int loaded)
{
    loaded = lua_absindex(L, loaded);
    if (!sandbox_is_trusted(vm, L, loaded))
        return bind_factory(vm, L, push_factory(vm, L, path, chunkname), loaded);
    if (vm_push_file(L, path, (size_t)-1) != 0) {
        lua_pushfstring(L, "cannot read %s", path);
        return LUA_ERRFILE;
    }
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int st = vm_load_buffer_in(vm, L, s, len, chunkname, loaded);
    lua_remove(L, -2);
    return st;
}

int vm_load_file(struct vm *vm, lua_State *L, const char *path, const char *chunkname)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->loaded_ref);
    int st = vm_load_file_in(vm, L, path, chunkname, -1);
    lua_remove(L, -2);
    return st;
}

/* Copies a NULL-terminated string list (NULL allowed) into *out, *n.
 * Returns 0 or -1. */
static int strv_copy(const char *const *in, char ***out, int *n)
{
    *n = 0;
    while (in && in[*n])
        (*n)++;
    *out = calloc((size_t)*n + 1, sizeof(char *));
    if (!*out)
        return -1;
    for (int i = 0; i < *n; i++)
        if (!((*out)[i] = strdup(in[i])))
            return -1;
    return 0;
}

/* Frees a list made by strv_copy; NULL allowed. */
static void strv_free(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Runs sandbox_open in protected mode. */
static int open_protected(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, 1);
    return sandbox_open(vm, L);
}

struct vm *vm_new(struct event_base *base, struct http_client *http, const struct vm_opts *o,
                  char *err, size_t errlen)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    if (!vm) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    vm->base = base;
    vm->http = http;
    vm->root.refs = 1;
    vm->root.mem_limit = SIZE_MAX;
    vm->root.cpu_limit = HUGE_VAL;
    vm->mem_cap = o && o->state_mem ? o->state_mem : (size_t)1 << 30;
    vm->task_mem = o && o->task_mem ? o->task_mem : (size_t)64 << 20;
    vm->task_cpu = o && o->task_cpu > 0 ? o->task_cpu : 30.0;
    vm->log = o && o->log ? o->log : log_stderr;
    vm->log_ud = o && o->log ? o->log_ud : vm;
    vm->log_level = o ? o->log_level : LOG_INFO;
    vm->log_format = o ? o->log_format : LOG_FORMAT_TEXT;
    snprintf(vm->log_run, sizeof(vm->log_run), "%s", o && o->log_run ? o->log_run : "");
    vm->print_stdout = o ? o->print_stdout : 0;
    vm->env_mt_ref = vm->trusted_mt_ref = vm->loaded_ref = LUA_NOREF;
    const char *const *tlibs = o && o->trusted_lib_dirs ? o->trusted_lib_dirs : o ? o->lib_dirs : NULL;
    if (strv_copy(o ? o->lib_dirs : NULL, &vm->lib_dirs, &vm->n_lib_dirs) != 0 ||
        strv_copy(tlibs, &vm->tlib_dirs, &vm->n_tlib_dirs) != 0 ||
        strv_copy(o ? o->roots : NULL, &vm->roots, &vm->n_roots) != 0)
        goto fail_oom;
    if (sched_init(vm) != 0)
        goto fail_oom;
    vm->L = lua_newstate(vm_alloc, vm);
    if (!vm->L)
        goto fail_oom;
    lua_atpanic(vm->L, on_panic);
    *(void **)lua_getextraspace(vm->L) = NULL; /* threads copy it: see sched.h */
    lua_pushcfunction(vm->L, open_protected);
    lua_pushlightuserdata(vm->L, vm);
    if (lua_pcall(vm->L, 1, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "cannot set up Lua: %s", lua_tostring(vm->L, -1));
        vm_free(vm);
        return NULL;
    }
    return vm;
fail_oom:
    snprintf(err, errlen, "out of memory");
    vm_free(vm);
    return NULL;
}

void vm_free(struct vm *vm)
{
    if (!vm)
        return;
    if (vm->L) {
        sched_cancel_all(vm);
        vm->closing = 1;
        lua_close(vm->L); /* frees pending operations through their __gc */
        sched_free_all(vm);
    }
    if (vm->ready_ev)
        event_free(vm->ready_ev);
    strv_free(vm->lib_dirs, vm->n_lib_dirs);
    strv_free(vm->tlib_dirs, vm->n_tlib_dirs);
    strv_free(vm->roots, vm->n_roots);
    free(vm);
}
