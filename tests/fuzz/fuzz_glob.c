/* fuzz_glob.c - doublestar globs (scripts/lib/glob.lua), as policies and
 * `replica run --repo/--tag` give them: the input's first line is the
 * pattern, compiled once (as a policy's filter is), each further line a name
 * matched against it; the pattern is also taken as a name, and the rest as
 * an exclude pattern. Trusted code, as serve and run use it. */
#include "harness.h"

static const char target[] =
    "local glob = require('glob')\n"
    "return function(s)\n"
    "  local pattern, rest = s:match('^([^\\n]*)\\n?(.*)$')\n"
    "  local ok, matches = pcall(glob.compile, pattern)\n"
    "  if not ok then return end\n"
    "  pcall(matches, pattern)\n"
    "  for name in rest:gmatch('[^\\n]+') do pcall(matches, name) end\n"
    "  local fok, keep = pcall(glob.filter, { pattern }, { rest })\n"
    "  if fok then pcall(keep, rest) end\n"
    "end\n";

/* libFuzzer: compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_lua_init("=fuzz_glob", target, 0);
    return 0;
}

/* libFuzzer: one input, as a pattern and names. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_one(data, size);
    return 0;
}
