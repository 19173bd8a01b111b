/* sched.c - tasks: coroutines scheduled on the event loop.
 *
 * Resume discipline: a task is resumed only from on_ready, a libevent
 * callback, never from I/O callbacks. Completions call task_wake, which only
 * queues. Each resume runs with nargs = 0 except the first, which passes the
 * task's arguments.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "repl.h"
#include "watchdog.h"

/* Instructions between two hook calls: small enough for a prompt CPU check,
 * large enough to cost nothing measurable. */
#define HOOK_COUNT 1000
/* A slice longer than this yields back to the loop so I/O keeps flowing. */
#define SLICE_SECONDS 0.01
/* Sandboxed code that cannot be paused (inside a callback of a C function)
 * is killed when its slice reaches this: the loop must stay responsive. */
#define STALL_SECONDS 0.5
/* Work units (sched_tick) between two clock reads. */
#define TICK_CHECK 16384

char sched_co_busy, sched_co_noprop;
/* Tasks resumed per loop turn before I/O gets a chance. */
#define READY_BATCH 512

struct task_waiter {
    struct task_op op;
    struct task *self;
    struct task *target;
    struct task_waiter *next;
};

static void on_ready(evutil_socket_t fd, short what, void *arg);

int sched_init(struct vm *vm)
{
    vm->ready_ev = event_new(vm->base, -1, 0, on_ready, vm);
    return vm->ready_ev ? 0 : -1;
}

/* Queues t to run and makes sure the ready event fires. */
static void enqueue(struct task *t)
{
    struct vm *vm = t->vm;
    t->state = TASK_READY;
    t->ready_next = NULL;
    if (vm->ready_tail)
        vm->ready_tail->ready_next = t;
    else
        vm->ready_head = t;
    vm->ready_tail = t;
    if (!vm->ready_armed && !vm->in_ready) {
        vm->ready_armed = 1;
        event_active(vm->ready_ev, EV_TIMEOUT, 0);
    }
}

/* Derives a task name from the function on top of L: "file.lua:LINE". */
static char *name_from_function(lua_State *L, int idx)
{
    lua_Debug ar;
    char tmp[128];
    lua_pushvalue(L, idx);
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
        snprintf(tmp, sizeof(tmp), "%s:%d", ar.short_src, ar.linedefined);
    else
        snprintf(tmp, sizeof(tmp), "%s", ar.short_src);
    return strdup(tmp);
}

struct task *task_spawn(struct vm *vm, lua_State *L, int nargs, const struct task_opts *o,
                        struct task *parent)
{
    int fidx = lua_gettop(L) - nargs;
    struct task *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->acct = calloc(1, sizeof(*t->acct));
    t->name = o && o->name ? strdup(o->name) : name_from_function(L, fidx);
    if (!t->acct || !t->name) {
        free(t->acct);
        free(t->name);
        free(t);
        return NULL;
    }
    t->acct->refs = 1;
    t->vm = vm;
    size_t mem = o && o->mem_limit ? o->mem_limit : 0;
    double cpu = o && o->cpu_limit > 0 ? o->cpu_limit : 0;
    if (parent && parent->sandboxed) {
        /* A script's child: at most what its parent may use, and counted
         * against the parent's budget too. */
        struct acct *pa = parent->acct;
        t->sandboxed = 1;
        t->acct->mem_limit = mem && mem < pa->mem_limit ? mem : pa->mem_limit;
        t->acct->cpu_limit = cpu > 0 && cpu < pa->cpu_limit ? cpu : pa->cpu_limit;
        t->acct->up = pa;
        pa->refs++;
    } else {
        t->sandboxed = o && o->sandboxed;
        t->acct->mem_limit = mem ? mem : vm->task_mem;
        t->acct->cpu_limit = cpu > 0 ? cpu : vm->task_cpu;
    }
    /* The thread is charged to the new task. */
    struct task *saved = vm->current;
    vm->current = t;
    t->co = lua_newthread(L);
    vm->current = saved;
    *(struct task **)lua_getextraspace(t->co) = t;
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* With the debugger on, script code also gets line events (repl.h). */
    lua_sethook(t->co, sched_hook, LUA_MASKCOUNT | (vm->debugging && t->sandboxed ? LUA_MASKLINE : 0),
                HOOK_COUNT);
    lua_xmove(L, t->co, nargs + 1);
    t->nargs = nargs;
    t->parent = parent;
    if (parent) {
        t->log_tag = parent->log_tag;
        t->log_exec = parent->log_exec;
        t->sib_next = parent->children;
        if (parent->children)
            parent->children->sib_prev = t;
        parent->children = t;
    }
    t->all_next = vm->all;
    if (vm->all)
        vm->all->all_prev = t;
    vm->all = t;
    vm->live++;
    if (parent && parent->cancelled)
        t->cancelled = 1;
    enqueue(t);
    return t;
}

