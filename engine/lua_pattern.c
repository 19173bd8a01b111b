/* lua_pattern.c - string.find, match, gmatch and gsub with Lua 5.4's pattern
 * semantics, bounded by the task's CPU budget.
 *
 * The matcher is the classic backtracking one, run as a loop over an explicit
 * stack of choice points held in a userdata (struct pm). A choice point is
 * what the recursive matcher would keep in one C frame: an open or closed
 * capture to undo, an optional item to skip, a greedy run to shorten or a lazy
 * run to lengthen. A success anywhere ends the whole match, so only failures
 * walk the stack. The stack depth is the recursive matcher's call depth, so
 * "pattern too complex" comes at the same point (MAXCCALLS).
 *
 * Every few hundred steps the loop calls sched_tick, which raises the task's
 * CPU-limit error when its budget is spent and says when its slice is over;
 * the call then yields (sched_pause) and its continuation picks up the state
 * from the userdata. The subject and pattern stay on the Lua stack (or in the
 * gmatch closure) across the yield, so pointers into them stay valid.
 */
#include "lua_pattern.h"

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>

#include "sched.h"

#define PM_MAXCAPS 32            /* Lua's LUA_MAXCAPTURES */
#define PM_MAXCALLS 200          /* the recursive matcher's MAXCCALLS */
#define PM_TICK 256              /* units between two sched_tick calls */
#define PM_PLAIN_CHUNK 262144    /* bytes a plain find searches between ticks */
#define PM_SPECIALS "^$*+?.([%-"
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define PBUF_MT "replica.pattern.buffer"

#define uchar(c) ((unsigned char)(c))

enum pm_kind { FR_CAPOPEN, FR_CAPCLOSE, FR_OPT, FR_MAX, FR_MIN };
enum pm_mode { PM_FWD, PM_BACK, PM_MAXSCAN, PM_BALANCE };
enum pm_result { PM_MATCHED, PM_FAILED, PM_PAUSED };
enum pm_phase { PH_RUN, PH_CALL };

/* One choice point: what a frame of the recursive matcher would hold. */
struct pm_frame {
    int kind;
    int cap;            /* FR_CAPCLOSE: the capture it closed */
    const char *s;      /* FR_OPT: where to go on; FR_MAX: run start; FR_MIN: run end */
    const char *p;      /* FR_OPT: pattern to go on with; FR_MAX/FR_MIN: the item */
    const char *ep;     /* FR_MAX/FR_MIN: the end of the item */
    size_t i;           /* FR_MAX: the length of the run now being tried */
};

/* The whole state of one call (or of one gmatch iterator). */
struct pm {
    const char *src_init, *src_end;   /* the subject */
    const char *pat, *p_end;          /* the pattern, after a '^' anchor */
    int level;                        /* captures opened */
    struct {
        const char *init;
        ptrdiff_t len;
    } cap[PM_MAXCAPS];
    int mode;
    const char *s, *p;                /* where the running step is */
    const char *e;                    /* PM_MATCHED: the end of the match */
    const char *scan_base;            /* PM_MAXSCAN: start of the run */
    const char *scan_ep;              /* PM_MAXSCAN: end of the item */
    size_t scan_i;                    /* PM_MAXSCAN: length so far */
    const char *bal_q;                /* PM_BALANCE: next byte to look at */
    size_t bal_n;                     /* PM_BALANCE: open count */
    unsigned long units;              /* work not yet charged */
    /* the call around the matcher */
    const char *s1;                   /* the start position being tried */
    const char *gsrc;                 /* gmatch: where the next call starts */
    const char *lastmatch;            /* gmatch, gsub: end of the last match */
    int anchor, find, phase, busy, changed, tr;
    lua_Integer n, max_s;             /* gsub: replacements made, allowed */
    int nframes, maxframes;
    struct pm_frame fr[];
};

/* The gsub output: Lua-allocated bytes owned by a userdata (freed by __gc). */
struct pbuf {
    char *p;
    size_t len, cap;
};

/* The bytes a state for a pattern of length lp needs: the stack the matcher
 * uses is bounded by the pattern length (each level is a later item). */
