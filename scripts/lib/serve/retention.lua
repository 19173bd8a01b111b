-- serve/retention.lua - keeps the database bounded: per policy the newest
-- ended executions (the policy's keep_executions, else --keep-executions,
-- default 50) with their tasks, stage results, task logs and attempts;
-- webhook events for --keep-events days (30) and audit records for
-- --keep-audit days (90); 0 keeps everything. A queued or running
-- execution is never deleted and does not count. Deletes go in
-- transactions of at most BATCH rows, with the other tasks let run between
-- them. The periodic pass runs hourly, or at a quarter of the shorter of
-- the events' and the audit's windows when that is shorter (a window of
-- minutes is kept to within a quarter of itself). Freed pages are reused
-- by later rows: the file stays at its high-water mark instead of
-- shrinking (no VACUUM).
local library = require("serve.library")

local retention = {}

local BATCH = 500
local DAY = 86400
local EVERY = 3600 -- seconds between the periodic passes, at most
local EVERY_MIN = 10 -- and at least
local ENDED = "('Succeeded', 'Failed', 'Stopped')"

-- The retention settings of the daemon's options (keep_executions,
-- keep_events and keep_audit, as given on the command line). Returns
-- { executions = N, events = SECS, audit = SECS, every = SECS } (0: keep
-- all; every: the seconds between periodic passes), or nil and the
-- message for a bad value.
function retention.config(opts)
  local n = math.tointeger(tonumber(opts.keep_executions or "50"))
  if not n or n < 0 or n > 1e9 then return nil, "--keep-executions must be an integer, 0 or more" end
  local cfg = { executions = n }
  for _, o in ipairs{ { "keep_events", "--keep-events", 30, "events" },
                      { "keep_audit", "--keep-audit", 90, "audit" } } do
    local d = tonumber(opts[o[1]] or o[3])
    if not d or d ~= d or d < 0 or d > 1e6 then return nil, o[2] .. " must be a number of days, 0 or more" end
    cfg[o[4]] = d * DAY
  end
  cfg.every = EVERY
  for _, w in ipairs{ cfg.events, cfg.audit } do
    if w > 0 then cfg.every = math.min(cfg.every, math.max(EVERY_MIN, w / 4)) end
  end
  return cfg
end

-- What is under the tasks ?2..?3 (ids) of execution ?1, largest first,
-- then those tasks: each statement deletes at most ?4 rows, and only while
-- the execution has ended. Taking the tasks a chunk at a time keeps each
-- statement's scan to that chunk; the cascade of the last one (stuck_tasks)
-- is all that is left under them.
local STILL_ENDED = "EXISTS (SELECT 1 FROM executions WHERE id = ?1 AND status IN " .. ENDED .. ")"
local UNDER = "FROM tasks t JOIN %s c ON c.task = t.id WHERE t.execution = ?1 AND t.id BETWEEN ?2 AND ?3 LIMIT ?4"
local CHUNK_STEPS = {
  "DELETE FROM task_logs WHERE id IN (SELECT c.id " .. UNDER:format("task_logs") .. ") AND " .. STILL_ENDED,
  "DELETE FROM stage_results WHERE rowid IN (SELECT c.rowid " .. UNDER:format("stage_results") .. ") AND " .. STILL_ENDED,
  "DELETE FROM task_attempts WHERE rowid IN (SELECT c.rowid " .. UNDER:format("task_attempts") .. ") AND " .. STILL_ENDED,
  [[DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE execution = ?1 AND id BETWEEN ?2 AND ?3 LIMIT ?4)
    AND ]] .. STILL_ENDED,
}
local CHUNK = 100 -- tasks per chunk

-- Runs sql with the arguments given and BATCH as the last parameter, in
-- transactions until it deletes fewer than BATCH rows, letting other tasks
-- run between them. Returns the rows deleted; raises "cancelled" when the
-- task is (the daemon is stopping: the rest waits for the next pass).
local function drain(db, sql, ...)
  local args = table.pack(...)
  args.n = args.n + 1
  args[args.n] = BATCH
  local total = 0
  while true do
    local n = assert(db:transaction(function() return assert(db:exec(sql, table.unpack(args, 1, args.n))) end))
    total = total + n
    if n < BATCH then return total end
    task.yield()
    if task.cancelled() then error("cancelled", 0) end
  end
end

