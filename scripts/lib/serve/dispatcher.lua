-- serve/dispatcher.lua - `replica serve` as a FaaS coordinator: the tasks of
-- a policy whose executor is "faas" go to the gateway (faas/dispatch.lua),
-- at most --faas-concurrency at once across executions. Each dispatch is an
-- attempt, written to task_attempts before it is sent, with a lease that
-- the function's progress callbacks (POST /api/v1/callbacks/faas/{token})
-- renew; a lease that runs out makes the attempt lost, and the task is
-- dispatched again. Only the current attempt of a Running task is heard: a
-- callback or result of any other is refused with {"cancel": true}, which
-- tells the function to stop. See docs/faas.md.
local api = require("serve.api")
local bus = require("serve.bus")
local faas_config = require("faas.config")
local dispatch = require("faas.dispatch")
local runner = require("runner")
local scrape = require("serve.scrape")

local dispatcher = {}

-- A counting semaphore of n slots for tasks: acquire() waits for a slot
-- (false when the waiting task was cancelled), release() frees one, handing
-- it to the longest waiter.
local function semaphore(n)
  local sem = { free = n, waiters = {} }
  function sem.acquire()
    if sem.free > 0 and #sem.waiters == 0 then
      sem.free = sem.free - 1
      return true
    end
    local w = { granted = false }
    w.h = task.spawn({ name = "waiting for a dispatch slot" }, function() time.sleep(1e9) end)
    sem.waiters[#sem.waiters + 1] = w
    w.h:wait()
    if w.granted and not task.cancelled() then return true end
    if w.granted then
      sem.release() -- handed over as this task was cancelled: pass it on
    else
      for i, x in ipairs(sem.waiters) do
        if x == w then table.remove(sem.waiters, i) break end
      end
    end
    return false
  end
  function sem.release()
    local w = table.remove(sem.waiters, 1)
    if not w then
      sem.free = sem.free + 1
      return
    end
    w.granted = true
    w.h:cancel()
  end
  return sem
end

-- Reads the FaaS settings from serve's opts into s.faas (nil when no
-- gateway is set). Returns true or nil, err.
function dispatcher.setup(s, opts)
  -- what the sender of remote stages reads (dispatcher.stage_sender)
  s.stage_opts = { function_token = opts.function_token, function_token_file = opts.function_token_file,
                   seal_key_file = opts.seal_key_file, faas_retries = opts.faas_retries,
                   faas_timeout = opts.faas_timeout }
  local cfg, err = faas_config.read(opts, s.sys, 64)
  if cfg == nil then return nil, err end
  s.default_executor = opts.executor or "local"
  if not cfg then return true end
  local base = opts.callback_url
  if base and not base:find("^https?://[^/]") then return nil, "--callback-url must be an http(s) URL" end
  s.faas = { cfg = cfg, base = base and base:gsub("/+$", ""), slots = semaphore(cfg.concurrency), live = {},
             instance = base64.urlencode(s.sys.random(6)) }
  return true
end

-- Once the API listens at listen_url: the callbacks' base, unless
-- --callback-url named one.
function dispatcher.listening(s, listen_url)
  if not s.faas then return end
  s.faas.base = s.faas.base or listen_url
  local cfg = s.faas.cfg
  log.info("FaaS executor: %s (%s mode, %d tasks in flight at most, lease %g s, callbacks to %s)",
           cfg.gateway, cfg.mode, cfg.concurrency, cfg.lease, s.faas.base)
end

-- Whether path is a callback route whose token names a known attempt (the
-- check made before the body is read); false and the database's error when
-- the attempts cannot be read.
function dispatcher.authorize(s, path)
  local token = path:match("^/api/v1/callbacks/faas/([%w_%-]+)$")
  if not token then return false end
  local row, err = s.db:row("SELECT task FROM task_attempts WHERE callback_hash = ?", digest.sha256(token))
  return row ~= nil, err
end

-- The executor execution policy row p runs with: "local" or "faas".
function dispatcher.executor_of(s, p)
  return p.executor or s.default_executor or "local"
end

