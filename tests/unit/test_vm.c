/* test_vm.c - the Lua VM and its scheduler driven from C: tasks spawned from
 * chunks loaded with vm_load_buffer, run on a real event loop, inspected
 * after they finish (task_hold keeps a finished task and its results).
 * Memory and CPU limits must stop only the task that broke them.
 */
#include <signal.h>
#include <unistd.h>

#include <lauxlib.h>

#include "buf.h"
#include "http.h"
#include "sched.h"
#include "test.h"
#include "vm.h"

#define SAFETY_SECONDS 15

struct vmfix {
    struct event_base *base;
    struct http_client *http;
    struct vm *vm;
    struct event *safety;
    int expired;
    struct buf log;     /* WARN and ERROR lines, newline-separated */
};

/* Keeps warnings and errors for the test to read; drops the rest (the VM
 * logs at debug level so that traceback logging runs too). */
static void capture_log(void *ud, struct task *t, enum log_level lvl, const char *msg)
{
    struct vmfix *x = ud;
    (void)t;
    if (lvl < LOG_WARN)
        return;
    buf_puts(&x->log, msg);
    buf_puts(&x->log, "\n");
}

static void on_safety(evutil_socket_t fd, short what, void *arg)
{
    struct vmfix *x = arg;
    (void)fd;
    (void)what;
    x->expired = 1;
    event_base_loopbreak(x->base);
}

/* Sets up curl, a loop, an HTTP client and a VM with the given default task
 * limits (0 = the VM's defaults). */
static int vmfix_open(struct vmfix *x, size_t task_mem, double task_cpu)
{
    char err[256];
    struct vm_opts o = { 0 };
    memset(x, 0, sizeof(*x));
    o.task_mem = task_mem;
    o.task_cpu = task_cpu;
    o.log = capture_log;
    o.log_ud = x;
    o.log_level = LOG_DEBUG;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    x->base = event_base_new();
    if (!x->base)
        return -1;
    x->safety = evtimer_new(x->base, on_safety, x);
    x->http = http_client_new(x->base, NULL);
    if (!x->safety || !x->http)
        return -1;
    x->vm = vm_new(x->base, x->http, &o, err, sizeof(err));
    if (!x->vm)
        fprintf(stderr, "# vm_new: %s\n", err);
    return x->vm ? 0 : -1;
}

/* Frees in the engine's order: the VM first (its requests go with it). */
static void vmfix_close(struct vmfix *x)
{
    vm_free(x->vm);
    http_client_free(x->http);
    if (x->safety)
        event_free(x->safety);
    if (x->base)
        event_base_free(x->base);
    buf_free(&x->log);
    curl_global_cleanup();
}

/* Runs the loop until every task finished (the scheduler breaks the loop) or
 * `seconds` pass. Returns 0 when no task is left running. */
static int vmfix_run(struct vmfix *x, int seconds)
{
    struct timeval tv = { seconds, 0 };
    x->expired = 0;
    if (x->vm->live == 0)
        return 0;
    if (evtimer_add(x->safety, &tv) != 0)
        return -1;
    event_base_dispatch(x->base);
    evtimer_del(x->safety);
    if (x->vm->live != 0)
        fprintf(stderr, "# %ld tasks still running%s\n", x->vm->live,
                x->expired ? " when the safety timer fired" : "");
    return x->vm->live == 0 ? 0 : -1;
}

/* Runs the loop for ms milliseconds (or until every task finished). */
static void vmfix_idle(struct vmfix *x, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(x->safety, &tv);
    event_base_dispatch(x->base);
    evtimer_del(x->safety);
}

/* Loads code as chunk `name` and spawns it as a held task with the given
 * limits (0 = defaults). Returns the task, or NULL after printing why. */
static struct task *spawn(struct vmfix *x, const char *name, const char *code,
                          size_t mem_limit, double cpu_limit)
{
    lua_State *L = x->vm->L;
    if (vm_load_buffer(x->vm, L, code, strlen(code), name) != LUA_OK) {
        fprintf(stderr, "# cannot load %s: %s\n", name, lua_tostring(L, -1));
        lua_pop(L, 1);
        return NULL;
    }
    struct task_opts o = { NULL, mem_limit, cpu_limit, 0 };
    struct task *t = task_spawn(x->vm, L, 0, &o, NULL);
    if (t)
        task_hold(t);
    return t;
}

/* Returns result i (1-based) of a finished task as a string, or NULL. */
static const char *result_str(struct task *t, int i)
{
    if (i > t->nres)
        return NULL;
    return lua_tostring(t->co, lua_gettop(t->co) - t->nres + i);
}