struct task *task_current(struct vm *vm)
{
    return vm->current;
}

/* Releases the acct reference of a task and frees it; the caller has unlinked
 * it. */
static void task_destroy(struct task *t)
{
    struct vm *vm = t->vm;
    if (t->all_prev)
        t->all_prev->all_next = t->all_next;
    else
        vm->all = t->all_next;
    if (t->all_next)
        t->all_next->all_prev = t->all_prev;
    if (!vm->closing) {
        /* A script may still hold the thread: it must never be resumed. */
        *(void **)lua_getextraspace(t->co) = &sched_co_busy;
        luaL_unref(vm->L, LUA_REGISTRYINDEX, t->co_ref);
    }
    vm_acct_release(vm, t->acct);
    free(t->name);
    free(t->err);
    free(t);
}

void task_hold(struct task *t)
{
    t->has_handle = 1;
}

void task_release(struct task *t)
{
    if (t->vm->closing)
        return; /* lua_close is collecting handles; sched_free_all frees tasks */
    t->has_handle = 0;
    if (t->state == TASK_DONE)
        task_destroy(t);
}

/* Unlinks t from its parent's children. */
static void unlink_child(struct task *t)
{
    if (!t->parent)
        return;
    if (t->sib_prev)
        t->sib_prev->sib_next = t->sib_next;
    else
        t->parent->children = t->sib_next;
    if (t->sib_next)
        t->sib_next->sib_prev = t->sib_prev;
    t->parent = NULL;
    t->sib_next = t->sib_prev = NULL;
}

/* Kills t and its descendants: a sandboxed task's children end with it. */
static void kill_tree(struct task *t)
{
    for (struct task *c = t->children; c; c = c->sib_next)
        kill_tree(c);
    if (t->kill == KILL_NONE)
        t->kill = KILL_ORPHAN;
    lua_sethook(t->co, sched_hook, LUA_MASKCOUNT, 1);
    task_cancel(t);
}

/* Ends a task: records the outcome, wakes its waiters, detaches children
 * (a sandboxed task's children are killed instead). */
static void finish(struct task *t, int ok, int nres, const char *err)
{
    struct vm *vm = t->vm;
    t->state = TASK_DONE;
    t->ok = ok;
    t->nres = nres;
    if (!ok)
        t->err = strdup(err ? err : "unknown error");
    vm->live--;
    if (t->sandboxed)
        for (struct task *c = t->children; c; c = c->sib_next)
            kill_tree(c);
    while (t->children) {
        struct task *c = t->children;
        unlink_child(c);
    }
    unlink_child(t);
    if (!ok && !t->waiters && !t->has_handle && !t->cancelled)
        vm_logf(vm, t, LOG_WARN, "task %s failed: %s", t->name, t->err);
    while (t->waiters) {
        struct task_waiter *w = t->waiters;
        t->waiters = w->next;
        w->next = NULL;
        task_wake(w->self);
    }
    if (vm->live == 0)
        event_base_loopbreak(vm->base);
    if (!t->has_handle)
        task_destroy(t);
}

