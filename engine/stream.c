/* stream.c - a blob streamed from a source GET into a target upload. */
#include "stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

enum { SIDE_IDLE, SIDE_RUNNING, SIDE_DONE };

/* libcurl's receive and send buffer size for streams: the largest piece the
 * write callback is handed, so the ring unpauses a download only once this
 * much is free. */
#define STREAM_CHUNK (128 * 1024)

struct stream {
    struct http_req *get, *put;
    struct event *kick;          /* deferred unpause */
    EVP_MD_CTX *md;              /* NULL when no digest is expected */
    EVP_MD_CTX *tap;             /* the caller's running hash, fed too; not owned */
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned int want_len;
    char *ring;
    size_t cap, head, used;      /* bytes [head, head+used) mod cap are buffered */
    int64_t size, received, sent;
    int get_state, put_state;
    int get_paused, put_paused;
    int verified;                /* the whole source arrived and matched */
    int finished;
    struct stream_result res;
    stream_done_fn done;
    void *ud;
};

/* Sets the outcome once; the first failure wins. */
static void fail(struct stream *s, enum stream_err e, long status, const char *detail)
{
    if (s->res.err != STREAM_OK)
        return;
    s->res.err = e;
    s->res.status = status;
    snprintf(s->res.detail, sizeof(s->res.detail), "%s", detail);
}

/* Asks for a deferred look at the paused sides. */
static void kick(struct stream *s)
{
    event_active(s->kick, EV_TIMEOUT, 0);
}

/* How many buffered bytes the upload may take now: all of them once the
 * source is verified, otherwise never the last byte of the blob. */
static size_t deliverable(const struct stream *s)
{
    if (s->verified)
        return s->used;
    int64_t room = s->size - 1 - s->sent;
    if (room <= 0)
        return 0;
    return (int64_t)s->used < room ? s->used : (size_t)room;
}

/* CURLOPT_WRITEFUNCTION of the download: into the ring, or pause when full.
 * Bodies of error responses are kept aside for the message. */
static size_t on_get_data(char *p, size_t size, size_t n, void *ud)
{
    struct stream *s = ud;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(s->get->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        if (s->get->body.len < 4096)
            buf_append(&s->get->body, p, len < 4096 ? len : 4096);
        return len;
    }
    if (s->received + (int64_t)len > s->size) {
        fail(s, STREAM_EDIGEST, 0, "the source sent more bytes than the blob's size");
        return 0; /* aborts the download */
    }
    if (!s->put) { /* hashing only */
        s->received += (int64_t)len;
        if (s->md)
            EVP_DigestUpdate(s->md, p, len);
        if (s->tap)
            EVP_DigestUpdate(s->tap, p, len);
        return len;
    }
    if (s->cap - s->used < len) {
        s->get_paused = 1;
        http_req_paused(s->get, 1);
        return CURL_WRITEFUNC_PAUSE;
    }
    size_t tail = (s->head + s->used) % s->cap;
    size_t first = s->cap - tail < len ? s->cap - tail : len;
    memcpy(s->ring + tail, p, first);
    memcpy(s->ring, p + first, len - first);
    s->used += len;
    s->received += (int64_t)len;
    if (s->md)
        EVP_DigestUpdate(s->md, p, len);
    if (s->tap)
        EVP_DigestUpdate(s->tap, p, len);
    if (s->put_paused && deliverable(s) > 0)
        kick(s);
    return len;
}

/* CURLOPT_READFUNCTION of the upload: out of the ring, pause when nothing
 * may be sent yet, 0 at the verified end. */
static size_t on_put_read(char *p, size_t size, size_t n, void *ud)
{
    struct stream *s = ud;
    size_t want = size * n;
    size_t avail = deliverable(s);
    if (avail == 0) {
        if (s->verified && s->sent == s->size)
            return 0;
        if (s->res.err != STREAM_OK)
            return CURL_READFUNC_ABORT;
        s->put_paused = 1;
        http_req_paused(s->put, 1);
        return CURL_READFUNC_PAUSE;
    }
    size_t len = avail < want ? avail : want;
    size_t first = s->cap - s->head < len ? s->cap - s->head : len;
    memcpy(p, s->ring + s->head, first);
    memcpy(p + first, s->ring, len - first);
    s->head = (s->head + len) % s->cap;
    s->used -= len;
    s->sent += (int64_t)len;
    if (s->get_paused)
        kick(s);
    return len;
}

/* Calls done once both sides have ended. */
static void maybe_finish(struct stream *s)
{
    if (s->finished || s->get_state == SIDE_RUNNING || s->put_state == SIDE_RUNNING)
        return;
    s->finished = 1;
    s->res.bytes = s->received;
    if (s->res.err == STREAM_OK)
        s->res.status = s->put ? s->put->status : s->get->status;
    s->done(s, s->ud);
}

