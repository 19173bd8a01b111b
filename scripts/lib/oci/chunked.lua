-- oci/chunked.lua - blob uploads in chunks, for registries (or proxies in
-- front of them) that limit the size of one request. Each chunk is a ranged
-- GET on the source streamed by blob.copy into one PATCH with Content-Range;
-- a running hash covers every byte sent. When a chunk fails, the upload's
-- status (GET on its Location: 204 with Range: 0-N) says how much the target
-- kept, and the upload resumes from there. The final PUT ?digest= is sent only
-- when the running hash equals the blob's digest.
local common = require("oci.common")
local link = require("oci.link")
local retry = require("oci.retry")
local pull, push, digest_alg = common.pull, common.push, common.digest_alg

local chunked = {}

-- Asks the target how much of the upload it holds: bytes, location.
local function upload_status(dst, repo, location)
  local res, err, kind = dst:_request("GET", location, push(repo))
  if not res then return nil, err, kind end
  if res.status ~= 204 then return nil, common.http_error("GET " .. location, res, dst) end
  local last = tonumber((res.headers.range or ""):match("^%d+%-(%d+)$"))
  local loc = res.headers.location and link.resolve(dst.url .. "/v2/", res.headers.location) or location
  -- Distribution answers "0-0" for both 0 and 1 byte held: take it as 0; if
  -- that is wrong the next PATCH is refused and the upload starts over.
  if not last or last == 0 then return 0, loc end
  return last + 1, loc
end

-- Streams source bytes [first, last] into the running hash h, and into a
-- PATCH on location when location is given. Returns blob.copy's result.
local function stream_range(dst, src, src_repo, repo, desc, first, last, h, location)
  local from_url, err, kind = src:blob_url(src_repo, desc.digest)
  if not from_url then return nil, kind, err end
  local from_auth
  from_auth, err, kind = src:authorization(pull(src_repo), from_url)
  if err then return nil, kind, err end
  local spec = {
    from = { url = from_url, tls = src.tls,
             headers = src:headers_for(from_url, { Authorization = from_auth,
                                                   Range = string.format("bytes=%d-%d", first, last) }) },
    size = last - first + 1, hash = h, timeout = dst.timeout, max_speed = dst.max_speed,
  }
  if location then
    local to_auth
    to_auth, err, kind = dst:authorization(push(repo), location)
    if err then return nil, kind, err end
    spec.to = { url = location, method = "PATCH", tls = dst.tls,
                headers = dst:headers_for(location, { Authorization = to_auth,
                                                      ["Content-Range"] = string.format("%d-%d", first, last) }) }
  end
  return blob.copy(spec)
end

-- With a bandwidth limit (dst.max_speed, bytes/s), waits until `sent` bytes
-- since `started` (time.mono()) are within it: each chunk is a request of
-- its own, whose pace curl keeps only once it is under way, so without this
-- a blob of small chunks would go up in bursts. Returns true or nil, err.
local function keep_pace(dst, started, sent)
  if not dst.max_speed then return true end
  local wait = started + sent / dst.max_speed - time.mono()
  if wait <= 0 then return true end
  return time.sleep(wait)
end

-- Uploads desc = {digest, size} from src_repo on src into the session at
-- location of repo on dst, chunk bytes at a time. Returns {status, bytes,
-- headers} or nil, err, detail (err as blob.copy's).
function chunked.upload(dst, src, src_repo, repo, desc, location, chunk)
  local h = digest.new(digest_alg(desc.digest))
  local offset, resumes = 0, 0
  local started = time.mono()
  while offset < desc.size do
    local paced, perr = keep_pace(dst, started, offset)
    if not paced then return nil, perr end
    local last = math.min(offset + chunk, desc.size) - 1
    local before = h:clone()
    local res, err, detail = stream_range(dst, src, src_repo, repo, desc, offset, last, h, location)
    if res and (res.status == 202 or res.status == 201) then -- ECR answers a PATCH with 201
      location = link.resolve(dst.url .. "/v2/", res.headers.location or location)
      offset = last + 1
    else
      if res then err, detail = "http " .. res.status, res.body end
      if err == "cancelled" or not retry.transient_err(err) or resumes >= dst.retries then
        return nil, err, detail
      end
      resumes = resumes + 1
      log.warn("chunk %d-%d of %s: %s; resuming (%d/%d)", offset, last, desc.digest, err, resumes, dst.retries)
      local ok, serr = retry.pause(dst.retry, resumes, err)
      if not ok then return nil, serr end
      local have, loc = upload_status(dst, repo, location)
      if not have or have < offset or have > last + 1 then
        -- Distribution drops an upload whose stored bytes no longer match
        -- its state (a PATCH cut off midway): start over.
        return nil, err, "cannot resume: " .. tostring(have and ("the target holds " .. have .. " bytes") or loc)
      end
      h = before
      if have > offset then
        -- The target kept part of the chunk: hash those bytes from the source.
        local ok2, herr, hdetail = stream_range(dst, src, src_repo, repo, desc, offset, have - 1, h, nil)
        if not ok2 then return nil, herr, hdetail end
      end
      offset, location = have, loc
    end
  end
  if h:hex() ~= desc.digest then
    return nil, "digest mismatch", "the content read from the source does not match its digest"
  end
  local url = location .. (location:find("?", 1, true) and "&" or "?") .. "digest=" .. desc.digest:gsub(":", "%%3A")
  local res, err, kind = dst:_request("PUT", url, push(repo),
    { headers = { ["Content-Type"] = "application/octet-stream" }, body = "" })
  if not res then return nil, kind or err, err end
  if res.status ~= 201 then return nil, "http " .. res.status, res.body end
  return { status = res.status, bytes = desc.size, headers = res.headers }
end

return chunked