static size_t pm_size(size_t lp, int *maxframes)
{
    int n = lp < PM_MAXCALLS - 1 ? (int)lp : PM_MAXCALLS - 1;
    if (n < 1)
        n = 1;
    if (maxframes)
        *maxframes = n;
    return sizeof(struct pm) + (size_t)n * sizeof(struct pm_frame);
}

/* Initialises the state in mem (pm_size bytes) for subject s and pattern p,
 * which must stay alive on the stack while it is used. Returns it. */
static struct pm *pm_init(void *mem, const char *s, size_t ls, const char *p, size_t lp)
{
    struct pm *m = mem;
    memset(m, 0, sizeof(*m));
    pm_size(lp, &m->maxframes);
    m->src_init = s;
    m->src_end = s + ls;
    m->pat = p;
    m->p_end = p + lp;
    return m;
}

/* Pushes a new state for subject s and pattern p; the stack owns the
 * userdata. */
static struct pm *pm_new(lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
    return pm_init(lua_newuserdatauv(L, pm_size(lp, NULL), 0), s, ls, p, lp);
}

/* Starts a match attempt at subject position s. */
static void pm_begin(struct pm *m, const char *s)
{
    m->level = 0;
    m->nframes = 0;
    m->mode = PM_FWD;
    m->s = s;
    m->p = m->pat;
    m->units++;
}

/* Pushes a choice point, that is enters one more level of the recursive
 * matcher; raises "pattern too complex" where it would. */
static struct pm_frame *pm_push(lua_State *L, struct pm *m, int kind)
{
    if (m->nframes >= PM_MAXCALLS - 1 || m->nframes >= m->maxframes)
        luaL_error(L, "pattern too complex");
    struct pm_frame *f = &m->fr[m->nframes++];
    f->kind = kind;
    return f;
}

/* Whether byte c is in class %cl (cl a letter, else the byte itself). */
static int match_class(int c, int cl)
{
    int res;
    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'g': res = isgraph(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    case 'z': res = (c == 0); break;
    default: return cl == c;
    }
    if (isupper(cl))
        res = !res;
    return res;
}

/* Whether byte c is in the set that starts at p ('[') and ends at ec (']'). */
static int match_set(int c, const char *p, const char *ec)
{
    int sig = 1;
    if (p[1] == '^') {
        sig = 0;
        p++;
    }
    while (++p < ec) {
        if (*p == '%') {
            p++;
            if (match_class(c, uchar(*p)))
                return sig;
        } else if (p[1] == '-' && p + 2 < ec) {
            if (uchar(p[0]) <= c && c <= uchar(p[2]))
                return sig;
            p += 2;
        } else if (uchar(*p) == c) {
            return sig;
        }
    }
    return !sig;
}

/* Whether byte c matches the single item p..ep. */
static int single_match(int c, const char *p, const char *ep)
{
    switch (*p) {
    case '.': return 1;
    case '%': return match_class(c, uchar(p[1]));
    case '[': return match_set(c, p, ep - 1);
    default: return uchar(*p) == c;
    }
}

