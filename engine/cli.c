/* cli.c - what the subcommands share: the engine, the options common to all
 * of them, and running a Lua function as the main task. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <openssl/rand.h>

#include "cli.h"
#include "sched.h"

/* The install prefix the Makefile compiled in: the last place the bundled
 * data is looked for (the binary's own prefix comes first). */
#ifndef REPLICA_PREFIX
#define REPLICA_PREFIX "/usr/local"
#endif

/* SIGINT/SIGTERM, forwarded to the loop by the watchdog thread: the first
 * cancels every task (only those of sys.drain_on_signal when there are; the
 * REPL's interrupt handler takes SIGINT);
 * the thread itself ends the process on a second one, or when the grace
 * period runs out. */
static void on_signal(void *ud, int sig)
{
    struct vm *vm = ud;
    if (sig == SIGINT && vm->on_interrupt) {
        vm->on_interrupt(vm); /* the REPL: Ctrl-C stops what runs, not the process */
        return;
    }
    if (sched_cancel_drainers(vm) > 0) {
        /* a service that drains: it hears the signal and ends its work itself */
        vm_logf(vm, NULL, LOG_WARN, "signal %d: draining (again to quit at once)", sig);
        return;
    }
    vm_logf(vm, NULL, LOG_WARN, "signal %d: cancelling every task (again to quit at once)", sig);
    sched_cancel_all(vm);
}

int engine_open(struct engine *e, const struct vm_opts *vo, const struct http_client_opts *ho,
                const struct watchdog_opts *wo, char *err, size_t errlen)
{
    memset(e, 0, sizeof(*e));
    /* Timers that never end early: with a cached time, libevent arms a
     * timer from the time the loop last polled, so a task that ran long in
     * one callback (a query in a transaction) would see its time.sleep,
     * retry backoff or Retry-After wait end early once anything else woke
     * the loop; with the coarse clock, up to a tick early against
     * time.mono(). */
    struct event_config *cfg = event_config_new();
    if (cfg && event_config_set_flag(cfg, EVENT_BASE_FLAG_NO_CACHE_TIME) == 0 &&
        event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER) == 0)
        e->base = event_base_new_with_config(cfg);
    if (cfg)
        event_config_free(cfg);
    if (!e->base) {
        snprintf(err, errlen, "cannot create the event loop");
        return -1;
    }
    e->http = http_client_new(e->base, ho);
    if (!e->http) {
        snprintf(err, errlen, "cannot create the HTTP client");
        engine_close(e);
        return -1;
    }
    e->vm = vm_new(e->base, e->http, vo, err, errlen);
    if (!e->vm) {
        engine_close(e);
        return -1;
    }
    e->wd = watchdog_new(e->base, e->vm, wo, on_signal, e->vm, err, errlen);
    if (!e->wd) {
        engine_close(e);
        return -1;
    }
    e->vm->wd = e->wd;
    return 0;
}

void engine_close(struct engine *e)
{
    vm_free(e->vm); /* before the client: pending requests are freed with it */
    http_client_free(e->http);
    watchdog_free(e->wd); /* last: a shutdown stuck in the frees above still ends */
    if (e->base)
        event_base_free(e->base);
    memset(e, 0, sizeof(*e));
}

int cli_log_level(const char *s, enum log_level *out)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

/* Returns 1 if path is a directory. */
static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Writes the directory of the running binary, with up more trailing
 * components taken off (0: bin/, 1: its parent), into dir; returns 0, or
 * -1 when /proc/self/exe cannot be read or the path is too short. */
static int exe_dir(char *dir, size_t n, int up)
{
    ssize_t len = readlink("/proc/self/exe", dir, n - 1);
    if (len <= 0 || (size_t)len >= n - 1)
        return -1;
    dir[len] = '\0';
    for (int i = 0; i <= up; i++) {
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            return -1;
        *slash = '\0';
    }
    return 0;
}

/* Finds a directory of the bundled data, name being "scripts" or "web":
 * $env when set, else the first directory of BIN/../share/replica/NAME
 * (an installed binary), BIN/TREE and BIN/../../TREE (./replica and
 * build/release/replica in the source tree, TREE being scripts or
 * build/web), PREFIX/share/replica/NAME (the prefix compiled in). Writes
 * it into out, joined with sub; returns 0 when it is a directory, else -1
 * (out then holds the last candidate). */
