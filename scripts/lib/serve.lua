-- serve.lua - `replica serve`: the daemon. It keeps registries, policies,
-- executions, tasks, stage results, task logs and webhook events in SQLite,
-- serves the HTTP API under /api/v1 (bearer tokens) and its metrics at
-- /metrics (serve/scrape.lua), runs executions (one at a time per policy,
-- later triggers coalesced), fires cron schedules, takes registry webhooks,
-- and at start resumes what a crash interrupted. Retention
-- (serve/retention.lua) keeps the database bounded; every API write is
-- recorded in the audit table (serve/audit.lua).
-- sys (the privileged table: database, HTTP server, keyring) comes from the
-- entry chunk; stage scripts never see it.
local api = require("serve.api")
local bus = require("serve.bus")
local tokens = require("serve.tokens")
local registries = require("serve.registries")
local policies = require("serve.policies")
local executions = require("serve.executions")
local webhooks = require("serve.webhooks")
local catalog_api = require("serve.catalog_api")
local poison = require("serve.poison")
local console = require("serve.console")
local dispatcher = require("serve.dispatcher")
local retention = require("serve.retention")
local audit = require("serve.audit")
local backoff = require("serve.backoff")
local scrape = require("serve.scrape")
local cron = require("cron")
local hostport = require("hostport")
local loglimit = require("loglimit")

-- The host and port of a --listen value (":PORT" means 127.0.0.1).
local function listen_of(s)
  return hostport.parse(s, "127.0.0.1", "127.0.0.1:8787")
end

local serve = {}

local LONG = executions.LONG -- CPU budget of the service's long-lived tasks

local KEY_CHECK = "replica key check" -- sealed under the key, stored in settings
local KEY_CHECK_AAD = "replica:key-check"

-- Loads the key file at key_path and checks that it is the key of database
-- db (at db_path). A new key is created only while the database holds no
-- sealed value; the key check value is written at the first start (or the
-- first start of this version, once a sealed password opened with the key).
-- Returns the keyring, or nil and a message that says what to do.
function serve.load_key(sys, db, db_path, key_path)
  local check, cerr = db:row("SELECT value FROM settings WHERE name = 'key_check'")
  if cerr then return nil, "cannot read the key check value: " .. cerr end
  local sealed, serr = db:row([[SELECT id, password_sealed FROM registries WHERE password_sealed IS NOT NULL
                                ORDER BY id LIMIT 1]])
  if serr then return nil, "cannot read the registries: " .. serr end
  local keyring, err, kind = sys.keyring(key_path, { create = not check and not sealed })
  if not keyring and kind == "missing" then
    return nil, string.format("key file %s does not exist, but the database %s holds values sealed under "
      .. "its key (%s): restore the key file from your backup, or name it with --key-file. "
      .. "No new key is created, since it could not open them", key_path, db_path,
      sealed and "registry passwords" or "its key check value")
  end
  if not keyring then return nil, err end
  local wrong = string.format("key file %s is not the key of the database %s (it cannot open the values "
    .. "sealed there): restore the right key file, or name it with --key-file", key_path, db_path)
  if check then
    if keyring:open(check.value, KEY_CHECK_AAD) ~= KEY_CHECK then return nil, wrong end
    return keyring
  end
  if sealed and not keyring:open(sealed.password_sealed, "registry:" .. sealed.id) then return nil, wrong end
  local ok, ierr = db:exec("INSERT INTO settings (name, value) VALUES ('key_check', ?)",
                           keyring:seal(KEY_CHECK, KEY_CHECK_AAD))
  if not ok then return nil, "cannot store the key check value: " .. tostring(ierr) end
  return keyring
end

local lost_log = loglimit.new(10)

-- Writes the task log lines captured since the last call into task_logs;
-- when the database cannot take them they are lost, and that is logged (at
-- most once every 10 s).
local function flush_logs(s)
  local lines, dropped = s.sys.log_drain()
  if #lines == 0 and dropped == 0 then return end
  local ok, err = s.db:transaction(function()
    for _, l in ipairs(lines) do
      s.db:exec([[INSERT INTO task_logs (task, ts, level, message)
                  SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM tasks WHERE id = ?1)]],
                l.tag, l.ts, l.level, l.message)
    end
    return true
  end)
  if not ok then
    local pass, quiet = lost_log:pass()
    if pass then
      log.warn("%d task log line(s) lost: %s%s", #lines, tostring(err),
               quiet > 0 and string.format(" (%d more such losses not logged)", quiet) or "")
    end
  end
  if dropped > 0 then log.warn("%d task log line(s) dropped: the log buffer was full", dropped) end
end

local REMATCH_EVERY = 5 -- seconds between retries of unmatched webhook events
local REMATCH_AGE = 5   -- an event unmatched this long is retried

