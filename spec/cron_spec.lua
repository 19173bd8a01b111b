-- Cron schedules, as `replica serve` uses them to start scheduled runs: what
-- an expression means, and the next UTC minute (or second, in Harbor's
-- 6-field form) it fires after a given time.
-- Expected times were computed with `date -u -d @N`, independently of the
-- module.
local t = require("tap").new(...)
local cron = require("cron")

-- Parses expr, failing the test on an error.
local function sched(expr)
  local s, err = cron.parse(expr)
  t.ok(s, err)
  return s
end

-- Checks that expr fires at each of want in turn, starting after from.
local function fires(expr, from, want)
  local s = sched(expr)
  local at = from
  for i, w in ipairs(want) do
    local got = s:next(at)
    t.eq(got, w, string.format("%s: firing %d after %s", expr, i, at))
    at = got
  end
end

t.test("every minute fires on the next whole minute, strictly after", function()
  -- 2024-03-10 14:22:37 -> 14:23:00, 14:24:00
  fires("* * * * *", 1710080557, { 1710080580, 1710080640 })
  -- exactly 14:23:00 -> 14:24:00, never the same instant
  fires("* * * * *", 1710080580, { 1710080640 })
  -- fractional seconds: 14:22:59.5 -> 14:23:00
  fires("* * * * *", 1710080579.5, { 1710080580 })
end)

t.test("*/15 fires at :00 :15 :30 :45, across hours and days", function()
  -- 2024-03-10 14:22:37 -> 14:30, 14:45, 15:00
  fires("*/15 * * * *", 1710080557, { 1710081000, 1710081900, 1710082800 })
  -- 2024-03-10 23:59:00 (Sun) -> 2024-03-11 00:00 (Mon)
  fires("*/15 * * * *", 1710115140, { 1710115200 })
end)

t.test("hourly at :05", function()
  -- 2024-03-10 14:22:37 -> 15:05
  fires("5 * * * *", 1710080557, { 1710083100 })
  -- 2024-03-10 14:04:59 -> 14:05 the same hour
  fires("5 * * * *", 1710079499, { 1710079500, 1710083100 })
end)

t.test("daily at 02:30", function()
  -- 2024-03-10 14:22:37 -> 2024-03-11 02:30
  fires("30 2 * * *", 1710080557, { 1710124200, 1710124200 + 86400 })
  -- 2024-03-11 01:00 -> 02:30 the same day
  fires("30 2 * * *", 1710118800, { 1710124200 })
end)

t.test("weekdays 09:00 skip the weekend", function()
  -- Fri 2024-03-08 10:00 -> Mon 2024-03-11 09:00
  fires("0 9 * * 1-5", 1709892000, { 1710147600, 1710147600 + 86400 })
  -- Sat 2024-03-09 12:00 -> Mon 2024-03-11 09:00
  fires("0 9 * * 1-5", 1709985600, { 1710147600 })
end)

t.test("month and day names, in any case, mean their numbers", function()
  -- 2024-03-10 14:22:37 -> 2024-07-01 08:00 (JUL), 2025-01-01 08:00 (jan)
  fires("0 8 1 jan,JUL *", 1710080557, { 1719820800, 1735718400 })
  -- Wed 2024-03-13 12:00 -> Sat 2024-03-16 06:30
  fires("30 6 * * Sat", 1710331200, { 1710570600 })
  -- MON-FRI is 1-5: Fri 2024-03-08 10:00 -> Mon 2024-03-11 09:00
  fires("0 9 * * MON-FRI", 1709892000, { 1710147600 })
  -- 2024-03-10 14:22:37, Mar-May only, 1st -> 2024-04-01 00:00
  t.eq(sched("0 0 1 MAR-may *"):next(1710080557), sched("0 0 1 3-5 *"):next(1710080557))
end)

t.test("day-of-week 7 is Sunday, like 0", function()
  -- Wed 2024-03-13 12:00 -> Sun 2024-03-17 00:00
  fires("0 0 * * 7", 1710331200, { 1710633600 })
  fires("0 0 * * 0", 1710331200, { 1710633600 })
  -- 5-7 is Fri, Sat, Sun: Wed 2024-03-13 12:00 -> Fri 15, Sat 16, Sun 17
  fires("0 0 * * 5-7", 1710331200, { 1710460800, 1710460800 + 86400, 1710633600 })
end)

