/* test_main.c - runs every test of test_list.h in its own process with a
 * timeout and prints TAP. `unit NAME` runs one test in-process (for gdb). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define TEST_ENTRY(name) int test_##name(void);
#include "test_list.h"
#undef TEST_ENTRY

struct test {
    const char *name;
    int (*fn)(void);
};

static const struct test tests[] = {
#define TEST_ENTRY(name) { #name, test_##name },
#include "test_list.h"
#undef TEST_ENTRY
};

#define NTESTS (sizeof(tests) / sizeof(tests[0]))
#define TIMEOUT_SECONDS 60

/* Runs one test in a child; returns 0 when it passed. */
static int run_forked(const struct test *t)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        alarm(TIMEOUT_SECONDS);
        exit(t->fn() == 0 ? 0 : 1); /* exit, not _exit: leak checkers run at exit */
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        ;
    if (WIFSIGNALED(st)) {
        printf("# killed by signal %d%s\n", WTERMSIG(st),
               WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
        return 1;
    }
    return WEXITSTATUS(st);
}

int main(int argc, char **argv)
{
    if (argc == 2) {
        for (size_t i = 0; i < NTESTS; i++)
            if (strcmp(tests[i].name, argv[1]) == 0)
                return tests[i].fn();
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 2;
    }
    setvbuf(stderr, NULL, _IONBF, 0);
    printf("1..%zu\n", NTESTS);
    int failed = 0;
    for (size_t i = 0; i < NTESTS; i++) {
        int rc = run_forked(&tests[i]);
        printf("%s %zu - %s\n", rc == 0 ? "ok" : "not ok", i + 1, tests[i].name);
        failed += rc != 0;
    }
    return failed ? 1 : 0;
}
