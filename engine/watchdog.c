/* watchdog.c - the watchdog thread (see watchdog.h), its sys functions, and
 * the test-only blocking call.
 *
 * What the two threads share lives in struct watchdog under mu: the progress
 * count, a copy of the running slice's task, the settings, and the last
 * stall. The loop thread holds mu only for a few copies, never across a call
 * that can block, so the watchdog thread can always take it. The watchdog
 * thread only reads and writes that memory, file descriptors and the record
 * file: it never calls into libevent, Lua or the VM. */
#include "watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "sched.h"
#include "sys.h"
#include "vm.h"

#define NAME_LEN 128        /* task names are cut to this in reports */
#define PATH_LEN 4096
#define RECORD_MAX (1 << 20) /* bytes of the record file read at start */
#define HELD_MIN 1.0        /* a forced exit blames the running task only when
                             * the loop made no progress for this long (or the
                             * stall bound or half the grace, if shorter) */

/* What the watchdog knows of a task: copied, never a pointer to it. */
struct wd_task {
    int set;                 /* 0: no task (between slices) */
    long tag;                /* the task's log tag (serve: the task's id) */
    long exec;               /* its execution (sys.log_execution), or 0 */
    char name[NAME_LEN];
};

struct wd_stall {
    struct wd_task held;     /* the task that held the loop, if any */
    double seconds;
    double at;               /* wall clock when it began */
};

struct watchdog {
    struct vm *vm;
    struct event *fwd_ev;    /* loop: reads forwarded signals */
    struct event *beat_ev;   /* loop: the heartbeat */
    watchdog_signal_fn on_signal;
    void *ud;
    int sig_fd;              /* signalfd of SIGINT/SIGTERM, read by the thread */
    int fwd[2];              /* thread -> loop: one byte per signal */
    int wake[2];             /* loop -> thread: look at stop */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    /* under mu */
    unsigned long seq;       /* bumped at every slice edge and heartbeat */
    struct wd_task cur;      /* the slice running now */
    double grace, stall;
    int sigint_interrupts;   /* set once before the thread starts */
    enum log_format log_format; /* these two too */
    char log_run[64];
    char record[PATH_LEN];   /* "" = no record file */
    unsigned long stalls;
    struct wd_stall last;
    int unlogged;            /* last is not logged yet */
    int stop;
};

/* The watchdog thread's own state. */
struct wd_watch {
    unsigned long seen_seq;
    double since, since_wall; /* when seen_seq was first seen */
    int stalled;
    struct wd_task held;
    int signals, first_sig;
    double deadline;
};

