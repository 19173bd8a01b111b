#!/usr/bin/env bash
# replica serve serves the web console's built files at / without a token,
# with a strict Content-Security-Policy, index.html for the console's deep
# links, and 404 for files it does not have; the API still needs its token.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

[[ -f $ROOT/build/web/index.html ]] || { echo "1..0 # SKIP the console is not built (make web)"; exit 0; }
serve_start console --console "$ROOT/build/web"
BASE=${API%/api/v1}
like "$(cat "$SERVE_OUT")" "console at $BASE/" "the start says where the console is"

hdr=$E2E_WORK/h
st=$(curl -s -D "$hdr" -o "$E2E_WORK/b" -w '%{http_code}' "$BASE/")
is "$st" 200 "GET / needs no token"
like "$(cat "$E2E_WORK/b")" '<script type="module" src="/assets/app.js">' "it is the console's index.html"
csp=$(sed -n 's/^Content-Security-Policy: //Ip' "$hdr" | tr -d '\r')
like "$csp" "script-src 'self';" "scripts only from the daemon's own origin"
unlike "$csp" "unsafe-inline" "no inline script or style is allowed"
like "$csp" "default-src 'none'" "everything else is refused unless named"
like "$(cat "$hdr")" "X-Content-Type-Options: nosniff" "nosniff"

st=$(curl -s -o "$E2E_WORK/b2" -w '%{http_code}' "$BASE/executions/42/tasks/7")
is "$st" 200 "a deep link answers 200"
if cmp -s "$E2E_WORK/b" "$E2E_WORK/b2"; then same=yes; else same=no; fi
is "$same" yes "with the same index.html"

st=$(curl -s -D "$hdr" -o "$E2E_WORK/js" -w '%{http_code}' "$BASE/assets/app.js")
is "$st" 200 "the bundle is served"
like "$(grep -i '^content-type' "$hdr")" "text/javascript" "as JavaScript"
if cmp -s "$E2E_WORK/js" "$ROOT/build/web/assets/app.js"; then same=yes; else same=no; fi
is "$same" yes "byte for byte"
etag=$(sed -n 's/^ETag: //Ip' "$hdr" | tr -d '\r')
st=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$BASE/assets/app.js")
is "$st" 304 "a revalidation with its ETag gets 304"

st=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/assets/missing.js")
is "$st" 404 "a file the console does not have is 404, not index.html"
st=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "$BASE/assets/../../../etc/passwd")
is "$st" 404 "no path leaves the console's files"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x "$BASE/")
is "$st" 405 "the console answers GET and HEAD only"
st=$(curl -s -o /dev/null -w '%{http_code}' "$API/policies")
is "$st" 401 "the API still needs a token"
serve_stop

serve_start noconsole --console none
st=$(curl -s -o "$E2E_WORK/b" -w '%{http_code}' "${API%/api/v1}/")
is "$st" 404 "--console none: no console"
like "$(jq -r .error "$E2E_WORK/b")" "serves no console" "and the error says so"
serve_stop
done_testing
