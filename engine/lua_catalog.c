/* lua_catalog.c - the `catalog` module (trusted code only): finds stage
 * functions, process templates and registry kinds under the script roots,
 * so a new registry kind is a matter of dropping files in.
 *   catalog.list("stages") -> { {name=, path=}, ... } sorted by name
 *   catalog.source("stages", name) -> the file's text
 * A file is looked up in each root in order (the first root wins). Loading
 * one is a sandbox's job (box:compile, lua_sandbox.c): its code never runs
 * in a trusted context. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "vm.h"

/* Checks a stage or template name: segments of [A-Za-z0-9_-] joined by '/'. */
static int valid_name(const char *s)
{
    if (!*s || *s == '/')
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '/') {
            if (p[1] == '/' || p[1] == '\0')
                return 0;
        } else if (!(*p == '_' || *p == '-' || (*p >= 'a' && *p <= 'z') ||
                     (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            return 0;
        }
    }
    return 1;
}

/* Returns the checked kind argument ("stages", "templates" or "kinds"). */
const char *catalog_check_kind(lua_State *L, int idx)
{
    static const char *const kinds[] = { "stages", "templates", "kinds", NULL };
    return kinds[luaL_checkoption(L, idx, NULL, kinds)];
}

int catalog_find(lua_State *L, const char *kind, const char *name)
{
    struct vm *vm = vm_of(L);
    if (!valid_name(name)) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid %s name '%s'", kind, name);
        return 0;
    }
    for (int i = 0; i < vm->n_roots; i++) {
        lua_pushfstring(L, "%s/%s/%s.lua", vm->roots[i], kind, name);
        struct stat st;
        if (stat(lua_tostring(L, -1), &st) == 0 && S_ISREG(st.st_mode))
            return 1;
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_pushfstring(L, "no %s named '%s'",
                    strcmp(kind, "stages") == 0   ? "stage"
                    : strcmp(kind, "kinds") == 0 ? "registry kind"
                                                 : "template",
                    name);
    return 0;
}

/* catalog.source(kind, name) -> text of the file | nil, err */
static int l_source(lua_State *L)
{
    const char *kind = catalog_check_kind(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (!catalog_find(L, kind, name))
        return 2;
    if (vm_push_file(L, lua_tostring(L, -1), (size_t)-1) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s", lua_tostring(L, -2));
        return 2;
    }
    return 1;
}

/* Adds every *.lua under dir (prefix names the path so far) to the table on
 * top as name -> path, keeping names already present (earlier roots win). */
static void scan(lua_State *L, const char *dir, const char *prefix, int depth)
{
    DIR *d = opendir(dir);
    if (!d || depth > 4) {
        if (d)
            closedir(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096], name[512];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "/" : "", e->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            scan(L, path, name, depth + 1);
            continue;
        }
        size_t n = strlen(name);
        if (n < 5 || strcmp(name + n - 4, ".lua") != 0)
            continue;
        name[n - 4] = '\0';
        if (!valid_name(name))
            continue;
        if (lua_getfield(L, -1, name) == LUA_TNIL) {
            lua_pushstring(L, path);
            lua_setfield(L, -3, name);
        }
        lua_pop(L, 1);
    }
    closedir(d);
}

/* catalog.list(kind) -> { {name=, path=}, ... } sorted by name */
static int l_list(lua_State *L)
{
    struct vm *vm = vm_of(L);
    const char *kind = catalog_check_kind(L, 1);
    lua_newtable(L);
    for (int i = 0; i < vm->n_roots; i++) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s", vm->roots[i], kind);
        scan(L, dir, "", 0);
    }
    /* name -> path into a sorted list */
    int map = lua_gettop(L);
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, map)) {
        lua_createtable(L, 0, 2);
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "name");
        lua_insert(L, -2);
        lua_setfield(L, -2, "path");
        lua_rawseti(L, list, ++n);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, list);
    luaL_loadstring(L, "local a, b = ... return a.name < b.name");
    lua_call(L, 2, 0);
    lua_settop(L, list);
    return 1;
}

void inject_catalog_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, l_list);
    lua_setfield(L, -2, "list");
    lua_pushcfunction(L, l_source);
    lua_setfield(L, -2, "source");
    lua_setfield(L, -2, "catalog");
}
