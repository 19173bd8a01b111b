/* script.c - `replica script FILE [ARGS...]`: runs a Lua file as a task on
 * the engine, with the full runtime (http, json, task, time, ...). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>

#include "cli.h"
#include "http.h"
#include "sched.h"
#include "vm.h"

struct script_run {
    struct vm *vm;
    int signals;
};

/* SIGINT/SIGTERM: the first cancels every task, the second exits at once. */
static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct script_run *run = arg;
    (void)what;
    if (run->signals++ > 0) {
        fprintf(stderr, "replica: interrupted\n");
        _exit(128 + (int)sig);
    }
    vm_logf(run->vm, NULL, LOG_WARN, "signal %d: cancelling every task", (int)sig);
    sched_cancel_all(run->vm);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: replica script [options] FILE.lua [ARGS...]\n"
            "  --scripts DIR      a script root (lib/, stages/, templates/) searched before\n"
            "                     the bundled one (repeatable)\n"
            "  --lib DIR          add a directory that require() searches (repeatable)\n"
            "  --memory MIB       memory limit per task (default 64)\n"
            "  --cpu SECONDS      CPU budget per task (default 30)\n"
            "  --max-per-host N   requests in flight per host (default 64)\n"
            "  --log-level LEVEL  debug, info, warn or error (default info)\n");
}

int cmd_script(int argc, char **argv)
{
    const char *libs[72], *roots[9];
    char rootlibs[8][4096];
    int nlibs = 0, nroots = 0;
    struct vm_opts vo = { 0 };
    struct http_client_opts ho = { 0 };
    vo.log_level = LOG_INFO;
    vo.print_stdout = 1;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "replica script: %s needs a value\n", opt);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--lib") == 0 && nlibs < 62) {
            libs[nlibs++] = val;
        } else if (strcmp(opt, "--scripts") == 0 && nroots < 7) {
            roots[nroots++] = val;
        } else if (strcmp(opt, "--memory") == 0 && atol(val) > 0) {
            vo.task_mem = (size_t)atol(val) << 20;
        } else if (strcmp(opt, "--cpu") == 0 && atof(val) > 0) {
            vo.task_cpu = atof(val);
        } else if (strcmp(opt, "--max-per-host") == 0 && atol(val) > 0) {
            ho.max_per_host = atol(val);
        } else if (strcmp(opt, "--log-level") == 0 && cli_log_level(val, &vo.log_level) == 0) {
            /* set */
        } else {
            fprintf(stderr, "replica script: bad option %s %s\n", opt, val);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *file = argv[i++];
    char bundled[4096];
    if (cli_scripts_dir(bundled, sizeof(bundled), "") == 0)
        roots[nroots++] = bundled;
    roots[nroots] = NULL;
    for (int r = 0; r < nroots; r++) {
        snprintf(rootlibs[r], sizeof(rootlibs[r]), "%s/lib", roots[r]);
        libs[nlibs++] = rootlibs[r];
    }
    libs[nlibs] = NULL;
    vo.lib_dirs = libs;
    vo.roots = roots;

    struct engine eng;
    char err[256];
    if (engine_open(&eng, &vo, &ho, err, sizeof(err)) != 0) {
        fprintf(stderr, "replica: %s\n", err);
        return 1;
    }
    struct script_run run = { eng.vm, 0 };
    struct event *sigint = evsignal_new(eng.base, SIGINT, on_signal, &run);
    struct event *sigterm = evsignal_new(eng.base, SIGTERM, on_signal, &run);
    if (sigint)
        evsignal_add(sigint, NULL);
    if (sigterm)
        evsignal_add(sigterm, NULL);

    lua_State *L = eng.vm->L;
    int rc = 0;
    char chunk[4200];
    snprintf(chunk, sizeof(chunk), "@%s", file);
    if (vm_load_file(eng.vm, L, file, chunk) != LUA_OK) {
        fprintf(stderr, "replica: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        rc = 1;
    } else {
        int nargs = argc - i;
        luaL_checkstack(L, nargs, "too many arguments");
        for (; i < argc; i++)
            lua_pushstring(L, argv[i]);
        const char *base = strrchr(file, '/');
        struct task_opts to = { base ? base + 1 : file, 0, 0 };
        struct task *t = task_spawn(eng.vm, L, nargs, &to, NULL);
        if (!t) {
            fprintf(stderr, "replica: out of memory\n");
            rc = 1;
        } else {
            task_hold(t);
            event_base_dispatch(eng.base);
            if (t->state != TASK_DONE) {
                fprintf(stderr, "replica: the event loop stopped early\n");
                rc = 1;
            } else if (!t->ok) {
                fprintf(stderr, "replica: %s\n", t->cancelled ? "cancelled" : t->err);
                rc = 1;
            } else if (t->nres >= 2 && lua_isnil(t->co, -t->nres)) {
                fprintf(stderr, "replica: %s\n", luaL_tolstring(t->co, -t->nres + 1, NULL));
                rc = 1;
            }
            task_release(t);
        }
    }
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    engine_close(&eng);
    return rc;
}