/* A task's return values stay on its thread while a handle holds it, and
 * task_push_outcome hands them over as true, values... */
TEST_IMPL(vm_task_returns_values)
{
    struct vmfix x;
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    lua_State *L = x.vm->L;
    static const char code[] = "local a, b = ...\n"
                               "time.sleep(0.01)\n"
                               "return a + b, 'sum of ' .. a .. ' and ' .. b, nil\n";
    ASSERT_EQ(vm_load_buffer(x.vm, L, code, strlen(code), "@returns.lua"), LUA_OK);
    lua_pushinteger(L, 40);
    lua_pushinteger(L, 2);
    struct task *t = task_spawn(x.vm, L, 2, NULL, NULL);
    ASSERT_NOT_NULL(t);
    task_hold(t);
    ASSERT_EQ(lua_gettop(L), 0); /* function and arguments moved to the task */
    ASSERT_EQ(t->state, TASK_READY);
    ASSERT_EQ(x.vm->live, 1);
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    ASSERT_EQ(t->state, TASK_DONE);
    ASSERT_EQ(t->ok, 1);
    ASSERT_EQ(t->kill, KILL_NONE);
    ASSERT_EQ(t->nres, 3);
    int base = lua_gettop(t->co) - t->nres;
    ASSERT_EQ(lua_tointeger(t->co, base + 1), 42);
    ASSERT_STR_EQ(result_str(t, 2), "sum of 40 and 2");
    ASSERT(lua_isnil(t->co, base + 3));
    ASSERT_EQ(task_push_outcome(L, t), 4);
    ASSERT(lua_toboolean(L, -4));
    ASSERT_EQ(lua_tointeger(L, -3), 42);
    lua_settop(L, 0);
    task_release(t);
    vmfix_close(&x);
    return 0;
}

/* A failing task ends with ok = 0 and a message that names the chunk and
 * line. A failure that a handle will report is not logged; one that nobody
 * holds is logged as a warning. */
TEST_IMPL(vm_task_error_names_source_line)
{
    struct vmfix x;
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    struct task *raise = spawn(&x, "@raise.lua", "local n = 1\nerror('boom ' .. n)\n", 0, 0);
    struct task *index = spawn(&x, "@index.lua", "local t = nil\n\nreturn t.field\n", 0, 0);
    struct task *orphan = spawn(&x, "@orphan.lua", "error('nobody holds me')\n", 0, 0);
    ASSERT_NOT_NULL(raise);
    ASSERT_NOT_NULL(index);
    ASSERT_NOT_NULL(orphan);
    task_release(orphan); /* the scheduler frees it when it ends */
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    ASSERT_EQ(raise->state, TASK_DONE);
    ASSERT_EQ(raise->ok, 0);
    ASSERT_EQ(raise->kill, KILL_NONE);
    ASSERT_NOT_NULL(raise->err);
    if (!strstr(raise->err, "raise.lua:2:") || !strstr(raise->err, "boom 1"))
        TEST_FAIL("error message \"%s\" does not name raise.lua:2", raise->err);
    ASSERT_EQ(index->ok, 0);
    if (!strstr(index->err, "index.lua:3:") || !strstr(index->err, "index a nil value"))
        TEST_FAIL("error message \"%s\" does not name index.lua:3", index->err);
    ASSERT_NOT_NULL(x.log.data);
    if (!strstr(x.log.data, "orphan.lua:1: nobody holds me"))
        TEST_FAIL("the orphan's failure was not logged; log:\n%s", x.log.data);
    if (strstr(x.log.data, "boom 1") || strstr(x.log.data, "index.lua"))
        TEST_FAIL("a held task's failure was logged; log:\n%s", x.log.data);
    task_release(raise);
    task_release(index);
    vmfix_close(&x);
    return 0;
}

/* Memory a task allocates is charged to it, visible from C (acct->bytes)
 * and from the script (collectgarbage("count")), and returned to the state
 * once the task and its results are gone. */
