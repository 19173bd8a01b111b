/* sandbox.c - the allow-listed environment scripts run in.
 *
 * Nothing reaches a script unless it is listed here: no io, no package, no
 * debug, os reduced to its time functions, load for text only, and require
 * limited to the library directories. Shared tables (the globals and every
 * library) are read-only proxies, so one script cannot change what another
 * sees.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_pattern.h"
#include "sched.h"
#include "vm.h"

static char protect_key;
static char loading_key;

/* __newindex of a protected table. */
static int ro_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to modify read-only table '%s'",
                      lua_tostring(L, lua_upvalueindex(1)));
}

/* __pairs of a protected table: iterates the real table. */
static int ro_pairs(lua_State *L)
{
    lua_getglobal(L, "next");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    return 3;
}

/* Replaces the table on top of L by a read-only proxy of it named name. */
static void protect(lua_State *L, const char *name)
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
 * environment is a fresh sandbox environment, never the real globals. */
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
    if (has_env)
        lua_pushvalue(L, 4);
    else
        vm_push_env(vm, L);
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
 * library directory that has it, once per VM. */
static int sb_require(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->loaded_ref); /* 2 */
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
    luaL_Buffer tried;
    luaL_buffinit(L, &tried);
    for (int i = 0; i < vm->n_lib_dirs; i++) {
        lua_pushfstring(L, "%s/%s.lua", vm->lib_dirs[i], rel);
        const char *path = lua_tostring(L, -1);
        lua_pushfstring(L, "@%s", path);
        int st = vm_load_file(vm, L, path, lua_tostring(L, -1));
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

/* Copies the named fields of the table at src into the table on top. */
static void copy_fields(lua_State *L, int src, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, -2, *names);
    }
}

/* Opens a standard library and pushes a copy of the listed fields, protected. */
static void add_lib(lua_State *L, const char *name, lua_CFunction open, const char *const *fields)
{
    luaL_requiref(L, name, open, 0);
    int src = lua_gettop(L);
    lua_newtable(L);
    copy_fields(L, src, fields);
    if (open == luaopen_string)
        pattern_install(L, -1);
    protect(L, name);
    lua_setfield(L, -3, name);
    lua_pop(L, 1);
}

int sandbox_open(struct vm *vm, lua_State *L)
{
    static const char *const base[] = { "assert", "error", "getmetatable", "ipairs", "next",
        "pairs", "pcall", "rawequal", "rawget", "rawlen", "select", "setmetatable", "tonumber",
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

    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sb_load, 1);
    lua_setfield(L, g, "load");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sb_print, 1);
    lua_setfield(L, g, "print");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sb_collectgarbage, 1);
    lua_setfield(L, g, "collectgarbage");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sb_require, 1);
    lua_setfield(L, g, "require");
    lua_pushcfunction(L, sb_rawset);
    lua_setfield(L, g, "rawset");

    add_lib(L, "string", luaopen_string, string);
    add_lib(L, "table", luaopen_table, table);
    add_lib(L, "math", luaopen_math, math);
    add_lib(L, "utf8", luaopen_utf8, utf8);
    add_lib(L, "coroutine", luaopen_coroutine, coroutine);
    add_lib(L, "os", luaopen_os, os);

    /* The string metatable's __index is the real string table: hide it. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    inject_http_api(vm, L);
    inject_json_api(vm, L);
    inject_log_api(vm, L);
    inject_time_api(vm, L);
    inject_crypto_api(vm, L);
    inject_task_api(vm, L);
    inject_blob_api(vm, L);
    inject_catalog_api(vm, L);
    inject_term_api(vm, L);
    inject_creds_api(vm, L);

    /* Injected modules are plain tables in g: protect each of them. */
    static const char *const mods[] = { "http", "json", "log", "time", "digest", "hmac",
        "base64", "task", "parallel", "blob", "catalog", "term", "creds", NULL };
    for (const char *const *m = mods; *m; m++) {
        if (lua_getfield(L, g, *m) == LUA_TTABLE) {
            protect(L, *m);
            lua_setfield(L, g, *m);
        } else {
            lua_pop(L, 1);
        }
    }

    lua_pushvalue(L, g);
    protect(L, "_G");                          /* g stays; proxy on top */
    lua_createtable(L, 0, 2);                  /* env metatable */
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    vm->env_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    lua_settop(L, realg - 1);
    return 0;
}
