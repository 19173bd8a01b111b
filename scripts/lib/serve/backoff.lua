-- serve/backoff.lua - slows down the guessing of credentials (API tokens,
-- webhook secrets, callback tokens), per client address. The address is the
-- socket's peer, never a forwarded header: the daemon has no trusted-proxy
-- option, so behind a proxy every client shares the proxy's address.
--
-- FAILURES wrong credentials from one address within WINDOW seconds block
-- it for `base` seconds (--auth-backoff). A block is answered 429 with
-- Retry-After (the seconds left) and no credential is checked meanwhile, so
-- a guess sent during a block is never confirmed: the right token is
-- refused too until the block ends. After a block one more failure blocks
-- again, twice as long each time (at most MAX, or base if larger), until
-- the address has had no failure for MAX seconds. A success resets nothing:
-- failures age out of the window. The table of addresses is bounded
-- (SIZE): when it is full, the address whose last failure is the oldest is
-- forgotten to make room.
local backoff = {}
backoff.__index = backoff

local FAILURES = 5
local WINDOW = 60
local MAX = 900
local SIZE = 4096
local LOG_EVERY = 10 -- seconds between two warnings, whatever the address

-- Returns a new table of addresses: opts.base seconds of the first block
-- (0 turns the backoff off), opts.size addresses at most (SIZE),
-- opts.clock a monotonic clock in seconds (time.mono). The caller owns it.
function backoff.new(opts)
  return setmetatable({
    base = opts.base, size = opts.size or SIZE, clock = opts.clock or time.mono,
    entries = {}, count = 0, logged = nil, quiet = 0,
  }, backoff)
end

-- Returns the whole seconds left of addr's block (at least 1), or nil when
-- addr is not blocked.
function backoff:blocked(addr)
  local e = self.entries[addr]
  if not e then return nil end
  local left = e.till - self.clock()
  if left <= 0 then return nil end
  return math.max(1, math.ceil(left))
end

-- Forgets the address whose last failure is the oldest.
local function evict(self)
  local oldest, at
  for a, e in pairs(self.entries) do
    if not at or e.last < at then oldest, at = a, e.last end
  end
  self.entries[oldest] = nil
  self.count = self.count - 1
end

-- Logs that addr is blocked for secs, at most once every LOG_EVERY seconds
-- (counting the blocks left out in between).
local function warn(self, addr, secs, strikes, now)
  if self.logged and now - self.logged < LOG_EVERY then
    self.quiet = self.quiet + 1
    return
  end
  log.warn("http: client %s blocked for %d s after %s (429 until then)%s", addr, secs,
           strikes == 1 and string.format("%d failed authentications", FAILURES)
             or string.format("another failed authentication (block %d)", strikes),
           self.quiet > 0 and string.format("; %d more block(s) not logged", self.quiet) or "")
  self.logged, self.quiet = now, 0
end

-- Counts a failed authentication from addr. Returns the seconds of the
-- block it starts, or nil when it starts none.
function backoff:failed(addr)
  if not addr or self.base <= 0 then return nil end
  local now = self.clock()
  local e = self.entries[addr]
  if not e then
    if self.count >= self.size then evict(self) end
    e = { n = 0, since = now, strikes = 0, till = 0, last = now }
    self.entries[addr] = e
    self.count = self.count + 1
  end
  local max = math.max(MAX, self.base)
  if e.strikes > 0 and now - e.last > max then e.strikes = 0 end
  if now - e.since > WINDOW then e.n, e.since = 0, now end
  e.n, e.last = e.n + 1, now
  if e.n < FAILURES and e.strikes == 0 then return nil end
  local secs = math.min(self.base * 2 ^ e.strikes, max)
  e.strikes, e.n, e.since, e.till = e.strikes + 1, 0, now, now + secs
  secs = math.ceil(secs)
  warn(self, addr, secs, e.strikes, now)
  return secs
end

return backoff