/* Monotonic and wall-clock seconds. */
static double mono(void)
{
    return vm_now_mono();
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes a whole buffer to fd, retrying short writes; errors are ignored
 * (there is nobody left to tell). */
static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Writes msg on stderr as one line: as it is with a newline in the text
 * format; in JSON, a log line (level 2 warn, 3 error) whose context is the
 * task t when it is set. */
static void say(const struct watchdog *wd, int level, const char *msg, const struct wd_task *t)
{
    char line[LOGLINE_MAX];
    if (wd->log_format == LOG_FORMAT_TEXT) {
        int len = snprintf(line, sizeof(line), "%s\n", msg);
        if (len > 0)
            write_all(STDERR_FILENO, line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
        return;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int held = t && t->set;
    struct logline_ctx c = { held ? t->name : NULL, held ? t->tag : 0, held ? t->exec : 0,
                             wd->log_run[0] ? wd->log_run : NULL };
    write_all(STDERR_FILENO, line, logline_format(line, LOG_FORMAT_JSON, &now, level, msg, &c));
}

/* Writes who held the loop into buf: `task 7 in "name"`, `"name"` for a
 * task without a tag, or "no task". */
static void describe(char *buf, size_t n, const struct wd_task *t)
{
    if (!t->set)
        snprintf(buf, n, "no task");
    else if (t->tag > 0)
        snprintf(buf, n, "task %ld in \"%s\"", t->tag, t->name);
    else
        snprintf(buf, n, "\"%s\"", t->name);
}

/* Ends the process after the grace period: appends the task holding the
 * loop, if the loop is held (no progress for a while), to the record file
 * with fsync, says so on stderr, and calls _exit. A task that merely runs a
 * short slice at that moment is not blamed. */
static void force_exit(struct watchdog *wd, const struct wd_watch *w, double stall, double grace)
{
    struct wd_task cur;
    char path[PATH_LEN], who[NAME_LEN + 64], msg[PATH_LEN + 512];
    pthread_mutex_lock(&wd->mu);
    cur = wd->cur;
    unsigned long seq = wd->seq;
    memcpy(path, wd->record, sizeof(path));
    pthread_mutex_unlock(&wd->mu);
    double held_min = stall > 0 && stall < HELD_MIN ? stall : HELD_MIN;
    if (held_min > grace / 2)
        held_min = grace / 2;
    if (seq != w->seen_seq || mono() - w->since < held_min)
        cur.set = 0;
    int sig = w->first_sig;
    describe(who, sizeof(who), &cur);
    const char *note = "";
    if (cur.set && path[0]) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        char line[NAME_LEN + 32];
        int len = snprintf(line, sizeof(line), "%ld\t%s\n", cur.tag, cur.name);
        if (fd >= 0 && len > 0) {
            write_all(fd, line, (size_t)len);
            fsync(fd);
        } else {
            note = " (cannot write the record file)";
        }
        if (fd >= 0)
            close(fd);
    }
    if (cur.set)
        snprintf(msg, sizeof(msg), "replica: the grace period (%g s) ran out with the event loop "
                 "held by %s%s: exiting", grace, who, note);
    else
        snprintf(msg, sizeof(msg), "replica: the grace period (%g s) ran out: exiting", grace);
    say(wd, 3, msg, &cur);
    _exit(128 + sig);
}

/* One signal: the first is forwarded to the loop and starts the grace
 * period, the second ends the process at once. */
static void take_signal(struct watchdog *wd, struct wd_watch *w, int sig, double grace)
{
    if (sig == SIGINT && wd->sigint_interrupts) {
        unsigned char b = (unsigned char)sig;
        write_all(wd->fwd[1], (const char *)&b, 1);
        return;
    }
    if (w->signals++ > 0) {
        say(wd, 3, "replica: interrupted", NULL);
        _exit(128 + sig);
    }
    w->first_sig = sig;
    w->deadline = mono() + grace;
    unsigned char b = (unsigned char)sig;
    write_all(wd->fwd[1], (const char *)&b, 1);
}

/* Compares the progress count with the last one seen: reports a stall on
 * stderr once it passes the bound (if stall > 0), and records it when the
 * loop is back. */
static void check_progress(struct watchdog *wd, struct wd_watch *w, double stall)
{
    pthread_mutex_lock(&wd->mu);
    unsigned long seq = wd->seq;
    struct wd_task cur = wd->cur;
    pthread_mutex_unlock(&wd->mu);
    double now = mono();
    if (seq != w->seen_seq) {
        if (w->stalled) {
            pthread_mutex_lock(&wd->mu);
            wd->stalls++;
            wd->last.held = w->held;
            wd->last.seconds = now - w->since;
            wd->last.at = w->since_wall;
            wd->unlogged = 1;
            pthread_mutex_unlock(&wd->mu);
            w->stalled = 0;
        }
        w->seen_seq = seq;
        w->since = now;
        w->since_wall = wall();
    } else if (stall > 0 && !w->stalled && now - w->since > stall) {
        char who[NAME_LEN + 64], msg[NAME_LEN + 256];
        w->stalled = 1;
        w->held = cur;
        describe(who, sizeof(who), &cur);
        snprintf(msg, sizeof(msg), "replica: watchdog: the event loop has made no "
                 "progress for %.1f s: held by %s", now - w->since, who);
        say(wd, 2, msg, &cur);
    }
}

/* How often the thread looks at the progress count, in ms. */
static int poll_ms(double stall)
{
    double p = stall / 10;
    if (p > 0.1)
        p = 0.1;
    if (p < 0.01)
        p = 0.01;
    return (int)(p * 1000);
}

/* The watchdog thread: waits for a signal, a stop request or the next look
 * at the loop's progress. */
static void *wd_main(void *arg)
{
    struct watchdog *wd = arg;
    struct wd_watch w = { 0 };
    w.seen_seq = ~0ul;
    w.since = mono();
    for (;;) {
        pthread_mutex_lock(&wd->mu);
        double stall = wd->stall, grace = wd->grace;
        int stop = wd->stop;
        pthread_mutex_unlock(&wd->mu);
        if (stop)
            break;
        int timeout = stall > 0 ? poll_ms(stall) : -1;
        if (w.signals) {
            /* keep watching the loop until the deadline, to know whether it
             * is held when the deadline comes */
            double left = w.deadline - mono();
            int ms = left <= 0 ? 0 : (int)(left * 1000) + 1;
            if (ms > 100)
                ms = 100;
            if (timeout < 0 || ms < timeout)
                timeout = ms;
        }
        struct pollfd p[2] = { { wd->sig_fd, POLLIN, 0 }, { wd->wake[0], POLLIN, 0 } };
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && (p[1].revents & POLLIN)) {
            char drain[16];
            while (read(wd->wake[0], drain, sizeof(drain)) > 0)
                ;
        }
        if (n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(wd->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                take_signal(wd, &w, (int)si.ssi_signo, grace);
        }
        if (w.signals && mono() >= w.deadline)
            force_exit(wd, &w, stall, grace);
        if (stall > 0 || w.signals)
            check_progress(wd, &w, stall);
    }
    return NULL;
}

/* Loop: runs the signal callback for every forwarded signal. */
static void on_forward(evutil_socket_t fd, short what, void *arg)
{
    struct watchdog *wd = arg;
    unsigned char b[16];
    (void)what;
    ssize_t n;
    while ((n = read(fd, b, sizeof(b))) > 0)
        for (ssize_t i = 0; i < n; i++)
            wd->on_signal(wd->ud, b[i]);
}

/* Loop: the heartbeat counts as progress, so an idle loop is not a stall;
 * it also logs a stall the thread recorded since the last beat. */
static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    struct watchdog *wd = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&wd->mu);
    wd->seq++;
    int unlogged = wd->unlogged;
    struct wd_stall last = wd->last;
    wd->unlogged = 0;
    pthread_mutex_unlock(&wd->mu);
    if (unlogged) {
        char who[NAME_LEN + 64];
        describe(who, sizeof(who), &last.held);
        vm_logf(wd->vm, NULL, LOG_WARN,
                "watchdog: the event loop made no progress for %.1f s: held by %s", last.seconds,
                who);
    }
}

