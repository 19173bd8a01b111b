-- http.request: what a script can rely on when a server answers. Failures of
-- the network (refused, reset, stalled, cancelled...) are in
-- http_errors_spec.lua, which also runs under valgrind.
local t = require("tap").new(...)
local E = t.env
local HTTP, HTTPS = E.HTTP_URL, E.HTTPS_URL
local TLS = { ca_file = E.TEST_CA }

-- Returns the response, failing the test with the error if there is none.
local function get(opts)
  local r, err, detail = http.request(opts)
  if not r then error(string.format("%s: %s (%s)", opts.url, tostring(err), tostring(detail)), 2) end
  return r
end

t.test("GET returns the file's exact body with status 200", function()
  local r = get{ url = HTTP .. "/files/small.txt" }
  t.eq(r.status, 200)
  t.eq(r.body, "hello from nginx\n")
  t.eq(r.headers["content-type"], "text/plain")
  t.eq(r.url, HTTP .. "/files/small.txt")
  t.eq(r.version, "1.1")
end)

t.test("GET of binary files is byte-exact (same digest over HTTP/1.1 and HTTP/2)", function()
  for _, name in ipairs{ "1k.bin", "1m.bin" } do
    local a = get{ url = HTTP .. "/files/" .. name }
    local b = get{ url = HTTPS .. "/files/" .. name, tls = TLS }
    t.eq(#a.body, tonumber(a.headers["content-length"]), name .. " length")
    t.eq(#b.body, #a.body, name .. " length over HTTP/2")
    t.eq(digest.sha256(b.body), digest.sha256(a.body), name .. " digest")
  end
end)

t.test("HEAD returns status and content-length but no body", function()
  local r = get{ method = "HEAD", url = HTTP .. "/files/1k.bin" }
  t.eq(r.status, 200)
  t.eq(r.headers["content-length"], "1024")
  t.eq(r.body, "")
end)

t.test("response header names are lower-case; repeated headers are joined with ', '", function()
  local r = get{ url = HTTP .. "/headers" }
  t.eq(r.status, 200)
  t.eq(r.body, "ok")
  t.eq(r.headers["x-multi"], "one, two")
  t.eq(r.headers["link"], '<http://127.0.0.1/next>; rel="next", <http://127.0.0.1/prev>; rel="prev"')
  t.eq(r.headers["content-length"], "2")
  for k in pairs(r.headers) do
    t.eq(k, k:lower(), "header name")
  end
  t.eq(r.headers["X-Multi"], nil)
end)

t.test("request headers reach the server", function()
  local r = get{ url = HTTP .. "/echo", headers = { ["X-Test"] = "value 42" } }
  t.eq(r.body, "method=GET\nx-test=value 42\nbody=\n")
end)

t.test("request headers given as a list of values reach the server", function()
  local r = get{ url = HTTP .. "/echo", headers = { ["X-Test"] = { "listed" } } }
  t.eq(r.body, "method=GET\nx-test=listed\nbody=\n")
end)

t.test("POST sends the body and the method", function()
  local r = get{ method = "POST", url = HTTP .. "/echo", body = "hello world",
                 headers = { ["X-Test"] = "post" } }
  t.eq(r.status, 200)
  t.eq(r.body, "method=POST\nx-test=post\nbody=hello world\n")
end)

t.test("PUT sends the body, binary-safe", function()
  local body = "a\0b\r\nc"
  local r = get{ method = "PUT", url = HTTP .. "/echo", body = body }
  t.eq(r.body, "method=PUT\nx-test=\nbody=" .. body .. "\n")
end)

t.test("POST without a body sends an empty one", function()
  local r = get{ method = "POST", url = HTTP .. "/echo" }
  t.eq(r.status, 200)
  t.eq(r.body, "method=POST\nx-test=\nbody=\n")
end)

t.test("error statuses are responses, not errors", function()
  for _, code in ipairs{ 400, 404, 500, 503 } do
    local r, err = http.request{ url = HTTP .. "/status/" .. code }
    t.ok(r, "status " .. code .. " returned " .. tostring(err))
    t.eq(r.status, code)
    t.eq(r.body, "status " .. code .. "\n")
  end
end)

t.test("401 carries its www-authenticate challenge", function()
  local r = get{ url = HTTP .. "/status/401" }
  t.eq(r.status, 401)
  t.eq(r.headers["www-authenticate"], 'Bearer realm="http://127.0.0.1/token",service="test"')
end)

t.test("204 has an empty body", function()
  local r = get{ url = HTTP .. "/status/204" }
  t.eq(r.status, 204)
  t.eq(r.body, "")
end)

t.test("GET follows redirects by default and reports the final URL", function()
  for _, code in ipairs{ 301, 302 } do
    local r = get{ url = HTTP .. "/status/" .. code }
    t.eq(r.status, 200)
    t.eq(r.body, "hello from nginx\n")
    t.eq(r.url, HTTP .. "/files/small.txt")
  end
end)

t.test("follow=false returns the redirect itself", function()
  local r = get{ url = HTTP .. "/status/302", follow = false }
  t.eq(r.status, 302)
  t.eq(r.headers["location"], HTTP .. "/files/small.txt")
  t.eq(r.url, HTTP .. "/status/302")
end)

t.test("POST does not follow redirects unless asked", function()
  local r = get{ method = "POST", url = HTTP .. "/status/302", body = "x" }
  t.eq(r.status, 302)
  r = get{ method = "POST", url = HTTP .. "/status/302", body = "x", follow = true }
  t.eq(r.url, HTTP .. "/files/small.txt", "follow = true was not followed")
end)

t.test("the path reaches the server as sent: no dot segments are resolved", function()
  -- tests/fakereg.py answers /echo/... with the request target it received.
  for _, base in ipairs{ E.FAKEREG_URL, E.FAKEREG_TLS_URL } do
    for _, path in ipairs{ "/echo/v2/a/../b", "/echo/v2/team-a/../../library/app/tags/list?n=1", "/echo/./x//y" } do
      local r = get{ url = base .. path, tls = TLS }
      t.eq(r.status, 200)
      t.eq(r.body, path, base)
    end
  end
end)

t.test("HTTPS with the test CA works and negotiates HTTP/2", function()
  local r = get{ url = HTTPS .. "/files/small.txt", tls = TLS }
  t.eq(r.status, 200)
  t.eq(r.body, "hello from nginx\n")
  t.eq(r.version, "2")
end)

t.test("HTTP/2 response headers are lower-case and joined like HTTP/1.1", function()
  local r = get{ url = HTTPS .. "/headers", tls = TLS }
  t.eq(r.version, "2")
  t.eq(r.headers["x-multi"], "one, two")
end)

t.test("HTTPS POST sends the body over HTTP/2", function()
  local r = get{ method = "POST", url = HTTPS .. "/echo", tls = TLS, body = "over h2",
                 headers = { ["X-Test"] = "h2" } }
  t.eq(r.body, "method=POST\nx-test=h2\nbody=over h2\n")
end)

t.test("HTTPS with tls.insecure skips verification", function()
  local r = get{ url = HTTPS .. "/files/small.txt", tls = { insecure = true } }
  t.eq(r.status, 200)
  t.eq(r.body, "hello from nginx\n")
end)

t.test("HTTPS with a client certificate to a server that does not ask for one", function()
  local dir = E.TEST_CA:match("^(.*)/[^/]*$") -- tests/servers.sh's certificates
  local r = get{ url = HTTPS .. "/files/small.txt",
                 tls = { ca_file = E.TEST_CA, cert_file = dir .. "/server.pem", key_file = dir .. "/server.key" } }
  t.eq(r.status, 200)
  t.eq(r.body, "hello from nginx\n")
end)

t.test("a client certificate that cannot be loaded fails with \"tls\", naming the file", function()
  local r, err, detail = http.request{ url = HTTPS .. "/files/small.txt",
                                       tls = { ca_file = E.TEST_CA, cert_file = "/nonexistent/client.pem" } }
  t.eq(r, nil)
  t.eq(err, "tls")
  t.ok(tostring(detail):find("/nonexistent/client.pem", 1, true), tostring(detail))
end)

t.test("tls.key_file without tls.cert_file raises", function()
  t.raises(function()
    http.request{ url = HTTPS .. "/files/small.txt", tls = { key_file = "/k.pem" } }
  end, "tls.key_file needs tls.cert_file")
end)

t.test("header values with CR or LF raise (no header injection)", function()
  for _, v in ipairs{ "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b" } do
    t.raises(function()
      http.request{ url = HTTP .. "/echo", headers = { ["X-Test"] = v } }
    end, "invalid value for header")
  end
  t.raises(function()
    http.request{ url = HTTP .. "/echo", headers = { ["X-Test"] = { "ok", "bad\r\nX: y" } } }
  end, "invalid value for header")
end)

t.test("invalid header names raise", function()
  for _, name in ipairs{ "X Test", "X:Test", "X\r\nTest", "" } do
    t.raises(function()
      http.request{ url = HTTP .. "/echo", headers = { [name] = "v" } }
    end, "invalid header name")
  end
end)

t.test("a missing url raises", function()
  t.raises(function() http.request{} end, "'url' is required")
  t.raises(function() http.request{ method = "GET" } end, "'url' is required")
  t.raises(function() http.request() end)
end)

t.test("a method that is not an upper-case token raises", function()
  t.raises(function() http.request{ url = HTTP .. "/echo", method = "get" } end, "invalid method")
  t.raises(function() http.request{ url = HTTP .. "/echo", method = "GET /x" } end, "invalid method")
end)

t.test("non-positive timeouts raise", function()
  t.raises(function() http.request{ url = HTTP .. "/echo", timeout = 0 } end, "timeouts must be positive")
  t.raises(function() http.request{ url = HTTP .. "/echo", max_body = -1 } end, "max_body")
end)

t.test("http.request cannot wait inside a coroutine the script created", function()
  local co = coroutine.create(function() return http.request{ url = HTTP .. "/files/small.txt" } end)
  local ok, err = coroutine.resume(co)
  t.eq(ok, false)
  t.match(err, "coroutine")
end)

t.done()
