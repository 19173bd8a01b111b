/* watchdog.h - a thread beside the event loop that notices when the loop
 * stops making progress, and that owns SIGINT/SIGTERM.
 *
 * The loop thread publishes what it is doing (the task of the current slice,
 * copied under a mutex, and a progress count); the watchdog thread never
 * touches the VM. It reports a loop that made no progress for longer than
 * the stall bound (a line on stderr at once, a log line and a status entry
 * once the loop is back). It receives the termination signals itself, so
 * they are seen even while the loop is stuck in a C call: each one is
 * forwarded to the loop through a pipe, and when the process has not ended
 * within the grace period after the first, the thread appends the task that
 * held the loop to the record file and ends the process.
 */
#ifndef REPLICA_WATCHDOG_H
#define REPLICA_WATCHDOG_H

#include <stddef.h>

#include <event2/event.h>
#include <lua.h>

#include "logline.h"

struct vm;
struct task;
struct watchdog;

#define WATCHDOG_GRACE 10.0 /* seconds from the first signal to a forced exit */
#define WATCHDOG_STALL 2.0  /* seconds without progress reported as a stall */

struct watchdog_opts {
    double grace;           /* > 0; 0 = WATCHDOG_GRACE */
    double stall;           /* > 0; 0 = WATCHDOG_STALL; < 0 = no stall reports */
    int sigint_interrupts;  /* 1: every SIGINT is only forwarded (the REPL's Ctrl-C stops
                             * a stage): no grace period, no exit on a second one */
    enum log_format log_format; /* of the lines it writes on stderr */
    const char *log_run;    /* NULL, or replica run's id (vm_opts.log_run) */
};

/* Runs on the loop thread for each SIGINT/SIGTERM the watchdog forwards. */
typedef void (*watchdog_signal_fn)(void *ud, int sig);

/* Blocks SIGINT and SIGTERM in the calling thread (threads created later
 * inherit that), adds the forwarding and heartbeat events to base, and starts
 * the watchdog thread. Call before any other thread exists. Returns NULL with
 * err on failure. The caller owns the watchdog (watchdog_free, before
 * event_base_free). */
struct watchdog *watchdog_new(struct event_base *base, struct vm *vm,
                              const struct watchdog_opts *o, watchdog_signal_fn on_signal,
                              void *ud, char *err, size_t errlen);

/* Stops and joins the thread and frees its events; NULL allowed. Signals stay
 * blocked: the process is about to end. */
void watchdog_free(struct watchdog *wd);

/* The loop thread calls these around every task slice (sched.c run()):
 * begin copies t's name and log tag into the watchdog's own memory. */
void watchdog_slice_begin(struct vm *vm, struct task *t);
void watchdog_slice_end(struct vm *vm);

/* Test only: when REPLICA_TEST_HOOKS=1, adds test_block(seconds), a C call
 * that sleeps without returning to the loop, to the table on top of L's
 * stack (the sandbox globals). Does nothing otherwise. */
void watchdog_inject_test_hooks(struct vm *vm, lua_State *L);

#endif
