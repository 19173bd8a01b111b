-- serve/retention.lua - keeps the database bounded: per policy the newest
-- ended executions (the policy's keep_executions, else --keep-executions,
-- default 50) with their tasks, stage results, task logs and attempts;
-- webhook events for --keep-events days (30) and audit records for
-- --keep-audit days (90); 0 keeps everything. A queued or running
-- execution is never deleted and does not count. Deletes go in
-- transactions of at most BATCH rows, with the other tasks let run between
-- them. Freed pages are reused by later rows: the file stays at its
-- high-water mark instead of shrinking (no VACUUM).
local library = require("serve.library")

local retention = {}

local BATCH = 500
local DAY = 86400
local EVERY = 3600 -- seconds between the periodic passes
local ENDED = "('Succeeded', 'Failed', 'Stopped')"

-- The retention settings of the daemon's options (keep_executions,
-- keep_events and keep_audit, as given on the command line). Returns
-- { executions = N, events = SECS, audit = SECS } (0: keep all), or nil
-- and the message for a bad value.
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
  return cfg
end

-- Each step deletes at most BATCH rows of execution ?1, and only while it
-- has ended: the largest tables first, so that the cascade of the last
-- steps (stuck_tasks, execution_scripts) is small.
local STILL_ENDED = "EXISTS (SELECT 1 FROM executions WHERE id = ?1 AND status IN " .. ENDED .. ")"
local STEPS = {
  [[DELETE FROM task_logs WHERE id IN (SELECT l.id FROM tasks t JOIN task_logs l ON l.task = t.id
    WHERE t.execution = ?1 LIMIT ?2) AND ]] .. STILL_ENDED,
  [[DELETE FROM stage_results WHERE rowid IN (SELECT r.rowid FROM tasks t JOIN stage_results r ON r.task = t.id
    WHERE t.execution = ?1 LIMIT ?2) AND ]] .. STILL_ENDED,
  [[DELETE FROM task_attempts WHERE rowid IN (SELECT a.rowid FROM tasks t JOIN task_attempts a ON a.task = t.id
    WHERE t.execution = ?1 LIMIT ?2) AND ]] .. STILL_ENDED,
  "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE execution = ?1 LIMIT ?2) AND " .. STILL_ENDED,
  "DELETE FROM executions WHERE id = ?1 AND status IN " .. ENDED .. " AND ?2 > 0",
}

-- Runs sql (?1 = arg, ?2 = BATCH) in transactions until it deletes fewer
-- than BATCH rows, letting other tasks run between them. Returns the rows
-- deleted.
local function drain(db, sql, arg)
  local total = 0
  while true do
    local n = assert(db:transaction(function() return assert(db:exec(sql, arg, BATCH)) end))
    total = total + n
    if n < BATCH then return total end
    task.yield()
  end
end

-- Deletes ended execution id with everything under it. s.deleting[id] is
-- set meanwhile (a retry is refused); an execution that stops being ended
-- (it cannot, while marked) would be left as it is. Returns whether the
-- execution row went.
local function delete_execution(s, id)
  s.deleting[id] = true
  local ok, gone = pcall(function()
    for i, sql in ipairs(STEPS) do
      local n = drain(s.db, sql, id)
      if i == #STEPS then return n == 1 end
    end
  end)
  s.deleting[id] = nil
  if not ok then error(gone, 0) end
  return gone
end

-- The ended executions of policy p beyond its limit (at most BATCH), the
-- oldest to end last. Returns a list of ids (empty when it keeps all).
local function surplus(s, p)
  local keep = p.keep_executions or s.retention.executions
  if keep == 0 then return {} end
  local rows = assert(s.db:query("SELECT id FROM executions WHERE policy = ? AND status IN " .. ENDED ..
                                 " ORDER BY finished DESC, id DESC LIMIT ? OFFSET ?", p.id, BATCH, keep))
  return rows, keep
end

-- Deletes the ended executions of policy policy_id beyond its limit.
-- Returns how many went.
local function prune_policy(s, policy_id)
  local n = 0
  while true do
    local p = s.db:row("SELECT id, keep_executions FROM policies WHERE id = ?", policy_id)
    if not p then return n end
    local rows, keep = surplus(s, p)
    for _, r in ipairs(rows) do
      if delete_execution(s, r.id) then n = n + 1 end
    end
    if #rows < BATCH then
      if n > 0 then log.info("retention: policy %d: deleted %d execution(s) (it keeps %d)", policy_id, n, keep) end
      return n
    end
  end
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
    if not ok then log.warn("retention: policy %d: %s", policy_id, tostring(err)) end
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

-- The periodic pass: at start, then every hour, until cancelled.
function retention.loop(s)
  repeat
    local ok, err = pcall(retention.prune, s)
    if not ok then log.warn("retention: %s", tostring(err)) end
  until not time.sleep(EVERY)
end

return retention