-- Checks that template (pinned for the execution) can run on the functions,
-- which run their own bundled scripts: every entry must be bundled. Returns
-- true or nil, err.
local function check_bundled(template, entries)
  for _, e in ipairs(entries) do
    if e.origin ~= "bundled" then
      return nil, string.format("template %s uses %s %s (origin %s): the faas executor runs the functions' "
        .. "bundled scripts only; set the policy's executor to local to run it here", template.name,
        e.kind == "templates" and "template" or "function", e.name, e.origin)
    end
  end
  return true
end

local hooks -- below

-- Prepares execution exec_id of policy p for the faas executor: returns its
-- plan {d (the dispatcher, the sides sealed once), seq (stage name ->
-- template position), fn (stage name -> function), per (task id -> {first,
-- adopt})}, or nil, err. src_spec and dst_spec are the registries' specs
-- (serve/registries.lua); entries are the pinned scripts.
function dispatcher.prepare(s, exec_id, p, opts, template, entries, src_spec, dst_spec)
  if not s.faas then
    return nil, "the policy's executor is faas, but this daemon has no FaaS gateway (start it with --gateway; docs/faas.md)"
  end
  local ok, err = check_bundled(template, entries)
  if not ok then return nil, err end
  local seq, fn = {}, {}
  for i, st in ipairs(template.stages) do
    seq[st.name], fn[st.name] = i, st.fn or st.remote or "?"
  end
  local cfg = s.faas.cfg
  local plan = { seq = seq, fn = fn, per = {}, template = template.name }
  plan.d = dispatch.new{ gateway = cfg.gateway, async_gateway = cfg.async_gateway, token = cfg.token,
    keyring = cfg.keyring, template = template.name, source = src_spec, target = dst_spec,
    options = faas_config.options(opts), retries = p.retries or cfg.retries, timeout = cfg.timeout,
    lease_note = string.format(" for %g s (its callbacks go to %s/api/v1/callbacks/faas/...)", cfg.lease, s.faas.base),
    hooks = hooks(s, exec_id, plan) }
  return plan
end

-- The sender of the remote stages of template (pinned for an execution of
-- policy p, with the policy's options opts and the registries' specs), or
-- false (none, or no token and seal key: a bare POST), or nil, err.
function dispatcher.stage_sender(s, p, opts, template, src_spec, dst_spec)
  local o = setmetatable({ override = opts.override, bandwidth = opts.bandwidth,
                           faas_retries = p.retries or s.stage_opts.faas_retries }, { __index = s.stage_opts })
  return require("replicate").stage_sender(o, s.sys, template, src_spec, dst_spec)
end

-- Ends every running attempt of task_id as status with err (inside a
-- transaction). executions.lua ends local attempts with it too.
function dispatcher.end_attempts(db, task_id, status, err)
  assert(db:exec([[UPDATE task_attempts SET status = ?, finished = ?, error = ?
                   WHERE task = ? AND status = 'running']], status, time.now(), err, task_id))
end

