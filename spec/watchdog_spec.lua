-- sys.watchdog*: what `replica serve` asks of the watchdog thread (its
-- settings, what it saw, and the record file of forced exits), and that the
-- test-only blocking call exists only when REPLICA_TEST_HOOKS=1.
local t = require("tap").new(...)

t.test("watchdog_status starts with no stalls and the command's settings", function()
  local st = sys.watchdog_status()
  t.eq(st.stalls, 0)
  t.eq(st.last, nil, "no last stall before the first")
  t.eq(st.grace, 10, "the default grace period")
  t.eq(st.stall, 2, "the default stall bound")
end)

t.test("sys.watchdog changes the settings it is given, and checks them", function()
  sys.watchdog{ grace = 3, stall = 5 }
  local st = sys.watchdog_status()
  t.eq(st.grace, 3)
  t.eq(st.stall, 5)
  sys.watchdog{ stall = 0 }
  t.eq(sys.watchdog_status().stall, 0, "0 turns stall reports off")
  t.eq(sys.watchdog_status().grace, 3, "a setting not given is kept")
  sys.watchdog{ grace = 10, stall = 2 }
  t.raises(function() sys.watchdog{ grace = 0 } end, "grace must be positive")
  t.raises(function() sys.watchdog{ record = "" } end, "record must be a path")
  t.raises(function() sys.watchdog("x") end, "table expected")
end)

t.test("the record functions need a record file, and an absent one holds nothing", function()
  t.raises(function() sys.watchdog_records() end, "no record file is set")
  local path = t.tmp_path("watchdog-spec", "stuck")
  sys.watchdog{ record = path }
  local recs, err = sys.watchdog_records()
  t.ok(recs, err)
  t.eq(#recs, 0)
  t.eq(sys.watchdog_records_done(), true, "removing an absent file is fine")
end)

t.test("a record file that cannot be read is an error, not an empty list", function()
  sys.watchdog{ record = "/" }
  local recs, err = sys.watchdog_records()
  t.eq(recs, nil)
  t.match(err, "^cannot read /")
end)

t.test("test_block exists only with REPLICA_TEST_HOOKS=1", function()
  t.eq(type(test_block), "nil")
end)

t.done()
