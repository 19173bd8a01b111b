/* lua_coroutine.c - coroutine.resume, wrap, close and status for scripts.
 *
 * Two things differ from the stock library:
 * - the engine's fairness pause passes up through script coroutines: when a
 *   coroutine's slice is over, it yields to its resumer here, which pauses
 *   its own thread in turn, up to the task's thread and the scheduler; on
 *   the way back down each resumes the one below, so the 10 ms slice holds
 *   inside coroutines too;
 * - a task's own thread (what coroutine.running() returns in a task) can be
 *   neither resumed nor closed by a script: it belongs to the scheduler, and
 *   resuming it would finish a pending operation with nothing to finish.
 * The extra space of a script coroutine is NULL, or a mark (sched.h) while a
 * pause passes through it or while it runs where a pause cannot pass up.
 */
#include <lauxlib.h>

#include "sched.h"
#include "vm.h"

/* Returns why a script may not resume or close co, or NULL when it may. */
static const char *refused(lua_State *co)
{
    void *p = *(void **)lua_getextraspace(co);
    if (p == &sched_co_busy)
        return "cannot resume non-suspended coroutine";
    if (sched_thread_task(co))
        return "cannot resume a task's own thread (use task.spawn and h:wait)";
    return NULL;
}

/* Pushes the outcome of a resume of co that ended with status st and nres
 * values: true, values... (resume) or the values (wrap), or false, error
 * (resume); wrap raises the error instead. Returns the count pushed. */
static int finish_resume(lua_State *L, lua_State *co, int st, int nres, int wrap)
{
    if (st == LUA_OK || st == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            return luaL_error(L, "too many results to resume");
        }
        if (!wrap)
            lua_pushboolean(L, 1);
        lua_xmove(co, L, nres);
        return nres + !wrap;
    }
    lua_xmove(co, L, 1); /* the error object */
    if (!wrap) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) { /* it failed: close its tbc variables */
        stat = lua_resetthread(co);
        lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int resume_more(lua_State *L, int status, lua_KContext ctx);

/* Runs co (narg arguments on its stack) until it returns, fails or yields
 * to its resumer. A fairness pause inside it pauses L too, and resumes co
 * when L is resumed. wrap tells coroutine.wrap's closure from resume. */
static int run_coroutine(lua_State *L, lua_State *co, int narg, int wrap)
{
    struct task *t = task_current(vm_of(L));
    *(void **)lua_getextraspace(co) = t && sched_can_pause(L, t) ? NULL : &sched_co_noprop;
    int nres = 0;
    int st = lua_resume(co, L, narg, &nres);
    if (st == LUA_YIELD && t && t->fair_yield) {
        t->fair_yield = 0;
        lua_pop(co, nres);
        *(void **)lua_getextraspace(co) = &sched_co_busy;
        return sched_pause(L, wrap, resume_more);
    }
    *(void **)lua_getextraspace(co) = NULL;
    return finish_resume(L, co, st, nres, wrap);
}

/* Continuation after a fairness pause: resumes the coroutine below. */
static int resume_more(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    int wrap = (int)ctx;
    lua_State *co = lua_tothread(L, wrap ? lua_upvalueindex(1) : 1);
    return run_coroutine(L, co, 0, wrap);
}

/* Moves L's values from index first on to co, checking its stack. */
static void move_args(lua_State *L, lua_State *co, int first)
{
    int narg = lua_gettop(L) - first + 1;
    if (!lua_checkstack(co, narg))
        luaL_error(L, "too many arguments to resume");
    lua_xmove(L, co, narg);
}

/* coroutine.resume(co, ...) -> true, values... | false, err */
static int l_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    const char *why = refused(co);
    if (why) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, why);
        return 2;
    }
    int narg = lua_gettop(L) - 1;
    move_args(L, co, 2);
    return run_coroutine(L, co, narg, 0);
}

/* The function coroutine.wrap returns: resumes its coroutine (upvalue 1). */
static int l_wrapped(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    const char *why = refused(co);
    if (why)
        return luaL_error(L, "%s", why);
    int narg = lua_gettop(L);
    move_args(L, co, 1);
    return run_coroutine(L, co, narg, 1);
}

/* coroutine.wrap(fn) -> function */
static int l_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, l_wrapped, 1);
    return 1;
}

/* coroutine.close(co): the stock function (upvalue 1), refused for a task's
 * thread and for a coroutine a pause is passing through. */
static int l_close(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    if (*(void **)lua_getextraspace(co) == &sched_co_busy)
        return luaL_error(L, "cannot close a normal coroutine");
    if (sched_thread_task(co))
        return luaL_error(L, "cannot close a task's own thread");
    return sandbox_call_stock(L, LUA_MULTRET);
}

/* coroutine.status(co): the stock function (upvalue 1), except that a
 * coroutine a pause is passing through is "normal", as it is to Lua. */
static int l_status(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    if (*(void **)lua_getextraspace(co) == &sched_co_busy && !sched_thread_task(co)) {
        lua_pushliteral(L, "normal");
        return 1;
    }
    return sandbox_call_stock(L, 1);
}

void coroutine_install(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, l_resume);
    lua_setfield(L, idx, "resume");
    lua_pushcfunction(L, l_wrap);
    lua_setfield(L, idx, "wrap");
    lua_getfield(L, idx, "close");
    lua_pushcclosure(L, l_close, 1);
    lua_setfield(L, idx, "close");
    lua_getfield(L, idx, "status");
    lua_pushcclosure(L, l_status, 1);
    lua_setfield(L, idx, "status");
}
