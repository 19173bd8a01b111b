/* sandbox.c - the allow-listed environments scripts run in.
 *
 * Nothing reaches a script unless it is listed here: no io, no package, no
 * debug, os reduced to its time functions, load for text only, and require
 * limited to the library directories. Shared tables (the globals and every
 * library) are read-only proxies whose pairs() never hands out the table
 * behind them, so one script cannot change what another sees.
 *
 * Code runs in one of two kinds of context, each with its own module table:
 * - trusted: the entry chunk of a command and the modules it requires; they
 *   also see the trusted-only modules (catalog, creds, term, sandbox);
 * - a sandbox context (sandbox.new()): stage and template code, with fresh
 *   instances of every module it requires, so nothing it loads is shared
 *   with the daemon or with another context.
 * A chunk's environment carries its context's require and load.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_pattern.h"
#include "sched.h"
#include "repl.h"
#include "vm.h"
#include "watchdog.h"

static char protect_key;
static char loading_key;
static char require_key; /* loaded[&require_key]: the context's require */
static char load_key;    /* loaded[&load_key]: the context's load */

/* __newindex of a protected table. */
static int ro_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to modify read-only table '%s'",
                      lua_tostring(L, lua_upvalueindex(1)));
}

/* The iterator pairs() returns for a protected table: next over the real
 * table (upvalue 1), whatever table it is given. */
static int ro_next(lua_State *L)
{
    lua_settop(L, 2);
    if (lua_next(L, lua_upvalueindex(1)))
        return 2;
    lua_pushnil(L);
    return 1;
}

/* __pairs of a protected table: the iterator (upvalue 1), the proxy, nil;
 * the real table never leaves C. */
static int ro_pairs(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void sandbox_protect(lua_State *L, const char *name)
{
    int real = lua_gettop(L);
    lua_newtable(L);                     /* proxy */
    lua_createtable(L, 0, 5);            /* its metatable */
    lua_pushvalue(L, real);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, ro_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, real);
    lua_pushcclosure(L, ro_next, 1);
    lua_pushcclosure(L, ro_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushboolean(L, 1);
    lua_rawsetp(L, -2, &protect_key);
    lua_setmetatable(L, -2);
    lua_replace(L, real);
}

/* rawset that refuses protected tables. */
static int sb_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (lua_getmetatable(L, 1)) {
        int prot = lua_rawgetp(L, -1, &protect_key) != LUA_TNIL;
        lua_pop(L, 2);
        if (prot)
            return luaL_error(L, "attempt to modify a read-only table");
    }
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/* load(chunk [, name [, mode [, env]]]): text chunks only; the default
 * environment is a fresh one of the caller's context (its module table is
 * upvalue 2), never the real globals. */
static int sb_load(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *s;
    int has_env = !lua_isnone(L, 4);
    if (lua_type(L, 1) == LUA_TSTRING) {
        s = lua_tolstring(L, 1, &len);
    } else {
        luaL_checktype(L, 1, LUA_TFUNCTION);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (;;) {
            lua_pushvalue(L, 1);
            lua_call(L, 0, 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            if (!lua_isstring(L, -1))
                return luaL_error(L, "reader function must return a string");
            size_t n;
            lua_tolstring(L, -1, &n);
            if (n == 0) {
                lua_pop(L, 1);
                break;
            }
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        s = lua_tolstring(L, -1, &len);
    }
    const char *name = luaL_optstring(L, 2, "=(load)");
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) {
        lua_pushvalue(L, 4);
    } else {
        lua_pushvalue(L, lua_upvalueindex(2));
        sandbox_push_env(vm, L, -1);
        lua_remove(L, -2);
    }
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    return 1;
}

/* print(...): a line on stdout (replica script) or in the task's log. */
static int sb_print(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    if (vm->print_stdout) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        fwrite(s, 1, len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        vm_logf(vm, task_current(vm), LOG_INFO, "%s", lua_tostring(L, -1));
    }
    return 0;
}

/* collectgarbage("count" | "collect"): the task's own usage in KiB, or a full
 * cycle. Options that change the collector are not available. */
static int sb_collectgarbage(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") == 0) {
        struct task *t = task_current(vm);
        size_t bytes = t ? t->acct->bytes : vm->root.bytes;
        lua_pushnumber(L, (lua_Number)bytes / 1024.0);
        return 1;
    }
    if (strcmp(opt, "collect") == 0) {
        lua_gc(L, LUA_GCCOLLECT);
        lua_pushinteger(L, 0);
        return 1;
    }
    return luaL_error(L, "collectgarbage: option '%s' is not available to scripts", opt);
}

/* Checks a module name: dot-separated words of [A-Za-z0-9_]. */
static int valid_module_name(const char *s)
{
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (p == s || p[1] == '.' || p[1] == '\0')
                return 0;
        } else if (!isalnum((unsigned char)*p) && *p != '_') {
            return 0;
        }
    }
    return 1;
}

