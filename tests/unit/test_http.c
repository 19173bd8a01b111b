/* test_http.c - the HTTP client driven directly on an event_base, no Lua.
 *
 * Every test talks to the loopback servers of tests/servers.sh (HTTP_URL,
 * HTTPS_URL, FAULT_URL, TEST_CA). The loop runs until the expected number of
 * completions arrived; a safety timer fails the test instead of hanging.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "tally.h"
#include "test.h"

#define SAFETY_SECONDS 15

struct fixture {
    struct event_base *base;
    struct http_client *c;
    struct event *safety;
    int expected;       /* completions that end the current run */
    int done;           /* completions so far */
    int expired;        /* the safety timer fired */
};

/* What one request's done callback records. */
struct rec {
    struct fixture *f;
    int calls;
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_safety(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    (void)fd;
    (void)what;
    f->expired = 1;
    event_base_loopbreak(f->base);
}

/* Counts a completion and stops the loop once all expected ones are in. */
static void on_done(struct http_req *r, void *ud)
{
    struct rec *rc = ud;
    (void)r;
    rc->calls++;
    if (++rc->f->done >= rc->f->expected)
        event_base_loopbreak(rc->f->base);
}

/* Sets up curl, a loop and a client; max_per_host 0 means the default. */
static int fixture_open_total(struct fixture *f, long max_per_host, long max_total)
{
    struct http_client_opts o = { max_per_host, max_total, "replica-unit" };
    memset(f, 0, sizeof(*f));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    f->base = event_base_new();
    if (!f->base)
        return -1;
    f->safety = evtimer_new(f->base, on_safety, f);
    f->c = http_client_new(f->base, &o);
    return f->safety && f->c ? 0 : -1;
}

static int fixture_open(struct fixture *f, long max_per_host)
{
    return fixture_open_total(f, max_per_host, 0);
}

static void fixture_close(struct fixture *f)
{
    http_client_free(f->c);
    if (f->safety)
        event_free(f->safety);
    if (f->base)
        event_base_free(f->base);
    curl_global_cleanup();
}

/* Runs the loop until f->done reaches expected or `seconds` pass. Returns 0
 * when every expected completion arrived. */
static int fixture_run(struct fixture *f, int expected, int seconds)
{
    struct timeval tv = { seconds, 0 };
    f->expected = expected;
    f->expired = 0;
    if (f->done >= expected)
        return 0;
    if (evtimer_add(f->safety, &tv) != 0)
        return -1;
    event_base_dispatch(f->base);
    evtimer_del(f->safety);
    if (f->done < expected)
        fprintf(stderr, "# %d of %d requests finished%s\n", f->done, expected,
                f->expired ? " before the safety timer fired" : " (the loop ran dry)");
    return f->done >= expected ? 0 : -1;
}

/* Runs the loop for ms milliseconds whatever happens. */
static void fixture_idle(struct fixture *f, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    f->expected = 1 << 30;
    evtimer_add(f->safety, &tv);
    event_base_dispatch(f->base);
    evtimer_del(f->safety);
}

/* Joins a server URL and a path. */
static const char *url_of(char *out, size_t n, const char *base, const char *path)
{
    snprintf(out, n, "%s%s", base, path);
    return out;
}

/* Creates and starts a GET with the default limits; NULL on failure. */
static struct http_req *start_get(struct fixture *f, const char *url, long timeout,
                                  struct rec *rc)
{
    struct http_req *r = http_req_new(f->c, "GET", url, timeout, 5);
    rc->f = f;
    rc->calls = 0;
    if (r && http_req_start(r, on_done, rc) != 0) {
        fprintf(stderr, "# http_req_start %s: %s\n", url, http_strerror(r->err));
        http_req_free(r);
        return NULL;
    }
    return r;
}

/* Reads a whole file into a malloc'd buffer. */
static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (p && fread(p, 1, (size_t)n, fp) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return p;
}

/* Returns a loopback TCP port nobody listens on. */
static int closed_port(void)
{
    struct sockaddr_in sa = { 0 };
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* Fetches one URL to completion with the given options and checks that done
 * ran exactly once. Returns the finished request (caller frees) or NULL. */
static struct http_req *fetch(struct fixture *f, const char *url, long timeout,
                              const struct http_tls *tls, size_t max_body)
{
    struct rec rc = { f, 0 };
    struct http_req *r = http_req_new(f->c, "GET", url, timeout, 5);
    if (!r)
        return NULL;
    r->max_body = max_body;
    if ((tls && http_req_tls(r, tls) != 0) || http_req_start(r, on_done, &rc) != 0 ||
        fixture_run(f, f->done + 1, SAFETY_SECONDS) != 0 || rc.calls != 1) {
        fprintf(stderr, "# %s: done ran %d times\n", url, rc.calls);
        http_req_free(r);
        return NULL;
    }
    return r;
}

/* The strings a script sees are part of the Lua API. */
TEST_IMPL(http_strerror_names)
{
    ASSERT_STR_EQ(http_strerror(HTTP_ETIMEOUT), "timeout");
    ASSERT_STR_EQ(http_strerror(HTTP_ECONNECT), "connect");
    ASSERT_STR_EQ(http_strerror(HTTP_ETLS), "tls");
    ASSERT_STR_EQ(http_strerror(HTTP_ECLOSED), "closed");
    ASSERT_STR_EQ(http_strerror(HTTP_ECANCELLED), "cancelled");
    ASSERT_STR_EQ(http_strerror(HTTP_ETOOLARGE), "too large");
    ASSERT_STR_EQ(http_strerror(HTTP_EBADURL), "bad url");
    ASSERT_STR_EQ(http_strerror(HTTP_EPROTO), "protocol");
    return 0;
}

/* A GET completes from the loop with the status, the exact body and the
 * final response's header block. */
TEST_IMPL(http_get_returns_status_and_body)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct rec rc;
    struct http_req *r = start_get(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, &rc);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(http_client_pending(f.c), 1);
    ASSERT_EQ(rc.calls, 0); /* never from inside http_req_start */
    ASSERT_EQ(fixture_run(&f, 1, SAFETY_SECONDS), 0);
    ASSERT_EQ(rc.calls, 1);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 200);
    ASSERT_EQ(r->body.len, 17);
    ASSERT_STR_EQ(r->body.data, "hello from nginx\n");
    ASSERT_NOT_NULL(r->head.data);
    ASSERT(strncmp(r->head.data, "HTTP/1.1 200", 12) == 0);
    ASSERT_EQ(http_client_pending(f.c), 0);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* A 1 MiB body arrives byte for byte. */
TEST_IMPL(http_get_large_body_is_exact)
{
    NEED_ENV(base, "HTTP_URL");
    NEED_ENV(dir, "SERVERS_DIR");
    char url[512], path[512];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/www/files/1m.bin", dir);
    char *want = read_file(path, &len);
    ASSERT_NOT_NULL(want);
    ASSERT_EQ(len, 1 << 20);
    struct fixture f;
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/files/1m.bin"), 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 200);
    ASSERT_EQ(r->body.len, len);
    ASSERT(memcmp(r->body.data, want, len) == 0);
    free(want);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* A 404 or 500 is a completed exchange: err is OK and status says what
 * happened, with the server's body. */
TEST_IMPL(http_error_status_is_not_a_transfer_error)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/status/404"), 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 404);
    ASSERT_STR_EQ(r->body.data, "status 404\n");
    http_req_free(r);
    r = fetch(&f, url_of(url, sizeof(url), base, "/status/500"), 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 500);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* Returns the count of (host, method, status) in the client's request
 * counts, or 0. */
static unsigned long long counted(struct http_client *c, const char *host, const char *method,
                                  const char *status)
{
    const struct tally *t = http_client_counts(c);
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rows[i].key[0], host) == 0 && strcmp(t->rows[i].key[1], method) == 0 &&
            strcmp(t->rows[i].key[2], status) == 0)
            return t->rows[i].n;
    return 0;
}

