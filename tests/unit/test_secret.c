/* test_secret.c - registry credentials sealed at rest with a local key file. */
#include <sys/stat.h>
#include <unistd.h>

#include "secret.h"
#include "test.h"

static const unsigned char key_a[SECRET_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
static const unsigned char key_b[SECRET_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 10 };

/* Writes n bytes to path with the given mode; returns 0 or -1. */
static int write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(p, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    return ok && chmod(path, mode) == 0 ? 0 : -1;
}

/* Seals then opens plain[0..n) and checks the bytes come back exactly. */
static int round_trip(const char *plain, size_t n, const char *aad)
{
    char *sealed = secret_seal(key_a, plain, n, aad);
    ASSERT_NOT_NULL(sealed);
    ASSERT_EQ(strncmp(sealed, "v1:", 3), 0);
    for (const char *c = sealed; *c; c++)
        ASSERT(*c > ' ' && *c < 127);
    size_t len = 12345;
    char *back = secret_open(key_a, sealed, aad, &len);
    free(sealed);
    ASSERT_NOT_NULL(back);
    ASSERT_EQ(len, n);
    ASSERT_EQ(memcmp(back, plain, n), 0);
    ASSERT_EQ(back[n], '\0');
    secret_wipe(back, len);
    free(back);
    return 0;
}

/* What is sealed opens to the same bytes: text, empty, and binary with NULs. */
TEST_IMPL(secret_round_trip)
{
    ASSERT_EQ(round_trip("hunter2", 7, "registry:42:password"), 0);
    ASSERT_EQ(round_trip("", 0, "registry:42:password"), 0);
    ASSERT_EQ(round_trip("no aad", 6, NULL), 0);
    char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (char)i;
    for (size_t n = 1; n <= sizeof(bin); n++) /* every base64 padding case */
        ASSERT_EQ(round_trip(bin, n, "registry:1:token"), 0);
    ASSERT_EQ(round_trip("a\0b\0\0c", 6, "x"), 0);
    return 0;
}

/* Sealing the same secret twice gives different text, so equal passwords
 * cannot be spotted in the database. */
TEST_IMPL(secret_seal_uses_fresh_nonce)
{
    char *a = secret_seal(key_a, "same", 4, "registry:1:password");
    char *b = secret_seal(key_a, "same", 4, "registry:1:password");
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    ASSERT(strcmp(a, b) != 0);
    ASSERT_EQ(strlen(a), strlen(b));
    ASSERT(strncmp(a + 3, b + 3, 16) != 0); /* the nonce part itself differs */
    free(a);
    free(b);
    return 0;
}

/* Changing any single character of the sealed text makes it fail to open,
 * including the prefix, the padding and the unused bits before the padding. */
TEST_IMPL(secret_tampered_text_fails)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t plen = 12; plen <= 14; plen++) { /* "==", "=" and no padding */
        char *s = secret_seal(key_a, "hunter2hunter2", plen, "r:1:p");
        ASSERT_NOT_NULL(s);
        size_t n = strlen(s);
        for (size_t i = 0; i < n; i++) {
            char orig = s[i];
            /* Fixed picks plus the neighbour that differs in the lowest bit,
             * which before '=' padding is an unused bit. */
            char subst[] = "?ACQgw/+9=:z.";
            const char *at = strchr(b64, orig);
            subst[0] = at && orig ? b64[(at - b64) ^ 1] : 'A';
            for (const char *c = subst; *c; c++) {
                if (*c == orig)
                    continue;
                s[i] = *c;
                char *p = secret_open(key_a, s, "r:1:p", NULL);
                if (p) {
                    free(p);
                    free(s);
                    TEST_FAIL("opened with char %zu of %zu changed to '%c'", i, n, *c);
                }
            }
            s[i] = orig;
        }
        size_t len = 0;
        char *p = secret_open(key_a, s, "r:1:p", &len);
        free(s);
        ASSERT_NOT_NULL(p);
        ASSERT_EQ(len, plen);
        ASSERT_EQ(memcmp(p, "hunter2hunter2", plen), 0);
        free(p);
    }
    return 0;
}

