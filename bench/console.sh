#!/usr/bin/env bash
# bench/console.sh - `make bench-console` (and the end of `make bench`): the
# web console's figures, on loopback, in Debian's headless chromium driven by
# playwright-core (bench/console.mjs):
#   1  the bundle a browser downloads, gzipped (web/build.mjs)
#   2  the execution page of an execution with 1,000 tasks (inserted with
#      sqlite3 into a fresh daemon database before serve starts, six stage
#      results each): the time from navigation to the first page of the task
#      list in the DOM and painted (cold cache, then warm), and the time a
#      change of page takes (Next, through every page)
#   3  saving a function and starting an execution that uses it: from the
#      start of PUT /functions/common/bench_pass (a new version each time) to
#      the execution made by POST /policies/{id}/executions being Running (or
#      finished) on the event stream, 20 times; median and max. Each
#      execution must have pinned the version just saved.
#   REPLICA      the engine binary (default build/release/replica)
#   CONSOLE_WEB  the console's source directory to build and serve (default
#                web/; it needs node_modules, `make web` installs them)
# Exits 1 when a check fails, whatever the figures.
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPLICA=${REPLICA:-$ROOT/build/release/replica}
CONSOLE_WEB=${CONSOLE_WEB:-$ROOT/web}
CHROMIUM=${CHROMIUM:-/usr/lib/chromium/chromium}
TASKS=1000 REPS=20

for tool in node sqlite3 curl jq docker-registry; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deps-bench)" >&2; exit 1; }
done
[[ -x $CHROMIUM ]] || { echo "bench: $CHROMIUM not found (package chromium)" >&2; exit 1; }
[[ -d $CONSOLE_WEB/node_modules/playwright-core ]] ||
    { echo "bench: $CONSOLE_WEB/node_modules has no playwright-core (make web)" >&2; exit 1; }
source "$ROOT/tests/registry.sh"
WORK=$(mktemp -d /tmp/replica-bench-console.XXXXXX)
SERVE_PID=""
serve_stop() {
    [[ -n $SERVE_PID ]] || return 0
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
}
cleanup() {
    serve_stop
    registry_stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "bench: $*" >&2; exit 1; }

# --- 1: the bundle ------------------------------------------------------------------
size=$(node "$CONSOLE_WEB/build.mjs" "$WORK/web") || fail "the console does not build"
gz=$(sed -n 's/.*KiB, \([0-9.]*\) KiB gzipped.*/\1/p' <<<"$size")
raw=$(sed -n 's/.* \([0-9.]*\) KiB, .*/\1/p' <<<"$size")
[[ -n $gz ]] || fail "no size from web/build.mjs: $size"

# --- the daemon: a fresh database, then 1,000 tasks put in with sqlite3 ----------------
registry_start src "$WORK/src"
"$REPLICA" script "$ROOT/tests/fixtures/seed.lua" "$REG_SRC_URL" bench/one v1 oci 1 1024 >/dev/null ||
    fail "seeding the source failed"
DB=$WORK/replica.db
port=$(_servers_free_port)
API=http://127.0.0.1:$port/api/v1
serve_start() {
    "$REPLICA" serve --db "$DB" --listen "127.0.0.1:$port" --console "$WORK/web" --log-level warn \
        >>"$WORK/serve.out" 2>>"$WORK/serve.log" &
    SERVE_PID=$!
    for _ in $(seq 1 500); do curl -s -o /dev/null "$API/health" && return 0; sleep 0.02; done
    fail "serve did not start: $(cat "$WORK/serve.log")"
}
serve_start
TOKEN=$(sed -n 's/.*stored): //p' "$WORK/serve.out")
[[ -n $TOKEN ]] || fail "no admin token in $(cat "$WORK/serve.out")"
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
REG=$(api -d "{\"name\": \"src\", \"url\": \"$REG_SRC_URL\"}" "$API/registries" | jq .id)
PAGE_POLICY=$(api -d "{\"name\": \"page\", \"source_registry\": $REG, \"target_registry\": $REG, \"dest_namespace\": \"mirror\"}" \
    "$API/policies" | jq .id)
serve_stop

# One finished execution (Failed: 10 of its tasks failed) with TASKS tasks of
# 1-3 tags, each with the six stage results of the distribution template.
sqlite3 "$DB" <<SQL || fail "inserting the tasks failed"
BEGIN;
INSERT INTO executions (policy, status, trigger, scope, planned, total, succeeded, failed, stopped,
                        created, started, finished)
VALUES ($PAGE_POLICY, 'Failed', 'manual', 'all', 1, $TASKS, $((TASKS - 10)), 10, 0,
        unixepoch() - 600, unixepoch() - 600, unixepoch() - 60);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $TASKS)
