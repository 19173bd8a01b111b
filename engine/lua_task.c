/* lua_task.c - the `task` and `parallel` modules.
 *
 * task.spawn([opts,] fn, ...) starts fn(...) as a child task and returns a
 * handle: h:wait() yields until it ends and returns true, results... or
 * nil, err; h:cancel() cancels it and its children; h:status() names its
 * state. parallel.map is written in Lua on top of these.
 */
#include <stdio.h>
#include <string.h>

#include <unistd.h>

#include <lauxlib.h>

#include "http.h"

#include "sched.h"
#include "vm.h"

#define TASK_MT "replica.task"

struct handle {
    struct task *t;
};

/* Returns the handle's task, raising on a released handle. */
static struct task *check_task(lua_State *L, int idx)
{
    struct handle *h = luaL_checkudata(L, idx, TASK_MT);
    if (!h->t)
        luaL_error(L, "task handle is closed");
    return h->t;
}

/* Returns the running task, raising outside of one. */
static struct task *self_task(lua_State *L)
{
    struct task *t = task_current(vm_of(L));
    if (!t)
        luaL_error(L, "must be called from a task");
    return t;
}

int task_spawn_lua(lua_State *L, int sandboxed)
{
    struct vm *vm = vm_of(L);
    struct task *self = self_task(L);
    struct task_opts o = { 0 };
    o.sandboxed = sandboxed;
    int first = 1;
    char name[128];
    if (lua_istable(L, 1)) {
        first = 2;
        if (lua_getfield(L, 1, "name") != LUA_TNIL) {
            snprintf(name, sizeof(name), "%s", luaL_checkstring(L, -1));
            o.name = name;
        }
        if (lua_getfield(L, 1, "memory") != LUA_TNIL) {
            lua_Integer m = luaL_checkinteger(L, -1);
            luaL_argcheck(L, m > 0, 1, "'memory' must be a positive number of bytes");
            o.mem_limit = (size_t)m;
        }
        if (lua_getfield(L, 1, "cpu") != LUA_TNIL) {
            o.cpu_limit = luaL_checknumber(L, -1);
            luaL_argcheck(L, o.cpu_limit > 0, 1, "'cpu' must be a positive number of seconds");
        }
        lua_pop(L, 3);
    }
    luaL_checktype(L, first, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - first;
    struct handle *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->t = NULL;
    luaL_setmetatable(L, TASK_MT);
    lua_insert(L, first);  /* handle below fn and args */
    struct task *t = task_spawn(vm, L, nargs, &o, self);
    if (!t)
        return luaL_error(L, "task.spawn: out of memory");
    task_hold(t);
    h->t = t;
    lua_settop(L, first);
    return 1;
}

/* task.spawn([opts,] fn, ...) -> handle. In a sandboxed task the child's
 * limits are at most the caller's, and count against them. */
static int l_spawn(lua_State *L)
{
    return task_spawn_lua(L, 0);
}

static int wait_done(lua_State *L, int status, lua_KContext ctx)
{
    struct task_op *op = (struct task_op *)ctx;
    (void)status;
    if (op->cancelled) {
        return task_push_cancelled(L);
    }
    return task_push_outcome(L, check_task(L, 1));
}

/* h:wait() -> true, results... | nil, err */
static int l_wait(lua_State *L)
{
    struct task *t = check_task(L, 1);
    struct task *self = self_task(L);
    task_check_yieldable(L, self);
    lua_settop(L, 1);
    if (self->cancelled) {
        return task_push_cancelled(L);
    }
    if (task_wait(L, self, t, wait_done) < 0)
        return task_push_outcome(L, t);
    return 0; /* not reached: task_wait yields */
}

/* Continuation of h:join(): a wake that is not the task's end (the caller
 * was cancelled) waits again. */
static int join_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct task *t = check_task(L, 1);
    lua_settop(L, 1);
    if (t->state == TASK_DONE || task_wait(L, self_task(L), t, join_done) < 0)
        return task_push_outcome(L, t);
    return 0; /* not reached: task_wait yields */
}

/* h:join() -> true, results... | nil, err: like h:wait(), but it waits for
 * the task to end even when the caller is cancelled, for code that must
 * record how a child ended. */
static int l_join(lua_State *L)
{
    struct task *t = check_task(L, 1);
    struct task *self = self_task(L);
    task_check_yieldable(L, self);
    lua_settop(L, 1);
    if (task_wait(L, self, t, join_done) < 0)
        return task_push_outcome(L, t);
    return 0; /* not reached: task_wait yields */
}

/* h:cancel() */
static int l_cancel(lua_State *L)
{
    task_cancel(check_task(L, 1));
    return 0;
}

/* h:status() -> "ready" | "running" | "waiting" | "done" | "failed" | "cancelled" */
static int l_status(lua_State *L)
{
    struct task *t = check_task(L, 1);
    static const char *const names[] = { "ready", "running", "waiting", "done" };
    if (t->state == TASK_DONE && t->cancelled)
        lua_pushliteral(L, "cancelled");
    else if (t->state == TASK_DONE && !t->ok)
        lua_pushliteral(L, "failed");
    else
        lua_pushstring(L, names[t->state]);
    return 1;
}

/* __gc: lets the scheduler free the task once it is done; idempotent. */
static int l_gc(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, TASK_MT);
    if (h->t)
        task_release(h->t);
    h->t = NULL;
    return 0;
}