-- Deletes ended execution id with everything under it, CHUNK tasks at a
-- time, then the row (whose cascade takes its pins). s.deleting[id] is
-- set meanwhile, so a retry is refused; an execution that stopped being
-- ended all the same would be left as it is. Returns whether the row went.
local function delete_execution(s, id)
  local db = s.db
  s.deleting[id] = true
  local ok, gone = pcall(function()
    while true do
      local ids = assert(db:query("SELECT id FROM tasks WHERE execution = ? ORDER BY id LIMIT ?", id, CHUNK))
      if #ids == 0 then break end
      local lo, hi = ids[1].id, ids[#ids].id
      for _, sql in ipairs(CHUNK_STEPS) do drain(db, sql, id, lo, hi) end
      if db:row("SELECT 1 AS n FROM tasks WHERE execution = ? AND id BETWEEN ? AND ? LIMIT 1", id, lo, hi) then
        return false -- no longer ended: nothing more is touched
      end
      task.yield()
      if task.cancelled() then error("cancelled", 0) end
    end
    return drain(db, "DELETE FROM executions WHERE id = ?1 AND status IN " .. ENDED .. " AND ?2 > 0", id) == 1
  end)
  s.deleting[id] = nil
  if not ok then error(gone, 0) end
  return gone
end

-- Deletes the ended executions of policy policy_id but the keep newest
-- (by the time they ended), BATCH ids at a time. Returns how many went.
local function delete_beyond(s, policy_id, keep)
  local n = 0
  while true do
    local rows = assert(s.db:query("SELECT id FROM executions WHERE policy = ? AND status IN " .. ENDED ..
                                   " ORDER BY finished DESC, id DESC LIMIT ? OFFSET ?", policy_id, BATCH, keep))
    for _, r in ipairs(rows) do
      if delete_execution(s, r.id) then n = n + 1 end
    end
    if #rows < BATCH then return n end
  end
end

-- Deletes the ended executions of policy policy_id beyond its limit (its
-- keep_executions, else the daemon's; 0 keeps all). Returns how many went.
local function prune_policy(s, policy_id)
  local p = s.db:row("SELECT id, keep_executions FROM policies WHERE id = ?", policy_id)
  local keep = p and (p.keep_executions or s.retention.executions) or 0
  if keep == 0 then return 0 end
  local n = delete_beyond(s, policy_id, keep)
  if n > 0 then log.info("retention: policy %d: deleted %d execution(s) (it keeps %d)", policy_id, n, keep) end
  return n
end

-- Deletes every ended execution of policy policy_id in batches, as
-- retention does, before the policy itself is deleted (whose cascade would
-- take them in one statement of unbounded size). Returns how many went.
function retention.clear(s, policy_id)
  return delete_beyond(s, policy_id, 0)
end

-- Prunes policy policy_id once, now or after the pass under way for it
-- (which then runs once more): the body of retention.ended's task.
local function prune_once(s, policy_id)
  local state = s.pruning[policy_id]
  if state then
    state.again = true
    return
  end
  state = {}
  s.pruning[policy_id] = state
  repeat
    state.again = false
    local ok, err = pcall(prune_policy, s, policy_id)
    if not ok and not task.cancelled() then log.warn("retention: policy %d: %s", policy_id, tostring(err)) end
  until not state.again or task.cancelled()
  s.pruning[policy_id] = nil
end

-- An execution of policy policy_id ended (or the policy's limit changed):
-- prunes that policy in a task of its own.
function retention.ended(s, policy_id)
  if s.closing then return end
  task.spawn({ name = "retention " .. policy_id }, prune_once, s, policy_id)
end

-- Deletes the rows of tbl whose time column col is older than age seconds
-- (0: keeps all). Returns how many went.
local function prune_older(s, tbl, col, age)
  if age == 0 then return 0 end
  return drain(s.db, "DELETE FROM " .. tbl .. " WHERE id IN (SELECT id FROM " .. tbl .. " WHERE " .. col ..
                     " < ?1 LIMIT ?2)", time.now() - age)
end

-- One full pass: every policy's executions, the old webhook events and
-- audit records, and the script sources nothing refers to any more.
function retention.prune(s)
  for _, p in ipairs(assert(s.db:query("SELECT id FROM policies ORDER BY id"))) do
    prune_once(s, p.id)
  end
  local ev = prune_older(s, "events", "received", s.retention.events)
  local au = prune_older(s, "audit", "time", s.retention.audit)
  if ev + au > 0 then
    log.info("retention: deleted %d webhook event(s) and %d audit record(s) past their limits", ev, au)
  end
  assert(s.db:transaction(library.prune_sources, s.db))
end

-- The periodic pass: at start, then every s.retention.every seconds
-- (hourly unless a window is short), until cancelled.
function retention.loop(s)
  repeat
    local ok, err = pcall(retention.prune, s)
    if not ok and not task.cancelled() then log.warn("retention: %s", tostring(err)) end
  until not time.sleep(s.retention.every or EVERY)
end

return retention
