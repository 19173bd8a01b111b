/* lua_crypto.c - the `digest`, `hmac` and `base64` modules on OpenSSL's
 * libcrypto: what auth flows need (token digests, AWS SigV4, JWT). Digests
 * are lower-case hex unless the last argument is "raw". */
#include <string.h>

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lua_crypto.h"
#include "vm.h"

/* Pushes md as hex, or raw when raw is set. */
static void push_md(lua_State *L, const unsigned char *md, unsigned int n, int raw)
{
    static const char hex[] = "0123456789abcdef";
    if (raw) {
        lua_pushlstring(L, (const char *)md, n);
        return;
    }
    char out[EVP_MAX_MD_SIZE * 2];
    for (unsigned int i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, (size_t)n * 2);
}

/* Reads the optional output format argument at idx. */
static int want_raw(lua_State *L, int idx)
{
    static const char *const fmts[] = { "hex", "raw", NULL };
    return luaL_checkoption(L, idx, "hex", fmts) == 1;
}

/* digest.sha256(s [, "raw"]) and friends; the EVP_MD is upvalue 1. */
static int l_digest(lua_State *L)
{
    const EVP_MD *md = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(s, n, out, &len, md, NULL))
        return luaL_error(L, "digest failed");
    push_md(L, out, len, want_raw(L, 2));
    return 1;
}

/* digest.new("sha256" | "sha512") -> a running hash: h:update(s),
 * h:hex() (the digest so far, as "alg:hex"), h:clone(). blob.copy{hash=h}
 * feeds it the bytes it streams. */
static int l_digest_new(lua_State *L)
{
    static const char *const algs[] = { "sha256", "sha512", NULL };
    int a = luaL_checkoption(L, 1, "sha256", algs);
    struct lhash *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->ctx = NULL;
    h->alg = algs[a];
    luaL_setmetatable(L, HASH_MT);
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || !EVP_DigestInit_ex(h->ctx, a == 0 ? EVP_sha256() : EVP_sha512(), NULL))
        return luaL_error(L, "digest.new: out of memory");
    return 1;
}

struct lhash *lhash_check(lua_State *L, int idx)
{
    struct lhash *h = luaL_checkudata(L, idx, HASH_MT);
    if (!h->ctx)
        luaL_error(L, "digest: hash is closed");
    return h;
}

static int l_hash_update(lua_State *L)
{
    struct lhash *h = lhash_check(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    EVP_DigestUpdate(h->ctx, s, n);
    lua_settop(L, 1);
    return 1;
}

static int l_hash_hex(lua_State *L)
{
    struct lhash *h = lhash_check(L, 1);
    EVP_MD_CTX *copy = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!copy || !EVP_MD_CTX_copy_ex(copy, h->ctx) || !EVP_DigestFinal_ex(copy, md, &n)) {
        EVP_MD_CTX_free(copy);
        return luaL_error(L, "digest: cannot finish the hash");
    }
    EVP_MD_CTX_free(copy);
    lua_pushstring(L, h->alg);
    lua_pushliteral(L, ":");
    push_md(L, md, n, 0);
    lua_concat(L, 3);
    return 1;
}

static int l_hash_clone(lua_State *L)
{
    struct lhash *h = lhash_check(L, 1);
    struct lhash *c = lua_newuserdatauv(L, sizeof(*c), 0);
    c->ctx = NULL;
    c->alg = h->alg;
    luaL_setmetatable(L, HASH_MT);
    c->ctx = EVP_MD_CTX_new();
    if (!c->ctx || !EVP_MD_CTX_copy_ex(c->ctx, h->ctx))
        return luaL_error(L, "digest: out of memory");
    return 1;
}

/* __gc: frees the context; safe to run twice. */
static int l_hash_gc(lua_State *L)
{
    struct lhash *h = luaL_checkudata(L, 1, HASH_MT);
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
    return 0;
}

