/* test_tally.c - the bounded counter table behind the HTTP client's request
 * counts (GET /metrics' replica_http_requests_total). */
#include "tally.h"
#include "test.h"

/* Returns the count of key (a, b, c), or 0 when the table has no such row. */
static unsigned long long count_of(const struct tally *t, const char *a, const char *b, const char *c)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->rows[i].key[0], a) == 0 && strcmp(t->rows[i].key[1], b) == 0 &&
            strcmp(t->rows[i].key[2], c) == 0)
            return t->rows[i].n;
    return 0;
}

/* Each key counts on its own row; the same key again adds to it. */
TEST_IMPL(tally_counts_per_key)
{
    struct tally t = { 0 };
    tally_add(&t, "r.example:443", "GET", "200");
    tally_add(&t, "r.example:443", "GET", "200");
    tally_add(&t, "r.example:443", "GET", "404");
    tally_add(&t, "r.example:443", "PUT", "200");
    ASSERT_EQ(t.n, 3);
    ASSERT_EQ(count_of(&t, "r.example:443", "GET", "200"), 2);
    ASSERT_EQ(count_of(&t, "r.example:443", "GET", "404"), 1);
    ASSERT_EQ(count_of(&t, "r.example:443", "PUT", "200"), 1);
    tally_free(&t);
    ASSERT_EQ(t.n, 0);
    tally_free(&t); /* twice is safe */
    return 0;
}

/* Past TALLY_MAX keys, new keys count under one ("other", "other",
 * "other") row and the known keys go on counting: hosts named by a registry
 * cannot grow the table without bound. */
TEST_IMPL(tally_is_bounded)
{
    struct tally t = { 0 };
    char host[32];
    for (int i = 0; i < TALLY_MAX + 100; i++) {
        snprintf(host, sizeof(host), "h%d:443", i);
        tally_add(&t, host, "GET", "200");
    }
    ASSERT_EQ(t.n, TALLY_MAX);
    ASSERT_EQ(count_of(&t, "other", "other", "other"), 101);
    tally_add(&t, "h0:443", "GET", "200");
    ASSERT_EQ(count_of(&t, "h0:443", "GET", "200"), 2);
    tally_add(&t, "new:443", "GET", "200");
    ASSERT_EQ(count_of(&t, "other", "other", "other"), 102);
    ASSERT_EQ(t.n, TALLY_MAX);
    tally_free(&t);
    return 0;
}

/* A key part longer than TALLY_KEYLEN - 1 is cut, and keys that agree up to
 * the cut share a row. */
TEST_IMPL(tally_cuts_long_keys)
{
    struct tally t = { 0 };
    char a[TALLY_KEYLEN + 50], b[TALLY_KEYLEN + 50];
    memset(a, 'x', sizeof(a) - 1);
    a[sizeof(a) - 1] = 0;
    memcpy(b, a, sizeof(b));
    b[sizeof(b) - 2] = 'y';
    tally_add(&t, a, "GET", "200");
    tally_add(&t, b, "GET", "200");
    ASSERT_EQ(t.n, 1);
    ASSERT_EQ(strlen(t.rows[0].key[0]), TALLY_KEYLEN - 1);
    ASSERT_EQ(t.rows[0].n, 2);
    tally_free(&t);
    return 0;
}
