-- serve/scrape.lua - GET /metrics: the daemon's metrics in the Prometheus
-- text format (serve/metrics.lua). What is counted where:
--   executions and tasks by status  the database, at each scrape (task_counts)
--   bytes, blobs and tags copied    the push stages' reports, as each stage
--                                   ends (stage_ended), local or on a function
--   stage durations                 the same stage records
--   outgoing requests, in flight    the engine's HTTP client (sys.http_stats),
--                                   which every registry request goes through
--   retries                         oci/retry.lua's counts
--   webhook events                  serve/webhooks.lua (webhook)
-- The route takes the API's bearer tokens, or the metrics token of
-- `serve --metrics-token-file`, which opens nothing else.
local metrics = require("serve.metrics")
local tokens = require("serve.tokens")
local retry = require("oci.retry")

local scrape = {}

-- Upper bounds (seconds) of the stage duration histogram's buckets.
scrape.STAGE_BUCKETS = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 }

local STATUSES = { "Pending", "Running", "Succeeded", "Failed", "Stopped" }
local BLOB_RESULTS = { blobs_copied = "copied", blobs_mounted = "mounted", blobs_skipped = "skipped" }
local TAG_RESULTS = { "pushed", "skipped", "kept", "failed" }

-- Declares replica's metric families in a new registry; returns the table
-- of families (and the registry as .reg), which the service state keeps.
local function families()
  local reg = metrics.new()
  return {
    reg = reg,
    executions = reg:gauge("replica_executions", "Executions in the database, by status.", { "status" }),
    tasks = reg:gauge("replica_tasks",
      "Tasks (one repository of an execution each) in the database, by status.", { "status" }),
    bytes = reg:counter("replica_bytes_copied_total",
      "Bytes of blobs uploaded to targets, as the push stages report them when they end."),
    blobs = reg:counter("replica_blobs_total",
      "Blobs the push stages handled, by result: copied (uploaded), mounted (from another repository "
      .. "of the target) or skipped (the target had it, or another task of the run copied it).", { "result" }),
    tags = reg:counter("replica_tags_total",
      "Tags the push stages handled, by result: pushed, skipped (up to date), kept (not overridden) "
      .. "or failed.", { "result" }),
    requests = reg:counter("replica_http_requests_total",
      "Outgoing HTTP requests finished (to registries, their token services and FaaS gateways), by "
      .. "the host:port they were sent to, method, and status (the transfer error's name when no "
      .. "response came). The API's own requests are not counted.", { "host", "method", "status" },
      { max = 256 }),
    in_flight = reg:gauge("replica_http_requests_in_flight", "Outgoing HTTP requests under way."),
    queued = reg:gauge("replica_http_requests_queued",
      "Outgoing HTTP requests waiting for a free slot of their host or of the client."),
    retries = reg:counter("replica_retries_total",
      "Retries after a transient failure, by what was retried (request: a registry request; blob: "
      .. "a blob upload) and why (the HTTP status or the transfer error).", { "kind", "reason" }),
    stages = reg:histogram("replica_stage_duration_seconds", "How long stages ran, by template and stage.",
      { "template", "stage" }, { buckets = scrape.STAGE_BUCKETS }),
    received = reg:counter("replica_webhook_events_received_total",
      "Webhook requests received and stored, by source (distribution, harbor).", { "source" }),
    matched = reg:counter("replica_webhook_events_matched_total",
      "Webhook events whose artifacts queued work for at least one policy, by source.", { "source" }),
    ignored = reg:counter("replica_webhook_events_ignored_total",
      "Webhook events that matched no policy's filters (or named no artifact), by source.", { "source" }),
  }
end

-- Sets up the metrics of service state s (s.metrics) and the metrics token:
-- opts.metrics_token is the text of --metrics-token-file (false when that
-- file could not be read). Returns true, or nil and a message.
function scrape.setup(s, opts)
  if opts.metrics_token_file then
    if type(opts.metrics_token) ~= "string" then
      return nil, "--metrics-token-file " .. opts.metrics_token_file .. ": cannot read it"
    end
    local tok = opts.metrics_token:match("^%s*(.-)%s*$")
    if tok == "" or tok:find("%s") then
      return nil, "--metrics-token-file " .. opts.metrics_token_file .. ": the token must be one word"
    end
    s.metrics_token_hash = tokens.hash(tok)
  end
  s.metrics = families()
  return true
end

