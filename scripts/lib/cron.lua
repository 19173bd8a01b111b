-- cron.lua - cron schedules, evaluated in UTC: 5 fields, or Harbor's 6
-- with seconds first (what Harbor's schedules are written in).
--   minute hour day-of-month month day-of-week
--   second minute hour day-of-month month day-of-week
--   *  5  1-5  */15  1-30/10  10/20 (10 to the end)  1,15,30
--   months JAN-DEC and days SUN-SAT by name, any case; day-of-week 7 is Sunday
--   @yearly @annually @monthly @weekly @daily @midnight @hourly
-- As in Vixie cron, when both day fields are restricted (neither starts with
-- '*') a day matches if either does; otherwise both must match.
-- cron.parse(expr) -> schedule | nil, err
-- schedule:next(t) -> epoch seconds | nil; schedule:matches(t) -> boolean
local cron = {}

local SECOND = { name = "second", min = 0, max = 59 }

local FIELDS = {
  { name = "minute", min = 0, max = 59 },
  { name = "hour", min = 0, max = 23 },
  { name = "day-of-month", min = 1, max = 31 },
  { name = "month", min = 1, max = 12,
    names = { JAN = 1, FEB = 2, MAR = 3, APR = 4, MAY = 5, JUN = 6,
              JUL = 7, AUG = 8, SEP = 9, OCT = 10, NOV = 11, DEC = 12 } },
  { name = "day-of-week", min = 0, max = 7, last = 6,   -- '*' is 0-6
    names = { SUN = 0, MON = 1, TUE = 2, WED = 3, THU = 4, FRI = 5, SAT = 6 } },
}

local MACROS = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *",
  ["@monthly"] = "0 0 1 * *", ["@weekly"] = "0 0 * * 0",
  ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
  ["@hourly"] = "0 * * * *",
}

-- How far next() searches. Eight years covers every Feb 29 schedule, even
-- across a century year that is not a leap year (2096 -> 2104).
local HORIZON_YEARS = 8

-- Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- The date (year, month, day) of a count of days since 1970-01-01.
local function civil_from_days(z)
  z = z + 719468
  local era = z // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function is_leap(y)
  return y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)
end

local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function days_in_month(y, m)
  if m == 2 and is_leap(y) then return 29 end
  return MONTH_DAYS[m]
end

-- The month after y-m.
local function next_month(y, m)
  if m < 12 then return y, m + 1 end
  return y + 1, 1
end

-- The day after y-m-d.
local function next_day(y, m, d)
  if d < days_in_month(y, m) then return y, m, d + 1 end
  y, m = next_month(y, m)
  return y, m, 1
end

-- Reads one value of a field (a number, or a name where the field has them);
-- returns it, or nil and the reason.
local function value(field, tok)
  local n
  if tok:match("^%d+$") then
    n = tonumber(tok)
  elseif field.names and field.names[tok:upper()] then
    return field.names[tok:upper()]
  else
    local what = field.names and ("a number or " .. (field.name == "month" and "month" or "day") .. " name")
      or "a number"
    return nil, string.format("%s %q is not %s", field.name, tok, what)
  end
  if n < field.min or n > field.max then
    return nil, string.format("%s %s out of range %d-%d", field.name, tok, field.min, field.max)
  end
  return n
end

-- Parses one field into a set { [v] = true }; returns the set, or nil, err.
local function parse_field(field, text)
  local set = {}
  for item in (text .. ","):gmatch("(.-),") do
    if item == "" then
      return nil, string.format("%s has an empty list item in %q", field.name, text)
    end
    local range, step = item:match("^([^/]*)/(.*)$")
    range = range or item
    local lo, hi, err
    if range == "*" then
      lo, hi = field.min, field.last or field.max
    else
      local a, b = range:match("^([^-]+)-([^-]+)$")
      lo, err = value(field, a or range)
      if not lo then return nil, err end
      if b then
        hi, err = value(field, b)
        if not hi then return nil, err end
        if hi < lo then
          return nil, string.format("%s range %s is reversed", field.name, range)
        end
      elseif step then
        hi = field.last or field.max     -- a/n: from a to the end
      else
        hi = lo
      end
    end
    local by = 1
    if step then
      if not step:match("^%d+$") then
        return nil, string.format("%s step %q in %q is not a number", field.name, step, item)
      end
      by = tonumber(step)
      if by == 0 then
        return nil, string.format("%s step 0 in %q must be at least 1", field.name, item)
      end
    end
    for v = lo, hi, by do set[v] = true end
  end
  return set
end

