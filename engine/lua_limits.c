/* lua_limits.c - the standard functions the sandbox replaces so that they
 * stay within the running task's budget. The stock versions loop in C,
 * where the CPU hook never runs: string.rep("", 3e9) or
 * table.move({}, 1, 3e8, 2) froze the event loop for seconds. These keep
 * the stock semantics and messages, and charge their work (sched_tick):
 * - string.rep returns at once when the result is empty, and is otherwise
 *   bounded by the memory its result takes;
 * - table.move charges every element and pauses when its slice is over;
 * - table.sort without a comparator sorts with a charged comparison (a
 *   comparator function is Lua code, which the hook already charges).
 */
#include <limits.h>
#include <string.h>

#include <lauxlib.h>

#include "sched.h"
#include "vm.h"

/* The longest string string.rep makes, as in the stock library. */
#define MAX_SIZE ((size_t)INT_MAX)

/* string.rep(s, n [, sep]) */
static int l_rep(lua_State *L)
{
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || (l == 0 && lsep == 0)) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || (lua_Unsigned)(l + lsep) > (lua_Unsigned)(MAX_SIZE / n))
        return luaL_error(L, "resulting string too large");
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, total);
    while (n-- > 1) {
        memcpy(p, s, l);
        p += l;
        if (lsep > 0) {
            memcpy(p, sep, lsep);
            p += lsep;
        }
    }
    memcpy(p, s, l);
    luaL_pushresultsize(&b, total);
    return 1;
}

/* Raises unless the value at arg is a table, or has the metamethods the
 * operation needs (need: "r" reads, "w" writes), as the stock checks do. */
static void check_table(lua_State *L, int arg, int reads, int writes)
{
    if (lua_type(L, arg) == LUA_TTABLE)
        return;
    int ok = lua_getmetatable(L, arg);
    if (ok) {
        int n = 1;
        if (reads) {
            lua_pushliteral(L, "__index");
            ok = lua_rawget(L, -++n) != LUA_TNIL;
        }
        if (ok && writes) {
            lua_pushliteral(L, "__newindex");
            ok = lua_rawget(L, -++n) != LUA_TNIL;
        }
        lua_pop(L, n);
    }
    if (!ok)
        luaL_checktype(L, arg, LUA_TTABLE);
}

/* Stack slots of a table.move in progress (after the five arguments). */
enum { MV_I = 6, MV_N, MV_DIR, MV_DST };

/* Moves the elements left to move (state in the MV_ slots), charging each
 * and pausing when the slice is over; returns the destination table. */
static int move_on(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    lua_Integer f = lua_tointeger(L, 2), t = lua_tointeger(L, 4);
    lua_Integer i = lua_tointeger(L, MV_I), n = lua_tointeger(L, MV_N);
    int back = lua_toboolean(L, MV_DIR);
    int tt = (int)lua_tointeger(L, MV_DST);
    while (i < n) {
        lua_Integer k = back ? n - 1 - i : i;
        lua_geti(L, 1, f + k);
        lua_seti(L, tt, t + k);
        i++;
        if (sched_tick(L, 4) && i < n) {
            lua_pushinteger(L, i);
            lua_replace(L, MV_I);
            return sched_pause(L, 0, move_on);
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

/* table.move(a1, f, e, t [, a2]) */
static int l_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
    check_table(L, 1, 1, 0);
    check_table(L, tt, 0, 1);
    lua_settop(L, 5);
    if (e < f) {
        lua_pushvalue(L, tt);
        return 1;
    }
    luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
    lua_Integer n = e - f + 1;
    luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
    int forward = t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ));
    lua_pushinteger(L, 0);
    lua_pushinteger(L, n);
    lua_pushboolean(L, !forward);
    lua_pushinteger(L, tt);
    return move_on(L, LUA_OK, 0);
}

/* The comparison table.sort uses when given none: a < b, charged. */
static int less_than(lua_State *L)
{
    sched_tick(L, 8);
    lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
    return 1;
}

/* table.sort(t [, comp]): the stock sort (upvalue 1) with less_than as the
 * default comparison. */
static int l_sort(lua_State *L)
{
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushcfunction(L, less_than);
    }
    return sandbox_call_stock(L, 0);
}

void limits_install_string(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, l_rep);
    lua_setfield(L, idx, "rep");
}

void limits_install_table(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, l_move);
    lua_setfield(L, idx, "move");
    lua_getfield(L, idx, "sort");
    lua_pushcclosure(L, l_sort, 1);
    lua_setfield(L, idx, "sort");
}
