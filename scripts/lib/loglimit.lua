-- loglimit.lua - a rate limit for a log line that may repeat: at most one
-- every `every` seconds, counting the ones left out in between (what
-- engine/evlog.c does for the engine's own lines).
local loglimit = {}
loglimit.__index = loglimit

-- Returns a new limit: one line per `every` seconds (10), on clock, a
-- monotonic clock in seconds (time.mono). The caller owns it.
function loglimit.new(every, clock)
  return setmetatable({ every = every or 10, clock = clock or time.mono, last = nil, quiet = 0 }, loglimit)
end

-- Returns true and the number of lines left out since the last one when a
-- line may be logged now; false (counting this one as left out) if not.
function loglimit:pass()
  local now = self.clock()
  if self.last and now - self.last < self.every then
    self.quiet = self.quiet + 1
    return false
  end
  local quiet = self.quiet
  self.last, self.quiet = now, 0
  return true, quiet
end

return loglimit