-- Lists the members of a set in increasing order, from lo to hi.
local function sorted(set, lo, hi)
  local list = {}
  for v = lo, hi do
    if set[v] then list[#list + 1] = v end
  end
  return list
end

-- Returns the first member of a sorted list that is >= v, or nil.
local function first_from(list, v)
  for _, x in ipairs(list) do
    if x >= v then return x end
  end
  return nil
end

local Schedule = {}
Schedule.__index = Schedule

-- Returns the schedule's original text.
function Schedule:__tostring()
  return self.expr
end

-- Returns whether the day y-m-d matches the day-of-month and day-of-week
-- fields, with Vixie cron's either-or rule when both are restricted.
function Schedule:day_matches(y, m, d)
  local dom = self.days[d] == true
  local dow = self.weekdays[(days_from_civil(y, m, d) + 4) % 7] == true  -- 1970-01-01 was a Thursday
  if self.dom_star or self.dow_star then
    return dom and dow
  end
  return dom or dow
end

-- Parses a cron expression; returns a schedule, or nil and an error naming
-- the field and the bad token.
function cron.parse(expr)
  if type(expr) ~= "string" then
    return nil, "cron: expression must be a string, got " .. type(expr)
  end
  local function fail(msg)
    return nil, string.format("cron %q: %s", expr, msg)
  end
  local text = expr:match("^%s*(.-)%s*$")
  if text:sub(1, 1) == "@" then
    local macro = MACROS[text:lower()]
    if not macro then
      return fail(string.format("unknown macro %q (expected @yearly, @annually, @monthly, " ..
        "@weekly, @daily, @midnight or @hourly)", text))
    end
    text = macro
  end
  local parts = {}
  for p in text:gmatch("%S+") do parts[#parts + 1] = p end
  local seconds, six = { 0 }, #parts == 6
  if six then
    local set, err = parse_field(SECOND, table.remove(parts, 1))
    if not set then return fail(err) end
    seconds = sorted(set, 0, 59)
  elseif #parts ~= 5 then
    return fail(string.format("expected 5 fields (minute hour day-of-month month day-of-week) " ..
      "or 6 with seconds first, got %d", #parts))
  end
  local sets = {}
  for i, field in ipairs(FIELDS) do
    local set, err = parse_field(field, parts[i])
    if not set then return fail(err) end
    sets[i] = set
  end
  if sets[5][7] then sets[5][0], sets[5][7] = true, nil end
  return setmetatable({
    expr = expr,
    seconds = seconds,
    six = six,
    minutes = sorted(sets[1], 0, 59),
    hours = sorted(sets[2], 0, 23),
    days = sets[3],
    months = sets[4],
    weekdays = sets[5],
    dom_star = parts[3]:sub(1, 1) == "*",
    dow_star = parts[5]:sub(1, 1) == "*",
  }, Schedule)
end

-- Returns whether t (epoch seconds) matches: the minute containing it, and
-- for a 6-field schedule its second too.
function Schedule:matches(t)
  if type(t) ~= "number" then error("cron: time must be a number, got " .. type(t), 2) end
  local m = math.floor(t / 60)
  if self.six and first_from(self.seconds, math.floor(t) % 60) ~= math.floor(t) % 60 then return false end
  return self:minute_from(m) == m
end

-- Returns the first matching minute (minutes since the epoch) at or after
-- minute m, or nil when nothing matches within HORIZON_YEARS. Whole months,
-- days and hours that cannot match are skipped at once.
function Schedule:minute_from(m)
  local y, mo, d = civil_from_days(m // 1440)
  local h, mi = m % 1440 // 60, m % 60
  local last_year = y + HORIZON_YEARS
  while y <= last_year do
    if not self.months[mo] then
      y, mo = next_month(y, mo)
      d, h, mi = 1, 0, 0
    elseif not self:day_matches(y, mo, d) then
      y, mo, d = next_day(y, mo, d)
      h, mi = 0, 0
    else
      local nh, nm = first_from(self.hours, h), nil
      if nh == h then
        nm = first_from(self.minutes, mi)
      elseif nh then
        nm = self.minutes[1]
      end
      if nm then
        return days_from_civil(y, mo, d) * 1440 + nh * 60 + nm
      end
      -- This hour is used up: on to the next matching hour, or the next day.
      nh = first_from(self.hours, h + 1)
      if nh then
        h, mi = nh, 0
      else
        y, mo, d = next_day(y, mo, d)
        h, mi = 0, 0
      end
    end
  end
  return nil
end

-- Returns the first matching time strictly after t (epoch seconds, UTC, on a
-- whole second; on a whole minute for a 5-field schedule), or nil when
-- nothing matches within HORIZON_YEARS.
function Schedule:next(t)
  if type(t) ~= "number" then error("cron: time must be a number, got " .. type(t), 2) end
  local s = math.floor(t) + 1
  local m = self:minute_from(s // 60)
  if m == s // 60 then
    local sec = first_from(self.seconds, s % 60)
    if sec then return m * 60 + sec end
    m = self:minute_from(m + 1)
  end
  return m and m * 60 + self.seconds[1]
end

return cron
