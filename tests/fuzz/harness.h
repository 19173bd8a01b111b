/* harness.h - what the fuzz targets (tests/fuzz/fuzz_*.c) share: the
 * engine's VM, made the way `replica script` makes it, and running Lua on
 * it as tasks.
 *
 * A Lua error is the parser refusing its input, which is fine; what counts
 * as a finding aborts the process so that libFuzzer keeps the input: a task
 * killed for its CPU or memory budget (a parse that runs away), or a task
 * that fails outside the target's own pcall (a broken harness). Crashes and
 * sanitizer reports abort by themselves.
 */
#ifndef REPLICA_FUZZ_HARNESS_H
#define REPLICA_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "vm.h"

/* Returns the VM every target of this process shares, creating it (with its
 * event base and HTTP client) on the first call; budgets per task: 1 s of
 * CPU and 64 MiB. Aborts when it cannot. The harness owns it for the life of
 * the process. */
struct vm *fuzz_vm(void);

/* Runs the function below nargs arguments on top of the VM's stack as one
 * task (sandboxed: under the sandbox's rules, as stage code runs) until it
 * ends, and leaves its first nres results on the stack. Aborts on a task
 * that was killed or failed. */
void fuzz_run(struct vm *vm, int nargs, int sandboxed, int nres);

/* Compiles the chunk src (named name) and runs it once as trusted code,
 * with `sys` in its environment; in a sandbox context (sandbox.new()) when
 * sandboxed. The chunk returns the target function, which fuzz_lua_one
 * calls with each input. Call from LLVMFuzzerInitialize. */
void fuzz_lua_init(const char *name, const char *src, int sandboxed);

/* Calls the target function of fuzz_lua_init with data[0..size) as one Lua
 * string, in a task of its own. */
void fuzz_lua_one(const uint8_t *data, size_t size);

/* What each target defines for libFuzzer: its set-up, and one input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
