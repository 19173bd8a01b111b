/* lua_time.c - the `time` module: time.now() (wall clock, seconds since the
 * epoch), time.mono() (monotonic seconds), time.sleep(s), which yields, and
 * the UTC formats registries and their auth flows use: time.format(t, fmt)
 * and time.parse_rfc3339(s). The calendar arithmetic is done here, so no
 * locale, TZ setting or libc range limit enters. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "sched.h"
#include "vm.h"

#define SLEEP_MT "replica.time.sleep"

struct sleep_op {
    struct task_op op;
    struct task *task;
    struct event *ev;
};

static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

static int l_mono(lua_State *L)
{
    lua_pushnumber(L, vm_now_mono());
    return 1;
}

/* Timer callback: wakes the sleeping task. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sleep_op *s = arg;
    (void)fd;
    (void)what;
    task_wake(s->task);
}

static void sleep_cancel(struct task_op *op)
{
    struct sleep_op *s = (struct sleep_op *)op;
    if (s->ev)
        event_del(s->ev);
}

/* __gc: frees the timer; safe to run twice. */
static int sleep_gc(lua_State *L)
{
    struct sleep_op *s = luaL_checkudata(L, 1, SLEEP_MT);
    if (s->ev)
        event_free(s->ev);
    s->ev = NULL;
    return 0;
}

static int sleep_done(lua_State *L, int status, lua_KContext ctx)
{
    struct sleep_op *s = (struct sleep_op *)ctx;
    (void)status;
    if (s->op.cancelled) {
        return task_push_cancelled(L);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* time.sleep(seconds) -> true | nil, "cancelled" */
static int l_sleep(lua_State *L)
{
    struct vm *vm = lua_touserdata(L, lua_upvalueindex(1));
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0, 1, "must not be negative");
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "time.sleep must be called from a task");
    task_check_yieldable(L, t);
    if (t->cancelled) {
        return task_push_cancelled(L);
    }
    struct sleep_op *s = lua_newuserdatauv(L, sizeof(*s), 0);
    memset(s, 0, sizeof(*s));
    luaL_setmetatable(L, SLEEP_MT);
    s->op.cancel = sleep_cancel;
    s->task = t;
    s->ev = evtimer_new(vm->base, on_timer, s);
    if (!s->ev)
        return luaL_error(L, "time.sleep: out of memory");
    struct timeval tv;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (lua_Number)tv.tv_sec) * 1e6);
    if (evtimer_add(s->ev, &tv) != 0)
        return luaL_error(L, "time.sleep: cannot arm timer");
    return task_yield(L, t, &s->op, sleep_done, (lua_KContext)s);
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (the
 * era arithmetic of H. Hinnant's "chrono-Compatible Low-Level Date
 * Algorithms": 400-year eras of 146097 days, years starting in March). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* The range time.format covers: 0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
#define TIME_MIN (-62167219200.0)
#define TIME_MAX 253402300800.0

/* time.format(t [, fmt]) -> string, in UTC. fmt is "rfc3339" (the default,
 * 2015-08-30T12:36:00Z), "rfc3339ms" (2015-08-30T12:36:00.000Z), "basic"
 * (ISO 8601 basic, 20150830T123600Z) or "date" (20150830). t is taken to the
 * nearest microsecond (what a double holds of a present-day time), then
 * truncated to the format's unit. */
static int l_format(lua_State *L)
{
    static const char *const fmts[] = { "rfc3339", "rfc3339ms", "basic", "date", NULL };
    lua_Number t = luaL_checknumber(L, 1);
    int f = luaL_checkoption(L, 2, "rfc3339", fmts);
    luaL_argcheck(L, t >= TIME_MIN && t < TIME_MAX, 1, "out of range (years 0000 to 9999)");
    int64_t us = (int64_t)floor(t * 1e6 + 0.5);
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int ms = (int)((us - secs * 1000000) / 1000);
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int sod = (int)(secs - days * 86400);
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    if (y > 9999) /* t within half a microsecond of the end */
        return luaL_argerror(L, 1, "out of range (years 0000 to 9999)");
    char out[64];
    int hh = sod / 3600, mi = sod / 60 % 60, ss = sod % 60;
    switch (f) {
    case 0:
        snprintf(out, sizeof(out), "%04d-%02d-%02dT%02d:%02d:%02dZ", y, m, d, hh, mi, ss);
        break;
    case 1:
        snprintf(out, sizeof(out), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, m, d, hh, mi, ss, ms);
        break;
    case 2:
        snprintf(out, sizeof(out), "%04d%02d%02dT%02d%02d%02dZ", y, m, d, hh, mi, ss);
        break;
    default:
        snprintf(out, sizeof(out), "%04d%02d%02d", y, m, d);
        break;
    }
    lua_pushstring(L, out);
    return 1;
}

/* Reads n decimal digits at *p into *v, advancing *p; returns 0 if any of
 * them is not a digit. */
static int digits(const char **p, const char *end, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (*p >= end || **p < '0' || **p > '9')
            return 0;
        *v = *v * 10 + (**p - '0');
    }
    return 1;
}

