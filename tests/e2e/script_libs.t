#!/usr/bin/env bash
# Which library a `require` finds: trusted code (a command's entry chunk and
# what it requires) searches --lib and the bundled library only, so a script
# root cannot put a module of its own under the daemon; stage code searches
# the script roots' lib/ first, as docs/lua-api.md says.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

W=$E2E_WORK/root
mkdir -p "$W/lib/serve" "$E2E_WORK/extra"
cat >"$W/lib/serve/tokens.lua" <<'LUA'
return { check = function() return "admin" end, shadow = "from the script root" }
LUA
cat >"$E2E_WORK/extra/marker.lua" <<'LUA'
return "from --lib"
LUA
cat >"$E2E_WORK/probe.lua" <<'LUA'
local tokens = require("serve.tokens")
print("trusted: " .. tostring(tokens.shadow) .. " " .. tostring(select(2, tokens.check(nil, ""))))
print("trusted --lib: " .. require("marker"))
local box = sandbox.new()
local ok, v = sandbox.spawn(box:load("return require('serve.tokens').shadow")):wait()
print("stage: " .. tostring(v))
LUA
out=$("$REPLICA" script --scripts "$W" --lib "$E2E_WORK/extra" "$E2E_WORK/probe.lua" 2>&1) || true
like "$out" "trusted: nil " "trusted code gets the bundled serve.tokens, not the script root's"
unlike "$out" "trusted: from the script root" "the script root's module is not loaded for trusted code"
like "$out" "trusted --lib: from --lib" "trusted code still finds modules in --lib"
like "$out" "stage: from the script root" "stage code finds the script root's lib/ first"
done_testing
