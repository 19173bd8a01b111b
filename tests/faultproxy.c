/*
 * faultproxy - a TCP proxy on loopback that makes a link look far and
 * flaky, for `make test` and `make bench`. The kernel here has no netem, so
 * the link is made in user space: every byte read from one side is queued
 * with the time it may leave, and leaves no sooner, and no faster than the
 * link's rate.
 *
 *   faultproxy --upstream HOST:PORT [--listen PORT] [--port-file FILE]
 *              [--rtt MS | --delay-up MS --delay-down MS]
 *              [--rate RATE | --rate-up RATE --rate-down RATE]
 *              [--rules FILE] [--seed N] [--raw]
 *
 * RATE is bits per second with an optional k, m or g suffix (200m). The
 * rate is the link's, shared by all connections in that direction. "Up" is
 * client to upstream. A new connection's first bytes wait one more round
 * trip, the TCP handshake a real link would cost.
 *
 * Over plain HTTP/1.1 the proxy reads the requests and responses it carries
 * (it does not expect pipelining, which curl does not do) and applies
 * rules, one per line, tried in order; the first that fires acts:
 *
 *   METHOD PATTERN [nth=N] [times=K] [every=E] [prob=P] ACTION
 *
 * METHOD is GET, PUT, ... or * (any), or TCP for a rule on whole
 * connections (the pattern is then ignored: it fires on the Nth connection
 * and counts all the bytes sent back). PATTERN is an fnmatch(3) glob on the
 * path without its query; * also matches /. A rule fires from its Nth
 * match, at most K times (default: always), on every Eth match from the
 * Nth, with probability P (--seed makes it repeatable). ACTION is one of:
 *   status=CODE [retry-after=S]  answer CODE (with an OCI error body) and
 *                                close; the request is not forwarded
 *   reset=N       forward; reset the connection after N bytes of the
 *                 response's body reached the client
 *   truncate=N    forward; close (FIN) after N bytes of the body
 *   stall=N       forward; send nothing more after N bytes of the body
 *   reset-up=N    forward; reset after N bytes of the request's body
 *   delay=MS      forward MS later than the link alone would
 *   drop-header=NAME  forward; take the header NAME out of the answer's
 *                 head (a registry that leaves out Docker-Content-Digest)
 *   body=FILE [type=MEDIATYPE]  answer 200 with FILE's bytes (read when
 *                 the rules are set) as that Content-Type, and close: a
 *                 registry that serves what no real one would store
 * A connection that starts with a TLS record is carried as bytes (only
 * TCP rules apply); so is every connection with --raw.
 *
 * A control server on a second loopback port (both ports are written to
 * --port-file as "LISTEN CONTROL") takes:
 *   PUT /config   lines "key=value": rtt, delay-up, delay-down, rate,
 *                 rate-up, rate-down (as the flags); for new bytes
 *   PUT /rules    the rules, replacing all (their counts start again)
 *   GET /log      a line per request: "MS CONN METHOD PATH STATUS RULE"
 *                 (MS since the proxy started, when the request's head
 *                 arrived; STATUS the answer's, - when none came; RULE the
 *                 rule that fired, - for none)
 *   DELETE /log   empties the log
 *   GET /stats    "key value" lines: connections, open, requests,
 *                 answered, bytes_up, bytes_down
 * Exits cleanly on SIGTERM or SIGINT.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE 65536
#define QUEUE_CAP (4u << 20)  /* bytes queued per direction before reading stops */
#define HEAD_MAX 65536        /* a longer HTTP head makes the connection raw */
#define MAX_RULES 64
#define MAX_LOG 200000
#define CTL_MAX (1u << 20)
#define QUANTUM 65536         /* bytes a connection sends per turn under a rate cap */

/* One run of bytes waiting to leave, no sooner than due (µs). */
struct chunk {
    struct chunk *next;
    uint64_t due;
    size_t len, off;
    char data[];
};

/* What happens to a direction once its byte budget is spent. */
enum fault { F_NONE, F_RESET, F_TRUNC, F_STALL };

/* HTTP/1.1 message framing, as far as the proxy follows it. */
enum hstate { H_HEAD, H_BODY, H_CHUNK_SIZE, H_CHUNK_DATA, H_CHUNK_CRLF, H_TRAILER, H_RAW };

/* One direction of a connection: bytes read from one socket, queued, and
 * written to the other. */
struct dir {
    struct chunk *head, *tail;
    size_t queued;
    int eof;            /* the source sent FIN */
    int shut;           /* FIN passed on */
    enum hstate hs;
    char *hbuf;         /* the head being read (up: buffered; down: scanned) */
    size_t hlen;
    uint64_t left;      /* body or chunk bytes still to come */
    char line[64];      /* a chunk-size or trailer line */
    size_t llen;
    long long budget;   /* body bytes before the fault; -1: no fault */
    enum fault fault;
    int cut;            /* the budget is spent: read no more, act once drained */
    int blocked;        /* the last write met EAGAIN */
    char drop[64];      /* down: a header to take out of the answer's head */
};

/* What an epoll event is about: its kind and the object it belongs to. */
struct tag {
    enum { T_LISTEN, T_CTL_LISTEN, T_SIGNAL, T_CLIENT, T_UPSTREAM, T_CTL } kind;
    void *obj;
};

/* One client connection and its upstream. */
struct conn {
    struct conn *next, *prev;
    int dead;           /* closed; freed once the current batch of events is done */
    unsigned id;
    int cfd, ufd;
    int connected;      /* the upstream connect finished */
    int first;          /* no byte of the client's forwarded yet */
    int closing;        /* answered by the proxy: close once the answer is out */
    unsigned cev, uev;  /* the epoll interest sets */
    struct dir up, down;
    long log;           /* the log entry of the request in flight, or -1 */
    struct tag tc, tu;  /* the epoll tags of cfd and ufd */
};

