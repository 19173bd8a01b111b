-- http.request failures: a broken network comes back as nil, err, detail
-- (err from a fixed set, detail a message for people), never as a raised
-- error and never as a hang. Kept short so it can run under valgrind.
local t = require("tap").new(...)
local E = t.env
local HTTP, HTTPS, FAULT = E.HTTP_URL, E.HTTPS_URL, E.FAULT_URL

-- Checks that a request failed with err and a readable detail.
local function fails_with(want, r, err, detail)
  t.eq(r, nil, "response")
  t.eq(err, want, "err")
  t.eq(type(detail), "string", "detail type")
  t.ok(#detail > 0, "detail is empty")
end

-- Checks that no request is left in flight in the engine.
local function none_pending()
  t.eq(task.stats().http_pending, 0, "requests still pending")
end

t.test("a refused connection -> nil, 'connect'", function()
  fails_with("connect", http.request{ url = "http://127.0.0.1:1/" })
  none_pending()
end)

t.test("a server that stalls mid-body -> nil, 'timeout'", function()
  -- curl's low-speed check averages over several seconds: expect ~5-8 s.
  local t0 = time.mono()
  fails_with("timeout", http.request{ url = FAULT .. "/stall", timeout = 1 })
  local took = time.mono() - t0
  t.ok(took >= 1, "timed out before the timeout: " .. took)
  t.ok(took < 20, "timed out far too late: " .. took)
  none_pending()
end)

t.test("a server that never answers -> nil, 'timeout'", function()
  local t0 = time.mono()
  fails_with("timeout", http.request{ url = FAULT .. "/hold", timeout = 1 })
  t.ok(time.mono() - t0 >= 1, "timed out before the timeout")
  none_pending()
end)

t.test("a connection closed mid-body -> nil, 'closed'", function()
  fails_with("closed", http.request{ url = FAULT .. "/close" })
end)

t.test("a connection reset before the response -> nil, 'closed'", function()
  fails_with("closed", http.request{ url = FAULT .. "/reset" })
end)

t.test("HTTPS without the CA -> nil, 'tls'", function()
  fails_with("tls", http.request{ url = HTTPS .. "/files/small.txt" })
end)

t.test("a body over max_body -> nil, 'too large'; exactly max_body is fine", function()
  fails_with("too large", http.request{ url = HTTP .. "/files/1k.bin", max_body = 1023 })
  local r, err = http.request{ url = HTTP .. "/files/1k.bin", max_body = 1024 }
  t.ok(r, "max_body = size failed: " .. tostring(err))
  t.eq(#r.body, 1024)
end)

t.test("a URL that is not http(s) -> nil, 'bad url'", function()
  for _, url in ipairs{ "ftp://127.0.0.1/x", "file:///etc/passwd", "not a url", "" } do
    local r, err, detail = http.request{ url = url }
    t.eq(err, "bad url", url)
    fails_with("bad url", r, err, detail)
  end
  none_pending()
end)

t.test("cancelling a task stops its request: http.request returns nil, 'cancelled'", function()
  local got = {}
  local h = task.spawn(function()
    got = table.pack(http.request{ url = FAULT .. "/hold", timeout = 30 })
    got.after = true -- the task went on running after the call returned
  end)
  while h:status() ~= "waiting" do task.yield() end
  t.eq(task.stats().http_pending, 1, "the request is in flight")
  local t0 = time.mono()
  h:cancel()
  t.eq(select("#", h:wait()), 2)
  local ok, err = h:wait()
  t.eq(ok, nil)
  t.eq(err, "cancelled")
  t.eq(h:status(), "cancelled")
  t.ok(time.mono() - t0 < 1, "cancel was not prompt")
  t.eq(got[1], nil, "response")
  t.eq(got[2], "cancelled", "err")
  t.ok(got.after, "the task did not resume after the cancelled call")
  none_pending()
end)

t.test("after a task is cancelled its further requests fail at once", function()
  local got = {}
  local h = task.spawn(function()
    got[1] = table.pack(http.request{ url = FAULT .. "/hold", timeout = 30 })
    got[2] = table.pack(http.request{ url = HTTP .. "/files/small.txt" })
  end)
  while h:status() ~= "waiting" do task.yield() end
  h:cancel()
  h:wait()
  t.eq(got[1][2], "cancelled")
  t.eq(got[2][1], nil)
  t.eq(got[2][2], "cancelled")
  none_pending()
end)

t.test("a failed request does not break the next one to the same host", function()
  fails_with("closed", http.request{ url = FAULT .. "/reset" })
  local r = http.request{ url = FAULT .. "/ok" }
  t.eq(r and r.body, "ok")
end)

t.done()