-- Fires cron-triggered policies; checks once a second. Every few seconds
-- it also retries the webhook events whose matching failed.
local function cron_loop(s)
  local plans = {}
  local rematch_at = time.mono() + REMATCH_EVERY
  while not s.closing do
    local now = time.now()
    if time.mono() >= rematch_at then
      rematch_at = time.mono() + REMATCH_EVERY
      webhooks.rematch(s, REMATCH_AGE)
    end
    local seen = {}
    local rows = s.db:query("SELECT id, cron FROM policies WHERE trigger = 'cron' AND enabled = 1 AND cron IS NOT NULL")
    for _, r in ipairs(rows or {}) do
      seen[r.id] = true
      local plan = plans[r.id]
      if not plan or plan.expr ~= r.cron then
        local sched, err = cron.parse(r.cron)
        plan = { expr = r.cron, sched = sched, at = sched and sched:next(now) }
        if err then log.warn("policy %d: %s", r.id, err) end
        plans[r.id] = plan
      end
      if plan.at and now >= plan.at then
        local ok, id, coalesced = pcall(executions.trigger, s, r.id, "cron")
        if ok then
          executions.log_for(s, id, "info", "policy %d: cron %q fired: execution %d%s", r.id, plan.expr, id,
                             coalesced and " (coalesced into the queued run)" or "")
        else -- e.g. the database cannot be written: this firing is lost, not the schedule
          log.error("policy %d: cron %q fired, but no execution could be made: %s", r.id, plan.expr, tostring(id))
        end
        plan.at = plan.sched:next(now)
      end
    end
    for id in pairs(plans) do
      if not seen[id] then plans[id] = nil end
    end
    if not time.sleep(1) then return end
  end
end

-- authorize's refusal when the credentials could not be looked up (the
-- database cannot be read): 503, and no failure counted against the client.
local function unreadable(err)
  log.error("credentials cannot be looked up: %s", tostring(err))
  return false, api.unavailable(err) or "the database cannot be read: try again later", nil, 503
end

