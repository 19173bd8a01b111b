/* lua_repl.c - sys.repl, the terminal of `replica repl`, for its trusted
 * entry chunk only:
 *   repl.open{history = PATH, history_size = N} -> interactive (a terminal);
 *                          history defaults to $REPLICA_HISTORY, else
 *                          ~/.replica_history
 *   repl.prompt(text)      shows the prompt and reads one line (the line
 *                          editor on a terminal, plain lines from a pipe)
 *   repl.next()            -> kind, id, text: waits for the next event:
 *                          "line" (text), "eof", "interrupt" (Ctrl-C while no
 *                          prompt is shown), "paused" (id: sys.dbg's pause),
 *                          or what repl.post queued
 *   repl.post(kind [, id]) queues an event (a task that ended, say)
 *   repl.print(text [, "stderr"])  prints above the prompt
 *   repl.words(list)       the words Tab completes
 *   repl.trace(on)         prints each HTTP request as it ends (masked)
 *   repl.dry(url|nil)      refuses writes to url's origin (http.h: the watch)
 *   repl.read(path)        -> the file's text (:list), or nil, err
 *   repl.exists(path)      -> whether path is a regular file
 *   repl.edit(path)        runs $EDITOR (else vi) on path and waits for it,
 *                          the loop running meanwhile -> exit status
 *   repl.close()
 * The line editor is libedit (BSD) through its readline interface, driven
 * from the event loop: transfers keep moving while the prompt waits. */
#include "repl.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>
#include <event2/buffer.h>
#include <lauxlib.h>

#include "http.h"
#include "sched.h"

struct rev {
    char *kind;
    long id;
    char *text;
    struct rev *next;
};

/* The terminal is one per process, as the line editor's state is. */
static struct {
    struct vm *vm;
    int open, tty;
    int prompting;              /* a prompt is shown and a line is awaited */
    int installed;              /* tty: the line editor's handler is installed */
    char *prompt;
    struct event *in_ev;        /* stdin readable */
    struct evbuffer *inbuf;     /* pipe: bytes read, not yet a line */
    int in_eof;
    struct rev *head, *tail;    /* events not yet taken */
    int lines_queued;           /* "line" and "eof" events among them */
    struct task *waiter;        /* the task in repl.next, or NULL */
    struct task_op op;
    char **words;
    int nwords;
    char *history;              /* file, or NULL */
    int trace;
    char dry[300];              /* the dry-mode origin key, or "" */
} R;

int repl_post(struct vm *vm, const char *kind, long id, const char *text)
{
    struct rev *e = calloc(1, sizeof(*e));
    if (!e || !(e->kind = strdup(kind)) || (text && !(e->text = strdup(text)))) {
        if (e)
            free(e->kind);
        free(e);
        return -1;
    }
    e->id = id;
    if (strcmp(kind, "line") == 0 || strcmp(kind, "eof") == 0)
        R.lines_queued++;
    if (R.tail)
        R.tail->next = e;
    else
        R.head = e;
    R.tail = e;
    if (R.waiter && R.vm == vm) {
        struct task *t = R.waiter;
        R.waiter = NULL;
        task_wake(t);
    }
    return 0;
}

void repl_print(FILE *f, const char *text)
{
    size_t n = strlen(text);
    int redraw = R.tty && R.installed;
    if (redraw) {
        fflush(stdout);
        fputs("\r\033[K", stdout);
        fflush(stdout);
    }
    fwrite(text, 1, n, f);
    if (n == 0 || text[n - 1] != '\n')
        fputc('\n', f);
    fflush(f);
    if (redraw)
        rl_forced_update_display();
}

void repl_log(void *ud, struct task *t, enum log_level lvl, const char *msg)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    char line[2300];
    (void)ud;
    snprintf(line, sizeof(line), "%s [%s] %s", names[lvl], t ? t->name : "replica", msg);
    repl_print(stderr, line);
}

/* Stops reading: the prompt is gone until the next repl.prompt. */
static void stop_reading(void)
{
    R.prompting = 0;
    if (R.in_ev)
        event_del(R.in_ev);
    if (R.installed) {
        rl_callback_handler_remove();
        R.installed = 0;
    }
}

