/* fuzz_webhook.c - webhook payloads (scripts/lib/webhook.lua), as serve's
 * webhook route takes them: the body decoded by lua-cjson (C), then read as
 * a CNCF Distribution notification and as a Harbor event (Default or
 * CloudEvents). Trusted code, as serve uses it. */
#include "harness.h"

static const char target[] =
    "local webhook = require('webhook')\n"
    "return function(s)\n"
    "  local ok, body = pcall(json.decode, s)\n"
    "  if not ok then return end\n"
    "  pcall(webhook.distribution, body)\n"
    "  pcall(webhook.harbor, body)\n"
    "end\n";

/* libFuzzer: compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_lua_init("=fuzz_webhook", target, 0);
    return 0;
}

/* libFuzzer: one input, as a webhook's body. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_one(data, size);
    return 0;
}