-- The hooks faas/dispatch.lua calls for the tasks t ({id, repository, ...})
-- of execution exec_id (in plan): each attempt is recorded before it is
-- sent, and its lease is kept in s.faas.live.
hooks = function(s, exec_id, plan)
  local db, f = s.db, s.faas
  local h = {}
  function h.begin(row, n)
    if task.cancelled() or s.stop_requested[exec_id] then return nil, "cancelled" end
    local per = plan.per[row.id]
    if per.adopt and per.adopt.attempt == n then
      -- queued by an earlier daemon, with its lease still running: await it
      local a = per.adopt
      assert(db:exec("UPDATE tasks SET status = 'Running' WHERE id = ? AND status IN ('Pending', 'Running')", row.id))
      f.live[row.id] = { attempt = n, exec = exec_id, deadline = time.mono() + (a.lease_until - time.now()),
                         plan = plan, call_id = a.call_id, written = time.mono() }
      log.info("task %d: awaiting attempt %d (call %s), queued before the restart", row.id, n, a.call_id)
      return { adopted = true, call_id = a.call_id }
    end
    local token = base64.urlencode(s.sys.random(24))
    local call_id = string.format("%s-t%d-a%d", f.instance, row.id, n)
    local now, ok = time.now(), false
    assert(db:transaction(function()
      local changed = assert(db:exec([[UPDATE tasks SET status = 'Running', attempts = ?, error = NULL,
                                       finished = NULL, started = coalesce(?, started)
                                       WHERE id = ? AND status IN ('Pending', 'Running')]],
                                     n, n == per.first and now or nil, row.id))
      if changed == 0 then return true end -- stopped meanwhile
      dispatcher.end_attempts(db, row.id, "lost", "superseded by attempt " .. n)
      assert(db:exec("DELETE FROM stage_results WHERE task = ?", row.id)) -- an earlier attempt's
      assert(db:exec([[INSERT INTO task_attempts (task, attempt, executor, mode, status, call_id, callback_hash,
                                                  dispatched, lease_until)
                       VALUES (?, ?, 'faas', ?, 'running', ?, ?, ?, ?)]], row.id, n, f.cfg.mode, call_id,
                     digest.sha256(token), now, now + f.cfg.lease))
      ok = true
      return true
    end))
    if not ok then return nil, "cancelled" end
    f.live[row.id] = { attempt = n, exec = exec_id, deadline = time.mono() + f.cfg.lease, plan = plan,
                       call_id = call_id, written = time.mono() }
    bus.publish("task", { execution = exec_id, task = row.id, status = "Running", repository = row.repository,
                          attempt = n })
    log.info("task %d: attempt %d dispatched to %s (call %s)", row.id, n, f.cfg.gateway, call_id)
    return { call_id = call_id, callback_url = f.base .. "/api/v1/callbacks/faas/" .. token,
             heartbeat = math.max(1, f.cfg.lease / 4), execution = exec_id, task_id = row.id }
  end
  function h.deadline(row, n)
    local l = f.live[row.id]
    if l and l.attempt == n then return l.deadline end
    return time.mono() -- revoked: abandon it now
  end
  function h.await(row, n)
    while true do
      local l = f.live[row.id]
      if not l or l.attempt ~= n then return nil, "the attempt was revoked" end
      if l.result then return l.result end
      local left = l.deadline - time.mono()
      if left <= 0 then
        return nil, string.format("the lease ran out: no news from the function for %g s", f.cfg.lease), true
      end
      l.waker = task.spawn({ name = "await task " .. row.id }, function() time.sleep(left) end)
      l.waker:wait()
      l.waker = nil
      if task.cancelled() then return nil, "cancelled" end
    end
  end
  function h.finish(row, n, outcome, err)
    local l = f.live[row.id]
    if l and l.attempt == n then f.live[row.id] = nil end
    if outcome == "cancelled" and task.cancelled() and not s.stop_requested[exec_id] then
      return -- shutting down: the attempt stays running, and the next start marks it lost
    end
    db:exec([[UPDATE task_attempts SET status = ?, finished = ?, error = ?
              WHERE task = ? AND attempt = ? AND status = 'running']], outcome, time.now(), err, row.id, n)
    if outcome == "lost" then
      bus.publish("task", { execution = exec_id, task = row.id, status = "Running", attempt = n, lost = err })
    end
  end
  return h
end

-- Runs task row of execution exec_id on the functions (the body of the
-- task's child task; see executions.lua's run_task): waits for a dispatch
-- slot, dispatches it through its attempts, and writes the result of the
-- attempt that answered, unless the task stopped meanwhile. st holds
-- executions.lua's writers {save_stages, update_counts, announce}.
function dispatcher.attempt(s, exec_id, row, plan, st)
  local db = s.db
  if not s.faas.slots.acquire() then return end
  local ok, err = pcall(function()
    local per = { first = row.attempts + 1 }
    -- an async attempt queued before a restart, whose lease still runs, is awaited, not sent again
    local a = s.faas.cfg.async_gateway and db:row([[SELECT attempt, call_id, lease_until FROM task_attempts
                                              WHERE task = ? AND attempt = ? AND status = 'running' AND mode = 'async'
                                              AND lease_until > ?]], row.id, row.attempts, time.now())
    if a then per.first, per.adopt = a.attempt, a end
    plan.per[row.id] = per
    local t = { id = row.id, repository = row.repository, dest_repository = row.dest_repository,
                tags = json.decode(row.tags) or {} }
    log.info("task %d: %s -> %s [%s] on the functions", row.id, row.repository, row.dest_repository,
             table.concat(t.tags, ", "))
    local record = plan.d.run(t, per.first)
    if task.cancelled() and not s.stop_requested[exec_id] then return end -- shutdown: resume later
    local status = record.status == "succeeded" and "Succeeded" or "Failed"
    local why = runner.failure(record.stages) or record.error
    if status == "Failed" and not why then why = "the task failed" end
    if status == "Succeeded" then why = nil end
    local saved = false
    assert(db:transaction(function()
      local cur = db:row("SELECT status, attempts FROM tasks WHERE id = ?", row.id)
      if not cur or cur.status ~= "Running" or cur.attempts ~= record.attempts then return true end
      st.save_stages(db, row.id, record.stages)
      assert(db:exec("UPDATE tasks SET status = ?, finished = ?, error = ? WHERE id = ?",
                     status, time.now(), why, row.id))
      st.update_counts(db, exec_id)
      saved = true
      return true
    end))
    if not saved then return end
    for _, r in ipairs(record.stages or {}) do scrape.stage_ended(s, plan.template, r) end
    if why then log.warn("task %d: %s", row.id, why) else log.info("task %d: succeeded in %d attempt(s)", row.id, record.attempts) end
    bus.publish("task", { execution = exec_id, task = row.id, status = status, error = why,
                          attempts = record.attempts })
    st.announce(s, exec_id)
  end)
  plan.per[row.id] = nil
  s.faas.slots.release()
  if not ok then error(err, 0) end
