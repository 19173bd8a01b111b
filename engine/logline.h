/* logline.h - one log line, formatted as text or as a JSON object, into
 * the caller's buffer: no allocation and no global state, so the watchdog
 * thread formats its lines with it too. */
#ifndef REPLICA_LOGLINE_H
#define REPLICA_LOGLINE_H

#include <stddef.h>
#include <time.h>

/* A message longer than this is cut (JSON: before escaping). */
#define LOGLINE_MSG_MAX 2047
/* The buffer logline_format writes into: room for the longest message
 * escaped (6 bytes per byte at worst) and the context fields. */
#define LOGLINE_MAX 16384

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* What a line is logged on behalf of; every field may be absent. */
struct logline_ctx {
    const char *task;   /* the engine task's name, or NULL (the engine itself) */
    long task_id;       /* > 0: serve's task (sys.task_log) -> "replica_task" */
    long execution;     /* > 0: serve's execution -> "replica_execution" */
    const char *run;    /* else this string (replica run's id), or NULL */
};

/* Parses "text" or "json"; returns 0, or -1 for another name. */
int logline_format_name(const char *s, enum log_format *out);

/* Writes one newline-terminated line into out (LOGLINE_MAX bytes) and
 * returns its length. level is 0..3 (debug, info, warn, error); when is
 * the wall-clock time. Text: "TIME LEVEL [task] message", as before;
 * JSON: {"time","level","message", then the context fields present}. */
size_t logline_format(char *out, enum log_format fmt, const struct timespec *when, int level,
                      const char *msg, const struct logline_ctx *c);

/* Writes s (len bytes) as a quoted JSON string into out, which has room
 * for n bytes, and returns the length written (not NUL-terminated).
 * Quotes, backslashes and control characters are escaped, valid UTF-8 is
 * kept, and every byte of an invalid sequence becomes \ufffd. When the
 * result would not fit, it stops at a whole character and still closes the
 * string; n must be at least 2. */
size_t logline_json_string(char *out, size_t n, const char *s, size_t len);

#endif
