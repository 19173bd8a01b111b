/* fuzz_auth.c - WWW-Authenticate challenges (scripts/lib/oci/auth.lua), as a
 * registry's 401 answers them: parsed into schemes and parameters, and
 * learnt by a client of a registry on https (which refuses an http realm).
 * Runs as stage code does, in a sandbox context. */
#include "harness.h"

static const char target[] =
    "local auth = require('oci.auth')\n"
    "return function(s)\n"
    "  pcall(auth.parse_challenges, s)\n"
    "  local a = auth.new({ https = true, username = 'u', password = 'p' })\n"
    "  pcall(a.learn, a, s)\n"
    "  pcall(a.unauthorized, a, { 'repository:lib/app:pull' }, s)\n"
    "end\n";

/* libFuzzer: compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_lua_init("=fuzz_auth", target, 1);
    return 0;
}

/* libFuzzer: one input, as a WWW-Authenticate value. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_one(data, size);
    return 0;
}