/* Every finished request is counted by the host:port it went to, its
 * method, and its status, or the error's name when no response came. */
TEST_IMPL(http_counts_finished_requests)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    char url[512], host[300], closed[128], closed_host[64];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    ASSERT_EQ(http_origin_key(base, host, sizeof(host)), 0);
    memmove(host, host + strlen("http://"), strlen(host) - strlen("http://") + 1);
    for (int i = 0; i < 2; i++) {
        struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, NULL, 0);
        ASSERT_NOT_NULL(r);
        http_req_free(r);
    }
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/status/404"), 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    http_req_free(r);
    int port = closed_port();
    ASSERT(port > 0);
    snprintf(closed, sizeof(closed), "http://127.0.0.1:%d/", port);
    snprintf(closed_host, sizeof(closed_host), "127.0.0.1:%d", port);
    r = fetch(&f, closed, 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    http_req_free(r);
    ASSERT_EQ(counted(f.c, host, "GET", "200"), 2);
    ASSERT_EQ(counted(f.c, host, "GET", "404"), 1);
    ASSERT_EQ(counted(f.c, closed_host, "GET", "connect"), 1);
    ASSERT_EQ(http_client_counts(f.c)->n, 3);
    ASSERT_EQ(http_client_active(f.c), 0);
    fixture_close(&f);
    return 0;
}