/* A secret sealed for one registry field does not open as another. */
TEST_IMPL(secret_wrong_aad_fails)
{
    char *s = secret_seal(key_a, "pw", 2, "registry:42:password");
    ASSERT_NOT_NULL(s);
    ASSERT(secret_open(key_a, s, "registry:43:password", NULL) == NULL);
    ASSERT(secret_open(key_a, s, "registry:42:token", NULL) == NULL);
    ASSERT(secret_open(key_a, s, NULL, NULL) == NULL);
    free(s);
    s = secret_seal(key_a, "pw", 2, NULL);
    ASSERT_NOT_NULL(s);
    ASSERT(secret_open(key_a, s, "registry:42:password", NULL) == NULL);
    free(s);
    return 0;
}

/* A secret does not open under another key. */
TEST_IMPL(secret_wrong_key_fails)
{
    char *s = secret_seal(key_a, "pw", 2, "aad");
    ASSERT_NOT_NULL(s);
    ASSERT(secret_open(key_b, s, "aad", NULL) == NULL);
    char *p = secret_open(key_a, s, "aad", NULL);
    ASSERT_NOT_NULL(p);
    free(p);
    free(s);
    return 0;
}

/* Malformed or truncated input is rejected with NULL, never a crash. */
TEST_IMPL(secret_garbage_fails)
{
    static const char *const bad[] = {
        "", "v1", "v1:", "v2:AAAA", "hunter2", "v1:====", "v1:A", "v1:AAA",
        "v1:AAAA", "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 30 bytes: nonce+tag+2 */
        "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "v1: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "v1:AAAA\nAAAA",
        "v1:AA=A", "v1:A===", "v1:!!!!",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = secret_open(key_a, bad[i], NULL, NULL);
        if (p) {
            free(p);
            TEST_FAIL("opened \"%s\"", bad[i]);
        }
    }
    ASSERT(secret_open(key_a, NULL, NULL, NULL) == NULL);
    char *s = secret_seal(key_a, "a longer secret value", 21, NULL);
    ASSERT_NOT_NULL(s);
    for (size_t n = strlen(s); n-- > 0;) { /* every truncation */
        s[n] = '\0';
        char *p = secret_open(key_a, s, NULL, NULL);
        if (p) {
            free(p);
            free(s);
            TEST_FAIL("opened truncated to %zu chars", n);
        }
    }
    free(s);
    return 0;
}