/* Writes the history file, readable by its owner only (lines may hold
 * what was typed at a password's place). */
static void save_history(void)
{
    if (!R.history)
        return;
    int fd = open(R.history, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    close(fd);
    write_history(R.history);
}

/* The line editor's line callback: NULL is end of input. */
static void on_line(char *line)
{
    stop_reading();
    if (!line) {
        fputc('\n', stdout);
        repl_post(R.vm, "eof", 0, NULL);
        return;
    }
    if (*line) {
        HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
        if (!last || strcmp(last->line, line) != 0) {
            add_history(line);
            save_history();
        }
    }
    repl_post(R.vm, "line", 0, line);
    free(line);
}

/* Pipe: delivers the next buffered line, or the end; returns whether it did. */
static int piped_deliver(void)
{
    size_t n;
    char *line = evbuffer_readln(R.inbuf, &n, EVBUFFER_EOL_LF);
    if (!line && R.in_eof && evbuffer_get_length(R.inbuf) > 0) {
        n = evbuffer_get_length(R.inbuf);
        line = malloc(n + 1);
        if (line) {
            evbuffer_remove(R.inbuf, line, n);
            line[n] = 0;
        }
    }
    if (line) {
        if (n > 0 && line[n - 1] == '\r')
            line[n - 1] = 0;
        stop_reading();
        repl_post(R.vm, "line", 0, line);
        free(line);
        return 1;
    }
    if (R.in_eof) {
        stop_reading();
        repl_post(R.vm, "eof", 0, NULL);
        return 1;
    }
    return 0;
}

/* stdin is readable. */
static void on_input(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (R.tty) {
        rl_callback_read_char();
        return;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0)
        evbuffer_add(R.inbuf, buf, (size_t)n);
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        R.in_eof = 1;
    else
        return; /* nothing this time: the event fires again */
    piped_deliver();
}

/* SIGINT (cli.c's signal callback): at a terminal's prompt it drops the
 * line being typed; otherwise the controller hears "interrupt". */
static void on_interrupt(struct vm *vm)
{
    if (R.tty && R.installed) {
        fputs("^C\n", stdout);
        fflush(stdout);
        rl_callback_handler_remove();
        rl_callback_handler_install(R.prompt ? R.prompt : "", on_line);
        return;
    }
    repl_post(vm, "interrupt", 0, NULL);
}

/* Completion: the words that start with text. */
static char *complete_word(const char *text, int state)
{
    static int i;
    size_t n = strlen(text);
    if (!state)
        i = 0;
    while (i < R.nwords) {
        const char *w = R.words[i++];
        if (strncmp(w, text, n) == 0)
            return strdup(w);
    }
    return NULL;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;
    return rl_completion_matches(text, complete_word);
}

/* Writes url into out with credentials masked: user info, and the values of
 * query parameters that carry secrets. */
static void mask_url(const char *url, char *out, size_t n)
{
    static const char *const secret[] = { "password", "token", "secret", "signature", "sig",
        "x-amz-signature", "x-amz-credential", "x-amz-security-token", "code", "client_secret",
        "access_token", "refresh_token", NULL };
    size_t o = 0;
    const char *p = url, *at = NULL, *scheme = strstr(url, "://");
    if (scheme) {
        const char *host = scheme + 3, *end = host + strcspn(host, "/?#");
        for (const char *q = host; q < end; q++)
            if (*q == '@')
                at = q;
        if (at) {
            o = (size_t)snprintf(out, n, "%.*s***@", (int)(host - url), url);
            p = at + 1;
        }
    }
    const char *query = strchr(p, '?');
    if (!query) {
        snprintf(out + (o < n ? o : n), o < n ? n - o : 0, "%s", p);
        return;
    }
    o += (size_t)snprintf(out + (o < n ? o : n), o < n ? n - o : 0, "%.*s", (int)(query - p + 1), p);
    for (const char *q = query + 1; *q;) {
        size_t len = strcspn(q, "&#"), klen = strcspn(q, "=&#");
        int hide = 0;
        for (int i = 0; secret[i] && klen < len; i++)
            hide |= strlen(secret[i]) == klen && strncasecmp(q, secret[i], klen) == 0;
        if (hide)
            o += (size_t)snprintf(out + (o < n ? o : n), o < n ? n - o : 0, "%.*s=***", (int)klen, q);
        else
            o += (size_t)snprintf(out + (o < n ? o : n), o < n ? n - o : 0, "%.*s", (int)len, q);
        q += len;
        if (*q == '&' || *q == '#') {
            o += (size_t)snprintf(out + (o < n ? o : n), o < n ? n - o : 0, "%c", *q);
            if (*q++ == '#') {
                snprintf(out + (o < n ? o : n), o < n ? n - o : 0, "%s", q);
                return;
            }
        }
    }
}

/* Formats a byte count for the trace. */
static void human(char *out, size_t n, curl_off_t b)
{
    if (b < 1024)
        snprintf(out, n, "%ld B", (long)b);
    else if (b < 1024 * 1024)
        snprintf(out, n, "%.1f KiB", (double)b / 1024);
    else
        snprintf(out, n, "%.1f MiB", (double)b / (1024 * 1024));
}

/* The HTTP watch: one trace line per request that ended, while the trace
 * is on. */
static void on_request(void *ud, const struct http_req *r)
{
    (void)ud;
    if (!R.trace)
        return;
    char *url = NULL, masked[2048], down[32], up[32], line[2300];
    curl_off_t dl = 0, ul = 0;
    curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &dl);
    curl_easy_getinfo(r->easy, CURLINFO_SIZE_UPLOAD_T, &ul);
    mask_url(url ? url : "?", masked, sizeof(masked));
    double ms = (vm_now_mono() - r->started) * 1000;
    human(down, sizeof(down), dl);
    human(up, sizeof(up), ul);
    if (r->err != HTTP_OK)
        snprintf(line, sizeof(line), "[http] %s %s -> %s  %.0f ms", r->method, masked,
                 http_strerror(r->err), ms);
    else if (ul > 0)
        snprintf(line, sizeof(line), "[http] %s %s -> %ld  sent %s, got %s  %.0f ms", r->method,
                 masked, r->status, up, down, ms);
    else
        snprintf(line, sizeof(line), "[http] %s %s -> %ld  %s  %.0f ms", r->method, masked,
                 r->status, down, ms);
    repl_print(stdout, line);
}