static int data_dir(char *out, size_t n, const char *env, const char *name, const char *tree,
                    const char *sub)
{
    const char *sep = *sub ? "/" : "";
    const char *v = getenv(env);
    if (v && *v) {
        snprintf(out, n, "%s%s%s", v, sep, sub);
        return is_dir(out) ? 0 : -1;
    }
    char exe[4096];
    if (exe_dir(exe, sizeof(exe), 1) == 0) {
        snprintf(out, n, "%s/share/replica/%s%s%s", exe, name, sep, sub);
        if (is_dir(out))
            return 0;
    }
    if (exe_dir(exe, sizeof(exe), 0) == 0) {
        snprintf(out, n, "%s/%s%s%s", exe, tree, sep, sub);
        if (is_dir(out))
            return 0;
    }
    if (exe_dir(exe, sizeof(exe), 2) == 0) {
        snprintf(out, n, "%s/%s%s%s", exe, tree, sep, sub);
        if (is_dir(out))
            return 0;
    }
    snprintf(out, n, "%s/share/replica/%s%s%s", REPLICA_PREFIX, name, sep, sub);
    return is_dir(out) ? 0 : -1;
}

int cli_scripts_dir(char *out, size_t n, const char *sub)
{
    return data_dir(out, n, "REPLICA_SCRIPTS", "scripts", "scripts", sub);
}

int cli_console_dir(char *out, size_t n)
{
    return data_dir(out, n, "REPLICA_CONSOLE", "web", "build/web", "");
}

const char *cli_data_usage(void)
{
    return "files: the bundled scripts and the web console are looked for, in order, at\n"
           "  $REPLICA_SCRIPTS (scripts) and $REPLICA_CONSOLE or serve --console (console);\n"
           "  BIN/../share/replica/{scripts,web}, BIN being the binary's directory (an\n"
           "  installed binary); BIN/{scripts,build/web} and BIN/../../{scripts,build/web}\n"
           "  (./replica and build/release/replica in the source tree);\n"
           "  " REPLICA_PREFIX "/share/replica/{scripts,web} (the prefix it was built for).\n"
           "  --scripts DIR adds a root searched before the bundled scripts.\n";
}

void cli_common_init(struct cli_common *c)
{
    memset(c, 0, sizeof(*c));
    c->vo.log_level = LOG_INFO;
}

int cli_common_opt(struct cli_common *c, const char *opt, const char *val)
{
    if (strcmp(opt, "--scripts") == 0) {
        if (c->nroots >= CLI_MAX_DIRS)
            return -1;
        c->roots[c->nroots++] = val;
    } else if (strcmp(opt, "--lib") == 0) {
        if (c->nlibs >= CLI_MAX_DIRS)
            return -1;
        c->libs[c->nlibs++] = val;
    } else if (strcmp(opt, "--memory") == 0) {
        if (atol(val) <= 0)
            return -1;
        c->vo.task_mem = (size_t)atol(val) << 20;
    } else if (strcmp(opt, "--cpu") == 0) {
        if (atof(val) <= 0)
            return -1;
        c->vo.task_cpu = atof(val);
    } else if (strcmp(opt, "--max-per-host") == 0) {
        if (atol(val) <= 0)
            return -1;
        c->ho.max_per_host = atol(val);
    } else if (strcmp(opt, "--max-transfers") == 0) {
        if (atol(val) <= 0)
            return -1;
        c->ho.max_total = atol(val);
    } else if (strcmp(opt, "--grace") == 0) {
        if (atof(val) <= 0)
            return -1;
        c->wo.grace = atof(val);
    } else if (strcmp(opt, "--watchdog") == 0) {
        if (atof(val) < 0 || (atof(val) == 0 && strspn(val, "0.") != strlen(val)))
            return -1;
        c->wo.stall = atof(val) > 0 ? atof(val) : -1;
    } else if (strcmp(opt, "--log-level") == 0) {
        if (cli_log_level(val, &c->vo.log_level) != 0)
            return -1;
    } else if (strcmp(opt, "--log-format") == 0) {
        if (logline_format_name(val, &c->vo.log_format) != 0)
            return -1;
        c->wo.log_format = c->vo.log_format;
    } else {
        return 0;
    }
    return 1;
}

int cli_common_take(struct cli_common *c, const char *cmd, const char *opt, const char *val,
                    void (*usage)(FILE *))
{
    int took = cli_common_opt(c, opt, val);
    if (took > 0)
        return 0;
    fprintf(stderr, "replica %s: %s option %s\n", cmd, took < 0 ? "bad value for" : "unknown", opt);
    usage(stderr);
    return 2;
}

