/* stream.h - a blob streamed from a source GET into a target upload.
 *
 * Bytes flow from the download's write callback into a bounded ring buffer
 * and out through the upload's read callback; each side pauses when the ring
 * is full or empty, and the other side unpauses it from a deferred libevent
 * callback, never from inside libcurl. The digest is computed as bytes
 * arrive, and the upload is held back one byte short of the end until the
 * whole source has arrived and matched the expected digest and size: a
 * corrupt blob is never completed on the target.
 */
#ifndef REPLICA_STREAM_H
#define REPLICA_STREAM_H

#include <stdint.h>

#include <openssl/evp.h>

#include "http.h"

enum stream_err {
    STREAM_OK = 0,
    STREAM_EDIGEST,   /* "digest mismatch": content or size differs */
    STREAM_EHTTPSRC,  /* "http NNN": the source answered a non-2xx status */
    STREAM_EHTTPDST,  /* "http NNN": the target refused the upload */
    STREAM_ETRANSFER, /* an http_err of either side (timeout, connect, ...) */
    STREAM_ECANCELLED,
};

struct stream;
typedef void (*stream_done_fn)(struct stream *s, void *ud);

struct stream_result {
    enum stream_err err;
    enum http_err http_err;  /* for STREAM_ETRANSFER */
    long status;             /* the failing side's HTTP status, or the upload's */
    int64_t bytes;           /* bytes received from the source */
    char detail[256];
};

/* Creates a stream from get (a GET on the source) into put (an upload on the
 * target: PUT, or PATCH when the caller completes the upload itself; NULL to
 * only read and hash the source). The stream takes ownership of both
 * requests. digest is "sha256:<hex>" or "sha512:<hex>", or NULL when the
 * caller verifies the content itself (a chunk of a PATCH upload); size is
 * the exact byte count. bufsize bounds the ring. Returns NULL with a message
 * in err on bad arguments or no memory. */
struct stream *stream_new(struct event_base *base, struct http_req *get, struct http_req *put,
                          const char *digest, int64_t size, size_t bufsize, char *err,
                          size_t errlen);

/* Starts both transfers; done(s, ud) is called once both have ended, from
 * the event loop. Returns 0 or -1 (result set, done not called). */
int stream_start(struct stream *s, stream_done_fn done, void *ud);

/* Aborts both transfers without calling done. */
void stream_cancel(struct stream *s);

/* Returns the outcome; valid once done was called. */
const struct stream_result *stream_result(const struct stream *s);

/* Returns the upload request (its response status, headers and body). */
struct http_req *stream_upload(struct stream *s);

/* Feeds every byte read from the source into tap as well (a running hash
 * across several streams). The caller keeps tap alive until done. */
void stream_tap(struct stream *s, EVP_MD_CTX *tap);

/* Cancels if needed and frees the stream and its requests; NULL allowed. */
void stream_free(struct stream *s);

/* Returns the Lua-visible error string for a result (a static buffer may be
 * used for "http NNN"; copy it before the next call). */
const char *stream_strerror(const struct stream_result *r, char *buf, size_t n);

#endif
