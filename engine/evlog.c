/* evlog.c - rate-limited log lines from the event loop, and libevent's own
 * log routed to a VM's log while someone holds it (see evlog.h). */
#include <event2/event.h>

#include "evlog.h"

static struct vm *evlog_vm;    /* the VM libevent's warnings go to, while held */
static int evlog_users;        /* holds */
static struct evlog_limit evlog_lines;

/* Returns seconds on the monotonic clock. */
static time_t mono_secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

int evlog_limit_pass(struct evlog_limit *ll, unsigned long *quiet)
{
    time_t now = mono_secs();
    if (ll->last && now - ll->last < EVLOG_EVERY_SECS) {
        ll->quiet++;
        return 0;
    }
    *quiet = ll->quiet;
    ll->quiet = 0;
    ll->last = now;
    return 1;
}

/* event_set_log_callback target: libevent's warnings and errors go to the
 * VM's log, at most one line per EVLOG_EVERY_SECS (debug lines are dropped). */
static void on_event_log(int severity, const char *msg)
{
    unsigned long quiet;
    if (severity == EVENT_LOG_DEBUG || !evlog_vm || !evlog_limit_pass(&evlog_lines, &quiet))
        return;
    if (quiet)
        vm_logf(evlog_vm, NULL, LOG_WARN, "libevent: %s (%lu similar lines not logged)", msg,
                quiet);
    else
        vm_logf(evlog_vm, NULL, LOG_WARN, "libevent: %s", msg);
}

void evlog_hold(struct vm *vm)
{
    if (evlog_users++ == 0) {
        evlog_vm = vm;
        event_set_log_callback(on_event_log);
    }
}

void evlog_release(void)
{
    if (--evlog_users == 0) {
        event_set_log_callback(NULL);
        evlog_vm = NULL;
    }
}
