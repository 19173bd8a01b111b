/* curl_multi.c - the C baseline for bench/gets.lua: N GETs of one URL with C
 * transfers in flight, on a plain libcurl multi loop (curl_multi_perform +
 * curl_multi_poll; no libevent, no Lua). Prints one JSON line:
 *   {"requests":N,"seconds":S,"rps":R}
 *
 * usage: bench_curl_multi [--fresh] URL N C
 *   --fresh  a new easy handle per request, as engine/http.c does; by default
 *            each of the C slots reuses its handle (the usual C idiom).
 *
 * The curl options mirror engine/http.c where they change the work done per
 * request: the same multi limits (MAX_HOST_CONNECTIONS = C, MAXCONNECTS = 4C),
 * the same request bytes (user agent, no Expect/Content-Type), keep-alive
 * reuse, redirects on. The body is discarded into a counter; each response
 * must be 200 and exactly as long as its Content-Length and the first one.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct slot {
    CURL *easy;
    curl_off_t got;     /* body bytes of the current transfer */
};

struct bench {
    const char *url;
    long n, c;
    int fresh;
    long started, done;
    curl_off_t expect;  /* body length of the first response; -1 until known */
    struct curl_slist *headers;
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CURLOPT_WRITEFUNCTION: counts and drops the body. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct slot *s = ud;
    (void)p;
    s->got += (curl_off_t)(size * n);
    return size * n;
}

/* Creates an easy handle with the engine's per-request options; NULL on failure. */
static CURL *easy_new(struct bench *b, struct slot *s)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    CURLcode rc = CURLE_OK;
    rc |= curl_easy_setopt(e, CURLOPT_URL, b->url);
    rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)s);
    rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(e, CURLOPT_USERAGENT, "replica/0.1");
    rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    rc |= curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
    rc |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    rc |= curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, b->headers);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    rc |= curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    if (rc != CURLE_OK) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

/* Starts the next request on slot s. Returns 0 or -1. */
static int slot_start(struct bench *b, CURLM *m, struct slot *s)
{
    if (b->fresh || !s->easy) {
        curl_easy_cleanup(s->easy);
        s->easy = easy_new(b, s);
        if (!s->easy)
            return -1;
    }
    s->got = 0;
    b->started++;
    return curl_multi_add_handle(m, s->easy) == CURLM_OK ? 0 : -1;
}

/* Checks one finished transfer. Returns 0, or -1 after printing why. */
static int check_done(struct bench *b, CURL *e, CURLcode result, struct slot *s)
{
    long status = 0;
    curl_off_t clen = -1;
    if (result != CURLE_OK) {
        fprintf(stderr, "bench_curl_multi: request %ld: %s\n", b->done, curl_easy_strerror(result));
        return -1;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
    if (b->expect < 0)
        b->expect = s->got;
    if (status != 200 || s->got != b->expect || (clen >= 0 && s->got != clen)) {
        fprintf(stderr, "bench_curl_multi: request %ld: status %ld, %ld body bytes "
                        "(content-length %ld, first response %ld)\n",
                b->done, status, (long)s->got, (long)clen, (long)b->expect);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct bench b = { 0 };
    int a = 1;
    if (a < argc && strcmp(argv[a], "--fresh") == 0) {
        b.fresh = 1;
        a++;
    }
    if (argc - a != 3 || atol(argv[a + 1]) <= 0 || atol(argv[a + 2]) <= 0) {
        fprintf(stderr, "usage: %s [--fresh] URL N C\n", argv[0]);
        return 2;
    }
    b.url = argv[a];
    b.n = atol(argv[a + 1]);
    b.c = atol(argv[a + 2]);
    b.expect = -1;
    if (b.c > b.n)
        b.c = b.n;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "bench_curl_multi: cannot initialise libcurl\n");
        return 1;
    }
    int rc = 1;
    struct slot *slots = calloc((size_t)b.c, sizeof(*slots));
    CURLM *m = curl_multi_init();
    b.headers = curl_slist_append(NULL, "Expect:");
    if (b.headers)
        b.headers = curl_slist_append(b.headers, "Content-Type:");
    if (!slots || !m || !b.headers ||
        curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, b.c) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, b.c * 4) != CURLM_OK) {
        fprintf(stderr, "bench_curl_multi: cannot set up the multi handle\n");
        goto out;
    }

    double t0 = now_mono();
    for (long i = 0; i < b.c; i++) {
        if (slot_start(&b, m, &slots[i]) != 0) {
            fprintf(stderr, "bench_curl_multi: cannot start a request\n");
            goto out;
        }
    }
    while (b.done < b.n) {
        int running = 0, left = 0;
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc != CURLM_OK) {
            fprintf(stderr, "bench_curl_multi: curl_multi_perform: %s\n", curl_multi_strerror(mc));
            goto out;
        }
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            CURLcode result = msg->data.result;   /* read before the handle is removed */
            struct slot *s = NULL;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&s);
            curl_multi_remove_handle(m, e);
            if (check_done(&b, e, result, s) != 0)
                goto out;
            b.done++;
            if (b.started < b.n && slot_start(&b, m, s) != 0) {
                fprintf(stderr, "bench_curl_multi: cannot start a request\n");
                goto out;
            }
        }
        if (b.done >= b.n)
            break;
        /* Returns at once when a handle was just added (its timeout is 0). */
        mc = curl_multi_poll(m, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            fprintf(stderr, "bench_curl_multi: curl_multi_poll: %s\n", curl_multi_strerror(mc));
            goto out;
        }
    }
    double secs = now_mono() - t0;
    printf("{\"requests\":%ld,\"seconds\":%.3f,\"rps\":%.0f}\n", b.n, secs, (double)b.n / secs);
    rc = 0;
out:
    for (long i = 0; slots && i < b.c; i++) {
        if (slots[i].easy) {
            curl_multi_remove_handle(m, slots[i].easy);
            curl_easy_cleanup(slots[i].easy);
        }
    }
    free(slots);
    if (m)
        curl_multi_cleanup(m);
    curl_slist_free_all(b.headers);
    curl_global_cleanup();
    return rc;
}