TEST_IMPL(vm_task_allocation_is_charged)
{
    struct vmfix x;
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    struct task *small = spawn(&x, "@small.lua", "return 1\n", 0, 0);
    struct task *big = spawn(&x, "@big.lua",
                             "local before = collectgarbage('count')\n"
                             "local s = string.rep('x', 4 << 20)\n"
                             "return s, collectgarbage('count') - before\n",
                             0, 0);
    ASSERT_NOT_NULL(small);
    ASSERT_NOT_NULL(big);
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    ASSERT_EQ(big->ok, 1);
    ASSERT_EQ(big->nres, 2);
    lua_Number kib = lua_tonumber(big->co, -1);
    ASSERT(kib >= 4096);
    ASSERT(big->acct->bytes >= (size_t)4 << 20);
    ASSERT(small->acct->bytes < (size_t)1 << 20);
    ASSERT(x.vm->mem_used >= (size_t)4 << 20);
    size_t used = x.vm->mem_used;
    task_release(big);
    task_release(small);
    lua_gc(x.vm->L, LUA_GCCOLLECT);
    if (x.vm->mem_used + ((size_t)4 << 20) > used)
        TEST_FAIL("state memory went from %zu to %zu after releasing the task", used,
                  x.vm->mem_used);
    vmfix_close(&x);
    return 0;
}

/* A task past its memory limit is stopped with a "memory limit" error while
 * another task on the same VM completes. The task never holds more than its
 * limit, and catching the error with pcall does not save it. */
TEST_IMPL(vm_memory_limit_kills_only_that_task)
{
    struct vmfix x;
    const size_t limit = (size_t)8 << 20;
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    struct task *hog = spawn(&x, "@hog.lua",
                             "local t = {}\n"
                             "for i = 1, 100 do t[i] = string.rep('x', 1 << 20) .. i end\n"
                             "return #t\n",
                             limit, 0);
    struct task *sly = spawn(&x, "@sly.lua",
                             "local ok = pcall(function()\n"
                             "  local t = {}\n"
                             "  for i = 1, 100 do t[i] = string.rep('x', 1 << 20) .. i end\n"
                             "end)\n"
                             "local n = 0\n"
                             "for i = 1, 100000 do n = n + i end\n"
                             "return 'survived', ok\n",
                             limit, 0);
    struct task *good = spawn(&x, "@good.lua",
                              "local parts = {}\n"
                              "for i = 1, 5 do\n"
                              "  time.sleep(0.01)\n"
                              "  parts[i] = string.rep('y', 1000)\n"
                              "end\n"
                              "return #table.concat(parts)\n",
                              limit, 0);
    ASSERT_NOT_NULL(hog);
    ASSERT_NOT_NULL(sly);
    ASSERT_NOT_NULL(good);
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    ASSERT_EQ(hog->ok, 0);
    ASSERT_EQ(hog->kill, KILL_MEM);
    ASSERT_NOT_NULL(hog->err);
    if (!strstr(hog->err, "memory limit"))
        TEST_FAIL("hog error \"%s\" does not mention the memory limit", hog->err);
    ASSERT_LE(hog->acct->bytes, limit);
    if (sly->ok)
        TEST_FAIL("a task that caught its memory error with pcall went on to return \"%s\"",
                  result_str(sly, 1));
    ASSERT_EQ(sly->kill, KILL_MEM);
    ASSERT(strstr(sly->err, "memory limit") != NULL);
    ASSERT_EQ(good->ok, 1);
    ASSERT_EQ(good->kill, KILL_NONE);
    ASSERT_EQ(lua_tointeger(good->co, -1), 5000);
    task_release(hog);
    task_release(sly);
    task_release(good);
    vmfix_close(&x);
    return 0;
}

/* An endless loop is stopped by its CPU budget while a task that sleeps in
 * small steps completes. Only time spent running Lua counts against a budget:
 * the sleeper's budget is far smaller than its wall time. */
TEST_IMPL(vm_cpu_limit_kills_only_that_task)
{
    struct vmfix x;
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    struct task *spin = spawn(&x, "@spin.lua", "while true do end\n", 0, 0.3);
    struct task *nap = spawn(&x, "@nap.lua",
                             "local t0 = time.mono()\n"
                             "for i = 1, 10 do time.sleep(0.01) end\n"
                             "return time.mono() - t0\n",
                             0, 0.05);
    ASSERT_NOT_NULL(spin);
    ASSERT_NOT_NULL(nap);
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    ASSERT_EQ(spin->ok, 0);
    ASSERT_EQ(spin->kill, KILL_CPU);
    if (!strstr(spin->err, "CPU limit"))
        TEST_FAIL("spin error \"%s\" does not mention the CPU limit", spin->err);
    ASSERT(spin->acct->cpu_used >= 0.3);
    ASSERT(spin->acct->cpu_used < 0.8);
    if (!nap->ok)
        TEST_FAIL("the sleeping task failed: %s", nap->err);
    ASSERT_EQ(nap->kill, KILL_NONE);
    ASSERT(lua_tonumber(nap->co, -1) >= 0.1);
    ASSERT(nap->acct->cpu_used < 0.05);
    task_release(spin);
    task_release(nap);
    vmfix_close(&x);
    return 0;
}

