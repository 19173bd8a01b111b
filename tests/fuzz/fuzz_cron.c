/* fuzz_cron.c - cron expressions (scripts/lib/cron.lua), as a policy's
 * schedule: parsed, then the next run and a match computed from a few fixed
 * times (the end of a leap year, the Unix epoch). Trusted code, as serve
 * uses it. */
#include "harness.h"

static const char target[] =
    "local cron = require('cron')\n"
    "local TIMES = { 0, 1709164800, 1735689540, 951782400 }\n"
    "return function(s)\n"
    "  local ok, sched = pcall(cron.parse, s)\n"
    "  if not ok or not sched then return end\n"
    "  tostring(sched)\n"
    "  for _, t in ipairs(TIMES) do\n"
    "    pcall(sched.next, sched, t)\n"
    "    pcall(sched.matches, sched, t)\n"
    "  end\n"
    "end\n";

/* libFuzzer: compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_lua_init("=fuzz_cron", target, 0);
    return 0;
}

/* libFuzzer: one input, as a cron expression. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_one(data, size);
    return 0;
}
