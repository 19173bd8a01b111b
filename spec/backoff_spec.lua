-- The bad-credential backoff of `replica serve` (serve/backoff.lua), on a
-- clock the spec moves: what blocks an address and for how long, that
-- failures age out, that blocks double up to the cap and are forgotten
-- after a quiet spell, and that the table never holds more addresses than
-- its size. tests/e2e/serve_badtoken.t checks the same over HTTP.
local t = require("tap").new(...)
local backoff = require("serve.backoff")

-- Returns a table with base seconds and size, and a function that moves
-- its clock on by the seconds given.
local function fresh(base, size)
  local now = 1000
  local b = backoff.new{ base = base, size = size, clock = function() return now end }
  return b, function(s) now = now + s end
end

t.test("five failures within a minute block for base seconds; four do not", function()
  local b, tick = fresh(10)
  for _ = 1, 4 do t.eq(b:failed("10.0.0.1"), nil) tick(1) end
  t.eq(b:blocked("10.0.0.1"), nil, "four failures: not blocked")
  t.eq(b:failed("10.0.0.1"), 10, "the fifth starts a 10 s block")
  t.eq(b:blocked("10.0.0.1"), 10)
  tick(3.5)
  t.eq(b:blocked("10.0.0.1"), 7, "Retry-After is the whole seconds left, rounded up")
  t.eq(b:blocked("10.0.0.2"), nil, "another address is not blocked")
  tick(6.5)
  t.eq(b:blocked("10.0.0.1"), nil, "the block ends on time")
end)

t.test("failures older than the window are not counted", function()
  local b, tick = fresh(10)
  for _ = 1, 4 do b:failed("a") end
  tick(61)
  t.eq(b:failed("a"), nil, "a fifth failure a minute later starts no block")
  for _ = 1, 3 do b:failed("a") end
  t.eq(b:failed("a"), 10, "five within the new window do")
end)

t.test("after a block one failure blocks again, twice as long, up to 15 minutes", function()
  local b, tick = fresh(100)
  for _ = 1, 5 do b:failed("a") end
  local want = { 200, 400, 800, 900, 900 }
  for i, w in ipairs(want) do
    tick(b:blocked("a"))
    t.eq(b:blocked("a"), nil)
    t.eq(b:failed("a"), w, "block " .. (i + 1))
  end
end)

t.test("an address quiet for 15 minutes starts again from five failures", function()
  local b, tick = fresh(10)
  for _ = 1, 5 do b:failed("a") end
  tick(10 + 901)
  t.eq(b:failed("a"), nil, "one failure after the quiet spell blocks nothing")
end)

t.test("the table holds at most size addresses, forgetting the oldest failure", function()
  local b, tick = fresh(10, 3)
  for _ = 1, 5 do b:failed("old") end
  tick(1)
  b:failed("b")
  tick(1)
  b:failed("c")
  tick(1)
  b:failed("d")
  t.eq(b.count, 3, "three addresses kept")
  t.eq(b.entries.old, nil, "the one whose last failure is oldest went")
  t.ok(b.entries.b and b.entries.c and b.entries.d, "the others stay")
  for i = 1, 1000 do b:failed("x" .. i) end
  t.eq(b.count, 3, "a thousand more addresses still keep three")
end)

t.test("an IPv6 address counts as its /64, an IPv4-mapped one as its IPv4 address", function()
  t.eq(backoff.key("192.0.2.7"), "192.0.2.7")
  t.eq(backoff.key("::ffff:192.0.2.7"), "192.0.2.7")
  t.eq(backoff.key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
  t.eq(backoff.key("2001:db8::1"), "2001:db8:0:0::/64")
  t.eq(backoff.key("::1"), "0:0:0:0::/64")
  t.eq(backoff.key("64:ff9b:1:2:3:4:192.0.2.1"), "64:ff9b:1:2::/64")
  t.eq(backoff.key("fe80:0:0:0:1:2:3:4"), "fe80:0:0:0::/64")
  local b = fresh(10)
  for i = 1, 4 do b:failed("2001:db8:1:2::" .. i) end
  t.eq(b:failed("2001:db8:1:2:ffff::9"), 10, "five addresses of one /64 make five failures")
  t.eq(b:blocked("2001:db8:1:2::77"), 10, "and block the whole /64")
  t.eq(b:blocked("2001:db8:1:3::1"), nil, "not the next /64")
end)

t.test("base 0 turns the backoff off", function()
  local b = fresh(0)
  for _ = 1, 20 do t.eq(b:failed("a"), nil) end
  t.eq(b:blocked("a"), nil)
end)

t.done()