/* Builds the message for a failed resume: the kill reason, or the error
 * value (its traceback goes to the debug log). Returns a malloc'd string. */
static char *failure_message(struct task *t)
{
    char tmp[512];
    switch (t->kill) {
    case KILL_CPU:
        snprintf(tmp, sizeof(tmp), "script '%s' exceeded its CPU limit (%.3g s)", t->name,
                 t->kill_limit);
        return strdup(tmp);
    case KILL_MEM:
        snprintf(tmp, sizeof(tmp), "script '%s' exceeded its memory limit (%.0f KiB)", t->name,
                 t->kill_limit / 1024);
        return strdup(tmp);
    case KILL_STALL:
        snprintf(tmp, sizeof(tmp),
                 "script '%s' ran %.3g s where it cannot be paused (in a callback of a C "
                 "function, such as a table.sort comparator or a metamethod); such code must "
                 "return within %.3g s", t->name, t->kill_limit, STALL_SECONDS);
        return strdup(tmp);
    case KILL_ORPHAN:
        snprintf(tmp, sizeof(tmp), "script '%s' was stopped: the task that started it ended",
                 t->name);
        return strdup(tmp);
    case KILL_CANCEL:
        return strdup("cancelled");
    case KILL_NONE:
        break;
    }
    const char *msg = lua_tostring(t->co, -1);
    if (!msg)
        msg = luaL_typename(t->co, -1);
    if (t->vm->log_level <= LOG_DEBUG && lua_checkstack(t->co, 4)) {
        luaL_traceback(t->co, t->co, msg, 0);
        vm_logf(t->vm, t, LOG_DEBUG, "%s", lua_tostring(t->co, -1));
        lua_pop(t->co, 1);
    }
    return strdup(msg);
}

/* Runs one slice of t. */
static void run(struct task *t)
{
    struct vm *vm = t->vm;
    int nres = 0, nargs = t->nargs;
    t->nargs = 0;
    t->state = TASK_RUNNING;
    vm->current = t;
    /* The clock starts at the first hook call (after HOOK_COUNT
     * instructions): a short slice, the common case, reads no clock. */
    t->slice_start = 0;
    if (vm->wd)
        watchdog_slice_begin(vm, t);
    int st = lua_resume(t->co, NULL, nargs, &nres);
    if (vm->wd)
        watchdog_slice_end(vm);
    if (t->slice_start > 0) {
        double used = vm_now_mono() - t->slice_start;
        for (struct acct *a = t->acct; a; a = a->up)
            a->cpu_used += used;
    }
    vm->current = NULL;
    if (st == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (t->op)
            t->state = TASK_WAITING;
        else
            enqueue(t); /* a fairness yield, or coroutine.yield at top level */
        return;
    }
    if (st == LUA_OK && t->kill == KILL_NONE) {
        finish(t, 1, nres, NULL);
        return;
    }
    char *msg = failure_message(t);
    finish(t, 0, 0, msg);
    free(msg);
}

/* The ready event: resumes queued tasks in FIFO order, a batch per turn. */
static void on_ready(evutil_socket_t fd, short what, void *arg)
{
    struct vm *vm = arg;
    (void)fd;
    (void)what;
    vm->ready_armed = 0;
    vm->in_ready = 1;
    /* Only the tasks queued before this turn: one that yields for fairness
     * is queued again behind I/O, not run again at once. */
    struct task *last = vm->ready_tail;
    for (int n = 0; n < READY_BATCH && vm->ready_head; n++) {
        struct task *t = vm->ready_head;
        vm->ready_head = t->ready_next;
        if (!vm->ready_head)
            vm->ready_tail = NULL;
        t->ready_next = NULL;
        run(t);
        if (t == last)
            break;
    }
    vm->in_ready = 0;
    if (vm->ready_head && !vm->ready_armed) {
        /* A zero timer fires on the next loop turn, after the loop has polled
         * for I/O; event_active would run this again before polling. */
        static const struct timeval now = { 0, 0 };
        vm->ready_armed = 1;
        evtimer_add(vm->ready_ev, &now);
    }
}

