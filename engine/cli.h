/* cli.h - what the subcommands share: an engine (loop + HTTP + VM) and
 * option helpers. */
#ifndef REPLICA_CLI_H
#define REPLICA_CLI_H

#include <stddef.h>

#include "http.h"
#include "vm.h"

struct engine {
    struct event_base *base;
    struct http_client *http;
    struct vm *vm;
};

/* Creates the event base, HTTP client and VM. Returns 0, or -1 with err. The
 * caller closes it with engine_close. */
int engine_open(struct engine *e, const struct vm_opts *vo, const struct http_client_opts *ho,
                char *err, size_t errlen);
void engine_close(struct engine *e);

/* Parses a log level name; returns 0 or -1. */
int cli_log_level(const char *s, enum log_level *out);

/* Writes the bundled scripts directory joined with sub into out: $REPLICA_SCRIPTS,
 * else scripts/ beside the executable, else the build-time default. Returns 0
 * when the directory exists. */
int cli_scripts_dir(char *out, size_t n, const char *sub);

int cmd_script(int argc, char **argv);

#endif
