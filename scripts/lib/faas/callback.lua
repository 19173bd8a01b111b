-- faas/callback.lua - progress of one invocation, POSTed to its callback_url
-- while the task runs: stage starts and ends (in order: each is sent before
-- the task goes on) and, at most once a second, the bytes copied so far.
-- A callback that fails is logged (its URL only) and the task goes on.
local callback = {}

-- Returns a reporter for invocation inv ({callback_url, callback_token,
-- attempt, task}): {on_stage(event, name, result), hook(kind, value),
-- close()}. Events carry `Authorization: Bearer <callback_token>`, or no
-- Authorization without one: the function's own token never leaves it (the
-- callback URL may name any host). Without a callback_url every method does
-- nothing.
function callback.new(inv)
  local url = inv.callback_url
  local rep, bytes, sent, seq = {}, 0, 0, 0
  local auth = inv.callback_token and ("Bearer " .. inv.callback_token) or nil
  local warned = false

  -- POSTs one event; waits for the answer (5 s at most).
  local function post(ev)
    seq = seq + 1
    ev.seq, ev.kind, ev.attempt = seq, "task", inv.attempt
    ev.repository, ev.dest_repository, ev.at = inv.task.repository, inv.task.dest_repository, time.now()
    local res, err = http.request{ method = "POST", url = url, body = json.encode(ev), timeout = 5,
      headers = { ["Content-Type"] = "application/json", ["Authorization"] = auth } }
    if (not res or res.status >= 300) and not warned then
      warned = true
      log.warn("callback %s: %s", url, res and ("http " .. res.status) or tostring(err))
    end
  end

  local ticker
  if url then
    ticker = task.spawn({ name = "callback bytes" }, function()
      while time.sleep(1) do
        if bytes ~= sent then
          sent = bytes
          post({ event = "bytes", bytes = bytes })
        end
      end
    end)
  end

  -- The runner's stage hook: "start" and "end" of each stage.
  function rep.on_stage(ev, name, r)
    if not url then return end
    post({ event = "stage_" .. ev, stage = name, status = ev == "start" and "running" or r.status,
           error = r.error, bytes = bytes })
  end

  -- The stages' progress hook: counts "bytes".
  function rep.hook(kind, v)
    if kind == "bytes" then bytes = bytes + v end
  end

  -- Stops the bytes ticker; sends the last count if it changed.
  function rep.close()
    if not ticker then return end
    ticker:cancel()
    ticker:wait()
    if bytes ~= sent then post({ event = "bytes", bytes = bytes }) end
  end

  return rep
end

return callback