void task_check_yieldable(lua_State *L, struct task *t)
{
    if (L != t->co)
        luaL_error(L, "cannot wait inside a coroutine created by the script; "
                      "use task.spawn or parallel.map");
    if (!lua_isyieldable(L))
        luaL_error(L, "cannot wait here: a C function (such as db:transaction or table.sort) "
                      "is running this code");
}

int task_yield(lua_State *L, struct task *t, struct task_op *op, lua_KFunction k, lua_KContext ctx)
{
    task_check_yieldable(L, t);
    op->cancelled = 0;
    t->op = op;
    return lua_yieldk(L, 0, ctx, k);
}

void task_wake(struct task *t)
{
    if (t->state != TASK_WAITING)
        return;
    t->op = NULL;
    enqueue(t);
}

void task_cancel(struct task *t)
{
    if (t->state == TASK_DONE)
        return;
    t->cancelled = 1;
    for (struct task *c = t->children; c; c = c->sib_next)
        task_cancel(c);
    if (t->op) {
        struct task_op *op = t->op;
        op->cancel(op);
        op->cancelled = 1;
        task_wake(t);
    }
}

void sched_cancel_all(struct vm *vm)
{
    for (struct task *t = vm->all; t; t = t->all_next)
        task_cancel(t);
}

int sched_cancel_drainers(struct vm *vm)
{
    int n = 0;
    for (struct task *t = vm->all; t; t = t->all_next) {
        if (t->signal_drain && t->state != TASK_DONE) {
            t->signal_drain = 0;
            task_cancel(t);
            n++;
        }
    }
    return n;
}

/* Stops waiting on a task: unlinks the waiter from its target. */
static void waiter_cancel(struct task_op *op)
{
    struct task_waiter *w = (struct task_waiter *)op;
    for (struct task_waiter **pp = &w->target->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
}

int task_wait(lua_State *L, struct task *self, struct task *t, lua_KFunction k)
{
    if (t->state == TASK_DONE)
        return -1;
    if (t == self)
        return luaL_error(L, "a task cannot wait for itself");
    struct task_waiter *w = lua_newuserdatauv(L, sizeof(*w), 0);
    memset(w, 0, sizeof(*w));
    w->op.cancel = waiter_cancel;
    w->self = self;
    w->target = t;
    w->next = t->waiters;
    t->waiters = w;
    return task_yield(L, self, &w->op, k, (lua_KContext)w);
}

int task_push_cancelled(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "cancelled");
    return 2;
}

int task_push_outcome(lua_State *L, struct task *t)
{
    if (t->state != TASK_DONE)
        return luaL_error(L, "task is not finished");
    if (t->cancelled)
        return task_push_cancelled(L);
    if (!t->ok) {
        lua_pushnil(L);
        lua_pushstring(L, t->err);
        return 2;
    }
    luaL_checkstack(L, t->nres + 1, "too many results");
    lua_pushboolean(L, 1);
    int base = lua_gettop(t->co) - t->nres;
    for (int i = 1; i <= t->nres; i++)
        lua_pushvalue(t->co, base + i);
    lua_xmove(t->co, L, t->nres);
    return t->nres + 1;
}

struct task *sched_thread_task(lua_State *L)
{
    void *p = *(void **)lua_getextraspace(L);
    if (!p || p == &sched_co_busy || p == &sched_co_noprop)
        return NULL;
    return p;
}

int sched_can_pause(lua_State *L, struct task *t)
{
    if (!lua_isyieldable(L))
        return 0;
    return L == t->co || *(void **)lua_getextraspace(L) != &sched_co_noprop;
}

