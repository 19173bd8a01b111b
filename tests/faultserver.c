/*
 * faultserver — a deliberately misbehaving HTTP/1.1 server for fault-injection
 * tests.  Usage: faultserver PORT   (listens on 127.0.0.1:PORT)
 *
 * Behaviour is chosen by the request path (query string ignored):
 *   /stall  200 + Content-Length: 1048576, 1000 bytes of 'x', then silence
 *           until the client closes.
 *   /close  same headers and 1000 bytes, then FIN (truncated body).
 *   /hold   no response at all; keeps the connection until the client closes.
 *   /reset  closes at once with a TCP RST (SO_LINGER 0), no response.
 *   /ok     200 "ok", keep-alive (several/pipelined requests per connection).
 *   other   404 with Content-Length: 0, keep-alive.
 * A request body announced with Content-Length is skipped; chunked bodies are
 * not supported.  Single-threaded epoll loop; exits cleanly on SIGTERM/SIGINT.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define INBUF_SIZE 16384
#define PARTIAL_BODY 1000

/* What a connection does once its pending output has been written. */
enum after {
    AFTER_NEXT,  /* parse the next request (keep-alive) */
    AFTER_DRAIN, /* send nothing more; discard input until the client closes */
    AFTER_FIN,   /* half-close (FIN), then drain until the client closes */
    AFTER_CLOSE, /* close immediately */
};

struct conn {
    int fd;
    enum after after;   /* action once output is flushed */
    int draining;       /* 1: only discard input and wait for EOF */
    unsigned events;    /* current epoll interest set */
    const char *out;    /* pending output (static storage) */
    size_t outlen, outoff;
    size_t skip;        /* request-body bytes still to discard */
    size_t inlen;
    char in[INBUF_SIZE];
};

