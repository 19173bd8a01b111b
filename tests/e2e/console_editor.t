#!/usr/bin/env bash
# The console's Functions and Templates pages in headless Chromium against a
# real `replica serve` and two real registries: tests/browser/editor.test.mjs
# (node's test runner, TAP) drives the editor, the history and diff, reset
# to bundled, the template composer, a delete refused with 409, a draft run,
# and a save while an execution runs that execution's pinned version.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

[[ -f $ROOT/build/web/index.html ]] || { echo "1..0 # SKIP the console is not built (make web)"; exit 0; }
CHROMIUM=${CHROMIUM:-/usr/lib/chromium/chromium}
[[ -x $CHROMIUM ]] || { echo "1..0 # SKIP no chromium at $CHROMIUM"; exit 0; }
[[ -d $ROOT/web/node_modules/playwright-core ]] || { echo "1..0 # SKIP playwright-core is not installed (make web)"; exit 0; }

registry_start src "$E2E_WORK/src" none
registry_start dst "$E2E_WORK/dst" none
seed "$REG_SRC_URL" team/app v1 oci 1 1024 seed >/dev/null

serve_start editor --console "$ROOT/build/web"
export CONSOLE_URL=${API%/api/v1} TOKEN ROOT CHROMIUM REG_SRC_URL REG_DST_URL
rc=0
node --test --test-reporter=tap "$ROOT/tests/browser/editor.test.mjs" || rc=$?
serve_stop
exit "$rc"
