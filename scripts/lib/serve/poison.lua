-- serve/poison.lua - the watchdog's side of the daemon: tasks that kept it
-- from stopping, and the watchdog's report for GET /api/v1/health.
--
-- When SIGTERM/SIGINT cannot stop the daemon within its grace period
-- (the event loop is stuck in a C call), the watchdog thread appends the
-- task holding the loop to a record file and ends the process. At the next
-- start, before executions are resumed, the lines are counted per task in
-- the stuck_tasks table. A task counted LIMIT times is marked Failed
-- instead of being resumed again; a task that ends (or fails this way)
-- starts again from zero when it is retried.
local poison = {}

poison.LIMIT = 2 -- forced exits before a task is failed (the reason says "twice")

-- Where the record of forced exits is kept for the database at path.
function poison.record_path(db_path)
  return db_path .. ".stuck"
end

-- The Failed reason of a task that held the loop in the engine task name.
function poison.reason(name)
  local where = name:find("^stage ") and name or ("task " .. name)
  return string.format("the daemon could not stop it within the grace period twice: "
                       .. "it held the event loop in %s", where)
end

-- Counts the record file's lines into stuck_tasks, fails the tasks that
-- reached the limit, then removes the file. Returns the ids it failed.
function poison.recover(s)
  local db, sys = s.db, s.sys
  local recs, err = sys.watchdog_records()
  if not recs then
    log.error("%s; tasks that held the event loop are resumed as usual", err)
    return {}
  end
  local failed, now = {}, time.now()
  assert(db:transaction(function()
    assert(db:exec([[DELETE FROM stuck_tasks WHERE task IN
                     (SELECT id FROM tasks WHERE status NOT IN ('Pending', 'Running'))]]))
    for _, r in ipairs(recs) do
      if r.tag > 0 then
        local n = assert(db:exec("UPDATE stuck_tasks SET count = count + 1, stage = ?, updated = ? WHERE task = ?",
                                 r.name, now, r.tag))
        if n == 0 then
          assert(db:exec([[INSERT INTO stuck_tasks (task, count, stage, updated)
                           SELECT id, 1, ?, ? FROM tasks WHERE id = ?]], r.name, now, r.tag))
        end
        log.warn("task %d held the event loop in %q when the daemon had to be ended", r.tag, r.name)
      end
    end
    local rows = assert(db:query([[SELECT k.task, k.stage, t.execution FROM stuck_tasks k
                                   JOIN tasks t ON t.id = k.task
                                   WHERE k.count >= ? AND t.status IN ('Pending', 'Running')]], poison.LIMIT))
    for _, r in ipairs(rows) do
      local why = poison.reason(r.stage)
      assert(db:exec("UPDATE tasks SET status = 'Failed', finished = ?, error = ? WHERE id = ?", now, why, r.task))
      assert(db:exec([[UPDATE stage_results SET status = 'failed', finished = ?, error = ?
                       WHERE task = ? AND status = 'running']], now, why, r.task))
      assert(db:exec([[UPDATE executions SET failed = (SELECT count(*) FROM tasks
                       WHERE execution = ?1 AND status = 'Failed') WHERE id = ?1]], r.execution))
      assert(db:exec("DELETE FROM stuck_tasks WHERE task = ?", r.task))
      log.error("task %d: marked Failed: %s", r.task, why)
      failed[#failed + 1] = r.task
    end
    return true
  end))
  local ok, rerr = sys.watchdog_records_done()
  if not ok then log.error("%s", rerr) end
  return failed
end

-- The watchdog part of the health answer: stalls seen since the start, and
-- the latest one that ended (the task id and engine task that held the loop).
function poison.health(sys, iso)
  local st = sys.watchdog_status()
  local out = { stalls = st.stalls }
  if st.last then
    out.last = { task = st.last.tag ~= 0 and st.last.tag or nil, stage = st.last.name,
                 seconds = math.floor(st.last.seconds * 10 + 0.5) / 10, at = iso(st.last.at) }
  end
  return out
end

return poison
