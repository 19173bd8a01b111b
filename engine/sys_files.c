/* sys_files.c - sys.read_tree: reads a directory of static files (the web
 * console's build) into memory, for the daemon to serve.
 *   sys.read_tree(dir [, max_bytes]) -> { ["index.html"] = text, ["assets/app.js"] = text, ... }
 *                                     | nil, err
 * Dotfiles are skipped, at most 4 levels deep, and the whole tree must fit
 * in max_bytes (default 32 MiB). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "sys.h"
#include "vm.h"

/* Adds the files under dir (named rel so far) to the table on top; returns 0,
 * or -1 with an error message pushed. total counts the bytes read. */
static int read_dir(lua_State *L, const char *dir, const char *rel, int depth, size_t *total,
                    size_t max)
{
    DIR *d = opendir(dir);
    if (!d) {
        lua_pushfstring(L, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096], name[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(name, sizeof(name), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 4)
                rc = read_dir(L, path, name, depth + 1, total, max);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if ((size_t)st.st_size > max - *total) {
            lua_pushfstring(L, "%s: the files are larger than %d bytes in all", dir, (int)max);
            rc = -1;
            break;
        }
        if (vm_push_file(L, path, max - *total) != 0) {
            lua_pushfstring(L, "cannot read %s", path);
            rc = -1;
            break;
        }
        *total += lua_rawlen(L, -1);
        lua_setfield(L, -2, name);
    }
    closedir(d);
    return rc;
}

/* sys.read_tree(dir [, max_bytes]) -> files | nil, err */
static int l_read_tree(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 32 * 1024 * 1024);
    luaL_argcheck(L, max > 0, 2, "must be positive");
    size_t total = 0;
    lua_settop(L, 2);
    lua_newtable(L);
    if (read_dir(L, dir, "", 0, &total, (size_t)max) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

void sys_add_files(struct vm *vm, lua_State *L)
{
    (void)vm;
    lua_pushcfunction(L, l_read_tree);
    lua_setfield(L, -2, "read_tree");
}
