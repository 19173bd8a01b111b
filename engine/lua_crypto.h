/* lua_crypto.h - the running hash userdata, shared with blob.copy. */
#ifndef REPLICA_LUA_CRYPTO_H
#define REPLICA_LUA_CRYPTO_H

#include <lua.h>
#include <openssl/evp.h>

#define HASH_MT "replica.digest"

struct lhash {
    EVP_MD_CTX *ctx;
    const char *alg;
};

/* Returns the open running hash at idx, raising on anything else. */
struct lhash *lhash_check(lua_State *L, int idx);

#endif
