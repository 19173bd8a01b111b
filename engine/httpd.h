/* httpd.h - a small HTTP/1.1 server on libevent bufferevents with
 * http-parser; no Lua in it (lua_httpd.c builds sys.listen on it).
 *
 * The server parses requests and enforces its limits itself; its user sees
 * a request twice through callbacks: when its head is complete (authorize,
 * before a body byte is read) and when it is complete (dispatch). From
 * dispatch until the response is complete the request is "with its
 * handler": the connection reads no further request, and the user answers
 * with httpd_respond, or httpd_start + httpd_write... + httpd_finish.
 *
 * Ownership:
 * - the caller owns the server (httpd_new / httpd_free); the server owns
 *   its connections and frees them itself (EOF, error, deadline, after the
 *   last response, or in httpd_free);
 * - a connection owns the request being read (struct httpd_msg); dispatch
 *   may take it, and then frees it with httpd_msg_free;
 * - a struct httpd_conn pointer is valid during authorize, and from
 *   dispatch until the request is complete (httpd_respond or httpd_finish
 *   returned 0) or until closed(req) is called, whichever comes first; a
 *   call that returns -1 has freed the connection (closed(req) was called
 *   if the request was with its handler).
 * Callbacks run from the event loop and must not free their own server.
 * The server uses its vm only for the event base and the log.
 */
#ifndef REPLICA_HTTPD_H
#define REPLICA_HTTPD_H

#include <stddef.h>
#include <netinet/in.h>
#include <sys/time.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "vm.h"

struct httpd;
struct httpd_conn;

/* One parsed request. The server fills it; its user only reads it. */
struct httpd_msg {
    enum evhttp_cmd_type method;     /* 0 when not one we serve */
    unsigned short major, minor;
    char *uri;                       /* NUL-terminated, as sent */
    struct evhttp_uri *uri_elems;    /* parsed uri; set once the head is checked */
    struct evkeyvalq headers;        /* as sent (names not folded, repeats kept) */
    struct evbuffer *body;
    size_t body_len;
    int too_large;                   /* the body is over max_body and was not read */
    int keepalive;                   /* the client asked to keep the connection */
    int close;                       /* the client asked to close it */
    char *who;                       /* who authorize said the client is, or NULL (owned) */
};

struct httpd_opts {
    size_t max_body;                 /* a body over it is not read (too_large) */
    int max_conns;                   /* open connections in all */
    int max_per_addr;                /* open connections from one client address */
    struct timeval timeout;          /* write inactivity */
    struct timeval header_timeout;   /* request line and headers, from the start or last response */
    struct timeval body_timeout;     /* the body, from the end of the headers */
};

struct httpd_callbacks {
    /* The head of m on c is complete and valid; no body byte is read yet.
     * Returns 1 to go on, or refuses with httpd_reject and returns what it
     * returned. m stays the server's. NULL: every request goes on. */
    int (*authorize)(void *ud, struct httpd_conn *c, struct httpd_msg *m);
    /* The request *m on c is complete. The callback takes it by setting *m
     * to NULL (it owns it from then on). Returns the user's token for the
     * request, which makes it "with its handler" until its response is
     * complete, or NULL on failure: the server then answers 500, closes c
     * and frees *m if it is still set. */
    void *(*dispatch)(void *ud, struct httpd_conn *c, struct httpd_msg **m);
    /* The connection of the request req (a dispatch token) is going away
     * before its response was complete: c must not be used from here. */
    void (*closed)(void *ud, void *req);
};

/* Listens on host:port (port 0: any free one) on vm's event base, logging
 * its errors to vm's log; cb and ud are called as described above and must
 * outlive the server. Returns the server (the caller frees it with
 * httpd_free), or NULL with *why the reason it cannot listen (a static
 * string), or NULL with *why NULL when out of memory. */
struct httpd *httpd_new(struct vm *vm, const char *host, int port, const struct httpd_opts *o,
                        const struct httpd_callbacks *cb, void *ud, const char **why);

/* Stops listening, closes every connection (closed() is called for each
 * request still with its handler) and frees s; s may be NULL. */
void httpd_free(struct httpd *s);

/* Returns the port s is bound to, or 0 if unknown. */
int httpd_port(const struct httpd *s);

/* Returns the number of open connections. */
int httpd_connections(const struct httpd *s);

#define HTTPD_PEER_LEN (INET6_ADDRSTRLEN + 10) /* a peer string with its NUL */

/* Returns the client of c as "ip:port" ("[ip]:port" for IPv6), owned by c. */
const char *httpd_conn_peer(const struct httpd_conn *c);

/* Returns the client's address of c without its port (the socket's peer,
 * never a forwarded header), owned by c. */
const char *httpd_conn_addr(const struct httpd_conn *c);

/* Answers status with a JSON error body {"error": why} (plus a
 * WWW-Authenticate challenge when given, and Retry-After when retry_after
 * is above 0) on a request that will not reach a handler (from authorize),
 * and closes the connection after it. Returns 0, or -1 when out of memory:
 * c is freed then. */
int httpd_reject(struct httpd_conn *c, int status, const char *why, const char *challenge,
                 long retry_after);

/* Sends a whole response on c (with its handler): status, the headers in
 * out (emptied) and body[0..len); adds Date, Content-Type, Content-Length
 * and Connection the way evhttp did. Returns 0 (the request is complete;
 * c is the server's again), or -1 when out of memory (c was freed). */
int httpd_respond(struct httpd_conn *c, int status, struct evkeyvalq *out, const char *body,
                  size_t len);

/* Sends the status line and the headers in out (emptied) of a streamed
 * response on c: chunked for HTTP/1.1 unless out has Content-Length.
 * Returns 0, or -1 when out of memory (c was freed). */
int httpd_start(struct httpd_conn *c, int status, struct evkeyvalq *out);

#define HTTPD_SLOW_BYTES (4UL << 20)

/* Queues chunk[0..n) of a started response; never blocks. Returns 0, 1
 * when the client has more than HTTPD_SLOW_BYTES unread (chunk was not
 * queued), or -1 when out of memory (c was freed). */
int httpd_write(struct httpd_conn *c, const char *chunk, size_t n);

/* Ends a started response. Returns 0 (the request is complete; c is the
 * server's again), or -1 when out of memory (c was freed). */
int httpd_finish(struct httpd_conn *c);

/* Returns the path of m's URI ("/" when empty), owned by m. */
const char *httpd_msg_path(const struct httpd_msg *m);

/* Frees m and everything it holds; m may be NULL. */
void httpd_msg_free(struct httpd_msg *m);

/* Makes h an empty header list (what TAILQ_INIT does); the caller frees
 * what is added with evhttp_clear_headers. */
void httpd_headers_init(struct evkeyvalq *h);

/* Returns the method's name, a static string ("UNKNOWN" for 0). */
const char *httpd_method_name(enum evhttp_cmd_type m);

#endif
