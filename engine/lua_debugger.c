/* lua_debugger.c - sys.dbg, the debugger of stage code for `replica repl`
 * (trusted code only), and the line hook behind it.
 *   dbg.on()                   script tasks spawned from now on get line events
 *   dbg.breaks{ {file=, line=, id=}, ... }  the line breakpoints (file matches a
 *                              chunk's path or its tail: "pull.lua",
 *                              "distribution/pull.lua")
 *   dbg.mute(on)               no breakpoint pauses while on (:finish)
 *   dbg.info(id)               -> {id, task, source, line, frames = {...}} of a
 *                              pause, or nil when it is over
 *   dbg.resume(id, mode)       "continue", "next" (over), "step" (into)
 *   dbg.env(id, level, fallback) -> a table reading and writing the locals
 *                              and upvalues of that frame, then fallback
 *   dbg.paused()               -> the ids of the pauses in effect
 * A pause is a task yielded from its line hook, waiting on its dbg_op; the
 * REPL's controller hears of it as a "paused" event (lua_repl.c). The task's
 * other work and every other task go on. Cancelling a paused task resumes
 * it, and its next wait returns "cancelled". */
#include "repl.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "sched.h"

struct bp {
    char *file;
    int line;
    long id;                 /* the number the REPL shows (:breaks) */
};

/* The names of a pause's innermost locals, taken in the hook: once the hook
 * yields, the frame's pc is one instruction back, where a local that starts
 * at the paused line (a loop's variable) is not yet in scope by name,
 * though its value is in its slot. */
struct snap {
    long id;
    int n;
    char **names;
    struct snap *next;
};

static struct {
    struct snap *snaps;
    struct bp *bps;
    int nbps;
    int muted;
    long next_id;
} D;

/* The number of frames on L's stack. */
static int depth_of(lua_State *L)
{
    lua_Debug ar;
    int n = 0;
    while (lua_getstack(L, n, &ar))
        n++;
    return n;
}

/* Whether a chunk's source names a stage function: step and next pause only
 * there, not in the runner or the libraries a stage calls. */
static int in_stage(const char *source)
{
    return source[0] == '@' && (strncmp(source + 1, "stages/", 7) == 0 || strstr(source, "/stages/"));
}

/* Whether breakpoint file f names the chunk source: equal to its path, or a
 * tail of it that starts after a '/'. */
static int file_matches(const char *f, const char *source)
{
    if (source[0] != '@')
        return 0;
    const char *path = source + 1;
    size_t n = strlen(path), m = strlen(f);
    if (m > n)
        return 0;
    return strcmp(path + n - m, f) == 0 && (m == n || path[n - m - 1] == '/');
}

/* Finds the live task paused as id, or NULL. */
static struct task *paused_task(struct vm *vm, long id)
{
    for (struct task *t = vm->all; t; t = t->all_next)
        if (id > 0 && t->dbg_pause == id && t->state == TASK_WAITING)
            return t;
    return NULL;
}

/* Records the names of the locals of frame 0 of L (in the hook, where the
 * pc is right) for pause id. Best effort: without memory, names are read
 * from the frame later. */
static void snap_take(lua_State *L, long id)
{
    lua_Debug ar;
    struct snap *sn = calloc(1, sizeof(*sn));
    if (!sn || !lua_getstack(L, 0, &ar)) {
        free(sn);
        return;
    }
    const char *name;
    int cap = 0;
    for (int i = 1; (name = lua_getlocal(L, &ar, i)); i++) {
        lua_pop(L, 1);
        if (i > cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(sn->names, (size_t)cap * sizeof(char *));
            if (!nn)
                break;
            sn->names = nn;
        }
        if (!(sn->names[i - 1] = strdup(name)))
            break;
        sn->n = i;
    }
    sn->id = id;
    sn->next = D.snaps;
    D.snaps = sn;
}

/* The snapshot of pause id, or NULL. */
static struct snap *snap_of(long id)
{
    for (struct snap *sn = D.snaps; sn; sn = sn->next)
        if (sn->id == id)
            return sn;
    return NULL;
}