/* Fills dir (mkdtemp) and path = dir/name; returns 0 or -1. */
static int tmp_path(char *dir, size_t dlen, char *path, size_t plen, const char *name)
{
    snprintf(dir, dlen, "/tmp/replica-secret-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, plen, "%s/%s", dir, name);
    return 0;
}

/* The first load creates a private key file; later loads read the same key. */
TEST_IMPL(secret_key_created_0600_and_reused)
{
    char dir[64], path[128], err[256] = "";
    ASSERT_EQ(tmp_path(dir, sizeof(dir), path, sizeof(path), "key"), 0);
    unsigned char k1[SECRET_KEY_LEN], k2[SECRET_KEY_LEN];
    int rc1 = secret_key_load(path, k1, 1, err, sizeof(err));
    struct stat st;
    int rcs = stat(path, &st);
    int rc2 = secret_key_load(path, k2, 1, err, sizeof(err));
    unlink(path);
    rmdir(dir);
    ASSERT_EQ(rc1, 0);
    ASSERT_EQ(rcs, 0);
    ASSERT(S_ISREG(st.st_mode));
    ASSERT_EQ(st.st_mode & 0777, 0600);
    ASSERT_EQ(st.st_size, SECRET_KEY_LEN);
    if (rc2 != 0)
        TEST_FAIL("second load: %s", err);
    ASSERT_EQ(memcmp(k1, k2, SECRET_KEY_LEN), 0);
    /* A value sealed with the first key opens with the reloaded one. */
    char *s = secret_seal(k1, "pw", 2, "r");
    ASSERT_NOT_NULL(s);
    char *p = secret_open(k2, s, "r", NULL);
    free(s);
    ASSERT_NOT_NULL(p);
    ASSERT_STR_EQ(p, "pw");
    free(p);
    return 0;
}

/* A key file readable by others is refused, and the error says which file. */
TEST_IMPL(secret_key_world_readable_refused)
{
    char dir[64], path[128], err[256] = "";
    ASSERT_EQ(tmp_path(dir, sizeof(dir), path, sizeof(path), "key"), 0);
    unsigned char k[SECRET_KEY_LEN] = { 0 };
    int wr = write_file(path, key_a, SECRET_KEY_LEN, 0644);
    int rc = secret_key_load(path, k, 1, err, sizeof(err));
    int wr2 = chmod(path, 0640);
    char err2[256] = "";
    int rc2 = secret_key_load(path, k, 1, err2, sizeof(err2));
    unlink(path);
    rmdir(dir);
    ASSERT_EQ(wr, 0);
    ASSERT_EQ(wr2, 0);
    ASSERT_EQ(rc, -1);
    ASSERT_EQ(rc2, -1);
    if (!strstr(err, path) || !strstr(err, "0644"))
        TEST_FAIL("error does not name the path and mode: %s", err);
    ASSERT_NOT_NULL(strstr(err2, path));
    return 0;
}

/* A key file of the wrong size, or not a regular file, is refused. */
TEST_IMPL(secret_key_wrong_size_refused)
{
    char dir[64], path[128], err[256] = "";
    ASSERT_EQ(tmp_path(dir, sizeof(dir), path, sizeof(path), "key"), 0);
    unsigned char k[SECRET_KEY_LEN + 1] = { 0 };
    int w1 = write_file(path, key_a, SECRET_KEY_LEN - 1, 0600);
    int short_rc = secret_key_load(path, k, 1, err, sizeof(err));
    int short_named = strstr(err, path) != NULL;
    int w2 = write_file(path, k, SECRET_KEY_LEN + 1, 0600);
    int long_rc = secret_key_load(path, k, 1, err, sizeof(err));
    int w3 = write_file(path, "", 0, 0600);
    int empty_rc = secret_key_load(path, k, 1, err, sizeof(err));
    unlink(path);
    int w4 = mkdir(path, 0700);
    int dir_rc = secret_key_load(path, k, 1, err, sizeof(err));
    int dir_named = strstr(err, path) != NULL;
    rmdir(path);
    rmdir(dir);
    ASSERT_EQ(w1, 0);
    ASSERT_EQ(w2, 0);
    ASSERT_EQ(w3, 0);
    ASSERT_EQ(w4, 0);
    ASSERT_EQ(short_rc, -1);
    ASSERT(short_named);
    ASSERT_EQ(long_rc, -1);
    ASSERT_EQ(empty_rc, -1);
    ASSERT_EQ(dir_rc, -1);
    ASSERT(dir_named);
    return 0;
}

/* When the caller may not create a key (the database holds values sealed
 * under one), an absent key file is reported as missing, naming it, and is
 * not created; an existing one loads as usual. */
TEST_IMPL(secret_key_missing_not_created_when_not_allowed)
{
    char dir[64], path[128], err[256] = "", err2[256] = "";
    ASSERT_EQ(tmp_path(dir, sizeof(dir), path, sizeof(path), "key"), 0);
    unsigned char k1[SECRET_KEY_LEN], k2[SECRET_KEY_LEN];
    enum secret_key_rc missing = secret_key_load(path, k1, 0, err, sizeof(err));
    int created = access(path, F_OK) == 0;
    enum secret_key_rc made = secret_key_load(path, k1, 1, err2, sizeof(err2));
    enum secret_key_rc again = secret_key_load(path, k2, 0, err2, sizeof(err2));
    unlink(path);
    rmdir(dir);
    ASSERT_EQ(missing, SECRET_KEY_MISSING);
    if (!strstr(err, path) || !strstr(err, "does not exist"))
        TEST_FAIL("error does not name the missing file: %s", err);
    ASSERT_EQ(created, 0);
    ASSERT_EQ(made, SECRET_KEY_OK);
    ASSERT_EQ(again, SECRET_KEY_OK);
    ASSERT_EQ(memcmp(k1, k2, SECRET_KEY_LEN), 0);
    return 0;
}
