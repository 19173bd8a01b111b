/* sched.h - tasks: coroutines scheduled on the event loop.
 *
 * A task is one Lua thread. It runs until it yields on an operation (an HTTP
 * request, a timer, a wait on another task). The operation's completion only
 * queues the task; the queue is drained from a libevent callback, which is the
 * only place a task is resumed. On resume, the yielding C function's
 * continuation runs inside the coroutine and pushes the results, so a memory
 * error while building them is an ordinary error of that task.
 */
#ifndef REPLICA_SCHED_H
#define REPLICA_SCHED_H

#include <lua.h>

#include "vm.h"

enum task_state { TASK_READY, TASK_RUNNING, TASK_WAITING, TASK_DONE };
/* Why a task is being killed; a killed task raises at every instruction, so
 * a script cannot catch the error and carry on. */
enum task_kill {
    KILL_NONE,
    KILL_CPU,    /* its CPU budget (or one it counts against) is spent */
    KILL_MEM,    /* its memory budget (or one it counts against) is full */
    KILL_STALL,  /* sandboxed code ran too long where it cannot be paused */
    KILL_ORPHAN, /* sandboxed, and the task that started it has ended */
    KILL_CANCEL, /* sandboxed, cancelled, and still computing a slice later */
};

/* An operation a task waits on. The owner embeds it in its own struct. */
struct task_op {
    /* Stops the operation at once; the continuation then sees cancelled = 1.
     * Must not wake the task (the scheduler does). */
    void (*cancel)(struct task_op *op);
    int cancelled;
};

struct task_waiter;

enum { DBG_STEP_INTO = 1, DBG_STEP_OVER = 2 };

struct task {
    struct vm *vm;
    lua_State *co;
    int co_ref;
    char *name;
    struct acct *acct;       /* its budget: limits and usage (vm.h) */
    double slice_start;      /* when the running slice's clock started, or 0 */
    double slice_cpu_start;  /* the loop thread's CPU clock at slice_start */
    unsigned long ticks;     /* work units charged by C functions since the last clock read */
    enum task_state state;
    enum task_kill kill;
    double kill_limit;       /* the limit that kill names (bytes or seconds) */
    int cancelled;
    int sandboxed;           /* runs script code: spawned by box:spawn, or by such a task */
    int fair_yield;          /* a fairness yield is passing up through script coroutines */
    int has_handle;          /* a Lua handle refers to this task */
    long log_tag;            /* sys.task_log: where its log lines go; inherited */
    long log_exec;           /* sys.log_execution: the execution its lines name; inherited */
    int signal_drain;        /* sys.drain_on_signal: the first SIGINT/SIGTERM cancels only such tasks */
    /* the debugger (lua_debugger.c), while vm->debugging */
    int dbg_step;            /* 0, or how it pauses next: DBG_STEP_INTO, DBG_STEP_OVER */
    int dbg_depth;           /* DBG_STEP_OVER: at this stack depth or less, on dbg_L */
    lua_State *dbg_L;        /* DBG_STEP_OVER's thread; while paused, the thread that paused */
    long dbg_pause;          /* while paused: the pause's id, else 0 */
    int dbg_line;            /* while paused: the line */
    struct task_op dbg_op;   /* what a paused task waits on */
    int nargs;               /* arguments for the first resume */
    struct task_op *op;      /* what it waits on, or NULL */
    struct task *ready_next;
    struct task *parent, *children, *sib_next, *sib_prev;
    struct task *all_next, *all_prev;
    struct task_waiter *waiters;
    int ok;                  /* when done: 1 = returned, 0 = failed */
    int nres;                /* when done and ok: results left on co's stack */
    char *err;               /* when done and failed: the error message */
};

struct task_opts {
    const char *name;
    size_t mem_limit;        /* 0 = the VM default (a sandboxed parent's: its own) */
    double cpu_limit;        /* 0 = the VM default (a sandboxed parent's: its own) */
    int sandboxed;           /* the task runs script code under the sandbox's rules */
};