/* Installs the watch: the trace, and dry mode for R.dry. */
static void watch(struct vm *vm)
{
    struct http_watch w = { .done = on_request };
    snprintf(w.dry_origin, sizeof(w.dry_origin), "%s", R.dry);
    http_client_watch(vm->http, &w);
}

static void close_term(void)
{
    stop_reading();
    save_history();
    R.open = 0;
}

/* At exit without repl.close (an error ended the session): the terminal
 * gets its modes back. The event loop may be gone: no event is touched. */
static void at_exit(void)
{
    if (!R.open)
        return;
    if (R.installed)
        rl_callback_handler_remove();
    R.installed = 0;
    save_history();
    R.open = 0;
}

static int l_open(lua_State *L)
{
    struct vm *vm = vm_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (R.open)
        return luaL_error(L, "repl.open: already open");
    R.vm = vm;
    R.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    R.in_ev = event_new(vm->base, STDIN_FILENO, EV_READ | EV_PERSIST, on_input, NULL);
    R.inbuf = evbuffer_new();
    if (!R.in_ev || !R.inbuf)
        return luaL_error(L, "repl.open: out of memory");
    if (R.tty) {
        rl_catch_signals = 0; /* the watchdog owns SIGINT: see on_interrupt */
        rl_readline_name = "replica";
        rl_attempted_completion_function = complete;
        static char breaks[] = " \t\n\"'`@$><=;|&{(,+-*/%^#~[]";
        rl_completer_word_break_characters = breaks;
        using_history();
        lua_Integer size = 1000;
        if (lua_getfield(L, 1, "history_size") == LUA_TNUMBER)
            size = lua_tointeger(L, -1);
        lua_pop(L, 1);
        stifle_history(size > 0 ? (int)size : 1000);
        /* history: the option, else $REPLICA_HISTORY, else ~/.replica_history */
        const char *h = getenv("REPLICA_HISTORY"), *home = getenv("HOME");
        char path[4096] = "";
        if (lua_getfield(L, 1, "history") == LUA_TSTRING)
            snprintf(path, sizeof(path), "%s", lua_tostring(L, -1));
        else if (h && *h)
            snprintf(path, sizeof(path), "%s", h);
        else if (home && *home)
            snprintf(path, sizeof(path), "%s/.replica_history", home);
        lua_pop(L, 1);
        if (path[0] && (R.history = strdup(path)))
            read_history(R.history);
    }
    vm->on_interrupt = on_interrupt;
    watch(vm);
    R.open = 1;
    static int registered;
    if (!registered++)
        atexit(at_exit);
    lua_pushboolean(L, R.tty);
    return 1;
}

