/* tally.c - a bounded table of counters keyed by three strings (tally.h). */
#include "tally.h"

#include <stdlib.h>
#include <string.h>

/* Copies s into dst (TALLY_KEYLEN bytes), cut to fit. */
static void key_copy(char *dst, const char *s)
{
    size_t len = strlen(s);
    if (len >= TALLY_KEYLEN)
        len = TALLY_KEYLEN - 1;
    memcpy(dst, s, len);
    dst[len] = 0;
}

/* Returns the row of key k (as key_copy stored it), adding it when there is
 * room (else the overflow row); NULL when out of memory. */
static struct tally_row *row_of(struct tally *t, char k[3][TALLY_KEYLEN])
{
    for (size_t i = 0; i < t->n; i++) {
        struct tally_row *r = &t->rows[i];
        if (strcmp(r->key[0], k[0]) == 0 && strcmp(r->key[1], k[1]) == 0 && strcmp(r->key[2], k[2]) == 0)
            return r;
    }
    int other = strcmp(k[0], "other") == 0 && strcmp(k[1], "other") == 0 && strcmp(k[2], "other") == 0;
    if (t->n >= TALLY_MAX - 1 && !other) {
        for (int j = 0; j < 3; j++)
            key_copy(k[j], "other");
        return row_of(t, k); /* found, or added as the last row */
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        if (cap > TALLY_MAX)
            cap = TALLY_MAX;
        struct tally_row *rows = realloc(t->rows, cap * sizeof(*rows));
        if (!rows)
            return NULL;
        t->rows = rows;
        t->cap = cap;
    }
    struct tally_row *r = &t->rows[t->n++];
    memcpy(r->key, k, sizeof(r->key));
    r->n = 0;
    return r;
}

void tally_add(struct tally *t, const char *a, const char *b, const char *c)
{
    char k[3][TALLY_KEYLEN];
    key_copy(k[0], a);
    key_copy(k[1], b);
    key_copy(k[2], c);
    struct tally_row *r = row_of(t, k);
    if (r)
        r->n++;
}

void tally_free(struct tally *t)
{
    free(t->rows);
    t->rows = NULL;
    t->n = t->cap = 0;
}
