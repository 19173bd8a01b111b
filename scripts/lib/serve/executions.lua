-- serve/executions.lua - running policies: executions and their tasks.
--
-- An execution is one run of a policy: either every repository its filters
-- select (scope "all", planned when it starts) or the artifacts named by
-- webhook events (scope "artifacts", tasks added as events arrive). A
-- policy runs one execution at a time; later triggers are coalesced into a
-- single queued (Pending, never started) execution. Every state change is
-- written to SQLite before it is announced, so a restarted daemon resumes
-- the tasks that were in flight (stages are idempotent: HEAD before PUT).
local api = require("serve.api")
local bus = require("serve.bus")
local policies = require("serve.policies")
local registries = require("serve.registries")
local replicate = require("replicate")
local runner = require("runner")
local taskrun = require("taskrun")
local library = require("serve.library")
local validate = require("validate")
local naming = require("naming")
local glob = require("glob")
local dispatcher = require("serve.dispatcher")
local retention = require("serve.retention")
local scrape = require("serve.scrape")

local executions = {}

local LONG = 1e12 -- CPU budget of long-lived service tasks (seconds)
local EXEC_MEMORY = 256 * 1024 * 1024 -- an execution's own memory (its plan), outside the stages
local DB_RETRY = 5 -- seconds before an execution the database could not record is resumed
executions.LONG = LONG

local function decode(s, default)
  if s == nil then return default end
  local ok, v = pcall(json.decode, s)
  if ok and v ~= nil then return v end
  return default
end

local function encode(v)
  local ok, s = pcall(json.encode, v)
  return ok and s or json.encode(tostring(v))
end

-- Recomputes an execution's task counts from its tasks.
local function update_counts(db, id)
  assert(db:exec([[UPDATE executions SET
      total = (SELECT count(*) FROM tasks WHERE execution = ?1),
      succeeded = (SELECT count(*) FROM tasks WHERE execution = ?1 AND status = 'Succeeded'),
      failed = (SELECT count(*) FROM tasks WHERE execution = ?1 AND status = 'Failed'),
      stopped = (SELECT count(*) FROM tasks WHERE execution = ?1 AND status = 'Stopped')
    WHERE id = ?1]], id))
end