/* Returns the end of the single item at p; raises on a malformed one. */
static const char *class_end(lua_State *L, const struct pm *m, const char *p)
{
    char c = *p++;
    if (c == '%') {
        if (p == m->p_end)
            luaL_error(L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^')
            p++;
        do {
            if (p == m->p_end)
                luaL_error(L, "malformed pattern (missing ']')");
            if (*(p++) == '%' && p < m->p_end)
                p++;
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

/* One forward step at (m->s, m->p): the body of the recursive matcher. */
static int pm_forward(lua_State *L, struct pm *m)
{
    const char *s = m->s, *p = m->p;
    if (p == m->p_end) {
        m->e = s;
        return PM_MATCHED;
    }
    switch (*p) {
    case '(': {
        if (m->level >= PM_MAXCAPS)
            luaL_error(L, "too many captures");
        int position = p[1] == ')';
        m->cap[m->level].init = s;
        m->cap[m->level].len = position ? CAP_POSITION : CAP_UNFINISHED;
        m->level++;
        pm_push(L, m, FR_CAPOPEN);
        m->p = p + (position ? 2 : 1);
        return -1;
    }
    case ')': {
        int l = m->level - 1;
        while (l >= 0 && m->cap[l].len != CAP_UNFINISHED)
            l--;
        if (l < 0)
            luaL_error(L, "invalid pattern capture");
        m->cap[l].len = s - m->cap[l].init;
        pm_push(L, m, FR_CAPCLOSE)->cap = l;
        m->p = p + 1;
        return -1;
    }
    case '$':
        if (p + 1 != m->p_end)
            break;
        if (s == m->src_end) {
            m->e = s;
            return PM_MATCHED;
        }
        m->mode = PM_BACK;
        return -1;
    case '%':
        switch (p[1]) {
        case 'b':
            if (p + 3 >= m->p_end)
                luaL_error(L, "malformed pattern (missing arguments to '%%b')");
            if (s >= m->src_end || *s != p[2]) {
                m->mode = PM_BACK;
                return -1;
            }
            m->bal_q = s + 1;
            m->bal_n = 1;
            m->mode = PM_BALANCE;
            return -1;
        case 'f': {
            p += 2;
            if (*p != '[')
                luaL_error(L, "missing '[' after '%%f' in pattern");
            const char *ep = class_end(L, m, p);
            int prev = s == m->src_init ? '\0' : uchar(s[-1]);
            m->units += (unsigned long)(ep - p) >> 3;
            if (!match_set(prev, p, ep - 1) && match_set(uchar(*s), p, ep - 1))
                m->p = ep;
            else
                m->mode = PM_BACK;
            return -1;
        }
        case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9': {
            int l = p[1] - '1';
            if (l < 0 || l >= m->level || m->cap[l].len == CAP_UNFINISHED)
                luaL_error(L, "invalid capture index %%%d", l + 1);
            size_t len = (size_t)m->cap[l].len;
            if ((size_t)(m->src_end - s) >= len && memcmp(m->cap[l].init, s, len) == 0) {
                m->s = s + len;
                m->p = p + 2;
                m->units += len >> 4;
            } else {
                m->mode = PM_BACK;
            }
            return -1;
        }
        default:
            break;
        }
        break;
    default:
        break;
    }
    /* A single item, maybe followed by a repetition. */
    const char *ep = class_end(L, m, p);
    m->units += (unsigned long)(ep - p) >> 4;
    if (!(s < m->src_end && single_match(uchar(*s), p, ep))) {
        if (*ep == '*' || *ep == '?' || *ep == '-')
            m->p = ep + 1;
        else
            m->mode = PM_BACK;
        return -1;
    }
    switch (*ep) {
    case '?': {
        struct pm_frame *f = pm_push(L, m, FR_OPT);
        f->s = s;
        f->p = ep + 1;
        m->s = s + 1;
        m->p = ep + 1;
        return -1;
    }
    case '+':
    case '*':
        m->scan_base = *ep == '+' ? s + 1 : s;
        m->scan_i = 0;
        m->scan_ep = ep;
        m->mode = PM_MAXSCAN;
        return -1;
    case '-': {
        struct pm_frame *f = pm_push(L, m, FR_MIN);
        f->s = s;
        f->p = p;
        f->ep = ep;
        m->p = ep + 1;
        return -1;
    }
    default:
        m->s = s + 1;
        m->p = ep;
        return -1;
    }
}

/* One step of backtracking: undoes or retries the newest choice point. */
static int pm_back(struct pm *m)
{
    if (m->nframes == 0)
        return PM_FAILED;
    struct pm_frame *f = &m->fr[m->nframes - 1];
    switch (f->kind) {
    case FR_CAPOPEN:
        m->level--;
        m->nframes--;
        break;
    case FR_CAPCLOSE:
        m->cap[f->cap].len = CAP_UNFINISHED;
        m->nframes--;
        break;
    case FR_OPT:
        m->s = f->s;
        m->p = f->p;
        m->nframes--;
        m->mode = PM_FWD;
        break;
    case FR_MAX:
        if (f->i == 0) {
            m->nframes--;
        } else {
            f->i--;
            m->s = f->s + f->i;
            m->p = f->ep + 1;
            m->mode = PM_FWD;
        }
        break;
    case FR_MIN:
        if (f->s < m->src_end && single_match(uchar(*f->s), f->p, f->ep)) {
            f->s++;
            m->s = f->s;
            m->p = f->ep + 1;
            m->mode = PM_FWD;
        } else {
            m->nframes--;
        }
        break;
    }
    return -1;
}

/* Extends a greedy run by up to PM_TICK units of work; at its end pushes the
 * choice point that will shorten it. */
static void pm_maxscan(lua_State *L, struct pm *m)
{
    const char *base = m->scan_base, *p = m->p, *ep = m->scan_ep;
    size_t i = m->scan_i;
    if (*p == '.') {
        i = (size_t)(m->src_end - base);
        m->units += i >> 6;
    } else {
        unsigned long cost = 1 + ((unsigned long)(ep - p) >> 4);
        while (base + i < m->src_end && single_match(uchar(base[i]), p, ep)) {
            i++;
            m->units += cost;
            if (m->units >= PM_TICK) {
                m->scan_i = i;
                return;
            }
        }
    }
    struct pm_frame *f = pm_push(L, m, FR_MAX);
    f->s = base;
    f->i = i;
    f->p = p;
    f->ep = ep;
    m->s = base + i;
    m->p = ep + 1;
    m->mode = PM_FWD;
}

/* Scans a %bxy item by up to PM_TICK bytes. */
static void pm_balance(struct pm *m)
{
    const char *q = m->bal_q;
    char b = m->p[2], e = m->p[3];
    while (q < m->src_end) {
        if (*q == e) {
            if (--m->bal_n == 0) {
                m->s = q + 1;
                m->p += 4;
                m->mode = PM_FWD;
                return;
            }
        } else if (*q == b) {
            m->bal_n++;
        }
        q++;
        if (++m->units >= PM_TICK) {
            m->bal_q = q;
            return;
        }
    }
    m->mode = PM_BACK;
}

/* Runs the attempt started by pm_begin until it matches (end in m->e), fails,
 * or the task should pause. Raises pattern errors and the CPU-limit error. */
static int pm_run(lua_State *L, struct pm *m)
{
    for (;;) {
        if (m->units >= PM_TICK) {
            unsigned long u = m->units;
            m->units = 0;
            if (sched_tick(L, u))
                return PM_PAUSED;
        }
        m->units++;
        int r = -1;
        switch (m->mode) {
        case PM_FWD: r = pm_forward(L, m); break;
        case PM_BACK: r = pm_back(m); break;
        case PM_MAXSCAN: pm_maxscan(L, m); break;
        case PM_BALANCE: pm_balance(m); break;
        }
        if (r >= 0)
            return r;
    }
}

/* Finds capture i of the match s..e: returns its length and sets *cap, or
 * pushes its position and returns CAP_POSITION. Raises on a bad index. */
static ptrdiff_t get_capture(lua_State *L, struct pm *m, int i, const char *s, const char *e,
                             const char **cap)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return e - s;
    }
    ptrdiff_t l = m->cap[i].len;
    *cap = m->cap[i].init;
    if (l == CAP_UNFINISHED)
        luaL_error(L, "unfinished capture");
    else if (l == CAP_POSITION)
        lua_pushinteger(L, (m->cap[i].init - m->src_init) + 1);
    return l;
}

/* Pushes capture i of the match s..e (the whole match when there is none). */
static void push_capture(lua_State *L, struct pm *m, int i, const char *s, const char *e)
{
    const char *cap;
    ptrdiff_t l = get_capture(L, m, i, s, e, &cap);
    if (l != CAP_POSITION)
        lua_pushlstring(L, cap, (size_t)l);
}

/* Pushes every capture of the match s..e (the match itself when the pattern
 * has none and s is not NULL). Returns how many it pushed. */
static int push_captures(lua_State *L, struct pm *m, const char *s, const char *e)
{
    int n = (m->level == 0 && s) ? 1 : m->level;
    luaL_checkstack(L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(L, m, i, s, e);
    return n;
}

/* string's position rule for init: 1-based, negative from the end, clamped
 * at 1. */
static size_t pos_start(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0)
        return 1;
    if (pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

/* Whether pattern p has none of the special characters. */
static int no_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (p[i] && strchr(PM_SPECIALS, p[i]))
            return 0;
    return 1;
}

/* Continuation of a plain find: searches args 1 for 2 from byte offset ctx,
 * a chunk between two ticks. */
static int plain_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    size_t ls, lp;
    const char *s = lua_tolstring(L, 1, &ls);
    const char *p = lua_tolstring(L, 2, &lp);
    size_t pos = (size_t)ctx;
    for (;;) {
        size_t win = ls - pos;
        if (win > PM_PLAIN_CHUNK + lp)
            win = PM_PLAIN_CHUNK + lp;
        const char *hit = memmem(s + pos, win, p, lp);
        if (hit) {
            lua_pushinteger(L, (hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + lp));
            return 2;
        }
        if (ls - pos < PM_PLAIN_CHUNK + lp) {
            luaL_pushfail(L);
            return 1;
        }
        pos += PM_PLAIN_CHUNK;
        if (sched_tick(L, PM_PLAIN_CHUNK >> 4))
            return sched_pause(L, (lua_KContext)pos, plain_k);
    }
}

static int find_k(lua_State *L, int status, lua_KContext ctx);

/* Tries each start position for find and match. m is the userdata at index 5
 * (heap = 1) or a state on the C stack, moved into one there if it pauses. */
static int find_loop(lua_State *L, struct pm *m, int heap)
{
    for (;;) {
        int r = pm_run(L, m);
        if (r == PM_PAUSED) {
            if (!heap) {
                size_t size = pm_size((size_t)(m->p_end - m->pat), NULL);
                memcpy(lua_newuserdatauv(L, size, 0), m, size);
            }
            return sched_pause(L, 0, find_k);
        }
        if (r == PM_MATCHED) {
            if (!m->find)
                return push_captures(L, m, m->s1, m->e);
            lua_pushinteger(L, (m->s1 - m->src_init) + 1);
            lua_pushinteger(L, m->e - m->src_init);
            return push_captures(L, m, NULL, NULL) + 2;
        }
        if (!(m->s1 < m->src_end && !m->anchor))
            break;
        pm_begin(m, ++m->s1);
    }
    luaL_pushfail(L);
    return 1;
}

/* Continuation of find and match after a pause. */
static int find_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    return find_loop(L, lua_touserdata(L, 5), 1);
}

