-- bench/faas_events.lua - the events of bench/faas.sh: POSTs CNCF
-- Distribution notifications announcing one pushed tag (v1) in each of N
-- repositories (bench/t0 .. bench/tN-1) to URL, PER events in each POST, 4
-- POSTs in flight, and prints {"sent":N,"accepted":POSTS,"seconds":S}.
--   replica script bench/faas_events.lua URL SECRET N PER
local url, secret, n, per = ...
n, per = math.tointeger(tonumber(n)), math.tointeger(tonumber(per or "500"))
local dgst = "sha256:" .. string.rep("ab", 32)

-- The envelope of events first..last.
local function body(first, last)
  local events = {}
  for i = first, last do
    events[#events + 1] = {
      id = "bench-" .. i, timestamp = "2026-12-02T00:00:00Z", action = "push",
      target = { mediaType = "application/vnd.oci.image.manifest.v1+json", size = 500, digest = dgst,
                 length = 500, repository = "bench/t" .. i, tag = "v1",
                 url = "http://registry/v2/bench/t" .. i .. "/manifests/" .. dgst },
      request = { id = "r", addr = "127.0.0.1", host = "registry", method = "PUT", useragent = "bench" },
      actor = {}, source = { addr = "registry", instanceID = "bench" },
    }
  end
  return json.encode({ events = events })
end

local batches = {}
for first = 0, n - 1, per do batches[#batches + 1] = { first, math.min(first + per - 1, n - 1) } end
local accepted, t0 = 0, time.mono()
local ok, err = parallel.map(batches, function(b)
  local res, rerr = http.request{ method = "POST", url = url, body = body(b[1], b[2]), timeout = 120,
    headers = { ["Content-Type"] = "application/vnd.docker.distribution.events.v1+json",
                Authorization = "Bearer " .. secret } }
  if not res then return nil, rerr end
  if res.status == 202 then accepted = accepted + 1 end
  return true
end, { limit = 4 })
if not ok then error(err) end
print(json.encode({ sent = n, accepted = accepted, posts = #batches, seconds = time.mono() - t0 }))
