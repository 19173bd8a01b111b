-- sys.listen: the HTTP server trusted scripts use for the daemon's API,
-- webhooks and event streams. Each test starts a server on an ephemeral port
-- of 127.0.0.1 and talks to it with http.request in the same event loop.
local t = require("tap").new(...)

-- Starts a server with handler (and extra options); returns it and its base URL.
local function serve(handler, opts)
  opts = opts or {}
  opts.handler = handler
  opts.host = opts.host or "127.0.0.1"
  opts.port = opts.port or 0
  local srv, err = sys.listen(opts)
  if not srv then error("sys.listen: " .. tostring(err), 2) end
  return srv, "http://127.0.0.1:" .. srv:port()
end

-- Returns the response, failing the test with the error if there is none.
local function request(opts)
  local r, err, detail = http.request(opts)
  if not r then error(string.format("%s: %s (%s)", opts.url, tostring(err), tostring(detail)), 2) end
  return r
end

-- Yields until cond() is true; fails after `secs` seconds.
local function eventually(cond, secs, what)
  local deadline = time.mono() + (secs or 5)
  while not cond() do
    if time.mono() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    time.sleep(0.01)
  end
end

t.test("listen on port 0 binds an ephemeral port and a GET reaches the handler", function()
  local srv, base = serve(function(req) req:respond(200, nil, "hi") end)
  t.ok(math.type(srv:port()) == "integer" and srv:port() > 0, "port " .. tostring(srv:port()))
  local r = request{ url = base .. "/" }
  t.eq(r.status, 200)
  t.eq(r.body, "hi")
  t.ok(r.headers["date"], "evhttp adds a Date header")
  srv:close()
end)

t.test("the handler sees the method, raw uri, decoded path and decoded query", function()
  local seen
  local srv, base = serve(function(req)
    seen = { method = req.method, uri = req.uri, path = req.path, query = req.query }
    req:respond(200, nil, "ok")
  end)
  local uri = "/v2/a%20b/caf%C3%A9/x+y?x=1&y=hello+world&x=2&flag&k%3D=v%2Fw&empty="
  request{ url = base .. uri }
  t.eq(seen.method, "GET")
  t.eq(seen.uri, uri)
  t.eq(seen.path, "/v2/a b/caf\u{e9}/x+y", "'+' is literal in a path")
  t.eq(seen.query.x, "2", "the last repeated parameter wins")
  t.eq(seen.query.y, "hello world")
  t.eq(seen.query.flag, "", "a parameter without '=' is empty")
  t.eq(seen.query["k="], "v/w", "names are decoded too")
  t.eq(seen.query.empty, "")
  request{ url = base .. "/plain" }
  t.eq(seen.path, "/plain")
  t.eq(next(seen.query), nil, "no query gives an empty table")
  srv:close()
end)

t.test("a POST body round-trips byte for byte", function()
  local srv, base = serve(function(req)
    req:respond(200, { ["Content-Type"] = "application/octet-stream" },
                req.method .. ":" .. req.body)
  end)
  local body = "a\0b\r\nc" .. string.rep("x", 100000)
  local r = request{ method = "POST", url = base .. "/echo", body = body }
  t.eq(r.status, 200)
  t.eq(r.body, "POST:" .. body)
  for _, m in ipairs{ "PUT", "PATCH" } do
    r = request{ method = m, url = base .. "/echo", body = "{}" }
    t.eq(r.body, m .. ":{}")
  end
  r = request{ method = "DELETE", url = base .. "/echo" }
  t.eq(r.body, "DELETE:", "a request without a body has body \"\"")
  srv:close()
end)

t.test("request headers: req:header is case-insensitive, req.headers has lower-case names", function()
  local got
  local srv, base = serve(function(req)
    got = { a = req:header("x-test"), b = req:header("X-TEST"), missing = req:header("x-missing"),
            tbl = req.headers, auth = req:header("Authorization") }
    req:respond(204)
  end)
  local r = request{ url = base .. "/", headers = { ["X-Test"] = "value 42", Authorization = "Bearer t" } }
  t.eq(r.status, 204)
  t.eq(got.a, "value 42")
  t.eq(got.b, "value 42")
  t.eq(got.missing, nil)
  t.eq(got.auth, "Bearer t")
  t.eq(got.tbl["x-test"], "value 42")
  t.eq(got.tbl["X-Test"], nil)
  for k in pairs(got.tbl) do t.eq(k, k:lower(), "header name") end
  srv:close()
end)