/* string.find and string.match: the shared argument handling. The state
 * lives on the C stack unless the call pauses. */
static int find_aux(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = pos_start(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
        lua_settop(L, 2);
        return plain_k(L, LUA_OK, (lua_KContext)init);
    }
    lua_settop(L, 4);
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    union {
        struct pm m;
        char bytes[sizeof(struct pm) + (PM_MAXCALLS - 1) * sizeof(struct pm_frame)];
    } local;
    struct pm *m = pm_init(&local, s, ls, p, lp);
    m->find = find;
    m->anchor = anchor;
    m->s1 = s + init;
    pm_begin(m, m->s1);
    return find_loop(L, m, 0);
}

/* string.find(s, pattern [, init [, plain]]) */
static int pattern_find(lua_State *L)
{
    return find_aux(L, 1);
}

/* string.match(s, pattern [, init]) */
static int pattern_match(lua_State *L)
{
    return find_aux(L, 0);
}

/* Continuation of a gmatch iterator step; the state is upvalue 3. */
static int gmatch_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct pm *m = lua_touserdata(L, lua_upvalueindex(3));
    m->busy = 0;
    for (;;) {
        int r = pm_run(L, m);
        if (r == PM_PAUSED) {
            m->busy = 1;
            return sched_pause(L, 0, gmatch_k);
        }
        if (r == PM_MATCHED && m->e != m->lastmatch) {
            const char *start = m->s1;
            m->gsrc = m->lastmatch = m->e;
            return push_captures(L, m, start, m->e);
        }
        if (m->s1 >= m->src_end)
            return 0;
        pm_begin(m, ++m->s1);
    }
}

