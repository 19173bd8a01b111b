/* main.c - the replica command: dispatches to subcommands. */
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

#ifndef REPLICA_VERSION
#define REPLICA_VERSION "0.1.0-dev"
#endif
#ifndef REPLICA_SCRIPTS_DIR
#define REPLICA_SCRIPTS_DIR "/usr/share/replica/scripts"
#endif

int engine_open(struct engine *e, const struct vm_opts *vo, const struct http_client_opts *ho,
                char *err, size_t errlen)
{
    memset(e, 0, sizeof(*e));
    e->base = event_base_new();
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
    return 0;
}

void engine_close(struct engine *e)
{
    vm_free(e->vm); /* before the client: pending requests are freed with it */
    http_client_free(e->http);
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

int cli_scripts_dir(char *out, size_t n, const char *sub)
{
    const char *env = getenv("REPLICA_SCRIPTS");
    if (env && *env) {
        snprintf(out, n, "%s%s%s", env, *sub ? "/" : "", sub);
        return is_dir(out) ? 0 : -1;
    }
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, n, "%s/scripts%s%s", exe, *sub ? "/" : "", sub);
            if (is_dir(out))
                return 0;
        }
    }
    snprintf(out, n, "%s%s%s", REPLICA_SCRIPTS_DIR, *sub ? "/" : "", sub);
    return is_dir(out) ? 0 : -1;
}

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
               "  script FILE.lua [ARGS]   run a Lua script on the engine\n"
               "  version                  print the version\n"
               "\nrun 'replica COMMAND --help' for a command's options\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "replica: cannot initialise libcurl\n");
        return 1;
    }
    int rc;
    if (strcmp(argv[1], "script") == 0) {
        rc = cmd_script(argc - 1, argv + 1);
    } else if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("replica %s (%s, Lua %s)\n", REPLICA_VERSION, curl_version(), LUA_RELEASE + 4);
        rc = 0;
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
