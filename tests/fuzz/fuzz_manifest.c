/* fuzz_manifest.c - manifests and indexes (scripts/lib/oci/media.lua), as
 * the pull stage reads them: a GET's body through media.children, with the
 * media type the registry named or the one the document declares (JSON
 * decoded by lua-cjson, in C). Runs as stage code does, in a sandbox
 * context. */
#include "harness.h"

static const char target[] =
    "local media = require('oci.media')\n"
    "return function(s)\n"
    "  pcall(media.children, s)\n"
    "  pcall(media.children, { body = s, media_type = media.OCI_INDEX })\n"
    "  pcall(media.children, { body = s, media_type = media.DOCKER_MANIFEST })\n"
    "  local ok, doc = pcall(json.decode, s)\n"
    "  if ok and type(doc) == 'table' then\n"
    "    pcall(media.detect, doc)\n"
    "    pcall(media.children, doc)\n"
    "  end\n"
    "  pcall(media.strip, s)\n"
    "end\n";

/* libFuzzer: compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_lua_init("=fuzz_manifest", target, 1);
    return 0;
}

/* libFuzzer: one input, as a manifest's body. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_one(data, size);
    return 0;
}
