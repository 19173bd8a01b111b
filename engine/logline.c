/* logline.c - formats one log line as text or as a JSON object (see
 * logline.h). Messages carry text from registries and scripts: in JSON
 * every byte is escaped or checked as UTF-8, so a line always parses. */
#include <stdio.h>
#include <string.h>

#include "logline.h"

#define TASK_NAME_MAX 256 /* a task's name is cut to this many bytes */

static const char *const text_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
static const char *const json_names[] = { "debug", "info", "warn", "error" };

int logline_format_name(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

/* Returns the length of the valid UTF-8 character at s (len bytes left),
 * or 0 when it is not one: a stray continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF, or a sequence cut short. */
static size_t utf8_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned long cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

size_t logline_json_string(char *out, size_t n, const char *s, size_t len)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len;) {
        const unsigned char *p = (const unsigned char *)s + i;
        char esc[8];
        const char *piece = (const char *)p;
        size_t plen = 1, adv = 1, u = utf8_len(p, len - i);
        if (u == 0) {
            piece = "\\ufffd", plen = 6;
        } else if (u > 1) {
            plen = adv = u;
        } else if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p;
            piece = esc, plen = 2;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            esc[0] = '\\', esc[1] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
            piece = esc, plen = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            piece = esc, plen = 6;
        }
        if (o + plen + 1 > n)
            break; /* keep room for the closing quote */
        memcpy(out + o, piece, plen);
        o += plen;
        i += adv;
    }
    out[o++] = '"';
    return o;
}

/* Appends len bytes of s to out (LOGLINE_MAX bytes) at *o, if they fit
 * with room left for the closing "}\n". */
static void put(char *out, size_t *o, const char *s, size_t len)
{
    if (*o + len + 2 <= LOGLINE_MAX) {
        memcpy(out + *o, s, len);
        *o += len;
    }
}

/* Appends ,"key": and s as a JSON string (at most max bytes of it). */
static void put_string(char *out, size_t *o, const char *key, const char *s, size_t max)
{
    char k[40];
    int kl = snprintf(k, sizeof(k), ",\"%s\":", key);
    put(out, o, k, (size_t)kl);
    size_t len = strlen(s);
    if (len > max)
        len = max;
    *o += logline_json_string(out + *o, LOGLINE_MAX - 2 - *o, s, len);
}

/* Appends ,"key":v. */
static void put_long(char *out, size_t *o, const char *key, long v)
{
    char k[64];
    int kl = snprintf(k, sizeof(k), ",\"%s\":%ld", key, v);
    put(out, o, k, (size_t)kl);
}

size_t logline_format(char *out, enum log_format fmt, const struct timespec *when, int level,
                      const char *msg, const struct logline_ctx *c)
{
    char ts[48];
    struct tm tm;
    if (level < 0 || level > 3)
        level = 3;
    gmtime_r(&when->tv_sec, &tm);
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03ldZ", when->tv_nsec / 1000000);
    size_t mlen = strlen(msg);
    if (mlen > LOGLINE_MSG_MAX)
        mlen = LOGLINE_MSG_MAX;
    if (fmt == LOG_FORMAT_TEXT) {
        int len = snprintf(out, LOGLINE_MAX, "%s %-5s [%s] %.*s\n", ts, text_names[level],
                           c && c->task ? c->task : "replica", (int)mlen, msg);
        if (len < 0)
            len = 0;
        if ((size_t)len >= LOGLINE_MAX) {
            len = LOGLINE_MAX - 1;
            out[len - 1] = '\n';
        }
        return (size_t)len;
    }
    size_t o = 0;
    int hl = snprintf(out, LOGLINE_MAX, "{\"time\":\"%s\",\"level\":\"%s\",\"message\":", ts,
                      json_names[level]);
    o = (size_t)hl;
    /* the message first, within what the other fields leave */
    o += logline_json_string(out + o, LOGLINE_MAX - o - 2 * TASK_NAME_MAX - 256, msg, mlen);
    if (c && c->task)
        put_string(out, &o, "task", c->task, TASK_NAME_MAX);
    if (c && c->task_id > 0)
        put_long(out, &o, "replica_task", c->task_id);
    if (c && c->execution > 0)
        put_long(out, &o, "replica_execution", c->execution);
    else if (c && c->run)
        put_string(out, &o, "replica_execution", c->run, 64);
    out[o++] = '}';
    out[o++] = '\n';
    return o;
}
