/* serve.c - `replica serve` (the daemon: HTTP API, scheduler, webhooks on
 * SQLite), `replica token create` and `replica function` (one task per
 * HTTP invocation, for FaaS platforms). C parses the command line; the
 * service itself is Lua (scripts/lib/serve.lua), which gets the privileged
 * sys table (database, HTTP server, keyring) as its second argument. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "cli.h"
#include "sys.h"
#include "vm.h"

#define DEFAULT_DB "replica.db"
#define DEFAULT_LISTEN "127.0.0.1:8787"

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: replica serve [options]\n"
            "  --db FILE            SQLite database (default ./" DEFAULT_DB ", created if absent)\n"
            "  --key-file FILE      credential encryption key (default: the database path + .key;\n"
            "                       created with mode 0600 at first start)\n"
            "  --listen HOST:PORT   API address (default " DEFAULT_LISTEN "; loopback unless\n"
            "                       you say otherwise)\n"
            "  --max-body BYTES     largest API request body accepted (default 1048576)\n"
            "  --max-connections N  open API connections at most (default 1024)\n"
            "  --max-per-address N  open API connections from one client address at most\n"
            "                       (default 64)\n"
            "  --header-timeout SECS\n"
            "                       seconds a request line and headers may take (default 10)\n"
            "  --body-timeout SECS  seconds a request body may take (default 60)\n"
            "  --auth-backoff SECS  an address with 5 failed authentications in a minute\n"
            "                       gets 429 for SECS, then twice as long at each further\n"
            "                       failure, up to 15 min (default 60; 0: off)\n"
            "  --console DIR        the web console's built files, served at / (default: found\n"
            "                       as 'replica --help' says, e.g. BIN/../share/replica/web);\n"
            "                       'none' serves the API only\n"
            "  --metrics-token-file FILE  a bearer token that opens GET /metrics (and nothing\n"
            "                       else) besides the API tokens\n"
            "retention (docs/api.md; 0 keeps everything):\n"
            "  --keep-executions N  ended executions kept per policy, with their tasks and\n"
            "                       logs (default 50; a policy's keep_executions wins)\n"
            "  --keep-events DAYS   days webhook events are kept (default 30)\n"
            "  --keep-audit DAYS    days the audit records of API writes are kept\n"
            "                       (default 90)\n"
            "FaaS (docs/faas.md):\n"
            "  --executor local|faas the executor of policies that do not choose one\n"
            "                       (default local)\n"
            "  --gateway URL        where tasks go, e.g. http://gateway:8080/function/replica\n"
            "  --faas-mode sync|async  one held request per task (default), or OpenFaaS's\n"
            "                       queue (/async-function/NAME) with a callback\n"
            "  --faas-concurrency N tasks in flight on the functions at most (default 64)\n"
            "  --faas-retries N     attempts after the first when the platform loses one\n"
            "                       (default 4; a policy's retries field overrides it)\n"
            "  --faas-timeout SECS  longest a task may take (default 3600)\n"
            "  --faas-lease SECS    an attempt with no news this long is lost (default 60)\n"
            "  --callback-url URL   this daemon's URL as the functions reach it (default:\n"
            "                       the --listen address)\n"
            "  --seal-key-file FILE the key the functions open credentials with\n"
            "  --function-token-file FILE  the functions' bearer token, unless\n"
            "                       REPLICA_FUNCTION_TOKEN is set\n"
            "The first start prints an admin token once; 'replica token create' makes more.\n"
            "engine:\n%s",
            cli_common_usage());
}

/* The value options of serve and token, and their opts-table fields. */
static const char *const serve_opts[][2] = {
    { "--db", "db" }, { "--key-file", "key_file" }, { "--listen", "listen" },
    { "--max-body", "max_body" }, { "--name", "name" },
    { "--max-connections", "max_connections" }, { "--max-per-address", "max_per_address" },
    { "--header-timeout", "header_timeout" }, { "--body-timeout", "body_timeout" },
    { "--console", "console" }, { "--auth-backoff", "auth_backoff" },
    { "--keep-executions", "keep_executions" }, { "--keep-events", "keep_events" },
    { "--keep-audit", "keep_audit" },
    { "--max-inflight", "max_inflight" }, { "--drain-timeout", "drain_timeout" },
    { "--token-file", "token_file" }, { "--seal-key-file", "seal_key_file" },
    { "--executor", "executor" }, { "--gateway", "gateway" }, { "--faas-mode", "faas_mode" },
    { "--faas-concurrency", "faas_concurrency" }, { "--faas-retries", "faas_retries" },
    { "--faas-timeout", "faas_timeout" }, { "--faas-lease", "faas_lease" },
    { "--callback-url", "callback_url" }, { "--function-token-file", "function_token_file" },
    { "--metrics-token-file", "metrics_token_file" },
    { NULL, NULL },
};