/* The deferred unpause: resumes whichever side can move again. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;
    (void)fd;
    (void)what;
    if (s->get_paused && s->get_state == SIDE_RUNNING && s->cap - s->used >= STREAM_CHUNK) {
        s->get_paused = 0;
        http_req_paused(s->get, 0);
        curl_easy_pause(s->get->easy, CURLPAUSE_CONT); /* may call on_get_data at once */
    }
    if (s->put_paused && s->put_state == SIDE_RUNNING &&
        (deliverable(s) > 0 || s->verified || s->res.err != STREAM_OK)) {
        s->put_paused = 0;
        http_req_paused(s->put, 0);
        curl_easy_pause(s->put->easy, CURLPAUSE_CONT);
    }
}

static void on_put_done(struct http_req *r, void *ud);

/* Starts the upload; on failure records the error. */
static void start_put(struct stream *s)
{
    if (http_req_start(s->put, on_put_done, s) != 0) {
        s->res.http_err = s->put->err;
        fail(s, STREAM_ETRANSFER, 0, s->put->errbuf);
        s->put_state = SIDE_DONE;
        return;
    }
    s->put_state = SIDE_RUNNING;
}

/* The download ended: check status, size and digest, then release or abort
 * the upload. */
static void on_get_done(struct http_req *r, void *ud)
{
    struct stream *s = ud;
    char msg[200];
    s->get_state = SIDE_DONE;
    if (s->res.err != STREAM_OK) {
        /* already failed (size overrun): fall through to abort the upload */
    } else if (r->err != HTTP_OK) {
        s->res.http_err = r->err;
        fail(s, STREAM_ETRANSFER, 0, r->errbuf[0] ? r->errbuf : http_strerror(r->err));
    } else if (r->status < 200 || r->status > 299) {
        snprintf(msg, sizeof(msg), "source answered %ld: %.120s", r->status,
                 r->body.data ? r->body.data : "");
        fail(s, STREAM_EHTTPSRC, r->status, msg);
    } else if (s->received != s->size) {
        snprintf(msg, sizeof(msg), "the source sent %lld bytes, the blob has %lld",
                 (long long)s->received, (long long)s->size);
        fail(s, STREAM_EDIGEST, 0, msg);
    } else if (s->md) {
        unsigned char got[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        EVP_DigestFinal_ex(s->md, got, &n);
        if (n != s->want_len || memcmp(got, s->want, n) != 0)
            fail(s, STREAM_EDIGEST, 0, "the content read from the source does not match its digest");
        else
            s->verified = 1;
    } else {
        s->verified = 1; /* no digest asked for: the size matched */
    }
    if (s->res.err != STREAM_OK && s->put_state == SIDE_RUNNING) {
        http_req_cancel(s->put); /* the target never sees the last byte */
        s->put_state = SIDE_DONE;
    } else if (s->res.err == STREAM_OK && s->put_state == SIDE_IDLE && s->put) {
        start_put(s); /* an empty blob: nothing could be held back */
    } else if (s->put_paused) {
        kick(s);
    }
    maybe_finish(s);
}

/* The upload ended: success needs a 2xx after the verified last byte. */
static void on_put_done(struct http_req *r, void *ud)
{
    struct stream *s = ud;
    char msg[200];
    s->put_state = SIDE_DONE;
    if (r->err != HTTP_OK) {
        s->res.http_err = r->err;
        fail(s, STREAM_ETRANSFER, 0, r->errbuf[0] ? r->errbuf : http_strerror(r->err));
    } else if (r->status < 200 || r->status > 299) {
        snprintf(msg, sizeof(msg), "target answered %ld: %.120s", r->status,
                 r->body.data ? r->body.data : "");
        fail(s, STREAM_EHTTPDST, r->status, msg);
    } else if (!s->verified) {
        fail(s, STREAM_EHTTPDST, r->status, "the target completed the upload early");
    }
    if (s->res.err != STREAM_OK && s->get_state == SIDE_RUNNING) {
        http_req_cancel(s->get);
        s->get_state = SIDE_DONE;
    }
    maybe_finish(s);
}

/* Parses "alg:hex" into the expected digest and the hash to use. */
static const EVP_MD *parse_digest(const char *d, unsigned char *out, unsigned int *outlen)
{
    const EVP_MD *md;
    const char *hex;
    if (strncmp(d, "sha256:", 7) == 0) {
        md = EVP_sha256();
        hex = d + 7;
    } else if (strncmp(d, "sha512:", 7) == 0) {
        md = EVP_sha512();
        hex = d + 7;
    } else {
        return NULL;
    }
    unsigned int n = (unsigned int)EVP_MD_get_size(md);
    if (strlen(hex) != n * 2)
        return NULL;
    for (unsigned int i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + j];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else
                return NULL;
        }
        out[i] = (unsigned char)v;
    }
    *outlen = n;
    return md;
}

