/* lua_httpd.c - sys.listen: the HTTP server for trusted Lua (placeholder until written). */
#include "sys.h"

void sys_add_httpd(struct vm *vm, lua_State *L)
{
    (void)vm;
    (void)L;
}
