#!/usr/bin/env bash
# The console's execution pages in a real browser (headless chromium driven
# by tests/browser/executions.test.mjs): Stop in the middle of a slow blob
# copy shows Stopped within a second; Retry re-runs only the failed task;
# text from outside (a FaaS stage's answer) shows as text and runs no
# script; an execution of 1,000 tasks pages and stays responsive. Real
# Distribution registries on loopback, a FaaS stand-in (python), and
# `replica serve` on a fresh database. TAP comes from node's test runner.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
CHROMIUM=${CHROMIUM:-/usr/lib/chromium/chromium}
for need in "$ROOT/build/web/index.html" "$CHROMIUM" "$ROOT/web/node_modules/playwright-core/package.json"; do
    [[ -e $need ]] || { echo "1..0 # SKIP $need is missing (make web, make deps-test)"; exit 0; }
done

registry_start src "$E2E_WORK/src" none
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL
seed "$S" team/a v1,v2 oci 2 4096 seed-a >/dev/null
seed "$S" team/b v1 oci 2 4096 seed-b >/dev/null
seed "$S" team/c v1 oci 1 4096 seed-c >/dev/null
# a 64 MiB layer, for a copy slow enough to stop in the middle
head -c $((64 * 1024 * 1024)) /dev/urandom >"$E2E_WORK/big.bin"
push_big_image "$S" big/blob v1 "$E2E_WORK/big.bin" >/dev/null
rm -f "$E2E_WORK/big.bin"

# team/b's own layer is taken out of the source's storage (renamed beside
# itself), so that its copy fails for real; the test puts it back before
# Retry. A layer of team/b that team/a does not share:
accept='application/vnd.oci.image.manifest.v1+json'
layers() { curl -sf -H "Accept: $accept" "$S/v2/$1/manifests/v1" | jq -r '.layers[].digest' | sort; }
own=$(comm -23 <(layers team/b) <(layers team/a) | head -n 1)
[[ -n $own ]] || { echo "Bail out! team/b has no layer of its own"; exit 1; }
export HELD_BLOB=$REG_SRC_STORAGE/docker/registry/v2/blobs/sha256/${own:7:2}/${own#sha256:}/data
mv "$HELD_BLOB" "$HELD_BLOB.held"

# The FaaS stand-in: POST /output answers 200 with JSON whose keys and
# values are markup; POST /refuse answers 500 with markup in its body (a
# remote stage's error quotes it). Markup a browser would run if it were
# ever parsed as HTML: each sets window.__xss.
cat >"$E2E_WORK/faas.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Faas(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/output":
            body = json.dumps({"note": "<img src=x onerror=window.__xss=2>",
                               "<img src=x onerror=window.__xss=3>": ["<script>window.__xss=4</script>"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"<img src=x onerror=window.__xss=1> the gate refused this repository"
            self.send_response(500)
            self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), Faas)
with open(sys.argv[1], "w") as f:
    f.write(str(srv.server_address[1]))
srv.serve_forever()
PY
python3 "$E2E_WORK/faas.py" "$E2E_WORK/faas.port" &
FAAS_PID=$!
trap 'kill "$FAAS_PID" 2>/dev/null || true; _serve_cleanup' EXIT
for _ in $(seq 1 250); do [[ -s $E2E_WORK/faas.port ]] && break; sleep 0.02; done
export FAAS_URL=http://127.0.0.1:$(cat "$E2E_WORK/faas.port")

# An execution of 1,000 tasks (990 succeeded, 10 failed), each with six
# stage results, written into the database while the daemon is down.
serve_start exec --console "$ROOT/build/web"
api POST /registries "$(registry_json src "$S")"
SRC_ID=$(jget .id)
api POST /registries "$(registry_json dst "$REG_DST_URL" "\"username\": \"$REG_DST_USER\", \"password\": \"$REG_DST_PASS\"")"
DST_ID=$(jget .id)
api POST /policies "{\"name\": \"thousand\", \"source_registry\": $SRC_ID, \"target_registry\": $DST_ID, \"repositories\": [\"bulk/**\"], \"dest_namespace\": \"mirror\"}"
THOUSAND_POLICY=$(jget .id)
serve_stop
now=$(date +%s)
THOUSAND_EXEC=$(sqlite3 "$SERVE_DB" <<SQL
INSERT INTO executions (policy, status, trigger, total, succeeded, failed, stopped, created, started, finished, planned)
  VALUES ($THOUSAND_POLICY, 'Failed', 'manual', 1000, 990, 10, 0, $now - 130, $now - 120, $now - 10, 1);
CREATE TEMP TABLE e AS SELECT last_insert_rowid() AS id;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO tasks (execution, kind, repository, dest_repository, tags, status, attempts, started, finished, error)
  SELECT (SELECT id FROM e), 'copy', printf('bulk/repo-%04d', i), printf('mirror/bulk/repo-%04d', i), '["v1","v2"]',
         CASE WHEN i % 100 = 0 THEN 'Failed' ELSE 'Succeeded' END, 1, $now - 120 + i * 0.1, $now - 119 + i * 0.1,
         CASE WHEN i % 100 = 0 THEN 'push: http 500 UNKNOWN' END
  FROM n;
WITH s(seq, name, fn) AS (VALUES (1, 'pull_prepare', 'distribution/pull_prepare'), (2, 'pull', 'distribution/pull'),
       (3, 'pull_post', 'distribution/pull_post'), (4, 'push_prepare', 'distribution/push_prepare'),
       (5, 'push', 'distribution/push'), (6, 'push_post', 'distribution/verify'))
INSERT INTO stage_results (task, seq, name, function, status, started, finished, output, error, function_version, function_origin)
  SELECT t.id, s.seq, s.name, s.fn,
         CASE WHEN t.status = 'Failed' AND s.seq = 5 THEN 'failed' WHEN t.status = 'Failed' AND s.seq = 6 THEN 'skipped' ELSE 'succeeded' END,
         t.started + s.seq * 0.1, t.started + s.seq * 0.1 + 0.05,
         CASE WHEN t.status = 'Failed' AND s.seq >= 5 THEN NULL ELSE '{"tags":2,"bytes":8192}' END,
         CASE WHEN t.status = 'Failed' AND s.seq = 5 THEN 'http 500 UNKNOWN' END, 0, 'bundled'
  FROM tasks t, s WHERE t.execution = (SELECT id FROM e);
SELECT id FROM e;
SQL
)
serve_start exec --console "$ROOT/build/web"

export CONSOLE_URL=${API%/api/v1} TOKEN ROOT CHROMIUM SRC_ID DST_ID THOUSAND_EXEC
export REG_DST_URL REG_DST_USER REG_DST_PASS REG_DST_STORAGE
rc=0
node --test --test-reporter=tap "$ROOT/tests/browser/executions.test.mjs" || rc=$?
serve_stop
exit "$rc"
