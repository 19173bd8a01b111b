/* main.c - the replica command: dispatches to subcommands. */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "cli.h"
#include "sched.h"


/* Raises the open-file limit to its hard maximum: thousands of concurrent
 * transfers need thousands of sockets. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: replica COMMAND [ARGS]\n\n"
               "commands:\n"
               "  run --from URL --to URL  replicate repositories between registries\n"
               "  repl --from URL --to URL debug one task stage by stage (breakpoints, Lua)\n"
               "  serve                    the daemon: HTTP API, schedules, webhooks (SQLite)\n"
               "  function                 serve one task per HTTP invocation (FaaS platforms)\n"
               "  token create             create an API token for serve's database\n"
               "  check                    validate every stage function and template\n"
               "  script FILE.lua [ARGS]   run a Lua script on the engine\n"
               "  version                  print the version, and those of the libraries\n"
               "\nrun 'replica COMMAND --help' for a command's options\n\n%s",
            cli_data_usage());
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Response bodies of a few hundred KiB come and go at a high rate: keep
     * glibc from mapping and unmapping fresh pages for each of them. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    raise_nofile();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "replica: cannot initialise libcurl\n");
        return 1;
    }
    int rc;
    if (strcmp(argv[1], "run") == 0) {
        rc = cmd_run(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "repl") == 0) {
        rc = cmd_repl(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "serve") == 0) {
        rc = cmd_serve(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "function") == 0) {
        rc = cmd_function(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "token") == 0) {
        rc = cmd_token(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "check") == 0) {
        rc = cmd_check(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "script") == 0) {
        rc = cmd_script(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        rc = cmd_version();
    } else if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        rc = 0;
    } else {
        fprintf(stderr, "replica: unknown command '%s'\n", argv[1]);
        usage(stderr);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
