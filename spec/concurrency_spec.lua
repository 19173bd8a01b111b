-- Many tasks at once: every request gets its own response, parallel.map keeps
-- input order and stops at the first failure, and task.spawn/wait hand back
-- what the child returned or raised.
local t = require("tap").new(...)
local E = t.env
local HTTP = E.HTTP_URL

t.test("10,000 tasks each POST their own body; every one gets its own response", function()
  local n = 10000
  local handles, checked = {}, 0
  for i = 1, n do
    handles[i] = task.spawn(function()
      local r, err, detail = http.request{ method = "POST", url = HTTP .. "/echo", body = "task " .. i }
      if not r then error(string.format("task %d: %s (%s)", i, err, detail)) end
      if r.status ~= 200 then error(string.format("task %d: status %d", i, r.status)) end
      return r.body
    end)
  end
  for i = 1, n do
    local ok, body = handles[i]:wait()
    t.ok(ok, body)
    t.eq(body, "method=POST\nx-test=\nbody=task " .. i .. "\n", "task " .. i)
    checked = checked + 1
  end
  t.eq(checked, n)
  t.eq(task.stats().http_pending, 0)
end)

t.test("parallel.map over 1,000 items returns the results in input order", function()
  local items = {}
  for i = 1, 1000 do items[i] = i end
  local order = {}
  local results, err = parallel.map(items, function(x, i)
    -- Finish out of input order: later items sometimes yield less.
    for _ = 1, (x * 7) % 5 do task.yield() end
    local r, e = http.request{ method = "POST", url = HTTP .. "/echo", body = tostring(x) }
    if not r then return nil, e end
    order[#order + 1] = i
    return { i = i, body = r.body }
  end)
  t.ok(results, err)
  t.eq(#results, 1000)
  for i = 1, 1000 do
    t.eq(results[i].i, i)
    t.eq(results[i].body, "method=POST\nx-test=\nbody=" .. i .. "\n")
  end
  local in_order = true
  for k = 1, #order do in_order = in_order and order[k] == k end
  t.ok(not in_order, "items all completed in input order; the test proves nothing")
end)

t.test("parallel.map runs at most `limit` items at once", function()
  local running, peak = 0, 0
  local items = {}
  for i = 1, 50 do items[i] = i end
  local results = parallel.map(items, function(x)
    running = running + 1
    if running > peak then peak = running end
    local r = http.request{ url = HTTP .. "/files/small.txt" }
    running = running - 1
    return r and r.body
  end, { limit = 4 })
  t.eq(#results, 50)
  t.eq(peak, 4)
end)

t.test("parallel.map: an item returning nil, err fails the map; no further items start", function()
  local items = {}
  for i = 1, 1000 do items[i] = i end
  local started = 0
  local results, err, at = parallel.map(items, function(x)
    started = started + 1
    if x == 20 then return nil, "item 20 failed" end
    task.yield()
    return x
  end)
  t.eq(results, nil)
  t.eq(err, "item 20 failed")
  t.eq(at, 20)
  t.ok(started <= 20 + 16, "items kept starting after the failure: " .. started)
end)

t.test("parallel.map: an item that raises fails the map with its error", function()
  local results, err = parallel.map({ 1, 2, 3, 4, 5 }, function(x)
    if x == 3 then error("kaboom at 3") end
    return x
  end)
  t.eq(results, nil)
  t.match(err, "kaboom at 3")
end)

t.test("parallel.map: a failure cancels the items still running", function()
  local slow = {}
  local t0 = time.mono()
  local results, err, at = parallel.map({ 1, 2, 3, 4 }, function(x)
    if x == 1 then
      slow = table.pack(time.sleep(3))
      return nil, slow[2]
    end
    if x == 2 then
      task.yield()
      return nil, "boom"
    end
    return x
  end)
  t.eq(results, nil)
  t.eq(err, "boom")
  t.eq(at, 2)
  t.ok(time.mono() - t0 < 1.5, string.format("the map waited %.1f s for a running item", time.mono() - t0))
  t.eq(slow[2], "cancelled", "the running item's sleep")
end)

t.test("parallel.map rejects bad arguments", function()
  t.raises(function() parallel.map(nil, function() end) end, "items must be a table")
  t.raises(function() parallel.map({}, nil) end, "fn must be a function")
  t.raises(function() parallel.map({ 1 }, function() end, { limit = 0 }) end, "limit")
  local r = parallel.map({}, function() error("not called") end)
  t.eq(#r, 0)
end)

t.test("h:wait() returns true and all of the child's results, nils included", function()
  local h = task.spawn(function(a, b) return a + b, "x", nil, 4 end, 1, 2)
  local res = table.pack(h:wait())
  t.eq(res.n, 5)
  t.eq(res[1], true)
  t.eq(res[2], 3)
  t.eq(res[3], "x")
  t.eq(res[4], nil)
  t.eq(res[5], 4)
  t.eq(h:status(), "done")
  local again = table.pack(h:wait())
  t.eq(again.n, 5, "a second wait")
  t.eq(again[2], 3)
end)

t.test("an error in a child comes back as nil, err from wait and the parent goes on", function()
  local h = task.spawn({ name = "thrower" }, function() error("bad thing happened") end)
  local ok, err = h:wait()
  t.eq(ok, nil)
  t.match(err, "bad thing happened")
  t.eq(h:status(), "failed")
  local h2 = task.spawn(function() local x = nil; return x.field end)
  ok, err = h2:wait()
  t.eq(ok, nil)
  t.match(err, "attempt to index")
end)

t.test("many waiters on one task all get its results", function()
  local target = task.spawn(function() task.yield(); return "shared" end)
  local waiters = {}
  for i = 1, 10 do waiters[i] = task.spawn(function() return target:wait() end) end
  for i = 1, 10 do
    local ok, tok, v = waiters[i]:wait()
    t.ok(ok and tok, "waiter " .. i)
    t.eq(v, "shared")
  end
end)

t.test("cancelling a parent cancels its children", function()
  local child, child_got = nil, {}
  local parent = task.spawn(function()
    child = task.spawn(function() child_got = table.pack(time.sleep(30)) end)
    return child:wait()
  end)
  while parent:status() ~= "waiting" do task.yield() end
  local t0 = time.mono()
  parent:cancel()
  local ok, err = parent:wait()
  t.eq(ok, nil)
  t.eq(err, "cancelled")
  ok, err = child:wait()
  t.eq(err, "cancelled", "the child")
  t.eq(child_got[2], "cancelled", "the child's sleep")
  t.ok(time.mono() - t0 < 1, "the child's sleep was not cut short")
end)

t.done()