static const char RESP_OK[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
static const char RESP_OK_CLOSE[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
static const char RESP_404[] =
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
static const char RESP_400[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
static const char PARTIAL_HEAD[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";

static char partial[sizeof PARTIAL_HEAD - 1 + PARTIAL_BODY]; /* head + 'x'*1000 */
static int epfd = -1;

/* Raise the soft RLIMIT_NOFILE to the hard maximum. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            perror("faultserver: setrlimit");
    }
}

/* Update the epoll interest set of a connection if it changed. */
static int conn_watch(struct conn *c, unsigned events)
{
    if (c->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return -1;
    c->events = events;
    return 0;
}

/* Close a connection and free it; rst != 0 aborts with a TCP RST. */
static void conn_close(struct conn *c, int rst)
{
    if (rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd); /* also removes it from the epoll set */
    free(c);
}

/* Case-insensitively find header NAME in the header block; return its value. */
static const char *find_header(const char *hdrs, size_t len, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = memmem(hdrs, len, "\r\n", 2); /* skip the request line */
    const char *end = hdrs + len;
    while (p && p + 2 + nlen + 1 <= end) {
        p += 2;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            return v;
        }
        p = memmem(p, (size_t)(end - p), "\r\n", 2);
    }
    return NULL;
}

/* Choose the response for one complete request header block of length HLEN. */
static void handle_request(struct conn *c, size_t hlen)
{
    const char *req = c->in;
    const char *sp1 = memchr(req, ' ', hlen);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', hlen - (size_t)(sp1 + 1 - req)) : NULL;
    if (!sp1 || !sp2) {
        c->out = RESP_400, c->outlen = sizeof RESP_400 - 1, c->after = AFTER_FIN;
        return;
    }
    const char *path = sp1 + 1;
    size_t plen = (size_t)(sp2 - path);
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);

    /* Request body (Content-Length only) is skipped before the next request. */
    const char *cl = find_header(req, hlen, "content-length");
    c->skip = cl ? strtoull(cl, NULL, 10) : 0;
    const char *conn_hdr = find_header(req, hlen, "connection");
    int client_close = conn_hdr && strncasecmp(conn_hdr, "close", 5) == 0;

#define PATH_IS(s) (plen == sizeof(s) - 1 && memcmp(path, s, plen) == 0)
    c->outoff = 0;
    if (PATH_IS("/stall")) {
        c->out = partial, c->outlen = sizeof partial, c->after = AFTER_DRAIN;
    } else if (PATH_IS("/close")) {
        c->out = partial, c->outlen = sizeof partial, c->after = AFTER_FIN;
    } else if (PATH_IS("/hold")) {
        c->out = NULL, c->outlen = 0, c->after = AFTER_DRAIN;
    } else if (PATH_IS("/reset")) {
        c->out = NULL, c->outlen = 0, c->after = AFTER_CLOSE;
    } else if (PATH_IS("/ok")) {
        if (client_close)
            c->out = RESP_OK_CLOSE, c->outlen = sizeof RESP_OK_CLOSE - 1, c->after = AFTER_FIN;
        else
            c->out = RESP_OK, c->outlen = sizeof RESP_OK - 1, c->after = AFTER_NEXT;
    } else {
        c->out = RESP_404, c->outlen = sizeof RESP_404 - 1;
        c->after = client_close ? AFTER_FIN : AFTER_NEXT;
    }
#undef PATH_IS
}

/* Advance a connection: flush output, apply the after-action, parse requests.
 * Returns 0 to keep the connection, -1 if it was closed. */
static int conn_step(struct conn *c)
{
    for (;;) {
        while (c->outoff < c->outlen) {
            ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
            if (n > 0) {
                c->outoff += (size_t)n;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (conn_watch(c, EPOLLOUT) != 0)
                    goto fail;
                return 0;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                goto fail;
            }
        }
        c->out = NULL, c->outlen = c->outoff = 0;

        switch (c->after) {
        case AFTER_NEXT:
            break;
        case AFTER_CLOSE:
            conn_close(c, 1);
            return -1;
        case AFTER_FIN:
            shutdown(c->fd, SHUT_WR);
            /* fall through */
        case AFTER_DRAIN:
            c->draining = 1;
            c->inlen = 0;
            return conn_watch(c, EPOLLIN) == 0 ? 0 : (conn_close(c, 0), -1);
        }

        /* Discard the previous request's body, then look for a full header. */
        size_t drop = c->skip < c->inlen ? c->skip : c->inlen;
        if (drop) {
            memmove(c->in, c->in + drop, c->inlen - drop);
            c->inlen -= drop;
            c->skip -= drop;
        }
        const char *eoh = c->skip ? NULL : memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!eoh) {
            if (!c->skip && c->inlen == sizeof c->in) { /* header too large */
                c->out = RESP_400, c->outlen = sizeof RESP_400 - 1, c->outoff = 0;
                c->after = AFTER_FIN;
                continue;
            }
            return conn_watch(c, EPOLLIN) == 0 ? 0 : (conn_close(c, 0), -1);
        }
        size_t hlen = (size_t)(eoh - c->in) + 4;
        handle_request(c, hlen);
        memmove(c->in, c->in + hlen, c->inlen - hlen);
        c->inlen -= hlen;
    }
fail:
    conn_close(c, 0);
    return -1;
}

/* Handle readiness on a client connection. */
static void conn_event(struct conn *c, unsigned events)
{
    if (events & EPOLLOUT) {
        if (conn_step(c) != 0)
            return;
        if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            return;
    }
    if (c->events & EPOLLOUT) /* still blocked on output */
        return;
    for (;;) {
        char scratch[4096];
        char *buf = c->draining ? scratch : c->in + c->inlen;
        size_t cap = c->draining ? sizeof scratch : sizeof c->in - c->inlen;
        if (cap == 0)
            break;
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n > 0) {
            if (!c->draining)
                c->inlen += (size_t)n;
            if ((size_t)n < cap)
                break;
        } else if (n == 0) {
            conn_close(c, 0); /* client closed */
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            conn_close(c, 0);
            return;
        }
    }
    if (!c->draining)
        conn_step(c);
}

/* Accept every pending connection on the listening socket. */
static void accept_all(int lfd)
{
    static int warned;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && !warned) {
                perror("faultserver: accept"); /* e.g. EMFILE: retried later */
                warned = 1;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        memset(c, 0, offsetof(struct conn, in));
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
        }
    }
}

/* Create the non-blocking listening socket on 127.0.0.1:PORT. */
static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 65535) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Parse arguments, listen, and run the event loop until SIGTERM/SIGINT. */
int main(int argc, char **argv)
{
    char *end = NULL;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : 0;
    if (argc != 2 || *end != '\0' || port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    raise_nofile();
    memcpy(partial, PARTIAL_HEAD, sizeof PARTIAL_HEAD - 1);
    memset(partial + sizeof PARTIAL_HEAD - 1, 'x', PARTIAL_BODY);

    /* Signals are delivered through a signalfd so shutdown is race-free. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    int lfd = listen_on((int)port);
    if (lfd < 0) {
        fprintf(stderr, "faultserver: cannot listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0 || sfd < 0) {
        perror("faultserver: epoll/signalfd");
        return 1;
    }
    /* data.ptr NULL marks the listener, &sfd marks the signalfd. */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &sfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("faultserver: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                accept_all(lfd);
            else if (evs[i].data.ptr == &sfd)
                return 0; /* SIGTERM/SIGINT: exit; the kernel closes sockets */
            else
                conn_event(evs[i].data.ptr, evs[i].events);
        }
    }
}
