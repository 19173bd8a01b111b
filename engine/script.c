/* script.c - `replica script FILE [ARGS...]`: runs a Lua file as a task on
 * the engine, with the full runtime (http, json, task, time, ...). */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "cli.h"
#include "repl.h"
#include "sys.h"
#include "vm.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: replica script [options] FILE.lua [ARGS...]\n%s", cli_common_usage());
}

int cmd_script(int argc, char **argv)
{
    struct cli_common c;
    cli_common_init(&c);
    c.vo.print_stdout = 1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        int took = i + 1 < argc ? cli_common_opt(&c, argv[i], argv[i + 1]) : -1;
        if (took <= 0) {
            fprintf(stderr, "replica script: bad option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *file = argv[i++];
    cli_common_finish(&c);

    struct engine eng;
    char err[256];
    if (engine_open(&eng, &c.vo, &c.ho, &c.wo, err, sizeof(err)) != 0) {
        fprintf(stderr, "replica: %s\n", err);
        return 1;
    }
    lua_State *L = eng.vm->L;
    int rc;
    char chunk[4200];
    snprintf(chunk, sizeof(chunk), "@%s", file);
    if (vm_load_file(eng.vm, L, file, chunk) != LUA_OK) {
        fprintf(stderr, "replica: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        rc = 1;
    } else {
        sys_install(eng.vm, L);
        sys_install_repl(eng.vm, L); /* sys.repl, sys.dbg: spec/repl_debugger_spec.lua */
        int nargs = argc - i;
        luaL_checkstack(L, nargs, "too many arguments");
        for (; i < argc; i++)
            lua_pushstring(L, argv[i]);
        const char *base = strrchr(file, '/');
        rc = cli_run_main(&eng, nargs, base ? base + 1 : file);
    }
    engine_close(&eng);
    return rc;
}