/* One rule, as parsed, and its counts. */
struct rule {
    char method[16];
    char pattern[512];
    long nth, times, every;
    double prob;
    int status, retry_after;
    long long amount;
    char *body;         /* body=: the file's bytes (owned by the rule) */
    size_t blen;
    char ctype[128];
    char header[64];    /* drop-header=: the header's name */
    enum { A_STATUS, A_RESET, A_TRUNC, A_STALL, A_RESET_UP, A_DELAY, A_BODY, A_DROP_HEADER } action;
    long seen, fired;
};

/* One line of the request log. */
struct logent {
    uint64_t t;
    unsigned conn;
    short status, rule;
    char method[12];
    char path[240];
};

/* A control-port client: its request, read whole before it is answered. */
struct ctl {
    int fd;
    struct tag tag;
    char *buf;
    size_t len;
};

/* One direction's share of the link: a token bucket (bytes) and its rate. */
struct bucket {
    double tokens;
    uint64_t rate;      /* bytes/s; 0: no cap */
    uint64_t at;        /* µs of the last refill */
};

static int epfd = -1;
static struct tag tag_listen = {T_LISTEN, NULL}, tag_ctl_listen = {T_CTL_LISTEN, NULL},
                  tag_signal = {T_SIGNAL, NULL};
static struct conn *conns, *graveyard;
static unsigned next_id = 1;
static struct addrinfo *upstream;
static uint64_t delay_up, delay_down;  /* µs, one way */
static struct bucket bk_up, bk_down;
static int raw_only;
static struct rule rules[MAX_RULES];
static int nrules;
static long tcp_seen[MAX_RULES];
static struct logent *logv;
static long nlog;
static uint64_t t0;
static struct {
    unsigned long long connections, open, requests, answered, bytes_up, bytes_down;
} stats;
static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;

/* µs since an arbitrary start (CLOCK_MONOTONIC). */
static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A uniform double in [0, 1) from a xorshift64* generator (seeded by --seed). */
static double rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Prints a message to stderr, prefixed with the program's name. */
static void warnf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("faultproxy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Parses a rate ("200m", "8000k", "1g", bits/s) into bytes/s; -1 if bad. */
static long long parse_rate(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    double mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1e6, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1e9, end++;
    if (*end)
        return -1;
    return (long long)(v * mul / 8);
}

/* Parses a non-negative decimal into *out; -1 if s is not one. */
static int parse_num(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Applies one setting (a flag's name without its dashes, and its value);
 * -1 with a message in err when it is unknown or its value is bad. */
static int set_option(const char *key, const char *val, char *err, size_t errlen)
{
    long long v;
    if (!strcmp(key, "rtt") || !strcmp(key, "delay-up") || !strcmp(key, "delay-down")) {
        if (parse_num(val, &v) != 0)
            return snprintf(err, errlen, "%s: %s is not a number of ms", key, val), -1;
        if (!strcmp(key, "rtt"))
            delay_up = delay_down = (uint64_t)v * 500u;
        else if (!strcmp(key, "delay-up"))
            delay_up = (uint64_t)v * 1000u;
        else
            delay_down = (uint64_t)v * 1000u;
        return 0;
    }
    if (!strcmp(key, "rate") || !strcmp(key, "rate-up") || !strcmp(key, "rate-down")) {
        if ((v = parse_rate(val)) < 0)
            return snprintf(err, errlen, "%s: %s is not a rate (bits/s, e.g. 200m)", key, val), -1;
        if (strcmp(key, "rate-down"))
            bk_up.rate = (uint64_t)v;
        if (strcmp(key, "rate-up"))
            bk_down.rate = (uint64_t)v;
        return 0;
    }
    return snprintf(err, errlen, "unknown setting %s", key), -1;
}

/* Reads the file at path whole into *out (malloc'd, the caller's) and its
 * length into *len; -1 with errno set on failure. */
static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (size_t got; b && (got = fread(b + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb, cap *= 2;
        }
    }
    int bad = ferror(f) || !b;
    fclose(f);
    if (bad) {
        free(b);
        errno = errno ? errno : ENOMEM;
        return -1;
    }
    *out = b, *len = n;
    return 0;
}

/* Frees what the rules r[0..n) own. */
static void free_rules(struct rule *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].body);
        r[i].body = NULL;
    }
}