/* (Re)arms the heartbeat for the stall bound: a few beats per bound. */
static int arm_beat(struct watchdog *wd, double stall)
{
    if (stall <= 0)
        return event_del(wd->beat_ev);
    double h = stall / 4;
    if (h > 0.5)
        h = 0.5;
    if (h < 0.005)
        h = 0.005;
    struct timeval tv = { (time_t)h, (suseconds_t)((h - (double)(time_t)h) * 1e6) };
    return event_add(wd->beat_ev, &tv);
}

/* In a child after fork: give it the default signal mask back, so a
 * credential helper can be stopped with SIGTERM. */
static void child_unblock(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, child_unblock);
}

struct watchdog *watchdog_new(struct event_base *base, struct vm *vm,
                              const struct watchdog_opts *o, watchdog_signal_fn on_signal,
                              void *ud, char *err, size_t errlen)
{
    struct watchdog *wd = calloc(1, sizeof(*wd));
    if (!wd) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    wd->vm = vm;
    wd->on_signal = on_signal;
    wd->ud = ud;
    wd->sig_fd = wd->fwd[0] = wd->fwd[1] = wd->wake[0] = wd->wake[1] = -1;
    wd->grace = o && o->grace > 0 ? o->grace : WATCHDOG_GRACE;
    wd->stall = o && o->stall != 0 ? o->stall : WATCHDOG_STALL;
    wd->sigint_interrupts = o && o->sigint_interrupts;
    wd->log_format = o ? o->log_format : LOG_FORMAT_TEXT;
    snprintf(wd->log_run, sizeof(wd->log_run), "%s", o && o->log_run ? o->log_run : "");
    pthread_mutex_init(&wd->mu, NULL);
    pthread_once(&atfork_once, register_atfork);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int e = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (e != 0 || (wd->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0 ||
        pipe2(wd->fwd, O_CLOEXEC | O_NONBLOCK) != 0 ||
        pipe2(wd->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "watchdog: %s", strerror(e ? e : errno));
        watchdog_free(wd);
        return NULL;
    }
    wd->fwd_ev = event_new(base, wd->fwd[0], EV_READ | EV_PERSIST, on_forward, wd);
    wd->beat_ev = event_new(base, -1, EV_PERSIST, on_beat, wd);
    if (!wd->fwd_ev || !wd->beat_ev || event_add(wd->fwd_ev, NULL) != 0 ||
        arm_beat(wd, wd->stall) != 0) {
        snprintf(err, errlen, "watchdog: cannot add its events to the loop");
        watchdog_free(wd);
        return NULL;
    }
    if ((e = pthread_create(&wd->thread, NULL, wd_main, wd)) != 0) {
        snprintf(err, errlen, "watchdog: cannot start its thread: %s", strerror(e));
        watchdog_free(wd);
        return NULL;
    }
    wd->started = 1;
    return wd;
}

void watchdog_free(struct watchdog *wd)
{
    if (!wd)
        return;
    if (wd->started) {
        pthread_mutex_lock(&wd->mu);
        wd->stop = 1;
        pthread_mutex_unlock(&wd->mu);
        write_all(wd->wake[1], "x", 1);
        pthread_join(wd->thread, NULL);
    }
    if (wd->fwd_ev)
        event_free(wd->fwd_ev);
    if (wd->beat_ev)
        event_free(wd->beat_ev);
    int fds[] = { wd->sig_fd, wd->fwd[0], wd->fwd[1], wd->wake[0], wd->wake[1] };
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
}

void watchdog_slice_begin(struct vm *vm, struct task *t)
{
    struct watchdog *wd = vm->wd;
    pthread_mutex_lock(&wd->mu);
    wd->seq++;
    wd->cur.set = 1;
    wd->cur.tag = t->log_tag;
    wd->cur.exec = t->log_exec;
    size_t i = 0;
    for (const char *s = t->name; s && *s && i < NAME_LEN - 1; s++, i++)
        wd->cur.name[i] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    wd->cur.name[i] = '\0';
    pthread_mutex_unlock(&wd->mu);
}

void watchdog_slice_end(struct vm *vm)
{
    struct watchdog *wd = vm->wd;
    pthread_mutex_lock(&wd->mu);
    wd->seq++;
    wd->cur.set = 0;
    pthread_mutex_unlock(&wd->mu);
}

/* Returns the VM's watchdog, raising when there is none. */
static struct watchdog *check_wd(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    if (!vm->wd)
        luaL_error(L, "the watchdog is not running");
    return vm->wd;
}

/* Reads the number field of the options table at idx; returns def when
 * absent. */
static double opt_number(lua_State *L, int idx, const char *field, double def)
{
    lua_getfield(L, idx, field);
    double v = luaL_optnumber(L, -1, def);
    lua_pop(L, 1);
    return v;
}

/* sys.watchdog{ grace = S, stall = S, record = PATH }: changes the settings
 * given. stall <= 0 stops stall reports; record is where a forced exit
 * appends the task that held the loop. */
static int l_watchdog(lua_State *L)
{
    struct watchdog *wd = check_wd(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    pthread_mutex_lock(&wd->mu);
    double grace = wd->grace, stall = wd->stall;
    pthread_mutex_unlock(&wd->mu);
    double ngrace = opt_number(L, 1, "grace", grace);
    double nstall = opt_number(L, 1, "stall", stall);
    luaL_argcheck(L, ngrace > 0, 1, "grace must be positive");
    const char *record = NULL;
    size_t rlen = 0;
    if (lua_getfield(L, 1, "record") != LUA_TNIL) {
        record = luaL_checklstring(L, -1, &rlen);
        luaL_argcheck(L, rlen > 0 && rlen < PATH_LEN && strlen(record) == rlen, 1,
                      "record must be a path");
    }
    if (nstall != stall && arm_beat(wd, nstall) != 0)
        return luaL_error(L, "sys.watchdog: cannot arm the heartbeat");
    pthread_mutex_lock(&wd->mu);
    wd->grace = ngrace;
    wd->stall = nstall;
    if (record)
        memcpy(wd->record, record, rlen + 1);
    pthread_mutex_unlock(&wd->mu);
    write_all(wd->wake[1], "x", 1); /* the thread picks up the new bound */
    lua_pop(L, 1);
    return 0;
}

/* sys.watchdog_status() -> { stalls = N, grace = S, stall = S,
 * last = { tag =, name =, seconds =, at = } }: what the watchdog saw; last
 * (the latest stall that ended) is absent before the first; tag and name
 * are absent when no task held the loop. */
static int l_watchdog_status(lua_State *L)
{
    struct watchdog *wd = check_wd(L);
    pthread_mutex_lock(&wd->mu);
    unsigned long stalls = wd->stalls;
    struct wd_stall last = wd->last;
    double grace = wd->grace, stall = wd->stall;
    pthread_mutex_unlock(&wd->mu);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)stalls);
    lua_setfield(L, -2, "stalls");
    lua_pushnumber(L, grace);
    lua_setfield(L, -2, "grace");
    lua_pushnumber(L, stall > 0 ? stall : 0);
    lua_setfield(L, -2, "stall");
    if (stalls > 0) {
        lua_createtable(L, 0, 4);
        if (last.held.set) {
            lua_pushinteger(L, last.held.tag);
            lua_setfield(L, -2, "tag");
            lua_pushstring(L, last.held.name);
            lua_setfield(L, -2, "name");
        }
        lua_pushnumber(L, last.seconds);
        lua_setfield(L, -2, "seconds");
        lua_pushnumber(L, last.at);
        lua_setfield(L, -2, "at");
        lua_setfield(L, -2, "last");
    }
    return 1;
}

