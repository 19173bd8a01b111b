/* lua_rsa.c - the `rsa` module: RSASSA-PKCS1-v1_5 with SHA-256 (JWT's RS256)
 * on OpenSSL's EVP API, for the registry kinds that sign their own token
 * requests (Google's service-account JWT-bearer grant).
 *   rsa.sign_sha256(pem_private_key, data) -> signature | nil, err
 *   rsa.verify_sha256(pem_public_key_or_cert, data, signature) -> true | false, err
 * Keys are PEM text, never paths: the module reads no file. Error messages
 * are fixed sentences, so they never quote key material; OpenSSL's error
 * queue is cleared on every path. */
#include <limits.h>
#include <string.h>

#include <lauxlib.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "vm.h"

/* RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used". The upper
 * bound keeps a signature short (signing runs on the event loop, and its
 * cost grows with the cube of the size) and sizes the signature buffer. */
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192

/* The largest PEM text accepted (an 8192-bit PKCS#8 key is about 6.5 KB, a
 * certificate rarely more than a few). */
#define PEM_MAX (64 * 1024)

/* A passphrase callback that never prompts: it records that the key is
 * encrypted and makes OpenSSL give up. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(int *)u = 1;
    return -1;
}

/* Reads the PEM argument at idx into a memory BIO (which refers to the Lua
 * string, so the string must stay on the stack while the BIO lives). */
static BIO *pem_bio(lua_State *L, int idx, const char *fn)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    if (n > PEM_MAX)
        luaL_error(L, "%s: the key is larger than %d bytes", fn, PEM_MAX);
    BIO *b = BIO_new_mem_buf(s, (int)n);
    if (!b)
        luaL_error(L, "%s: out of memory", fn);
    return b;
}

/* Checks that pkey is an RSA key of an accepted size; returns NULL, or the
 * reason it is not. */
static const char *check_rsa(const EVP_PKEY *pkey)
{
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
        return "not an RSA key";
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < RSA_MIN_BITS)
        return "the RSA key is shorter than 2048 bits (RS256 needs 2048 or more, RFC 7518 §3.3)";
    if (bits > RSA_MAX_BITS)
        return "the RSA key is longer than 8192 bits";
    return NULL;
}

/* Pushes false or nil (as fail), then err; returns 2. */
static int push_fail(lua_State *L, int as_false, const char *err)
{
    ERR_clear_error();
    if (as_false)
        lua_pushboolean(L, 0);
    else
        lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* rsa.sign_sha256(pem, data) -> signature (raw bytes) | nil, err. The key is
 * PKCS#8 ("BEGIN PRIVATE KEY") or PKCS#1 ("BEGIN RSA PRIVATE KEY"),
 * unencrypted, 2048 to 8192 bits. */
static int l_sign_sha256(lua_State *L)
{
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    BIO *b = pem_bio(L, 1, "rsa.sign_sha256");
    int encrypted = 0;
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, &encrypted);
    BIO_free(b);
    if (!pkey)
        return push_fail(L, 0, encrypted ? "encrypted private keys are not supported"
                                         : "not a PEM private key (PKCS#8 or PKCS#1)");
    const char *err = check_rsa(pkey);
    if (err) {
        EVP_PKEY_free(pkey);
        return push_fail(L, 0, err);
    }
    unsigned char sig[RSA_MAX_BITS / 8];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = ctx
        && EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, pkey) == 1
        && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1
        && EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)data, n) == 1;
    EVP_MD_CTX_free(ctx); /* frees pctx too */
    EVP_PKEY_free(pkey);
    if (!ok)
        return push_fail(L, 0, "signing failed");
    ERR_clear_error();
    lua_pushlstring(L, (const char *)sig, siglen);
    return 1;
}

/* Reads a public key from PEM text: a certificate ("BEGIN CERTIFICATE"), an
 * X.509 SubjectPublicKeyInfo ("BEGIN PUBLIC KEY") or PKCS#1 ("BEGIN RSA
 * PUBLIC KEY"). Returns NULL when it holds none. */
static EVP_PKEY *read_public(BIO *b, const char *pem)
{
    if (strstr(pem, "-----BEGIN CERTIFICATE-----")) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        EVP_PKEY *pkey = x ? X509_get_pubkey(x) : NULL;
        X509_free(x);
        return pkey;
    }
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, "RSA",
                                                           EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    if (dctx && OSSL_DECODER_from_bio(dctx, b) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    return pkey;
}

/* rsa.verify_sha256(pem, data, signature) -> true | false, err */
static int l_verify_sha256(lua_State *L)
{
    size_t n, sn;
    const char *pem = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &n);
    const char *sig = luaL_checklstring(L, 3, &sn);
    BIO *b = pem_bio(L, 1, "rsa.verify_sha256");
    EVP_PKEY *pkey = read_public(b, pem);
    BIO_free(b);
    if (!pkey)
        return push_fail(L, 1, "not a PEM public key or certificate");
    const char *err = check_rsa(pkey);
    if (err) {
        EVP_PKEY_free(pkey);
        return push_fail(L, 1, err);
    }
    if (sn != (size_t)EVP_PKEY_get_size(pkey)) {
        EVP_PKEY_free(pkey);
        return push_fail(L, 1, "bad signature (its length is not the key's)");
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int setup = ctx
        && EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, pkey) == 1
        && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    int rc = setup ? EVP_DigestVerify(ctx, (const unsigned char *)sig, sn,
                                      (const unsigned char *)data, n) : -1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    if (rc != 1)
        return push_fail(L, 1, setup ? "bad signature" : "verification failed");
    ERR_clear_error();
    lua_pushboolean(L, 1);
    return 1;
}

void inject_rsa_api(struct vm *vm, lua_State *L)
{
    static const luaL_Reg fns[] = { { "sign_sha256", l_sign_sha256 },
        { "verify_sha256", l_verify_sha256 }, { NULL, NULL } };
    (void)vm;
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "rsa");
}
