-- serve/bus.lua - progress events for GET /api/v1/events (Server-Sent
-- Events): execution, task and stage transitions and bytes copied. Writes
-- never block the publisher: a subscriber that falls 4 MiB behind is cut off.
local bus = { subscribers = {}, seq = 0 }

-- Publishes an event of type kind with a JSON-able table.
function bus.publish(kind, data)
  if next(bus.subscribers) == nil then return end
  bus.seq = bus.seq + 1
  local payload
  for req, sub in pairs(bus.subscribers) do
    if not sub.execution or sub.execution == data.execution then
      payload = payload or string.format("id: %d\nevent: %s\ndata: %s\n\n", bus.seq, kind, json.encode(data))
      local ok = req:write(payload)
      if not ok then
        bus.subscribers[req] = nil
        req:finish()
      end
    end
  end
end

-- Serves one SSE client until it disconnects. ?execution=ID limits the
-- stream to one execution.
function bus.serve(req)
  local q = req.query or {}
  local sub = { execution = q.execution and math.tointeger(tonumber(q.execution)) }
  req:start(200, { ["Content-Type"] = "text/event-stream", ["Cache-Control"] = "no-cache",
                   ["X-Accel-Buffering"] = "no" })
  req:write(": replica event stream\nretry: 2000\n\n")
  bus.subscribers[req] = sub
  while bus.subscribers[req] do
    local closed = req:wait_closed(15)
    if closed == nil or closed == true then break end   -- cancelled or gone
    if not req:write(": keep-alive\n\n") then break end
  end
  if bus.subscribers[req] then
    bus.subscribers[req] = nil
    req:finish()
  end
end

-- The number of connected subscribers.
function bus.count()
  local n = 0
  for _ in pairs(bus.subscribers) do n = n + 1 end
  return n
end

return bus
