-- bench/inflight.lua - memory per in-flight request: K tasks each blocked in
-- http.request on the fault server's /hold (which never answers). Measures
-- task.stats() before and once all K have yielded inside http.request, then
-- prints one JSON line and cancels everything.
--   replica script --max-per-host K --memory MIB bench/inflight.lua FAULT_URL K [HOLD_S]
-- HOLD_S (default 0): seconds to stay parked after printing, so that an outside
-- observer (bench/run.sh, with ss) can count the connections on the wire.
local fault_url, k, hold = ...
k = math.tointeger(tonumber(k or 10000))
hold = tonumber(hold or 0)
if not fault_url or not k or k < 1 then
  error("usage: replica script --max-per-host K bench/inflight.lua FAULT_URL K [HOLD_S]")
end
local DEADLINE_S = 60

local url = fault_url .. "/hold"
local handles = {}

local function parked()
  return http.request{url = url, timeout = 600}
end

-- Waits (yielding to the loop) until the resident size is flat for a few turns
-- of 50 ms, so sockets that are still connecting have settled; bounded by t_end.
local function settle(t_end)
  local last = task.stats().rss
  local flat = 0
  while flat < 3 and time.mono() < t_end do
    time.sleep(0.05)
    local rss = task.stats().rss
    if math.abs(rss - last) < 64 * 1024 then flat = flat + 1 else flat = 0 end
    last = rss
  end
end

collectgarbage("collect")
local before = task.stats()
local t0 = time.mono()
local t_end = t0 + DEADLINE_S
for i = 1, k do handles[i] = task.spawn(parked) end
local pending = 0
while time.mono() < t_end do
  pending = task.stats().http_pending
  if pending >= k then break end
  task.yield()
end
local ramp = time.mono() - t0
if pending < k then
  error(string.format("only %d of %d requests pending after %d s", pending, k, DEADLINE_S))
end
settle(t_end)
collectgarbage("collect")
local after = task.stats()
-- Every task must still be parked inside http.request.
local parked_tasks = 0
for i = 1, k do
  if handles[i]:status() == "waiting" then parked_tasks = parked_tasks + 1 end
end

print(string.format(
  '{"tasks":%d,"http_pending":%d,"waiting":%d,"ramp_seconds":%.3f,' ..
  '"rss_before":%d,"rss_after":%d,"lua_before":%d,"lua_after":%d,' ..
  '"rss_per_task":%.0f,"lua_per_task":%.0f}',
  k, after.http_pending, parked_tasks, ramp, before.rss, after.rss,
  before.lua_bytes, after.lua_bytes,
  (after.rss - before.rss) / k, (after.lua_bytes - before.lua_bytes) / k))

if hold > 0 then time.sleep(hold) end

for i = 1, k do handles[i]:cancel() end
local cancelled = 0
for i = 1, k do
  local ok, err = handles[i]:wait()
  -- a cancelled task's wait() returns nil, "cancelled"
  if not ok and err == "cancelled" then cancelled = cancelled + 1 end
end
if cancelled ~= k then
  error(string.format("%d of %d tasks ended by cancel", cancelled, k))
end
if task.stats().http_pending ~= 0 then
  error("requests still pending after cancel: " .. task.stats().http_pending)
end