/* Parses one rule line into *r; -1 with a message in err if it is bad. */
static int parse_rule(char *line, struct rule *r, char *err, size_t errlen)
{
    char *save = NULL;
    char *method = strtok_r(line, " \t", &save);
    char *pattern = strtok_r(NULL, " \t", &save);
    if (!method || !pattern)
        return snprintf(err, errlen, "a rule is METHOD PATTERN ... ACTION"), -1;
    memset(r, 0, sizeof *r);
    r->action = -1;
    r->nth = 1;
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->pattern, sizeof r->pattern, "%s", pattern);
    for (char *w; (w = strtok_r(NULL, " \t", &save));) {
        char *eq = strchr(w, '=');
        if (!eq)
            return snprintf(err, errlen, "%s: expected key=value", w), -1;
        *eq = 0;
        const char *k = w, *v = eq + 1;
        long long n = 0;
        if (!strcmp(k, "body")) {
            if (read_file(v, &r->body, &r->blen) != 0)
                return snprintf(err, errlen, "body=%s: %s", v, strerror(errno)), -1;
            r->action = A_BODY;
            continue;
        }
        if (!strcmp(k, "type")) {
            snprintf(r->ctype, sizeof r->ctype, "%s", v);
            continue;
        }
        if (!strcmp(k, "drop-header")) {
            if (!*v || strlen(v) >= sizeof r->header || strchr(v, ':'))
                return snprintf(err, errlen, "drop-header=%s: expected a header name", v), -1;
            snprintf(r->header, sizeof r->header, "%s", v);
            r->action = A_DROP_HEADER;
            continue;
        }
        if (!strcmp(k, "prob")) {
            char *end;
            r->prob = strtod(v, &end);
            if (end == v || *end || r->prob <= 0 || r->prob > 1)
                return snprintf(err, errlen, "prob=%s: expected 0 < P <= 1", v), -1;
            continue;
        }
        if (parse_num(v, &n) != 0)
            return snprintf(err, errlen, "%s=%s: expected a number", k, v), -1;
        if (!strcmp(k, "nth"))
            r->nth = n > 0 ? n : 1;
        else if (!strcmp(k, "times"))
            r->times = n;
        else if (!strcmp(k, "every"))
            r->every = n;
        else if (!strcmp(k, "retry-after"))
            r->retry_after = (int)n;
        else if (!strcmp(k, "status"))
            r->action = A_STATUS, r->status = (int)n;
        else if (!strcmp(k, "reset"))
            r->action = A_RESET, r->amount = n;
        else if (!strcmp(k, "truncate"))
            r->action = A_TRUNC, r->amount = n;
        else if (!strcmp(k, "stall"))
            r->action = A_STALL, r->amount = n;
        else if (!strcmp(k, "reset-up"))
            r->action = A_RESET_UP, r->amount = n;
        else if (!strcmp(k, "delay"))
            r->action = A_DELAY, r->amount = n;
        else
            return snprintf(err, errlen, "unknown word %s", k), -1;
    }
    if ((int)r->action < 0)
        return snprintf(err, errlen, "a rule needs an action (status=, reset=, truncate=, stall=, reset-up=, delay=, body=, drop-header=)"), -1;
    if (r->action == A_STATUS && (r->status < 100 || r->status > 599))
        return snprintf(err, errlen, "status=%d is not an HTTP status", r->status), -1;
    if (!strcmp(r->method, "TCP") && r->action != A_RESET && r->action != A_TRUNC && r->action != A_STALL)
        return snprintf(err, errlen, "a TCP rule takes reset=, truncate= or stall="), -1;
    return 0;
}

/* Replaces the rules with those in text (NUL-terminated; modified); on a
 * bad line nothing changes and -1 comes back with the line named in err. */
static int load_rules(char *text, char *err, size_t errlen)
{
    struct rule next[MAX_RULES];
    int n = 0, lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        line[strcspn(line, "\r")] = 0;
        if (strspn(line, " \t") == strlen(line))
            continue;
        if (n == MAX_RULES) {
            free_rules(next, n);
            return snprintf(err, errlen, "more than %d rules", MAX_RULES), -1;
        }
        char msg[200];
        if (parse_rule(line, &next[n], msg, sizeof msg) != 0) {
            free_rules(next, n + 1);
            return snprintf(err, errlen, "line %d: %s", lineno, msg), -1;
        }
        n++;
    }
    free_rules(rules, nrules);
    memcpy(rules, next, sizeof next[0] * (size_t)n);
    nrules = n;
    memset(tcp_seen, 0, sizeof tcp_seen);
    return 0;
}

/* Counts a match of rule r and says whether it fires now. */
static int rule_fires(struct rule *r)
{
    long seen = ++r->seen;
    if (seen < r->nth)
        return 0;
    if (r->times && r->fired >= r->times)
        return 0;
    if (r->every && (seen - r->nth) % r->every)
        return 0;
    if (r->prob > 0 && rnd() >= r->prob)
        return 0;
    r->fired++;
    return 1;
}

/* The first rule for an HTTP request (method, path) that fires, or -1. */
static int match_request(const char *method, const char *path)
{
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (!strcmp(r->method, "TCP"))
            continue;
        if (strcmp(r->method, "*") && strcasecmp(r->method, method))
            continue;
        if (fnmatch(r->pattern, path, 0) != 0)
            continue;
        if (rule_fires(r))
            return i;
    }
    return -1;
}

/* The first TCP rule that fires for a new connection, or -1. */
static int match_connection(void)
{
    for (int i = 0; i < nrules; i++)
        if (!strcmp(rules[i].method, "TCP") && rule_fires(&rules[i]))
            return i;
    return -1;
}

/* Adds a request to the log; returns its index, or -1 when the log is full. */
static long log_add(unsigned conn, const char *method, const char *path, int rule)
{
    if (nlog >= MAX_LOG)
        return -1;
    struct logent *e = &logv[nlog];
    e->t = now_us() - t0;
    e->conn = conn;
    e->status = 0;
    e->rule = (short)rule;
    snprintf(e->method, sizeof e->method, "%.*s", (int)sizeof e->method - 1, method);
    snprintf(e->path, sizeof e->path, "%.*s", (int)sizeof e->path - 1, path);
    return nlog++;
}

/* Queues len bytes on d, to leave at due; the queue owns the copy. */
static void enqueue(struct dir *d, const char *p, size_t len, uint64_t due)
{
    if (!len)
        return;
    struct chunk *c = malloc(sizeof *c + len);
    if (!c) {
        warnf("out of memory");
        exit(1);
    }
    c->next = NULL;
    c->due = d->tail && d->tail->due > due ? d->tail->due : due; /* order holds */
    c->len = len;
    c->off = 0;
    memcpy(c->data, p, len);
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    d->queued += len;
}

/* Frees what a direction still holds. */
static void dir_free(struct dir *d)
{
    for (struct chunk *c = d->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(d->hbuf);
    memset(d, 0, sizeof *d);
}

/* Sets an fd's epoll interest set to ev (tracked in *cur). */
static void watch(int fd, unsigned *cur, unsigned ev, void *tag)
{
    if (fd < 0 || *cur == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = tag};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e) != 0)
        warnf("epoll_ctl: %s", strerror(errno));
    *cur = ev;
}

