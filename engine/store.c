/* store.c - the SQLite database and its migrations. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The migrations, in order: migration i brings the schema from version i to
 * i + 1. Never edit one that has shipped; add a new one. */
static const char *const migrations[] = {
    /* 1: the first schema */
    "CREATE TABLE registries ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  kind TEXT NOT NULL,"
    "  url TEXT NOT NULL,"
    "  username TEXT,"
    "  password_sealed TEXT,"              /* AES-256-GCM, see secret.c */
    "  ca_file TEXT,"
    "  insecure INTEGER NOT NULL DEFAULT 0,"
    "  created REAL NOT NULL,"
    "  updated REAL NOT NULL);"
    "CREATE TABLE policies ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  description TEXT,"
    "  src_registry INTEGER NOT NULL REFERENCES registries(id),"
    "  dst_registry INTEGER NOT NULL REFERENCES registries(id),"
    "  repos TEXT NOT NULL DEFAULT '[]',"          /* JSON lists of globs */
    "  exclude_repos TEXT NOT NULL DEFAULT '[]',"
    "  tags TEXT NOT NULL DEFAULT '[]',"
    "  exclude_tags TEXT NOT NULL DEFAULT '[]',"
    "  dest_namespace TEXT,"
    "  flatten INTEGER NOT NULL DEFAULT 0,"
    "  trigger TEXT NOT NULL DEFAULT 'manual' CHECK (trigger IN ('manual', 'cron', 'event')),"
    "  cron TEXT,"
    "  override INTEGER NOT NULL DEFAULT 1,"
    "  replicate_deletion INTEGER NOT NULL DEFAULT 0,"
    "  enabled INTEGER NOT NULL DEFAULT 1,"
    "  template TEXT NOT NULL DEFAULT 'distribution',"
    "  jobs INTEGER NOT NULL DEFAULT 8,"
    "  bandwidth_kbps INTEGER NOT NULL DEFAULT 0,"
    "  created REAL NOT NULL,"
    "  updated REAL NOT NULL);"
    "CREATE TABLE executions ("
    "  id INTEGER PRIMARY KEY,"
    "  policy INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,"
    "  status TEXT NOT NULL DEFAULT 'Pending'"
    "    CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Stopped')),"
    "  trigger TEXT NOT NULL,"
    "  total INTEGER NOT NULL DEFAULT 0,"
    "  succeeded INTEGER NOT NULL DEFAULT 0,"
    "  failed INTEGER NOT NULL DEFAULT 0,"
    "  stopped INTEGER NOT NULL DEFAULT 0,"
    "  started REAL,"
    "  finished REAL);"
    "CREATE INDEX executions_by_policy ON executions(policy, id);"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY,"
    "  execution INTEGER NOT NULL REFERENCES executions(id) ON DELETE CASCADE,"
    "  repository TEXT NOT NULL,"
    "  dest_repository TEXT NOT NULL,"
    "  tags TEXT NOT NULL DEFAULT '[]',"
    "  status TEXT NOT NULL DEFAULT 'Pending'"
    "    CHECK (status IN ('Pending', 'Running', 'Succeeded', 'Failed', 'Stopped')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  started REAL,"
    "  finished REAL,"
    "  error TEXT);"
    "CREATE INDEX tasks_by_execution ON tasks(execution, id);"
    "CREATE INDEX tasks_by_status ON tasks(status);"
    "CREATE TABLE stage_results ("
    "  task INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"                 /* template order */
    "  name TEXT NOT NULL,"
    "  function TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  started REAL,"
    "  finished REAL,"
    "  output TEXT,"                          /* JSON */
    "  error TEXT,"
    "  PRIMARY KEY (task, seq));"
    "CREATE TABLE task_logs ("
    "  id INTEGER PRIMARY KEY,"
    "  task INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
    "  ts REAL NOT NULL,"
    "  level TEXT NOT NULL,"
    "  message TEXT NOT NULL);"
    "CREATE INDEX task_logs_by_task ON task_logs(task, id);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  received REAL NOT NULL,"
    "  source TEXT NOT NULL,"                 /* distribution | harbor */
    "  payload TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'matched', 'ignored')));"
    "CREATE TABLE tokens ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  hash TEXT NOT NULL UNIQUE,"            /* sha256 of the token; never the token */
    "  created REAL NOT NULL);",
    /* 2: what `replica serve` needs beyond the first schema: webhook secrets
     * per source registry (hashed), execution scope and queueing, task kinds
     * (copy or delete), and what became of each webhook event. */
    "ALTER TABLE registries ADD COLUMN description TEXT;"
    "ALTER TABLE registries ADD COLUMN webhook_secret_hash TEXT;" /* sha256 hex */
    "CREATE INDEX registries_by_webhook_secret ON registries(webhook_secret_hash);"
    "ALTER TABLE executions ADD COLUMN scope TEXT NOT NULL DEFAULT 'all'"
    "  CHECK (scope IN ('all', 'artifacts'));"
    "ALTER TABLE executions ADD COLUMN planned INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE executions ADD COLUMN error TEXT;"
    "ALTER TABLE executions ADD COLUMN created REAL;"
    "ALTER TABLE executions ADD COLUMN triggers INTEGER NOT NULL DEFAULT 1;" /* coalesced */
    "CREATE INDEX executions_by_status ON executions(status, policy);"
    "ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'copy'"
    "  CHECK (kind IN ('copy', 'delete'));"
    "ALTER TABLE events ADD COLUMN registry INTEGER;"
    "ALTER TABLE events ADD COLUMN detail TEXT;",
    /* 3: named settings of the daemon; "key_check" holds a constant sealed
     * under the key file, so that a start with the wrong key is refused. */
    "CREATE TABLE settings ("
    "  name TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL);",
    /* 4: how often each unfinished task held the event loop when the daemon
     * had to be ended after its grace period (serve/poison.lua). */
    "CREATE TABLE stuck_tasks ("
    "  task INTEGER PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,"
    "  count INTEGER NOT NULL,"
    "  stage TEXT NOT NULL,"                  /* the engine task holding the loop */
    "  updated REAL NOT NULL);",
    /* 5: stage functions and process templates managed through the API
     * (serve/library.lua): every save is an immutable version; sources are
     * kept once per content hash. An execution pins the versions it runs
     * (drafts included) when it starts, and each stage result records the
     * function version that ran. */
    "CREATE TABLE script_sources ("
    "  sha256 TEXT PRIMARY KEY,"
    "  source TEXT NOT NULL);"
    "CREATE TABLE script_versions ("
    "  kind TEXT NOT NULL CHECK (kind IN ('stages', 'templates')),"
    "  name TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL REFERENCES script_sources(sha256),"
    "  created REAL NOT NULL,"
    "  by TEXT NOT NULL,"
    "  PRIMARY KEY (kind, name, version));"
    "CREATE TABLE execution_scripts ("
    "  execution INTEGER NOT NULL REFERENCES executions(id) ON DELETE CASCADE,"
    "  kind TEXT NOT NULL CHECK (kind IN ('stages', 'templates')),"
    "  name TEXT NOT NULL,"
    "  origin TEXT NOT NULL CHECK (origin IN ('bundled', 'user', 'draft')),"
    "  version INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL REFERENCES script_sources(sha256),"
    "  PRIMARY KEY (execution, kind, name));"
    "ALTER TABLE executions ADD COLUMN draft INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE stage_results ADD COLUMN function_version INTEGER;"
    "ALTER TABLE stage_results ADD COLUMN function_origin TEXT;",
    /* 6: registry kinds (issue 10): the credential fields a kind takes
     * beyond username and password, sealed as one JSON object (their names
     * kept in clear, for the API's view), and the kind's options. */
    "ALTER TABLE registries ADD COLUMN credentials_sealed TEXT;"
    "ALTER TABLE registries ADD COLUMN credential_names TEXT;"
    "ALTER TABLE registries ADD COLUMN options TEXT;"
    "ALTER TABLE policies ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';", /* Harbor's label filter */
    /* 7: FaaS dispatch (issue 11): a policy's executor (NULL: the daemon's
     * --executor) and retry limit (NULL: --faas-retries), and every attempt
     * at a task, written before it is dispatched: its lease, the hash of
     * its callback token, and how it ended. tasks.attempts is the number of
     * the current attempt; a result or callback of any other is ignored. A
     * remote stage's result records how many attempts it took. */
    "ALTER TABLE policies ADD COLUMN executor TEXT CHECK (executor IN ('local', 'faas'));"
    "ALTER TABLE policies ADD COLUMN retries INTEGER;"
    "ALTER TABLE stage_results ADD COLUMN attempts INTEGER;"   /* a remote stage's */
    "CREATE TABLE task_attempts ("
    "  task INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,"
    "  attempt INTEGER NOT NULL,"
    "  executor TEXT NOT NULL CHECK (executor IN ('local', 'faas')),"
    "  mode TEXT,"                            /* faas: sync | async */
    "  status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'lost', 'cancelled')),"
    "  call_id TEXT,"
    "  callback_hash TEXT UNIQUE,"            /* sha256 of the attempt's callback token */
    "  dispatched REAL NOT NULL,"
    "  lease_until REAL,"
    "  finished REAL,"
    "  error TEXT,"
    "  PRIMARY KEY (task, attempt));"
    "CREATE INDEX task_attempts_running ON task_attempts(status) WHERE status = 'running';"
    /* an execution's counts, recomputed at every task's end, from the index alone */
    "CREATE INDEX tasks_by_execution_status ON tasks(execution, status);"
    /* a webhook event's task: found by repository, not by a scan */
    "CREATE INDEX tasks_by_execution_repository ON tasks(execution, repository);",
    /* 8: retention and audit (issue 13): how many ended executions a policy
     * keeps (NULL: the daemon's --keep-executions; 0: all), found newest
     * first by the time they ended; webhook events pruned by the time they
     * came; and one row per API write (serve/audit.lua): who (the token's
     * name), from where, what (method, path, the object's kind and id) and
     * the answer's status, never a body. Sources that neither a version
     * nor a kept execution references are pruned, found through sha256. */
    "ALTER TABLE policies ADD COLUMN keep_executions INTEGER CHECK (keep_executions >= 0);"
    "CREATE INDEX executions_by_policy_finished ON executions(policy, finished);"
    "CREATE INDEX events_by_received ON events(received);"
    "CREATE INDEX execution_scripts_by_sha256 ON execution_scripts(sha256);"
    "CREATE INDEX script_versions_by_sha256 ON script_versions(sha256);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"               /* the listing's order and cursor */
    "  time REAL NOT NULL,"
    "  who TEXT NOT NULL,"                    /* the token's name */
    "  address TEXT,"                         /* the client's, as the connection shows it */
    "  method TEXT NOT NULL,"
    "  path TEXT NOT NULL,"                   /* without the query */
    "  object_kind TEXT,"                     /* registries, policies, executions, ... */
    "  object_id TEXT,"                       /* an id, or a function's or template's name */
    "  status INTEGER NOT NULL);"
    "CREATE INDEX audit_by_time ON audit(time);",
    /* 9: a registry's client certificate (mTLS), as paths on the daemon's
     * machine like ca_file: the key itself never enters the database. */
    "ALTER TABLE registries ADD COLUMN cert_file TEXT;"
    "ALTER TABLE registries ADD COLUMN key_file TEXT;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

int store_latest_version(void)
{
    return NMIGRATIONS;
}

int store_version(struct store *s)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Runs sql; on failure writes "what: sqlite's message" into err. */
static int exec(struct store *s, const char *sql, const char *what, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", what, msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return -1;
}

/* Applies the migrations the database lacks, each in its own transaction
 * together with its version bump, so a failure leaves the last good version. */
static int migrate(struct store *s, char *err, size_t errlen)
{
    int v = store_version(s);
    if (v < 0) {
        snprintf(err, errlen, "cannot read the schema version: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    if (v > NMIGRATIONS) {
        snprintf(err, errlen, "%s has schema version %d, newer than this replica knows (%d)",
                 s->path, v, NMIGRATIONS);
        return -1;
    }
    for (; v < NMIGRATIONS; v++) {
        char what[64], bump[64];
        snprintf(what, sizeof(what), "migration %d", v + 1);
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
        if (exec(s, "BEGIN IMMEDIATE", what, err, errlen) != 0)
            return -1;
        if (exec(s, migrations[v], what, err, errlen) != 0 ||
            exec(s, bump, what, err, errlen) != 0) {
            char ignored[16];
            exec(s, "ROLLBACK", "rollback", ignored, sizeof(ignored));
            return -1;
        }
        if (exec(s, "COMMIT", what, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Appends "file was mode M, now 0600" to s->notice. */
static void note_tightened(struct store *s, const char *file, mode_t was)
{
    size_t n = strlen(s->notice);
    snprintf(s->notice + n, sizeof(s->notice) - n, "%s%s was mode %04o, now 0600", n ? "; " : "",
             file, (unsigned)(was & 07777));
}

/* Tightens the open file fd (named file) to 0600 when group or others may
 * access it, noting it in s->notice. Returns 0, or -1 with err. */
static int tighten(struct store *s, int fd, const char *file, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", file, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) == 0)
        return 0;
    if (fchmod(fd, 0600) != 0) {
        snprintf(err, errlen, "%s has mode %04o and cannot be made private: %s", file,
                 (unsigned)(st.st_mode & 07777), strerror(errno));
        return -1;
    }
    note_tightened(s, file, st.st_mode);
    return 0;
}

/* Makes the database private before SQLite opens it: creates the file 0600
 * when absent (SQLite gives -wal and -shm the mode of the database), and
 * tightens an existing database, -wal or -shm that group or others may
 * access. Returns 0, or -1 with err. */
static int make_private(struct store *s, char *err, size_t errlen)
{
    if (s->path[0] == '\0' || strcmp(s->path, ":memory:") == 0 || strncmp(s->path, "file:", 5) == 0)
        return 0; /* temporary, in-memory or URI databases: SQLite's business */
    static const char *const suffixes[] = { "", "-wal", "-shm" };
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char file[4096];
        if (snprintf(file, sizeof(file), "%s%s", s->path, suffixes[i]) >= (int)sizeof(file)) {
            snprintf(err, errlen, "database path too long: %s", s->path);
            return -1;
        }
        int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (i == 0 ? O_CREAT : 0), 0600);
        if (fd < 0) {
            if (i > 0 && errno == ENOENT)
                continue;
            snprintf(err, errlen, "cannot open %s: %s", file, strerror(errno));
            return -1;
        }
        int rc = tighten(s, fd, file, err, errlen);
        close(fd);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* After a failed setup: when SQLite could open the database only for
 * reading (a read-only file or filesystem), or its disk is full, rewrites
 * err to say so first, since SQLite's own message ("unable to open
 * database file", "disk I/O error") does not name the cause. */
static void explain_failure(struct store *s, char *err, size_t errlen)
{
    int sys = sqlite3_system_errno(s->db);
    const char *why = NULL;
    if (sqlite3_db_readonly(s->db, "main") == 1 || sys == EROFS)
        why = "is read-only (its file or its filesystem does not allow writing), and it must be writable";
    else if (sys == ENOSPC || sqlite3_errcode(s->db) == SQLITE_FULL)
        why = "is on a full disk: free some space";
    if (!why)
        return;
    char was[512];
    snprintf(was, sizeof(was), "%s", err);
    snprintf(err, errlen, "the database %s %s: %s", s->path, why, was);
}

struct store *store_open(const char *path, char *err, size_t errlen)
{
    struct store *s = calloc(1, sizeof(*s));
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (make_private(s, err, errlen) != 0) {
        store_close(s);
        return NULL;
    }
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, 5000);
    char what[300];
    snprintf(what, sizeof(what), "setting up %s", path);
    char pragmas[200];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
             "PRAGMA journal_size_limit = %d;",
             STORE_WAL_LIMIT);
    if (exec(s, pragmas, what, err, errlen) != 0 ||
        migrate(s, err, errlen) != 0) {
        explain_failure(s, err, errlen);
        store_close(s);
        return NULL;
    }
    return s;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db); /* prepared statements are finalized by their owners */
    free(s->path);
    free(s);
}
