-- loglimit.lua, the rate limit of the daemon's repeated warnings (a blocked
-- address, a 503 for a database that cannot be written, task log lines
-- lost): one line per period, and the count of those left out, on a clock
-- the spec moves.
local t = require("tap").new(...)
local loglimit = require("loglimit")

t.test("one line per period; the next one says how many were left out", function()
  local now = 100
  local l = loglimit.new(10, function() return now end)
  local pass, quiet = l:pass()
  t.eq(pass, true, "the first line goes out")
  t.eq(quiet, 0)
  pass, quiet = l:pass()
  t.eq(pass, false, "a second line at once is left out")
  t.eq(quiet, nil)
  now = now + 9.9
  t.eq(l:pass(), false, "and so is one just before the period ends")
  now = now + 0.1
  pass, quiet = l:pass()
  t.eq(pass, true, "once the period has passed a line goes out")
  t.eq(quiet, 2, "counting the two left out")
  now = now + 60
  pass, quiet = l:pass()
  t.eq(pass, true)
  t.eq(quiet, 0, "none left out since")
end)

t.done()