/* hmac.sha256(key, s [, "raw"]) and friends. */
static int l_hmac(lua_State *L)
{
    const EVP_MD *md = lua_touserdata(L, lua_upvalueindex(1));
    size_t kn, n;
    const char *k = luaL_checklstring(L, 1, &kn);
    const char *s = luaL_checklstring(L, 2, &n);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(md, k, (int)kn, (const unsigned char *)s, n, out, &len))
        return luaL_error(L, "hmac failed");
    push_md(L, out, len, want_raw(L, 3));
    return 1;
}

static const char b64std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64.encode(s) / base64.urlencode(s): the alphabet is upvalue 1 and
 * padding upvalue 2 (the URL form has none, as JWT uses it). */
static int l_b64encode(lua_State *L)
{
    const char *abc = lua_touserdata(L, lua_upvalueindex(1));
    int pad = lua_toboolean(L, lua_upvalueindex(2));
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        luaL_addchar(&b, abc[v >> 18]);
        luaL_addchar(&b, abc[(v >> 12) & 63]);
        luaL_addchar(&b, abc[(v >> 6) & 63]);
        luaL_addchar(&b, abc[v & 63]);
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        luaL_addchar(&b, abc[v >> 18]);
        luaL_addchar(&b, abc[(v >> 12) & 63]);
        if (i + 1 < n)
            luaL_addchar(&b, abc[(v >> 6) & 63]);
        else if (pad)
            luaL_addchar(&b, '=');
        if (pad)
            luaL_addchar(&b, '=');
    }
    luaL_pushresult(&b);
    return 1;
}

/* base64.decode(s) / base64.urldecode(s) -> string | nil, err. Padding is
 * optional; whitespace is not accepted. */
static int l_b64decode(lua_State *L)
{
    const char *abc = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        goto bad;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = memchr(abc, s[i], 64);
        if (!p || s[i] == '\0')
            goto bad;
        v = (v << 6) | (unsigned)(p - abc);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            luaL_addchar(&b, (char)((v >> bits) & 0xff));
        }
    }
    luaL_pushresult(&b);
    return 1;
bad:
    lua_pushnil(L);
    lua_pushliteral(L, "invalid base64");
    return 2;
}

/* Adds fn with one light-userdata upvalue to the table on top under name. */
static void add_with(lua_State *L, const char *name, lua_CFunction fn, const void *up)
{
    lua_pushlightuserdata(L, (void *)up);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, -2, name);
}

void inject_crypto_api(struct vm *vm, lua_State *L)
{
    (void)vm;
    lua_createtable(L, 0, 3);
    add_with(L, "sha256", l_digest, EVP_sha256());
    add_with(L, "sha512", l_digest, EVP_sha512());
    add_with(L, "sha1", l_digest, EVP_sha1());
    lua_pushcfunction(L, l_digest_new);
    lua_setfield(L, -2, "new");
    lua_setfield(L, -2, "digest");

    static const luaL_Reg hash_methods[] = { { "update", l_hash_update }, { "hex", l_hash_hex },
        { "clone", l_hash_clone }, { NULL, NULL } };
    luaL_newmetatable(L, HASH_MT);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    luaL_newlib(L, hash_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_hash_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_createtable(L, 0, 3);
    add_with(L, "sha256", l_hmac, EVP_sha256());
    add_with(L, "sha512", l_hmac, EVP_sha512());
    add_with(L, "sha1", l_hmac, EVP_sha1());
    lua_setfield(L, -2, "hmac");

    lua_createtable(L, 0, 4);
    lua_pushlightuserdata(L, (void *)b64std);
    lua_pushboolean(L, 1);
    lua_pushcclosure(L, l_b64encode, 2);
    lua_setfield(L, -2, "encode");
    lua_pushlightuserdata(L, (void *)b64url);
    lua_pushboolean(L, 0);
    lua_pushcclosure(L, l_b64encode, 2);
    lua_setfield(L, -2, "urlencode");
    add_with(L, "decode", l_b64decode, b64std);
    add_with(L, "urldecode", l_b64decode, b64url);
    lua_setfield(L, -2, "base64");
}