-- The versions execution id pinned: the template's ({name, origin,
-- version, sha256}, or json.null before it starts) and its functions'.
local function pinned_view(db, id)
  local tpl, fns = json.null, setmetatable({}, json.array_mt)
  for _, r in ipairs(assert(db:query([[SELECT kind, name, origin, version, sha256 FROM execution_scripts
                                       WHERE execution = ? ORDER BY name]], id))) do
    local v = { name = r.name, origin = r.origin, version = r.version, sha256 = r.sha256 }
    if r.kind == "templates" then tpl = v else fns[#fns + 1] = v end
  end
  return tpl, fns
end

-- The API view of an execution row (with db, also the versions it runs).
function executions.view(row, db)
  local tpl, fns
  if db then tpl, fns = pinned_view(db, row.id) end
  return {
    draft = row.draft == 1, template = tpl, functions = fns,
    id = row.id, policy = row.policy, status = row.status, trigger = row.trigger, scope = row.scope,
    total = row.total, succeeded = row.succeeded, failed = row.failed, stopped = row.stopped,
    in_progress = row.total - row.succeeded - row.failed - row.stopped,
    triggers = row.triggers, created = api.iso(row.created), started = api.iso(row.started),
    finished = api.iso(row.finished),
    error = row.error,
  }
end

local function load(db, id)
  return api.load_row(db, "executions", id, "execution")
end

-- Publishes an execution's current state on the progress stream.
local function announce(s, id)
  local row = s.db:row("SELECT * FROM executions WHERE id = ?", id)
  if not row then return end
  local v = executions.view(row, s.db)
  v.execution = row.id -- the key ?execution= subscribers filter on
  bus.publish("execution", v)
end

-- The API view of a task row with its stage results in template order.
local function task_view(db, row)
  local stages = setmetatable({}, json.array_mt)
  for _, r in ipairs(assert(db:query("SELECT * FROM stage_results WHERE task = ? ORDER BY seq", row.id))) do
    stages[#stages + 1] = { name = r.name, ["function"] = r["function"], status = r.status,
                            function_version = r.function_version, function_origin = r.function_origin,
                            started = api.iso(r.started), finished = api.iso(r.finished),
                            output = decode(r.output, nil), error = r.error, attempts = r.attempts }
  end
  return {
    id = row.id, execution = row.execution, kind = row.kind, repository = row.repository,
    dest_repository = row.dest_repository, tags = setmetatable(decode(row.tags, {}), json.array_mt),
    status = row.status, attempts = row.attempts, started = api.iso(row.started),
    finished = api.iso(row.finished),
    error = row.error, stages = stages,
  }
end

-- The policy's queued execution (Pending and never started), which new
-- triggers join, or nil.
local function queued(db, policy_id)
  return db:row([[SELECT id, scope FROM executions WHERE policy = ? AND status = 'Pending'
                  AND started IS NULL AND draft = 0 ORDER BY id LIMIT 1]], policy_id)
end

-- Queues a run of the whole policy (manual or cron trigger). A queued run
-- that has not started absorbs the trigger. Returns the execution id and
-- whether it was coalesced.
function executions.trigger(s, policy_id, trigger)
  local db = s.db
  local id, coalesced
  assert(db:transaction(function()
    local pending = queued(db, policy_id)
    if pending then
      id, coalesced = pending.id, true
      if pending.scope == "artifacts" then
        -- a full run copies everything: the queued copies are covered
        assert(db:exec("DELETE FROM tasks WHERE execution = ? AND kind = 'copy'", id))
        assert(db:exec("UPDATE executions SET scope = 'all', planned = 0 WHERE id = ?", id))
      end
      assert(db:exec("UPDATE executions SET triggers = triggers + 1 WHERE id = ?", id))
      update_counts(db, id)
    else
      local _, rowid = assert(db:exec([[INSERT INTO executions (policy, status, trigger, scope, planned, created)
                                        VALUES (?, 'Pending', ?, 'all', 0, ?)]], policy_id, trigger, time.now()))
      id = rowid
    end
    return true
  end))
  announce(s, id)
  executions.kick(s, policy_id)
  return id, coalesced
end

-- Whether an event's artifact passes a policy's filters.
local function selects(p, ev)
  local opts = policies.options(p)
  if not glob.filter(opts.repos, opts.exclude_repos)(ev.repository) then return false end
  if ev.tag and not glob.filter(opts.tags, opts.exclude_tags)(ev.tag) then return false end
  if not ev.tag and ev.action == "push" then return false end
  return true
end

-- Adds one webhook event's artifact to the policy's queued execution
-- (creating it), coalescing per repository. Must run inside a transaction.
-- Returns the execution id, or nil and why the event does not apply.
function executions.add_artifact(s, p, ev)
  local db = s.db
  if ev.action == "delete" and p.replicate_deletion ~= 1 then
    return nil, "policy does not replicate deletions"
  end
  if not selects(p, ev) then
    return nil, ev.tag and "filtered out" or "push by digest carries no tag"
  end
  local kind = ev.action == "delete" and "delete" or "copy"
  local ref = ev.tag
  if kind == "delete" then
    ref = ev.tag and ev.digest and (ev.tag .. "@" .. ev.digest) or ev.tag or ev.digest
    if not ref then return nil, "deletion names neither tag nor digest" end
  end
  local dest, nerr = naming.destination(ev.repository, p.dest_namespace, p.flatten)
  if not dest then return nil, nerr end
  local pending = queued(db, p.id)
  local id
  if pending then
    id = pending.id
    assert(db:exec("UPDATE executions SET triggers = triggers + 1 WHERE id = ?", id))
    if pending.scope == "all" and kind == "copy" then return id end
  else
    local _, rowid = assert(db:exec([[INSERT INTO executions (policy, status, trigger, scope, planned, created)
                                      VALUES (?, 'Pending', 'event', 'artifacts', 1, ?)]], p.id, time.now()))
    id = rowid
  end
  -- The latest event for a tag wins: drop it from the other kind's task.
  local tagname = ref:match("^([^@]+)@") or ref
  local other = db:row("SELECT id, tags FROM tasks WHERE execution = ? AND repository = ? AND kind = ?",
                       id, ev.repository, kind == "copy" and "delete" or "copy")
  if other then
    local keep = {}
    for _, r in ipairs(decode(other.tags, {})) do
      if (r:match("^([^@]+)@") or r) ~= tagname then keep[#keep + 1] = r end
    end
    if #keep == 0 then
      assert(db:exec("DELETE FROM tasks WHERE id = ?", other.id))
    else
      assert(db:exec("UPDATE tasks SET tags = ? WHERE id = ?", json.encode(keep), other.id))
    end
  end
  local t = db:row("SELECT id, tags FROM tasks WHERE execution = ? AND repository = ? AND kind = ?",
                   id, ev.repository, kind)
  if t then
    local refs, seen = decode(t.tags, {}), false
    for _, r in ipairs(refs) do seen = seen or r == ref end
    if not seen then
      refs[#refs + 1] = ref
      assert(db:exec("UPDATE tasks SET tags = ? WHERE id = ?", json.encode(refs), t.id))
    end
  else
    assert(db:exec([[INSERT INTO tasks (execution, kind, repository, dest_repository, tags, status)
                     VALUES (?, ?, ?, ?, ?, 'Pending')]], id, kind, ev.repository, dest, json.encode({ ref })))
  end
  update_counts(db, id)
  return id
end

-- Writes a task's stage results (all of them, in template order).
local function save_stages(db, task_id, results)
  assert(db:exec("DELETE FROM stage_results WHERE task = ?", task_id))
  for i, r in ipairs(results) do
    assert(db:exec([[INSERT INTO stage_results (task, seq, name, function, status, started, finished, output, error,
                                                function_version, function_origin, attempts)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)]], task_id, i, r.name, r["function"] or "?", r.status,
                   r.started, r.finished, r.output ~= nil and encode(r.output) or nil, r.error,
                   r.function_version, r.function_origin, math.tointeger(r.attempts)))
  end
end

-- One attempt at a task: runs it through the template and writes its
-- status and stage results, unless the daemon is shutting down (then it
-- stays Running and is resumed at the next start). The body of the task's
-- own child task (see run_task).
local function attempt(s, exec_id, row, env)
  local db = s.db
  s.sys.task_log(row.id)
  assert(db:transaction(function()
    assert(db:exec([[UPDATE tasks SET status = 'Running', attempts = attempts + 1, started = ?,
                     finished = NULL, error = NULL WHERE id = ?]], time.now(), row.id))
    assert(db:exec("DELETE FROM stage_results WHERE task = ?", row.id)) -- an earlier attempt's
    dispatcher.end_attempts(db, row.id, "lost", "superseded")
    assert(db:exec([[INSERT INTO task_attempts (task, attempt, executor, status, dispatched)
                     SELECT id, attempts, 'local', 'running', ? FROM tasks WHERE id = ?]], time.now(), row.id))
    return true
  end))
  bus.publish("task", { execution = exec_id, task = row.id, status = "Running", repository = row.repository })
  local t = { id = row.id, kind = row.kind, repository = row.repository,
              dest_repository = row.dest_repository, tags = decode(row.tags, {}) }
  local bytes, last = 0, 0
  local ctx = { task = t, src = env.src, dst = env.dst, options = env.opts, run = env.run, data = {},
                progress = function(kind, v)
                  if kind == "bytes" then
                    bytes = bytes + v
                    local now = time.mono()
                    if now - last >= 0.5 then
                      last = now
                      bus.publish("bytes", { execution = exec_id, task = row.id, bytes = bytes })
                    end
                  end
                end }
  log.info("task %d: %s %s -> %s [%s]", row.id, row.kind, row.repository, row.dest_repository,
           table.concat(t.tags, ", "))
  local seq = {}
  for i, st in ipairs(row.kind == "delete" and env.template.delete_stages or env.template.stages) do
    seq[st.name] = i
  end
  local results, ok = runner.run(env.template, ctx, function(ev, name, r)
    if ev == "start" then
      -- visible while it runs; the final results replace these rows
      db:exec([[INSERT OR REPLACE INTO stage_results (task, seq, name, function, status, started,
                                                     function_version, function_origin)
                VALUES (?, ?, ?, ?, 'running', ?, ?, ?)]], row.id, seq[name] or 0, name, r["function"] or "?",
              r.started, r.function_version, r.function_origin)
      bus.publish("stage", { execution = exec_id, task = row.id, stage = name, status = "running" })
    else
      if not task.cancelled() then
        db:exec([[UPDATE stage_results SET status = ?, finished = ?, output = ?, error = ?
                  WHERE task = ? AND seq = ?]], r.status, r.finished,
                r.output ~= nil and encode(r.output) or json.null, r.error or json.null, row.id, seq[name] or 0)
      end
      scrape.stage_ended(s, env.template.name, r)
      log.info("stage %s %s%s", name, r.status, r.error and (": " .. r.error) or "")
      bus.publish("stage", { execution = exec_id, task = row.id, stage = name, status = r.status,
                             error = r.error })
    end
  end, env.remote_stages)
  s.sys.task_log(0)
  if task.cancelled() and not s.stop_requested[exec_id] then return end -- shutdown: resume later
  local status, err = ok and "Succeeded" or "Failed", runner.failure(results)
  if bytes > 0 then bus.publish("bytes", { execution = exec_id, task = row.id, bytes = bytes }) end
  assert(db:transaction(function()
    save_stages(db, row.id, results)
    if not s.stop_requested[exec_id] then
      assert(db:exec("UPDATE tasks SET status = ?, finished = ?, error = ? WHERE id = ? AND status = 'Running'",
                     status, time.now(), err, row.id))
      dispatcher.end_attempts(db, row.id, ok and "succeeded" or "failed", err)
      update_counts(db, exec_id)
    end
    return true
  end))
  bus.publish("task", { execution = exec_id, task = row.id,
                        status = s.stop_requested[exec_id] and "Stopped" or status, error = err })
  announce(s, exec_id)
end

-- Marks a task that has not ended Failed with err (a stopped or finished
-- task is left alone), and its stage still running failed. Raises on a
-- database error.
local function fail_task(s, exec_id, task_id, err)
  local db, now, n = s.db, time.now(), 0
  assert(db:transaction(function()
    n = assert(db:exec([[UPDATE tasks SET status = 'Failed', finished = ?, error = ?
                         WHERE id = ? AND status IN ('Pending', 'Running')]], now, err, task_id))
    assert(db:exec([[UPDATE stage_results SET status = 'failed', finished = ?, error = ?
                     WHERE task = ? AND status = 'running']], now, err, task_id))
    dispatcher.end_attempts(db, task_id, "failed", err)
    update_counts(db, exec_id)
    return true
  end))
  if n == 0 then return end
  log.warn("task %d failed: %s", task_id, err)
  bus.publish("task", { execution = exec_id, task = task_id, status = "Failed", error = err })
  announce(s, exec_id)
end

-- What serve/dispatcher.lua writes a remote task's result with.
local WRITERS = { save_stages = save_stages, update_counts = update_counts, announce = announce }

-- Runs one task in a child task of its own, so that however the attempt
-- ends (an error, a database error, a CPU or memory kill that no pcall
-- contains) the task gets a final state: Failed with the reason, unless
-- the execution was stopped or the daemon is shutting down. When the
-- database cannot be written (a full disk) the task is left unfinished and
-- env.db_down set to the error, so that the execution runs it again once
-- it can (tasks not started yet by then are left for that run). Never
-- raises.
local function run_task(s, exec_id, row, env)
  if env.db_down then return end -- another task found the database unwritable: wait for the retry
  local ok, done, why = pcall(function()
    local h = env.faas and row.kind == "copy"
      and task.spawn({ name = "task " .. row.id }, dispatcher.attempt, s, exec_id, row, env.faas, WRITERS)
      or task.spawn({ name = "task " .. row.id }, attempt, s, exec_id, row, env)
    return h:join() -- even when stopped: the attempt has ended when this returns
  end)
  if ok and done then return end -- the attempt wrote the task's state
  if task.cancelled() then return end -- stopped (recorded) or shutting down (resumed later)
  local err = ok and why or done
  if api.unavailable(err) then
    env.db_down = tostring(err)
    log.warn("task %d: its result cannot be written, it runs again once the database can be: %s",
             row.id, env.db_down)
    return
  end
  local msg = "task aborted: " .. tostring(err)
  local prev = s.sys.task_log(row.id)
  local fok, ferr = pcall(fail_task, s, exec_id, row.id, msg)
  if not fok then log.error("task %d: %s; it could not be recorded: %s", row.id, msg, tostring(ferr)) end
  s.sys.task_log(prev)
end

-- Marks the tasks of execution id that are still Pending or Running
-- Failed ("the task ended without a result: why") and recomputes its
-- counts. Must run inside a transaction; returns how many it marked.
local function fail_unfinished(db, id, why)
  local n = assert(db:exec([[UPDATE tasks SET status = 'Failed', finished = ?, error = ?
                             WHERE execution = ? AND status IN ('Pending', 'Running')]],
                           time.now(), "the task ended without a result: " .. why, id))
  update_counts(db, id)
  return n
end

-- The final status of an execution whose tasks all ended, from its counts
-- (a row of executions): never Succeeded while a task is not.
local function final_status(c)
  if c.failed > 0 then return "Failed" end
  if c.stopped > 0 then return "Stopped" end
  if c.succeeded == c.total then return "Succeeded" end
  return "Failed"
end

-- Ends an execution with an error (planning failed, a registry is gone);
-- tasks it had not run are Failed too, so that retry runs them.
local function fail_execution(s, id, msg)
  log.warn("execution %d failed: %s", id, msg)
  assert(s.db:transaction(function()
    local e = s.db:row("SELECT status FROM executions WHERE id = ?", id)
    if not e or e.status ~= "Running" then return true end
    fail_unfinished(s.db, id, msg)
    assert(s.db:exec("UPDATE executions SET status = 'Failed', error = ?, finished = ? WHERE id = ?",
                     msg, time.now(), id))
    return true
  end))
  announce(s, id)
end

-- The template execution id runs, every entry of it pinned: at the first
-- start the live versions are pinned (a draft's own sources were pinned
-- when it was made), and from then on, across restarts and retries, the
-- execution runs exactly those sources. Returns the template or nil, err.
function executions.pinned_template(s, id, name)
  local db = s.db
  local template, terr = runner.template(name, library.execution_set(db, id))
  if not template then return nil, terr end
  local ok, perr = db:transaction(function() return library.pin(db, id, library.entries_of(template)) end)
  if not ok then return nil, "cannot pin the versions it runs: " .. tostring(perr) end
  return runner.template(name, library.execution_set(db, id))
end

-- Runs execution id to completion (the body of an execution task).
local function run_execution(s, id)
  local db = s.db
  local e = db:row("SELECT * FROM executions WHERE id = ?", id)
  if not e or (e.status ~= "Pending" and e.status ~= "Running") then return end
  assert(db:exec("UPDATE executions SET status = 'Running', started = coalesce(started, ?), finished = NULL WHERE id = ?",
                 time.now(), id))
  announce(s, id)
  local p = db:row("SELECT * FROM policies WHERE id = ?", e.policy)
  if not p then return fail_execution(s, id, "the policy was deleted") end
  local opts = policies.options(p)
  local template, terr = executions.pinned_template(s, id, p.template)
  if not template then return fail_execution(s, id, terr) end
  local src_row = db:row("SELECT * FROM registries WHERE id = ?", p.src_registry)
  local dst_row = db:row("SELECT * FROM registries WHERE id = ?", p.dst_registry)
  if not src_row or not dst_row then return fail_execution(s, id, "a registry of the policy was deleted") end
  local src_spec, serr = registries.spec(s, src_row)
  if not src_spec then return fail_execution(s, id, serr) end
  local dst_spec, derr = registries.spec(s, dst_row)
  if not dst_spec then return fail_execution(s, id, derr) end
  local src, cerr = registries.client(s, src_row, nil, src_spec)
  if not src then return fail_execution(s, id, cerr) end
  local dst
  dst, cerr = registries.client(s, dst_row, { max_speed = opts.bandwidth }, dst_spec)
  if not dst then return fail_execution(s, id, cerr) end
  local remote, limit = nil, p.jobs
  local stage_sender, sterr = dispatcher.stage_sender(s, p, opts, template, src_spec, dst_spec)
  if stage_sender == nil then return fail_execution(s, id, sterr) end
  if dispatcher.executor_of(s, p) == "faas" then
    local rerr
    remote, rerr = dispatcher.prepare(s, id, p, opts, template, library.entries_of(template), src_spec, dst_spec)
    if not remote then return fail_execution(s, id, rerr) end
    limit = s.faas.cfg.concurrency -- the daemon-wide slots bound it
    log.info("execution %d: tasks run on the functions at %s", id, s.faas.cfg.gateway)
  end

  if e.planned == 0 then
    local planned, perr = replicate.plan(src, opts)
    if task.cancelled() then return end
    if not planned then return fail_execution(s, id, perr) end
    assert(db:transaction(function()
      for _, t in ipairs(planned) do
        assert(db:exec([[INSERT INTO tasks (execution, kind, repository, dest_repository, tags, status)
                         VALUES (?, 'copy', ?, ?, ?, 'Pending')]], id, t.repository, t.dest_repository,
                       json.encode(t.tags)))
      end
      assert(db:exec("UPDATE executions SET planned = 1 WHERE id = ?", id))
      update_counts(db, id)
      return true
    end))
    log.info("execution %d: %d repositories planned", id, #planned)
    announce(s, id)
  end

  local rows = assert(db:query([[SELECT * FROM tasks WHERE execution = ? AND status IN ('Pending', 'Running')
                                 ORDER BY kind = 'delete', id]], id))
  local env = { src = src, dst = dst, opts = opts, template = template,
                run = taskrun.shared(), faas = remote, remote_stages = stage_sender or nil }
  local done, merr = parallel.map(rows, function(row)
    run_task(s, id, row, env)
    return true
  end, { limit = limit })
  if task.cancelled() then return end -- stopped (already recorded) or shutting down
  if env.db_down then error(env.db_down, 0) end -- unfinished tasks stay so: see kick
  if not done then log.error("execution %d: a worker ended early: %s", id, tostring(merr)) end
  local c
  assert(db:transaction(function()
    local n = fail_unfinished(db, id, done and "no final state was written" or tostring(merr))
    if n > 0 then log.warn("execution %d: %d task(s) ended without a result", id, n) end
    c = db:row("SELECT failed, stopped, total, succeeded FROM executions WHERE id = ?", id)
    assert(db:exec("UPDATE executions SET status = ?, finished = ? WHERE id = ? AND status = 'Running'",
                   final_status(c), time.now(), id))
    return true
  end))
  log.info("execution %d %s: %d/%d tasks succeeded", id, final_status(c), c.succeeded, c.total)
  announce(s, id)
end

-- Logs one line at level ("info", "warn", "error") on behalf of execution
-- id from a task that is not the execution's (a request, the cron loop):
-- in JSON logs it carries replica_execution = id.
function executions.log_for(s, id, level, fmt, ...)
  local prev = s.sys.log_execution(id)
  local ok, err = pcall(log[level], fmt, ...)
  s.sys.log_execution(prev)
  if not ok then error(err, 2) end
end

-- Starts the policy's next execution unless one of its runs is in flight.
function executions.kick(s, policy_id)
  if s.running[policy_id] or s.closing then return end
  local row = s.db:row([[SELECT id FROM executions WHERE policy = ? AND status IN ('Pending', 'Running')
                         ORDER BY status = 'Running' DESC, id LIMIT 1]], policy_id)
  if not row then return end
  local slot = { execution = row.id }
  s.running[policy_id] = slot
  slot.handle = task.spawn({ name = "execution " .. row.id, cpu = LONG }, function()
    s.sys.log_execution(row.id) -- its lines and its tasks' carry replica_execution
    -- The body runs in a child task: a CPU or memory kill, which no pcall
    -- contains, ends the child, and this task still records the outcome.
    local ok, err = pcall(function()
      local h = task.spawn({ name = "execution " .. row.id .. " body", cpu = LONG, memory = EXEC_MEMORY },
                           run_execution, s, row.id)
      local done, why = h:join() -- even when stopped: the body has ended when this returns
      if not done then error(why, 0) end
    end)
    if not ok and api.unavailable(err) then
      -- the database cannot be written (a full disk): what is unfinished
      -- stays so, and the execution is resumed later, as after a crash
      log.warn("execution %d: the database cannot be written; it resumes in %d s: %s", row.id,
               DB_RETRY, tostring(err))
      time.sleep(DB_RETRY) -- returns early when the execution is stopped or the daemon stops
    elseif not ok then
      log.error("execution %d: %s", row.id, tostring(err))
      -- stopped (recorded) or shutting down (resumed at the next start)
      if not task.cancelled() then pcall(fail_execution, s, row.id, "internal error: " .. tostring(err)) end
    end
    s.running[policy_id] = nil
    if not s.closing and not task.cancelled() then
      retention.ended(s, policy_id)
      executions.kick(s, policy_id)
    end
  end)
end

-- Stops an execution: its tasks become Stopped at once and their transfers
-- are cancelled. Returns the updated row; raises 409 when it is finished.
function executions.stop(s, id)
  local db = s.db
  local e = load(db, id)
  if e.status ~= "Pending" and e.status ~= "Running" then
    api.fail(409, "execution %d is already %s", id, e.status)
  end
  local now = time.now()
  assert(db:transaction(function()
    assert(db:exec("UPDATE tasks SET status = 'Stopped', finished = ? WHERE execution = ? AND status IN ('Pending', 'Running')",
                   now, id))
    dispatcher.revoke(s, id)
    update_counts(db, id)
    assert(db:exec("UPDATE executions SET status = 'Stopped', finished = ? WHERE id = ?", now, id))
    return true
  end))
  -- only once it is recorded (the transaction cannot yield, so no task runs
  -- in between): a stop the database refused must not silence the run
  s.stop_requested[id] = true
  local slot = s.running[e.policy]
  if slot and slot.execution == id then
    slot.handle:cancel()
    -- the cancelled runner cannot start the next run itself
    task.spawn({ name = "after stop " .. id }, function()
      slot.handle:wait()
      executions.kick(s, e.policy)
    end)
  end
  retention.ended(s, e.policy)
  announce(s, id)
  return load(db, id)
end

-- Re-runs the failed and stopped tasks of a finished execution.
function executions.retry(s, id)
  local db = s.db
  local e = load(db, id)
  if e.status == "Pending" or e.status == "Running" then
    api.fail(409, "execution %d is still %s", id, e.status)
  end
  if s.deleting[id] then api.fail(409, "execution %d is being deleted (retention)", id) end
  local n
  assert(db:transaction(function()
    n = assert(db:exec([[UPDATE tasks SET status = 'Pending', finished = NULL, error = NULL
                         WHERE execution = ? AND status IN ('Failed', 'Stopped')]], id))
    if n == 0 and e.planned == 1 then api.fail(409, "execution %d has no failed tasks to retry", id) end
    update_counts(db, id)
    assert(db:exec("UPDATE executions SET status = 'Pending', finished = NULL, error = NULL WHERE id = ?", id))
    return true
  end))
  s.stop_requested[id] = nil
  announce(s, id)
  executions.kick(s, e.policy)
  return n
end

-- At start, repairs what an older daemon left: tasks Pending or Running
-- under a finished execution become Failed, and that execution's counts
-- and status are derived again (so retry works on it).
local function repair(db)
  local rows = assert(db:query([[SELECT id FROM executions WHERE status NOT IN ('Pending', 'Running')
                                 AND id IN (SELECT execution FROM tasks WHERE status IN ('Pending', 'Running'))]]))
  if #rows == 0 then return end
  local n = 0
  assert(db:transaction(function()
    for _, e in ipairs(rows) do
      n = n + fail_unfinished(db, e.id, "it was left unfinished under a finished execution")
      local c = db:row("SELECT failed, stopped, total, succeeded FROM executions WHERE id = ?", e.id)
      assert(db:exec("UPDATE executions SET status = ?, finished = coalesce(finished, ?) WHERE id = ?",
                     final_status(c), time.now(), e.id))
    end
    return true
  end))
  log.warn("repaired %d unfinished task(s) of %d finished execution(s): they are Failed now, and retry runs them",
           n, #rows)
end

-- At start: repairs finished executions with unfinished tasks; tasks that
-- were Running when the daemon died go back to Pending, and every policy
-- with unfinished executions is started again.
function executions.recover(s)
  local db = s.db
  repair(db)
  dispatcher.recover(s)
  local n = assert(db:exec([[UPDATE tasks SET status = 'Pending' WHERE status = 'Running'
                             AND execution IN (SELECT id FROM executions WHERE status IN ('Pending', 'Running'))]]))
  local pols = assert(db:query("SELECT DISTINCT policy FROM executions WHERE status IN ('Pending', 'Running')"))
  if #pols > 0 then
    log.info("resuming %d unfinished execution(s) (%d task(s) were in flight)", #pols, n)
  end
  for _, r in ipairs(pols) do executions.kick(s, r.policy) end
end

-- POST /policies/{id}/executions with template_source or
-- function_overrides: a draft run of policy row pol with edited, unsaved
-- sources. Each is validated as a save would be (400 with diagnostics);
-- they are pinned to the new execution with origin "draft", and never
-- stored as versions. A draft never joins a queued run.
function executions.draft(s, req, pol, body)
  local db = s.db
  local entries = {}
  local overrides = body.function_overrides or {}
  if type(overrides) ~= "table" or #overrides > 0 then api.fail(400, "field 'function_overrides' must be an object") end
  for name, src in pairs(overrides) do
    if type(name) ~= "string" or not name:match("^[%w_%-]+/[%w_%-]+$") then
      api.fail(400, "field 'function_overrides': %s is not a function name (kind/name)", tostring(name))
    end
    if type(src) ~= "string" then api.fail(400, "field 'function_overrides': %s must be Lua source text", name) end
    entries[#entries + 1] = { kind = "stages", name = name, origin = "draft", version = 0, source = src,
                              sha256 = digest.sha256(src) }
  end
  if body.template_source then
    entries[#entries + 1] = { kind = "templates", name = pol.template, origin = "draft", version = 0,
                              source = body.template_source, sha256 = digest.sha256(body.template_source) }
  end
  local scriptset = require("scriptset")
  local set = scriptset.overlay(library.set(db), scriptset.of(entries))
  for _, e in ipairs(entries) do
    local what = e.kind == "stages" and "function" or "template"
    local diags = validate.source(what, e.name, e.source, set)
    if #diags > 0 then
      return api.reply(req, 400, {
        error = string.format("draft %s %s does not validate: line %d: %s", what, e.name, diags[1].line, diags[1].message),
        diagnostics = setmetatable(diags, json.array_mt), ["function"] = e.kind == "stages" and e.name or nil })
    end
  end
  local _, terr = runner.template(pol.template, set)
  if terr then api.fail(400, "the draft's template does not load: %s", terr) end
  local id
  assert(db:transaction(function()
    local _, rowid = assert(db:exec([[INSERT INTO executions (policy, status, trigger, scope, planned, created, draft)
                                      VALUES (?, 'Pending', 'manual', 'all', 0, ?, 1)]], pol.id, time.now()))
    id = rowid
    assert(library.pin(db, id, entries))
    return true
  end))
  executions.log_for(s, id, "info", "execution %d: a draft run of policy %d by %s (%d edited source(s))", id, pol.id,
                     tostring(req.who), #entries)
  announce(s, id)
  executions.kick(s, pol.id)
  return api.reply(req, 202, { id = id, coalesced = false, draft = true })
end

local STATUSES = { Pending = true, Running = true, Succeeded = true, Failed = true, Stopped = true }
local TRIGGERS = { manual = true, cron = true, event = true }

-- The WHERE clause and its arguments for GET /executions's filters:
-- ?policy=ID, ?trigger=manual|cron|event, ?draft=true|false and (when
-- with_status) ?status=. Raises 400 for a bad value.
local function execution_filters(req, with_status)
  local q = req.query or {}
  local where, args = {}, {}
  if q.policy then
    where[#where + 1] = "policy = ?"
    args[#args + 1] = math.tointeger(tonumber(q.policy)) or api.fail(400, "policy must be an id")
  end
  if q.trigger then
    if not TRIGGERS[q.trigger] then api.fail(400, "trigger must be manual, cron or event") end
    where[#where + 1] = "trigger = ?"
    args[#args + 1] = q.trigger
  end
  if q.draft then
    if q.draft ~= "true" and q.draft ~= "false" then api.fail(400, "draft must be true or false") end
    where[#where + 1] = "draft = ?"
    args[#args + 1] = q.draft == "true" and 1 or 0
  end
  if with_status and q.status then
    if not STATUSES[q.status] then api.fail(400, "status must be Pending, Running, Succeeded, Failed or Stopped") end
    where[#where + 1] = "status = ?"
    args[#args + 1] = q.status
  end
  return #where > 0 and (" WHERE " .. table.concat(where, " AND ")) or "", args
end

-- Adds the routes to router r.
function executions.routes(r, s)
  r.add("POST", "/api/v1/policies/{id}/executions", function(req, p)
    local pid = api.id(p.id, "policy")
    local pol = policies.load(s.db, pid)
    if pol.enabled ~= 1 then api.fail(409, "policy %d is disabled", pid) end
    local body = {}
    if req.body and req.body ~= "" then
      body = api.validate(api.body(req), { template_source = { type = "string" },
                                           function_overrides = { type = "object" } })
    end
    if body.template_source or body.function_overrides then
      return executions.draft(s, req, pol, body)
    end
    local id, coalesced = executions.trigger(s, pid, "manual")
    return api.reply(req, 202, { id = id, coalesced = coalesced or false })
  end)
  r.add("GET", "/api/v1/executions", function(req)
    local limit, offset = api.paging(req)
    local where, args = execution_filters(req, true)
    local total = s.db:row("SELECT count(*) AS n FROM executions" .. where, table.unpack(args, 1, #args)).n
    args[#args + 1] = limit
    args[#args + 1] = offset
    local out = setmetatable({}, json.array_mt)
    for _, row in ipairs(assert(s.db:query("SELECT * FROM executions" .. where .. " ORDER BY id DESC LIMIT ? OFFSET ?",
                                           table.unpack(args, 1, #args)))) do
      out[#out + 1] = executions.view(row, s.db)
    end
    return req:respond(200, { ["Content-Type"] = "application/json", ["X-Total-Count"] = tostring(total) },
                       json.encode(out))
  end)
  r.add("GET", "/api/v1/executions/counts", function(req)
    local where, args = execution_filters(req, false)
    local out = { total = 0, by_status = { Pending = 0, Running = 0, Succeeded = 0, Failed = 0, Stopped = 0 } }
    for _, row in ipairs(assert(s.db:query("SELECT status, count(*) AS n FROM executions" .. where .. " GROUP BY status",
                                           table.unpack(args, 1, #args)))) do
      out.by_status[row.status] = row.n
      out.total = out.total + row.n
    end
    return api.reply(req, 200, out)
  end)
  r.add("GET", "/api/v1/executions/{id}", function(req, p)
    return api.reply(req, 200, executions.view(load(s.db, api.id(p.id, "execution")), s.db))
  end)
  r.add("GET", "/api/v1/executions/{id}/tasks", function(req, p)
    local id = api.id(p.id, "execution")
    load(s.db, id)
    local limit, offset = api.paging(req)
    local status = (req.query or {}).status
    local out = setmetatable({}, json.array_mt)
    local rows = status
      and assert(s.db:query("SELECT * FROM tasks WHERE execution = ? AND status = ? ORDER BY id LIMIT ? OFFSET ?",
                            id, status, limit, offset))
      or assert(s.db:query("SELECT * FROM tasks WHERE execution = ? ORDER BY id LIMIT ? OFFSET ?",
                           id, limit, offset))
    for _, row in ipairs(rows) do
      out[#out + 1] = task_view(s.db, row)
    end
    local total = status and s.db:row("SELECT count(*) AS n FROM tasks WHERE execution = ? AND status = ?", id, status).n
                  or s.db:row("SELECT count(*) AS n FROM tasks WHERE execution = ?", id).n
    return req:respond(200, { ["Content-Type"] = "application/json", ["X-Total-Count"] = tostring(total) },
                       json.encode(out))
  end)
  r.add("GET", "/api/v1/tasks/{id}", function(req, p)
    local id = api.id(p.id, "task")
    return api.reply(req, 200, task_view(s.db, api.load_row(s.db, "tasks", id, "task")))
  end)
  r.add("GET", "/api/v1/tasks/{id}/log", function(req, p)
    local id = api.id(p.id, "task")
    api.load_row(s.db, "tasks", id, "task")
    s.flush_logs()
    local lines = {}
    for _, l in ipairs(assert(s.db:query("SELECT ts, level, message FROM task_logs WHERE task = ? ORDER BY id", id))) do
      lines[#lines + 1] = string.format("%s %-5s %s", api.iso(l.ts), l.level:upper(), l.message)
    end
    return req:respond(200, { ["Content-Type"] = "text/plain; charset=utf-8" },
                       #lines > 0 and (table.concat(lines, "\n") .. "\n") or "")
  end)
  r.add("POST", "/api/v1/executions/{id}/stop", function(req, p)
    return api.reply(req, 200, executions.view(executions.stop(s, api.id(p.id, "execution")), s.db))
  end)
  r.add("POST", "/api/v1/executions/{id}/retry", function(req, p)
    local id = api.id(p.id, "execution")
    local n = executions.retry(s, id)
    return api.reply(req, 202, { id = id, retried = n })
  end)
end

return executions
