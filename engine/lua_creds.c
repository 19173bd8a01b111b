/* lua_creds.c - the `creds` module: what Lua needs to find registry
 * credentials the way docker does, without opening the sandbox.
 *   creds.docker_config() -> text of $DOCKER_CONFIG/config.json (else
 *                            ~/.docker/config.json), or nil
 *   creds.helper(name, server) -> stdout of `docker-credential-NAME get` fed
 *                            server on stdin, or nil, err
 *   creds.env(prefix) -> { NAME = value } for every environment variable
 *                            PREFIX<NAME> (a registry kind's credential fields:
 *                            REPLICA_FROM_CRED_SECRET_ACCESS_KEY, ...), NAME
 *                            in lower case
 * The helper runs synchronously (it is only used while starting a run), with
 * a 10 s limit. Secrets are returned to Lua only, never logged. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "vm.h"

#define HELPER_TIMEOUT_MS 10000
#define MAX_OUTPUT (1 << 20)

static int l_docker_config(lua_State *L)
{
    char path[4096];
    const char *dir = getenv("DOCKER_CONFIG");
    const char *home = getenv("HOME");
    if (dir && *dir)
        snprintf(path, sizeof(path), "%s/config.json", dir);
    else if (home && *home)
        snprintf(path, sizeof(path), "%s/.docker/config.json", home);
    else
        return 0;
    if (vm_push_file(L, path, MAX_OUTPUT) != 0)
        lua_pushnil(L);
    return 1;
}

/* Checks a helper name: [A-Za-z0-9._-]+ so it cannot name another program. */
static int valid_helper(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!(*s == '.' || *s == '_' || *s == '-' || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static int l_helper(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t slen;
    const char *server = luaL_checklstring(L, 2, &slen);
    if (!valid_helper(name))
        return luaL_error(L, "creds.helper: invalid helper name '%s'", name);
    char prog[256];
    snprintf(prog, sizeof(prog), "docker-credential-%s", name);
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        goto fail;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        goto fail;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 2);
        execlp(prog, prog, "get", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (write(in[1], server, slen) < 0) { /* the helper may not read it all */
    }
    close(in[1]);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t total = 0;
    struct pollfd p = { out[0], POLLIN, 0 };
    int timed_out = 0;
    for (;;) {
        int r = poll(&p, 1, HELPER_TIMEOUT_MS);
        if (r == 0) {
            timed_out = 1;
            break;
        }
        if (r < 0 && errno == EINTR)
            continue;
        char tmp[4096];
        ssize_t n = r > 0 ? read(out[0], tmp, sizeof(tmp)) : -1;
        if (n <= 0)
            break;
        if (total < MAX_OUTPUT)
            luaL_addlstring(&b, tmp, (size_t)n);
        total += (size_t)n;
    }
    close(out[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    luaL_pushresult(&b);
    if (timed_out || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s %s", prog,
                        timed_out ? "timed out"
                        : WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "is not installed"
                                                                  : "failed");
        return 2;
    }
    return 1;
fail:
    lua_pushnil(L);
    lua_pushfstring(L, "cannot run %s", prog);
    return 2;
}

extern char **environ;

/* creds.env(prefix) -> { name = value } */
static int l_env(lua_State *L)
{
    size_t plen;
    const char *prefix = luaL_checklstring(L, 1, &plen);
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || strncmp(*e, prefix, plen) != 0 || eq - *e <= (ptrdiff_t)plen)
            continue;
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (const char *p = *e + plen; p < eq; p++)
            luaL_addchar(&b, (char)((*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p));
        luaL_pushresult(&b);
        lua_pushstring(L, eq + 1);
        lua_settable(L, -3);
    }
    return 1;
}

void inject_creds_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_env);
    lua_setfield(L, -2, "env");
    lua_pushcfunction(L, l_docker_config);
    lua_setfield(L, -2, "docker_config");
    lua_pushcfunction(L, l_helper);
    lua_setfield(L, -2, "helper");
    lua_setfield(L, -2, "creds");
}