/* require(name): loads DIR/name.lua (dots become slashes) from the first
 * library directory that has it, once per context (its module table is
 * upvalue 2); the module runs in a fresh environment of that context. */
static int sb_require(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(2)); /* 2 */
    lua_getfield(L, 2, name);
    if (lua_touserdata(L, -1) == &loading_key)
        return luaL_error(L, "require: module '%s' requires itself (a loop)", name);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1);
    if (!valid_module_name(name))
        return luaL_error(L, "require: invalid module name '%s'", name);
    char rel[256];
    if (strlen(name) + 5 > sizeof(rel))
        return luaL_error(L, "require: module name too long");
    for (size_t i = 0; ; i++) {
        rel[i] = name[i] == '.' ? '/' : name[i];
        if (!name[i])
            break;
    }
    /* Trusted code searches --lib and the bundled library only. */
    int trusted = sandbox_is_trusted(vm, L, 2);
    char **dirs = trusted ? vm->tlib_dirs : vm->lib_dirs;
    int ndirs = trusted ? vm->n_tlib_dirs : vm->n_lib_dirs;
    luaL_Buffer tried;
    luaL_buffinit(L, &tried);
    for (int i = 0; i < ndirs; i++) {
        lua_pushfstring(L, "%s/%s.lua", dirs[i], rel);
        const char *path = lua_tostring(L, -1);
        lua_pushfstring(L, "@%s", path);
        int st = vm_load_file_in(vm, L, path, lua_tostring(L, -1), 2);
        if (st == LUA_ERRFILE) {
            lua_pushfstring(L, "\n\tno file '%s'", path);
            lua_remove(L, -2); /* error message */
            lua_remove(L, -2); /* chunk name */
            lua_remove(L, -2); /* path */
            luaL_addvalue(&tried);
            continue;
        }
        if (st != LUA_OK)
            return luaL_error(L, "require: cannot load '%s': %s", name, lua_tostring(L, -1));
        lua_pushlightuserdata(L, &loading_key);
        lua_setfield(L, 2, name);
        lua_pushstring(L, name);
        lua_pushstring(L, path);
        int ok = lua_pcall(L, 2, 1, 0);
        if (ok != LUA_OK) {
            lua_pushnil(L);
            lua_setfield(L, 2, name);
            return luaL_error(L, "require: error loading '%s': %s", name, lua_tostring(L, -1));
        }
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, 2, name);
        return 1;
    }
    luaL_pushresult(&tried);
    return luaL_error(L, "require: module '%s' not found:%s", name, lua_tostring(L, -1));
}

/* setmetatable(t, mt): the stock function (upvalue 1), but a sandboxed task
 * may not give a table a __gc metamethod: a finalizer runs whenever the
 * collector gets to it, inside whatever task runs then. */
static int sb_setmetatable(lua_State *L)
{
    struct task *t = task_current(vm_of(L));
    if (t && t->sandboxed && lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc metamethods are not available to scripts");
        lua_pop(L, 1);
    }
    return sandbox_call_stock(L, 1);
}

/* Copies the named fields of the table at src into the table on top. */
static void copy_fields(lua_State *L, int src, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, -2, *names);
    }
}