void cli_common_finish(struct cli_common *c)
{
    int has_bundled = cli_scripts_dir(c->bundled, sizeof(c->bundled), "") == 0;
    if (has_bundled)
        c->roots[c->nroots++] = c->bundled;
    c->roots[c->nroots] = NULL;
    /* Trusted code requires only from --lib and the bundled library: a
     * script root cannot put a module of its own under the daemon. */
    int nt = 0;
    for (int i = 0; i < c->nlibs; i++)
        c->tlibs[nt++] = c->libs[i];
    for (int r = 0; r < c->nroots; r++) {
        snprintf(c->rootlibs[r], sizeof(c->rootlibs[r]), "%s/lib", c->roots[r]);
        c->libs[c->nlibs++] = c->rootlibs[r];
    }
    c->libs[c->nlibs] = NULL;
    if (has_bundled)
        c->tlibs[nt++] = c->rootlibs[c->nroots - 1];
    c->tlibs[nt] = NULL;
    c->vo.lib_dirs = c->libs;
    c->vo.trusted_lib_dirs = c->tlibs;
    c->vo.roots = c->roots;
}

void cli_new_run_id(struct cli_common *c)
{
    unsigned char b[8] = { 0 };
    if (RAND_bytes(b, sizeof(b)) != 1) { /* no randomness: still an id, from the clock and pid */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long long v = (unsigned long long)ts.tv_sec * 1000000007ULL ^
                               (unsigned long long)ts.tv_nsec ^ ((unsigned long long)getpid() << 40);
        memcpy(b, &v, sizeof(b));
    }
    snprintf(c->run_id, sizeof(c->run_id), "run-%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7]);
    c->vo.log_run = c->wo.log_run = c->run_id;
}

const char *cli_common_usage(void)
{
    return "  --scripts DIR      a script root (lib/, stages/, templates/) searched before\n"
           "                     the bundled one (repeatable)\n"
           "  --lib DIR          add a directory that require() searches (repeatable)\n"
           "  --memory MIB       memory limit per task (default 64)\n"
           "  --cpu SECONDS      CPU budget per task (default 30)\n"
           "  --max-per-host N   requests in flight per registry host (default 64)\n"
           "  --max-transfers N  requests in flight in all (default: no limit; run: 256)\n"
           "  --log-level LEVEL  debug, info, warn or error (default info)\n"
           "  --log-format FMT   text (default) or json: one object per line on stderr with\n"
           "                     time, level, message, task, replica_task, replica_execution\n"
           "  --grace SECONDS    after SIGTERM/SIGINT, end the process within this time even\n"
           "                     if the event loop is stuck (default 10)\n"
           "  --watchdog SECONDS report the task holding the event loop when it makes no\n"
           "                     progress for longer than this (default 2; 0: never)\n";
}

int cli_open_entry(struct engine *e, struct cli_common *c, const char *src, const char *name)
{
    char err[256];
    if (engine_open(e, &c->vo, &c->ho, &c->wo, err, sizeof(err)) != 0) {
        fprintf(stderr, "replica: %s\n", err);
        return -1;
    }
    if (vm_load_buffer(e->vm, e->vm->L, src, strlen(src), name) != LUA_OK) {
        fprintf(stderr, "replica: %s\n", lua_tostring(e->vm->L, -1));
        engine_close(e);
        return -1;
    }
    return 0;
}

/* Says why the main task failed on stderr: "replica: msg" in the text
 * format, an error line of the log in JSON (so that every line parses). */
static void say_failure(struct engine *e, const char *msg)
{
    if (e->vm->log_format == LOG_FORMAT_JSON)
        vm_logf(e->vm, NULL, LOG_ERROR, "%s", msg);
    else
        fprintf(stderr, "replica: %s\n", msg);
}

int cli_run_main(struct engine *e, int nargs, const char *name)
{
    int rc = 0;
    struct task_opts to = { name, 0, 0, 0 };
    struct task *t = task_spawn(e->vm, e->vm->L, nargs, &to, NULL);
    if (!t) {
        say_failure(e, "out of memory");
        rc = 1;
    } else {
        task_hold(t);
        event_base_dispatch(e->base);
        lua_State *co = t->co;
        if (t->state != TASK_DONE) {
            say_failure(e, "the event loop stopped early");
            rc = 1;
        } else if (!t->ok) {
            say_failure(e, t->cancelled ? "cancelled" : t->err);
            rc = 1;
        } else if (t->nres >= 2 && lua_isnil(co, -t->nres)) {
            say_failure(e, luaL_tolstring(co, -t->nres + 1, NULL));
            lua_pop(co, 1);
            rc = 1;
        } else if (t->nres >= 1 && lua_isinteger(co, -t->nres)) {
            rc = (int)lua_tointeger(co, -t->nres);
        } else if (t->nres >= 1 && lua_isboolean(co, -t->nres)) {
            rc = lua_toboolean(co, -t->nres) ? 0 : 1;
        }
        task_release(t);
    }
    return rc;
}
