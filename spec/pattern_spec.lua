-- Pattern matching under the task's budget: a pattern that backtracks for
-- ages is stopped at the CPU limit instead of freezing the daemon, and long
-- legitimate find/match/gmatch/gsub calls pause so other tasks keep running.
-- (tests/e2e/pattern.t checks the results against stock Lua.)
--
-- The calls are written string.match(s, ...) rather than s:match(...): the
-- engine's functions are in the sandbox's string table.
local t = require("tap").new(...)
local loopwatch = require("loopwatch")
local E = t.env

local MiB = 1024 * 1024
-- Under valgrind everything runs ~30 times slower: smaller inputs, laxer clocks.
local slow = E.VALGRIND == "1"
local SCALE = slow and 1 / 16 or 1
local MAX_GAP = slow and 1.0 or 0.2

-- Runs fn as a task next to a watcher; returns fn's outcome (ok, ...), the
-- seconds it took and the watcher's longest gap.
local function beside_watcher(opts, fn)
  local done = false
  local w = loopwatch.start(function() return done end, 0.01)
  local t0 = time.mono()
  local h = task.spawn(opts, fn)
  local r = table.pack(h:wait())
  local took = time.mono() - t0
  done = true
  local ok, worst = w:wait()
  t.ok(ok, worst)
  return r, took, worst
end

t.test("a runaway backtracking match is stopped at the CPU limit without stalling other tasks", function()
  local r, took, worst = beside_watcher({ name = "backtracker", cpu = 0.5 }, function()
    return string.match(string.rep("a", 400), ".-.-.-b")
  end)
  t.eq(r[1], nil, "the match was not stopped")
  t.match(r[2], "exceeded its CPU limit", "the error")
  t.match(r[2], "'backtracker'", "the error names the task")
  t.ok(took >= 0.5, "stopped before its budget was spent: " .. took)
  t.ok(took < 2, "stopped late: " .. took)
  t.ok(worst < MAX_GAP, string.format("another task was kept waiting %.3f s", worst))
end)

t.test("catching the CPU-limit error of a match with pcall does not keep the task alive", function()
  local escaped = false
  local h = task.spawn({ name = "pcall-backtracker", cpu = 0.3 }, function()
    for _ = 1, 100 do pcall(string.find, string.rep("a", 400), ".-.-.-b") end
    escaped = true
  end)
  local ok, err = h:wait()
  t.eq(ok, nil)
  t.match(err, "CPU limit")
  t.ok(not escaped, "the task ran on after its limit")
end)

t.test("a match in a coroutine the script created is held to the CPU limit too", function()
  local h = task.spawn({ name = "co-backtracker", cpu = 0.3 }, function()
    return coroutine.wrap(function() return string.gsub(string.rep("a", 400), ".-.-.-b", "") end)()
  end)
  local ok, err = h:wait()
  t.eq(ok, nil)
  t.match(err, "CPU limit")
end)

t.test("a long gsub with a function replacement completes while other tasks keep running", function()
  local pairs_n = math.floor(2 * MiB * SCALE)
  local s = string.rep("ab", pairs_n) -- 4 MiB
  local r, _, worst = beside_watcher({ name = "swapper" }, function()
    return string.gsub(s, "(a)(b)", function(a, b) return b .. a end)
  end)
  t.ok(r[1], r[2])
  t.ok(r[2] == string.rep("ba", pairs_n), "wrong result")
  t.eq(r[3], pairs_n)
  t.ok(worst < MAX_GAP, string.format("another task was kept waiting %.3f s", worst))
end)

t.test("a gsub replacement function may wait (time.sleep) and gsub carries on", function()
  local calls = 0
  local out, n = string.gsub("a1b2c3", "%d", function(d)
    calls = calls + 1
    time.sleep(0.001)
    return "<" .. d .. ">"
  end)
  t.eq(out, "a<1>b<2>c<3>")
  t.eq(n, 3)
  t.eq(calls, 3)
end)