/* Method, extra headers and the request body reach the server. */
TEST_IMPL(http_post_sends_body_and_headers)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    struct rec rc;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = http_req_new(f.c, "POST", url_of(url, sizeof(url), base, "/echo"), 10, 5);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(http_req_header(r, "X-Test: yes"), 0);
    ASSERT_EQ(http_req_body(r, "a=1&b=2", 7), 0);
    rc.f = &f;
    rc.calls = 0;
    ASSERT_EQ(http_req_start(r, on_done, &rc), 0);
    ASSERT_EQ(fixture_run(&f, 1, SAFETY_SECONDS), 0);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 200);
    ASSERT_STR_EQ(r->body.data, "method=POST\nx-test=yes\nbody=a=1&b=2\n");
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* 100 requests started at once all complete, each exactly once, even though
 * the default per-host cap (64) queues some of them. */
TEST_IMPL(http_100_concurrent_gets_complete)
{
    NEED_ENV(base, "HTTP_URL");
    enum { N = 100 };
    struct fixture f;
    struct http_req *r[N];
    struct rec rc[N];
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    url_of(url, sizeof(url), base, "/files/small.txt");
    for (int i = 0; i < N; i++)
        ASSERT_NOT_NULL(r[i] = start_get(&f, url, 10, &rc[i]));
    ASSERT_EQ(http_client_pending(f.c), N);
    ASSERT_EQ(fixture_run(&f, N, SAFETY_SECONDS), 0);
    ASSERT_EQ(http_client_pending(f.c), 0);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(rc[i].calls, 1);
        ASSERT_EQ(r[i]->err, HTTP_OK);
        ASSERT_EQ(r[i]->status, 200);
        ASSERT_STR_EQ(r[i]->body.data, "hello from nginx\n");
        http_req_free(r[i]);
    }
    fixture_close(&f);
    return 0;
}

/* Records the order in which requests finish. */
struct order {
    struct fixture *f;
    char seen[8];
    int n;
    double *stamp;      /* if set, when the request tagged stamp_tag finished */
    char stamp_tag;
};

struct tagged {
    struct order *o;
    char tag;
};

static void on_done_tagged(struct http_req *r, void *ud)
{
    struct tagged *t = ud;
    (void)r;
    if (t->o->n < 7)
        t->o->seen[t->o->n++] = t->tag;
    if (t->o->stamp && t->tag == t->o->stamp_tag)
        *t->o->stamp = now_mono();
    if (++t->o->f->done >= t->o->f->expected)
        event_base_loopbreak(t->o->f->base);
}

/* Starts 8 requests for /slow/ (1 s each) and returns the wall time until
 * all of them finished, or -1. */
static double time_slow_batch(long max_per_host)
{
    enum { N = 8 };
    const char *base = getenv("HTTP_URL");
    struct fixture f;
    struct http_req *r[N] = { 0 };
    struct rec rc[N];
    char url[512];
    double t = -1;
    if (!base || fixture_open(&f, max_per_host) != 0)
        return -1;
    double t0 = now_mono();
    for (int i = 0; i < N; i++) {
        snprintf(url, sizeof(url), "%s/slow/%d", base, i);
        r[i] = start_get(&f, url, 10, &rc[i]);
    }
    if (fixture_run(&f, N, SAFETY_SECONDS) == 0) {
        t = now_mono() - t0;
        for (int i = 0; i < N; i++)
            if (!r[i] || r[i]->err != HTTP_OK || r[i]->status != 200 ||
                strcmp(r[i]->body.data, "slow\n") != 0)
                t = -1;
    }
    for (int i = 0; i < N; i++)
        http_req_free(r[i]);
    fixture_close(&f);
    return t;
}

/* The global limit holds across hosts: eight 1-second requests to two
 * origins, with max_total = 2, run in four rounds though each origin alone
 * would allow all of them at once. */
TEST_IMPL(http_global_cap_spans_hosts)
{
    NEED_ENV(port, "HTTP_PORT");
    enum { N = 8 };
    struct fixture f;
    struct http_req *r[N] = { 0 };
    struct rec rc[N];
    char url[512];
    ASSERT_EQ(fixture_open_total(&f, 8, 2), 0);
    double t0 = now_mono();
    for (int i = 0; i < N; i++) {
        snprintf(url, sizeof(url), "http://%s:%s/slow/%d", i % 2 ? "127.0.0.1" : "localhost", port, i);
        ASSERT_NOT_NULL(r[i] = start_get(&f, url, 10, &rc[i]));
    }
    ASSERT_EQ(fixture_run(&f, N, SAFETY_SECONDS), 0);
    double t = now_mono() - t0;
    fprintf(stderr, "# 8 x /slow/ on two origins with max_total=2: %.2f s\n", t);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(r[i]->status, 200);
        http_req_free(r[i]);
    }
    ASSERT(t >= 3.9);
    ASSERT(t < 6.0);
    fixture_close(&f);
    return 0;
}

