/* version.c - `replica version`: replica's version and those of the
 * libraries it runs on, as they report themselves at run time (what an
 * operator needs in a bug report: Debian may have updated one). */
#include <stdio.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <histedit.h>
#include <http_parser.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <openssl/crypto.h>
#include <sqlite3.h>

#include "cli.h"

#ifndef REPLICA_VERSION
#define REPLICA_VERSION "0.1.0-dev"
#endif

/* lua-cjson's own _VERSION, from a state of its own. */
static void print_cjson(void)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return;
    luaopen_cjson(L);
    if (lua_getfield(L, -1, "_VERSION") == LUA_TSTRING)
        printf("  lua-cjson %s\n", lua_tostring(L, -1));
    lua_close(L);
}

int cmd_version(void)
{
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    unsigned long hp = http_parser_version();
    printf("replica %s\n", REPLICA_VERSION);
    printf("  libcurl %s (%s%s%s%s%s)\n", cv->version, cv->ssl_version ? cv->ssl_version : "no TLS",
           cv->libz_version ? ", zlib " : "", cv->libz_version ? cv->libz_version : "",
           cv->nghttp2_version ? ", nghttp2 " : "", cv->nghttp2_version ? cv->nghttp2_version : "");
    printf("  libevent %s\n", event_get_version());
    printf("  %s\n", LUA_RELEASE);
    print_cjson();
    printf("  SQLite %s\n", sqlite3_libversion());
    printf("  %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("  http-parser %lu.%lu.%lu\n", (hp >> 16) & 255, (hp >> 8) & 255, hp & 255);
    printf("  libedit %d.%d (its API version)\n", LIBEDIT_MAJOR, LIBEDIT_MINOR);
    return 0;
}