/* The iterator gmatch returns: the next match from where the last ended. */
static int gmatch_aux(lua_State *L)
{
    struct pm *m = lua_touserdata(L, lua_upvalueindex(3));
    if (m->busy)
        return luaL_error(L, "gmatch iterator called while a paused call of it is not finished");
    if (m->gsrc > m->src_end)
        return 0;
    m->s1 = m->gsrc;
    pm_begin(m, m->s1);
    return gmatch_k(L, LUA_OK, 0);
}

/* string.gmatch(s, pattern [, init]): an iterator over the matches. The
 * closure owns the strings and the state. */
static int pattern_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = pos_start(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);
    if (init > ls)
        init = ls + 1;
    struct pm *m = pm_new(L, s, ls, p, lp);
    m->gsrc = s + init;
    m->lastmatch = NULL;
    lua_pushcclosure(L, gmatch_aux, 3);
    return 1;
}

/* Gives b's bytes back to the allocator; safe twice. */
static void pbuf_free(lua_State *L, struct pbuf *b)
{
    if (b->p) {
        void *ud;
        lua_Alloc f = lua_getallocf(L, &ud);
        f(ud, b->p, b->cap, 0);
        b->p = NULL;
    }
    b->len = b->cap = 0;
}

/* __gc of a gsub buffer. */
static int pbuf_gc(lua_State *L)
{
    pbuf_free(L, luaL_checkudata(L, 1, PBUF_MT));
    return 0;
}