static int l_prompt(lua_State *L)
{
    const char *p = luaL_checkstring(L, 1);
    if (!R.open)
        return luaL_error(L, "repl.prompt: not open");
    if (R.prompting || R.lines_queued > 0)
        return 0; /* a prompt is up, or a line read is still to be taken */
    char *copy = strdup(p);
    if (!copy)
        return luaL_error(L, "repl.prompt: out of memory");
    free(R.prompt);
    R.prompt = copy;
    R.prompting = 1;
    if (R.tty) {
        rl_callback_handler_install(R.prompt, on_line);
        R.installed = 1;
    } else if (piped_deliver()) {
        return 0;
    }
    event_add(R.in_ev, NULL);
    return 0;
}

/* Pops the first event and pushes kind, id, text. */
static int push_event(lua_State *L)
{
    struct rev *e = R.head;
    R.head = e->next;
    if (!R.head)
        R.tail = NULL;
    if (strcmp(e->kind, "line") == 0 || strcmp(e->kind, "eof") == 0)
        R.lines_queued--;
    lua_pushstring(L, e->kind);
    lua_pushinteger(L, e->id);
    if (e->text)
        lua_pushstring(L, e->text);
    else
        lua_pushnil(L);
    free(e->kind);
    free(e->text);
    free(e);
    return 3;
}

static void next_cancel(struct task_op *op)
{
    (void)op;
    R.waiter = NULL;
}

static int next_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    if (R.op.cancelled && !R.head)
        return task_push_cancelled(L);
    if (!R.head)
        return luaL_error(L, "repl.next: woken without an event");
    return push_event(L);
}

static int l_next(lua_State *L)
{
    struct vm *vm = vm_of(L);
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "repl.next: not in a task");
    if (R.head)
        return push_event(L);
    if (t->cancelled)
        return task_push_cancelled(L);
    if (R.waiter)
        return luaL_error(L, "repl.next: another task waits already");
    task_check_yieldable(L, t);
    R.vm = vm; /* repl_post wakes it (also without repl.open: the specs) */
    R.waiter = t;
    R.op.cancel = next_cancel;
    return task_yield(L, t, &R.op, next_done, 0);
}

static int l_post(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    lua_Integer id = luaL_optinteger(L, 2, 0);
    if (repl_post(vm_of(L), kind, (long)id, NULL) != 0)
        return luaL_error(L, "repl.post: out of memory");
    return 0;
}

static int l_print(lua_State *L)
{
    const char *s = luaL_checkstring(L, 1);
    const char *where = luaL_optstring(L, 2, "stdout");
    repl_print(strcmp(where, "stderr") == 0 ? stderr : stdout, s);
    return 0;
}

static void free_words(void)
{
    for (int i = 0; i < R.nwords; i++)
        free(R.words[i]);
    free(R.words);
    R.words = NULL;
    R.nwords = 0;
}

static int l_words(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    free_words();
    R.words = calloc((size_t)n + 1, sizeof(char *));
    if (!R.words)
        return luaL_error(L, "repl.words: out of memory");
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) == LUA_TSTRING && (R.words[R.nwords] = strdup(lua_tostring(L, -1))))
            R.nwords++;
        lua_pop(L, 1);
    }
    return 0;
}

static int l_trace(lua_State *L)
{
    R.trace = lua_toboolean(L, 1);
    return 0;
}