t.test("a long gsub with a string or table replacement pauses too", function()
  local s = string.rep("hello world ", math.floor(1000000 * SCALE))
  local r, _, worst = beside_watcher({ name = "gsubber" }, function()
    local a, na = string.gsub(s, "(%w+) (%w+)", "%2-%1")
    local b, nb = string.gsub(a, "%w+", { hello = "HI" })
    return #a, na, #b, nb, string.sub(b, 1, 12)
  end)
  t.ok(r[1], r[2])
  t.eq(r[2], #s)
  t.eq(r[3], #s // 12)
  t.eq(r[4], #s - 3 * (#s // 12))
  t.eq(r[5], 2 * (#s // 12))
  t.eq(r[6], "world-HI wor")
  t.ok(worst < MAX_GAP, string.format("another task was kept waiting %.3f s", worst))
end)

t.test("a gmatch loop over a large string pauses, also inside one long iterator step", function()
  local n = math.floor(8000 * math.sqrt(SCALE))
  -- every start position scans to the '!' and fails, until the last three bytes
  local s = string.rep("a", n) .. "!y" .. "a!x"
  local big = string.rep("key=value ", math.floor(300000 * SCALE))
  local r, _, worst = beside_watcher({ name = "gmatcher" }, function()
    local found = {}
    for m in string.gmatch(s, "a-!x") do found[#found + 1] = m end
    local words = 0
    for k, v in string.gmatch(big, "(%w+)=(%w+)") do
      if k == "key" and v == "value" then words = words + 1 end
    end
    return table.concat(found, ","), words
  end)
  t.ok(r[1], r[2])
  t.eq(r[2], "a!x")
  t.eq(r[3], #big // 10)
  t.ok(worst < MAX_GAP, string.format("another task was kept waiting %.3f s", worst))
end)

t.test("a long find without a match pauses, plain or not", function()
  local n = math.floor(8000 * math.sqrt(SCALE))
  local s = string.rep("a", n) .. "!y"
  local hay = string.rep("abcd", math.floor(4 * MiB * SCALE)) .. "needle"
  local r, _, worst = beside_watcher({ name = "finder" }, function()
    local a = string.find(s, "a-!x")
    local b, e = string.find(hay, "needle", 1, true)
    local c = string.find(hay, "needlf", 1, true)
    local d = string.match(hay, "()needle$")
    return a, b, e, c, d
  end)
  t.ok(r[1], r[2])
  t.eq(r[2], nil)
  t.eq(r[3], #hay - 5)
  t.eq(r[4], #hay)
  t.eq(r[5], nil)
  t.eq(r[6], #hay - 5)
  t.ok(worst < MAX_GAP, string.format("another task was kept waiting %.3f s", worst))
end)

t.test("gsub's output is charged to the task's memory limit", function()
  local h = task.spawn({ name = "expander", memory = 8 * MiB }, function()
    return #string.gsub(string.rep("a", MiB // 2), "a", string.rep("x", 64))
  end)
  local ok, err = h:wait()
  t.eq(ok, nil, "a 32 MiB result fitted in 8 MiB")
  t.match(err, "memory limit")
  local h2 = task.spawn({ name = "small-expander", memory = 8 * MiB }, function()
    return #string.gsub(string.rep("a", 64 * 1024), "a", "xx")
  end)
  local ok2, len = h2:wait()
  t.ok(ok2, len)
  t.eq(len, 128 * 1024)
end)

t.test("a gmatch iterator shared with a task that paused inside it refuses to run", function()
  local s = string.rep("a", math.floor(8000 * math.sqrt(SCALE))) .. "!y" .. "a!x"
  local it = string.gmatch(s, "a-!x")
  local first = task.spawn({ name = "first" }, function() return it() end)
  task.yield() -- let first start and pause inside the iterator
  local second = task.spawn({ name = "second" }, function() return it() end)
  local ok2, err2 = second:wait()
  local ok1, m1 = first:wait()
  t.ok(ok1, m1)
  t.eq(m1, "a!x")
  if ok2 then
    t.eq(err2, nil, "the second call ran after the first had finished")
  else
    t.match(err2, "paused")
  end
end)

t.done()
