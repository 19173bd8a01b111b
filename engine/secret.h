/* secret.h - registry credentials encrypted at rest: a 32-byte key file and
 * AES-256-GCM sealed strings of the form "v1:" base64(nonce || ct || tag). */
#ifndef REPLICA_SECRET_H
#define REPLICA_SECRET_H

#include <stddef.h>

#define SECRET_KEY_LEN 32

/* What secret_key_load returns. */
enum secret_key_rc {
    SECRET_KEY_OK = 0,
    SECRET_KEY_ERROR = -1,   /* unreadable, or refused: err says why */
    SECRET_KEY_MISSING = -2, /* absent, and the caller did not allow creating it */
};

/* Loads the key at path. An absent file is created (mode 0600, 32 random
 * bytes) when may_create is non-zero, else it is SECRET_KEY_MISSING and
 * nothing is created. Refuses a non-regular file, a wrong size or
 * group/other mode bits; without may_create (a platform's secret), a key on
 * a read-only mount may be reached through a symbolic link and be readable,
 * not writable, by group and others. On failure err names path. Caller
 * owns key. */
enum secret_key_rc secret_key_load(const char *path, unsigned char key[SECRET_KEY_LEN],
                                   int may_create, char *err, size_t errlen);

/* Encrypts len bytes of plain bound to aad (may be NULL, same as "");
 * returns a malloc'd "v1:..." ASCII string the caller frees, or NULL. */
char *secret_seal(const unsigned char key[SECRET_KEY_LEN], const char *plain, size_t len,
                  const char *aad);

/* Decrypts a secret_seal string under the same key and aad; returns malloc'd,
 * NUL-terminated plaintext (length in *len if len is not NULL) the caller
 * wipes and frees, or NULL on bad format, wrong key/aad or tampering. */
char *secret_open(const unsigned char key[SECRET_KEY_LEN], const char *sealed,
                  const char *aad, size_t *len);

/* Overwrites n bytes at p with zeros in a way the compiler cannot elide. */
void secret_wipe(void *p, size_t n);

#endif
