-- bench/webhooks.lua - the webhook burst of bench/serve.sh: POSTs one CNCF
-- Distribution notification per line of LIST ("REPO:TAG DIGEST") to URL,
-- with LIMIT requests in flight, and prints
-- {"sent":N,"accepted":N,"seconds":S} (accepted = 202 answers). LIST is
-- the text itself (scripts cannot open files).
--   replica script bench/webhooks.lua URL SECRET "$(cat LIST)" [LIMIT]
local url, secret, list, limit = ...
limit = math.tointeger(tonumber(limit or "64"))
local events = {}
for line in list:gmatch("[^\n]+") do
  local repo, tag, dgst = line:match("^(.-):(%S+)%s+(sha256:%x+)$")
  if repo then events[#events + 1] = { repo = repo, tag = tag, digest = dgst } end
end

-- The body Distribution sends for one manifest push.
local function body(e, i)
  return json.encode({ events = { {
    id = string.format("bench-%d", i), timestamp = "2026-11-29T00:00:00Z", action = "push",
    target = { mediaType = "application/vnd.oci.image.manifest.v1+json", size = 500,
               digest = e.digest, length = 500, repository = e.repo, tag = e.tag,
               url = "http://registry/v2/" .. e.repo .. "/manifests/" .. e.digest },
    request = { id = "r", addr = "127.0.0.1", host = "registry", method = "PUT", useragent = "bench" },
    actor = {}, source = { addr = "registry", instanceID = "bench" },
  } } })
end

local accepted = 0
local t0 = time.mono()
local ok, err = parallel.map(events, function(e, i)
  local res, rerr = http.request{ method = "POST", url = url, body = body(e, i), timeout = 60,
    headers = { ["Content-Type"] = "application/vnd.docker.distribution.events.v1+json",
                Authorization = "Bearer " .. secret } }
  if not res then return nil, rerr end
  if res.status == 202 then accepted = accepted + 1 end
  return true
end, { limit = limit })
if not ok then error(err) end
print(json.encode({ sent = #events, accepted = accepted, seconds = time.mono() - t0 }))
