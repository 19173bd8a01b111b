#!/usr/bin/env bash
# Registries of other kinds in the web console (tests/browser/registries.test.mjs
# in headless chromium): the ECR stand-in (tests/standins/ecr.py) behind a
# registry made through the UI with the kind's own fields, and Test
# connection logging in through the kind; a registry that requires client
# certificates (Distribution over mTLS, with a CA made here) given its CA,
# certificate and key files in the form. TAP comes from node's test runner.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
source "$ROOT/tests/standins.sh"
CHROMIUM=${CHROMIUM:-/usr/lib/chromium/chromium}
for need in "$ROOT/build/web/index.html" "$CHROMIUM" "$ROOT/web/node_modules/playwright-core/package.json"; do
    [[ -e $need ]] || { echo "1..0 # SKIP $need is missing (make web, make deps-test)"; exit 0; }
done

standin_start ecr e "$E2E_WORK/e"
tls_ca "$E2E_WORK" regs
tls_ca "$E2E_WORK" users
TEST_REGISTRY_TLS=$E2E_WORK/regs TEST_REGISTRY_CLIENT_CA=$E2E_WORK/users registry_start mtls "$E2E_WORK/mtls"
export MTLS_URL=$REG_MTLS_URL MTLS_CA=$E2E_WORK/regs.pem MTLS_CERT=$REG_MTLS_CERT MTLS_KEY=$REG_MTLS_KEY
serve_start console_registries --console "$ROOT/build/web"
export CONSOLE_URL=${API%/api/v1} TOKEN ROOT CHROMIUM
export STANDIN_E_URL STANDIN_E_API_URL STANDIN_E_ACCESS_KEY_ID STANDIN_E_SECRET_ACCESS_KEY STANDIN_E_REGION
rc=0
node --test --test-reporter=tap "$ROOT/tests/browser/registries.test.mjs" || rc=$?
serve_stop
exit "$rc"