/* Makes room for n more bytes in b (from Lua's allocator, so charged to the
 * task); raises a memory error when refused. Returns where they go. */
static char *pbuf_room(lua_State *L, struct pbuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return b->p + b->len;
    if (n > SIZE_MAX / 4 - b->len)
        luaL_error(L, "resulting string too large");
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    char *np = f(ud, b->p, b->p ? b->cap : 0, cap);
    if (!np) {
        lua_pushliteral(L, "not enough memory");
        lua_error(L);
    }
    b->p = np;
    b->cap = cap;
    return b->p + b->len;
}

/* Appends n bytes to b. */
static void pbuf_add(lua_State *L, struct pbuf *b, const char *s, size_t n)
{
    if (n == 0)
        return;
    memcpy(pbuf_room(L, b, n), s, n);
    b->len += n;
}

/* Appends the replacement string (arg 3) for the match s..e, with its %0-%9
 * and %% escapes. */
static void add_string(lua_State *L, struct pm *m, struct pbuf *b, const char *s, const char *e)
{
    size_t l;
    const char *news = lua_tolstring(L, 3, &l);
    const char *p;
    while ((p = memchr(news, '%', l)) != NULL) {
        pbuf_add(L, b, news, (size_t)(p - news));
        p++;
        if (*p == '%') {
            pbuf_add(L, b, p, 1);
        } else if (*p == '0') {
            pbuf_add(L, b, s, (size_t)(e - s));
        } else if (isdigit(uchar(*p))) {
            const char *cap;
            ptrdiff_t cl = get_capture(L, m, *p - '1', s, e, &cap);
            if (cl == CAP_POSITION) {
                size_t pl;
                const char *ps = lua_tolstring(L, -1, &pl);
                pbuf_add(L, b, ps, pl);
                lua_pop(L, 1);
            } else {
                pbuf_add(L, b, cap, (size_t)cl);
            }
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", '%');
        }
        l -= (size_t)(p + 1 - news);
        news = p + 1;
    }
    pbuf_add(L, b, news, l);
}

/* Appends the value on top (a function's result or a table's entry) for the
 * match s..e and pops it: false or nil keep the match, a string or number
 * replaces it, anything else raises. */
