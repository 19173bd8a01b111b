/* test_store.c - the SQLite store: a new file gets the whole schema, in WAL
 * mode with foreign keys on; data and version survive a reopen; a database
 * from an older replica is migrated in place, keeping its rows; a failed
 * migration leaves the last good version; a database from a newer replica is
 * refused; constraints hold; the database and its -wal and -shm are private
 * (0600), and a loose one is made so; a WAL grown past its limit while a
 * reader held a snapshot is cut back once a checkpoint restarts it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "test.h"

/* Makes a fresh directory and returns the path of a database inside it. */
static char *temp_db(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/replica-store.XXXXXX");
    if (!mkdtemp(dir))
        return NULL;
    size_t len = strlen(dir);
    snprintf(dir + len, n - len, "/replica.db");
    return dir;
}

/* Removes the database, its WAL files and the directory. */
static void remove_db(char *path)
{
    char tmp[512];
    unlink(path);
    snprintf(tmp, sizeof(tmp), "%s-wal", path);
    unlink(tmp);
    snprintf(tmp, sizeof(tmp), "%s-shm", path);
    unlink(tmp);
    *strrchr(path, '/') = '\0';
    rmdir(path);
}

/* Returns the first column of the first row of sql as text (static buffer). */
static const char *scalar(struct store *s, const char *sql)
{
    static char out[256];
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        sqlite3_column_text(st, 0))
        snprintf(out, sizeof(out), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

TEST_IMPL(store_new_file_gets_schema_wal_and_foreign_keys)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(store_version(s), store_latest_version());
    ASSERT_STR_EQ(scalar(s, "PRAGMA journal_mode"), "wal");
    ASSERT_STR_EQ(scalar(s, "PRAGMA foreign_keys"), "1");
    ASSERT_EQ(atol(scalar(s, "PRAGMA journal_size_limit")), STORE_WAL_LIMIT);
    static const char *const tables[] = { "registries", "policies", "executions", "tasks",
        "stage_results", "task_logs", "events", "tokens", NULL };
    for (const char *const *t = tables; *t; t++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'", *t);
        ASSERT_STR_EQ(scalar(s, sql), "1");
    }
    store_close(s);
    remove_db(path);
    return 0;
}

TEST_IMPL(store_reopen_keeps_data_and_does_not_migrate_again)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(sqlite3_exec(s->db, "INSERT INTO registries(name, kind, url, created, updated) "
                                  "VALUES ('hub', 'distribution', 'https://r', 0, 0)",
                           NULL, NULL, NULL),
              SQLITE_OK);
    store_close(s);
    s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(store_version(s), store_latest_version());
    ASSERT_STR_EQ(scalar(s, "SELECT name FROM registries"), "hub");
    store_close(s);
    remove_db(path);
    return 0;
}

/* Returns the permission bits of path, or -1 when it cannot be stat'ed. */
static int file_mode(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* Even under a permissive umask, a new database and the -wal and -shm files
 * SQLite makes next to it are readable by their owner only. */
TEST_IMPL(store_new_files_are_private)
{
    char path[256], wal[300], shm[300], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    snprintf(wal, sizeof(wal), "%s-wal", path);
    snprintf(shm, sizeof(shm), "%s-shm", path);
    mode_t old = umask(022);
    struct store *s = store_open(path, err, sizeof(err));
    umask(old);
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(sqlite3_exec(s->db, "INSERT INTO registries(name, kind, url, created, updated) "
                                  "VALUES ('hub', 'distribution', 'https://r', 0, 0)", NULL, NULL, NULL),
              SQLITE_OK);
    int db_mode = file_mode(path), wal_mode = file_mode(wal), shm_mode = file_mode(shm);
    ASSERT_STR_EQ(s->notice, "");
    store_close(s);
    remove_db(path);
    ASSERT_EQ(db_mode, 0600);
    ASSERT_EQ(wal_mode, 0600);
    ASSERT_EQ(shm_mode, 0600);
    return 0;
}

/* A database (and a leftover -wal) that others may read is made 0600 at
 * open, and the store says what it changed, once. */
TEST_IMPL(store_tightens_a_readable_database)
{
    char path[256], wal[300], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    snprintf(wal, sizeof(wal), "%s-wal", path);
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    store_close(s);
    FILE *f = fopen(wal, "wb"); /* an empty WAL is valid and ignored */
    ASSERT_NOT_NULL(f);
    fclose(f);
    ASSERT_EQ(chmod(path, 0644), 0);
    ASSERT_EQ(chmod(wal, 0640), 0);
    s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    char notice[sizeof(s->notice)];
    snprintf(notice, sizeof(notice), "%s", s->notice);
    int db_mode = file_mode(path), wal_mode = file_mode(wal);
    store_close(s);
    s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    char again[sizeof(s->notice)];
    snprintf(again, sizeof(again), "%s", s->notice);
    store_close(s);
    remove_db(path);
    ASSERT_EQ(db_mode, 0600);
    ASSERT_EQ(wal_mode, 0600);
    if (!strstr(notice, path) || !strstr(notice, "was mode 0644, now 0600") ||
        !strstr(notice, "-wal was mode 0640, now 0600"))
        TEST_FAIL("the notice does not say what changed: %s", notice);
    ASSERT_STR_EQ(again, "");
    return 0;
}

TEST_IMPL(store_refuses_a_newer_schema)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    sqlite3 *db = NULL;
    ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT(s == NULL);
    ASSERT(strstr(err, "newer than this replica knows") != NULL);
    remove_db(path);
    return 0;
}