static const char *opt_field(const char *opt)
{
    for (int i = 0; serve_opts[i][0]; i++)
        if (strcmp(serve_opts[i][0], opt) == 0)
            return serve_opts[i][1];
    return NULL;
}

/* Parses argv[first..] into c and an options table pushed later; runs the
 * Lua entry src with (opts, sys). allowed lists the fields this command
 * takes. Returns the exit code. */
static int run_entry(int argc, char **argv, int first, const char *cmd, const char *src,
                     const char *const *allowed, void (*usage)(FILE *),
                     void (*extra)(lua_State *L))
{
    struct cli_common c;
    cli_common_init(&c);
    c.vo.print_stdout = 1;
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    }
    for (int i = first; i < argc; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "replica %s: %s needs a value\n", cmd, argv[i]);
            return 2;
        }
        const char *f = opt_field(argv[i]);
        int ok = 0;
        for (int k = 0; f && allowed[k]; k++)
            ok |= strcmp(allowed[k], f) == 0;
        if (!ok && cli_common_take(&c, cmd, argv[i], argv[i + 1], usage) != 0)
            return 2;
        i++;
    }
    cli_common_finish(&c);
    if (c.ho.max_total == 0)
        c.ho.max_total = 512;

    struct engine eng;
    char name[64];
    snprintf(name, sizeof(name), "=replica %s", cmd);
    if (cli_open_entry(&eng, &c, src, name) != 0)
        return 1;
    lua_State *L = eng.vm->L;
    sys_install(eng.vm, L);
    lua_createtable(L, 0, 8);
    for (int i = first; i + 1 < argc; i += 2) {
        const char *f = opt_field(argv[i]);
        if (f) {
            lua_pushstring(L, argv[i + 1]);
            lua_setfield(L, -2, f);
        }
    }
    const char *v = getenv("REPLICA_DB");
    if (v && *v && lua_getfield(L, -1, "db") == LUA_TNIL) {
        lua_pushstring(L, v);
        lua_setfield(L, -3, "db");
    }
    lua_settop(L, 2);
    lua_pushstring(L, DEFAULT_DB);
    lua_setfield(L, -2, "default_db");
    lua_pushstring(L, DEFAULT_LISTEN);
    lua_setfield(L, -2, "default_listen");
    char console[4096];
    if (cli_console_dir(console, sizeof(console)) == 0) {
        lua_pushstring(L, console);
        lua_setfield(L, -2, "default_console");
    }
    if (extra)
        extra(L);
    int rc = cli_run_main(&eng, 1, cmd);
    engine_close(&eng);
    return rc;
}

/* Sets field to the text of the file named by field file_field of the
 * options table on top of L, when that is given (false when the file cannot
 * be read: the Lua side names it). */
static void opt_file_text(lua_State *L, const char *file_field, const char *field)
{
    if (lua_getfield(L, -1, file_field) == LUA_TSTRING) {
        if (vm_push_file(L, lua_tostring(L, -1), 4096) != 0)
            lua_pushboolean(L, 0);
        lua_setfield(L, -3, field);
    }
    lua_pop(L, 1);
}

/* Adds the tokens kept in files to the options table on top of L: the
 * functions' ($REPLICA_FUNCTION_TOKEN, else --function-token-file's text;
 * faas/config.lua checks it) and the metrics token (serve/scrape.lua). */
static void serve_extra(lua_State *L)
{
    opt_file_text(L, "metrics_token_file", "metrics_token");
    const char *v = getenv("REPLICA_FUNCTION_TOKEN");
    if (v && *v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, "function_token");
        return;
    }
    opt_file_text(L, "function_token_file", "function_token");
}