/* With max_per_host = 2, eight 1-second requests run in four rounds. */
TEST_IMPL(http_per_host_cap_serialises)
{
    double t = time_slow_batch(2);
    fprintf(stderr, "# 8 x /slow/ with max_per_host=2: %.2f s\n", t);
    ASSERT(t > 0);
    ASSERT(t >= 3.9);
    ASSERT(t < 6.0);
    return 0;
}

/* With max_per_host = 8 the same eight requests run side by side. */
TEST_IMPL(http_per_host_cap_allows_parallel)
{
    double t = time_slow_batch(8);
    fprintf(stderr, "# 8 x /slow/ with max_per_host=8: %.2f s\n", t);
    ASSERT(t > 0);
    ASSERT(t < 2.5);
    return 0;
}

/* The cap belongs to the origin, however the URL spells it: upper-case
 * scheme and host, and user info, name the same host. */
TEST_IMPL(http_per_host_cap_is_per_origin)
{
    NEED_ENV(port, "HTTP_PORT");
    struct fixture f;
    struct rec rc[3];
    struct http_req *r[3];
    char url[256];
    static const char *const forms[] = { "http://127.0.0.1:%s/slow/a",
        "HTTP://127.0.0.1:%s/slow/b", "http://user@127.0.0.1:%s/slow/c" };
    ASSERT_EQ(fixture_open(&f, 1), 0);
    double t0 = now_mono();
    for (int i = 0; i < 3; i++) {
        snprintf(url, sizeof(url), forms[i], port);
        ASSERT_NOT_NULL(r[i] = start_get(&f, url, 10, &rc[i]));
    }
    ASSERT_EQ(fixture_run(&f, 3, SAFETY_SECONDS), 0);
    double t = now_mono() - t0;
    fprintf(stderr, "# 3 x /slow/ in three spellings, max_per_host=1: %.2f s\n", t);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(r[i]->status, 200);
        http_req_free(r[i]);
    }
    ASSERT(t >= 2.9);
    fixture_close(&f);
    return 0;
}

/* A slow first request does not hold back later requests to the same host:
 * with slots free, a small file arrives long before the 1-second response. */
TEST_IMPL(http_slow_request_does_not_block_host)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    struct order o = { 0 };
    struct tagged tg[2];
    struct http_req *r[2];
    char url[512];
    double fast_done = 0;
    ASSERT_EQ(fixture_open(&f, 8), 0);
    o.f = &f;
    o.stamp = &fast_done;
    o.stamp_tag = 'B';
    static const char *const paths[] = { "/slow/", "/files/small.txt" };
    double t0 = now_mono();
    for (int i = 0; i < 2; i++) {
        tg[i].o = &o;
        tg[i].tag = (char)('A' + i);
        r[i] = http_req_new(f.c, "GET", url_of(url, sizeof(url), base, paths[i]), 10, 5);
        ASSERT_NOT_NULL(r[i]);
        ASSERT_EQ(http_req_start(r[i], on_done_tagged, &tg[i]), 0);
    }
    ASSERT_EQ(fixture_run(&f, 2, SAFETY_SECONDS), 0);
    ASSERT_EQ(r[0]->status, 200);
    ASSERT_EQ(r[1]->status, 200);
    fprintf(stderr, "# small file after %.2f s, finish order %.2s\n", fast_done - t0, o.seen);
    ASSERT_EQ(o.seen[0], 'B');
    ASSERT(fast_done - t0 < 0.5);
    http_req_free(r[0]);
    http_req_free(r[1]);
    fixture_close(&f);
    return 0;
}

/* Nobody listening: "connect". */
TEST_IMPL(http_closed_port_is_connect_error)
{
    struct fixture f;
    char url[128];
    int port = closed_port();
    ASSERT(port > 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url, 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_ECONNECT);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* A body that stops flowing mid-way ends with "timeout", never before
 * `timeout` seconds. */
TEST_IMPL(http_stall_is_timeout)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    double t0 = now_mono();
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/stall"), 1, NULL, 0);
    double t = now_mono() - t0;
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_ETIMEOUT);
    ASSERT_EQ(r->body.len, 1000);
    ASSERT(t >= 0.9);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* The documented stall limit: "no byte moved for `timeout` s". A transfer
 * that received a burst and then went silent fails about `timeout` s after
 * the last byte, not several seconds later. */
