/* test_logline.c - log lines as a log shipper reads them: one JSON object
 * per line, whatever bytes a registry or a script put in the message. */
#include "logline.h"
#include "test.h"

/* logline_json_string of s (len bytes) into a NUL-terminated static buffer. */
static const char *js(const char *s, size_t len, size_t room)
{
    static char out[LOGLINE_MAX];
    size_t n = logline_json_string(out, room, s, len);
    out[n] = '\0';
    return out;
}

/* Quotes, backslashes and every control character are escaped; printable
 * ASCII and valid UTF-8 pass as they are. */
TEST_IMPL(logline_json_escapes_controls)
{
    ASSERT_STR_EQ(js("a\"b\\c", 5, 64), "\"a\\\"b\\\\c\"");
    ASSERT_STR_EQ(js("l1\nl2\r\t", 7, 64), "\"l1\\nl2\\r\\t\"");
    ASSERT_STR_EQ(js("\x01\x1b[31m\x7f", 7, 64), "\"\\u0001\\u001b[31m\\u007f\"");
    ASSERT_STR_EQ(js("nul\0after", 9, 64), "\"nul\\u0000after\"");
    ASSERT_STR_EQ(js("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb3", 14, 64),
                  "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb3\"");
    return 0;
}

/* Every byte of an invalid UTF-8 sequence becomes U+FFFD, so the line is
 * still valid JSON (and valid UTF-8). */
TEST_IMPL(logline_json_replaces_invalid_utf8)
{
    ASSERT_STR_EQ(js("a\xff" "b", 3, 64), "\"a\\ufffdb\"");                 /* not a lead byte */
    ASSERT_STR_EQ(js("\x80", 1, 64), "\"\\ufffd\"");                         /* lone continuation */
    ASSERT_STR_EQ(js("\xc0\xaf", 2, 64), "\"\\ufffd\\ufffd\"");              /* overlong '/' */
    ASSERT_STR_EQ(js("\xed\xa0\x80", 3, 64), "\"\\ufffd\\ufffd\\ufffd\"");   /* a surrogate */
    ASSERT_STR_EQ(js("\xf4\x90\x80\x80", 4, 64), "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    ASSERT_STR_EQ(js("x\xe2\x82", 3, 64), "\"x\\ufffd\\ufffd\"");            /* cut short */
    return 0;
}

/* A string that does not fit stops at a whole character or escape and is
 * still closed. */
TEST_IMPL(logline_json_truncates_whole)
{
    ASSERT_STR_EQ(js("abcdef", 6, 5), "\"abc\"");
    ASSERT_STR_EQ(js("a\nb", 3, 4), "\"a\"");           /* not half of its escape */
    ASSERT_STR_EQ(js("a\xe2\x82\xac", 4, 5), "\"a\"");  /* not half of the euro sign */
    ASSERT_STR_EQ(js("abc", 3, 2), "\"\"");
    return 0;
}

/* A JSON line: RFC 3339 time in UTC with milliseconds, the level, the
 * message, the task, serve's task and execution ids as numbers. */
TEST_IMPL(logline_json_line_fields)
{
    char out[LOGLINE_MAX];
    struct timespec when = { 1796276929, 123456789 }; /* 2026-12-03T05:48:49.123Z */
    struct logline_ctx c = { "stage push", 7, 3, "run-ignored" };
    size_t n = logline_format(out, LOG_FORMAT_JSON, &when, 2, "copy \"x\"", &c);
    out[n] = '\0';
    ASSERT_STR_EQ(out, "{\"time\":\"2026-12-03T05:48:49.123Z\",\"level\":\"warn\",\"message\":"
                       "\"copy \\\"x\\\"\",\"task\":\"stage push\",\"replica_task\":7,"
                       "\"replica_execution\":3}\n");
    struct logline_ctx r = { NULL, 0, 0, "run-0123abcd" };
    n = logline_format(out, LOG_FORMAT_JSON, &when, 1, "hello", &r);
    out[n] = '\0';
    ASSERT_STR_EQ(out, "{\"time\":\"2026-12-03T05:48:49.123Z\",\"level\":\"info\",\"message\":"
                       "\"hello\",\"replica_execution\":\"run-0123abcd\"}\n");
    n = logline_format(out, LOG_FORMAT_JSON, &when, 0, "engine", NULL);
    out[n] = '\0';
    ASSERT_STR_EQ(out, "{\"time\":\"2026-12-03T05:48:49.123Z\",\"level\":\"debug\",\"message\":"
                       "\"engine\"}\n");
    return 0;
}

/* The text format is the one the log always had. */
TEST_IMPL(logline_text_line)
{
    char out[LOGLINE_MAX];
    struct timespec when = { 1796276929, 5000000 };
    struct logline_ctx c = { "task 7", 7, 3, NULL };
    size_t n = logline_format(out, LOG_FORMAT_TEXT, &when, 3, "boom", &c);
    out[n] = '\0';
    ASSERT_STR_EQ(out, "2026-12-03T05:48:49.005Z ERROR [task 7] boom\n");
    n = logline_format(out, LOG_FORMAT_TEXT, &when, 1, "up", NULL);
    out[n] = '\0';
    ASSERT_STR_EQ(out, "2026-12-03T05:48:49.005Z INFO  [replica] up\n");
    return 0;
}

/* The longest message, every byte needing the longest escape, still makes
 * one closed line within LOGLINE_MAX, cut at LOGLINE_MSG_MAX bytes. */
TEST_IMPL(logline_longest_line_fits)
{
    static char msg[LOGLINE_MSG_MAX + 100], name[1000];
    char out[LOGLINE_MAX];
    memset(msg, 0x01, sizeof(msg) - 1);
    memset(name, 0x02, sizeof(name) - 1);
    struct timespec when = { 0, 0 };
    struct logline_ctx c = { name, 1, 2, NULL };
    size_t n = logline_format(out, LOG_FORMAT_JSON, &when, 1, msg, &c);
    ASSERT(n < LOGLINE_MAX);
    out[n] = '\0';
    ASSERT_EQ(out[n - 1], '\n');
    ASSERT_EQ(out[n - 2], '}');
    const char *m = strstr(out, "\"message\":\"");
    ASSERT_NOT_NULL(m);
    const char *end = strstr(m, "\",\"task\"");
    ASSERT_NOT_NULL(end);
    ASSERT_EQ((size_t)(end - m - 11), (size_t)LOGLINE_MSG_MAX * 6);
    ASSERT_NOT_NULL(strstr(out, "\"replica_task\":1,\"replica_execution\":2}"));
    return 0;
}