/* Opens a standard library, copies the listed fields into a new table,
 * lets install (may be NULL) replace some, and sets the copy's read-only
 * proxy as field name of the globals at g. Leaves the copy itself on top. */
static void add_lib(lua_State *L, int g, const char *name, lua_CFunction open,
                    const char *const *fields, void (*install)(lua_State *, int))
{
    luaL_requiref(L, name, open, 0);
    int src = lua_gettop(L);
    lua_newtable(L);
    copy_fields(L, src, fields);
    if (install)
        install(L, -1);
    lua_pushvalue(L, -1);
    sandbox_protect(L, name);
    lua_setfield(L, g, name);
    lua_remove(L, src);
}

/* The replacements in the sandbox's string library: the pattern functions
 * (lua_pattern.c) and string.rep (lua_limits.c). */
static void string_install(lua_State *L, int idx)
{
    pattern_install(L, idx);
    limits_install_string(L, idx);
}

/* Pushes the context function cached in the module table at loaded under
 * key, making it (fn with upvalues vm, loaded) on first use. */
static void push_context_fn(struct vm *vm, lua_State *L, int loaded, const void *key,
                            lua_CFunction fn)
{
    if (lua_rawgetp(L, loaded, key) == LUA_TFUNCTION)
        return;
    lua_pop(L, 1);
    lua_pushlightuserdata(L, vm);
    lua_pushvalue(L, loaded);
    lua_pushcclosure(L, fn, 2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, loaded, key);
}

int sandbox_is_trusted(struct vm *vm, lua_State *L, int loaded)
{
    loaded = lua_absindex(L, loaded);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->loaded_ref);
    int trusted = lua_rawequal(L, -1, loaded);
    lua_pop(L, 1);
    return trusted;
}

void sandbox_push_env(struct vm *vm, lua_State *L, int loaded)
{
    loaded = lua_absindex(L, loaded);
    int trusted = sandbox_is_trusted(vm, L, loaded);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    push_context_fn(vm, L, loaded, &require_key, sb_require);
    lua_setfield(L, -2, "require");
    push_context_fn(vm, L, loaded, &load_key, sb_load);
    lua_setfield(L, -2, "load");
    lua_rawgeti(L, LUA_REGISTRYINDEX, trusted ? vm->trusted_mt_ref : vm->env_mt_ref);
    lua_setmetatable(L, -2);
}

/* Pushes the metatable of environments whose globals are the proxy on top
 * (which it pops), and returns a registry reference to it. */
static int env_metatable(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Replaces each listed field of the table at t that is a table by its
 * read-only proxy. */
static void protect_fields(lua_State *L, int t, const char *const *names)
{
    for (; *names; names++) {
        if (lua_getfield(L, t, *names) == LUA_TTABLE) {
            sandbox_protect(L, *names);
            lua_setfield(L, t, *names);
        } else {
            lua_pop(L, 1);
        }
    }
}

int sandbox_call_stock(lua_State *L, int nresults)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, nresults);
    return nresults == LUA_MULTRET ? lua_gettop(L) : nresults;
}

/* Moves field name of the table at from to the table at to. */
static void move_field(lua_State *L, int from, int to, const char *name)
{
    lua_getfield(L, from, name);
    lua_setfield(L, to, name);
    lua_pushnil(L);
    lua_setfield(L, from, name);
}

