/* buf.h - a growable byte buffer. */
#ifndef REPLICA_BUF_H
#define REPLICA_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Appends n bytes; returns 0, or -1 when out of memory (buf unchanged). */
int buf_append(struct buf *b, const void *p, size_t n);

/* Makes room for at least n more bytes; returns 0 or -1. */
int buf_reserve(struct buf *b, size_t n);

/* Appends a NUL-terminated string; returns 0 or -1. */
int buf_puts(struct buf *b, const char *s);

/* Frees the storage and empties the buffer; safe to call twice. */
void buf_free(struct buf *b);

#endif