end

-- Revokes the running attempts of execution id's tasks (inside the stop's
-- transaction): their callbacks and results are refused from now on.
function dispatcher.revoke(s, id)
  assert(s.db:exec([[UPDATE task_attempts SET status = 'cancelled', finished = ?, error = 'the execution was stopped'
                     WHERE status = 'running' AND task IN (SELECT id FROM tasks WHERE execution = ?)]],
                   time.now(), id))
  if not s.faas then return end
  local calls = {}
  for task_id, l in pairs(s.faas.live) do
    if l.exec == id then
      calls[#calls + 1] = l.call_id
      s.faas.live[task_id] = nil
    end
  end
  if #calls == 0 then return end
  -- Best effort: through the gateway, an instance that does not run a call
  -- answers 404; the function that runs it also learns of the revocation
  -- from the answer to its next callback.
  local cfg = s.faas.cfg
  task.spawn({ name = "cancel " .. id }, function()
    s.sys.log_execution(id)
    parallel.map(calls, function(call_id)
      local res, err = http.request{ method = "POST", url = cfg.gateway, timeout = 5, follow = false, body = json.encode({ cancel = call_id }),
        headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. cfg.token } }
      log.info("execution %d: cancel of %s: %s", id, call_id, res and ("http " .. res.status) or tostring(err))
      return true
    end, { limit = 8 })
  end)
end

-- At start: attempts left running by an earlier daemon are lost (their
-- tasks go back to Pending and are dispatched again, as the next attempt),
-- except async ones whose lease still runs: those are awaited (their
-- callback URL stays valid).
function dispatcher.recover(s)
  local now = time.now()
  local n = assert(s.db:exec([[UPDATE task_attempts SET status = 'lost', finished = ?,
                                 error = 'the coordinator restarted while it ran'
                               WHERE status = 'running' AND NOT (mode = 'async' AND lease_until > ?)]], now, now))
  if n > 0 then log.info("%d attempt(s) in flight at the last stop are lost; their tasks run again", n) end
end

local STAGE_STATUS = { running = true, succeeded = true, failed = true, skipped = true, cancelled = true }

-- Handles one progress event ev of the current attempt l of task t.
local function progress(s, t, l, ev)
  local db = s.db
  local name = type(ev.stage) == "string" and ev.stage or nil
  local seq = name and l.plan.seq[name]
  local err = type(ev.error) == "string" and ev.error:sub(1, 4096) or nil
  if (ev.event == "stage_start" or ev.event == "stage_end") and seq then
    local status = ev.event == "stage_start" and "running" or (STAGE_STATUS[ev.status] and ev.status or "failed")
    local at = time.now()
    if ev.event == "stage_start" then
      db:exec([[INSERT OR REPLACE INTO stage_results (task, seq, name, function, status, started, function_origin)
                VALUES (?, ?, ?, ?, 'running', ?, 'bundled')]], t.id, seq, name, l.plan.fn[name], at)
    else
      db:exec([[UPDATE stage_results SET status = ?, finished = ?, error = ? WHERE task = ? AND seq = ?]],
              status, at, err or json.null, t.id, seq)
    end
    bus.publish("stage", { execution = t.execution, task = t.id, stage = name, status = status, error = err })
  end
  if math.type(ev.bytes) == "integer" and ev.bytes > (l.bytes or 0) then
    l.bytes = ev.bytes
    bus.publish("bytes", { execution = t.execution, task = t.id, bytes = ev.bytes })
  end
