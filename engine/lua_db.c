/* lua_db.c - sys.db_open: SQLite for trusted Lua code. A db object owns one
 * store (store.c) and a bounded cache of prepared statements; every call is
 * synchronous on the event-loop thread. SQL failures come back as
 * nil, err, kind (kind "constraint", "busy", "full", "readonly", "io" or
 * "error"); misuse raises. For "full", "readonly" and "io" (the database
 * cannot be written: SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR,
 * SQLITE_CANTOPEN) err starts "database unavailable (KIND): ", so that the
 * kind survives an assert or error() that passes err on (serve/api.lua
 * answers 503 for it). */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "sched.h"
#include "store.h"
#include "sys.h"

#define DB_MT "replica.sys.db"
#define CACHE_MAX 128 /* prepared statements kept per db */
#define HINT_LEN 80   /* bytes of SQL quoted in a prepare error */

/* One prepared statement, keyed by its exact SQL text. */
struct cached {
    char *sql;
    size_t len;
    sqlite3_stmt *st;
    unsigned long used; /* db->clock at the last use, for LRU eviction */
};

struct db {
    struct store *store;   /* NULL once closed */
    struct cached *cache;  /* CACHE_MAX slots, malloc'd on first use */
    int ncache;
    unsigned long clock;
    int in_tx;             /* db:transaction is running its function */
    int busy;              /* a statement is stepping (only a __gc can call in) */
};

enum mode { MODE_EXEC, MODE_QUERY, MODE_ROW };

/* What the protected step function works on. */
struct run {
    sqlite3 *db;
    sqlite3_stmt *st;
    enum mode mode;
};

/* Maps an SQLite result code (primary or extended) to the kind returned to
 * Lua. */
static const char *err_kind(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return "constraint";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "busy";
    case SQLITE_FULL:
        return "full";
    case SQLITE_READONLY:
        return "readonly";
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return "io";
    default:
        return "error";
    }
}

/* Pushes the message for rc: msg, prefixed "database unavailable (KIND): "
 * when rc means the database cannot be written (see the top). */
static void push_msg(lua_State *L, const char *msg, int rc)
{
    const char *kind = err_kind(rc);
    if (strcmp(kind, "full") == 0 || strcmp(kind, "readonly") == 0 || strcmp(kind, "io") == 0)
        lua_pushfstring(L, "database unavailable (%s): %s", kind, msg);
    else
        lua_pushstring(L, msg);
}

/* Pushes nil, msg, kind for rc. Returns 3. */
static int push_fail(lua_State *L, const char *msg, int rc)
{
    lua_pushnil(L);
    push_msg(L, msg, rc);
    lua_pushstring(L, err_kind(rc));
    return 3;
}

/* Pushes nil, "<msg> (in: <first HINT_LEN bytes of sql>)", kind. Returns 3. */
static int push_sql_fail(lua_State *L, const char *msg, int rc, const char *sql, size_t len)
{
    lua_pushnil(L);
    push_msg(L, msg, rc);
    lua_pushliteral(L, " (in: ");
    lua_pushlstring(L, sql, len > HINT_LEN ? HINT_LEN : len);
    lua_pushstring(L, len > HINT_LEN ? "...)" : ")");
    lua_concat(L, 4);
    lua_pushstring(L, err_kind(rc));
    return 3;
}

/* Finalizes and forgets every cached statement and frees the cache. */
static void cache_clear(struct db *d)
{
    for (int i = 0; i < d->ncache; i++) {
        sqlite3_finalize(d->cache[i].st);
        free(d->cache[i].sql);
    }
    free(d->cache);
    d->cache = NULL;
    d->ncache = 0;
}

/* Finalizes the statements and closes the store; safe to run twice. */
static void db_shutdown(struct db *d)
{
    cache_clear(d);
    store_close(d->store);
    d->store = NULL;
}

/* Returns the open db at idx, raising when it is not a db or is closed. */
static struct db *check_open(lua_State *L, int idx)
{
    struct db *d = luaL_checkudata(L, idx, DB_MT);
    if (!d->store)
        luaL_error(L, "database is closed");
    if (d->busy)
        luaL_error(L, "db: in use by a running statement (called from a __gc?)");
    return d;
}

/* See sys.h: the db object at idx keeps owning the handle. */
sqlite3 *lua_db_handle(lua_State *L, int idx)
{
    return check_open(L, idx)->store->db;
}

/* Sets *out to the prepared statement for sql, from the cache or newly
 * prepared and cached (evicting the least recently used when full). The db
 * owns the statement. Returns 0, or -1 with nil, err, kind pushed. */
