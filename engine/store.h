/* store.h - the SQLite database that `replica serve` keeps its state in:
 * registries, policies, executions, tasks, stage results, task logs, webhook
 * events and API tokens. WAL mode, foreign keys on, and a versioned schema
 * brought up to date by ordered migrations when the file is opened. */
#ifndef REPLICA_STORE_H
#define REPLICA_STORE_H

#include <stddef.h>

#include <sqlite3.h>

/* The size the WAL file is cut back to after a checkpoint has restarted it
 * (PRAGMA journal_size_limit). SQLite's automatic checkpoint runs every 1,000
 * pages, a WAL of about 4 MB, so in a steady state the file stays under this;
 * a burst written while a reader held a snapshot grows it past, and without a
 * limit the file would keep that size for good. */
#define STORE_WAL_LIMIT (4 * 1024 * 1024)

struct store {
    sqlite3 *db;
    char *path;
    char notice[1024]; /* what store_open changed that the log should say, or "" */
};

/* Opens (creating it mode 0600 if needed) the database at path and migrates
 * it to the current schema. A database, -wal or -shm file that group or
 * others may access is made 0600, and notice says so. Returns NULL with a
 * message in err on failure. The caller owns the store and closes it with
 * store_close. */
struct store *store_open(const char *path, char *err, size_t errlen);

/* Closes the database; NULL allowed. */
void store_close(struct store *s);

/* Returns the schema version the database is at (PRAGMA user_version). */
int store_version(struct store *s);

/* Returns the schema version this build migrates to. */
int store_latest_version(void);

#endif
