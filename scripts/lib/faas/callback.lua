-- faas/callback.lua - progress of one invocation, POSTed to its callback_url
-- while the task runs: stage starts and ends (in order: each is sent before
-- the task goes on), at most once a second the bytes copied so far, and a
-- heartbeat when nothing else was sent for `heartbeat` seconds (the
-- coordinator's lease). A callback that fails is logged (its URL only) and
-- the task goes on; one answered 409 with {"cancel": true} means the
-- coordinator revoked this attempt, and the task is cancelled.
local callback = {}

-- Returns a reporter for invocation inv ({callback_url, callback_token,
-- attempt, task, heartbeat}): {on_stage(event, name, result), hook(kind,
-- value), close(), revoked}. revoke() is called once when the coordinator
-- revokes the attempt. Events carry `Authorization: Bearer
-- <callback_token>`, or no Authorization without one: the function's own
-- token never leaves it (the callback URL may name any host). Without a
-- callback_url every method does nothing.
function callback.new(inv, revoke)
  local url = inv.callback_url
  local rep, bytes, sent, seq = { revoked = false }, 0, 0, 0
  local auth = inv.callback_token and ("Bearer " .. inv.callback_token) or nil
  local warned = false
  local last = time.mono()

  -- POSTs one event; waits for the answer (5 s at most).
  local function post(ev)
    seq = seq + 1
    last = time.mono()
    ev.seq, ev.kind, ev.attempt, ev.call_id = seq, "task", inv.attempt, inv.call_id
    ev.repository, ev.dest_repository, ev.at = inv.task.repository, inv.task.dest_repository, time.now()
    local res, err = http.request{ method = "POST", url = url, body = json.encode(ev), timeout = 5,
      headers = { ["Content-Type"] = "application/json", ["Authorization"] = auth } }
    if res and res.status == 409 and not rep.revoked then
      local v = json.decode(res.body or "")
      if type(v) == "table" and v.cancel == true then
        rep.revoked = true
        log.warn("%s: attempt %d: the coordinator revoked it (%s): cancelling", inv.task.repository,
                 inv.attempt, type(v.error) == "string" and v.error or "no reason given")
        if revoke then revoke() end
        return
      end
    end
    if (not res or res.status >= 300) and not warned then
      warned = true
      log.warn("callback %s: %s", url, res and ("http " .. res.status) or tostring(err))
    end
  end

  local ticker
  if url then
    ticker = task.spawn({ name = "callback bytes" }, function()
      while not rep.revoked and time.sleep(1) do
        if bytes ~= sent then
          sent = bytes
          post({ event = "bytes", bytes = bytes })
        elseif inv.heartbeat and time.mono() - last >= inv.heartbeat then
          post({ event = "heartbeat", bytes = bytes })
        end
      end
    end)
  end

  -- The runner's stage hook: "start" and "end" of each stage.
  function rep.on_stage(ev, name, r)
    if not url or rep.revoked then return end
    post({ event = "stage_" .. ev, stage = name, status = ev == "start" and "running" or r.status,
           error = r.error, bytes = bytes })
  end

  -- The stages' progress hook: counts "bytes".
  function rep.hook(kind, v)
    if kind == "bytes" then bytes = bytes + v end
  end

  -- Stops the ticker; sends the last count if it changed.
  function rep.close()
    if not ticker then return end
    ticker:cancel()
    ticker:wait()
    if bytes ~= sent and not rep.revoked then post({ event = "bytes", bytes = bytes }) end
  end

  return rep
end

return callback
