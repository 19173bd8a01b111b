/* test_store.c - the SQLite store: a new file gets the whole schema, in WAL
 * mode with foreign keys on; data and version survive a reopen; a database
 * from a newer replica is refused; constraints hold. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