/* Closes fd, aborting with a RST when rst is set. */
static void close_fd(int fd, int rst)
{
    if (fd < 0)
        return;
    if (rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
}

/* Ends a connection (rst: both sockets reset). It is freed by
 * bury_dead() once no event of the current batch can still name it. */
static void conn_close(struct conn *c, int rst)
{
    close_fd(c->cfd, rst);
    close_fd(c->ufd, rst);
    c->cfd = c->ufd = -1;
    dir_free(&c->up);
    dir_free(&c->down);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->dead = 1;
    c->next = graveyard;
    graveyard = c;
    stats.open--;
}

/* Frees the connections closed since the last call. */
static void bury_dead(void)
{
    while (graveyard) {
        struct conn *c = graveyard;
        graveyard = c->next;
        free(c);
    }
}

/* Closes the upstream side only (the proxy answers, or a fault cut it). */
static void conn_drop_upstream(struct conn *c)
{
    close_fd(c->ufd, 0);
    c->ufd = -1;
    c->uev = 0;
    dir_free(&c->up);
    c->down.eof = 1;
}

/* The reason phrase and OCI error code of a status the proxy answers. */
static void status_words(int status, const char **reason, const char **code)
{
    *reason = "Error", *code = "UNKNOWN";
    switch (status) {
    case 429: *reason = "Too Many Requests", *code = "TOOMANYREQUESTS"; break;
    case 500: *reason = "Internal Server Error"; break;
    case 502: *reason = "Bad Gateway", *code = "UNAVAILABLE"; break;
    case 503: *reason = "Service Unavailable", *code = "UNAVAILABLE"; break;
    case 504: *reason = "Gateway Timeout", *code = "UNAVAILABLE"; break;
    case 401: *reason = "Unauthorized", *code = "UNAUTHORIZED"; break;
    case 404: *reason = "Not Found", *code = "NAME_UNKNOWN"; break;
    }
}

/* Answers the request in flight on c by rule r, and closes c after it: the
 * answer leaves after the link's round trip, as a far server's would. */
static void answer(struct conn *c, const struct rule *r, int rule, int head_only)
{
    if (r->action == A_BODY) {
        char head[512];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                         r->ctype[0] ? r->ctype : "application/octet-stream", r->blen);
        conn_drop_upstream(c);
        c->down.hs = H_RAW;
        uint64_t due = now_us() + delay_up + delay_down;
        enqueue(&c->down, head, (size_t)n, due);
        if (!head_only)
            enqueue(&c->down, r->body, r->blen, due);
        c->down.eof = 1;
        c->closing = 1;
        stats.answered++;
        if (c->log >= 0)
            logv[c->log].status = 200;
        return;
    }
    const char *reason, *code;
    status_words(r->status, &reason, &code);
    char body[256], msg[1024];
    int blen = snprintf(body, sizeof body,
                        "{\"errors\":[{\"code\":\"%s\",\"message\":\"faultproxy: rule %d answered %d\",\"detail\":null}]}",
                        code, rule + 1, r->status);
    char ra[48] = "";
    if (r->retry_after)
        snprintf(ra, sizeof ra, "Retry-After: %d\r\n", r->retry_after);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s"
                     "Connection: close\r\n\r\n%s",
                     r->status, reason, blen, ra, head_only ? "" : body);
    conn_drop_upstream(c);
    c->down.hs = H_RAW;
    enqueue(&c->down, msg, (size_t)n, now_us() + delay_up + delay_down);
    c->down.eof = 1; /* nothing more comes: FIN once it is out */
    c->closing = 1;
    stats.answered++;
    if (c->log >= 0)
        logv[c->log].status = (short)r->status;
}

/* Finds header name in an HTTP head (NUL-terminated); returns its value. */
static const char *header(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        if (!strncasecmp(p + 2, name, n) && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ' || *v == '\t')
                v++;
            return v;
        }
    }
    return NULL;
}

/* A request head is whole in d->hbuf: logs it, applies the rules, and
 * forwards it unless a rule answers. Returns 1 when the proxy answered. */
static int request_head(struct conn *c, uint64_t due)
{
    struct dir *d = &c->up;
    d->hbuf[d->hlen] = 0;
    char method[16] = "?", path[1024] = "?";
    sscanf(d->hbuf, "%15s %1023s", method, path);
    path[strcspn(path, "?")] = 0;
    stats.requests++;
    int ri = match_request(method, path);
    c->log = log_add(c->id, method, path, ri);
    const char *te = header(d->hbuf, "Transfer-Encoding");
    const char *cl = header(d->hbuf, "Content-Length");
    if (te && !strncasecmp(te, "chunked", 7))
        d->hs = H_CHUNK_SIZE, d->llen = 0;
    else if (cl && (d->left = strtoull(cl, NULL, 10)) > 0)
        d->hs = H_BODY;
    else
        d->hs = H_HEAD;
    d->budget = -1;
    d->fault = F_NONE;
    c->down.hs = H_HEAD; /* the answer to this request comes next */
    c->down.hlen = 0;
    c->down.budget = -1;
    c->down.fault = F_NONE;
    c->down.drop[0] = 0;
    const struct rule *r = ri >= 0 ? &rules[ri] : NULL;
    if (r && (r->action == A_STATUS || r->action == A_BODY)) {
        answer(c, r, ri, !strcasecmp(method, "HEAD"));
        return 1;
    }
    if (r && r->action == A_DELAY)
        due += (uint64_t)r->amount * 1000u;
    if (r && (r->action == A_RESET || r->action == A_TRUNC || r->action == A_STALL)) {
        c->down.budget = r->amount;
        c->down.fault = r->action == A_RESET ? F_RESET : r->action == A_TRUNC ? F_TRUNC : F_STALL;
    }
    if (r && r->action == A_RESET_UP) {
        d->budget = r->amount;
        d->fault = F_RESET;
    }
    if (r && r->action == A_DROP_HEADER)
        snprintf(c->down.drop, sizeof c->down.drop, "%s", r->header);
    enqueue(d, d->hbuf, d->hlen, due);
    d->hlen = 0;
    return 0;
}

