/* test_buf.c - the growable byte buffer every response body lands in. */
#include "buf.h"
#include "test.h"

/* Many small appends keep every byte in order while the buffer grows. */
TEST_IMPL(buf_append_grows_and_keeps_bytes)
{
    struct buf b = { 0 };
    char chunk[100];
    for (int i = 0; i < 1000; i++) {
        memset(chunk, 'a' + i % 26, sizeof(chunk));
        ASSERT_EQ(buf_append(&b, chunk, sizeof(chunk)), 0);
        ASSERT_EQ(b.len, (size_t)(i + 1) * sizeof(chunk));
        ASSERT(b.cap > b.len);
    }
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] != 'a' + (int)(i / sizeof(chunk)) % 26)
            TEST_FAIL("byte %zu is '%c'", i, b.data[i]);
    /* One append much larger than the capacity grows at once. */
    size_t big = 3 * b.cap + 7;
    char *p = calloc(1, big);
    ASSERT_NOT_NULL(p);
    size_t before = b.len;
    ASSERT_EQ(buf_append(&b, p, big), 0);
    free(p);
    ASSERT_EQ(b.len, before + big);
    ASSERT(b.cap > b.len);
    buf_free(&b);
    return 0;
}

/* The data is always a C string, so it can be printed or compared directly,
 * even when the appended bytes contain NULs. */
TEST_IMPL(buf_is_nul_terminated)
{
    struct buf b = { 0 };
    ASSERT_EQ(buf_append(&b, "abc", 3), 0);
    ASSERT_EQ(b.data[3], '\0');
    ASSERT_STR_EQ(b.data, "abc");
    ASSERT_EQ(buf_append(&b, "d\0e", 3), 0);
    ASSERT_EQ(b.len, 6);
    ASSERT_EQ(memcmp(b.data, "abcd\0e", 7), 0);
    /* Emptying by len = 0 and appending again terminates at the new end. */
    b.len = 0;
    ASSERT_EQ(buf_append(&b, "xy", 2), 0);
    ASSERT_STR_EQ(b.data, "xy");
    buf_free(&b);
    return 0;
}

TEST_IMPL(buf_puts_appends_strings)
{
    struct buf b = { 0 };
    ASSERT_EQ(buf_puts(&b, "hello"), 0);
    ASSERT_EQ(buf_puts(&b, ", "), 0);
    ASSERT_EQ(buf_puts(&b, "world"), 0);
    ASSERT_STR_EQ(b.data, "hello, world");
    ASSERT_EQ(b.len, strlen("hello, world"));
    buf_free(&b);
    return 0;
}

/* Appending nothing changes nothing and allocates nothing. */
TEST_IMPL(buf_append_zero_bytes_is_noop)
{
    struct buf b = { 0 };
    ASSERT_EQ(buf_append(&b, "", 0), 0);
    ASSERT_EQ(buf_puts(&b, ""), 0);
    ASSERT(b.data == NULL);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 0);
    buf_free(&b);
    return 0;
}

/* buf_free empties the buffer; a second free and reuse afterwards are fine. */
TEST_IMPL(buf_free_twice_is_safe)
{
    struct buf b = { 0 };
    buf_free(&b);
    ASSERT_EQ(buf_puts(&b, "some bytes"), 0);
    buf_free(&b);
    ASSERT(b.data == NULL);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(b.cap, 0);
    buf_free(&b);
    ASSERT_EQ(buf_puts(&b, "again"), 0);
    ASSERT_STR_EQ(b.data, "again");
    buf_free(&b);
    return 0;
}