-- Decides, before a request body is read, whether the request may go on
-- (sys.listen's authorize), for a client at addr. Returns true and the
-- token's name (which the request then carries as req.who), or false, the
-- 401 message and the WWW-Authenticate challenge (none for the webhooks),
-- or false, the message, nil, 429 and the seconds left while addr is
-- blocked for failed authentications (serve/backoff.lua; nothing is
-- checked then), or 503 when the credentials cannot be looked up. A
-- credential sent and found wrong counts as a failure; none sent does not.
-- /metrics takes an API token or the metrics token (serve/scrape.lua).
local function authorize(s, path, header, addr)
  if path == "/api/v1/health" or not (path:find("^/api/") or path == "/metrics") then return true end
  local wait = s.backoff:blocked(addr)
  if wait then
    return false, string.format("too many failed authentications from this address: retry in %d s", wait),
           nil, 429, wait
  end
  if path == "/metrics" then
    local ok, who = scrape.authorize(s, header)
    if ok then return true, who end
    if header and header ~= "" then s.backoff:failed(addr) end
    return false, who, 'Bearer realm="replica"'
  end
  if path:find("^/api/v1/webhooks/") then
    local reg, rerr = webhooks.registry_of(s.db, header)
    if reg then return true end
    if rerr then return unreadable(rerr) end
    if header and header ~= "" then s.backoff:failed(addr) end
    return false, "missing or unknown webhook secret (Authorization header)"
  end
  if path:find("^/api/v1/callbacks/") then
    -- a function's progress: the attempt's token in the path is the secret
    local known, cerr = dispatcher.authorize(s, path)
    if known then return true end
    if cerr then return unreadable(cerr) end
    s.backoff:failed(addr)
    return false, "unknown callback token"
  end
  local who, why, broken = tokens.check(s.db, header)
  if who then return true, who end
  if broken then return unreadable(why) end
  if header and header ~= "" then s.backoff:failed(addr) end
  return false, why, 'Bearer realm="replica"'
end

-- Answers 401 with the message why and the bearer challenge.
local function unauthorized(req, why)
  return req:respond(401, { ["Content-Type"] = "application/json", ["WWW-Authenticate"] = 'Bearer realm="replica"' },
                     json.encode({ error = why }))
end

-- Answers one request: auth, then the router; a write is audited after
-- its answer.
local function handle(s, req)
  local path = req.path
  if path == "/metrics" then
    local ok, why = true, nil
    if not req.who then ok, why = scrape.authorize(s, req:header("authorization")) end
    if not ok then return unauthorized(req, why) end
    return scrape.serve(s, req)
  end
  if not path:find("^/api/") then return console.serve(s.console, req) end
  if path == "/api/v1/health" then
    return api.reply(req, 200, { status = "ok", watchdog = poison.health(s.sys, api.iso) })
  end
  local who = req.who
  if not path:find("^/api/v1/webhooks/") and not path:find("^/api/v1/callbacks/") and not who then
    -- authorize() checked the token before the body was read; this is for
    -- a request it did not see
    local why
    who, why = tokens.check(s.db, req:header("authorization"))
    if not who then return unauthorized(req, why) end
  end
  if path == "/api/v1/events" and req.method == "GET" then return bus.serve(req) end
  local pattern, params = s.router.dispatch(req)
  if audit.wanted(req) then audit.record(s, req, who, pattern, params) end
end

-- Builds the API's router: every module's routes, for the service state s.
function serve.router(s)
  local r = api.router()
  registries.routes(r, s)
  policies.routes(r, s)
  executions.routes(r, s)
  webhooks.routes(r, s)
  catalog_api.routes(r, s)
  require("serve.preview").routes(r, s)
  dispatcher.routes(r, s)
  audit.routes(r, s)
  return r
end

-- The `replica serve` entry point.
function serve.main(opts, sys)
  local path = opts.db or opts.default_db
  local host, port = listen_of(opts.listen or opts.default_listen)
  if not host then return nil, port end
  local max_body = math.tointeger(tonumber(opts.max_body or "1048576"))
  if not max_body or max_body < 1024 then return nil, "--max-body must be at least 1024" end
  local limits = {}
  for _, o in ipairs{ { "max_connections", "--max-connections", 1024, true },
                      { "max_per_address", "--max-per-address", 64, true },
                      { "header_timeout", "--header-timeout", 10 },
                      { "body_timeout", "--body-timeout", 60 } } do
    local v = tonumber(opts[o[1]] or o[3])
    if o[4] then v = math.tointeger(v) end
    if not v or v <= 0 or v ~= v or v > 1e7 then
      return nil, o[2] .. (o[4] and " must be a positive integer" or " must be a positive number of seconds")
    end
    limits[o[1]] = v
  end
  local keep, rerr = retention.config(opts)
  if not keep then return nil, rerr end
  local auth_backoff = tonumber(opts.auth_backoff or "60")
  if not auth_backoff or auth_backoff < 0 or auth_backoff ~= auth_backoff or auth_backoff > 86400 then
    return nil, "--auth-backoff must be a number of seconds from 0 to 86400"
  end
  local db, err = sys.db_open(path)
  if not db then return nil, err end
  if db:readonly() then
    db:close()
    return nil, string.format("the database %s is read-only (its file or its filesystem does not allow "
      .. "writing), and replica serve must write it", path)
  end
  local keyring, kerr = serve.load_key(sys, db, path, opts.key_file or (path .. ".key"))
  if not keyring then
    db:close()
    return nil, kerr
  end
  local s = { db = db, keyring = keyring, sys = sys, running = {}, stop_requested = {},
              retention = keep, deleting = {}, pruning = {},
              backoff = backoff.new{ base = auth_backoff } }
  local ok, ferr = dispatcher.setup(s, opts)
  if ok then ok, ferr = scrape.setup(s, opts) end
  if not ok then
    db:close()
    return nil, ferr
  end
  sys.watchdog{ record = poison.record_path(path) }
  s.flush_logs = function() flush_logs(s) end
  s.router = serve.router(s)
  local cerr
  s.console, cerr = console.load(sys, opts.console or opts.default_console)
  if not s.console then log.warn("the web console is not served: %s", cerr) end

  local admin = tokens.bootstrap(db, sys)
  local server, lerr = sys.listen{
    host = host, port = port, max_body = max_body,
    max_connections = limits.max_connections, max_per_address = limits.max_per_address,
    header_timeout = limits.header_timeout, body_timeout = limits.body_timeout,
    secret_prefix = "/api/v1/callbacks/faas/", -- the attempt's token is the rest of the path
    authorize = function(_, path, header, addr) return authorize(s, path, header, addr) end,
    handler = function(req) return handle(s, req) end,
  }
  if not server then return nil, lerr end
  local url = string.format("http://%s:%d", host:find(":") and ("[" .. host .. "]") or host, server:port())
  print(string.format("replica serve: API at %s/api/v1 (database %s)", url, path))
  dispatcher.listening(s, url)
  if s.console then print(string.format("replica serve: console at %s/", url)) end
  if admin then
    print("replica serve: admin token (shown once; only its hash is stored): " .. admin)
  else
    print("replica serve: the admin token was printed at the first start; "
          .. "'replica token create --db " .. path .. "' makes another")
  end
  sys.log_capture()
  local rok, rerr = pcall(function()
    poison.recover(s)
    executions.recover(s)
    webhooks.recover(s)
  end)
  if not rok and api.unavailable(rerr) then
    server:close()
    db:close()
    return nil, string.format("the database %s cannot be written, so what the last run left cannot be "
      .. "recovered (free some space, or make it writable, and start again): %s", path, tostring(rerr))
  elseif not rok then
    error(rerr, 0)
  end
  local loops = {
    task.spawn({ name = "cron", cpu = LONG }, cron_loop, s),
    task.spawn({ name = "task logs", cpu = LONG }, function()
      while time.sleep(0.25) do flush_logs(s) end
    end),
    task.spawn({ name = "retention", cpu = LONG }, retention.loop, s),
  }
  while time.sleep(3600) do end -- until SIGINT/SIGTERM cancels every task
  s.closing = true
  server:close()
  for _, l in ipairs(loops) do l:cancel() end
  flush_logs(s)
  log.info("replica serve: stopped; unfinished executions resume at the next start")
  db:close()
  return 0
end

return serve