/* Queues body bytes p[0..n) on d, up to its fault budget; returns the
 * bytes taken (fewer than n once the budget is spent: d->cut is set). */
static size_t body_bytes(struct dir *d, const char *p, size_t n, uint64_t due)
{
    if (d->budget >= 0 && (long long)n >= d->budget) {
        n = (size_t)d->budget;
        d->cut = 1;
    }
    if (d->budget >= 0)
        d->budget -= (long long)n;
    enqueue(d, p, n, due);
    return n;
}

/* Reads the client's bytes p[0..n) as HTTP requests and queues them for
 * upstream; returns -1 when the proxy answered (the rest is dropped). */
static int feed_up(struct conn *c, const char *p, size_t n, uint64_t due)
{
    struct dir *d = &c->up;
    while (n && !d->cut) {
        size_t take;
        switch (d->hs) {
        case H_RAW:
            enqueue(d, p, n, due);
            return 0;
        case H_HEAD:
            if (!d->hbuf && !(d->hbuf = malloc(HEAD_MAX + 1))) {
                warnf("out of memory");
                exit(1);
            }
            if (d->hlen == 0 && (unsigned char)p[0] == 0x16) { /* a TLS record */
                d->hs = H_RAW;
                continue;
            }
            take = 0;
            while (take < n && d->hlen < HEAD_MAX) {
                d->hbuf[d->hlen++] = p[take++];
                if (d->hlen >= 4 && !memcmp(d->hbuf + d->hlen - 4, "\r\n\r\n", 4))
                    break;
            }
            p += take, n -= take;
            if (d->hlen >= 4 && !memcmp(d->hbuf + d->hlen - 4, "\r\n\r\n", 4)) {
                if (request_head(c, due))
                    return -1;
            } else if (d->hlen == HEAD_MAX) { /* not HTTP as the proxy reads it */
                enqueue(d, d->hbuf, d->hlen, due);
                d->hlen = 0;
                d->hs = H_RAW;
            }
            break;
        case H_BODY:
        case H_CHUNK_DATA:
            take = n < d->left ? n : (size_t)d->left;
            take = body_bytes(d, p, take, due);
            p += take, n -= take, d->left -= take;
            if (!d->left && !d->cut)
                d->hs = d->hs == H_BODY ? H_HEAD : H_CHUNK_CRLF, d->llen = 0;
            break;
        case H_CHUNK_SIZE:
        case H_CHUNK_CRLF:
        case H_TRAILER:
            /* a line, forwarded as it comes and read for its meaning */
            enqueue(d, p, 1, due);
            if (d->llen < sizeof d->line - 1)
                d->line[d->llen++] = p[0];
            p++, n--;
            if (d->llen && d->line[d->llen - 1] == '\n') {
                d->line[d->llen] = 0;
                int blank = d->line[0] == '\r' || d->line[0] == '\n';
                if (d->hs == H_CHUNK_SIZE) {
                    d->left = strtoull(d->line, NULL, 16);
                    d->hs = d->left ? H_CHUNK_DATA : H_TRAILER;
                } else if (d->hs == H_CHUNK_CRLF) {
                    d->hs = H_CHUNK_SIZE;
                } else if (blank) {
                    d->hs = H_HEAD;
                }
                d->llen = 0;
            }
            break;
        }
    }
    return 0;
}

/* Takes the header d->drop out of the whole head in d->hbuf[0..d->hlen):
 * every line "NAME:" of it, whatever the case. */
static void drop_header(struct dir *d)
{
    size_t len = strlen(d->drop), out = 0;
    for (size_t at = 0; at < d->hlen;) {
        const char *eol = memchr(d->hbuf + at, '\n', d->hlen - at);
        size_t end = eol ? (size_t)(eol - d->hbuf) + 1 : d->hlen;
        int named = at > 0 && end - at > len && d->hbuf[at + len] == ':' &&
                    !strncasecmp(d->hbuf + at, d->drop, len);
        if (!named) {
            memmove(d->hbuf + out, d->hbuf + at, end - at);
            out += end - at;
        }
        at = end;
    }
    d->hlen = out;
}

/* Reads upstream's bytes p[0..n) as HTTP responses (for the log and the
 * faults) and queues them for the client. A head is passed on as it comes,
 * or, with d->drop set, held until it is whole and passed on without that
 * header (a head longer than HEAD_MAX as it came). */
static void feed_down(struct conn *c, const char *p, size_t n, uint64_t due)
{
    struct dir *d = &c->down;
    while (n && !d->cut) {
        if (d->hs != H_HEAD) { /* a body, or bytes the proxy does not read */
            size_t take = body_bytes(d, p, n, due);
            p += take, n -= take;
            continue;
        }
        if (!d->hbuf && !(d->hbuf = malloc(HEAD_MAX + 1))) {
            warnf("out of memory");
            exit(1);
        }
        size_t take = 0;
        int done = 0, held = d->drop[0] != 0;
        while (take < n && !(held && d->hlen == HEAD_MAX)) {
            if (d->hlen < HEAD_MAX)
                d->hbuf[d->hlen++] = p[take];
            take++;
            if (d->hlen >= 4 && !memcmp(d->hbuf + d->hlen - 4, "\r\n\r\n", 4)) {
                done = 1;
                break;
            }
        }
        if (!held)
            enqueue(d, p, take, due);
        p += take, n -= take;
        if (!done && d->hlen < HEAD_MAX)
            continue;
        if (held) {
            if (done)
                drop_header(d);
            enqueue(d, d->hbuf, d->hlen, due);
        }
        int status = 0;
        d->hbuf[d->hlen] = 0;
        sscanf(d->hbuf, "HTTP/%*s %d", &status);
        d->hlen = 0;
        if (status >= 100 && status < 200 && done)
            continue; /* 100 Continue: the real answer follows */
        if (c->log >= 0)
            logv[c->log].status = (short)status;
        d->hs = H_BODY; /* until the next request; no pipelining */
        if (d->budget == 0)
            d->cut = 1;
    }
}

