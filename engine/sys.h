/* sys.h - the privileged `sys` table: the database, the HTTP server, the
 * credential keyring and the task-log sink. Only entry chunks of trusted
 * commands (`replica serve`, `replica script`) see it, as a field of their
 * own environment; stage scripts and templates never do, and library
 * modules get it only when an entry passes it to them. */
#ifndef REPLICA_SYS_H
#define REPLICA_SYS_H

#include <lua.h>
#include <sqlite3.h>

#include "vm.h"

/* Pushes a new sys table holding every privileged function. */
void sys_push(struct vm *vm, lua_State *L);

/* Sets field "sys" of the environment (first upvalue) of the function on
 * top of L's stack to a new sys table. */
void sys_install(struct vm *vm, lua_State *L);

/* Each adds its functions to the table on top of the stack. */
void sys_add_db(struct vm *vm, lua_State *L);      /* lua_db.c: sys.db_open */
void sys_add_httpd(struct vm *vm, lua_State *L);   /* lua_httpd.c: sys.listen */
void sys_add_watchdog(struct vm *vm, lua_State *L); /* watchdog.c: sys.watchdog* */
void sys_add_files(struct vm *vm, lua_State *L);    /* sys_files.c: sys.read_tree */
void sys_add_http(struct vm *vm, lua_State *L);     /* lua_http.c: sys.http_stats */

/* Returns the open SQLite handle of the db object at idx, raising a Lua
 * error when idx is not an open db (lua_db.c). The object owns it. */
sqlite3 *lua_db_handle(lua_State *L, int idx);

#endif
