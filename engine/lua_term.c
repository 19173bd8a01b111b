/* lua_term.c - the `term` module, for command-line front ends written in Lua
 * (`replica run`'s progress view): term.isatty() tells whether stderr is a
 * terminal, term.write(s) writes to stderr without a newline. Stage functions
 * should log instead. */
#include <stdio.h>
#include <unistd.h>

#include <lauxlib.h>

#include "vm.h"

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty(STDERR_FILENO));
    return 1;
}

static int l_write(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    fwrite(s, 1, n, stderr);
    fflush(stderr);
    return 0;
}

void inject_term_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l_isatty);
    lua_setfield(L, -2, "isatty");
    lua_pushcfunction(L, l_write);
    lua_setfield(L, -2, "write");
    lua_setfield(L, -2, "term");
}