/* Reads what fd has into direction d of c; -1 when c must be closed. */
static int pump_in(struct conn *c, int up)
{
    struct dir *d = up ? &c->up : &c->down;
    int fd = up ? c->cfd : c->ufd;
    char buf[READ_SIZE];
    while (!d->eof && !d->cut && !c->closing && d->queued < QUEUE_CAP) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -1;
        }
        if (r == 0) {
            d->eof = 1;
            return 0;
        }
        uint64_t due = now_us() + (up ? delay_up : delay_down);
        if (up) {
            stats.bytes_up += (unsigned long long)r;
            if (c->first) /* the TCP handshake a real link would cost */
                due += delay_up + delay_down, c->first = 0;
            if (raw_only)
                c->up.hs = H_RAW;
            if (feed_up(c, buf, (size_t)r, due) < 0)
                return 0;
        } else {
            stats.bytes_down += (unsigned long long)r;
            if (c->up.hs == H_RAW && c->down.hs == H_HEAD && c->down.budget < 0)
                c->down.hs = H_RAW;
            feed_down(c, buf, (size_t)r, due);
        }
    }
    return 0;
}

/* Takes up to want bytes from bucket b at now; returns how many it may send. */
static size_t bucket_take(struct bucket *b, size_t want, uint64_t now)
{
    if (!b->rate)
        return want;
    double burst = (double)b->rate / 200 > 16384 ? (double)b->rate / 200 : 16384; /* 5 ms */
    b->tokens += (double)(now - b->at) * (double)b->rate / 1e6;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at = now;
    size_t n = b->tokens < (double)want ? (size_t)b->tokens : want;
    return n;
}

/* Writes what of d is due to fd, within the link's rate; -1 on a write
 * error. *wait gets the µs until more could leave (0: nothing waits). */
static int pump_out(struct dir *d, int fd, struct bucket *b, uint64_t now, uint64_t *wait)
{
    size_t sent = 0;
    *wait = 0;
    while (d->head && !d->blocked) {
        struct chunk *k = d->head;
        if (k->due > now) {
            *wait = k->due - now;
            return 0;
        }
        size_t want = k->len - k->off;
        if (b->rate && want > QUANTUM - sent)
            want = QUANTUM - sent;
        size_t n = bucket_take(b, want, now);
        if (!n) {
            *wait = sent >= QUANTUM ? 1 : 1000; /* its turn is over, or the link is busy */
            return 0;
        }
        ssize_t w = write(fd, k->data + k->off, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                d->blocked = 1;
                return 0;
            }
            return -1;
        }
        if (b->rate)
            b->tokens -= (double)w, sent += (size_t)w;
        k->off += (size_t)w;
        d->queued -= (size_t)w;
        if (k->off == k->len) {
            d->head = k->next;
            if (!d->head)
                d->tail = NULL;
            free(k);
        }
    }
    return 0;
}

/* Acts on a direction whose queue is empty: passes a FIN on, or applies a
 * fault whose budget is spent. Returns 1 when c was closed. */
static int drained(struct conn *c, int up)
{
    struct dir *d = up ? &c->up : &c->down;
    int to = up ? c->ufd : c->cfd;
    if (d->head)
        return 0;
    if (d->cut) {
        if (d->fault == F_RESET || (up && d->fault != F_NONE)) {
            conn_close(c, 1);
            return 1;
        }
        if (d->fault == F_TRUNC) {
            conn_close(c, 0);
            return 1;
        }
        /* F_STALL: the client waits for bytes that never come */
        if (c->ufd >= 0)
            conn_drop_upstream(c);
        return 0;
    }
    if (d->eof && !d->shut && to >= 0) {
        shutdown(to, SHUT_WR);
        d->shut = 1;
    }
    if (c->closing && !up && d->shut) {
        conn_close(c, 0);
        return 1;
    }
    if (c->up.shut && c->down.shut) {
        conn_close(c, 0);
        return 1;
    }
    return 0;
}

/* Moves bytes both ways on c and updates what epoll waits for; returns 1
 * when c was closed. *wait gets the µs until c has more to send (0: none). */
static int conn_pump(struct conn *c, uint64_t now, uint64_t *wait)
{
    uint64_t w1 = 0, w2 = 0;
    if (c->connected && c->ufd >= 0 && pump_out(&c->up, c->ufd, &bk_up, now, &w1) < 0) {
        conn_close(c, 1);
        return 1;
    }
    if (pump_out(&c->down, c->cfd, &bk_down, now, &w2) < 0) {
        conn_close(c, 1);
        return 1;
    }
    if ((c->connected || c->ufd < 0) && drained(c, 1))
        return 1;
    if (drained(c, 0))
        return 1;
    *wait = w1 && (!w2 || w1 < w2) ? w1 : w2;
    unsigned cev = 0, uev = 0;
    int stalled = c->down.cut && c->down.fault == F_STALL;
    if ((!c->up.eof && !c->up.cut && !c->closing && c->up.queued < QUEUE_CAP) || stalled)
        cev |= EPOLLIN;
    if (c->down.blocked)
        cev |= EPOLLOUT;
    if (c->ufd >= 0) {
        if (!c->down.eof && !c->down.cut && c->down.queued < QUEUE_CAP)
            uev |= EPOLLIN;
        if (!c->connected || c->up.blocked)
            uev |= EPOLLOUT;
    }
    watch(c->cfd, &c->cev, cev, &c->tc);
    watch(c->ufd, &c->uev, uev, &c->tu);
    return 0;
}