struct stream *stream_new(struct event_base *base, struct http_req *get, struct http_req *put,
                          const char *digest, int64_t size, size_t bufsize, char *err,
                          size_t errlen)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->get = get;
    s->put = put;
    const EVP_MD *md = NULL;
    if (digest && !(md = parse_digest(digest, s->want, &s->want_len))) {
        snprintf(err, errlen, "digest must be sha256:<64 hex> or sha512:<128 hex>");
        stream_free(s);
        return NULL;
    }
    if (size < 0) {
        snprintf(err, errlen, "size must not be negative");
        stream_free(s);
        return NULL;
    }
    s->size = size;
    s->cap = bufsize >= 4 * STREAM_CHUNK ? bufsize : 4 * STREAM_CHUNK;
    s->ring = put ? malloc(s->cap) : NULL;
    s->md = md ? EVP_MD_CTX_new() : NULL;
    s->kick = event_new(base, -1, 0, on_kick, s);
    if ((put && !s->ring) || (md && (!s->md || !EVP_DigestInit_ex(s->md, md, NULL))) || !s->kick) {
        snprintf(err, errlen, "out of memory");
        stream_free(s);
        return NULL;
    }
    CURLcode rc = CURLE_OK;
    rc |= curl_easy_setopt(get->easy, CURLOPT_WRITEFUNCTION, on_get_data);
    rc |= curl_easy_setopt(get->easy, CURLOPT_WRITEDATA, s);
    /* A hint only: libcurl 7.88 refuses it (CURLE_BAD_FUNCTION_ARGUMENT) on
     * some reused handles from the client's pool (every blob of a run
     * between registries on HTTPS failed so); the download then runs with
     * the buffer the handle has. */
    (void)curl_easy_setopt(get->easy, CURLOPT_BUFFERSIZE, (long)STREAM_CHUNK);
    if (put) {
        rc |= curl_easy_setopt(put->easy, CURLOPT_UPLOAD_BUFFERSIZE, (long)STREAM_CHUNK);
        rc |= curl_easy_setopt(put->easy, CURLOPT_UPLOAD, 1L);
        rc |= curl_easy_setopt(put->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
        rc |= curl_easy_setopt(put->easy, CURLOPT_READFUNCTION, on_put_read);
        rc |= curl_easy_setopt(put->easy, CURLOPT_READDATA, s);
        http_req_lane(put, "upload");
    }
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "cannot configure the transfers");
        stream_free(s);
        return NULL;
    }
    return s;
}

int stream_start(struct stream *s, stream_done_fn done, void *ud)
{
    s->done = done;
    s->ud = ud;
    if (http_req_start(s->get, on_get_done, s) != 0) {
        s->res.http_err = s->get->err;
        fail(s, STREAM_ETRANSFER, 0, s->get->errbuf);
        return -1;
    }
    s->get_state = SIDE_RUNNING;
    if (s->size == 0 || !s->put)
        return 0; /* an empty blob's upload starts once its source is verified */
    start_put(s);
    if (s->put_state != SIDE_RUNNING) {
        http_req_cancel(s->get);
        s->get_state = SIDE_DONE;
        return -1;
    }
    return 0;
}

void stream_cancel(struct stream *s)
{
    if (s->get_state == SIDE_RUNNING)
        http_req_cancel(s->get);
    if (s->put_state == SIDE_RUNNING)
        http_req_cancel(s->put);
    s->get_state = s->put_state = SIDE_DONE;
    s->finished = 1;
    fail(s, STREAM_ECANCELLED, 0, "cancelled");
}

const struct stream_result *stream_result(const struct stream *s)
{
    return &s->res;
}

struct http_req *stream_upload(struct stream *s)
{
    return s->put;
}

void stream_tap(struct stream *s, EVP_MD_CTX *tap)
{
    s->tap = tap;
}

void stream_free(struct stream *s)
{
    if (!s)
        return;
    if (!s->finished && (s->get_state == SIDE_RUNNING || s->put_state == SIDE_RUNNING))
        stream_cancel(s);
    http_req_free(s->get);
    http_req_free(s->put);
    if (s->kick)
        event_free(s->kick);
    EVP_MD_CTX_free(s->md);
    free(s->ring);
    free(s);
}

const char *stream_strerror(const struct stream_result *r, char *buf, size_t n)
{
    switch (r->err) {
    case STREAM_OK:
        return "ok";
    case STREAM_EDIGEST:
        return "digest mismatch";
    case STREAM_EHTTPSRC:
    case STREAM_EHTTPDST:
        snprintf(buf, n, "http %ld", r->status);
        return buf;
    case STREAM_ETRANSFER:
        return http_strerror(r->http_err);
    case STREAM_ECANCELLED:
        return "cancelled";
    }
    return "protocol";
}