static int stmt_get(lua_State *L, struct db *d, const char *sql, size_t len, sqlite3_stmt **out)
{
    for (int i = 0; i < d->ncache; i++) {
        struct cached *c = &d->cache[i];
        if (c->len == len && memcmp(c->sql, sql, len) == 0) {
            c->used = ++d->clock;
            *out = c->st;
            return 0;
        }
    }
    if (len > INT_MAX)
        return push_fail(L, "db: SQL text too long", SQLITE_TOOBIG), -1;
    if (!d->cache && !(d->cache = malloc(CACHE_MAX * sizeof(*d->cache))))
        return push_fail(L, "db: out of memory", SQLITE_NOMEM), -1;
    sqlite3 *db = d->store->db;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK)
        return push_sql_fail(L, sqlite3_errmsg(db), rc, sql, len), -1;
    if (!st)
        return push_sql_fail(L, "db: no SQL statement", SQLITE_ERROR, sql, len), -1;
    while (tail && tail < sql + len && isspace((unsigned char)*tail))
        tail++;
    if (tail && tail < sql + len) {
        sqlite3_finalize(st);
        return push_sql_fail(L, "db: one statement per call (db:script runs several)",
                             SQLITE_ERROR, sql, len), -1;
    }
    char *copy = malloc(len + 1);
    if (!copy) {
        sqlite3_finalize(st);
        return push_fail(L, "db: out of memory", SQLITE_NOMEM), -1;
    }
    memcpy(copy, sql, len);
    copy[len] = '\0';
    struct cached *slot;
    if (d->ncache < CACHE_MAX) {
        slot = &d->cache[d->ncache++];
    } else {
        slot = &d->cache[0];
        for (int i = 1; i < d->ncache; i++)
            if (d->cache[i].used < slot->used)
                slot = &d->cache[i];
        sqlite3_finalize(slot->st);
        free(slot->sql);
    }
    slot->sql = copy;
    slot->len = len;
    slot->st = st;
    slot->used = ++d->clock;
    *out = st;
    return 0;
}

/* Binds the n values from stack index first on as parameters 1..n of st;
 * raises on a count mismatch or an unsupported type. */
static void bind_params(lua_State *L, sqlite3_stmt *st, int first, int n)
{
    int want = sqlite3_bind_parameter_count(st);
    if (n != want)
        luaL_error(L, "db: %d parameters given, the statement takes %d", n, want);
    for (int i = 1; i <= n; i++) {
        int idx = first + i - 1;
        int rc;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            rc = sqlite3_bind_null(st, i);
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx))
                rc = sqlite3_bind_int64(st, i, (sqlite3_int64)lua_tointeger(L, idx));
            else
                rc = sqlite3_bind_double(st, i, (double)lua_tonumber(L, idx));
            break;
        case LUA_TBOOLEAN:
            rc = sqlite3_bind_int(st, i, lua_toboolean(L, idx));
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, idx, &len);
            rc = sqlite3_bind_text64(st, i, s, (sqlite3_uint64)len, SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        }
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) == NULL) { /* json.null */
                rc = sqlite3_bind_null(st, i);
                break;
            }
            /* fall through */
        default:
            luaL_error(L, "db: parameter %d has unsupported type %s", i, luaL_typename(L, idx));
            return;
        }
        if (rc != SQLITE_OK)
            luaL_error(L, "db: cannot bind parameter %d: %s", i, sqlite3_errstr(rc));
    }
}

/* Pushes the current row of st as a table keyed by column name; NULL
 * columns are left out. */
static void push_row(lua_State *L, sqlite3 *db, sqlite3_stmt *st)
{
    int ncol = sqlite3_column_count(st);
    lua_createtable(L, 0, ncol);
    for (int i = 0; i < ncol; i++) {
        int type = sqlite3_column_type(st, i);
        switch (type) {
        case SQLITE_INTEGER:
            lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i));
            break;
        case SQLITE_FLOAT:
            lua_pushnumber(L, (lua_Number)sqlite3_column_double(st, i));
            break;
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            const void *p = type == SQLITE_TEXT ? (const void *)sqlite3_column_text(st, i)
                                                : sqlite3_column_blob(st, i);
            int n = sqlite3_column_bytes(st, i);
            if (!p && sqlite3_errcode(db) == SQLITE_NOMEM)
                luaL_error(L, "db: out of memory reading column %d", i + 1);
            lua_pushlstring(L, p ? (const char *)p : "", (size_t)n);
            break;
        }
        default: /* SQLITE_NULL */
            continue;
        }
        const char *name = sqlite3_column_name(st, i);
        if (!name)
            luaL_error(L, "db: out of memory reading column names");
        lua_setfield(L, -2, name);
    }
}