/* task.yield(): lets other tasks run, then continues. */
static int l_yield(lua_State *L)
{
    task_check_yieldable(L, self_task(L));
    return lua_yield(L, 0);
}

/* task.cancelled() -> boolean */
static int l_cancelled(lua_State *L)
{
    lua_pushboolean(L, self_task(L)->cancelled);
    return 1;
}

/* Reads the resident set size from /proc; 0 when unavailable. */
static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* task.stats() -> {tasks=, lua_bytes=, lua_peak=, http_pending=, rss=}: what
 * the engine holds now, for benchmarks and debugging. */
static int l_stats(lua_State *L)
{
    struct vm *vm = vm_of(L);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, vm->live);
    lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, (lua_Integer)vm->mem_used);
    lua_setfield(L, -2, "lua_bytes");
    lua_pushinteger(L, (lua_Integer)vm->mem_peak);
    lua_setfield(L, -2, "lua_peak");
    lua_pushinteger(L, http_client_pending(vm->http));
    lua_setfield(L, -2, "http_pending");
    lua_pushinteger(L, rss_bytes());
    lua_setfield(L, -2, "rss");
    return 1;
}

/* task.name() -> the running task's name */
static int l_name(lua_State *L)
{
    lua_pushstring(L, self_task(L)->name);
    return 1;
}

/* parallel.map(items, fn [, {limit = 16}]) -> results | nil, err, index.
 * At most `limit` children run at once; each takes the next item. The first
 * failure (an error, or fn returning nil, err) cancels the others. */
static const char parallel_src[] =
    "local task, error, type, pcall, ipairs, math_type = task, error, type, pcall, ipairs, math.type\n"
    "local parallel = {}\n"
    "function parallel.map(items, fn, opts)\n"
    "  if type(items) ~= 'table' then error('parallel.map: items must be a table', 2) end\n"
    "  if type(fn) ~= 'function' then error('parallel.map: fn must be a function', 2) end\n"
    "  local limit = opts and opts.limit or 16\n"
    "  if math_type(limit) ~= 'integer' or limit < 1 then\n"
    "    error('parallel.map: limit must be a positive integer', 2)\n"
    "  end\n"
    "  local n, results, nexti, failed, failed_at = #items, {}, 1, nil, nil\n"
    "  local workers = {}\n"
    "  local function fail(err, i, self)\n"
    "    if failed then return end\n"
    "    failed, failed_at = err, i\n"
    "    for _, w in ipairs(workers) do\n"
    "      if w ~= self then w:cancel() end\n"
    "    end\n"
    "  end\n"
    "  local function worker(self_index)\n"
    "    while not failed and nexti <= n do\n"
    "      local i = nexti\n"
    "      nexti = i + 1\n"
    "      local ok, r, err = pcall(fn, items[i], i)\n"
    "      if not ok then fail(r, nil, workers[self_index]) return end\n"
    "      if r == nil and err ~= nil then fail(err, i, workers[self_index]) return end\n"
    "      results[i] = r\n"
    "    end\n"
    "  end\n"
    "  for w = 1, (limit < n and limit or n) do workers[w] = task.spawn(worker, w) end\n"
    "  for w = 1, #workers do\n"
    "    local ok, err = workers[w]:wait()\n"
    "    if not ok and not failed then fail(err, nil, nil) end\n"
    "  end\n"
    "  if failed then return nil, failed, failed_at end\n"
    "  return results\n"
    "end\n"
    "return parallel\n";

/* task.locate(msg) -> msg: an xpcall message handler. A string error that
 * does not start with a position ("file:line:") gets the position of the
 * innermost Lua code on the stack, the code that called the C function
 * which raised (as in `for _ in ipairs(nil)`). Other values pass through. */
static int l_locate(lua_State *L)
{
    size_t n;
    const char *msg = lua_tolstring(L, 1, &n);
    if (!msg || lua_type(L, 1) != LUA_TSTRING)
        return lua_settop(L, 1), 1;
    /* "src:123:" at the start means Lua placed it already. */
    const char *c = memchr(msg, ':', n);
    if (c && c[1] >= '0' && c[1] <= '9') {
        const char *d = c + 1;
        while (*d >= '0' && *d <= '9')
            d++;
        if (*d == ':')
            return lua_settop(L, 1), 1;
    }
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
            return 1;
        }
    }
    return lua_settop(L, 1), 1;
}

void inject_task_api(struct vm *vm, lua_State *L)
{
    int g = lua_gettop(L);
    static const luaL_Reg methods[] = { { "wait", l_wait }, { "join", l_join }, { "cancel", l_cancel },
        { "status", l_status }, { NULL, NULL } };
    luaL_newmetatable(L, TASK_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    static const luaL_Reg funcs[] = { { "spawn", l_spawn }, { "yield", l_yield },
        { "cancelled", l_cancelled }, { "name", l_name }, { "stats", l_stats },
        { "locate", l_locate }, { NULL, NULL } };
    luaL_newlibtable(L, funcs);
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, funcs, 1);
    lua_setfield(L, g, "task");

    if (luaL_loadbufferx(L, parallel_src, sizeof(parallel_src) - 1, "=parallel", "t") != LUA_OK)
        lua_error(L);
    lua_pushvalue(L, g);
    lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 1);
    lua_setfield(L, g, "parallel");
}
