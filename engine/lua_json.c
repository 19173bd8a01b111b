/* lua_json.c - the `json` module on lua-cjson.
 *
 * lua-cjson 2.1.0 (Debian 12) decodes every number as a float, so 3 comes
 * back as 3.0 under Lua 5.4; decode turns integral floats that fit a double
 * exactly back into integers. Invalid input is data, not misuse: decode
 * returns nil, err instead of raising.
 */
#include <math.h>

#include <lauxlib.h>
#include <lua-cjson.h>

#include "vm.h"

#define MAX_EXACT 9007199254740992.0 /* 2^53 */

/* Walks the value at idx converting integral floats to integers. */
static void fix_numbers(lua_State *L, int idx, int depth)
{
    if (depth > 1000 || lua_type(L, idx) != LUA_TTABLE)
        return;
    luaL_checkstack(L, 4, "json nesting too deep");
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number n = lua_tonumber(L, -1);
            if (n == floor(n) && fabs(n) <= MAX_EXACT) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, (lua_Integer)n);
                lua_rawset(L, idx);
            }
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            fix_numbers(L, -1, depth + 1);
        }
        lua_pop(L, 1);
    }
}

/* json.decode(s) -> value | nil, err */
static int l_decode(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
        lua_Number n = lua_tonumber(L, -1);
        if (n == floor(n) && fabs(n) <= MAX_EXACT)
            lua_pushinteger(L, (lua_Integer)n);
    }
    fix_numbers(L, -1, 0);
    return 1;
}

/* json.encode(v) -> string; raises on values JSON cannot hold. */
static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

void inject_json_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    luaopen_cjson(L);
    int cj = lua_gettop(L);
    /* 14 significant digits is the most cjson 2.1.0 allows: exact integers
     * up to 10^14, enough for any blob size. */
    lua_getfield(L, cj, "encode_number_precision");
    lua_pushinteger(L, 14);
    lua_call(L, 1, 0);
    lua_getfield(L, cj, "encode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);

    lua_newtable(L);
    lua_getfield(L, cj, "decode");
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, cj, "encode");
    lua_pushcclosure(L, l_encode, 1);
    lua_setfield(L, -2, "encode");
    lua_getfield(L, cj, "null");
    lua_setfield(L, -2, "null");
    lua_setfield(L, -3, "json");
    lua_pop(L, 1);
}