int cmd_serve(int argc, char **argv)
{
    static const char *const allowed[] = { "db", "key_file", "listen", "max_body",
                                           "max_connections", "max_per_address",
                                           "header_timeout", "body_timeout", "console",
                                           "keep_executions", "keep_events", "keep_audit",
                                           "auth_backoff", "executor", "gateway", "faas_mode", "faas_concurrency",
                                           "faas_retries", "faas_timeout", "faas_lease",
                                           "callback_url", "seal_key_file", "function_token_file",
                                           "metrics_token_file", NULL };
    return run_entry(argc, argv, 1, "serve",
                     "local opts = ... return require('serve').main(opts, sys)", allowed,
                     serve_usage, serve_extra);
}

static void token_usage(FILE *f)
{
    fprintf(f, "usage: replica token create [--db FILE] [--name NAME]\n"
               "  creates an API token, prints it once, and stores only its hash\n");
}

int cmd_token(int argc, char **argv)
{
    static const char *const allowed[] = { "db", "name", NULL };
    if (argc < 2 || strcmp(argv[1], "create") != 0) {
        token_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    return run_entry(argc, argv, 2, "token",
                     "local opts = ... return require('serve.tokens').cli_create(opts, sys)",
                     allowed, token_usage, NULL);
}

#define FUNCTION_TOKEN_FILE "/var/openfaas/secrets/replica-function-token"
#define FUNCTION_MAX_INPUT (1 << 20)

static void function_usage(FILE *f)
{
    fprintf(f,
            "usage: replica function [options]        serve invocations (docs/faas.md)\n"
            "       replica function seal --seal-key-file FILE < credentials.json\n"
            "  --listen HOST:PORT   address (default 0.0.0.0:$PORT, $PORT default 8080)\n"
            "  --seal-key-file FILE the key shared with the coordinator (required; never\n"
            "                       created)\n"
            "  --token-file FILE    the bearer token, if REPLICA_FUNCTION_TOKEN is unset\n"
            "                       (default " FUNCTION_TOKEN_FILE ")\n"
            "  --max-inflight N     invocations at once; more answer 429 (default 4)\n"
            "  --drain-timeout SECS after SIGTERM, time the invocations in flight get to\n"
            "                       finish (default 30)\n"
            "  --max-body BYTES     largest invocation accepted (default 1048576)\n"
            "  --header-timeout SECS, --body-timeout SECS, --max-connections N\n"
            "engine:\n%s",
            cli_common_usage());
}

/* Adds what the function reads outside its flags to the options table on
 * top of L: $PORT, the token ($REPLICA_FUNCTION_TOKEN, else the token file's
 * text) and where the token came from. */
static void function_extra(lua_State *L)
{
    const char *v = getenv("PORT");
    if (v && *v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, "env_port");
    }
    v = getenv("REPLICA_FUNCTION_TOKEN");
    if (v && *v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, "token");
        lua_pushstring(L, "REPLICA_FUNCTION_TOKEN");
        lua_setfield(L, -2, "token_from");
        return;
    }
    const char *path = FUNCTION_TOKEN_FILE;
    if (lua_getfield(L, -1, "token_file") == LUA_TSTRING)
        path = lua_tostring(L, -1);
    lua_pushstring(L, path);
    lua_setfield(L, -3, "token_from");
    if (vm_push_file(L, path, 4096) != 0)
        lua_pushnil(L); /* no token file: faas.lua says where it looked */
    lua_setfield(L, -3, "token");
    lua_pop(L, 1);
}

/* Adds stdin's text (the credentials to seal) to the options table on top. */
static void seal_extra(lua_State *L)
{
    if (vm_push_stream(L, stdin, FUNCTION_MAX_INPUT) != 0)
        lua_pushnil(L);
    lua_setfield(L, -2, "stdin");
}

int cmd_function(int argc, char **argv)
{
    static const char *const allowed[] = { "listen", "max_body", "max_connections",
                                           "header_timeout", "body_timeout", "max_inflight",
                                           "drain_timeout", "token_file", "seal_key_file", NULL };
    static const char *const seal_allowed[] = { "seal_key_file", NULL };
    if (argc >= 2 && strcmp(argv[1], "seal") == 0)
        return run_entry(argc, argv, 2, "function seal",
                         "local opts = ... return require('faas').seal_main(opts, sys)",
                         seal_allowed, function_usage, seal_extra);
    return run_entry(argc, argv, 1, "function",
                     "local opts = ... return require('faas').main(opts, sys)", allowed,
                     function_usage, function_extra);
}
