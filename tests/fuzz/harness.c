/* harness.c - the engine's VM for the fuzz targets, and Lua run on it as
 * tasks (harness.h). */
#include "harness.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <lauxlib.h>

#include "cli.h"
#include "http.h"
#include "sched.h"
#include "sys.h"

/* The trusted chunk that compiles a target in a sandbox context and returns
 * it uncalled: it then runs as a sandboxed task, as a stage's code does. */
static const char boxed_loader[] =
    "local src, name = ...\n"
    "return assert(sandbox.new():load(src, name))\n";

static int target_ref = LUA_NOREF;
static int target_sandboxed;

/* Lua line coverage for libFuzzer, which sees only instrumented C: one
 * counter per pair of consecutive lines run by a target's task (AFL's edge
 * hash), in the section libFuzzer reads extra counters from. Without it the
 * Lua parsers' branches would be invisible to the fuzzer. */
#define LUA_COV_SIZE (1 << 16)
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[LUA_COV_SIZE];
static uintptr_t lua_cov_prev;

/* The hook of a target's task: counts line events in lua_cov and passes the
 * count events (CPU budget, fairness) to the scheduler's hook. */
static void cov_hook(lua_State *L, lua_Debug *ar)
{
    if (ar->event != LUA_HOOKLINE) {
        sched_hook(L, ar);
        return;
    }
    if (!lua_getinfo(L, "S", ar))
        return;
    uintptr_t cur = ((uintptr_t)ar->source * 31 + (uintptr_t)ar->linedefined * 7919 +
                     (uintptr_t)ar->currentline) * 2654435761u;
    lua_cov[(cur ^ lua_cov_prev) % LUA_COV_SIZE]++;
    lua_cov_prev = cur >> 1;
}

struct vm *fuzz_vm(void)
{
    static struct cli_common c;
    static struct vm *vm;
    if (vm)
        return vm;
    signal(SIGPIPE, SIG_IGN); /* as main does: a peer's reset is an error, not a signal */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        abort();
    cli_common_init(&c);
    c.vo.task_cpu = 1;
    c.vo.task_mem = 64UL << 20;
    c.vo.log_level = LOG_ERROR;
    cli_common_finish(&c);
    struct event_base *base = event_base_new();
    struct http_client *http = base ? http_client_new(base, &c.ho) : NULL;
    char err[256] = "cannot create the event loop or the HTTP client";
    vm = http ? vm_new(base, http, &c.vo, err, sizeof(err)) : NULL;
    if (!vm) {
        fprintf(stderr, "fuzz: %s\n", err);
        abort();
    }
    return vm;
}

void fuzz_run(struct vm *vm, int nargs, int sandboxed, int nres)
{
    lua_State *L = vm->L;
    struct task_opts o = { "fuzz", 0, 0, sandboxed };
    struct task *t = task_spawn(vm, L, nargs, &o, NULL);
    if (!t) {
        fprintf(stderr, "fuzz: out of memory spawning a task\n");
        abort();
    }
    task_hold(t);
    lua_cov_prev = 0;
    lua_sethook(t->co, cov_hook, LUA_MASKCOUNT | LUA_MASKLINE, lua_gethookcount(t->co));
    while (t->state != TASK_DONE)
        if (event_base_loop(vm->base, EVLOOP_ONCE) < 0)
            abort();
    if (!t->ok) {
        fprintf(stderr, "fuzz: the task %s: %s\n", t->kill != KILL_NONE ? "was killed" : "failed",
                t->err ? t->err : "?");
        abort();
    }
    int have = t->nres < nres ? t->nres : nres;
    lua_pop(t->co, t->nres - have);
    lua_xmove(t->co, L, have);
    for (int i = have; i < nres; i++)
        lua_pushnil(L);
    task_release(t);
}

void fuzz_lua_init(const char *name, const char *src, int sandboxed)
{
    struct vm *vm = fuzz_vm();
    lua_State *L = vm->L;
    const char *chunk = sandboxed ? boxed_loader : src;
    if (vm_load_buffer(vm, L, chunk, strlen(chunk), name) != LUA_OK) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (sandboxed) {
        lua_pushstring(L, src);
        lua_pushstring(L, name);
        fuzz_run(vm, 2, 0, 1); /* the compiled target, not yet run */
    } else {
        sys_install(vm, L);
    }
    fuzz_run(vm, 0, sandboxed, 1);
    if (!lua_isfunction(L, -1)) {
        fprintf(stderr, "fuzz: %s returned no function\n", name);
        abort();
    }
    target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    target_sandboxed = sandboxed;
}

void fuzz_lua_one(const uint8_t *data, size_t size)
{
    struct vm *vm = fuzz_vm();
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
    lua_pushlstring(L, (const char *)data, size);
    fuzz_run(vm, 1, target_sandboxed, 0);
}
