/* repl.h - what `replica repl` adds to the engine: its terminal and event
 * queue (lua_repl.c: sys.repl), and the debugger of stage code
 * (lua_debugger.c: sys.dbg, and the line hook sched.c calls). */
#ifndef REPLICA_REPL_H
#define REPLICA_REPL_H

#include <stdio.h>

#include <lua.h>

#include "vm.h"

struct task;

/* Queues an event for the REPL's controller (the task waiting in
 * sys.repl.next): kind is "paused", "post", "interrupt", ...; id is the
 * event's number (a pause's id). text may be NULL. Returns 0 or -1. */
int repl_post(struct vm *vm, const char *kind, long id, const char *text);

/* Writes text (a newline is added when it has none) to f, above the prompt
 * when one is shown, which is redrawn with the line being typed. */
void repl_print(FILE *f, const char *text);

/* The log function of `replica repl`: lines go through repl_print on stderr. */
void repl_log(void *ud, struct task *t, enum log_level lvl, const char *msg);

/* The line hook of tasks that run script code while the debugger is on
 * (vm->debugging): breakpoints, stepping, debug_break(). May yield the task
 * (a pause). */
void dbg_line(lua_State *L, struct task *t, lua_Debug *ar);

/* debug_break() in scripts: pauses at the next line when the debugger is on,
 * else does nothing. */
int dbg_lua_break(lua_State *L);

/* Adds sys.repl (lua_repl.c) and sys.dbg (lua_debugger.c) to the sys table
 * on top of L. */
void sys_add_repl(struct vm *vm, lua_State *L);
void sys_add_dbg(struct vm *vm, lua_State *L);

/* Adds both to the sys of the entry chunk on top of L (after sys_install):
 * `replica repl`'s, and `replica script`'s (the specs drive them). */
void sys_install_repl(struct vm *vm, lua_State *L);

#endif