/* Binds the parameters (stack 2..top) and steps the statement of the run
 * (light userdata at 1), pushing the results of the mode or nil, err, kind.
 * Called through lua_pcall so the caller can reset the statement whatever
 * happens. */
static int run_protected(lua_State *L)
{
    struct run *r = lua_touserdata(L, 1);
    bind_params(L, r->st, 2, lua_gettop(L) - 1);
    int rc;
    switch (r->mode) {
    case MODE_EXEC: {
        /* sqlite3_changes64 keeps the count of the last INSERT, UPDATE or
         * DELETE; report it only when this statement changed rows. */
        sqlite3_int64 before = sqlite3_total_changes64(r->db);
        while ((rc = sqlite3_step(r->st)) == SQLITE_ROW)
            ;
        if (rc != SQLITE_DONE)
            return push_fail(L, sqlite3_errmsg(r->db), rc);
        int changed = sqlite3_total_changes64(r->db) != before;
        lua_pushinteger(L, changed ? (lua_Integer)sqlite3_changes64(r->db) : 0);
        lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(r->db));
        return 2;
    }
    case MODE_ROW:
        rc = sqlite3_step(r->st);
        if (rc == SQLITE_ROW)
            push_row(L, r->db, r->st);
        else if (rc == SQLITE_DONE)
            lua_pushnil(L);
        else
            return push_fail(L, sqlite3_errmsg(r->db), rc);
        return 1;
    case MODE_QUERY:
    default: {
        lua_newtable(L);
        lua_Integer n = 0;
        while ((rc = sqlite3_step(r->st)) == SQLITE_ROW) {
            push_row(L, r->db, r->st);
            lua_rawseti(L, -2, ++n);
        }
        if (rc != SQLITE_DONE)
            return push_fail(L, sqlite3_errmsg(r->db), rc);
        return 1;
    }
    }
}

/* db:exec / db:query / db:row: (db, sql, params...). Runs the cached
 * statement in a protected call, then resets it and clears its bindings
 * before returning or re-raising, so no statement is ever left busy. */
static int run_sql(lua_State *L, enum mode mode)
{
    struct db *d = check_open(L, 1);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    int nparams = lua_gettop(L) - 2;
    sqlite3_stmt *st;
    if (stmt_get(L, d, sql, len, &st) != 0)
        return 3;
    struct run r = { d->store->db, st, mode };
    lua_pushcfunction(L, run_protected);
    lua_pushlightuserdata(L, &r);
    lua_rotate(L, 3, 2); /* db, sql, fn, &r, params... */
    d->busy = 1;
    int status = lua_pcall(L, nparams + 1, LUA_MULTRET, 0);
    d->busy = 0;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - 2;
}

/* db:exec(sql, ...) -> changes, last_insert_rowid | nil, err, kind */
static int db_exec(lua_State *L)
{
    return run_sql(L, MODE_EXEC);
}

/* db:query(sql, ...) -> { row, ... } | nil, err, kind; rows are new tables
 * owned by the caller. */
static int db_query(lua_State *L)
{
    return run_sql(L, MODE_QUERY);
}

/* db:row(sql, ...) -> the first row, nil when there is none, or nil, err,
 * kind. */
static int db_row(lua_State *L)
{
    return run_sql(L, MODE_ROW);
}

/* Runs sql with sqlite3_exec. Returns 0, or -1 with nil, err, kind pushed. */
static int exec_script(lua_State *L, sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    lua_pushnil(L);
    push_msg(L, msg ? msg : sqlite3_errmsg(db), rc);
    sqlite3_free(msg);
    lua_pushstring(L, err_kind(rc));
    return -1;
}

/* db:script(sql) -> true | nil, err, kind. Runs several statements without
 * parameters (BEGIN/COMMIT, PRAGMAs, DDL). */
