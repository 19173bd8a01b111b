-- examples/tour.lua - a short tour of the runtime replica scripts run in.
--   ./replica script examples/tour.lua [REGISTRY_URL]
-- Pings a registry's /v2/ endpoint (Docker Hub's by default) and prints the
-- auth challenge it answers with, next to a few concurrent tasks.
local registry = ... or "https://registry-1.docker.io"

-- Ten tasks sleeping 0.1 s each finish together, in about 0.1 s in total.
local t0 = time.mono()
local squares = parallel.map({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, function(n)
  time.sleep(0.1)
  return n * n
end, { limit = 10 })
print(string.format("parallel.map: %s in %.2f s", table.concat(squares, " "), time.mono() - t0))

print("sha256('hello') = sha256:" .. digest.sha256("hello"))
print("json: " .. json.encode({ tags = { "latest", "1.0" }, size = 1234 }))

local res, err, detail = http.request{ url = registry .. "/v2/", timeout = 10 }
if not res then
  print(string.format("GET %s/v2/: %s (%s)", registry, err, detail))
else
  print(string.format("GET %s/v2/: HTTP %d over HTTP/%s", registry, res.status, res.version))
  print("  www-authenticate: " .. (res.headers["www-authenticate"] or "(none)"))
end
