/* test.h - C unit tests in the style of libuv's: TEST_IMPL bodies with
 * ASSERT macros that print both values, each test run in its own process
 * with a timeout by test_main.c, results as TAP. */
#ifndef REPLICA_TEST_H
#define REPLICA_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_IMPL(name) int test_##name(void)

#define TEST_FAIL(...)                                                       \
    do {                                                                     \
        fprintf(stderr, "# %s:%d: ", __FILE__, __LINE__);                    \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        return 1;                                                            \
    } while (0)

#define ASSERT(expr)                                                         \
    do {                                                                     \
        if (!(expr))                                                         \
            TEST_FAIL("assertion failed: %s", #expr);                        \
    } while (0)

#define ASSERT_EQ(a, b)                                                      \
    do {                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                  \
        if (a_ != b_)                                                        \
            TEST_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);            \
    } while (0)

#define ASSERT_LE(a, b)                                                      \
    do {                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                  \
        if (!(a_ <= b_))                                                     \
            TEST_FAIL("%s <= %s: %lld > %lld", #a, #b, a_, b_);             \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                  \
    do {                                                                     \
        const char *a_ = (a), *b_ = (b);                                     \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                               \
            TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", \
                      b_ ? b_ : "(null)");                                   \
    } while (0)

#define ASSERT_NOT_NULL(p) ASSERT((p) != NULL)

/* Reads an environment variable the test needs, failing the test if unset. */
#define NEED_ENV(var, name)                                                  \
    const char *var = getenv(name);                                          \
    if (!var || !*var)                                                       \
        TEST_FAIL("environment variable %s is not set", name)

#endif