/* Copies the record path into out; returns 0, or -1 when none is set. */
static int record_path(struct watchdog *wd, char *out)
{
    pthread_mutex_lock(&wd->mu);
    memcpy(out, wd->record, PATH_LEN);
    pthread_mutex_unlock(&wd->mu);
    return out[0] ? 0 : -1;
}

/* sys.watchdog_records() -> { {tag = N, name = S}, ... } | nil, err: the
 * lines earlier forced exits appended to the record file (none when it does
 * not exist), oldest first. */
static int l_watchdog_records(lua_State *L)
{
    char path[PATH_LEN];
    if (record_path(check_wd(L), path) != 0)
        return luaL_error(L, "sys.watchdog_records: no record file is set");
    lua_newtable(L);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 1;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s: %s", path, strerror(errno));
        return 2;
    }
    char line[NAME_LEN + 64];
    size_t total = 0;
    lua_Integer n = 0;
    while (total < RECORD_MAX && fgets(line, sizeof(line), f)) {
        total += strlen(line);
        char *nl = strchr(line, '\n');
        if (!nl)
            continue; /* a torn or overlong line */
        *nl = '\0';
        char *tab = strchr(line, '\t'), *end = NULL;
        if (!tab)
            continue;
        *tab = '\0';
        long tag = strtol(line, &end, 10);
        if (end == line || *end)
            continue;
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, tag);
        lua_setfield(L, -2, "tag");
        lua_pushstring(L, tab + 1);
        lua_setfield(L, -2, "name");
        lua_rawseti(L, -2, ++n);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s", path);
        return 2;
    }
    return 1;
}

/* sys.watchdog_records_done() -> true | nil, err: removes the record file
 * once its lines are accounted for. */
static int l_watchdog_records_done(lua_State *L)
{
    char path[PATH_LEN];
    if (record_path(check_wd(L), path) != 0)
        return luaL_error(L, "sys.watchdog_records_done: no record file is set");
    if (unlink(path) != 0 && errno != ENOENT) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot remove %s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

void sys_add_watchdog(struct vm *vm, lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "watchdog", l_watchdog },
        { "watchdog_status", l_watchdog_status },
        { "watchdog_records", l_watchdog_records },
        { "watchdog_records_done", l_watchdog_records_done },
        { NULL, NULL },
    };
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, fns, 1);
}

/* test_block(seconds): sleeps in C, holding the event loop (test only). */
static int l_test_block(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s <= 3600, 1, "must be 0..3600 seconds");
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

void watchdog_inject_test_hooks(struct vm *vm, lua_State *L)
{
    (void)vm;
    const char *v = getenv("REPLICA_TEST_HOOKS");
    if (!v || strcmp(v, "1") != 0)
        return;
    lua_pushcfunction(L, l_test_block);
    lua_setfield(L, -2, "test_block");
}
