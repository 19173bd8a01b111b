-- oci/ratelimit.lua - pull quotas that a registry announces in its answers.
--
-- Docker Hub counts every manifest GET against a pull limit (a HEAD does
-- not count) and says where the count stands on manifest GETs and HEADs:
--   RateLimit-Limit: 100;w=21600        100 pulls per window of 21600 s
--   RateLimit-Remaining: 76;w=21600     76 of them left
-- Once it has run out it answers a GET with 429 TOOMANYREQUESTS. A kind
-- turns the limiter on with the quirk
--   pull_limit = { remaining = "ratelimit-remaining", limit = "ratelimit-limit", max_wait = 21600 }
-- (the two header names, and the default bound in seconds on one wait,
-- which the kind's option max_wait overrides: "90", "15m", "6h"). One
-- limiter is shared by a client and all its forks:
--   * every manifest answer updates what is left (observe), less the GETs
--     the registry may not have counted in it yet: those granted since its
--     request was sent, and those granted before and still unanswered
--     (answers to concurrent requests arrive in any order, and a GET may
--     wait for its slot: the estimate errs low, never high);
--   * before a GET, acquire: while plenty is left it only counts the GET;
--     at the reserve (a tenth of the limit, at least 1) it spaces GETs a
--     window/limit apart, the rate the window sustains ("slowing down");
--     when nothing is left it waits, probing with a HEAD (which does not
--     count) once per window/limit (0.5 to 60 s), or after the 429's
--     Retry-After, until the count goes up, for at most max_wait;
--   * a 429 that says the quota is used up is not retried by retry.run
--     (its `final` option) but waited out here.
local retry = require("oci.retry")

local ratelimit = {}
local Limiter = {}
Limiter.__index = Limiter
Limiter.__metatable = false

local of = setmetatable({}, { __mode = "k" }) -- client -> its limiter (kept out of the client's fields)

-- Parses a quota header value "N" or "N;w=W" into N and W (nil when absent).
function ratelimit.parse(value)
  if type(value) ~= "string" then return nil end
  local n, rest = value:match("^%s*(%d+)%s*(.*)$")
  if not n then return nil end
  local w = rest:match("[;,]%s*w%s*=%s*(%d+)")
  return tonumber(n), w and tonumber(w) or nil
end

-- Parses a duration: seconds ("90"), or a number with s, m, h or d
-- ("15m", "6h"); nil when it is none.
function ratelimit.duration(s)
  if type(s) == "number" then return s >= 0 and s or nil end
  local n, unit = tostring(s or ""):match("^%s*(%d+%.?%d*)%s*([smhd]?)%s*$")
  if not n then return nil end
  return tonumber(n) * ({ [""] = 1, s = 1, m = 60, h = 3600, d = 86400 })[unit]
end

-- Creates the limiter of quirk (a kind's pull_limit); kind names it in
-- messages, max_wait (the kind's option, optional) bounds one wait.
-- Returns the limiter or nil, err for a max_wait that is no duration.
function ratelimit.new(quirk, kind, max_wait)
  local bound = ratelimit.duration(quirk.max_wait) or 6 * 3600
  if max_wait ~= nil and max_wait ~= "" then
    bound = ratelimit.duration(max_wait)
    if not bound then
      return nil, string.format("the option max_wait must be a duration (90, 15m, 6h), not %q", tostring(max_wait))
    end
  end
  local self = setmetatable({
    kind = kind or "registry",
    remaining_header = (quirk.remaining or "ratelimit-remaining"):lower(),
    limit_header = (quirk.limit or "ratelimit-limit"):lower(),
    max_wait = bound,
    remaining = nil, limit = nil, window = nil, -- what the registry said last (remaining counted down by our GETs)
    granted = 0,  -- GETs granted so far (acquire)
    pending = {}, -- the granted GETs not yet answered (done), by number
    npending = 0,
    next_slot = nil, next_probe = nil, resume_at = nil, pacing = false, waiting = false,
  }, Limiter)
  self.final = function(res) return self:exhausted(res) end -- for retry.run
  return self
end

-- Attaches limiter to client (nil detaches); ratelimit.of(client) finds it.
function ratelimit.attach(client, limiter)
  of[client] = limiter
end

function ratelimit.of(client)
  return of[client]
end

-- The count left at which GETs are spaced out.
function Limiter:reserve()
  return math.max(1, (self.limit or 0) // 10)
end

-- How long apart the waits probe the count, in seconds.
function Limiter:step()
  if self.limit and self.limit > 0 and self.window then
    return math.min(60, math.max(0.5, self.window / self.limit))
  end
  return 60
end

-- Describes the quota for messages: " (100 per 21600 s)".
function Limiter:describe()
  if self.limit and self.window then return string.format(" (%d per %d s)", self.limit, self.window) end
  if self.limit then return string.format(" (%d)", self.limit) end
  return ""
end

-- The mark to pass to observe for a request about to be sent: the GETs
-- granted so far, and how many of them were unanswered then.
function Limiter:mark()
  return { seq = self.granted, inflight = self.npending }
end

-- Ends the GET acquire granted with mark (answered or not).
function Limiter:done(mark)
  if mark and self.pending[mark.seq] then
    self.pending[mark.seq] = nil
    self.npending = self.npending - 1
  end
end

-- Reads a manifest answer's quota headers (mark: from mark() or acquire()
-- when its request was sent) less the GETs the registry may not have
-- counted in it: those unanswered when the request was sent, and those
-- granted since; returns true when it had the headers.
function Limiter:observe(res, mark)
  local h = res and res.headers or {}
  local left, w = ratelimit.parse(h[self.remaining_header])
  if left and mark then
    left = math.max(0, left - mark.inflight - (self.granted - mark.seq))
  end
  local limit, lw = ratelimit.parse(h[self.limit_header])
  if limit then self.limit = limit end
  if w or lw then self.window = w or lw end
  if res and res.status == 429 then
    local after = retry.after(h["retry-after"])
    if after then self.resume_at = time.mono() + after end
    if self:exhausted(res) then left = 0 end
  end
  if left == nil then return false end
  self.remaining = left
  if left > 0 and self.waiting then
    self.waiting = false
    log.info("%s: the pull limit%s is back: %d left", self.kind, self:describe(), left)
  end
  if left > self:reserve() then self.pacing = false end
  return true
end

-- True when res is a 429 saying the quota is used up: the remaining count
-- is 0, or the body's code is TOOMANYREQUESTS with no Retry-After (a plain
-- 429, or one with Retry-After, is a short throttle that retry.run handles).
function Limiter:exhausted(res)
  if not res or res.status ~= 429 then return false end
  local left = ratelimit.parse(res.headers and res.headers[self.remaining_header])
  if left then return left == 0 end
  if res.headers and res.headers["retry-after"] then return false end
  local doc = json.decode(res.body or "")
  local e = type(doc) == "table" and type(doc.errors) == "table" and doc.errors[1]
  return type(e) == "table" and e.code == "TOOMANYREQUESTS"
end

-- Waits until a GET may be sent, then counts it. probe() sends a HEAD of
-- the same manifest (free) and returns its answer (or nil); started is
-- when the caller began (time.mono()), for max_wait. Returns the GET's
-- mark (for observe), or nil, err when the quota stayed used up past
-- max_wait (or when a known Retry-After is beyond it), or nil, "cancelled".
function Limiter:acquire(probe, started)
  while true do
    local now = time.mono()
    local left = self.remaining
    if left == nil or left > 0 then
      self.granted = self.granted + 1
      local mark = { seq = self.granted, inflight = self.npending }
      self.pending[mark.seq] = true
      self.npending = self.npending + 1
      if left then
        self.remaining = left - 1
        if self.limit and self.window and self.limit > 0 and left <= self:reserve() then
          local gap = self.window / self.limit
          local slot = math.max(now, self.next_slot or now)
          self.next_slot = slot + gap
          if not self.pacing then
            self.pacing = true
            log.warn("%s: the pull limit%s is nearly used up (%d left): slowing down to one pull every %.1f s",
                     self.kind, self:describe(), left, gap)
          end
          if slot > now then
            local ok, err = time.sleep(slot - now)
            if not ok then
              self:done(mark)
              return nil, err
            end
          end
        end
      end
      return mark
    end
    local budget = self.max_wait - (now - started)
    if budget <= 0 or (self.resume_at and self.resume_at - now > budget) then
      return nil, string.format("%s: the pull limit%s is used up, and it was not back within max_wait (%g s)",
                                self.kind, self:describe(), self.max_wait)
    end
    if not self.waiting then
      self.waiting = true
      log.warn("%s: the pull limit%s is used up: waiting for it to come back (at most %g s, the option max_wait)",
               self.kind, self:describe(), self.max_wait)
    end
    local at = math.max(self.next_probe or 0, self.resume_at or 0)
    if now >= at then
      self.next_probe = now + self:step()
      self.resume_at = nil
      local mark = self:mark()
      local res = probe()
      if not (res and self:observe(res, mark)) then
        self.remaining = nil -- the answer does not say: let one GET find out
      end
    else
      local ok, err = time.sleep(math.min(at - now, budget, 1))
      if not ok then return nil, err end
    end
  end
end

return ratelimit
