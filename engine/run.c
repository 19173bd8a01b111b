/* run.c - `replica run`: a one-shot replication. C parses the command line
 * into an options table; the replication itself is Lua (scripts/lib/
 * replicate.lua), which runs the chosen process template per repository. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "cli.h"
#include "sys.h"
#include "vm.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: replica run --from URL --to URL [options]\n"
            "selection (doublestar globs; repeatable):\n"
            "  --repo GLOB  --exclude-repo GLOB  --tag GLOB  --exclude-tag GLOB\n"
            "naming:\n"
            "  --dest-namespace NS   put repositories under NS on the target\n"
            "  --flatten N           levels replaced by NS: 0 none (default), N, -1 all but the name\n"
            "behaviour:\n"
            "  --template NAME       process template (default: distribution)\n"
            "  --jobs N              repositories replicated at once (default 8)\n"
            "  --no-override         keep target tags that point elsewhere, and report them\n"
            "  --platform OS/ARCH    copy only these platforms of multi-arch images (repeatable)\n"
            "  --bandwidth BYTES     per-repository rate limit in bytes/s (e.g. 10M): a task\n"
            "                        then copies one blob at a time at most at this rate\n"
            "  --chunk-size BYTES    upload blobs larger than this in PATCH chunks, resuming\n"
            "                        from the target's reported range (e.g. 10M)\n"
            "  --stall-timeout SECONDS  a request whose bytes stop moving this long fails\n"
            "                        with \"timeout\" and is retried (default 60)\n"
            "  --dry-run             print what would be copied\n"
            "  --json                print the full result, with per-stage results, as JSON\n"
            "credentials and TLS (also: docker config.json and credential helpers,\n"
            "REPLICA_FROM_CREDS / REPLICA_TO_CREDS as USER:PASSWORD):\n"
            "  --from-creds-file FILE  --to-creds-file FILE   USER:PASSWORD read from FILE\n"
            "                        (- reads it from stdin)\n"
            "  --from-creds USER:PASSWORD  --to-creds USER:PASSWORD   (visible in ps: a warning)\n"
            "  --from-ca FILE  --to-ca FILE            trust an extra CA\n"
            "  --from-cert FILE  --to-cert FILE        present this client certificate (PEM; mTLS)\n"
            "  --from-key FILE  --to-key FILE          its private key (PEM; default: in the cert file)\n"
            "  --from-insecure  --to-insecure          do not verify TLS (explicit opt-out; a warning)\n"
            "registry kinds (docs/registry-kinds.md; default: detected from the host):\n"
            "  --from-kind KIND  --to-kind KIND        distribution, harbor, ...\n"
            "  --from-cred NAME=VALUE  --to-cred NAME=VALUE\n"
            "                        a credential field of the kind (repeatable; also\n"
            "                        REPLICA_FROM_CRED_<NAME> / REPLICA_TO_CRED_<NAME>)\n"
            "  --from-option NAME=VALUE  --to-option NAME=VALUE   an option of the kind\n"
            "  --label NAME          copy only artifacts with this label (repeatable: all of\n"
            "                        them); the source's kind applies it (Harbor)\n"
            "executor (docs/faas.md):\n"
            "  --executor local|faas     run tasks here (default) or send each to a function\n"
            "  --gateway URL             the function's URL (e.g. http://gateway:8080/function/replica)\n"
            "  --faas-concurrency N      tasks in flight at the gateway (default: --jobs)\n"
            "  --faas-retries N          attempts after the first for a task the platform lost\n"
            "                            (connection error, 429, 502, 503, 504; default 4)\n"
            "  --faas-timeout SECONDS    longest a task may take at the function (default 3600)\n"
            "  --seal-key-file FILE      the key shared with the functions (credentials are\n"
            "                            sent sealed under it)\n"
            "  --function-token-file FILE  the functions' bearer token (or REPLICA_FUNCTION_TOKEN)\n"
            "                            (the token and key also send a template's remote stages)\n"
            "  --faas-mode, --faas-lease, --callback-url  are replica serve's: a run holds each\n"
            "                            request open (sync mode)\n"
            "engine:\n%s",
            cli_common_usage());
}

/* Options that take a value and are repeatable: appended to a list field. */
static const char *const list_opts[][2] = {
    { "--repo", "repos" },        { "--exclude-repo", "exclude_repos" },
    { "--tag", "tags" },          { "--exclude-tag", "exclude_tags" },
    { "--platform", "platforms" },
    { "--from-cred", "from_cred" }, { "--to-cred", "to_cred" },
    { "--from-option", "from_option" }, { "--to-option", "to_option" },
    { "--label", "labels" }, { NULL, NULL },
};