-- A non-negative integer field of a stage's output, or 0.
local function count_of(out, k)
  local v = out[k]
  if math.type(v) == "integer" and v >= 0 then return v end
  return 0
end

-- Counts stage record r (name, started, finished, output) of a task run
-- with template template_name, local or on a function: its duration, and
-- when its output is a push stage's report (it has blobs_copied: the
-- bundled distribution/push's), the bytes, blobs and tags it reports.
function scrape.stage_ended(s, template_name, r)
  local m = s.metrics
  if not m or type(r) ~= "table" then return end
  if type(r.started) == "number" and type(r.finished) == "number" and r.finished >= r.started then
    m.stages:observe({ template = template_name, stage = r.name }, r.finished - r.started)
  end
  local out = r.output
  if type(out) ~= "table" or math.type(out.blobs_copied) ~= "integer" then return end
  m.bytes:inc(nil, count_of(out, "bytes"))
  for k, result in pairs(BLOB_RESULTS) do m.blobs:inc({ result = result }, count_of(out, k)) end
  for _, k in ipairs(TAG_RESULTS) do m.tags:inc({ result = k }, count_of(out, k)) end
end

-- Counts a webhook request of source ("distribution", "harbor"): what is
-- "received" when it is stored, then "matched" or "ignored".
function scrape.webhook(s, source, what)
  local m = s.metrics
  if not m then return end
  local f = what == "received" and m.received or what == "matched" and m.matched or m.ignored
  f:inc({ source = source })
end

-- The tasks by status ({Pending = n, ...}) without a scan of every task:
-- the ended ones from the counts each execution keeps with its tasks'
-- changes, the others from the tasks of the executions not ended (through
-- the index on tasks' execution and status).
local function task_counts(db)
  local c = assert(db:row([[SELECT coalesce(sum(succeeded), 0) AS s, coalesce(sum(failed), 0) AS f,
                                   coalesce(sum(stopped), 0) AS st FROM executions]]))
  local out = { Pending = 0, Running = 0, Succeeded = c.s, Failed = c.f, Stopped = c.st }
  for _, r in ipairs(assert(db:query([[SELECT t.status, count(*) AS n FROM executions e
                                       JOIN tasks t ON t.execution = e.id AND t.status IN ('Pending', 'Running')
                                       WHERE e.status IN ('Pending', 'Running') GROUP BY t.status]]))) do
    out[r.status] = r.n
  end
  return out
end

-- Refreshes the families read at scrape time: the database's counts, the
-- HTTP client's and the retries.
local function collect(s)
  local m = s.metrics
  local execs = { Pending = 0, Running = 0, Succeeded = 0, Failed = 0, Stopped = 0 }
  for _, row in ipairs(assert(s.db:query("SELECT status, count(*) AS n FROM executions GROUP BY status"))) do
    execs[row.status] = row.n
  end
  for _, pair in ipairs{ { m.executions, execs }, { m.tasks, task_counts(s.db) } } do
    pair[1]:clear()
    for _, st in ipairs(STATUSES) do pair[1]:set({ status = st }, pair[2][st] or 0) end
  end
  local h = s.sys.http_stats()
  m.in_flight:set(nil, h.active)
  m.queued:set(nil, h.queued)
  for _, r in ipairs(h.requests) do
    m.requests:set({ host = r.host, method = r.method, status = r.status }, r.count)
  end
  for kind, reasons in pairs(retry.counts) do
    for reason, n in pairs(reasons) do m.retries:set({ kind = kind, reason = reason }, n) end
  end
end

-- Whether the Authorization header opens GET /metrics: an API token, or
-- the metrics token. Returns true and the name, or false and the message.
function scrape.authorize(s, header)
  local tok = header and header:match("^[Bb]earer%s+(%S+)%s*$")
  if tok and s.metrics_token_hash and tokens.hash(tok) == s.metrics_token_hash then return true, "metrics" end
  local who, why = tokens.check(s.db, header)
  if who then return true, who end
  return false, why
end

-- Answers GET (or HEAD) /metrics with the exposition.
function scrape.serve(s, req)
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return req:respond(405, { ["Content-Type"] = "application/json", Allow = "GET" },
                       json.encode({ error = "method " .. req.method .. " not allowed here (allowed: GET)" }))
  end
  collect(s)
  return req:respond(200, { ["Content-Type"] = metrics.CONTENT_TYPE }, s.metrics.reg:render())
end

return scrape
