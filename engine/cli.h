/* cli.h - what the subcommands share: an engine (loop + HTTP + VM) and
 * option helpers. */
#ifndef REPLICA_CLI_H
#define REPLICA_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "http.h"
#include "vm.h"
#include "watchdog.h"

struct engine {
    struct event_base *base;
    struct http_client *http;
    struct vm *vm;
    struct watchdog *wd;     /* owns SIGINT/SIGTERM; vm->wd points to it */
};

/* Creates the event base, HTTP client, VM and watchdog (which takes over
 * SIGINT/SIGTERM; wo may be NULL for the defaults). Call before any other
 * thread exists. Returns 0, or -1 with err. The caller closes it with
 * engine_close. */
int engine_open(struct engine *e, const struct vm_opts *vo, const struct http_client_opts *ho,
                const struct watchdog_opts *wo, char *err, size_t errlen);
void engine_close(struct engine *e);

/* Parses a log level name; returns 0 or -1. */
int cli_log_level(const char *s, enum log_level *out);

/* Writes the bundled scripts directory joined with sub into out, searched
 * as cli_data_usage says ($REPLICA_SCRIPTS first). Returns 0 when the
 * directory exists. */
int cli_scripts_dir(char *out, size_t n, const char *sub);
/* Finds the web console's built files the same way ($REPLICA_CONSOLE
 * first). Writes the path to out; returns 0 when it is a directory, -1
 * otherwise. */
int cli_console_dir(char *out, size_t n);
/* The lines of `replica --help` that give the search order above (a
 * static string). */
const char *cli_data_usage(void);

#define CLI_MAX_DIRS 8

/* Options every subcommand takes (script roots, library dirs, limits). */
struct cli_common {
    struct vm_opts vo;
    struct http_client_opts ho;
    struct watchdog_opts wo;
    const char *roots[CLI_MAX_DIRS + 2];
    const char *libs[2 * CLI_MAX_DIRS + 2];
    const char *tlibs[CLI_MAX_DIRS + 2];      /* --lib dirs and the bundled lib: trusted code's */
    int nroots, nlibs;
    char bundled[4096];
    char rootlibs[CLI_MAX_DIRS + 1][4200];
    char run_id[40];                          /* cli_new_run_id's, or "" */
};

void cli_common_init(struct cli_common *c);

/* Takes opt with its value if it is a common option: returns 1 when taken,
 * 0 when not a common option, -1 for a bad value. */
int cli_common_opt(struct cli_common *c, const char *opt, const char *val);

/* cli_common_opt for a command's option it does not take itself: returns
 * 0 when taken, else prints "replica CMD: unknown option X" (or "bad value
 * for") and the usage on stderr, and returns 2, the exit code. */
int cli_common_take(struct cli_common *c, const char *cmd, const char *opt, const char *val,
                    void (*usage)(FILE *));

/* Adds the bundled script root and fills c->vo's directory lists. */
void cli_common_finish(struct cli_common *c);

/* Makes a fresh id for this process's run ("run-" and 16 hex digits, from
 * the CSPRNG) in c->run_id, and has every log line carry it as
 * replica_execution (replica run: there is no execution id). */
void cli_new_run_id(struct cli_common *c);

/* The usage lines of the common options. */
const char *cli_common_usage(void);

/* Opens the engine with c's options and pushes the Lua chunk src (named
 * name) onto the VM's stack, ready for arguments and cli_run_main. On
 * failure prints why and returns -1 (the engine is closed). */
int cli_open_entry(struct engine *e, struct cli_common *c, const char *src, const char *name);

/* Runs the function below nargs arguments on top of the VM's stack as the
 * main task until every task ends; SIGINT/SIGTERM cancel (see engine_open
 * and watchdog.h for the grace period). Returns the exit
 * code: 1 when it failed or returned nil, err; an integer it returned; 0/1 for
 * a boolean; else 0. */
int cli_run_main(struct engine *e, int nargs, const char *name);

/* A command that takes `replica run`'s options (run.c): its name, its Lua
 * entry chunk (called with the options table), its usage, its own options
 * with one value and its flags ({option, field}, NULL-terminated, or NULL),
 * and hooks: prepare before the engine opens, opened after. */
struct run_cmd {
    const char *name;
    const char *entry;
    void (*usage)(FILE *f);
    const char *const (*values)[2];
    const char *const (*flags)[2];
    void (*prepare)(struct cli_common *c);
    void (*opened)(struct engine *e, lua_State *L);
};

/* Parses run's options (and cmd's) into a table and runs cmd's entry on the
 * engine; returns the exit code. */
int run_command(int argc, char **argv, const struct run_cmd *cmd);

int cmd_script(int argc, char **argv);
int cmd_repl(int argc, char **argv);
int cmd_version(void); /* version.c */
int cmd_run(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_function(int argc, char **argv);

#endif