/* Accepts a client and starts its upstream connection. */
static void accept_client(int lfd)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        int ufd = socket(upstream->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (ufd < 0 || (connect(ufd, upstream->ai_addr, upstream->ai_addrlen) != 0 && errno != EINPROGRESS)) {
            warnf("connect upstream: %s", strerror(errno));
            close_fd(ufd, 0);
            close_fd(cfd, 1);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            warnf("out of memory");
            exit(1);
        }
        c->id = next_id++;
        c->cfd = cfd, c->ufd = ufd;
        c->first = 1;
        c->log = -1;
        c->up.budget = c->down.budget = -1;
        int ri = match_connection();
        if (ri >= 0) { /* a TCP rule: count every byte back */
            c->up.hs = c->down.hs = H_RAW;
            c->down.budget = rules[ri].amount;
            c->down.fault = rules[ri].action == A_RESET ? F_RESET : rules[ri].action == A_TRUNC ? F_TRUNC : F_STALL;
        }
        c->tc = (struct tag){T_CLIENT, c};
        c->tu = (struct tag){T_UPSTREAM, c};
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &c->tc};
        epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &e);
        e.events = EPOLLOUT;
        e.data.ptr = &c->tu;
        epoll_ctl(epfd, EPOLL_CTL_ADD, ufd, &e);
        c->cev = EPOLLIN, c->uev = EPOLLOUT;
        c->next = conns;
        if (conns)
            conns->prev = c;
        conns = c;
        stats.connections++;
        stats.open++;
    }
}

/* Handles an epoll event on one of c's sockets (up: the upstream one). */
static void conn_event(struct conn *c, int on_upstream, unsigned ev)
{
    if (on_upstream) {
        if (!c->connected && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                warnf("connect upstream: %s", strerror(err));
                conn_close(c, 1);
                return;
            }
            c->connected = 1;
        }
        if (ev & EPOLLOUT)
            c->up.blocked = 0;
        if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && pump_in(c, 0) < 0) {
            conn_close(c, 1);
            return;
        }
    } else {
        if (ev & EPOLLOUT)
            c->down.blocked = 0;
        if (c->down.cut && c->down.fault == F_STALL) { /* only wait for the close */
            char buf[4096];
            ssize_t r = read(c->cfd, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                conn_close(c, 0);
            return;
        }
        if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && pump_in(c, 1) < 0)
            conn_close(c, 1);
    }
}

/* Writes the whole of p to a blocking-enough control socket (best effort). */
static void ctl_write(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            usleep(1000);
            continue;
        }
        if (w <= 0)
            return;
        p += w, n -= (size_t)w;
    }
}

/* Sends a control answer with status and body, and closes the control client. */
static void ctl_reply(struct ctl *k, int status, const char *body, size_t blen)
{
    char head[160];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, status == 200 ? "OK" : status == 204 ? "No Content" : status == 404 ? "Not Found" : "Bad Request",
                     blen);
    ctl_write(k->fd, head, (size_t)n);
    ctl_write(k->fd, body, blen);
    close(k->fd);
    free(k->buf);
    free(k);
}

/* Writes the request log as text; returns a malloc'd buffer, its length in *len. */
static char *log_text(size_t *len)
{
    size_t cap = (size_t)nlog * 300 + 1, n = 0;
    char *out = malloc(cap);
    if (!out) {
        warnf("out of memory");
        exit(1);
    }
    out[0] = 0;
    for (long i = 0; i < nlog; i++) {
        const struct logent *e = &logv[i];
        char st[8] = "-", ru[8] = "-";
        if (e->status)
            snprintf(st, sizeof st, "%d", e->status);
        if (e->rule >= 0)
            snprintf(ru, sizeof ru, "%d", e->rule + 1);
        n += (size_t)snprintf(out + n, cap - n, "%llu %u %s %s %s %s\n",
                              (unsigned long long)(e->t / 1000), e->conn, e->method, e->path, st, ru);
    }
    *len = n;
    return out;
}

/* Answers one whole control request (head and body in k->buf). */
static void ctl_handle(struct ctl *k, char *body)
{
    char method[16] = "", path[256] = "", err[256];
    sscanf(k->buf, "%15s %255s", method, path);
    if (!strcmp(method, "GET") && !strcmp(path, "/log")) {
        size_t n;
        char *t = log_text(&n);
        ctl_reply(k, 200, t, n);
        free(t);
    } else if (!strcmp(method, "DELETE") && !strcmp(path, "/log")) {
        nlog = 0;
        ctl_reply(k, 204, "", 0);
    } else if (!strcmp(method, "GET") && !strcmp(path, "/stats")) {
        char t[512];
        int n = snprintf(t, sizeof t, "connections %llu\nopen %llu\nrequests %llu\nanswered %llu\nbytes_up %llu\nbytes_down %llu\n",
                         stats.connections, stats.open, stats.requests, stats.answered, stats.bytes_up, stats.bytes_down);
        ctl_reply(k, 200, t, (size_t)n);
    } else if (!strcmp(method, "PUT") && !strcmp(path, "/rules")) {
        if (load_rules(body, err, sizeof err) != 0)
            ctl_reply(k, 400, err, strlen(err));
        else
            ctl_reply(k, 204, "", 0);
    } else if (!strcmp(method, "PUT") && !strcmp(path, "/config")) {
        char *save = NULL;
        for (char *line = strtok_r(body, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
            char *eq = strchr(line, '=');
            if (!eq) {
                snprintf(err, sizeof err, "%s: expected key=value", line);
                ctl_reply(k, 400, err, strlen(err));
                return;
            }
            *eq = 0;
            if (set_option(line, eq + 1, err, sizeof err) != 0) {
                ctl_reply(k, 400, err, strlen(err));
                return;
            }
        }
        ctl_reply(k, 204, "", 0);
    } else {
        ctl_reply(k, 404, "no such control path\n", 21);
    }
}

/* Reads from a control client; answers once its request is whole. */
static void ctl_event(struct ctl *k)
{
    for (;;) {
        if (k->len == CTL_MAX) {
            ctl_reply(k, 400, "too big\n", 8);
            return;
        }
        ssize_t r = read(k->fd, k->buf + k->len, CTL_MAX - k->len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            close(k->fd);
            free(k->buf);
            free(k);
            return;
        }
        k->len += (size_t)r;
        k->buf[k->len] = 0;
        char *end = strstr(k->buf, "\r\n\r\n");
        if (!end)
            continue;
        const char *cl = header(k->buf, "Content-Length");
        size_t want = cl ? strtoull(cl, NULL, 10) : 0;
        size_t have = k->len - (size_t)(end + 4 - k->buf);
        if (have < want)
            continue;
        end[4 + want] = 0;
        ctl_handle(k, end + 4);
        return;
    }
}

/* Opens a listening TCP socket on 127.0.0.1:port (0: any free port) and
 * returns it, with the port it got in *got; -1 on failure. */
static int listen_on(int port, int *got)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        warnf("listen on 127.0.0.1:%d: %s", port, strerror(errno));
        return -1;
    }
    *got = ntohs(a.sin_port);
    return fd;
}

