/* evlog.h - log lines from the event loop: a rate limit for a line that may
 * repeat (at most one per EVLOG_EVERY_SECS), and libevent's own warnings and
 * errors routed to a VM's log under such a limit.
 *
 * libevent has one process-wide log callback, so the routing is counted:
 * it holds while any user (an open HTTP server) holds it, and goes to the VM
 * of the first one. Not thread-safe; runs on the loop thread.
 */
#ifndef REPLICA_EVLOG_H
#define REPLICA_EVLOG_H

#include <time.h>

#include "vm.h"

#define EVLOG_EVERY_SECS 10 /* a repeated line is logged at most this often */

/* A rate limit for one repeated log line; zero-initialise it. */
struct evlog_limit {
    time_t last;         /* monotonic seconds of the last line, 0 = never */
    unsigned long quiet; /* occurrences not logged since */
};

/* Returns 1 when a line limited by ll may be logged now, and sets *quiet to
 * the occurrences left out since the last one; 0 (counting this one) if not. */
int evlog_limit_pass(struct evlog_limit *ll, unsigned long *quiet);

/* Routes libevent's log to vm's log (warnings and errors, rate-limited;
 * debug lines dropped) until the matching evlog_release. vm must outlive
 * the hold. */
void evlog_hold(struct vm *vm);

/* Undoes one evlog_hold; the last one gives libevent its default log back. */
void evlog_release(void);

#endif
