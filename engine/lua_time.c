/* lua_time.c - the `time` module: time.now() (wall clock, seconds since the
 * epoch), time.mono() (monotonic seconds) and time.sleep(s), which yields. */
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "sched.h"
#include "vm.h"

#define SLEEP_MT "replica.time.sleep"

struct sleep_op {
    struct task_op op;
    struct task *task;
    struct event *ev;
};

static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int l_mono(lua_State *L)
{
    lua_pushnumber(L, vm_now_mono());
    return 1;
}

/* Timer callback: wakes the sleeping task. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sleep_op *s = arg;
    (void)fd;
    (void)what;
    task_wake(s->task);
}

static void sleep_cancel(struct task_op *op)
{
    struct sleep_op *s = (struct sleep_op *)op;
    if (s->ev)
        event_del(s->ev);
}

/* __gc: frees the timer; safe to run twice. */
static int sleep_gc(lua_State *L)
{
    struct sleep_op *s = luaL_checkudata(L, 1, SLEEP_MT);
    if (s->ev)
        event_free(s->ev);
    s->ev = NULL;
    return 0;
}

static int sleep_done(lua_State *L, int status, lua_KContext ctx)
{
    struct sleep_op *s = (struct sleep_op *)ctx;
    (void)status;
    if (s->op.cancelled) {
        return task_push_cancelled(L);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* time.sleep(seconds) -> true | nil, "cancelled" */
static int l_sleep(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0, 1, "must not be negative");
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "time.sleep must be called from a task");
    task_check_yieldable(L, t);
    if (t->cancelled) {
        return task_push_cancelled(L);
    }
    struct sleep_op *s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    luaL_setmetatable(L, SLEEP_MT);
    s->op.cancel = sleep_cancel;
    s->task = t;
    s->ev = evtimer_new(vm->base, on_timer, s);
    if (!s->ev)
        return luaL_error(L, "time.sleep: out of memory");
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (lua_Number)tv.tv_sec) * 1e6);
    if (evtimer_add(s->ev, &tv) != 0)
        return luaL_error(L, "time.sleep: cannot arm timer");
    return task_yield(L, t, &s->op, sleep_done, (lua_KContext)s);
}

void inject_time_api(struct vm *vm, lua_State *L)
{
    luaL_newmetatable(L, SLEEP_MT);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, sleep_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_mono);
    lua_setfield(L, -2, "mono");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_sleep, 1);
    lua_setfield(L, -2, "sleep");
    lua_setfield(L, -2, "time");
}
