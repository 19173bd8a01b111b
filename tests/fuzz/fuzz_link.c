/* fuzz_link.c - Link headers and the URLs they name (scripts/lib/oci/link.lua),
 * as the catalog and tag paging reads them: a registry's Link value, and
 * the reference it names resolved against the page's URL. Runs as stage
 * code does, in a sandbox context. */
#include "harness.h"

static const char target[] =
    "local link = require('oci.link')\n"
    "return function(s)\n"
    "  local ok, nxt = pcall(link.next, s)\n"
    "  if ok and nxt then pcall(link.resolve, 'https://r.example:5000/v2/_catalog?n=100', nxt) end\n"
    "  pcall(link.resolve, 'http://127.0.0.1/v2/lib/app/tags/list', s)\n"
    "  pcall(link.resolve, s, '/v2/_catalog?last=x')\n"
    "  pcall(link.origin, s)\n"
    "end\n";

/* libFuzzer: compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_lua_init("=fuzz_link", target, 1);
    return 0;
}

/* libFuzzer: one input, as a Link header value. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_one(data, size);
    return 0;
}