int sandbox_open(struct vm *vm, lua_State *L)
{
    static const char *const base[] = { "assert", "error", "getmetatable", "ipairs", "next",
        "pairs", "pcall", "rawequal", "rawget", "rawlen", "select", "tonumber",
        "tostring", "type", "xpcall", "_VERSION", NULL };
    static const char *const string[] = { "byte", "char", "find", "format", "gmatch", "gsub",
        "len", "lower", "match", "pack", "packsize", "rep", "reverse", "sub", "unpack", "upper",
        NULL };
    static const char *const table[] = { "concat", "insert", "move", "pack", "remove", "sort",
        "unpack", NULL };
    static const char *const math[] = { "abs", "ceil", "cos", "deg", "exp", "floor", "fmod",
        "huge", "log", "max", "maxinteger", "min", "mininteger", "modf", "pi", "rad", "random",
        "randomseed", "sin", "sqrt", "tan", "tointeger", "type", "ult", "asin", "acos", "atan",
        NULL };
    static const char *const utf8[] = { "char", "charpattern", "codes", "codepoint", "len",
        "offset", NULL };
    static const char *const coroutine[] = { "close", "create", "isyieldable", "resume",
        "running", "status", "wrap", "yield", NULL };
    static const char *const os[] = { "clock", "date", "difftime", "time", NULL };

    lua_newtable(L);
    vm->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    luaL_requiref(L, "_G", luaopen_base, 1);  /* the real globals, never shown */
    int realg = lua_gettop(L);
    lua_newtable(L);                           /* the sandbox globals */
    int g = lua_gettop(L);
    copy_fields(L, realg, base);

    lua_pushcfunction(L, sb_rawset);
    lua_setfield(L, g, "rawset");
    lua_getfield(L, realg, "setmetatable");
    lua_pushcclosure(L, sb_setmetatable, 1);
    lua_setfield(L, g, "setmetatable");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sb_print, 1);
    lua_setfield(L, g, "print");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sb_collectgarbage, 1);
    lua_setfield(L, g, "collectgarbage");
    lua_pushcfunction(L, dbg_lua_break); /* a pause under `replica repl`, else nothing */
    lua_setfield(L, g, "debug_break");

    add_lib(L, g, "string", luaopen_string, string, string_install);
    /* Strings index the sandbox's copy of the library, which has no dump:
     * ("").dump and ("x"):rep(...) reach what `string` does. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 3);
    add_lib(L, g, "table", luaopen_table, table, limits_install_table);
    lua_pop(L, 1);
    add_lib(L, g, "math", luaopen_math, math, NULL);
    lua_pop(L, 1);
    add_lib(L, g, "utf8", luaopen_utf8, utf8, NULL);
    lua_pop(L, 1);
    add_lib(L, g, "coroutine", luaopen_coroutine, coroutine, coroutine_install);
    lua_pop(L, 1);
    add_lib(L, g, "os", luaopen_os, os, NULL);
    lua_pop(L, 1);

    lua_pushvalue(L, g);
    inject_http_api(vm, L);
    inject_json_api(vm, L);
    inject_log_api(vm, L);
    inject_time_api(vm, L);
    inject_crypto_api(vm, L);
    inject_rsa_api(vm, L);
    inject_task_api(vm, L);
    inject_blob_api(vm, L);
    inject_catalog_api(vm, L);
    inject_term_api(vm, L);
    inject_creds_api(vm, L);
    watchdog_inject_test_hooks(vm, L);
    lua_pop(L, 1);

    /* The trusted-only modules move to the trusted globals, which fall back
     * on the shared ones. */
    lua_newtable(L);
    int tg = lua_gettop(L);
    move_field(L, g, tg, "catalog");
    move_field(L, g, tg, "creds");
    move_field(L, g, tg, "term");
    lua_pushvalue(L, tg);
    inject_sandbox_api(vm, L);
    lua_pop(L, 1);

    /* Injected modules are plain tables: protect each of them. */
    static const char *const mods[] = { "http", "json", "log", "time", "digest", "hmac",
        "base64", "rsa", "task", "parallel", "blob", NULL };
    static const char *const tmods[] = { "catalog", "term", "creds", "sandbox", NULL };
    protect_fields(L, g, mods);
    protect_fields(L, tg, tmods);

    lua_pushvalue(L, g);
    sandbox_protect(L, "_G");                          /* g stays; proxy on top */
    lua_pushvalue(L, -1);
    vm->env_mt_ref = env_metatable(L);
    lua_createtable(L, 0, 1);                  /* tg falls back on the shared proxy */
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, tg);
    lua_pushvalue(L, tg);
    sandbox_protect(L, "_G");
    vm->trusted_mt_ref = env_metatable(L);
    lua_settop(L, realg - 1);
    return 0;
}