TEST_IMPL(http_stall_timeout_is_prompt)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    double t0 = now_mono();
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/stall"), 1, NULL, 0);
    double t = now_mono() - t0;
    ASSERT_NOT_NULL(r);
    enum http_err err = r->err;
    http_req_free(r);
    fixture_close(&f);
    ASSERT_EQ(err, HTTP_ETIMEOUT);
    fprintf(stderr, "# /stall with timeout 1 failed after %.2f s\n", t);
    ASSERT(t < 3.0);
    return 0;
}

/* A server that accepts and never answers also ends with "timeout". */
TEST_IMPL(http_no_response_is_timeout)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    double t0 = now_mono();
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/hold"), 1, NULL, 0);
    double t = now_mono() - t0;
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_ETIMEOUT);
    ASSERT(t >= 0.9);
    ASSERT(t < 4.0);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* GETs base + path (10 s stall limit) and checks that it fails with want. */
static int fetch_fails_with(const char *base, const char *path, enum http_err want)
{
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, path), 10, NULL, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, want);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* A body cut short by the peer's FIN: "closed". */
TEST_IMPL(http_truncated_body_is_closed)
{
    NEED_ENV(base, "FAULT_URL");
    return fetch_fails_with(base, "/close", HTTP_ECLOSED);
}

/* A connection reset before any response: "closed". */
TEST_IMPL(http_reset_is_closed)
{
    NEED_ENV(base, "FAULT_URL");
    return fetch_fails_with(base, "/reset", HTTP_ECLOSED);
}

/* The test CA is not in the system store: verification fails with "tls". */
TEST_IMPL(https_unknown_ca_is_tls_error)
{
    NEED_ENV(base, "HTTPS_URL");
    return fetch_fails_with(base, "/files/small.txt", HTTP_ETLS);
}

/* Trusting the test CA through ca_file verifies the server, over HTTP/2. */
TEST_IMPL(https_with_ca_file_succeeds)
{
    NEED_ENV(base, "HTTPS_URL");
    NEED_ENV(ca, "TEST_CA");
    struct fixture f;
    struct http_tls tls = { .ca_file = ca };
    char url[512];
    long version = 0;
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, &tls, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 200);
    ASSERT_STR_EQ(r->body.data, "hello from nginx\n");
    ASSERT_EQ(curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &version), CURLE_OK);
    ASSERT_EQ(version, CURL_HTTP_VERSION_2_0);
    ASSERT(strncmp(r->head.data, "HTTP/2 200", 10) == 0);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* insecure = 1 skips verification explicitly. */
TEST_IMPL(https_insecure_succeeds)
{
    NEED_ENV(base, "HTTPS_URL");
    struct fixture f;
    struct http_tls tls = { .insecure = 1 };
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, &tls, 0);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_EQ(r->status, 200);
    ASSERT_STR_EQ(r->body.data, "hello from nginx\n");
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* State shared with the timer that cancels requests mid-flight. */
struct cancel_plan {
    struct fixture *f;
    struct http_req *victim;    /* cancelled and freed by the timer */
    size_t victim_body;         /* bytes it had received when cancelled */
    enum http_err victim_err;   /* its err right after http_req_cancel */
    long pending_after;         /* http_client_pending after the cancel */
    struct http_req *next;      /* started by the timer, if next_url */
    const char *next_url;
    struct rec next_rec;
};

static void on_cancel_timer(evutil_socket_t fd, short what, void *arg)
{
    struct cancel_plan *p = arg;
    (void)fd;
    (void)what;
    p->victim_body = p->victim->body.len;
    http_req_cancel(p->victim);
    p->victim_err = p->victim->err;
    http_req_cancel(p->victim); /* a second cancel is a no-op */
    p->pending_after = http_client_pending(p->f->c);
    http_req_free(p->victim);
    p->victim = NULL;
    if (p->next_url)
        p->next = start_get(p->f, p->next_url, 10, &p->next_rec);
}

/* Cancelling a request in the middle of its body: done never runs, the slot
 * is released, and the client keeps working. */