static void add_result(lua_State *L, struct pm *m, struct pbuf *b, const char *s, const char *e)
{
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        pbuf_add(L, b, s, (size_t)(e - s));
        return;
    }
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    size_t l;
    const char *r = lua_tolstring(L, -1, &l);
    pbuf_add(L, b, r, l);
    lua_pop(L, 1);
    m->changed = 1;
}

/* After one gsub step: starts the next attempt, or returns 0 when done. */
static int gsub_next(struct pm *m)
{
    if (m->anchor || m->n >= m->max_s)
        return 0;
    pm_begin(m, m->s1);
    return 1;
}

/* Pushes gsub's results: the new string (the subject itself when nothing was
 * replaced) and the count; frees the output buffer. */
static int gsub_done(lua_State *L, struct pm *m, struct pbuf *b)
{
    if (!m->changed) {
        lua_pushvalue(L, 1);
    } else {
        pbuf_add(L, b, m->s1, (size_t)(m->src_end - m->s1));
        lua_pushlstring(L, b->p, b->len);
    }
    pbuf_free(L, b);
    lua_pushinteger(L, m->n);
    return 2;
}

/* Continuation of gsub: state at stack index 5, output at 6; a replacement
 * function's result is on top when it yielded (phase PH_CALL). */
static int gsub_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct pm *m = lua_touserdata(L, 5);
    struct pbuf *b = lua_touserdata(L, 6);
    int more = 1;
    if (m->phase == PH_CALL) {
        m->phase = PH_RUN;
        size_t before = b->len;
        add_result(L, m, b, m->s1, m->e);
        m->units += (b->len - before) >> 4;
        m->s1 = m->lastmatch = m->e;
        more = gsub_next(m);
    }
    while (more) {
        int r = pm_run(L, m);
        if (r == PM_PAUSED)
            return sched_pause(L, 0, gsub_k);
        size_t before = b->len;
        if (r == PM_MATCHED && m->e != m->lastmatch) {
            const char *s = m->s1, *e = m->e;
            m->n++;
            if (m->tr == LUA_TFUNCTION) {
                lua_pushvalue(L, 3);
                int n = push_captures(L, m, s, e);
                m->phase = PH_CALL;
                lua_callk(L, n, 1, 0, gsub_k);
                m->phase = PH_RUN;
                add_result(L, m, b, s, e);
            } else if (m->tr == LUA_TTABLE) {
                push_capture(L, m, 0, s, e);
                lua_gettable(L, 3);
                add_result(L, m, b, s, e);
            } else {
                add_string(L, m, b, s, e);
                m->changed = 1;
            }
            m->s1 = m->lastmatch = e;
        } else if (m->s1 < m->src_end) {
            pbuf_add(L, b, m->s1++, 1);
        } else {
            break;
        }
        m->units += (b->len - before) >> 4;
        more = gsub_next(m);
    }
    return gsub_done(L, m, b);
}

/* string.gsub(s, pattern, repl [, n]) */
static int pattern_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                     tr == LUA_TTABLE, 3, "string/function/table");
    lua_settop(L, 4);
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    struct pm *m = pm_new(L, s, ls, p, lp);
    struct pbuf *b = lua_newuserdatauv(L, sizeof(*b), 0);
    memset(b, 0, sizeof(*b));
    luaL_setmetatable(L, PBUF_MT);
    m->anchor = anchor;
    m->tr = tr;
    m->max_s = max_s;
    m->s1 = s;
    m->lastmatch = NULL;
    if (max_s <= 0)
        return gsub_done(L, m, b);
    pm_begin(m, m->s1);
    return gsub_k(L, LUA_OK, 0);
}

/* Sets the four functions into the table at idx and registers the buffer
 * metatable they use. */
void pattern_install(lua_State *L, int idx)
{
    static const luaL_Reg fns[] = {
        { "find", pattern_find },
        { "match", pattern_match },
        { "gmatch", pattern_gmatch },
        { "gsub", pattern_gsub },
        { NULL, NULL },
    };
    idx = lua_absindex(L, idx);
    if (luaL_newmetatable(L, PBUF_MT)) {
        lua_pushcfunction(L, pbuf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    for (const luaL_Reg *r = fns; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, idx, r->name);
    }
}
