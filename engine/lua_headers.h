/* lua_headers.h - header tables ({name = value} or {name = {values}}) as
 * the HTTP client and the HTTP server take them from Lua. Kept apart from
 * lua_http.h because libevent's evhttp and the client's http.h both define
 * HTTP_OK. */
#ifndef REPLICA_LUA_HEADERS_H
#define REPLICA_LUA_HEADERS_H

#include <lua.h>

/* Called by lhttp_each_header for every (name, value) pair. */
typedef void (*lhttp_header_fn)(lua_State *L, void *ud, const char *name, const char *value);

/* Walks the header table at idx (name = value, or name = {values}),
 * checking that names are RFC 9110 tokens and values hold no CR, LF or
 * NUL, and calls fn for each pair; raises "<what>: invalid header ..."
 * otherwise. Values may be strings or numbers. */
void lhttp_each_header(lua_State *L, int idx, const char *what, lhttp_header_fn fn, void *ud);

#endif