end

-- POST /api/v1/callbacks/faas/{token}: an event of the attempt the token
-- names, or (with X-Function-Status, from OpenFaaS's queue-worker) its
-- result. The current attempt's renews its lease (200); any other gets 409
-- with {"cancel": true}, and a result of it is ignored.
local function callback(s, req, token)
  local db = s.db
  local a = db:row("SELECT task, attempt, status FROM task_attempts WHERE callback_hash = ?", digest.sha256(token))
  if not a then api.fail(404, "no attempt has this callback token") end
  local t = db:row("SELECT id, execution, status, attempts FROM tasks WHERE id = ?", a.task)
  local l = s.faas and s.faas.live[a.task]
  if t and (t.status == "Pending" or t.status == "Running") and t.attempts == a.attempt and a.status == "running"
     and not l then
    -- current, but not awaited yet: an async attempt in the moment after a
    -- restart, before its execution resumed and adopted it
    if req:header("x-function-status") then
      return api.reply_error(req, 503, "the coordinator is resuming; the result cannot be taken yet")
    end
    return api.reply(req, 200, { ok = true })
  end
  if not t or t.status ~= "Running" or t.attempts ~= a.attempt or a.status ~= "running" or not l
     or l.attempt ~= a.attempt then
    local why = not t and "its task was deleted"
      or t.status ~= "Running" and ("its task is " .. t.status)
      or t.attempts ~= a.attempt and string.format("attempt %d superseded it", t.attempts)
      or a.status ~= "running" and ("it is " .. a.status)
      or "the coordinator no longer waits for it"
    local msg = string.format("attempt %d of task %d is not current: %s", a.attempt, a.task, why)
    if req:header("x-function-status") then log.info("a result is ignored: %s", msg) end
    return api.reply(req, 409, { error = msg, cancel = true })
  end
  local fstatus = req:header("x-function-status")
  if fstatus then
    l.result = { status = math.tointeger(tonumber(fstatus)) or 0, body = req.body or "",
                 headers = { ["retry-after"] = req:header("retry-after") } }
    if l.waker then l.waker:cancel() end
    return api.reply(req, 200, { ok = true })
  end
  local ev = api.body(req)
  local now = time.mono()
  l.deadline = now + s.faas.cfg.lease
  if now - l.written >= s.faas.cfg.lease / 4 then
    l.written = now
    db:exec("UPDATE task_attempts SET lease_until = ? WHERE task = ? AND attempt = ?",
            time.now() + s.faas.cfg.lease, a.task, a.attempt)
  end
  progress(s, t, l, ev)
  return api.reply(req, 200, { ok = true })
end

-- GET /api/v1/tasks/{id}/attempts: the task's attempts, oldest first.
local function attempts(s, req, id)
  api.load_row(s.db, "tasks", id, "task")
  local out = setmetatable({}, json.array_mt)
  for _, r in ipairs(assert(s.db:query("SELECT * FROM task_attempts WHERE task = ? ORDER BY attempt", id))) do
    out[#out + 1] = { attempt = r.attempt, executor = r.executor, mode = r.mode, status = r.status,
                      call_id = r.call_id, dispatched = api.iso(r.dispatched),
                      lease_until = r.status == "running" and api.iso(r.lease_until) or nil,
                      finished = api.iso(r.finished), error = r.error }
  end
  return api.reply(req, 200, out)
end

-- Adds the routes to router r.
function dispatcher.routes(r, s)
  r.add("POST", "/api/v1/callbacks/faas/{token}", function(req, p) return callback(s, req, p.token) end)
  r.add("GET", "/api/v1/tasks/{id}/attempts", function(req, p) return attempts(s, req, api.id(p.id, "task")) end)
end

return dispatcher