INSERT INTO tasks (execution, kind, repository, dest_repository, tags, status, attempts, started, finished, error)
SELECT (SELECT max(id) FROM executions), 'copy', printf('team%02d/app%04d', i % 40, i), printf('mirror/team%02d/app%04d', i % 40, i),
       CASE i % 3 WHEN 0 THEN '["v1"]' WHEN 1 THEN '["v1","v2"]' ELSE '["v1","v2","latest"]' END,
       CASE WHEN i % 100 = 0 THEN 'Failed' ELSE 'Succeeded' END, 1,
       unixepoch() - 600 + i * 0.5, unixepoch() - 600 + i * 0.5 + 3,
       CASE WHEN i % 100 = 0 THEN 'push: blob sha256:0000: http 500' END
FROM n;
WITH s(seq, name) AS (VALUES (1, 'pull_prepare'), (2, 'pull'), (3, 'pull_post'), (4, 'push_prepare'),
                             (5, 'push'), (6, 'push_post'))
INSERT INTO stage_results (task, seq, name, function, status, started, finished, output, error,
                           function_version, function_origin)
SELECT t.id, s.seq, s.name, 'distribution/' || s.name,
       CASE WHEN t.status = 'Failed' AND s.seq = 5 THEN 'failed'
            WHEN t.status = 'Failed' AND s.seq = 6 THEN 'skipped' ELSE 'succeeded' END,
       t.started + s.seq * 0.4, t.started + s.seq * 0.5,
       CASE s.seq WHEN 2 THEN '{"tags":2,"up_to_date":0,"manifests":2,"blobs":6,"bytes":48213,"failed":{}}'
                  WHEN 5 THEN '{"tags":[{"tag":"v1","status":"pushed","digest":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}],"pushed":1,"skipped":0,"kept":0,"failed":0,"blobs_copied":3,"blobs_mounted":0,"blobs_skipped":0,"bytes":48213}'
                  ELSE '{}' END,
       CASE WHEN t.status = 'Failed' AND s.seq = 5 THEN 'blob sha256:0000: http 500' END,
       0, 'bundled'
FROM tasks t CROSS JOIN s;
COMMIT;
SQL
EXEC=$(sqlite3 "$DB" "SELECT max(id) FROM executions")
serve_start
[[ $(api "$API/executions/$EXEC" | jq .total) == "$TASKS" ]] || fail "the execution does not have $TASKS tasks"

# --- 3's policy: a user template whose one stage is the function saved ----------------------
api -X PUT -d '{"source": "return { run = function(ctx, input) return input or {} end }"}' \
    "$API/functions/common/bench_pass" >/dev/null || fail "PUT /functions/common/bench_pass failed"
api -X PUT -d '{"stages": [{"name": "pass", "function": "common/bench_pass"}]}' "$API/templates/bench" >/dev/null ||
    fail "PUT /templates/bench failed"
RUN_POLICY=$(api -d "{\"name\": \"run\", \"source_registry\": $REG, \"target_registry\": $REG, \"repositories\": [\"bench/one\"], \"template\": \"bench\"}" \
    "$API/policies" | jq .id)
[[ $RUN_POLICY =~ ^[0-9]+$ ]] || fail "cannot create the policy with template bench"

# --- the browser ------------------------------------------------------------------------------
read -r load _ </proc/loadavg
echo "console bench: $(nproc) CPUs (load average $load at start), chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}'), headless"
printf '  bundle         %s KiB gzipped (%s KiB raw): what a first visit downloads\n' "$gz" "$raw"
node "$ROOT/bench/console.mjs" --url "http://127.0.0.1:$port" --token "$TOKEN" --chromium "$CHROMIUM" \
    --playwright "$CONSOLE_WEB" --execution "$EXEC" --tasks "$TASKS" --policy "$RUN_POLICY" --reps "$REPS" \
    >"$WORK/console.json" 2>"$WORK/console.err" || fail "console.mjs failed: $(cat "$WORK/console.err" "$WORK/console.json")"
jq -r --arg tasks "$TASKS" '
  def ms: . * 10 | round / 10 | tostring + " ms";
  (if .page.missing then "  execution page: not measured: \(.page.missing)" else
    "  execution page, \($tasks) tasks (\(.page.rows) rows a page, \(.page.pages) pages):",
    "    first render   cold \(.page.first_cold | ms), warm median \(.page.first_warm.median | ms), max \(.page.first_warm.max | ms) (\(.page.first_warm.n) reloads)",
    "                   (navigation start to the rows painted; the task list API answered in \(.page.tasks_api.median | ms), median)",
    "    page change    median \(.page.change.median | ms), max \(.page.change.max | ms) (\(.page.change.n) clicks on Next, each to the rows painted)",
    "                   (its task list API call \(.page.change_api.median | ms), median)"
  end),
  "  save a function, start an execution that uses it (\(.run.n) times, loopback):",
  "    PUT start -> Running   median \(.run.total.median | ms), max \(.run.total.max | ms)",
  "    of which               PUT \(.run.put.median | ms), POST \(.run.post.median | ms), POST answer -> Running event \(.run.start.median | ms) (medians)"
' "$WORK/console.json"
