-- loopwatch.lua - measures how long the event loop is kept from other
-- tasks: a watcher task sleeps a few milliseconds at a time and records the
-- longest gap between two wake-ups.
--   local h = loopwatch.start(stop [, period])   -- stop() true ends it
--   local ok, worst, rounds = h:wait()
local loopwatch = {}

-- Starts the watcher; its task returns the longest gap (seconds) and the
-- number of rounds it slept.
function loopwatch.start(stop, period)
  period = period or 0.005
  return task.spawn({ name = "watcher" }, function()
    local worst, rounds, last = 0, 0, time.mono()
    repeat
      time.sleep(period)
      local now = time.mono()
      if now - last > worst then worst = now - last end
      last = now
      rounds = rounds + 1
    until stop()
    return worst, rounds
  end)
end

return loopwatch
