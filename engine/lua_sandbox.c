/* lua_sandbox.c - the `sandbox` module, for trusted code only (the runner,
 * `replica check`, the daemon): running stage and template code so that it
 * can reach nothing of the daemon's.
 *   local box = sandbox.new()          a context with its own module instances
 *   box:compile("stages", name)        -> fn | nil, err: the file compiled in a
 *                                         fresh environment of the box, not run
 *   box:load(source, chunkname [, key]) -> fn | nil, err: the same for text;
 *                                         with key (its content hash), compiled
 *                                         once and cached under it
 *   sandbox.spawn([opts,] fn, ...)     -> task handle: fn(...) as a sandboxed
 *                                         task (opts as task.spawn's)
 *   sandbox.plain(v [, what])          -> copy | nil, err: v as plain data
 * A sandboxed task and all it spawns count against the task's limits, may
 * not install __gc metamethods, and are killed when code of theirs runs too
 * long where it cannot be paused; its children end with it. sandbox.plain
 * is how trusted code takes a value from a script: it reads raw (no
 * metamethod of the script's runs) and keeps only strings, numbers,
 * booleans, json.null and tables of them, so nothing the script can still
 * reach, or that runs its code, is handed on.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "sched.h"
#include "vm.h"

#define BOX_MT "replica.sandbox.box"
#define PLAIN_DEPTH 200

/* Returns the module table of the box at idx (its user value), pushed. */
static void push_box_modules(lua_State *L, int idx)
{
    luaL_checkudata(L, idx, BOX_MT);
    lua_getiuservalue(L, idx, 1);
}

/* sandbox.new() -> box */
static int l_new(lua_State *L)
{
    lua_newuserdatauv(L, 1, 1);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, BOX_MT);
    return 1;
}

/* box:compile(kind, name) -> fn | nil, err */
static int box_compile(lua_State *L)
{
    struct vm *vm = vm_of(L);
    const char *kind = catalog_check_kind(L, 2);
    const char *name = luaL_checkstring(L, 3);
    lua_settop(L, 3);
    push_box_modules(L, 1);
    int mods = lua_gettop(L);
    if (!catalog_find(L, kind, name))
        return 2;
    const char *path = lua_tostring(L, -1);
    lua_pushfstring(L, "@%s/%s.lua", kind, name);
    if (vm_load_file_in(vm, L, path, lua_tostring(L, -1), mods) != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* box:load(source, chunkname [, key]) -> fn | nil, err */
static int box_load(lua_State *L)
{
    struct vm *vm = vm_of(L);
    size_t len;
    const char *src = luaL_checklstring(L, 2, &len);
    const char *name = luaL_optstring(L, 3, "=(sandbox)");
    const char *key = luaL_optstring(L, 4, NULL);
    lua_settop(L, 4);
    push_box_modules(L, 1);
    int mods = lua_gettop(L);
    int rc = key ? vm_load_keyed_in(vm, L, key, src, len, name, mods)
                 : vm_load_buffer_in(vm, L, src, len, name, mods);
    if (rc != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* sandbox.spawn([opts,] fn, ...) -> handle */
static int l_spawn(lua_State *L)
{
    return task_spawn_lua(L, 1);
}

/* What a plain copy needs while it walks: the tables met (original -> copy,
 * or false while it is being copied), json.array_mt, and the path so far
 * for messages. */
struct plain {
    int seen, array_mt;
    char path[256];
};

/* Appends the key on top of L to the path, returning its old length. */
static size_t path_push(lua_State *L, struct plain *p)
{
    size_t n = strlen(p->path);
    if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(p->path + n, sizeof(p->path) - n, ".%s", lua_tostring(L, -1));
    else
        snprintf(p->path + n, sizeof(p->path) - n, "[%s]", lua_tostring(L, -1));
    return n;
}

/* Pushes a plain copy of the value at idx, raising "what.path: why" for
 * what plain data cannot hold. */
static void copy_plain(lua_State *L, int idx, struct plain *p, int depth)
{
    idx = lua_absindex(L, idx);
    int t = lua_type(L, idx);
    if (t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING) {
        lua_pushvalue(L, idx);
        return;
    }
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL) { /* json.null */
        lua_pushvalue(L, idx);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "%s: %s values cannot be stored (only strings, numbers, booleans and "
                      "tables of them)", p->path, luaL_typename(L, idx));
    if (depth > PLAIN_DEPTH)
        luaL_error(L, "%s: nested more than %d levels deep", p->path, PLAIN_DEPTH);
    luaL_checkstack(L, 8, "nesting too deep");
    lua_pushvalue(L, idx);
    int seen = lua_rawget(L, p->seen);
    if (seen == LUA_TBOOLEAN)
        luaL_error(L, "cycle in %s (a table that contains itself)", p->path);
    if (seen == LUA_TTABLE)
        return; /* shared, not a cycle: share the copy too */
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 0);
    lua_rawset(L, p->seen);
    sched_tick(L, 2);
    lua_newtable(L);
    int out = lua_gettop(L);
    if (lua_getmetatable(L, idx)) {
        if (lua_rawequal(L, -1, p->array_mt))
            lua_setmetatable(L, out);
        else
            lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (kt != LUA_TSTRING && kt != LUA_TNUMBER)
            luaL_error(L, "%s: a %s key cannot be stored", p->path, luaL_typename(L, -2));
        lua_pushvalue(L, -2);
        size_t n = path_push(L, p);
        lua_pop(L, 1);
        copy_plain(L, -1, p, depth + 1); /* key, value, copy */
        p->path[n] = '\0';
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_rawset(L, out);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, idx);
    lua_pushvalue(L, out);
    lua_rawset(L, p->seen);
}

/* Runs copy_plain in protected mode: arguments are the value and the
 * struct plain. */
static int plain_call(lua_State *L)
{
    struct plain *p = lua_touserdata(L, 2);
    lua_newtable(L);
    p->seen = lua_gettop(L);
    json_push_array_mt(L);
    p->array_mt = lua_gettop(L);
    copy_plain(L, 1, p, 0);
    return 1;
}

/* sandbox.plain(v [, what]) -> copy | nil, err */
static int l_plain(lua_State *L)
{
    luaL_checkany(L, 1);
    struct plain p;
    snprintf(p.path, sizeof(p.path), "%s", luaL_optstring(L, 2, "value"));
    lua_pushcfunction(L, plain_call);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, &p);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        struct task *t = task_current(vm_of(L));
        if (t && t->kill != KILL_NONE)
            return lua_error(L); /* out of budget: not the value's fault */
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

void inject_sandbox_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    if (luaL_newmetatable(L, BOX_MT)) {
        static const luaL_Reg methods[] = { { "compile", box_compile }, { "load", box_load },
                                            { NULL, NULL } };
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = { { "new", l_new }, { "spawn", l_spawn },
                                      { "plain", l_plain }, { NULL, NULL } };
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "sandbox");
}