/* Marks in the extra space of a script-created coroutine (a task's own
 * thread holds its task): busy while a fairness yield passes through it,
 * noprop while it runs where a yield cannot pass up to the scheduler. */
extern char sched_co_busy, sched_co_noprop;

/* Returns the task whose own thread L is, or NULL for any other thread. */
struct task *sched_thread_task(lua_State *L);

/* Whether a fairness yield from L can reach the scheduler: L can yield, and
 * it is t's thread or a coroutine resumed from where a yield passes up. */
int sched_can_pause(lua_State *L, struct task *t);

/* Charges units of work done by a C function to the running task (a unit
 * is roughly 10 ns of work). Every so often it reads the clock and raises the
 * task's CPU-limit error when its budget is spent. Returns 1 when the caller
 * should pause now (its slice is over and it may yield), else 0. Outside a
 * task it does nothing and returns 0. */
int sched_tick(lua_State *L, unsigned long units);

/* Pauses the running task for fairness from inside a C function: yields with
 * continuation k and context ctx; the task is queued again behind I/O and k
 * runs when it is resumed. Only call after sched_tick returned 1. */
int sched_pause(lua_State *L, lua_KContext ctx, lua_KFunction k);

/* Creates a task running the function below nargs arguments on top of L's
 * stack (they are popped). The task is queued to run. parent may be NULL.
 * A child of a sandboxed task is sandboxed: its limits are at most its
 * parent's and its usage counts against the parent's budget as well.
 * Returns NULL (with nothing popped) when out of memory. The scheduler owns
 * the task until it is done; task_hold keeps it alive for a handle. */
struct task *task_spawn(struct vm *vm, lua_State *L, int nargs, const struct task_opts *o,
                        struct task *parent);

/* task.spawn's body: ([opts,] fn, ...) on L's stack -> pushes a task handle
 * and returns 1; sandboxed makes the task run under the sandbox's rules
 * (lua_task.c). Raises on misuse. */
int task_spawn_lua(lua_State *L, int sandboxed);

/* Returns the task running on L (L may be a script coroutine inside it). */
struct task *task_current(struct vm *vm);

/* Records op and yields the running task. k runs on resume inside the task
 * and must push the results of the call; op is only referenced, never freed.
 * Raises a Lua error when called from a coroutine the script created. */
int task_yield(lua_State *L, struct task *t, struct task_op *op, lua_KFunction k,
               lua_KContext ctx);

/* Raises a Lua error unless L is t's own thread (yielding calls cannot run
 * in coroutines the script created). Call before starting an operation. */
void task_check_yieldable(lua_State *L, struct task *t);

/* Marks t's operation complete and queues t. Call from the event loop. */
void task_wake(struct task *t);

/* Cancels t and all its descendants: pending operations are stopped and their
 * calls return nil, "cancelled"; later yielding calls fail the same way. */
void task_cancel(struct task *t);

/* Cancels every task of the VM. */
void sched_cancel_all(struct vm *vm);

/* Cancels the live tasks that asked to hear the signal (signal_drain) and
 * clears their mark; returns how many there were (0: none asked). */
int sched_cancel_drainers(struct vm *vm);

/* Handle references: a handle keeps a finished task (and its results) alive. */
void task_hold(struct task *t);
void task_release(struct task *t);

/* Adds the calling task to t's waiters and yields until t is done; the
 * continuation k then reads t's outcome. If t is done already returns -1
 * without yielding. */
int task_wait(lua_State *L, struct task *self, struct task *t, lua_KFunction k);

/* Pushes the outcome of a call the task's cancellation ended: nil,
 * "cancelled". Returns 2. */
int task_push_cancelled(lua_State *L);

/* Pushes t's outcome onto L: true, results... or nil, err. Returns the count. */
int task_push_outcome(lua_State *L, struct task *t);

/* Count hook installed on every task thread (CPU budget and fairness). */
void sched_hook(lua_State *L, lua_Debug *ar);

/* Initialises the ready queue of a VM. Returns 0 or -1. */
int sched_init(struct vm *vm);

/* Frees every task; used by vm_free after cancelling. */
void sched_free_all(struct vm *vm);

#endif