static int l_dry(lua_State *L)
{
    struct vm *vm = vm_of(L);
    R.dry[0] = 0;
    if (!lua_isnoneornil(L, 1) && http_origin_key(luaL_checkstring(L, 1), R.dry, sizeof(R.dry)) != 0)
        return luaL_argerror(L, 1, "not an http(s) URL");
    watch(vm);
    return 0;
}

static int l_close(lua_State *L)
{
    struct vm *vm = vm_of(L);
    if (R.open)
        close_term();
    vm->on_interrupt = NULL;
    http_client_watch(vm->http, NULL);
    if (R.in_ev)
        event_free(R.in_ev);
    if (R.inbuf)
        evbuffer_free(R.inbuf);
    R.in_ev = NULL;
    R.inbuf = NULL;
    while (R.head) {
        struct rev *e = R.head;
        R.head = e->next;
        free(e->kind);
        free(e->text);
        free(e);
    }
    R.tail = NULL;
    free_words();
    free(R.prompt);
    free(R.history);
    R.prompt = R.history = NULL;
    return 0;
}

static int l_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (vm_push_file(L, path, 16 << 20) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s", path);
        return 2;
    }
    return 1;
}

static int l_exists(lua_State *L)
{
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISREG(st.st_mode));
    return 1;
}

/* The editor child that repl.edit waits for. */
struct edit_op {
    struct task_op op;
    struct task *t;
    pid_t pid;
    int status;
    struct event *poll;
};

static void edit_cancel(struct task_op *op)
{
    struct edit_op *e = (struct edit_op *)op;
    if (e->poll)
        event_del(e->poll); /* the editor keeps the terminal until it ends */
}

/* Looks every 100 ms whether the editor ended. */
static void edit_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct edit_op *e = arg;
    pid_t r = waitpid(e->pid, &e->status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) {
        static const struct timeval tick = { 0, 100000 };
        event_add(e->poll, &tick);
        return;
    }
    e->pid = 0;
    task_wake(e->t);
}

static int edit_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct edit_op *e = (struct edit_op *)ctx;
    if (e->poll)
        event_free(e->poll);
    e->poll = NULL;
    if (e->op.cancelled)
        return task_push_cancelled(L);
    lua_pushinteger(L, WIFEXITED(e->status) ? WEXITSTATUS(e->status) : 128 + WTERMSIG(e->status));
    return 1;
}

static int l_edit(lua_State *L)
{
    struct vm *vm = vm_of(L);
    const char *path = luaL_checkstring(L, 1);
    struct task *t = task_current(vm);
    if (!t)
        return luaL_error(L, "repl.edit: not in a task");
    task_check_yieldable(L, t);
    const char *editor = getenv("VISUAL");
    if (!editor || !*editor)
        editor = getenv("EDITOR");
    if (!editor || !*editor)
        editor = "vi";
    struct edit_op *e = lua_newuserdatauv(L, sizeof(*e), 0);
    memset(e, 0, sizeof(*e));
    e->t = t;
    e->op.cancel = edit_cancel;
    e->poll = evtimer_new(vm->base, edit_poll, e);
    if (!e->poll)
        return luaL_error(L, "repl.edit: out of memory");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork(); /* the atfork handler gives the child the default signal mask */
    if (pid < 0) {
        event_free(e->poll);
        e->poll = NULL;
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    if (pid == 0) {
        /* $EDITOR may hold arguments ("code -w"): the shell splits them */
        execl("/bin/sh", "sh", "-c", "exec $0 \"$1\"", editor, path, (char *)NULL);
        _exit(127);
    }
    e->pid = pid;
    static const struct timeval tick = { 0, 100000 };
    event_add(e->poll, &tick);
    return task_yield(L, t, &e->op, edit_done, (lua_KContext)e);
}

void sys_add_repl(struct vm *vm, lua_State *L)
{
    (void)vm;
    static const luaL_Reg fns[] = { { "open", l_open }, { "prompt", l_prompt }, { "next", l_next },
        { "post", l_post }, { "print", l_print }, { "words", l_words }, { "trace", l_trace },
        { "dry", l_dry }, { "read", l_read }, { "exists", l_exists }, { "edit", l_edit }, { "close", l_close },
        { NULL, NULL } };
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "repl");
}
