/* lua_pattern.h - string.find, match, gmatch and gsub for sandboxed code.
 *
 * The engine's own matcher with Lua 5.4's pattern semantics. It keeps its
 * backtracking state in a userdata instead of on the C stack, charges its
 * steps to the running task (sched_tick) and pauses when the task's slice is
 * over, so one pattern cannot freeze the event loop or outrun the CPU budget.
 */
#ifndef REPLICA_LUA_PATTERN_H
#define REPLICA_LUA_PATTERN_H

#include <lua.h>

/* Sets find, match, gmatch and gsub into the table at stack index idx. */
void pattern_install(lua_State *L, int idx);

#endif