TEST_IMPL(store_constraints_hold)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    /* a policy must name registries that exist */
    ASSERT(sqlite3_exec(s->db, "INSERT INTO policies(name, src_registry, dst_registry, created, updated) "
                               "VALUES ('p', 1, 2, 0, 0)", NULL, NULL, NULL) != SQLITE_OK);
    /* statuses come from the documented set */
    ASSERT_EQ(sqlite3_exec(s->db, "INSERT INTO registries(id, name, kind, url, created, updated) VALUES "
                                  "(1, 'a', 'distribution', 'http://a', 0, 0), (2, 'b', 'distribution', 'http://b', 0, 0);"
                                  "INSERT INTO policies(id, name, src_registry, dst_registry, created, updated) "
                                  "VALUES (1, 'p', 1, 2, 0, 0)", NULL, NULL, NULL), SQLITE_OK);
    ASSERT(sqlite3_exec(s->db, "INSERT INTO executions(policy, status, trigger) VALUES (1, 'Done', 'manual')",
                        NULL, NULL, NULL) != SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(s->db, "INSERT INTO executions(policy, status, trigger) VALUES (1, 'Running', 'manual')",
                           NULL, NULL, NULL), SQLITE_OK);
    /* deleting a policy deletes its executions */
    ASSERT_EQ(sqlite3_exec(s->db, "DELETE FROM policies WHERE id = 1", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_STR_EQ(scalar(s, "SELECT count(*) FROM executions"), "0");
    store_close(s);
    remove_db(path);
    return 0;
}

/* The tables migration 2 alters (and policies, which executions name), as the
 * first release created them: the columns of migration 1 in store.c. */
static const char v1_schema[] =
    "CREATE TABLE registries ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
    "  url TEXT NOT NULL, username TEXT, password_sealed TEXT, ca_file TEXT,"
    "  insecure INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL);"
    "CREATE TABLE policies ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  src_registry INTEGER NOT NULL REFERENCES registries(id),"
    "  dst_registry INTEGER NOT NULL REFERENCES registries(id),"
    "  created REAL NOT NULL, updated REAL NOT NULL);"
    "CREATE TABLE executions ("
    "  id INTEGER PRIMARY KEY,"
    "  policy INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,"
    "  status TEXT NOT NULL DEFAULT 'Pending'"
    "    CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Stopped')),"
    "  trigger TEXT NOT NULL, total INTEGER NOT NULL DEFAULT 0,"
    "  succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,"
    "  stopped INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL);"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY,"
    "  execution INTEGER NOT NULL REFERENCES executions(id) ON DELETE CASCADE,"
    "  repository TEXT NOT NULL, dest_repository TEXT NOT NULL,"
    "  tags TEXT NOT NULL DEFAULT '[]',"
    "  status TEXT NOT NULL DEFAULT 'Pending'"
    "    CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Stopped')),"
    "  attempts INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL, error TEXT);"
    "CREATE TABLE stage_results ("
    "  task INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE, seq INTEGER NOT NULL,"
    "  name TEXT NOT NULL, function TEXT NOT NULL, status TEXT NOT NULL, started REAL,"
    "  finished REAL, output TEXT, error TEXT, PRIMARY KEY (task, seq));"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY, received REAL NOT NULL, source TEXT NOT NULL,"
    "  payload TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'matched', 'ignored')));"
    "INSERT INTO registries(id, name, kind, url, created, updated) VALUES"
    "  (1, 'old-src', 'distribution', 'https://src', 1, 1),"
    "  (2, 'old-dst', 'harbor', 'https://dst', 1, 1);"
    "INSERT INTO policies(id, name, src_registry, dst_registry, created, updated)"
    "  VALUES (1, 'p', 1, 2, 1, 1);"
    "INSERT INTO executions(id, policy, status, trigger, total, succeeded)"
    "  VALUES (7, 1, 'Succeeded', 'manual', 3, 3);"
    "INSERT INTO tasks(id, execution, repository, dest_repository, status)"
    "  VALUES (11, 7, 'lib/a', 'mirror/a', 'Succeeded');"
    "INSERT INTO stage_results(task, seq, name, function, status) VALUES (11, 1, 'pull', 'distribution/pull', 'succeeded');"
    "INSERT INTO events(id, received, source, payload) VALUES (5, 1, 'distribution', '{}');"
    "PRAGMA user_version = 1;";

/* Writes a version-1 database at path, with extra SQL (may be NULL) run
 * after the schema. Returns 0 or -1. */
static int write_v1_db(const char *path, const char *extra)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db) == SQLITE_OK &&
                     sqlite3_exec(db, v1_schema, NULL, NULL, NULL) == SQLITE_OK &&
                     (!extra || sqlite3_exec(db, extra, NULL, NULL, NULL) == SQLITE_OK)
                 ? 0
                 : -1;
    if (rc != 0)
        fprintf(stderr, "# write_v1_db: %s\n", db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return rc;
}