/* Reads a whole file into a malloc'd NUL-terminated buffer, or NULL. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    for (size_t r; s && (r = fread(s + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap)
            s = realloc(s, cap *= 2);
    }
    fclose(f);
    if (s)
        s[n] = 0;
    return s;
}

/* Resolves "HOST:PORT" into the upstream address; -1 if it cannot. */
static int resolve_upstream(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host)
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(host, colon + 1, &hints, &upstream);
    if (rc != 0)
        warnf("%s: %s", hostport, gai_strerror(rc));
    return rc == 0 ? 0 : -1;
}

/* Prints the usage and exits with status 2. */
static void usage(void)
{
    fputs("usage: faultproxy --upstream HOST:PORT [--listen PORT] [--port-file FILE]\n"
          "                  [--rtt MS | --delay-up MS --delay-down MS]\n"
          "                  [--rate RATE | --rate-up RATE --rate-down RATE]\n"
          "                  [--rules FILE] [--seed N] [--raw]\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *up = NULL, *port_file = NULL, *rules_file = NULL;
    int port = 0;
    char err[256];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--raw")) {
            raw_only = 1;
            continue;
        }
        if (i + 1 >= argc || strncmp(a, "--", 2))
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--upstream"))
            up = v;
        else if (!strcmp(a, "--listen"))
            port = atoi(v);
        else if (!strcmp(a, "--port-file"))
            port_file = v;
        else if (!strcmp(a, "--rules"))
            rules_file = v;
        else if (!strcmp(a, "--seed"))
            rng_state = strtoull(v, NULL, 10) * 0x9e3779b97f4a7c15ull + 1;
        else if (set_option(a + 2, v, err, sizeof err) != 0) {
            warnf("%s", err);
            usage();
        }
    }
    if (!up || resolve_upstream(up) != 0)
        usage();
    if (rules_file) {
        char *text = slurp(rules_file);
        if (!text || load_rules(text, err, sizeof err) != 0) {
            warnf("%s: %s", rules_file, text ? err : strerror(errno));
            return 2;
        }
        free(text);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    if (!(logv = calloc(MAX_LOG, sizeof *logv)))
        return 1;
    t0 = now_us();
    bk_up.at = bk_down.at = t0;

    int lport, cport;
    int lfd = listen_on(port, &lport), cfd = listen_on(0, &cport);
    if (lfd < 0 || cfd < 0)
        return 2;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || epfd < 0) {
        warnf("epoll/signalfd: %s", strerror(errno));
        return 1;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &tag_listen};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e);
    e.data.ptr = &tag_ctl_listen;
    epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &e);
    e.data.ptr = &tag_signal;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &e);
    if (port_file) { /* written whole, then renamed: a reader never sees half */
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%d %d\n", lport, cport) < 0 || fclose(f) != 0 || rename(tmp, port_file) != 0) {
            warnf("%s: %s", port_file, strerror(errno));
            return 1;
        }
    }

    int timeout = -1;
    for (;;) {
        struct epoll_event evs[256];
        int n = epoll_wait(epfd, evs, 256, timeout);
        if (n < 0 && errno != EINTR) {
            warnf("epoll_wait: %s", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct tag *tag = evs[i].data.ptr;
            if (tag->kind == T_SIGNAL)
                goto out;
            if (tag->kind == T_LISTEN) {
                accept_client(lfd);
            } else if (tag->kind == T_CTL_LISTEN) {
                int fd;
                while ((fd = accept4(cfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct ctl *k = calloc(1, sizeof *k);
                    if (!k || !(k->buf = malloc(CTL_MAX + 1))) {
                        warnf("out of memory");
                        exit(1);
                    }
                    k->fd = fd;
                    k->tag = (struct tag){T_CTL, k};
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = &k->tag};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ce);
                }
            } else if (tag->kind == T_CTL) {
                ctl_event(tag->obj);
            } else {
                struct conn *c = tag->obj;
                if (!c->dead)
                    conn_event(c, tag->kind == T_UPSTREAM, evs[i].events);
            }
        }
        /* every connection moves what it can; the first of the list goes
         * last, so that under a rate cap each gets its turn to go first */
        uint64_t now = now_us(), soonest = 0;
        struct conn *first = conns;
        for (struct conn *c = conns, *next; c; c = next) {
            next = c->next;
            uint64_t w = 0;
            if (!conn_pump(c, now, &w) && w && (!soonest || w < soonest))
                soonest = w;
        }
        if (first && !first->dead && first->next) {
            conns = first->next;
            conns->prev = NULL;
            struct conn *last = conns;
            while (last->next)
                last = last->next;
            last->next = first;
            first->prev = last;
            first->next = NULL;
        }
        bury_dead();
        timeout = soonest ? (int)((soonest + 999) / 1000) : -1;
    }
out:
    while (conns)
        conn_close(conns, 0);
    bury_dead();
    freeaddrinfo(upstream);
    free(logv);
    return 0;
}