t.test("day-of-month and day-of-week both restricted: either matches", function()
  -- the 13th or any Friday, from Sun 2024-03-10:
  -- Wed 03-13, Fri 03-15, 03-22, 03-29, 04-05, 04-12, Sat 04-13, Fri 04-19
  fires("0 0 13 * 5", 1710080557, {
    1710288000, 1710460800, 1711065600, 1711670400,
    1712275200, 1712880000, 1712966400, 1713484800,
  })
  -- with day-of-week '*', only the 13th: 2024-03-13, 2024-04-13
  fires("0 0 13 * *", 1710080557, { 1710288000, 1712966400 })
  -- with day-of-month '*', only Fridays: 2024-03-15, 2024-03-22
  fires("0 0 * * 5", 1710080557, { 1710460800, 1711065600 })
end)

t.test("a day field starting with '*' counts as unrestricted (Vixie cron)", function()
  -- */13 is the 1st, 14th and 27th; with Friday both must hold:
  -- from Sun 2024-03-10 the first is Fri 2024-06-14
  fires("0 0 */13 * 5", 1710080557, { 1718323200 })
end)

t.test("steps from a start, and stepped ranges", function()
  -- 10/20 is minutes 10, 30, 50: 2024-03-10 14:31 -> 14:50, 15:10
  fires("10/20 * * * *", 1710081060, { 1710082200, 1710082800 + 600 })
  -- 1-10/4 is hours 1, 5, 9: 2024-03-10 09:30 -> 2024-03-11 01:00, 05:00
  fires("0 1-10/4 * * *", 1710063000, { 1710118800, 1710118800 + 4 * 3600 })
  -- 1/2 in day-of-week runs to Saturday, not to 7 (Sunday):
  -- Sun 2024-03-10 -> Mon 03-11, Wed 03-13, Fri 03-15, Mon 03-18
  fires("0 0 * * 1/2", 1710080557, { 1710115200, 1710288000, 1710460800, 1710720000 })
  -- lists: 2024-03-10 14:22:37 -> 14:45, then 15:07
  fires("7,45 * * * *", 1710080557, { 1710081900, 1710083220 })
end)

