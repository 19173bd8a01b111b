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
-- failures age out of the window. An IPv6 address counts as its /64 (a
-- host usually has a whole /64 to pick addresses from), an IPv4-mapped one
-- as its IPv4 address. The table of addresses is bounded (SIZE): when it
-- is full, the address whose last failure is the oldest is forgotten to
-- make room.
local loglimit = require("loglimit")

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
  local clock = opts.clock or time.mono
  return setmetatable({
    base = opts.base, size = opts.size or SIZE, clock = clock,
    entries = {}, count = 0, log = loglimit.new(LOG_EVERY, clock),
  }, backoff)
end

-- Returns the groups of the IPv6 address a (text as inet_ntop writes it)
-- as 8 numbers, "::" expanded; an IPv4 tail counts as its two groups.
local function groups6(a)
  local function split(s)
    local out = {}
    for g in s:gmatch("[^:]+") do
      if g:find(".", 1, true) then
        local b1, b2, b3, b4 = g:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
        out[#out + 1] = (tonumber(b1) or 0) * 256 + (tonumber(b2) or 0)
        out[#out + 1] = (tonumber(b3) or 0) * 256 + (tonumber(b4) or 0)
      else
        out[#out + 1] = tonumber(g, 16) or 0
      end
    end
    return out
  end
  local head, tail = a:match("^(.-)::(.*)$")
  if not head then return split(a) end
  local g, t = split(head), split(tail)
  for _ = 1, 8 - #g - #t do g[#g + 1] = 0 end
  for _, v in ipairs(t) do g[#g + 1] = v end
  return g
end

-- Returns the key the failures of address addr are counted under: an IPv4
-- address itself (also written IPv4-mapped), an IPv6 address its /64.
function backoff.key(addr)
  local v4 = addr:match("^::[fF][fF][fF][fF]:(%d+%.%d+%.%d+%.%d+)$")
  if v4 then return v4 end
  if not addr:find(":", 1, true) then return addr end
  local g = groups6(addr)
  return string.format("%x:%x:%x:%x::/64", g[1] or 0, g[2] or 0, g[3] or 0, g[4] or 0)
end

-- Returns the whole seconds left of addr's block (at least 1), or nil when
-- addr is not blocked.
function backoff:blocked(addr)
  if not addr then return nil end
  local e = self.entries[backoff.key(addr)]
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

-- Logs that addr (counted under key) is blocked for secs, at most once
-- every LOG_EVERY seconds (counting the blocks left out in between).
local function warn(self, addr, key, secs, strikes)
  local pass, quiet = self.log:pass()
  if not pass then return end
  log.warn("http: client %s%s blocked for %d s after %s (429 until then)%s", addr,
           key ~= addr and string.format(" (%s)", key) or "", secs,
           strikes == 1 and string.format("%d failed authentications", FAILURES)
             or string.format("another failed authentication (block %d)", strikes),
           quiet > 0 and string.format("; %d more block(s) not logged", quiet) or "")
end

-- Counts a failed authentication from addr. Returns the seconds of the
-- block it starts, or nil when it starts none.
function backoff:failed(addr)
  if not addr or self.base <= 0 then return nil end
  local now = self.clock()
  local key = backoff.key(addr)
  local e = self.entries[key]
  if not e then
    if self.count >= self.size then evict(self) end
    e = { n = 0, since = now, strikes = 0, till = 0, last = now }
    self.entries[key] = e
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
  warn(self, addr, key, secs, e.strikes)
  return secs
end

return backoff
