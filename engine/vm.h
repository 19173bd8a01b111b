/* vm.h - one Lua 5.4 state that runs many tasks (coroutines) on an event loop.
 *
 * The state has a counting allocator with a cap for the whole state, and every
 * allocation is charged to the task running when it was made, so each task
 * has its own memory limit. A count hook enforces each task's CPU budget and
 * keeps the loop fair by yielding long-running slices.
 */
#ifndef REPLICA_VM_H
#define REPLICA_VM_H

#include <stddef.h>
#include <stdio.h>

#include <event2/event.h>
#include <lua.h>

#include "logline.h"

struct http_client;
struct task;
struct watchdog;

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Receives every log line; task is NULL for engine messages. */
typedef void (*vm_log_fn)(void *ud, struct task *t, enum log_level lvl, const char *msg);

/* The budget of one task: the memory and CPU time charged to it. A task
 * that a sandboxed task spawns counts against its parent's budget too (up),
 * so a script cannot raise its own limits by spawning. Freed when the task
 * is gone and no block, and no budget below it, refers to it. */
struct acct {
    size_t bytes;       /* live bytes of this task and the budgets below it */
    size_t mem_limit;   /* SIZE_MAX: none */
    double cpu_used;    /* CPU seconds of this task and the budgets below it */
    double cpu_limit;   /* HUGE_VAL: none */
    long refs;          /* live blocks and budgets below, plus one while its task exists */
    struct acct *up;    /* the budget this one also counts against, or NULL */
};

struct vm_opts {
    size_t state_mem;        /* cap for the whole state; default 1 GiB */
    size_t task_mem;         /* default per-task memory limit; default 64 MiB */
    double task_cpu;         /* default per-task CPU budget in seconds; default 30 */
    const char *const *lib_dirs; /* directories `require` searches, NULL-terminated */
    const char *const *trusted_lib_dirs; /* those trusted code's require searches (NULL: lib_dirs) */
    const char *const *roots;    /* script roots holding stages/ and templates/, NULL-terminated */
    vm_log_fn log;           /* default: lines on stderr */
    void *log_ud;
    enum log_level log_level;
    enum log_format log_format; /* of the default sink's lines: text or JSON */
    const char *log_run;     /* NULL, or what lines carry as replica_execution when
                              * their task has no execution (replica run's id) */
    int print_stdout;        /* print() writes to stdout instead of the log */
};

struct vm {
    lua_State *L;
    struct event_base *base;
    struct http_client *http;
    struct event *ready_ev;
    struct task *ready_head, *ready_tail;
    int ready_armed;
    int in_ready;            /* on_ready is running: it re-arms itself */
    struct task *current;    /* the task whose Lua code is running, or NULL */
    struct task *all;        /* every task not yet released */
    long live;               /* tasks not finished */
    struct acct root;        /* charged when no task runs */
    size_t mem_used, mem_cap, mem_peak;
    size_t task_mem;
    double task_cpu;
    char **lib_dirs;
    int n_lib_dirs;
    char **tlib_dirs;        /* what trusted code's require searches */
    int n_tlib_dirs;
    char **roots;
    int n_roots;
    vm_log_fn log;
    void *log_ud;
    enum log_level log_level;
    enum log_format log_format;
    char log_run[64];        /* "" or vm_opts.log_run */
    int env_mt_ref;          /* metatable of sandboxed script environments */
    int trusted_mt_ref;      /* metatable of trusted environments */
    int loaded_ref;          /* modules the trusted code loaded with require */
    int closing;             /* set while vm_free closes the state */
    int print_stdout;
    struct watchdog *wd;     /* NULL, or told of every task slice (watchdog.h) */
    void (*on_interrupt)(struct vm *vm); /* set by `replica repl`: takes SIGINT (cli.c) */
    int debugging;           /* sys.dbg is on: script tasks get the line hook (repl.h) */
};

/* Creates a VM on base, using http for http.request. Returns NULL and writes a
 * message into err on failure. The caller owns the VM (vm_free). */
struct vm *vm_new(struct event_base *base, struct http_client *http, const struct vm_opts *o,
                  char *err, size_t errlen);

/* Cancels and releases every task, then closes the state. */
void vm_free(struct vm *vm);