/* Reads the character c (or its lower-case form lc) at *p, advancing *p. */
static int expect(const char **p, const char *end, char c, char lc)
{
    if (*p >= end || (**p != c && **p != lc))
        return 0;
    (*p)++;
    return 1;
}

static int parse_fail(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushfstring(L, "not an RFC 3339 date-time: %s", why);
    return 2;
}

/* time.parse_rfc3339(s) -> seconds | nil, err: an RFC 3339 §5.6 date-time
 * (YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm); "t" and "z" may be lower
 * case) as seconds since the epoch: an integer without a fraction, else a
 * float (digits past the ninth are ignored). */
static int l_parse_rfc3339(lua_State *L)
{
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    const char *end = p + n;
    int y, mo, d, h, mi, s;
    if (!digits(&p, end, 4, &y) || !expect(&p, end, '-', '-') || !digits(&p, end, 2, &mo)
        || !expect(&p, end, '-', '-') || !digits(&p, end, 2, &d) || !expect(&p, end, 'T', 't')
        || !digits(&p, end, 2, &h) || !expect(&p, end, ':', ':') || !digits(&p, end, 2, &mi)
        || !expect(&p, end, ':', ':') || !digits(&p, end, 2, &s))
        return parse_fail(L, "expected YYYY-MM-DDTHH:MM:SS");
    if (mo < 1 || mo > 12)
        return parse_fail(L, "month out of range");
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d < 1 || d > mdays[mo - 1] + (mo == 2 && leap))
        return parse_fail(L, "day out of range");
    if (h > 23 || mi > 59 || s > 60) /* 60: a leap second, counted as the next one */
        return parse_fail(L, "time of day out of range");
    long ns = 0;
    if (p < end && *p == '.') {
        p++;
        int nd = 0;
        for (; p < end && *p >= '0' && *p <= '9'; p++, nd++) {
            if (nd < 9)
                ns = ns * 10 + (*p - '0');
        }
        if (nd == 0)
            return parse_fail(L, "expected digits after '.'");
        for (; nd < 9; nd++)
            ns *= 10;
    }
    int off = 0;
    if (expect(&p, end, 'Z', 'z')) {
        off = 0;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (!digits(&p, end, 2, &oh) || !expect(&p, end, ':', ':') || !digits(&p, end, 2, &om))
            return parse_fail(L, "expected an offset of the form +hh:mm");
        if (oh > 23 || om > 59)
            return parse_fail(L, "offset out of range");
        off = sign * (oh * 3600 + om * 60);
    } else {
        return parse_fail(L, "expected a time zone: Z, +hh:mm or -hh:mm");
    }
    if (p != end)
        return parse_fail(L, "unexpected characters after the time zone");
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off;
    if (ns == 0)
        lua_pushinteger(L, (lua_Integer)secs);
    else
        lua_pushnumber(L, (lua_Number)secs + (lua_Number)ns / 1e9);
    return 1;
}

void inject_time_api(struct vm *vm, lua_State *L)
{
    luaL_newmetatable(L, SLEEP_MT);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, sleep_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    lua_createtable(L, 0, 5);
    lua_pushcfunction(L, l_format);
    lua_setfield(L, -2, "format");
    lua_pushcfunction(L, l_parse_rfc3339);
    lua_setfield(L, -2, "parse_rfc3339");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_mono);
    lua_setfield(L, -2, "mono");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_sleep, 1);
    lua_setfield(L, -2, "sleep");
    lua_setfield(L, -2, "time");
}
