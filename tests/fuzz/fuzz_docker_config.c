/* fuzz_docker_config.c - docker's config.json (scripts/lib/credentials.lua),
 * as `replica run` reads it for a registry's credentials: each input is
 * written to $DOCKER_CONFIG/config.json, then credentials are resolved for
 * a few registries the way run does (creds.docker_config reads the file,
 * lua-cjson decodes it, base64 opens auths). PATH is an empty directory,
 * so a credHelpers or credsStore entry finds no helper to run. Trusted
 * code, as run uses it. */
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

static const char target[] =
    "local credentials = require('credentials')\n"
    "local URLS = { 'https://registry.example:5000', 'docker.io', 'http://127.0.0.1:5000/v2/' }\n"
    "return function()\n"
    "  for _, url in ipairs(URLS) do pcall(credentials.resolve, url) end\n"
    "end\n";

static char config_dir[] = "/tmp/replica-fuzz-docker.XXXXXX";
static char config_path[64];

/* atexit: removes the config directory. */
static void remove_config(void)
{
    remove(config_path);
    remove(config_dir);
}

/* libFuzzer: makes the config directory and compiles the target once. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!mkdtemp(config_dir))
        abort();
    snprintf(config_path, sizeof(config_path), "%s/config.json", config_dir);
    atexit(remove_config);
    setenv("DOCKER_CONFIG", config_dir, 1);
    setenv("PATH", config_dir, 1);
    fuzz_lua_init("=fuzz_docker_config", target, 0);
    return 0;
}

/* libFuzzer: one input, as the text of config.json. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(config_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    fuzz_lua_one(data, size);
    return 0;
}