t.test("req.peer is the client's ip:port", function()
  local peer
  local srv, base = serve(function(req) peer = req.peer; req:respond(200) end)
  request{ url = base .. "/" }
  t.match(peer, "^127%.0%.0%.1:%d+$")
  srv:close()
end)

t.test("req.status is nil until the handler answers, then the status it answered", function()
  local before, after, streamed
  local srv, base = serve(function(req)
    if req.path == "/stream" then
      req:start(206)
      streamed = req.status
      req:write("x")
      req:finish()
      return
    end
    before = req.status
    req:respond(409, nil, "{}")
    after = req.status
  end)
  request{ method = "POST", url = base .. "/", body = "{}" }
  t.eq(before, nil)
  t.eq(after, 409)
  request{ url = base .. "/stream" }
  t.eq(streamed, 206, "a streamed response's status once started")
  srv:close()
end)

t.test("status and response headers reach the client; a list sends the header repeatedly", function()
  local srv, base = serve(function(req)
    req:respond(201, { ["X-One"] = "1", ["X-Num"] = 42, ["Set-Cookie"] = { "a=1", "b=2" },
                       Location = "/things/7" }, '{"id":7}')
  end)
  local r = request{ method = "POST", url = base .. "/things", body = "{}" }
  t.eq(r.status, 201)
  t.eq(r.body, '{"id":7}')
  t.eq(r.headers["x-one"], "1")
  t.eq(r.headers["x-num"], "42")
  t.eq(r.headers["set-cookie"], "a=1, b=2")
  t.eq(r.headers["location"], "/things/7")
  t.eq(r.headers["content-length"], "8")
  srv:close()
end)

t.test("Content-Type defaults to application/json; the handler's own wins", function()
  local srv, base = serve(function(req)
    if req.path == "/text" then
      req:respond(200, { ["content-type"] = "text/plain" }, "plain")
    else
      req:respond(200, nil, "{}")
    end
  end)
  t.eq(request{ url = base .. "/json" }.headers["content-type"], "application/json")
  local r = request{ url = base .. "/text" }
  t.eq(r.headers["content-type"], "text/plain")
  t.eq(r.body, "plain")
  srv:close()
end)

t.test("HEAD gets the status and Content-Length of the body, without the body", function()
  local srv, base = serve(function(req) req:respond(200, nil, "0123456789") end)
  local r = request{ method = "HEAD", url = base .. "/" }
  t.eq(r.status, 200)
  t.eq(r.headers["content-length"], "10")
  t.eq(r.body, "")
  srv:close()
end)

t.test("a handler that raises gets a 500 with a JSON error body", function()
  local srv, base = serve(function() error("boom (expected in the test output)") end)
  local r = request{ url = base .. "/fail" }
  t.eq(r.status, 500)
  t.eq(r.headers["content-type"], "application/json")
  t.eq(r.body, '{"error":"internal error"}')
  srv:close()
end)

t.test("a handler that returns without responding gets a 500", function()
  local srv, base = serve(function() end)
  local r = request{ url = base .. "/" }
  t.eq(r.status, 500)
  t.eq(r.body, '{"error":"internal error"}')
  srv:close()
end)

t.test("a handler that yields before responding (time.sleep) is answered", function()
  local srv, base = serve(function(req)
    time.sleep(0.05)
    req:respond(200, nil, "late")
  end)
  local t0 = time.mono()
  local r = request{ url = base .. "/" }
  t.eq(r.body, "late")
  t.ok(time.mono() - t0 >= 0.04, "the handler really slept")
  srv:close()
end)

t.test("writing without start, or responding twice, raises", function()
  local errs = {}
  local srv, base = serve(function(req)
    errs.write = select(2, pcall(req.write, req, "x"))
    errs.finish = select(2, pcall(req.finish, req))
    req:respond(200, nil, "once")
    errs.again = select(2, pcall(req.respond, req, 200, nil, "twice"))
    errs.start = select(2, pcall(req.start, req, 200))
    errs.after = select(2, pcall(req.write, req, "x"))
    errs.status = select(2, pcall(req.respond, req, 99))
    errs.header = select(2, pcall(function() req:respond(200, { ["Bad Name"] = "x" }) end))
    errs.path, errs.method = req.path, req.method
    errs.closed = req:closed()
  end)
  local r = request{ url = base .. "/x" }
  t.eq(r.body, "once")
  eventually(function() return errs.closed ~= nil end)
  t.match(errs.again, "already sent")
  t.match(errs.start, "already sent")
  t.match(errs.write, "req:start first")
  t.match(errs.finish, "req:start first")
  t.match(errs.after, "finished")
  t.match(errs.status, "200%.%.599")
  t.match(errs.header, "already sent")
  t.eq(errs.path, "/x", "path and method stay readable after the response")
  t.eq(errs.method, "GET")
  t.eq(errs.closed, true, "a complete response counts as closed")
  srv:close()
end)