/* Options that take one value: stored as a string field. */
static const char *const value_opts[][2] = {
    { "--from", "from" },         { "--to", "to" },
    { "--dest-namespace", "dest_namespace" }, { "--flatten", "flatten" },
    { "--template", "template" }, { "--jobs", "jobs" },
    { "--from-creds", "from_creds" }, { "--to-creds", "to_creds" },
    { "--from-creds-file", "from_creds_file" }, { "--to-creds-file", "to_creds_file" },
    { "--from-ca", "from_ca" },   { "--to-ca", "to_ca" },
    { "--from-cert", "from_cert" }, { "--to-cert", "to_cert" },
    { "--from-key", "from_key" }, { "--to-key", "to_key" },
    { "--chunk-size", "chunk_size" }, { "--bandwidth", "bandwidth" },
    { "--stall-timeout", "stall_timeout" },
    { "--from-kind", "from_kind" }, { "--to-kind", "to_kind" },
    { "--executor", "executor" }, { "--gateway", "gateway" },
    { "--faas-concurrency", "faas_concurrency" }, { "--faas-retries", "faas_retries" },
    { "--faas-timeout", "faas_timeout" }, { "--seal-key-file", "seal_key_file" },
    { "--function-token-file", "function_token_file" },
    { "--faas-mode", "faas_mode" }, { "--faas-lease", "faas_lease" }, { "--callback-url", "callback_url" },
    { NULL, NULL },
};

/* Flags: stored as true. */
static const char *const flag_opts[][2] = {
    { "--no-override", "no_override" }, { "--dry-run", "dry_run" }, { "--json", "json" },
    { "--from-insecure", "from_insecure" }, { "--to-insecure", "to_insecure" },
    { NULL, NULL },
};

/* Looks opt up in a table of {option, field} (NULL: none); returns the
 * field or NULL. */
static const char *field_of(const char *const (*tab)[2], const char *opt)
{
    for (; tab && (*tab)[0]; tab++)
        if (strcmp((*tab)[0], opt) == 0)
            return (*tab)[1];
    return NULL;
}

/* Appends val to the list field of the table at idx. */
static void append(lua_State *L, int idx, const char *field, const char *val)
{
    if (lua_getfield(L, idx, field) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, idx, field);
    }
    lua_pushstring(L, val);
    lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
    lua_pop(L, 1);
}

/* Sets field from an environment variable when the command line did not. */
static void from_env(lua_State *L, int idx, const char *field, const char *var)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return;
    if (lua_getfield(L, idx, field) == LUA_TNIL) {
        lua_pushstring(L, v);
        lua_setfield(L, idx, field);
    }
    lua_pop(L, 1);
}

/* --from-creds-file and --to-creds-file: each file's USER:PASSWORD (its first
 * line) becomes from_creds / to_creds; "-" reads it from stdin (not for the
 * REPL, whose stdin is its commands). Prints why and returns -1 when a file
 * cannot be read, or when a side has both the flag and the file. */
