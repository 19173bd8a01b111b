/* lua_json.c - the `json` module on lua-cjson.
 *
 * lua-cjson 2.1.0 (Debian 12) decodes every number as a float, so 3 comes
 * back as 3.0 under Lua 5.4; decode turns integral floats that fit a double
 * exactly back into integers. Invalid input is data, not misuse: decode
 * returns nil, err instead of raising.
 */
#include <math.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua-cjson.h>

#include "sched.h"
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

/* json.decode(s) -> value | nil, err. cjson's scratch buffer (at most the
 * input's size) is charged to the running task's memory budget. */
static int l_decode(lua_State *L)
{
    struct vm *vm = vm_of(L);
    size_t len;
    luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    struct acct *held = vm_reserve(vm, len, 1);
    if (!held)
        return luaL_error(L, "json.decode: a %I-byte document does not fit the memory limit",
                          (lua_Integer)len);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    int rc = lua_pcall(L, 1, 1, 0);
    vm_unreserve(vm, held, len);
    if (rc != LUA_OK) {
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
#define MAX_DEPTH 1000 /* cjson's own nesting limit */

static char array_mt_key; /* registry[&array_mt_key]: json.array_mt */

void json_push_array_mt(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
}

/* Returns an upper bound of the length of s[0..n) as a JSON string, quotes
 * included, the way cjson escapes it. */
static size_t escaped_len(const char *s, size_t n)
{
    size_t out = n + 2;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            out += 5;
        else if (c == '"' || c == '\\' || c == '/')
            out += 1;
    }
    return out;
}

/* a + b, saturating. */
static size_t add_sat(size_t a, size_t b)
{
    return a + b < a ? SIZE_MAX : a + b;
}

/* The walk before cjson encodes a value: upvalue 2 is json.array_mt; lidx
 * lists the empty arrays marked; vidx maps each table met to its encoded
 * size, or to false while it is being walked. */
struct prep {
    int lidx, vidx;
};

/* Walks the value at idx: gives each empty table whose metatable is
 * json.array_mt the element EMPTY_MARK (listing it to restore), refuses a
 * table that contains itself, and returns an upper bound of the encoded
 * size. A table met again (shared, not a cycle) is walked once. */
static size_t prepare(lua_State *L, int idx, const struct prep *p, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        sched_tick(L, 1 + n / 64);
        return escaped_len(s, n);
    }
    case LUA_TNUMBER: return 32;
    case LUA_TBOOLEAN: return 5;
    case LUA_TTABLE: break;
    default: return 4; /* json.null, or what cjson refuses */
    }
    if (depth > MAX_DEPTH)
        return 0; /* cjson refuses it */
    luaL_checkstack(L, 6, "json nesting too deep");
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    int seen = lua_rawget(L, p->vidx);
    if (seen == LUA_TBOOLEAN)
        luaL_error(L, "json.encode: cycle in table (a table contains itself)");
    if (seen == LUA_TNUMBER) {
        size_t n = (size_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
        return n;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 0);
    lua_rawset(L, p->vidx);
    sched_tick(L, 1);
    size_t total = 2;
    int marked = 0;
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
            lua_rawseti(L, p->lidx, (lua_Integer)lua_rawlen(L, p->lidx) + 1);
            marked = 1;
        }
    }
    if (!marked) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            total = add_sat(total, prepare(L, -2, p, depth + 1));
            total = add_sat(total, prepare(L, -1, p, depth + 1) + 2);
            lua_pop(L, 1);
        }
    }
    lua_pushvalue(L, idx);
    lua_pushinteger(L, total > (size_t)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)total);
    lua_rawset(L, p->vidx);
    return total;
}

/* Runs the walk (prepare) in protected mode: arguments are the value, the
 * list of marked tables, and a light userdata to store the size in. */
static int prepare_call(lua_State *L)
{
    size_t *size = lua_touserdata(L, 3);
    lua_newtable(L); /* 4: tables met */
    struct prep p = { 2, 4 };
    *size = prepare(L, 1, &p, 0);
    return 0;
}

/* Calls cjson.encode (upvalue 1) on the value at index 1. */
static int encode_call(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* json.encode(v) -> string; raises on values JSON cannot hold and on a
 * table that contains itself. Tables whose metatable is json.array_mt
 * encode as arrays even when empty. cjson's output buffer is charged to the
 * running task's memory budget (the walk bounds its size first). */
static int l_encode(lua_State *L)
{
    struct vm *vm = vm_of(L);
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_newtable(L); /* 2: the marked tables */
    size_t size = 0;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushcclosure(L, prepare_call, 2);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushlightuserdata(L, &size);
    int rc = lua_pcall(L, 3, 0, 0);
    struct acct *held = NULL;
    if (rc == LUA_OK && !(held = vm_reserve(vm, size, 1))) {
        lua_pushfstring(L, "json.encode: the output (up to %I bytes) does not fit the memory limit",
                        (lua_Integer)(size > (size_t)LUA_MAXINTEGER ? LUA_MAXINTEGER : size));
        rc = LUA_ERRMEM;
    }
    if (rc == LUA_OK) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushcclosure(L, encode_call, 1);
        lua_pushvalue(L, 1);
        rc = lua_pcall(L, 1, 1, 0);
        vm_unreserve(vm, held, size);
    }
    lua_Integer marked = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= marked; i++) {
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
    lua_newtable(L); /* array_mt: read-only, it is the metatable of the daemon's arrays too */
    sandbox_protect(L, "json.array_mt");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);
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