/* Emits a log line (printf-style) for task t (may be NULL). */
void vm_logf(struct vm *vm, struct task *t, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Loads a text chunk from a file with a fresh trusted environment and
 * pushes the function. Returns LUA_OK, or an error code with the message
 * pushed. */
int vm_load_file(struct vm *vm, lua_State *L, const char *path, const char *chunkname);

/* Like vm_load_file and vm_load_buffer, in the context whose module table
 * is at stack index loaded (sandbox.c): trusted when it is the trusted
 * module table, else a sandbox context. */
int vm_load_file_in(struct vm *vm, lua_State *L, const char *path, const char *chunkname,
                    int loaded);
/* Loads source src as vm_load_buffer_in does, but into a sandbox context
 * through a factory cached under key (a content hash the caller vouches
 * for): the same source is compiled once however many tasks load it. */
int vm_load_keyed_in(struct vm *vm, lua_State *L, const char *key, const char *src, size_t len,
                     const char *chunkname, int loaded);
int vm_load_buffer_in(struct vm *vm, lua_State *L, const char *s, size_t len, const char *name,
                      int loaded);

/* Pushes the contents of a file (at most max bytes) as a string. Returns 0,
 * or -1 with nothing pushed when it cannot be read. */
int vm_push_file(lua_State *L, const char *path, size_t max);

/* Pushes what f gives (at most max bytes) as a string. Returns 0, or -1
 * with nothing pushed on a read error. The caller owns f. */
int vm_push_stream(lua_State *L, FILE *f, size_t max);

/* Loads a text chunk from memory, like vm_load_file. */
int vm_load_buffer(struct vm *vm, lua_State *L, const char *s, size_t len, const char *name);

/* Returns the VM that owns L (the allocator's user data). */
static inline struct vm *vm_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return (struct vm *)ud;
}

/* Drops one reference to a budget, freeing it (and then dropping its
 * reference to the budget above) with its last. */
void vm_acct_release(struct vm *vm, struct acct *a);

/* Returns how many more bytes the running task's budget (and those it
 * counts against) allows; SIZE_MAX outside a task. */
size_t vm_budget_left(struct vm *vm);

/* Charges n bytes that the running task holds outside Lua's heap (a C
 * library's buffer) to its budget. Returns the budget charged, to give to
 * vm_unreserve, or NULL when that would pass a limit (and, when strict,
 * the task is then marked to be killed for memory, as for Lua's own). */
struct acct *vm_reserve(struct vm *vm, size_t n, int strict);
void vm_unreserve(struct vm *vm, struct acct *a, size_t n);

/* Monotonic seconds. */
double vm_now_mono(void);

/* Returns the checked kind argument at idx: "stages" or "templates". */
const char *catalog_check_kind(lua_State *L, int idx);

/* Pushes the path of kind/name in the first script root that has it and
 * returns 1; otherwise pushes nil, err and returns 0 (lua_catalog.c). */
int catalog_find(lua_State *L, const char *kind, const char *name);

/* Pushes json.array_mt, the marker metatable of arrays (lua_json.c). */
void json_push_array_mt(lua_State *L);

/* Installs the allow-listed globals into the state (sandbox.c). */
int sandbox_open(struct vm *vm, lua_State *L);

/* Whether the module table at stack index loaded is the trusted code's
 * (else it is a sandbox context's). */
int sandbox_is_trusted(struct vm *vm, lua_State *L, int loaded);

/* Pushes a new environment of the context whose module table is at stack
 * index loaded: it holds _G and that context's require and load. */
void sandbox_push_env(struct vm *vm, lua_State *L, int loaded);

/* The body of a replacement that defers to the stock function it wraps
 * (its upvalue 1): calls it with every argument, returns nresults (or all,
 * for LUA_MULTRET) results. */
int sandbox_call_stock(lua_State *L, int nresults);

/* Replaces the table on top of L by a read-only proxy of it named name. */
void sandbox_protect(lua_State *L, const char *name);

/* Replacements of standard functions, set into the library copy at idx:
 * coroutines that pass the fairness pause up (lua_coroutine.c), and
 * string.rep, table.move and table.sort charged to the budget (lua_limits.c). */
void coroutine_install(lua_State *L, int idx);
void limits_install_string(lua_State *L, int idx);
void limits_install_table(lua_State *L, int idx);

/* Module injectors: each adds one global module table to the table on top of
 * the stack (the sandbox globals). */
void inject_http_api(struct vm *vm, lua_State *L);
void inject_json_api(struct vm *vm, lua_State *L);
void inject_log_api(struct vm *vm, lua_State *L);
void inject_time_api(struct vm *vm, lua_State *L);
void inject_crypto_api(struct vm *vm, lua_State *L);
void inject_rsa_api(struct vm *vm, lua_State *L);
void inject_task_api(struct vm *vm, lua_State *L);
void inject_blob_api(struct vm *vm, lua_State *L);
void inject_catalog_api(struct vm *vm, lua_State *L);
void inject_term_api(struct vm *vm, lua_State *L);
void inject_creds_api(struct vm *vm, lua_State *L);
void inject_sandbox_api(struct vm *vm, lua_State *L); /* trusted only: lua_sandbox.c */

#endif
