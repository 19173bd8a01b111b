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

#define EMPTY_MARK "\0replica:empty-array\0"
#define EMPTY_JSON "[\"\\u0000replica:empty-array\\u0000\"]"

/* Finds the empty tables under idx whose metatable is json.array_mt (at
 * upvalue 2) and gives each the element EMPTY_MARK, appending it to the
 * list at lidx so it can be restored. Returns how many were marked. */
static int mark_empty_arrays(lua_State *L, int idx, int lidx, int depth)
{
    if (depth > 1000 || lua_type(L, idx) != LUA_TTABLE)
        return 0;
    luaL_checkstack(L, 4, "json nesting too deep");
    idx = lua_absindex(L, idx);
    if (lua_getmetatable(L, idx)) {
        int is_array = lua_rawequal(L, -1, lua_upvalueindex(2));
        lua_pop(L, 1);
        lua_pushnil(L);
        int empty = lua_next(L, idx) == 0;
        if (!empty)
            lua_pop(L, 2);
        if (is_array && empty) {
            lua_pushlstring(L, EMPTY_MARK, sizeof(EMPTY_MARK) - 1);
            lua_rawseti(L, idx, 1);
            lua_pushvalue(L, idx);
            lua_rawseti(L, lidx, (lua_Integer)lua_rawlen(L, lidx) + 1);
            return 1;
        }
    }
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n += mark_empty_arrays(L, -1, lidx, depth + 1);
        lua_pop(L, 1);
    }
    return n;
}

/* Calls cjson.encode (upvalue 1) on the value at index 1. */
static int encode_call(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* json.encode(v) -> string; raises on values JSON cannot hold. Tables whose
 * metatable is json.array_mt encode as arrays even when empty. */
static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_newtable(L); /* 2: the marked tables */
    int marked = mark_empty_arrays(L, 1, 2, 0);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, encode_call, 1);
    lua_pushvalue(L, 1);
    int rc = lua_pcall(L, 1, 1, 0);
    for (int i = 1; i <= marked; i++) {
        lua_rawgeti(L, 2, i);
        lua_pushnil(L);
        lua_rawseti(L, -2, 1);
        lua_pop(L, 1);
    }
    if (rc != LUA_OK)
        return lua_error(L);
    if (marked)
        luaL_gsub(L, lua_tostring(L, -1), EMPTY_JSON, "[]");
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
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "array_mt");
    lua_getfield(L, cj, "encode");
    lua_insert(L, -2);
    lua_pushcclosure(L, l_encode, 2);
    lua_setfield(L, -2, "encode");
    lua_getfield(L, cj, "null");
    lua_setfield(L, -2, "null");
    lua_setfield(L, -3, "json");
    lua_pop(L, 1);
}
