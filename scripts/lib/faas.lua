-- faas.lua - `replica function`: one task per HTTP invocation, for FaaS
-- platforms (Knative, OpenFaaS of-watchdog http mode, Fission, Cloud Run).
-- POST / runs a whole task through the same runner, clients and per-run
-- table as `replica run` and answers its stage results; /_/health and
-- /_/ready are the probes; SIGTERM drains. See docs/faas.md.
local invocation = require("faas.invocation")
local callback = require("faas.callback")
local taskrun = require("taskrun")
local runner = require("runner")
local hostport = require("hostport")
local positive = require("faas.config").number

-- The host and port of a --listen value (":PORT" means 0.0.0.0).
local function listen_of(s)
  return hostport.parse(s, "0.0.0.0", "0.0.0.0:8080")
end

local faas = {}

-- Compares two strings in time that depends on their lengths only.
local function same(a, b)
  if #a ~= #b then return false end
  local d = 0
  for i = 1, #a do d = d | (a:byte(i) ~ b:byte(i)) end
  return d == 0
end

-- Answers req with status and the JSON of body.
local function reply(req, status, body, headers)
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return req:respond(status, h, json.encode(body))
end

-- sys.listen's authorize: the probes are open, everything else needs the
-- bearer token. Returns true, or false, the 401 message and the challenge.
local function authorize(s, path, header)
  if path == "/_/health" or path == "/_/ready" then return true end
  local given = header and header:match("^[Bb]earer%s+(%S+)%s*$")
  if given and same(given, s.token) then return true end
  return false, given and "wrong bearer token" or "missing bearer token (Authorization: Bearer ...)",
         'Bearer realm="replica-function"'
end

-- Cancels the invocation entry c ({h, why}) with reason why, once.
local function cancel_call(c, why)
  if c.why then return end
  c.why = why
  c.h:cancel()
end

-- Runs one checked invocation in a task of its own (cancelled if the drain
-- times out, or by a cancel naming its call id, or when the coordinator
-- revokes its attempt); returns the response status and body.
local function execute(s, inv)
  -- this request's lines and its task's name the coordinator's execution
  -- and task (replica_execution, replica_task in JSON logs)
  if inv.execution then s.sys.log_execution(inv.execution) end
  if inv.task_id then s.sys.task_log(inv.task_id) end
  local c = {}
  local rep = callback.new(inv, function() cancel_call(c, "the coordinator revoked this attempt") end)
  local ctx -- a one-stage invocation's, whose data goes back with the answer
  c.h = task.spawn({ name = "invocation " .. inv.task.repository }, function()
    if inv.kind == "stage" then
      ctx = { task = inv.task, src = inv.src, dst = inv.dst, options = inv.options, run = taskrun.shared(),
              data = inv.data or {}, results = inv.results or {}, progress = rep.hook }
      rep.on_stage("start", inv.stage, {})
      local r = assert(runner.run_one(inv.template, inv.stage, ctx, inv.input))
      rep.on_stage("end", inv.stage, r)
      return r
    end
    return taskrun.run(inv.template, inv.task, inv.src, inv.dst, inv.options, taskrun.shared(),
                       { hook = rep.hook, on_stage = rep.on_stage })
  end)
  s.running[c.h] = c
  if inv.call_id then s.calls[inv.call_id] = c end
  local ok, record = c.h:join()
  s.running[c.h] = nil
  if inv.call_id and s.calls[inv.call_id] == c then s.calls[inv.call_id] = nil end
  rep.close()
  if not ok then
    if record == "cancelled" and c.why ~= "the drain timeout ran out" then
      -- cancelled on purpose: an answer that no coordinator retries
      return 409, { kind = "task", attempt = inv.attempt, error = "cancelled: " .. tostring(c.why) }
    end
    local why = record == "cancelled" and "the task was cancelled (drain timeout)" or tostring(record)
    return record == "cancelled" and 503 or 500, { kind = "task", attempt = inv.attempt, error = why }
  end
  if inv.kind == "stage" then
    log.info("%s -> %s: stage %s %s", inv.task.repository, inv.task.dest_repository, inv.stage, record.status)
    local data, derr = sandbox.plain(ctx.data, "the task's data")
    if not data then return 500, { kind = "stage", attempt = inv.attempt, error = "the function failed: " .. derr } end
    return 200, { kind = "stage", attempt = inv.attempt, template = inv.template.name, stage = inv.stage,
                  status = record.status, ["function"] = record["function"], started = record.started,
                  finished = record.finished, output = record.output, error = record.error,
                  data = next(data) and data or nil }
  end
  log.info("%s -> %s [%s]: %s", record.repository, record.dest_repository,
           table.concat(record.tags, ", "), record.status)
  return 200, { kind = "task", attempt = inv.attempt, template = inv.template.name, status = record.status,
                repository = record.repository, dest_repository = record.dest_repository,
                tags = setmetatable(record.tags, json.array_mt),
                stages = setmetatable(record.stages, json.array_mt) }
end

-- A cancel: {"cancel": CALL_ID} stops the invocation with that call id
-- on this instance (200), or answers 404 when none runs here.
local function cancel(s, call_id)
  local c = s.calls[call_id]
  if not c then return 404, { error = "no invocation with call id " .. call_id .. " runs on this instance" } end
  log.info("invocation %s: cancelled by request", call_id)
  cancel_call(c, "cancelled by request")
  return 200, { cancelled = call_id }
end

