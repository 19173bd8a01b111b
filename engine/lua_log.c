/* lua_log.c - the `log` module: log.debug/info/warn/error(fmt, ...) write a
 * line to the running task's log. With one argument it is logged as is;
 * with more, the first is a string.format pattern. */
#include <lauxlib.h>

#include "sched.h"
#include "vm.h"

/* Formats the arguments into one string on top of L. */
static void format_args(lua_State *L)
{
    int n = lua_gettop(L);
    if (n <= 1) {
        luaL_tolstring(L, 1, NULL);
        return;
    }
    luaL_checkstring(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "string");
    lua_getfield(L, -1, "format");
    lua_replace(L, -3);
    lua_pop(L, 1);
    lua_insert(L, 1);
    lua_call(L, n, 1);
}

/* Shared body of the four level functions; the level is upvalue 2. */
static int l_log(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    enum log_level lvl = (enum log_level)lua_tointeger(L, lua_upvalueindex(2));
    if (lvl < vm->log_level)
        return 0;
    format_args(L);
    vm_logf(vm, task_current(vm), lvl, "%s", lua_tostring(L, -1));
    return 0;
}

void inject_log_api(struct vm *vm, lua_State *L)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    lua_createtable(L, 0, 4);
    for (int i = 0; i < 4; i++) {
        lua_pushlightuserdata(L, vm);
        lua_pushinteger(L, i);
        lua_pushcclosure(L, l_log, 2);
        lua_setfield(L, -2, names[i]);
    }
    lua_setfield(L, -2, "log");
}
