/* lua_db.c - sys.db_open: SQLite for trusted Lua (placeholder until written). */
#include "sys.h"

void sys_add_db(struct vm *vm, lua_State *L)
{
    (void)vm;
    (void)L;
}