static int db_script(lua_State *L)
{
    struct db *d = check_open(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    if (exec_script(L, d->store->db, sql) != 0)
        return 3;
    lua_pushboolean(L, 1);
    return 1;
}

/* Returns the connection's PRAGMA synchronous level (0..3), or -1. */
static int sync_level(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Sets PRAGMA synchronous back to level (from sync_level); errors ignored,
 * nothing pushed (the caller may hold an error on the stack). */
static void sync_restore(sqlite3 *db, int level)
{
    char sql[48];
    snprintf(sql, sizeof(sql), "PRAGMA synchronous = %d", level);
    sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* The body of db:transaction and db:durable_transaction, for the db at 1
 * and fn at 2 with its arguments above. A durable one commits with PRAGMA
 * synchronous = FULL (the WAL is synced before COMMIT returns) and then
 * restores the connection's level; fn cannot yield, so nothing else runs
 * under FULL meanwhile. */
static int transaction(lua_State *L, int durable)
{
    struct db *d = check_open(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (d->in_tx)
        return luaL_error(L, "db: transaction already open");
    sqlite3 *db = d->store->db;
    int level = -1;
    if (durable) {
        if ((level = sync_level(db)) < 0)
            return push_fail(L, sqlite3_errmsg(db), sqlite3_errcode(db));
        if (exec_script(L, db, "PRAGMA synchronous = FULL") != 0)
            return 3;
    }
    if (exec_script(L, db, "BEGIN IMMEDIATE") != 0) {
        if (durable)
            sync_restore(db, level);
        return 3;
    }
    d->in_tx = 1;
    int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
    d->in_tx = 0;
    int nres = lua_gettop(L) - 1, rc;
    if (status != LUA_OK) {
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        if (durable)
            sync_restore(db, level);
        return lua_error(L);
    }
    if (sqlite3_get_autocommit(db)) {
        lua_pushnil(L);
        lua_pushliteral(L, "db: the transaction was ended inside its function");
        lua_pushliteral(L, "error");
        rc = 3;
    } else if (nres >= 2 && lua_isnil(L, 2) && !lua_isnil(L, 3)) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        rc = nres;
    } else if (exec_script(L, db, "COMMIT") != 0) {
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        rc = 3;
    } else {
        rc = nres;
    }
    if (durable)
        sync_restore(db, level);
    return rc;
}

/* db:transaction(fn, ...) -> fn's results | nil, err[, kind]. Runs fn(...)
 * inside BEGIN IMMEDIATE, not yieldable; commits unless fn returns nil, err
 * (rolled back, returned) or raises (rolled back, re-raised). */
static int db_transaction(lua_State *L)
{
    return transaction(L, 0);
}

/* db:durable_transaction(fn, ...): db:transaction whose commit survives an
 * OS crash or power cut once it returns (synchronous = FULL for this
 * commit; the connection's NORMAL is restored after). */
static int db_durable_transaction(lua_State *L)
{
    return transaction(L, 1);
}

/* db:version() -> the schema version (PRAGMA user_version) */
static int db_version(lua_State *L)
{
    struct db *d = check_open(L, 1);
    lua_pushinteger(L, store_version(d->store));
    return 1;
}

/* db:readonly() -> true when SQLite could open the database only for
 * reading (a read-only file or filesystem), else false */
static int db_readonly(lua_State *L)
{
    struct db *d = check_open(L, 1);
    lua_pushboolean(L, sqlite3_db_readonly(d->store->db, "main") == 1);
    return 1;
}

/* db:close() and __close: finalizes the statements and closes the database;
 * idempotent. Raises inside db:transaction's function or a running statement. */
static int db_close(lua_State *L)
{
    struct db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->in_tx || d->busy)
        return luaL_error(L, "db: cannot close inside a transaction or a running statement");
    db_shutdown(d);
    return 0;
}

/* __gc: like close, but never raises. */
static int db_gc(lua_State *L)
{
    db_shutdown(luaL_checkudata(L, 1, DB_MT));
    return 0;
}

/* sys.db_open(path) -> db | nil, err. The db object owns the store it opens
 * (creating the file and migrating the schema); what the store changed on
 * the way (a loose file mode made 0600) is logged once. */
static int l_db_open(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    const char *path = luaL_checkstring(L, 1);
    struct db *d = lua_newuserdatauv(L, sizeof(*d), 0);
    memset(d, 0, sizeof(*d));
    luaL_setmetatable(L, DB_MT);
    char err[512];
    d->store = store_open(path, err, sizeof(err));
    if (!d->store) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (d->store->notice[0])
        vm_logf(vm, task_current(vm), LOG_WARN, "database files made private: %s", d->store->notice);
    return 1;
}

void sys_add_db(struct vm *vm, lua_State *L)
{
    if (luaL_newmetatable(L, DB_MT)) {
        static const luaL_Reg methods[] = {
            { "exec", db_exec },       { "query", db_query },     { "row", db_row },
            { "script", db_script },   { "transaction", db_transaction },
            { "durable_transaction", db_durable_transaction },
            { "version", db_version }, { "readonly", db_readonly },
            { "close", db_close },     { NULL, NULL }
        };
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, db_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, db_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_db_open, 1);
    lua_setfield(L, -2, "db_open");
}
