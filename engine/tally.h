/* tally.h - a bounded table of counters keyed by three short strings: the
 * HTTP client's finished requests by host, method and status. The keys come
 * from the network (hosts named in a registry's Location headers), so the
 * table holds at most TALLY_MAX keys: once it is full, every new key counts
 * under ("other", "other", "other"). */
#ifndef REPLICA_TALLY_H
#define REPLICA_TALLY_H

#include <stddef.h>

#define TALLY_MAX 256   /* keys at most, the overflow key included */
#define TALLY_KEYLEN 256 /* bytes of each key part, NUL included (longer parts are cut) */

struct tally_row {
    char key[3][TALLY_KEYLEN];
    unsigned long long n;
};

struct tally {
    struct tally_row *rows; /* owned by the tally */
    size_t n, cap;
};

/* Adds one to the counter of key (a, b, c). Out of memory, the count is
 * lost (a counter is not worth failing a request for). */
void tally_add(struct tally *t, const char *a, const char *b, const char *c);

/* Frees the rows; the tally is empty again. */
void tally_free(struct tally *t);

#endif
