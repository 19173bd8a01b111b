/* lua_http.h - request options shared by the Lua modules that do HTTP. */
#ifndef REPLICA_LUA_HTTP_H
#define REPLICA_LUA_HTTP_H

#include <lua.h>

#include "http.h"
#include "lua_headers.h"

/* Applies the `headers`, `body`, `follow` and `tls` fields of the options
 * table at idx to r, raising a Lua error on misuse. with_body = 0 leaves the
 * body to the caller (streamed uploads). */
void lhttp_configure(lua_State *L, int idx, struct http_req *r, const char *method, int with_body);

/* Pushes the header lines in head as a table with lower-case names;
 * repeated headers are joined with ", ". */
void lhttp_push_headers(lua_State *L, const struct buf *head);

#endif
