-- oci/retry.lua - retrying transient failures: exponential backoff with
-- jitter, and Retry-After (seconds or HTTP-date) on 429 and 503.
local retry = {
  RETRIES = 4,     -- attempts after the first
  BASE = 0.5,      -- seconds before the first retry (before jitter)
  CAP = 10,        -- the longest backoff
  MAX_AFTER = 60,  -- the longest Retry-After honoured
  DOWN_FOR = 30,   -- how long an origin that refused every attempt is down
}

-- Origins whose last request failed to connect on every attempt:
-- down[origin] = the time.mono() until which a request there is tried
-- once, not retried. A dead registry then costs each later request one
-- refused connection, not its whole backoff (a run to a dead target failed
-- after 22 s of the same retries, stage after stage; a serve execution of
-- 1,000 tasks would retry each). A request that gets through (any answer,
-- or another error) ends it.
local down = {}

-- The retries this process made, by kind ("request": retry.run's, "blob":
-- retry.pause's) and reason (an HTTP status such as "503", or a transfer
-- error such as "closed"): counts[kind][reason] = n. serve's GET /metrics
-- reads it.
retry.counts = { request = {}, blob = {} }

-- Counts one retry of kind for why ("http 503", 503, "closed").
local function count(kind, why)
  local reason = tostring(why or "unknown"):gsub("^http ", "")
  local t = retry.counts[kind]
  t[reason] = (t[reason] or 0) + 1
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
                 Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- True when a failed call is worth repeating: a connection that failed or
-- dropped, a stall, a 429, or a 5xx other than 501.
function retry.transient(res, err)
  if not res then
    return err == "connect" or err == "closed" or err == "timeout"
  end
  local s = res.status
  return s == 429 or (s >= 500 and s <= 599 and s ~= 501)
end

-- Same, for the short error strings of blob.copy ("http 503", "closed", ...).
function retry.transient_err(err)
  local status = tonumber(tostring(err):match("^http (%d+)$"))
  if status then return retry.transient({ status = status }) end
  return retry.transient(nil, err)
end

-- Returns the delay before retry number n (1, 2, ...): base * 2^(n-1), capped,
-- with "equal jitter" (a random point in its upper half).
function retry.backoff(n, base, cap)
  local d = math.min(cap or retry.CAP, (base or retry.BASE) * 2 ^ (n - 1))
  return d / 2 + math.random() * d / 2
end

-- Seconds since the epoch of a UTC date (days-from-civil, proleptic Gregorian).
local function epoch(y, m, d, hh, mi, ss)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return (era * 146097 + doe - 719468) * 86400 + hh * 3600 + mi * 60 + ss
end

-- Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime) into epoch seconds.
function retry.http_date(s)
  local d, mon, y, hh, mi, ss = s:match("^%a+, (%d%d?) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    d, mon, y, hh, mi, ss = s:match("^%a+, (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if y then y = tonumber(y) + (tonumber(y) < 70 and 2000 or 1900) end
  end
  if not d then
    mon, d, hh, mi, ss, y = s:match("^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  local m = mon and MONTHS[mon]
  if not m then return nil end
  return epoch(tonumber(y), m, tonumber(d), tonumber(hh), tonumber(mi), tonumber(ss))
end

-- Parses a Retry-After value into seconds from now (never negative), or nil.
function retry.after(value, now)
  if type(value) ~= "string" then return nil end
  value = value:match("^%s*(.-)%s*$")
  if value:match("^%d+$") then return tonumber(value) end
  local t = retry.http_date(value)
  if not t then return nil end
  return math.max(0, t - (now or time.now()))
end

-- Returns how long to wait before retry number n after response res.
local function delay(opts, n, res)
  local wait = retry.backoff(n, opts.base, opts.cap)
  if res and (res.status == 429 or res.status == 503) then
    local after = retry.after(res.headers and res.headers["retry-after"])
    if after then wait = math.min(after, opts.max_after or retry.MAX_AFTER) end
  end
  return wait
end

-- Calls fn() (which returns res | nil, err, detail like http.request) until it
-- succeeds or fails for good, sleeping between attempts through time.sleep so
-- that cancellation stops it. opts: retries, base, cap, max_after, and final
-- (a function of a response: true when a short retry cannot help, as a 429
-- saying a pull quota is used up, which the caller waits out itself). what
-- names the request in log lines. Returns fn's last results.
-- A request to an origin that was found down (see down) is tried once; the
-- rule applies per origin, e.g. "https://host:5000", taken from what.
function retry.run(opts, what, fn)
  local max = opts.retries or retry.RETRIES
  local origin = what:match("^%u+ (%a[%w+.-]*://[^/?#]+)")
  origin = origin and origin:lower()
  local was_down = origin and down[origin] and down[origin] > time.mono()
  if was_down then max = 0 end
  local n = 0
  while true do
    local res, err, detail = fn()
    if origin and err ~= "cancelled" then
      if err ~= "connect" then
        down[origin] = nil -- it answers: the usual retries again
        if was_down then max, was_down = opts.retries or retry.RETRIES, false end
      elseif n >= max and (n > 0 or was_down) then
        down[origin] = time.mono() + retry.DOWN_FOR
        if was_down then
          detail = string.format("%s; not retried: %s refused every attempt of an earlier request",
                                 detail or err, origin)
        end
      end
    end
    if err == "cancelled" or n >= max or not retry.transient(res, err) or (res and opts.final and opts.final(res)) then
      return res, err, detail
    end
    n = n + 1
    count("request", res and res.status or err)
    local wait = delay(opts, n, res)
    log.warn("%s: %s, retry %d/%d in %.2f s", what, res and ("http " .. res.status) or err, n, max, wait)
    local ok, serr = time.sleep(wait)
    if not ok then return nil, serr end
  end
end

-- Waits before retry number n of a failed blob copy, which failed with
-- why (blob.copy's error: "http 503", "closed"...); nil, "cancelled" if
-- stopped.
function retry.pause(opts, n, why)
  count("blob", why)
  return time.sleep(retry.backoff(n, opts.base, opts.cap))
end

return retry
