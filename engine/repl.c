/* repl.c - `replica repl`: debug one replication task stage by stage. It
 * takes `replica run`'s options (run.c parses them) and a few of its own;
 * the session itself is Lua (scripts/lib/repl.lua), on the terminal and
 * debugger of lua_repl.c and lua_debugger.c. */
#include <stdio.h>

#include <lauxlib.h>

#include "cli.h"
#include "repl.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: replica repl --from URL --to URL --repo REPO [--tag TAG]... [options]\n"
            "       replica repl --db FILE --execution ID [--task ID] [options]\n"
            "debugs one task stage by stage (docs/repl.md); ':help' lists the commands.\n"
            "the task:\n"
            "  --repo NAME           the source repository (one)\n"
            "  --tag TAG             its tags (repeatable; globs; default: all)\n"
            "  --template NAME       process template (default: distribution)\n"
            "  --dest-namespace NS  --flatten N   naming, as for replica run\n"
            "  --db FILE --execution ID [--task ID]\n"
            "                        load a task replica serve ran (default: its first failed\n"
            "                        task), with its policy, registries and stage results\n"
            "  --key-file FILE       serve's key, to open the registries' credentials\n"
            "                        (default: FILE.key beside the database)\n"
            "session:\n"
            "  --dry                 refuse writes to the target (PUT, POST, PATCH, DELETE)\n"
            "                        with a \"dry mode\" error instead of sending them\n"
            "  history: $REPLICA_HISTORY, else ~/.replica_history\n"
            "registries, credentials, kinds and TLS: as for replica run (replica run --help)\n"
            "engine:\n%s",
            cli_common_usage());
}

static const char *const values[][2] = {
    { "--db", "db" }, { "--execution", "execution" }, { "--task", "task" },
    { "--key-file", "key_file" }, { NULL, NULL },
};

static const char *const flags[][2] = { { "--dry", "dry" }, { NULL, NULL } };

/* Before the engine opens: log lines go above the prompt, and Ctrl-C stops
 * what runs instead of the process. */
static void prepare(struct cli_common *c)
{
    c->vo.log = repl_log;
    c->wo.sigint_interrupts = 1;
}

void sys_install_repl(struct vm *vm, lua_State *L)
{
    if (!lua_getupvalue(L, -1, 1))
        return;
    if (lua_istable(L, -1) && lua_getfield(L, -1, "sys") == LUA_TTABLE) {
        sys_add_repl(vm, L);
        sys_add_dbg(vm, L);
    }
    lua_pop(L, 2);
}

/* After: the entry's sys gets the terminal and the debugger. */
static void opened(struct engine *e, lua_State *L)
{
    sys_install_repl(e->vm, L);
}

int cmd_repl(int argc, char **argv)
{
    static const struct run_cmd repl = { "repl", "local opts = ... return require('repl').main(opts, sys)",
                                         usage, values, flags, prepare, opened };
    return run_command(argc, argv, &repl);
}