t.test("an invalid response header raises, and the handler's task then gets a 500", function()
  local err
  local srv, base = serve(function(req)
    local ok, e = pcall(req.respond, req, 200, { ["X-Bad"] = "a\r\nInjected: 1" }, "x")
    err = e
    t.ok(not ok)
  end)
  local r = request{ url = base .. "/" }
  t.match(err, "response: invalid value for header 'X%-Bad'")
  t.eq(r.status, 500)
  t.eq(r.headers["injected"], nil)
  srv:close()
end)

t.test("a body over max_body sets req.too_large and leaves req.body nil", function()
  local seen = {}
  local srv, base = serve(function(req)
    seen[#seen + 1] = { too_large = req.too_large, body = req.body }
    if req.too_large then return req:respond(400, nil, '{"error":"body too large"}') end
    req:respond(200, nil, req.body)
  end, { max_body = 16 })
  local r = request{ method = "POST", url = base .. "/", body = string.rep("a", 16) }
  t.eq(r.status, 200)
  t.eq(r.body, string.rep("a", 16))
  r = request{ method = "POST", url = base .. "/", body = string.rep("b", 17) }
  t.eq(r.status, 400)
  t.eq(seen[2].too_large, true)
  t.eq(seen[2].body, nil)
  t.eq(seen[1].too_large, false)
  -- The cap is max_body itself: a body of several times it is not read
  -- either, and the handler still answers.
  r = request{ method = "POST", url = base .. "/", body = string.rep("c", 100) }
  t.eq(r.status, 400)
  t.eq(#seen, 3)
  t.eq(seen[3].too_large, true)
  t.eq(r.headers["connection"], "close", "the unread body ends the connection")
  srv:close()
end)

t.test("a chunked body over max_body is cut at max_body and the handler sees too_large", function()
  local seen
  local srv, base = serve(function(req)
    seen = { too_large = req.too_large, body = req.body }
    req:respond(req.too_large and 413 or 200)
  end, { max_body = 1000 })
  local r = request{ method = "POST", url = base .. "/", body = string.rep("z", 5000),
                     headers = { ["Transfer-Encoding"] = "chunked" } }
  t.eq(r.status, 413)
  t.eq(seen.too_large, true)
  t.eq(seen.body, nil)
  r = request{ method = "POST", url = base .. "/", body = string.rep("z", 1000),
               headers = { ["Transfer-Encoding"] = "chunked" } }
  t.eq(r.status, 200)
  t.eq(seen.body, string.rep("z", 1000))
  srv:close()
end)

t.test("authorize sees method, decoded path and Authorization before the body; false gives 401", function()
  local calls, handled = {}, {}
  local srv, base = serve(function(req)
    handled[#handled + 1] = req.path
    req:respond(200, nil, "in")
  end, {
    max_body = 1 << 20,
    authorize = function(method, path, auth)
      calls[#calls + 1] = { method = method, path = path, auth = auth }
      if path == "/open" or auth == "Bearer good" then return true end
      if path == "/hook" then return false, "no secret" end
      return false, 'bad "token"', 'Bearer realm="test"'
    end,
  })
  local r = request{ url = base .. "/open%20door?x=1" }
  t.eq(r.status, 401)
  t.eq(calls[1].method, "GET")
  t.eq(calls[1].path, "/open door", "the path is decoded, without the query")
  t.eq(calls[1].auth, nil)
  r = request{ url = base .. "/open" }
  t.eq(r.status, 200)
  r = request{ method = "POST", url = base .. "/x", body = string.rep("b", 900000),
               headers = { Authorization = "Bearer good" } }
  t.eq(r.status, 200)
  t.eq(calls[3].auth, "Bearer good")
  r = request{ method = "POST", url = base .. "/x", body = string.rep("b", 900000),
               headers = { Authorization = "Bearer bad" } }
  t.eq(r.status, 401)
  t.eq(r.headers["content-type"], "application/json")
  t.eq(r.headers["www-authenticate"], 'Bearer realm="test"')
  t.eq(r.headers["connection"], "close")
  t.eq(json.decode(r.body).error, 'bad "token"')
  r = request{ method = "POST", url = base .. "/hook", body = "{}" }
  t.eq(r.status, 401)
  t.eq(r.headers["www-authenticate"], nil, "no challenge when authorize gives none")
  t.eq(json.decode(r.body).error, "no secret")
  r = request{ method = "HEAD", url = base .. "/x" }
  t.eq(r.status, 401)
  t.eq(r.body, "")
  t.eq(#handled, 2, "refused requests never reach the handler")
  srv:close()
end)

t.test("a name authorize gives the client reaches the handler as req.who", function()
  local seen = {}
  local srv, base = serve(function(req)
    seen[#seen + 1] = tostring(req.who)
    req:respond(200, nil, "in")
  end, {
    authorize = function(_, path)
      if path == "/named" then return true, "alice" end
      return true
    end,
  })
  t.eq(request{ url = base .. "/named" }.status, 200)
  t.eq(request{ url = base .. "/anonymous" }.status, 200)
  t.eq(table.concat(seen, " "), "alice nil")
  srv:close()
end)

t.test("two Authorization headers reach authorize joined; an authorize that raises gives 500", function()
  local got
  local srv, base = serve(function(req) req:respond(200) end, {
    authorize = function(_, path, auth)
      got = auth
      if path == "/raise" then error("authorize failed (expected in the test output)") end
      if path == "/yield" then time.sleep(0.01) end
      return auth == "Bearer a"
    end,
  })
  local r = request{ url = base .. "/", headers = { Authorization = { "Bearer a", "Bearer b" } } }
  t.eq(r.status, 401)
  t.eq(got, "Bearer a, Bearer b")
  t.eq(json.decode(r.body).error, "unauthorized", "the default message")
  t.eq(request{ url = base .. "/", headers = { Authorization = "Bearer a" } }.status, 200)
  t.eq(request{ url = base .. "/raise" }.status, 500)
  t.eq(request{ url = base .. "/yield", headers = { Authorization = "Bearer a" } }.status, 500,
       "authorize must not yield")
  srv:close()
  t.raises(function() sys.listen{ port = 0, handler = print, authorize = 1 } end, "authorize")
end)

t.test("the limits are options of sys.listen and are checked", function()
  for _, k in ipairs{ "max_connections", "max_per_address", "header_timeout", "body_timeout" } do
    t.raises(function() sys.listen{ port = 0, handler = print, [k] = 0 } end, k)
  end
  local srv = serve(function(req) req:respond(200) end,
                    { max_connections = 3, max_per_address = 2, header_timeout = 0.5, body_timeout = 1 })
  t.eq(srv:connections(), 0)
  srv:close()
end)

t.test("200 concurrent requests are all answered, each with its own response", function()
  local srv, base = serve(function(req)
    if tonumber(req.query.i) % 3 == 0 then time.sleep(0.01) end
    req:respond(200, nil, req.query.i)
  end)
  local items = {}
  for i = 1, 200 do items[i] = i end
  local res, err = parallel.map(items, function(i)
    local r, e = http.request{ url = base .. "/n?i=" .. i }
    if not r then return nil, e end
    return r.status == 200 and r.body or ("status " .. r.status)
  end, { limit = 200 })
  t.ok(res, err)
  for i = 1, 200 do t.eq(res[i], tostring(i), "response " .. i) end
  srv:close()
end)

t.test("sequential requests reuse one keep-alive connection", function()
  local peers = {}
  local srv, base = serve(function(req)
    peers[#peers + 1] = req.peer
    req:respond(200, nil, "k")
  end)
  for _ = 1, 5 do t.eq(request{ url = base .. "/" }.body, "k") end
  t.eq(#peers, 5)
  for i = 2, 5 do t.eq(peers[i], peers[1], "request " .. i .. " came on the same connection") end
  srv:close()
end)

t.test("streaming: start, several writes and finish arrive as one body", function()
  local results = {}
  local srv, base = serve(function(req)
    results.start = req:start(200, { ["Content-Type"] = "text/event-stream" })
    for i = 1, 5 do
      results[i] = req:write("data: " .. i .. "\n\n")
      time.sleep(0.005)
    end
    results.empty = req:write("")
    results.finish = req:finish()
    results.again = select(2, pcall(req.finish, req))
  end)
  local r = request{ url = base .. "/events" }
  t.eq(r.status, 200)
  t.eq(r.headers["content-type"], "text/event-stream")
  t.eq(r.headers["transfer-encoding"], "chunked")
  t.eq(r.body, "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n")
  eventually(function() return results.again ~= nil end)
  t.eq(results.start, true)
  for i = 1, 5 do t.eq(results[i], true) end
  t.eq(results.empty, true)
  t.eq(results.finish, true)
  t.match(results.again, "already finished")
  srv:close()
end)

t.test("another task can write to and finish a stream; finish wakes wait_closed", function()
  local subscribers, woke = {}, nil
  local srv, base = serve(function(req)
    req:start(200, { ["Content-Type"] = "text/plain" })
    subscribers[#subscribers + 1] = req
    woke = req:wait_closed(10)
  end)
  local client = task.spawn(function() return request{ url = base .. "/sub" } end)
  eventually(function() return #subscribers == 1 end)
  local publisher = task.spawn(function()
    for i = 1, 3 do subscribers[1]:write("event " .. i .. "\n") end
    subscribers[1]:finish()
  end)
  t.ok(publisher:wait())
  local ok, r = client:wait()
  t.ok(ok, r)
  t.eq(r.body, "event 1\nevent 2\nevent 3\n")
  eventually(function() return woke ~= nil end)
  t.eq(woke, true)
  srv:close()
end)

t.test("wait_closed returns false on timeout while the client is still there", function()
  local res
  local srv, base = serve(function(req)
    req:start(200)
    res = { req:wait_closed(0.05) }
    res.closed = req:closed()
    req:finish()
  end)
  local r = request{ url = base .. "/" }
  t.eq(r.status, 200)
  t.eq(res[1], false)
  t.eq(res.closed, false)
  srv:close()
end)

t.test("a streaming client that disconnects: wait_closed returns true, write returns nil, \"closed\"", function()
  local state = {}
  local srv, base = serve(function(req)
    req:start(200, { ["Content-Type"] = "text/event-stream" })
    state.first = req:write("data: hello\n\n")
    state.started = true
    state.waited = req:wait_closed(5)
    state.closed = req:closed()
    state.write = { req:write("data: late\n\n") }
    state.finish = { req:finish() }
    state.path = req.path
    state.done = true
  end)
  local client = task.spawn(function() return http.request{ url = base .. "/stream" } end)
  eventually(function() return state.started end, 5, "the handler to start")
  time.sleep(0.05)
  client:cancel()
  t.eq(select(2, client:wait()), "cancelled")
  eventually(function() return state.done end, 5, "the handler to see the disconnect")
  t.eq(state.first, true)
  t.eq(state.waited, true)
  t.eq(state.closed, true)
  t.eq(state.write[1], nil)
  t.eq(state.write[2], "closed")
  t.eq(state.finish[2], "closed")
  t.eq(state.path, "/stream")
  srv:close()
end)

t.test("responding after the client left returns nil, \"closed\" and the request stays readable", function()
  local state = {}
  local srv, base = serve(function(req)
    state.started = true
    time.sleep(0.3)
    state.res = { req:respond(200, nil, "too late") }
    state.body = req.body
    state.peer = req.peer
    state.closed = req:closed()
  end)
  local client = task.spawn(function()
    return http.request{ method = "POST", url = base .. "/slow", body = "payload" }
  end)
  eventually(function() return state.started end)
  client:cancel()
  client:wait()
  eventually(function() return state.res ~= nil end)
  t.eq(state.res[1], nil)
  t.eq(state.res[2], "closed")
  t.eq(state.body, "payload", "the body of a request whose client left is still readable")
  t.eq(state.closed, true)
  srv:close()
end)

t.test("server:close() drops open requests and refuses new connections", function()
  local state = {}
  local srv, base = serve(function(req)
    req:start(200)
    state.started = true
    state.waited = req:wait_closed(5)
    state.write = { req:write("x") }
  end)
  local client = task.spawn(function() return http.request{ url = base .. "/" } end)
  eventually(function() return state.started end)
  srv:close()
  srv:close() -- idempotent
  eventually(function() return state.write ~= nil end)
  t.eq(state.waited, true)
  t.eq(state.write[2], "closed")
  local ok, r = client:wait()
  t.ok(ok)
  t.ok(r == nil or r.status == 200, "the open request ended")
  local r2, err = http.request{ url = base .. "/", connect_timeout = 2 }
  t.eq(r2, nil)
  t.eq(err, "connect")
end)

t.test("listen on a port in use, or an address not on this host, returns nil, err", function()
  local srv = serve(function(req) req:respond(200) end)
  local port = srv:port()
  local again, err = sys.listen{ port = port, handler = function() end }
  t.eq(again, nil)
  t.match(err, "127%.0%.0%.1:" .. port)
  t.match(err, "in use")
  srv:close()
  local other, err2 = sys.listen{ host = "192.0.2.1", port = 0, handler = function() end }
  t.eq(other, nil)
  t.match(err2, "192%.0%.2%.1:0")
  t.raises(function() sys.listen{ port = 0 } end, "handler")
  t.raises(function() sys.listen{ port = 70000, handler = print } end, "port")
end)

t.done()