static int creds_files(lua_State *L, int opts, const struct run_cmd *cmd)
{
    static const char *const sides[][4] = {
        { "from_creds_file", "from_creds", "--from-creds-file", "--from-creds" },
        { "to_creds_file", "to_creds", "--to-creds-file", "--to-creds" } };
    int stdin_used = 0;
    for (int k = 0; k < 2; k++) {
        if (lua_getfield(L, opts, sides[k][0]) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        const char *path = lua_tostring(L, -1);
        int have = lua_getfield(L, opts, sides[k][1]) != LUA_TNIL;
        lua_pop(L, 1);
        if (have) {
            fprintf(stderr, "replica %s: give %s or %s, not both\n", cmd->name, sides[k][3], sides[k][2]);
            return -1;
        }
        int rc;
        if (strcmp(path, "-") == 0) {
            if (strcmp(cmd->name, "repl") == 0 || stdin_used++) {
                fprintf(stderr, "replica %s: %s -: %s\n", cmd->name, sides[k][2],
                        stdin_used > 1 ? "stdin gives one side's credentials only: use a file for the other"
                                       : "the REPL reads its commands from stdin: give a file");
                return -1;
            }
            rc = vm_push_stream(L, stdin, 4096);
        } else {
            rc = vm_push_file(L, path, 4096);
        }
        if (rc != 0) {
            fprintf(stderr, "replica %s: %s %s: cannot read it (at most 4 KiB)\n", cmd->name, sides[k][2], path);
            return -1;
        }
        size_t n;
        const char *text = lua_tolstring(L, -1, &n);
        size_t line = strcspn(text, "\r\n");
        lua_pushlstring(L, text, line);
        lua_setfield(L, opts, sides[k][1]);
        lua_pop(L, 2);
    }
    return 0;
}

/* --from-key and --to-key name the key of a client certificate: prints why
 * and returns -1 when one comes without its --from-cert / --to-cert. The
 * files are read where the side's requests go out (for --executor faas, at
 * the functions), so they are not opened here. */
static int tls_files(lua_State *L, int opts, const struct run_cmd *cmd)
{
    static const char *const sides[][2] = { { "from_key", "from_cert" }, { "to_key", "to_cert" } };
    for (int k = 0; k < 2; k++) {
        int key = lua_getfield(L, opts, sides[k][0]) != LUA_TNIL;
        int cert = lua_getfield(L, opts, sides[k][1]) != LUA_TNIL;
        lua_pop(L, 2);
        if (key && !cert) {
            fprintf(stderr, "replica %s: --%s-key needs --%s-cert (the client certificate it belongs to)\n",
                    cmd->name, k ? "to" : "from", k ? "to" : "from");
            return -1;
        }
    }
    return 0;
}

/* The field of a flag option of cmd (its own, then run's), or NULL. */
static const char *flag_of(const struct run_cmd *cmd, const char *opt)
{
    const char *f = field_of(cmd->flags, opt);
    return f ? f : field_of(flag_opts, opt);
}

/* The field of a single-value option of cmd (its own, then run's), or NULL. */
static const char *value_of(const struct run_cmd *cmd, const char *opt)
{
    const char *f = field_of(cmd->values, opt);
    return f ? f : field_of(value_opts, opt);
}

int run_command(int argc, char **argv, const struct run_cmd *cmd)
{
    struct cli_common c;
    cli_common_init(&c);
    c.vo.print_stdout = 1;
    /* Parse into a plain C list first: the VM needs the common options. */
    int first = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            cmd->usage(stdout);
            return 0;
        }
    }
    for (int i = first; i < argc; i++) {
        if (flag_of(cmd, argv[i]))
            continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "replica %s: %s needs a value\n", cmd->name, argv[i]);
            return 2;
        }
        if (!field_of(list_opts, argv[i]) && !value_of(cmd, argv[i]) &&
            cli_common_take(&c, cmd->name, argv[i], argv[i + 1], cmd->usage) != 0)
            return 2;
        i++;
    }
    cli_common_finish(&c);
    if (c.ho.max_total == 0)
        c.ho.max_total = 256;
    if (cmd->prepare)
        cmd->prepare(&c);

    struct engine eng;
    char name[64];
    snprintf(name, sizeof(name), "=replica %s", cmd->name);
    if (cli_open_entry(&eng, &c, cmd->entry, name) != 0)
        return 1;
    lua_State *L = eng.vm->L;
    sys_install(eng.vm, L); /* the keyring, for --executor faas */
    if (cmd->opened)
        cmd->opened(&eng, L);
    lua_newtable(L);
    int opts = lua_gettop(L);
    for (int i = first; i < argc; i++) {
        const char *f;
        if ((f = flag_of(cmd, argv[i]))) {
            lua_pushboolean(L, 1);
            lua_setfield(L, opts, f);
        } else if ((f = field_of(list_opts, argv[i]))) {
            append(L, opts, f, argv[++i]);
        } else if ((f = value_of(cmd, argv[i]))) {
            lua_pushstring(L, argv[++i]);
            lua_setfield(L, opts, f);
        } else {
            i++; /* a common option, already taken */
        }
    }
    if (creds_files(L, opts, cmd) != 0 || tls_files(L, opts, cmd) != 0) {
        engine_close(&eng);
        return 2;
    }
    for (int i = first; i < argc; i++) { /* replicate.lua warns: ps shows them */
        if (strcmp(argv[i], "--from-creds") == 0 || strcmp(argv[i], "--to-creds") == 0) {
            lua_pushboolean(L, 1);
            lua_setfield(L, opts, argv[i][2] == 'f' ? "from_creds_argv" : "to_creds_argv");
        }
    }
    from_env(L, opts, "from_creds", "REPLICA_FROM_CREDS");
    from_env(L, opts, "to_creds", "REPLICA_TO_CREDS");
    from_env(L, opts, "function_token", "REPLICA_FUNCTION_TOKEN");
    /* The functions' token: the environment's, else --function-token-file's. */
    int have_token = lua_getfield(L, opts, "function_token") != LUA_TNIL;
    lua_pop(L, 1);
    if (!have_token) {
        if (lua_getfield(L, opts, "function_token_file") == LUA_TSTRING) {
            if (vm_push_file(L, lua_tostring(L, -1), 4096) != 0)
                lua_pushboolean(L, 0); /* replicate.lua names the file it could not read */
            lua_setfield(L, opts, "function_token");
        }
        lua_pop(L, 1);
    }
    lua_pushboolean(L, isatty(STDERR_FILENO));
    lua_setfield(L, opts, "tty");
    if (c.run_id[0]) { /* what its log lines carry as replica_execution */
        lua_pushstring(L, c.run_id);
        lua_setfield(L, opts, "run_id");
    }
    int rc = cli_run_main(&eng, 1, cmd->name);
    engine_close(&eng);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    static const struct run_cmd run = { "run", "local opts = ... return require('replicate').main(opts, sys)",
                                        usage, NULL, NULL, cli_new_run_id, NULL };
    return run_command(argc, argv, &run);
}

/* `replica check [--scripts DIR]...`: validates every stage and template. */
int cmd_check(int argc, char **argv)
{
    struct cli_common c;
    cli_common_init(&c);
    c.vo.print_stdout = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: replica check [options]\n%s", cli_common_usage());
            return 0;
        }
        if (i + 1 >= argc || cli_common_opt(&c, argv[i], argv[i + 1]) <= 0) {
            fprintf(stderr, "replica check: bad option %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    cli_common_finish(&c);
    struct engine eng;
    if (cli_open_entry(&eng, &c, "return require('check').main({})", "=replica check") != 0)
        return 1;
    int rc = cli_run_main(&eng, 0, "check");
    engine_close(&eng);
    return rc;
}