/* Frees the snapshot of pause id. */
static void snap_drop(long id)
{
    for (struct snap **pp = &D.snaps; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct snap *sn = *pp;
            *pp = sn->next;
            for (int i = 0; i < sn->n; i++)
                free(sn->names[i]);
            free(sn->names);
            free(sn);
            return;
        }
    }
}

/* A paused task was cancelled: the pause is over (the scheduler wakes it). */
static void pause_cancel(struct task_op *op)
{
    struct task *t = (struct task *)((char *)op - offsetof(struct task, dbg_op));
    snap_drop(t->dbg_pause);
    t->dbg_pause = 0;
}

void dbg_line(lua_State *L, struct task *t, lua_Debug *ar)
{
    struct vm *vm = t->vm;
    if (!vm->debugging || !t->sandboxed || t->kill != KILL_NONE || t->cancelled)
        return;
    const char *why = NULL;
    char note[64];
    int got = 0;
    if (t->dbg_step == DBG_STEP_INTO || (t->dbg_step == DBG_STEP_OVER && L == t->dbg_L)) {
        got = lua_getinfo(L, "S", ar);
        if (got && in_stage(ar->source) &&
            (t->dbg_step == DBG_STEP_INTO || depth_of(L) <= t->dbg_depth))
            why = t->dbg_step == DBG_STEP_INTO ? "step" : "next";
    }
    for (int i = 0; !why && !D.muted && i < D.nbps; i++) {
        if (D.bps[i].line != ar->currentline)
            continue;
        if (!got && !(got = lua_getinfo(L, "S", ar)))
            break;
        if (file_matches(D.bps[i].file, ar->source)) {
            snprintf(note, sizeof(note), "breakpoint %ld", D.bps[i].id);
            why = note;
        }
    }
    if (!why || !sched_can_pause(L, t))
        return; /* inside a C function's callback a task cannot pause */
    t->dbg_step = 0;
    t->dbg_L = L;
    t->dbg_line = ar->currentline;
    t->dbg_pause = ++D.next_id;
    snap_take(L, t->dbg_pause);
    t->dbg_op.cancel = pause_cancel;
    t->dbg_op.cancelled = 0;
    t->op = &t->dbg_op;
    if (L != t->co)
        t->fair_yield = 1; /* the coroutine's resumer passes it up (lua_coroutine.c) */
    repl_post(vm, "paused", t->dbg_pause, why);
    lua_yield(L, 0);
}

int dbg_lua_break(lua_State *L)
{
    struct vm *vm = vm_of(L);
    struct task *t = vm->current;
    if (vm->debugging && t && t->sandboxed)
        t->dbg_step = DBG_STEP_INTO;
    return 0;
}

static int l_on(lua_State *L)
{
    vm_of(L)->debugging = 1;
    return 0;
}

static int l_breaks(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    struct bp *bps = calloc((size_t)n + 1, sizeof(*bps));
    if (!bps)
        return luaL_error(L, "dbg.breaks: out of memory");
    int k = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_getfield(L, -1, "file");
            lua_getfield(L, -2, "line");
            lua_getfield(L, -3, "id");
            if (lua_type(L, -3) == LUA_TSTRING && lua_isinteger(L, -2)) {
                bps[k].file = strdup(lua_tostring(L, -3));
                bps[k].line = (int)lua_tointeger(L, -2);
                bps[k].id = lua_isinteger(L, -1) ? (long)lua_tointeger(L, -1) : k + 1;
                if (bps[k].file)
                    k++;
            }
            lua_pop(L, 3);
        }
        lua_pop(L, 1);
    }
    for (int i = 0; i < D.nbps; i++)
        free(D.bps[i].file);
    free(D.bps);
    D.bps = bps;
    D.nbps = k;
    return 0;
}

static int l_mute(lua_State *L)
{
    D.muted = lua_toboolean(L, 1);
    return 0;
}

/* Pushes {source, short_src, line, name, what} of frame ar of thread co. */
static void push_frame(lua_State *L, lua_State *co, lua_Debug *ar, int level)
{
    lua_getinfo(co, "Sln", ar);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, ar->source);
    lua_setfield(L, -2, "source");
    lua_pushstring(L, ar->short_src);
    lua_setfield(L, -2, "short_src");
    lua_pushinteger(L, ar->currentline);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, ar->linedefined);
    lua_setfield(L, -2, "linedefined");
    lua_pushstring(L, ar->name ? ar->name : "");
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ar->what);
    lua_setfield(L, -2, "what");
    lua_pushinteger(L, level);
    lua_setfield(L, -2, "level");
}