-- POST /: one invocation, unless draining (503) or at --max-inflight
-- (429); a cancel is taken in either case.
local function invoke(s, req)
  local inv, st, err = invocation.read(req.body, req.too_large, s.keyring)
  if inv and inv.kind == "cancel" then return reply(req, cancel(s, inv.call_id)) end
  if s.draining then return reply(req, 503, { error = "draining: this instance takes no new work" }) end
  if s.inflight >= s.max_inflight then
    return reply(req, 429, { error = string.format("at --max-inflight (%d invocations in flight)", s.max_inflight) },
                 { ["Retry-After"] = "1" })
  end
  if not inv then return reply(req, st, { error = err }) end
  s.inflight = s.inflight + 1
  local ok, status, body = pcall(execute, s, inv)
  if not ok then
    log.error("invocation failed: %s", tostring(status))
    status, body = 500, { error = "the function failed: " .. tostring(status) }
  end
  pcall(reply, req, status, body)
  s.inflight = s.inflight - 1 -- after the reply: a drain waits for it to be sent
end

-- Answers one request: the probes and POST /.
local function handle(s, req)
  if req.path == "/_/health" then return reply(req, 200, { status = "ok" }) end
  if req.path == "/_/ready" then
    if s.draining then return reply(req, 503, { status = "draining" }) end
    if s.inflight >= s.max_inflight then return reply(req, 429, { status = "busy", inflight = s.inflight }) end
    return reply(req, 200, { status = "ready", inflight = s.inflight })
  end
  if req.path ~= "/" then return reply(req, 404, { error = "not found: POST / takes invocations" }) end
  if req.method ~= "POST" then return reply(req, 405, { error = "POST / takes invocations" }, { Allow = "POST" }) end
  return invoke(s, req)
end

-- Loads the seal key at path; a function never creates one. Returns the
-- keyring or nil, err.
local function load_key(sys, path)
  if not path then return nil, "--seal-key-file is required (the key shared with the coordinator)" end
  local keyring, err, kind = sys.keyring(path, { create = false })
  if not keyring and kind == "missing" then
    return nil, string.format("seal key file %s does not exist: a function never creates a key; "
      .. "give it the coordinator's key (--seal-key-file)", path)
  end
  return keyring, err
end

-- The `replica function` entry point: serves until SIGTERM, then drains.
function faas.main(opts, sys)
  local host, port = listen_of(opts.listen or ("0.0.0.0:" .. (opts.env_port or "8080")))
  if not host then return nil, port end
  local token = opts.token and opts.token:match("^%s*(.-)%s*$")
  if not token or token == "" then
    return nil, string.format("no bearer token: set REPLICA_FUNCTION_TOKEN or put it in %s (--token-file)",
                              opts.token_from)
  end
  local s = { token = token, inflight = 0, running = {}, calls = {}, draining = false, sys = sys }
  local err
  for _, o in ipairs{ { "max_inflight", "--max-inflight", 4, true }, { "drain_timeout", "--drain-timeout", 30 },
                      { "max_body", "--max-body", 1048576, true }, { "max_connections", "--max-connections", 1024, true },
                      { "header_timeout", "--header-timeout", 10 }, { "body_timeout", "--body-timeout", 60 } } do
    s[o[1]], err = positive(opts[o[1]], o[3], o[2], o[4])
    if not s[o[1]] then return nil, err end
  end
  s.keyring, err = load_key(sys, opts.seal_key_file)
  if not s.keyring then return nil, err end
  sys.watchdog{ grace = s.drain_timeout + 5 }
  local server, lerr = sys.listen{
    host = host, port = port, max_body = s.max_body, max_connections = s.max_connections,
    max_per_address = s.max_connections, header_timeout = s.header_timeout, body_timeout = s.body_timeout,
    authorize = function(_, path, header) return authorize(s, path, header) end,
    handler = function(req) return handle(s, req) end,
  }
  if not server then return nil, lerr end
  print(string.format("replica function: listening on %s:%d (token from %s, at most %d in flight)",
                      host, server:port(), opts.token_from, s.max_inflight))
  local signal = task.spawn({ name = "signal" }, function()
    sys.drain_on_signal()
    while time.sleep(3600) do end
  end)
  signal:wait()
  s.draining = true
  log.info("replica function: draining %d invocation(s) (at most %g s)", s.inflight, s.drain_timeout)
  local deadline = time.mono() + s.drain_timeout
  while s.inflight > 0 and time.mono() < deadline do time.sleep(0.05) end
  if s.inflight > 0 then
    log.warn("replica function: drain timeout: cancelling %d invocation(s)", s.inflight)
    for _, c in pairs(s.running) do cancel_call(c, "the drain timeout ran out") end
    local until_ = time.mono() + 2
    while s.inflight > 0 and time.mono() < until_ do time.sleep(0.05) end
  end
  local gone = time.mono() + 1 -- the last responses leave before the server closes
  while server:connections() > 0 and time.mono() < gone do time.sleep(0.02) end
  server:close()
  log.info("replica function: stopped")
  return 0
end

-- `replica function seal`: reads {"url": ..., "username": ..., "password":
-- ..., other credential fields} on stdin and prints the sealed string for an
-- invocation's source.credentials or target.credentials.
function faas.seal_main(opts, sys)
  local keyring, err = load_key(sys, opts.seal_key_file)
  if not keyring then return nil, err end
  local v = json.decode(opts.stdin or "")
  if type(v) ~= "table" or type(v.url) ~= "string" then
    return nil, "stdin must be a JSON object with the registry's url and its credentials, e.g. "
      .. '{"url": "https://registry.example", "username": "u", "password": "p"}'
  end
  local url = v.url
  v.url = nil
  print(keyring:seal(json.encode(v), invocation.aad(url)))
  return 0
end

return faas
