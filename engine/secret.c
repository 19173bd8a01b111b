/* secret.c - registry credentials encrypted at rest with AES-256-GCM. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define NONCE_LEN 12
#define TAG_LEN 16
#define PREFIX "v1:"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

/* Formats a message into err when the caller gave room for one. */
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Writes all n bytes to fd; returns 0 or -1 with errno set. */
static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Creates path exclusively with a fresh random key; returns 0, 1 if the file
 * appeared meanwhile (caller reads it instead), or -1 with err. */
static int key_create(const char *path, unsigned char key[SECRET_KEY_LEN], char *err,
                      size_t errlen)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return 1;
        set_err(err, errlen, "key file %s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    if (RAND_bytes(key, SECRET_KEY_LEN) != 1) {
        set_err(err, errlen, "key file %s: no random bytes available", path);
        goto fail;
    }
    if (write_all(fd, key, SECRET_KEY_LEN) != 0 || fsync(fd) != 0) {
        set_err(err, errlen, "key file %s: cannot write: %s", path, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        set_err(err, errlen, "key file %s: cannot write: %s", path, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(path);
    OPENSSL_cleanse(key, SECRET_KEY_LEN);
    return -1;
}

/* Whether fd lies on a file system mounted read-only. */
static int on_readonly_mount(int fd)
{
    struct statvfs sv;
    return fstatvfs(fd, &sv) == 0 && (sv.f_flag & ST_RDONLY);
}

/* Reads an existing key file after checking its type, size and mode on the
 * opened descriptor itself; returns 0 or -1 with err. With platform set (a
 * key that is only loaded, never created: a FaaS platform's secret), a key
 * on a read-only mount may be a symbolic link and readable by group and
 * others (Kubernetes and OpenFaaS mount secrets so, root-owned, through
 * ..data links); it may never be writable by them. */
static int key_read(const char *path, unsigned char key[SECRET_KEY_LEN], int platform, char *err,
                    size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    int linked = 0;
    if (fd < 0 && errno == ELOOP && platform) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        linked = 1;
    }
    if (fd < 0) {
        if (errno == ELOOP)
            set_err(err, errlen, "key file %s: is a symbolic link, refusing it", path);
        else
            set_err(err, errlen, "key file %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int readonly = platform && on_readonly_mount(fd);
    if (linked && !readonly) {
        set_err(err, errlen, "key file %s: is a symbolic link, refusing it (a link is accepted only "
                "to a read-only mount, as a platform's secret)", path);
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "key file %s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "key file %s: is not a regular file", path);
        goto fail;
    }
    if (st.st_size != SECRET_KEY_LEN) {
        set_err(err, errlen, "key file %s: is %lld bytes, expected %d", path,
                (long long)st.st_size, SECRET_KEY_LEN);
        goto fail;
    }
    if ((st.st_mode & (readonly ? 022 : 077)) != 0) {
        set_err(err, errlen,
                "key file %s: mode %04o lets group or others %s it; chmod 600 it",
                path, (unsigned)(st.st_mode & 07777), readonly ? "write" : "access");
        goto fail;
    }
    size_t got = 0;
    while (got < SECRET_KEY_LEN) {
        ssize_t r = read(fd, key + got, SECRET_KEY_LEN - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            set_err(err, errlen, "key file %s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0) {
            set_err(err, errlen, "key file %s: shrank while being read", path);
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
fail:
    close(fd);
    OPENSSL_cleanse(key, SECRET_KEY_LEN);
    return -1;
}

enum secret_key_rc secret_key_load(const char *path, unsigned char key[SECRET_KEY_LEN],
                                   int may_create, char *err, size_t errlen)
{
    if (!may_create) {
        struct stat st;
        if (lstat(path, &st) != 0 && errno == ENOENT) {
            set_err(err, errlen, "key file %s: does not exist", path);
            return SECRET_KEY_MISSING;
        }
        return key_read(path, key, 1, err, errlen) == 0 ? SECRET_KEY_OK : SECRET_KEY_ERROR;
    }
    int rc = key_create(path, key, err, errlen);
    if (rc == 1)
        rc = key_read(path, key, 0, err, errlen);
    return rc == 0 ? SECRET_KEY_OK : SECRET_KEY_ERROR;
}

/* Runs AES-256-GCM one way over in[0..n) into out, with aad; for decryption
 * tag is checked, for encryption it is filled. Returns 0 or -1. */
static int gcm(int enc, const unsigned char *key, const unsigned char *nonce,
               const char *aad, const unsigned char *in, int n, unsigned char *out,
               unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok = 0;
    if (!ctx)
        return -1;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1)
        goto done;
    if (aad && *aad) {
        size_t alen = strlen(aad);
        if (alen > INT_MAX || EVP_CipherUpdate(ctx, NULL, &len, (const unsigned char *)aad,
                                               (int)alen) != 1)
            goto done;
    }
    if (n > 0 && (EVP_CipherUpdate(ctx, out, &len, in, n) != 1 || len != n))
        goto done;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1)
        goto done;
    if (EVP_CipherFinal_ex(ctx, out + n, &len) != 1 || len != 0)
        goto done;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1)
        goto done;
    ok = 1;
done:
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

char *secret_seal(const unsigned char key[SECRET_KEY_LEN], const char *plain, size_t len,
                  const char *aad)
{
    if (!key || (!plain && len > 0) || len > (size_t)INT_MAX / 2)
        return NULL;
    size_t rawlen = NONCE_LEN + len + TAG_LEN;
    unsigned char *raw = malloc(rawlen);
    size_t outlen = PREFIX_LEN + 4 * ((rawlen + 2) / 3) + 1;
    char *out = malloc(outlen);
    if (!raw || !out)
        goto fail;
    if (RAND_bytes(raw, NONCE_LEN) != 1 ||
        gcm(1, key, raw, aad, (const unsigned char *)plain, (int)len, raw + NONCE_LEN,
            raw + NONCE_LEN + len) != 0)
        goto fail;
    memcpy(out, PREFIX, PREFIX_LEN);
    EVP_EncodeBlock((unsigned char *)out + PREFIX_LEN, raw, (int)rawlen);
    OPENSSL_cleanse(raw, rawlen);
    free(raw);
    return out;
fail:
    if (raw)
        OPENSSL_cleanse(raw, rawlen);
    free(raw);
    free(out);
    return NULL;
}

/* True when s[0..n) is canonical-looking base64: alphabet only, n a multiple
 * of 4, and '=' only as one or two final characters. */
static int b64_shape_ok(const char *s, size_t n)
{
    if (n == 0 || n % 4 != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '+' || c == '/';
        if (c == '=') {
            if (i < n - 2 || (i == n - 2 && s[n - 1] != '='))
                return 0;
        } else if (!alpha) {
            return 0;
        }
    }
    return 1;
}

char *secret_open(const unsigned char key[SECRET_KEY_LEN], const char *sealed,
                  const char *aad, size_t *len)
{
    if (!key || !sealed || strncmp(sealed, PREFIX, PREFIX_LEN) != 0)
        return NULL;
    const char *b64 = sealed + PREFIX_LEN;
    size_t n = strlen(b64);
    if (n > (size_t)INT_MAX / 2 || !b64_shape_ok(b64, n))
        return NULL;
    size_t pad = (b64[n - 1] == '=') + (b64[n - 2] == '=');
    size_t rawlen = n / 4 * 3 - pad;
    if (rawlen < NONCE_LEN + TAG_LEN)
        return NULL;
    size_t plen = rawlen - NONCE_LEN - TAG_LEN;
    /* EVP_DecodeBlock writes n/4*3 bytes, padding included as zeros. */
    unsigned char *raw = malloc(n / 4 * 3);
    char *check = malloc(n + 1);
    char *plain = malloc(plen + 1);
    if (!raw || !check || !plain)
        goto fail;
    if (EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n) != (int)(n / 4 * 3))
        goto fail;
    /* Re-encoding must give the input back, so the unused low bits before
     * '=' cannot be altered without the open failing. */
    EVP_EncodeBlock((unsigned char *)check, raw, (int)rawlen);
    if (memcmp(check, b64, n) != 0)
        goto fail;
    if (gcm(0, key, raw, aad, raw + NONCE_LEN, (int)plen, (unsigned char *)plain,
            raw + NONCE_LEN + plen) != 0)
        goto fail;
    plain[plen] = '\0';
    if (len)
        *len = plen;
    free(check);
    OPENSSL_cleanse(raw, n / 4 * 3);
    free(raw);
    return plain;
fail:
    if (plain)
        OPENSSL_cleanse(plain, plen + 1);
    free(plain);
    free(check);
    free(raw);
    return NULL;
}

void secret_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}
