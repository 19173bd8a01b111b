/* fuzz_httpd.c - the HTTP/1.1 server (engine/httpd.c on http-parser, and
 * lua_httpd.c's request object), as `replica serve` runs it: sys.listen on
 * loopback with an authorize hook and a handler that reads every part of
 * the request (method, path, URI, query, headers, body) and answers, whole
 * or streamed. Each input is what one client sends on one connection
 * (pipelined requests included); the harness sends it, runs the loop until
 * the server has nothing more to do and has answered what it will, reading
 * the answers, then resets the connection (no TIME_WAIT left behind) and
 * waits until the server has closed its side. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "harness.h"
#include "sys.h"

static const char server[] =
    "local srv = assert(sys.listen{ port = 0, max_body = 4096, timeout = 5,\n"
    "  header_timeout = 5, body_timeout = 5,\n"
    "  authorize = function(method, path, authorization)\n"
    "    if path:find('^/deny') then return false, 'denied', 'Bearer realm=\"x\"' end\n"
    "    return true, authorization\n"
    "  end,\n"
    "  handler = function(req)\n"
    "    local out = { req.method, req.path, req.uri, tostring(req.who), tostring(req.too_large),\n"
    "                  req.peer, req.body or '', tostring(req:header('content-type')) }\n"
    "    for k, v in pairs(req.query) do out[#out + 1] = k .. '=' .. v end\n"
    "    for k, v in pairs(req.headers) do out[#out + 1] = k .. ': ' .. v end\n"
    "    if req.path:find('^/stream') then\n"
    "      req:start(200, { ['content-type'] = 'text/plain' })\n"
    "      for _, line in ipairs(out) do req:write(line .. '\\n') end\n"
    "      req:finish()\n"
    "    else\n"
    "      req:respond(200, { ['content-type'] = 'text/plain' }, table.concat(out, '\\n'))\n"
    "    end\n"
    "  end })\n"
    "return srv:port(), function() return srv:connections() end\n";

#define MAX_ROUNDS 100000 /* loop turns an input may take before it counts as a hang */

static struct sockaddr_in addr;
static int connections_ref = LUA_NOREF;

/* Returns the server's open connections (srv:connections()). */
static int connections(struct vm *vm)
{
    lua_rawgeti(vm->L, LUA_REGISTRYINDEX, connections_ref);
    lua_call(vm->L, 0, 1);
    int n = (int)lua_tointeger(vm->L, -1);
    lua_pop(vm->L, 1);
    return n;
}

/* Reads and drops what the server sent on fd; returns the bytes read, or -1
 * once the server closed or reset the connection. */
static long drain(int fd)
{
    char buf[16384];
    long total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            total += n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return total;
        return -1;
    }
}

/* Runs the loop until three turns in a row find no handler task alive and
 * nothing from the server; returns 0 then, or -1 when the server closed. */
static int settle(struct vm *vm, int fd)
{
    int idle = 0;
    for (int round = 0; idle < 3; round++) {
        if (round > MAX_ROUNDS) {
            fprintf(stderr, "fuzz_httpd: the server never settled\n");
            abort();
        }
        event_base_loop(vm->base, EVLOOP_NONBLOCK);
        long got = drain(fd);
        if (got < 0)
            return -1;
        idle = got == 0 && vm->live == 0 ? idle + 1 : 0;
    }
    return 0;
}

/* Returns a non-blocking socket connected to the server (the handshake is
 * the kernel's: the server accepts it in the loop later). libFuzzer's
 * SIGALRM may interrupt the connect, which then goes on by itself. */
static int open_client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("fuzz_httpd: socket");
        abort();
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS &&
        errno != EINTR) {
        perror("fuzz_httpd: connect");
        abort();
    }
    struct pollfd p = { fd, POLLOUT, 0 };
    int err = 0;
    socklen_t len = sizeof(err);
    while (poll(&p, 1, 5000) < 0 && errno == EINTR) {
    }
    if (!(p.revents & POLLOUT) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
        fprintf(stderr, "fuzz_httpd: cannot connect: %s\n", strerror(err));
        abort();
    }
    return fd;
}

/* libFuzzer: starts the server once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct vm *vm = fuzz_vm();
    if (vm_load_buffer(vm, vm->L, server, strlen(server), "=fuzz_httpd") != LUA_OK) {
        fprintf(stderr, "fuzz_httpd: %s\n", lua_tostring(vm->L, -1));
        abort();
    }
    sys_install(vm, vm->L);
    fuzz_run(vm, 0, 0, 2);
    connections_ref = luaL_ref(vm->L, LUA_REGISTRYINDEX);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)lua_tointeger(vm->L, -1));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lua_pop(vm->L, 1);
    return 0;
}

/* libFuzzer: one input, as what a client sends on one connection. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vm *vm = fuzz_vm();
    int fd = open_client();
    int open = 1;
    for (size_t off = 0; open && off < size;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            open = settle(vm, fd) == 0;
        else
            open = 0; /* the server closed: the rest is not read */
    }
    if (open)
        settle(vm, fd);
    struct linger reset = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    close(fd);
    for (int round = 0; connections(vm) > 0; round++) {
        if (round > MAX_ROUNDS) {
            fprintf(stderr, "fuzz_httpd: the server never closed the connection\n");
            abort();
        }
        event_base_loop(vm->base, EVLOOP_NONBLOCK);
    }
    return 0;
}