TEST_IMPL(http_cancel_active_never_calls_done)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    struct rec rc;
    struct cancel_plan p = { 0 };
    char url[512], next[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    p.f = &f;
    p.next_url = url_of(next, sizeof(next), base, "/ok");
    p.victim = start_get(&f, url_of(url, sizeof(url), base, "/stall"), 30, &rc);
    ASSERT_NOT_NULL(p.victim);
    struct timeval tv = { 0, 300 * 1000 };
    struct event *ev = evtimer_new(f.base, on_cancel_timer, &p);
    ASSERT_NOT_NULL(ev);
    ASSERT_EQ(evtimer_add(ev, &tv), 0);
    ASSERT_EQ(fixture_run(&f, 1, SAFETY_SECONDS), 0);
    ASSERT_EQ(p.victim_body, 1000); /* it was mid-transfer */
    ASSERT_EQ(p.victim_err, HTTP_ECANCELLED);
    ASSERT_EQ(p.pending_after, 0);
    ASSERT_EQ(rc.calls, 0);
    ASSERT_NOT_NULL(p.next);
    ASSERT_EQ(p.next_rec.calls, 1);
    ASSERT_EQ(p.next->status, 200);
    ASSERT_STR_EQ(p.next->body.data, "ok");
    fixture_idle(&f, 200); /* nothing late arrives for the cancelled one */
    ASSERT_EQ(rc.calls, 0);
    http_req_free(p.next);
    event_free(ev);
    fixture_close(&f);
    return 0;
}

/* With max_per_host = 1, cancelling the active request starts the queued one. */
TEST_IMPL(http_cancel_active_frees_host_slot)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    struct rec ra, rb;
    struct cancel_plan p = { 0 };
    char url[512];
    ASSERT_EQ(fixture_open(&f, 1), 0);
    p.f = &f;
    p.victim = start_get(&f, url_of(url, sizeof(url), base, "/hold"), 30, &ra);
    struct http_req *b = start_get(&f, url_of(url, sizeof(url), base, "/ok"), 10, &rb);
    ASSERT_NOT_NULL(p.victim);
    ASSERT_NOT_NULL(b);
    ASSERT_EQ(http_client_pending(f.c), 2);
    struct timeval tv = { 0, 300 * 1000 };
    struct event *ev = evtimer_new(f.base, on_cancel_timer, &p);
    ASSERT_NOT_NULL(ev);
    ASSERT_EQ(evtimer_add(ev, &tv), 0);
    double t0 = now_mono();
    ASSERT_EQ(fixture_run(&f, 1, SAFETY_SECONDS), 0);
    ASSERT(now_mono() - t0 >= 0.25); /* b waited for the slot */
    ASSERT_EQ(p.victim_err, HTTP_ECANCELLED);
    ASSERT_EQ(p.pending_after, 1);
    ASSERT_EQ(ra.calls, 0);
    ASSERT_EQ(rb.calls, 1);
    ASSERT_EQ(b->err, HTTP_OK);
    ASSERT_STR_EQ(b->body.data, "ok");
    http_req_free(b);
    event_free(ev);
    fixture_close(&f);
    return 0;
}

/* Cancelling queued requests (the tail, then one in the middle) removes them
 * from the FIFO without disturbing the others, and done never runs for them. */
TEST_IMPL(http_cancel_queued_never_calls_done)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    struct order o = { 0 };
    struct tagged tg[5];
    struct http_req *r[5];
    struct cancel_plan p = { 0 };
    char url[512];
    ASSERT_EQ(fixture_open(&f, 1), 0);
    o.f = &f;
    for (int i = 0; i < 5; i++) {
        tg[i].o = &o;
        tg[i].tag = (char)('A' + i);
        r[i] = http_req_new(f.c, "GET", url_of(url, sizeof(url), base, i == 0 ? "/hold" : "/ok"),
                            30, 5);
        ASSERT_NOT_NULL(r[i]);
    }
    /* A active; B, C queued. Cancel the tail C, then queue D and E. */
    ASSERT_EQ(http_req_start(r[0], on_done_tagged, &tg[0]), 0);
    ASSERT_EQ(http_req_start(r[1], on_done_tagged, &tg[1]), 0);
    ASSERT_EQ(http_req_start(r[2], on_done_tagged, &tg[2]), 0);
    ASSERT_EQ(http_client_pending(f.c), 3);
    http_req_cancel(r[2]);
    ASSERT_EQ(r[2]->err, HTTP_ECANCELLED);
    ASSERT_EQ(http_client_pending(f.c), 2);
    http_req_free(r[2]);
    r[2] = NULL;
    ASSERT_EQ(http_req_start(r[3], on_done_tagged, &tg[3]), 0);
    ASSERT_EQ(http_req_start(r[4], on_done_tagged, &tg[4]), 0);
    /* Cancel D in the middle of the queue B, D, E. */
    http_req_free(r[3]);
    r[3] = NULL;
    ASSERT_EQ(http_client_pending(f.c), 3);
    /* Cancel A after a while: B and E then run in order. */
    p.f = &f;
    p.victim = r[0];
    r[0] = NULL;
    struct timeval tv = { 0, 200 * 1000 };
    struct event *ev = evtimer_new(f.base, on_cancel_timer, &p);
    ASSERT_NOT_NULL(ev);
    ASSERT_EQ(evtimer_add(ev, &tv), 0);
    ASSERT_EQ(fixture_run(&f, 2, SAFETY_SECONDS), 0);
    ASSERT_EQ(o.n, 2);
    ASSERT_EQ(o.seen[0], 'B');
    ASSERT_EQ(o.seen[1], 'E');
    ASSERT_EQ(r[1]->status, 200);
    ASSERT_EQ(r[4]->status, 200);
    ASSERT_EQ(http_client_pending(f.c), 0);
    http_req_free(r[1]);
    http_req_free(r[4]);
    event_free(ev);
    fixture_close(&f);
    return 0;
}