t.test("Harbor's 6 fields: seconds first, fired on the second", function()
  -- 1710080557 is 2024-03-10 14:22:37 UTC
  fires("0 * * * * *", 1710080557, { 1710080580, 1710080640 })
  fires("* * * * * *", 1710080557, { 1710080558, 1710080559 })
  fires("*/15 * * * * *", 1710080557, { 1710080565, 1710080580, 1710080595 })
  -- second 40 of this minute is still to come; second 30 is next minute's
  fires("40 * * * * *", 1710080557, { 1710080560, 1710080620 })
  fires("30 * * * * *", 1710080557, { 1710080610 })
  -- at 02:30:10 daily (Harbor's "10 30 2 * * *")
  fires("10 30 2 * * *", 1710080557, { 1710124210, 1710124210 + 86400 })
  -- strictly after: from the matching second itself, the next one
  fires("40 * * * * *", 1710080560, { 1710080620 })
  -- a fraction of a second before it still fires on it
  fires("40 * * * * *", 1710080559.5, { 1710080560 })
  -- 5 fields behave as 6 with second 0
  t.eq(sched("0 9 * * 1-5"):next(1709892000), sched("0 0 9 * * 1-5"):next(1709892000))
  t.ok(sched("40 22 14 * * *"):matches(1710080560), "matches its second")
  t.ok(not sched("40 22 14 * * *"):matches(1710080557), "not another second of the minute")
  t.ok(sched("22 14 * * *"):matches(1710080557), "a 5-field schedule matches its whole minute")
end)

t.test("Feb 29 waits for the next leap year", function()
  -- 2026-01-01 00:00 -> 2028-02-29 00:00
  fires("0 0 29 2 *", 1767225600, { 1835395200 })
end)

t.test("the year rolls over", function()
  -- 2024-12-31 23:59:30 -> 2025-01-01 00:00
  fires("0 0 1 1 *", 1735689570, { 1735689600 })
  fires("@yearly", 1735689570, { 1735689600 })
  -- 2025-12-31 23:50 -> 2026-01-01 00:00
  fires("*/15 * * * *", 1767225000, { 1767225600 })
  -- last Monday of 2024 at 2024-12-30, then the next Monday 2025-01-06
  fires("0 0 * * 1", 1735516800 - 1, { 1735516800, 1735516800 + 7 * 86400 })
end)

t.test("an impossible schedule has no next time", function()
  t.eq(sched("0 0 30 2 *"):next(1767225600), nil, "Feb 30")
  t.eq(sched("0 0 31 4,6,9,11 *"):next(1767225600), nil, "31st of a 30-day month")
end)

t.test("macros mean their five-field forms", function()
  local from = 1710080557  -- Sun 2024-03-10 14:22:37
  local forms = {
    ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *", ["@monthly"] = "0 0 1 * *",
    ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
    ["@hourly"] = "0 * * * *", ["@DAILY"] = "0 0 * * *",
  }
  for macro, form in pairs(forms) do
    t.eq(sched(macro):next(from), sched(form):next(from), macro)
  end
  fires("@hourly", from, { 1710082800 })  -- 15:00
  fires("@weekly", from, { 1710633600 })  -- Sun 2024-03-17 00:00
end)

t.test("matches tells whether a minute is on the schedule", function()
  local s = sched("30 2 * * 1-5")
  t.eq(s:matches(1710124200), true, "Mon 2024-03-11 02:30")
  t.eq(s:matches(1710124200 + 59), true, "seconds within the minute are ignored")
  t.eq(s:matches(1710124200 + 60), false, "02:31")
  t.eq(s:matches(1710124200 - 86400), false, "Sun 2024-03-10 02:30")
  t.eq(sched("0 0 13 * 5"):matches(1710288000), true, "Wed 2024-03-13 by day-of-month")
  t.eq(sched("0 0 13 * 5"):matches(1710460800), true, "Fri 2024-03-15 by day-of-week")
end)

t.test("next agrees with a minute-by-minute scan", function()
  local exprs = { "*/7 */5 * * *", "45 22 28-31 * *", "0 6 * jan,jul mon-fri", "15 10 */3 * 2" }
  local from = 1735516800 - 3 * 86400  -- 2024-12-27 00:00, across the new year
  for _, e in ipairs(exprs) do
    local s = sched(e)
    local at = from
    for _ = 1, 5 do
      local want = (at // 60 + 1) * 60
      while not s:matches(want) do want = want + 60 end
      local got = s:next(at)
      t.eq(got, want, e)
      at = got + 17
    end
  end
end)

t.test("the schedule keeps its text", function()
  t.eq(sched("*/5 * * * *").expr, "*/5 * * * *")
  t.eq(tostring(sched("@daily")), "@daily")
end)

t.test("bad expressions fail with the field and the token", function()
  local cases = {
    { "61 * * * *", 'cron "61 %* %* %* %*": minute 61 out of range 0%-59' },
    { "0 24 * * *", "hour 24 out of range 0%-23" },
    { "0 0 0 * *", "day%-of%-month 0 out of range 1%-31" },
    { "0 0 * 13 *", "month 13 out of range 1%-12" },
    { "0 0 * * 8", "day%-of%-week 8 out of range 0%-7" },
    { "* * * *", "expected 5 fields .* got 4" },
    { "* * * * * * *", "or 6 with seconds first, got 7" },
    { "60 * * * * *", "second 60 out of range 0%-59" },
    { "*/0 * * * * *", 'second step 0 in "%*/0" must be at least 1' },
    { "", "got 0" },
    { "1,,2 * * * *", 'minute has an empty list item in "1,,2"' },
    { "5, * * * *", "minute has an empty list item" },
    { "0 5-1 * * *", "hour range 5%-1 is reversed" },
    { "0 0 * * FRI-MON", "day%-of%-week range FRI%-MON is reversed" },
    { "*/0 * * * *", 'minute step 0 in "%*/0" must be at least 1' },
    { "*/x * * * *", 'minute step "x"' },
    { "0 0 * FOO *", 'month "FOO" is not a number or month name' },
    { "0 0 * * FUNDAY", 'day%-of%-week "FUNDAY" is not a number or day name' },
    { "0 0 JAN * *", 'day%-of%-month "JAN" is not a number' },
    { "1-2-3 * * * *", 'minute "1%-2%-3" is not a number' },
    { "@reboot", 'unknown macro "@reboot"' },
  }
  for _, c in ipairs(cases) do
    local s, err = cron.parse(c[1])
    t.eq(s, nil, c[1])
    t.match(err, c[2], c[1])
  end
  local s, err = cron.parse(nil)
  t.eq(s, nil)
  t.match(err, "must be a string")
  t.raises(function() sched("* * * * *"):next("soon") end, "time must be a number")
end)

t.done()