static int l_info(lua_State *L)
{
    struct vm *vm = vm_of(L);
    struct task *t = paused_task(vm, (long)luaL_checkinteger(L, 1));
    if (!t)
        return 0;
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, t->dbg_pause);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, t->name);
    lua_setfield(L, -2, "task");
    lua_pushinteger(L, t->dbg_line);
    lua_setfield(L, -2, "line");
    lua_newtable(L);
    lua_Debug ar;
    for (int level = 0; level < 64 && lua_getstack(t->dbg_L, level, &ar); level++) {
        push_frame(L, t->dbg_L, &ar, level);
        if (level == 0) {
            /* a hook that yields leaves the frame's pc one instruction back:
             * its line is the one the hook saw */
            lua_pushinteger(L, t->dbg_line);
            lua_setfield(L, -2, "line");
            lua_getfield(L, -1, "source");
            lua_setfield(L, -4, "source");
        }
        lua_rawseti(L, -2, level + 1);
    }
    lua_setfield(L, -2, "frames");
    return 1;
}

static int l_resume(lua_State *L)
{
    struct vm *vm = vm_of(L);
    struct task *t = paused_task(vm, (long)luaL_checkinteger(L, 1));
    static const char *const modes[] = { "continue", "next", "step", NULL };
    int mode = luaL_checkoption(L, 2, "continue", modes);
    if (!t)
        return 0;
    t->dbg_step = mode == 1 ? DBG_STEP_OVER : mode == 2 ? DBG_STEP_INTO : 0;
    t->dbg_depth = depth_of(t->dbg_L);
    snap_drop(t->dbg_pause);
    t->dbg_pause = 0;
    task_wake(t);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_paused(lua_State *L)
{
    struct vm *vm = vm_of(L);
    lua_newtable(L);
    int n = 0;
    for (struct task *t = vm->all; t; t = t->all_next)
        if (t->dbg_pause && t->state == TASK_WAITING) {
            lua_pushinteger(L, t->dbg_pause);
            lua_rawseti(L, -2, ++n);
        }
    return 1;
}

/* The frame of the env's pause (upvalues 1 and 2: pause id, level) in ar;
 * returns its thread, or raises when the pause is over. */
static lua_State *env_frame(lua_State *L, lua_Debug *ar, struct snap **sn)
{
    long id = (long)lua_tointeger(L, lua_upvalueindex(1));
    int level = (int)lua_tointeger(L, lua_upvalueindex(2));
    struct task *t = paused_task(vm_of(L), id);
    if (!t)
        luaL_error(L, "the pause is over: its locals are gone");
    if (!lua_getstack(t->dbg_L, level, ar))
        luaL_error(L, "no such frame");
    *sn = level == 0 ? snap_of(id) : NULL;
    return t->dbg_L;
}

/* The name of local i of frame ar of co (sn: the frame's snapshot, whose
 * names win), or NULL past the last; leaves nothing on co's stack. */
static const char *local_name(lua_State *co, lua_Debug *ar, struct snap *sn, int i)
{
    if (sn)
        return i <= sn->n ? sn->names[i - 1] : NULL;
    const char *n = lua_getlocal(co, ar, i);
    if (n)
        lua_pop(co, 1);
    return n;
}

/* Finds the local named name in frame ar of co (the innermost of that name
 * in scope); returns its index or 0. */
static int find_local(lua_State *co, lua_Debug *ar, struct snap *sn, const char *name)
{
    int found = 0;
    const char *n;
    for (int i = 1; (n = local_name(co, ar, sn, i)); i++)
        if (strcmp(n, name) == 0)
            found = i;
    return found;
}

/* Finds the upvalue named name of the function on top of co; returns its
 * index or 0. */
static int find_upvalue(lua_State *co, const char *name)
{
    const char *n;
    for (int i = 1; (n = lua_getupvalue(co, -1, i)); i++) {
        lua_pop(co, 1);
        if (strcmp(n, name) == 0)
            return i;
    }
    return 0;
}

/* Where the variable named by the string at index 2 of L lives in the env's
 * frame: a local (returns VAR_LOCAL, its index in *n), an upvalue of the
 * frame's function other than _ENV (VAR_UPVALUE, its index in *n, the
 * function left on top of *co), or neither (VAR_NONE). Raises when the
 * pause is over. */
enum { VAR_NONE, VAR_LOCAL, VAR_UPVALUE };
static int frame_var(lua_State *L, lua_State **co, lua_Debug *ar, int *n)
{
    if (lua_type(L, 2) != LUA_TSTRING)
        return VAR_NONE;
    const char *k = lua_tostring(L, 2);
    struct snap *sn;
    *co = env_frame(L, ar, &sn);
    if ((*n = find_local(*co, ar, sn, k)) && lua_checkstack(*co, 2))
        return VAR_LOCAL;
    if (strcmp(k, "_ENV") == 0 || !lua_checkstack(*co, 2))
        return VAR_NONE;
    lua_getinfo(*co, "f", ar);
    if ((*n = find_upvalue(*co, k)))
        return VAR_UPVALUE;
    lua_pop(*co, 1);
    return VAR_NONE;
}

/* env.__index(env, key): a local, an upvalue (not _ENV), then the fallback. */
static int env_index(lua_State *L)
{
    lua_Debug ar;
    lua_State *co;
    int n;
    switch (frame_var(L, &co, &ar, &n)) {
    case VAR_LOCAL:
        if (lua_getlocal(co, &ar, n)) {
            lua_xmove(co, L, 1);
            return 1;
        }
        break;
    case VAR_UPVALUE:
        lua_getupvalue(co, -1, n);
        lua_xmove(co, L, 1);
        lua_pop(co, 1);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(3));
    return 1;
}

/* env.__newindex(env, key, value): sets a local or an upvalue of the frame,
 * else the fallback's field. */
static int env_newindex(lua_State *L)
{
    lua_Debug ar;
    lua_State *co;
    int n;
    switch (frame_var(L, &co, &ar, &n)) {
    case VAR_LOCAL:
        lua_pushvalue(L, 3);
        lua_xmove(L, co, 1);
        lua_setlocal(co, &ar, n);
        return 0;
    case VAR_UPVALUE:
        lua_pushvalue(L, 3);
        lua_xmove(L, co, 1);
        lua_setupvalue(co, -2, n);
        lua_pop(co, 1);
        return 0;
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_settable(L, lua_upvalueindex(3));
    return 0;
}

/* env.__locals(): the frame's locals by name (a plain table of them). */
static int env_locals(lua_State *L)
{
    lua_Debug ar;
    struct snap *sn;
    lua_State *co = env_frame(L, &ar, &sn);
    lua_newtable(L);
    const char *n;
    for (int i = 1; (n = local_name(co, &ar, sn, i)); i++) {
        if (n[0] != '(' && lua_getlocal(co, &ar, i)) {
            lua_xmove(co, L, 1);
            lua_setfield(L, -2, n);
        }
    }
    return 1;
}

static int l_env(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    lua_Integer level = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (!paused_task(vm_of(L), (long)id))
        return luaL_error(L, "dbg.env: no pause %d", (int)id);
    lua_newtable(L);                 /* the env */
    lua_createtable(L, 0, 3);        /* its metatable */
    static const struct { const char *name; lua_CFunction fn; } mm[] = {
        { "__index", env_index }, { "__newindex", env_newindex }, { "locals", env_locals } };
    for (int i = 0; i < 3; i++) {
        lua_pushinteger(L, id);
        lua_pushinteger(L, level);
        lua_pushvalue(L, 3);
        lua_pushcclosure(L, mm[i].fn, 3);
        if (i < 2)
            lua_setfield(L, -2, mm[i].name);
        else
            lua_setfield(L, -3, "__locals"); /* env.__locals() lists them (:print with no name) */
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    return 1;
}

void sys_add_dbg(struct vm *vm, lua_State *L)
{
    (void)vm;
    static const luaL_Reg fns[] = { { "on", l_on }, { "breaks", l_breaks }, { "mute", l_mute },
        { "info", l_info }, { "resume", l_resume }, { "paused", l_paused }, { "env", l_env },
        { NULL, NULL } };
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "dbg");
}