/* A chain where each done callback checks and frees its own request and
 * starts the next one. */
struct chain {
    struct fixture *f;
    const char *url;
    int left, ok;
};

static void on_done_chain(struct http_req *r, void *ud)
{
    struct chain *ch = ud;
    if (r->err == HTTP_OK && r->status == 200 && strcmp(r->body.data, "ok") == 0)
        ch->ok++;
    http_req_free(r);
    if (--ch->left > 0) {
        struct http_req *n = http_req_new(ch->f->c, "GET", ch->url, 10, 5);
        if (n && http_req_start(n, on_done_chain, ch) == 0)
            return;
        http_req_free(n);
    }
    event_base_loopbreak(ch->f->base);
}

/* The done callback may free its own request and start new ones. */
TEST_IMPL(http_done_may_free_and_start_requests)
{
    NEED_ENV(base, "FAULT_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 1), 0);
    struct chain ch = { &f, url_of(url, sizeof(url), base, "/ok"), 5, 0 };
    struct http_req *r = http_req_new(f.c, "GET", ch.url, 10, 5);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(http_req_start(r, on_done_chain, &ch), 0);
    struct timeval tv = { SAFETY_SECONDS, 0 };
    ASSERT_EQ(evtimer_add(f.safety, &tv), 0);
    event_base_dispatch(f.base);
    ASSERT_EQ(f.expired, 0);
    ASSERT_EQ(ch.left, 0);
    ASSERT_EQ(ch.ok, 5);
    ASSERT_EQ(http_client_pending(f.c), 0);
    fixture_close(&f);
    return 0;
}

/* Two requests where whichever finishes first frees the other. */
struct pair {
    struct fixture *f;
    struct http_req *r[2];
    int calls[2];
};

static void on_done_pair(struct http_req *r, void *ud)
{
    struct pair *p = ud;
    int me = r == p->r[0] ? 0 : 1;
    p->calls[me]++;
    http_req_free(p->r[1 - me]);
    p->r[1 - me] = NULL;
    event_base_loopbreak(p->f->base);
}

/* The done callback may cancel and free another request, even one whose
 * transfer finished in the same loop turn (two HTTP/2 streams on one
 * connection): that request's done must then never run. */
TEST_IMPL(http_done_may_cancel_other_request)
{
    NEED_ENV(base, "HTTPS_URL");
    NEED_ENV(ca, "TEST_CA");
    struct fixture f;
    struct http_tls tls = { .ca_file = ca };
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    url_of(url, sizeof(url), base, "/files/small.txt");
    for (int round = 0; round < 20; round++) {
        struct pair p = { &f, { NULL, NULL }, { 0, 0 } };
        for (int i = 0; i < 2; i++) {
            p.r[i] = http_req_new(f.c, "GET", url, 10, 5);
            ASSERT_NOT_NULL(p.r[i]);
            ASSERT_EQ(http_req_tls(p.r[i], &tls), 0);
        }
        for (int i = 0; i < 2; i++)
            ASSERT_EQ(http_req_start(p.r[i], on_done_pair, &p), 0);
        struct timeval tv = { SAFETY_SECONDS, 0 };
        f.expired = 0;
        ASSERT_EQ(evtimer_add(f.safety, &tv), 0);
        event_base_dispatch(f.base);
        evtimer_del(f.safety);
        ASSERT_EQ(f.expired, 0);
        ASSERT_EQ(p.calls[0] + p.calls[1], 1);
        fixture_idle(&f, 20);
        ASSERT_EQ(p.calls[0] + p.calls[1], 1);
        ASSERT_EQ(http_client_pending(f.c), 0);
        for (int i = 0; i < 2; i++)
            http_req_free(p.r[i]);
    }
    fixture_close(&f);
    return 0;
}

/* A body past max_body stops the transfer with "too large". */
TEST_IMPL(http_max_body_is_too_large)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/files/1m.bin"), 10, NULL, 1000);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_ETOOLARGE);
    ASSERT_LE(r->body.len, 1000);
    http_req_free(r);
    r = fetch(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, NULL, 16);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_ETOOLARGE);
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* A body of exactly max_body bytes is accepted. */
TEST_IMPL(http_max_body_boundary_is_allowed)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = fetch(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, NULL, 17);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(r->err, HTTP_OK);
    ASSERT_STR_EQ(r->body.data, "hello from nginx\n");
    http_req_free(r);
    fixture_close(&f);
    return 0;
}

