-- bench/gets.lua - the Lua side of the GET throughput benchmark: N GETs of URL
-- with C worker tasks, each looping http.request{url=...}. Every response must
-- be 200 with a body exactly as long as its Content-Length and the first one.
-- Prints {"requests":N,"seconds":S,"rps":R}, like bench/curl_multi.c.
--   replica script --max-per-host C bench/gets.lua URL N C
local url, n, c = ...
n, c = math.tointeger(tonumber(n)), math.tointeger(tonumber(c))
if not url or not n or not c or n < 1 or c < 1 then
  error("usage: replica script --max-per-host C bench/gets.lua URL N C")
end
if c > n then c = n end

local started, expect = 0, nil

-- Takes the next request number until all N are taken; raises on any bad response.
local function worker()
  while started < n do
    started = started + 1
    local i = started
    local r, err, detail = http.request{url = url}
    if not r then
      error(string.format("request %d: %s (%s)", i, err, detail))
    end
    local len = #r.body
    expect = expect or len
    if r.status ~= 200 or len ~= expect or len ~= tonumber(r.headers["content-length"]) then
      error(string.format("request %d: status %d, %d body bytes (content-length %s, first %d)",
        i, r.status, len, r.headers["content-length"], expect))
    end
  end
end

local t0 = time.mono()
local workers = {}
for i = 1, c do workers[i] = task.spawn(worker) end
for i = 1, c do
  local ok, err = workers[i]:wait()
  if not ok then error("worker " .. i .. ": " .. tostring(err)) end
end
local secs = time.mono() - t0
print(string.format('{"requests":%d,"seconds":%.3f,"rps":%.0f}', n, secs, n / secs))