TEST_IMPL(store_migrates_a_v1_database_keeping_its_rows)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    ASSERT_EQ(write_v1_db(path, NULL), 0);
    ASSERT_LE(2, store_latest_version());
    struct store *s = store_open(path, err, sizeof(err));
    if (!s)
        TEST_FAIL("store_open: %s", err);
    ASSERT_EQ(store_version(s), store_latest_version());
    ASSERT_STR_EQ(scalar(s, "PRAGMA foreign_keys"), "1");
    ASSERT_EQ(atol(scalar(s, "PRAGMA journal_size_limit")), STORE_WAL_LIMIT);
    /* the old rows survive */
    ASSERT_STR_EQ(scalar(s, "SELECT group_concat(r, ',') FROM "
                            "(SELECT name || '=' || url AS r FROM registries ORDER BY id)"),
                  "old-src=https://src,old-dst=https://dst");
    ASSERT_STR_EQ(scalar(s, "SELECT policy || ' ' || status || ' ' || trigger || ' ' || total || ' ' || "
                            "succeeded FROM executions WHERE id = 7"),
                  "1 Succeeded manual 3 3");
    ASSERT_STR_EQ(scalar(s, "SELECT repository || ' ' || status FROM tasks WHERE id = 11"), "lib/a Succeeded");
    ASSERT_STR_EQ(scalar(s, "SELECT source FROM events WHERE id = 5"), "distribution");
    /* and get the new columns' defaults */
    ASSERT_STR_EQ(scalar(s, "SELECT scope FROM executions WHERE id = 7"), "all");
    ASSERT_STR_EQ(scalar(s, "SELECT planned FROM executions WHERE id = 7"), "0");
    ASSERT_STR_EQ(scalar(s, "SELECT triggers FROM executions WHERE id = 7"), "1");
    ASSERT_STR_EQ(scalar(s, "SELECT quote(error) || quote(created) FROM executions WHERE id = 7"), "NULLNULL");
    ASSERT_STR_EQ(scalar(s, "SELECT kind FROM tasks WHERE id = 11"), "copy");
    ASSERT_STR_EQ(scalar(s, "SELECT name || ' ' || quote(function_version) || ' ' || quote(function_origin) "
                            "FROM stage_results WHERE task = 11"), "pull NULL NULL");
    ASSERT_STR_EQ(scalar(s, "SELECT draft FROM executions WHERE id = 7"), "0");
    ASSERT_STR_EQ(scalar(s, "SELECT quote(description) || quote(webhook_secret_hash) FROM registries "
                            "WHERE id = 1"),
                  "NULLNULL");
    ASSERT_STR_EQ(scalar(s, "SELECT quote(registry) || quote(detail) FROM events WHERE id = 5"), "NULLNULL");
    ASSERT_STR_EQ(scalar(s, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                            "('registries_by_webhook_secret', 'executions_by_status')"),
                  "2");
    /* the new columns work on the migrated tables: defaults and checks */
    ASSERT_EQ(sqlite3_exec(s->db, "INSERT INTO executions(id, policy, trigger) VALUES (8, 1, 'event');"
                                  "INSERT INTO tasks(id, execution, repository, dest_repository, kind) "
                                  "VALUES (12, 8, 'lib/b', 'mirror/b', 'delete')",
                           NULL, NULL, NULL),
              SQLITE_OK);
    ASSERT_STR_EQ(scalar(s, "SELECT scope || planned || triggers FROM executions WHERE id = 8"), "all01");
    ASSERT_STR_EQ(scalar(s, "SELECT kind FROM tasks WHERE id = 12"), "delete");
    ASSERT(sqlite3_exec(s->db, "UPDATE executions SET scope = 'some' WHERE id = 8", NULL, NULL, NULL) !=
           SQLITE_OK);
    ASSERT(sqlite3_exec(s->db, "UPDATE tasks SET kind = 'move' WHERE id = 12", NULL, NULL, NULL) != SQLITE_OK);
    store_close(s);
    /* a reopen finds nothing left to do */
    s = store_open(path, err, sizeof(err));
    if (!s)
        TEST_FAIL("reopen: %s", err);
    ASSERT_EQ(store_version(s), store_latest_version());
    ASSERT_STR_EQ(scalar(s, "SELECT count(*) FROM executions"), "2");
    store_close(s);
    remove_db(path);
    return 0;
}