/* Anything but http(s) is refused at start: -1, "bad url", done never runs. */
TEST_IMPL(http_bad_url_fails_start)
{
    static const char *const urls[] = { "ftp://127.0.0.1/x", "file:///etc/passwd",
        "gopher://127.0.0.1/", "not a url", "", NULL };
    struct fixture f;
    ASSERT_EQ(fixture_open(&f, 0), 0);
    for (const char *const *u = urls; *u; u++) {
        struct rec rc = { &f, 0 };
        struct http_req *r = http_req_new(f.c, "GET", *u, 10, 5);
        ASSERT_NOT_NULL(r);
        if (http_req_start(r, on_done, &rc) != -1)
            TEST_FAIL("http_req_start(\"%s\") did not fail", *u);
        if (r->err != HTTP_EBADURL)
            TEST_FAIL("\"%s\": err is \"%s\", not \"bad url\"", *u, http_strerror(r->err));
        ASSERT_EQ(http_client_pending(f.c), 0);
        fixture_idle(&f, 10);
        ASSERT_EQ(rc.calls, 0);
        http_req_free(r);
    }
    fixture_close(&f);
    return 0;
}

/* Starting a request that is already running fails and leaves the running
 * transfer and its outcome alone; a finished request cannot be restarted. */
TEST_IMPL(http_start_twice_fails)
{
    NEED_ENV(base, "HTTP_URL");
    struct fixture f;
    struct rec rc;
    char url[512];
    ASSERT_EQ(fixture_open(&f, 0), 0);
    struct http_req *r = start_get(&f, url_of(url, sizeof(url), base, "/files/small.txt"), 10, &rc);
    ASSERT_NOT_NULL(r);
    ASSERT_EQ(http_req_start(r, on_done, &rc), -1);
    ASSERT_EQ(http_client_pending(f.c), 1);
    ASSERT_EQ(fixture_run(&f, 1, SAFETY_SECONDS), 0);
    ASSERT_EQ(rc.calls, 1);
    long status = r->status;
    enum http_err err = r->err;
    ASSERT_EQ(http_req_start(r, on_done, &rc), -1);
    fixture_idle(&f, 10);
    ASSERT_EQ(rc.calls, 1);
    http_req_free(r);
    fixture_close(&f);
    ASSERT_EQ(status, 200);
    ASSERT_STR_EQ(http_strerror(err), "ok");
    return 0;
}

/* Origins that name the same server share a key: case, user info and an
 * explicit default port do not matter; another port or scheme does. */
TEST_IMPL(http_origin_key_normalises)
{
    char a[256], b[256];
    static const char *const same[][2] = {
        { "https://R.Example/v2/", "https://r.example:443/v2/x" },
        { "http://user:pw@host/x", "HTTP://HOST:80" },
        { "https://[::1]/v2/", "https://[::1]:443?x" },
        { "http://10.0.0.1:5000/a", "http://10.0.0.1:5000" },
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        ASSERT_EQ(http_origin_key(same[i][0], a, sizeof(a)), 0);
        ASSERT_EQ(http_origin_key(same[i][1], b, sizeof(b)), 0);
        ASSERT_STR_EQ(a, b);
    }
    ASSERT_EQ(http_origin_key("https://r.example", a, sizeof(a)), 0);
    ASSERT_STR_EQ(a, "https://r.example:443");
    ASSERT_EQ(http_origin_key("http://r.example:8080/v2/", b, sizeof(b)), 0);
    ASSERT_STR_EQ(b, "http://r.example:8080");
    ASSERT_EQ(http_origin_key("http://r.example", b, sizeof(b)), 0);
    ASSERT(strcmp(a, b) != 0);
    ASSERT_EQ(http_origin_key("ftp://r.example", a, sizeof(a)), -1);
    ASSERT_EQ(http_origin_key("http:///path", a, sizeof(a)), -1);
    ASSERT_EQ(http_origin_key("https://r.example", a, 10), -1);
    return 0;
}
