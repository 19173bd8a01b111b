/* fuzz_glob.c - doublestar globs (scripts/lib/glob.lua), as policies and
 * `replica run --repo/--tag` give them: the input's first line is the
 * pattern, each further line a name matched against it, and the pattern is
 * also taken as a name. Trusted code, as serve and run use it. */
#include "harness.h"

static const char target[] =
    "local glob = require('glob')\n"
    "return function(s)\n"
    "  local pattern, rest = s:match('^([^\\n]*)\\n?(.*)$')\n"
    "  if not pcall(glob.compile, pattern) then return end\n"
    "  pcall(glob.match, pattern, pattern)\n"
    "  for name in rest:gmatch('[^\\n]+') do\n"
    "    pcall(glob.match, pattern, name)\n"
    "  end\n"
    "  local ok, keep = pcall(glob.filter, { pattern }, { rest })\n"
    "  if ok then pcall(keep, rest) end\n"
    "end\n"
    ;

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