/* A busy task is sliced (20 ms) so that timers and I/O of other tasks keep
 * flowing: a task sleeping 10 x 10 ms next to an endless loop finishes in
 * well under the loop's 1.5 s budget. */
TEST_IMPL(vm_busy_task_does_not_starve_others)
{
    struct vmfix x;
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    struct task *spin = spawn(&x, "@spin.lua", "while true do end\n", 0, 1.5);
    struct task *nap = spawn(&x, "@nap.lua",
                             "local t0 = time.mono()\n"
                             "for i = 1, 10 do time.sleep(0.01) end\n"
                             "return time.mono() - t0\n",
                             0, 0);
    ASSERT_NOT_NULL(spin);
    ASSERT_NOT_NULL(nap);
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    ASSERT_EQ(spin->kill, KILL_CPU);
    ASSERT_EQ(nap->ok, 1);
    double wall = lua_tonumber(nap->co, -1);
    task_release(spin);
    task_release(nap);
    vmfix_close(&x);
    fprintf(stderr, "# sleeper next to a busy task: %.3f s\n", wall);
    ASSERT(wall < 1.0);
    return 0;
}

static void on_alarm(int sig)
{
    static const char msg[] = "# the CPU limit did not stop a task that catches errors\n";
    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(1);
    _exit(1);
}

/* Catching the CPU-limit error with pcall in a loop does not save the task,
 * not even inside a coroutine the script created: the budget still ends it,
 * and the event loop comes back. */
TEST_IMPL(vm_cpu_limit_cannot_be_caught_by_pcall)
{
    struct vmfix x;
    signal(SIGALRM, on_alarm);
    unsigned outer = alarm(10); /* the loop never comes back if the bug is there */
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    struct task *spin = spawn(&x, "@catch.lua",
                              "while true do pcall(function() while true do end end) end\n", 0,
                              0.2);
    struct task *nested = spawn(&x, "@nested.lua",
                                "while true do\n"
                                "  local co = coroutine.create(function()\n"
                                "    while true do pcall(function() while true do end end) end\n"
                                "  end)\n"
                                "  pcall(coroutine.resume, co)\n"
                                "end\n",
                                0, 0.2);
    ASSERT_NOT_NULL(spin);
    ASSERT_NOT_NULL(nested);
    ASSERT_EQ(vmfix_run(&x, SAFETY_SECONDS), 0);
    alarm(outer);
    ASSERT_EQ(spin->ok, 0);
    ASSERT_EQ(spin->kill, KILL_CPU);
    ASSERT_EQ(nested->ok, 0);
    ASSERT_EQ(nested->kill, KILL_CPU);
    task_release(spin);
    task_release(nested);
    vmfix_close(&x);
    return 0;
}

/* vm_free with tasks still waiting (a timer, an HTTP request, a wait on
 * another task) cancels and frees everything; ASan and valgrind check that
 * nothing leaks. */
TEST_IMPL(vm_free_with_waiting_tasks)
{
    NEED_ENV(fault, "FAULT_URL");
    struct vmfix x;
    char code[1024];
    ASSERT_EQ(vmfix_open(&x, 0, 0), 0);
    snprintf(code, sizeof(code),
             "local res, err = http.request{url = '%s/hold', timeout = 30}\n"
             "return res, err\n",
             fault);
    struct task *req = spawn(&x, "@request.lua", code, 0, 0);
    struct task *nap = spawn(&x, "@sleep.lua", "time.sleep(30)\n", 0, 0);
    struct task *parent = spawn(&x, "@parent.lua",
                                "local h = task.spawn(function() time.sleep(30) end)\n"
                                "return h:wait()\n",
                                0, 0);
    struct task *done = spawn(&x, "@done.lua", "return string.rep('z', 1 << 16)\n", 0, 0);
    ASSERT_NOT_NULL(req);
    ASSERT_NOT_NULL(nap);
    ASSERT_NOT_NULL(parent);
    ASSERT_NOT_NULL(done);
    task_release(nap); /* let the scheduler own one of them again */
    vmfix_idle(&x, 300);
    ASSERT_EQ(x.vm->live, 4); /* three held or owned, plus the child */
    ASSERT_EQ(req->state, TASK_WAITING);
    ASSERT_EQ(parent->state, TASK_WAITING);
    ASSERT_EQ(done->state, TASK_DONE);
    ASSERT_EQ(http_client_pending(x.http), 1);
    vm_free(x.vm);
    x.vm = NULL;
    ASSERT_EQ(http_client_pending(x.http), 0);
    vmfix_close(&x);
    return 0;
}
