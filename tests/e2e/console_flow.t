#!/usr/bin/env bash
# The web console's whole flow in a real browser (headless chromium driven
# by tests/browser/flow.test.mjs): log in, add registries and test them,
# write a function, compose a template, create, preview and run a policy,
# watch its execution live and read its stage results. Real Distribution
# registries (Basic auth) on loopback, the source seeded; `replica serve`
# on a fresh database serves the console and the API. TAP comes from
# node's test runner.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
CHROMIUM=${CHROMIUM:-/usr/lib/chromium/chromium}
for need in "$ROOT/build/web/index.html" "$CHROMIUM" "$ROOT/web/node_modules/playwright-core/package.json"; do
    [[ -e $need ]] || { echo "1..0 # SKIP $need is missing (make web, make deps-test)"; exit 0; }
done

registry_start src "$E2E_WORK/src" basic
registry_start dst "$E2E_WORK/dst" basic
seed "$REG_SRC_URL" team/app v1,v2,v1-debug oci 2 4096 seed "$REG_SRC_USER:$REG_SRC_PASS" >/dev/null
seed "$REG_SRC_URL" team/web v1,v1-debug oci 1 4096 seed "$REG_SRC_USER:$REG_SRC_PASS" >/dev/null
seed "$REG_SRC_URL" other/skip v1 oci 1 1024 seed "$REG_SRC_USER:$REG_SRC_PASS" >/dev/null

serve_start console_flow --console "$ROOT/build/web"
export CONSOLE_URL=${API%/api/v1} TOKEN ROOT CHROMIUM
export REG_SRC_URL REG_SRC_USER REG_SRC_PASS REG_DST_URL REG_DST_USER REG_DST_PASS
rc=0
node --test --test-reporter=tap "$ROOT/tests/browser/flow.test.mjs" || rc=$?
serve_stop
exit "$rc"