/* The message a killed task raises with. */
static const char *kill_reason(enum task_kill k)
{
    switch (k) {
    case KILL_CPU: return "CPU limit exceeded";
    case KILL_MEM: return "memory limit exceeded";
    case KILL_STALL: return "ran too long where it cannot be paused";
    case KILL_ORPHAN: return "stopped: the task that started it ended";
    case KILL_CANCEL: return "cancelled";
    case KILL_NONE: break;
    }
    return "killed";
}

/* The CPU time the calling thread has used, in seconds. */
static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Checks the running task's budgets and slice. Marks a kill when a CPU
 * budget (its own or one it counts against) is spent, when sandboxed code
 * has run too long where it cannot be paused, or when a cancelled sandboxed
 * task computes on for a slice; raises when t is being
 * killed. Returns 1 when the slice is over and L can pause. */
static int check_slice(lua_State *L, struct task *t)
{
    double now = vm_now_mono();
    if (t->slice_start == 0) {
        t->slice_start = now;
        t->slice_cpu_start = thread_cpu_now();
    }
    double slice = now - t->slice_start;
    if (t->kill == KILL_NONE) {
        for (struct acct *a = t->acct; a; a = a->up) {
            if (a->cpu_used + slice > a->cpu_limit) {
                t->kill = KILL_CPU;
                t->kill_limit = a->cpu_limit;
                break;
            }
        }
    }
    int can = slice > SLICE_SECONDS && !t->op && sched_can_pause(L, t);
    if (t->kill == KILL_NONE && t->sandboxed && t->cancelled && slice > SLICE_SECONDS) {
        /* Cancelled, yet computing a whole slice on: script code that never
         * waits (a loop) would otherwise run on to its CPU budget. */
        t->kill = KILL_CANCEL;
    }
    if (t->kill == KILL_NONE && t->sandboxed && slice > STALL_SECONDS && !can) {
        /* Counted in CPU time: a machine too busy to run the loop for a
         * while is no stall of the script's. */
        double cpu = thread_cpu_now() - t->slice_cpu_start;
        if (cpu > STALL_SECONDS) {
            t->kill = KILL_STALL;
            t->kill_limit = cpu;
        }
    }
    if (t->kill != KILL_NONE) {
        /* From now on raise at every instruction, on this thread and the
         * task's own: the first instruction outside a pcall re-raises, so a
         * script cannot catch the error and carry on (Redis does the same). */
        lua_sethook(L, sched_hook, LUA_MASKCOUNT, 1);
        if (t->co != L)
            lua_sethook(t->co, sched_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "%s", kill_reason(t->kill));
    }
    return can;
}

void sched_hook(lua_State *L, lua_Debug *ar)
{
    struct task *t = vm_of(L)->current;
    if (!t)
        return;
    if (ar->event == LUA_HOOKLINE) {
        dbg_line(L, t, ar);
        return;
    }
    if (check_slice(L, t)) {
        if (L != t->co)
            t->fair_yield = 1; /* the coroutine's resumer passes it up */
        lua_yield(L, 0);
    }
}

int sched_tick(lua_State *L, unsigned long units)
{
    struct task *t = vm_of(L)->current;
    if (!t)
        return 0;
    t->ticks += units;
    if (t->ticks < TICK_CHECK && t->kill == KILL_NONE)
        return 0;
    t->ticks = 0;
    return check_slice(L, t);
}

int sched_pause(lua_State *L, lua_KContext ctx, lua_KFunction k)
{
    struct task *t = vm_of(L)->current;
    if (t && L != t->co)
        t->fair_yield = 1;
    return lua_yieldk(L, 0, ctx, k);
}

void sched_free_all(struct vm *vm)
{
    while (vm->all) {
        struct task *t = vm->all;
        unlink_child(t);
        t->has_handle = 0;
        task_destroy(t);
    }
}