TEST_IMPL(store_failed_migration_keeps_the_last_good_version)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    /* a column migration 2 adds is already there, so migration 2 fails part-way */
    ASSERT_EQ(write_v1_db(path, "ALTER TABLE tasks ADD COLUMN kind TEXT"), 0);
    err[0] = '\0';
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT(s == NULL);
    if (!strstr(err, "migration 2") || !strstr(err, "duplicate column name: kind"))
        TEST_FAIL("unexpected error: %s", err);
    /* nothing of migration 2 was kept, and the version is still 1 */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT (SELECT user_version FROM pragma_user_version), "
                                     "(SELECT count(*) FROM pragma_table_info('executions') WHERE name = 'scope'), "
                                     "(SELECT count(*) FROM pragma_table_info('registries') WHERE name = 'description'), "
                                     "(SELECT count(*) FROM registries)",
                                 -1, &st, NULL),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_EQ(sqlite3_column_int(st, 0), 1);
    ASSERT_EQ(sqlite3_column_int(st, 1), 0);
    ASSERT_EQ(sqlite3_column_int(st, 2), 0);
    ASSERT_EQ(sqlite3_column_int(st, 3), 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
    remove_db(path);
    return 0;
}

/* Returns the size of path's WAL file in bytes, or -1. */
static long wal_size(const char *path)
{
    char wal[512];
    struct stat st;
    snprintf(wal, sizeof(wal), "%s-wal", path);
    return stat(wal, &st) == 0 ? (long)st.st_size : -1;
}

TEST_IMPL(store_wal_is_cut_back_to_its_limit)
{
    char path[256], err[256];
    ASSERT_NOT_NULL(temp_db(path, sizeof(path)));
    struct store *s = store_open(path, err, sizeof(err));
    ASSERT_NOT_NULL(s);
    ASSERT_EQ(sqlite3_exec(s->db, "CREATE TABLE bulk (b BLOB)", NULL, NULL, NULL), SQLITE_OK);

    /* A reader holds a snapshot, so no checkpoint can restart the WAL: the
     * writes pile up in it, 8 MiB in 64 commits. */
    sqlite3 *reader = NULL;
    ASSERT_EQ(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM bulk;", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < 64; i++)
        ASSERT_EQ(sqlite3_exec(s->db, "INSERT INTO bulk VALUES (zeroblob(131072))", NULL, NULL, NULL), SQLITE_OK);
    ASSERT(wal_size(path) > 2L * STORE_WAL_LIMIT - STORE_WAL_LIMIT / 2);

    /* The reader lets go. The next commit's automatic checkpoint copies the
     * WAL into the database; the one after restarts the WAL and cuts it. */
    ASSERT_EQ(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(reader);
    ASSERT_EQ(sqlite3_exec(s->db, "DELETE FROM bulk WHERE rowid = 1", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(s->db, "DELETE FROM bulk WHERE rowid = 2", NULL, NULL, NULL), SQLITE_OK);
    long after = wal_size(path);
    ASSERT(after >= 0 && after <= STORE_WAL_LIMIT);
    ASSERT_STR_EQ(scalar(s, "SELECT count(*) FROM bulk"), "62");
    store_close(s);
    remove_db(path);
    return 0;
}
