-- oci/blobs.lua - the client's blob methods: HEAD, upload sessions, mounts,
-- small uploads from memory, and copies streamed in C by blob.copy.
-- oci.lua adds them to every client.
local common = require("oci.common")
local pull, push = common.pull, common.push
local digest_alg, digest_of = common.digest_alg, common.digest_of
local http_error, transfer_error = common.http_error, common.transfer_error
local link = require("oci.link")
local retry = require("oci.retry")
local chunked = require("oci.chunked")
local reference = require("oci.reference")

local M = {}

-- Returns the URL of a blob, or nil, err, "invalid name" when repo or dgst
-- is not valid in the OCI grammar.
function M:blob_url(repo, dgst)
  local ok, err = reference.repository(repo)
  if ok then ok, err = reference.digest(dgst) end
  if not ok then return nil, "blob: " .. err, "invalid name" end
  return self.url .. "/v2/" .. repo .. "/blobs/" .. dgst
end

-- HEADs a blob: its size, false when it does not exist, or nil, err.
function M:head_blob(repo, dgst)
  if not digest_alg(dgst) then return nil, "invalid digest " .. tostring(dgst), "protocol" end
  local url, uerr, ukind = self:blob_url(repo, dgst)
  if not url then return nil, uerr, ukind end
  local res, err, kind = self:_request("HEAD", url, pull(repo))
  if not res then return nil, err, kind end
  if res.status == 404 then return false end
  if res.status ~= 200 then return nil, http_error("HEAD " .. url, res, self) end
  return tonumber(res.headers["content-length"]) or true
end

-- POSTs to the uploads endpoint of repo with query; returns the response, the
-- request's description, or nil, err, kind.
function M:_post_upload(repo, query, scope)
  local ok, rerr = reference.repository(repo)
  if not ok then return nil, "upload: " .. rerr, "invalid name" end
  local url = self.url .. "/v2/" .. repo .. "/blobs/uploads/" .. query
  local res, err, kind = self:_request("POST", url, scope or push(repo))
  if not res then return nil, err, kind end
  return res, "POST " .. url
end

-- Returns the absolute upload URL of a 202, or nil, err.
local function upload_location(what, res, base)
  local loc = res.headers.location
  if not loc or loc == "" then return nil, what .. ": 202 without a Location", "protocol" end
  return link.resolve(base, loc)
end

-- Starts an upload session in repo; returns its absolute Location.
function M:start_upload(repo)
  local res, what, kind = self:_post_upload(repo, "")
  if not res then return nil, what, kind end
  if res.status ~= 202 then return nil, http_error(what, res, self) end
  return upload_location(what, res, self.url .. "/v2/")
end

-- Abandons the upload session at location (from start_upload or mount_blob):
-- one DELETE, best effort, errors ignored (credentials only on the
-- registry's own origin, nothing at all on a refused http URL).
function M:cancel_upload(location)
  local repo = tostring(location):match("/v2/(.-)/blobs/uploads/")
  if not repo or not reference.repository(repo) then return end
  local authz, err = self:authorization(push(repo), location)
  if err then return end
  http.request { method = "DELETE", url = location, headers = self:headers_for(location, { Authorization = authz }),
                 tls = self.tls, timeout = self.timeout }
end

-- Mounts blob dgst from repository from into repo: "mounted" (201), or the
-- Location of the ordinary upload session the registry opened instead (202).
function M:mount_blob(repo, dgst, from)
  if not digest_alg(dgst) then return nil, "invalid digest " .. tostring(dgst), "protocol" end
  local ok, ferr = reference.repository(from)
  if not ok then return nil, "mount from: " .. ferr, "invalid name" end
  local scope = push(repo) .. " " .. pull(from)
  local res, what, kind = self:_post_upload(repo, "?mount=" .. dgst .. "&from=" .. from, scope)
  if not res then return nil, what, kind end
  if res.status == 201 then return "mounted" end
  if res.status ~= 202 then return nil, http_error(what, res, self) end
  return upload_location(what, res, self.url .. "/v2/")
end

-- Uploads a small blob held in memory (a config, a test layer) in one PUT;
-- returns its digest.
function M:put_blob(repo, data)
  assert(type(data) == "string", "put_blob: 'data' must be a string")
  local dgst = digest_of(data)
  local loc, err, kind = self:start_upload(repo)
  if not loc then return nil, err, kind end
  local url = loc .. (loc:find("?", 1, true) and "&" or "?") .. "digest=" .. dgst:gsub(":", "%%3A")
  local res
  res, err, kind = self:_request("PUT", url, push(repo),
    { headers = { ["Content-Type"] = "application/octet-stream" }, body = data })
  if not res then return nil, err, kind end
  if res.status ~= 201 then return nil, http_error("PUT " .. loc, res, self) end
  return dgst
end

-- Streams one blob from src into an upload session of repo through blob.copy;
-- returns blob.copy's result or nil, err, detail.
function M:_stream(src, src_repo, repo, desc, location)
  local from_url, err, kind = src:blob_url(src_repo, desc.digest)
  if not from_url then return nil, kind, err end
  local from_auth
  from_auth, err, kind = src:authorization(pull(src_repo), from_url)
  if err then return nil, kind, err end
  local to_auth
  to_auth, err, kind = self:authorization(push(repo), location)
  if err then return nil, kind, err end
  return blob.copy {
    from = { url = from_url, headers = src:headers_for(from_url, { Authorization = from_auth }),
             tls = src.tls },
    to = { url = location, headers = self:headers_for(location, { Authorization = to_auth }), tls = self.tls,
           method = "PUT" },
    digest = desc.digest, size = desc.size, timeout = self.timeout, max_speed = self.max_speed,
  }
end

-- Checks a blob the target has (its HEAD's size, or true without one)
-- against the size the manifest gives; true, or nil and the refusal.
local function size_matches(what, desc, have)
  if math.type(have) == "integer" and have ~= desc.size then
    return nil, string.format("%s: size mismatch (the manifest says %d bytes, the target's blob has %d)",
      what, desc.size, have)
  end
  return true
end

-- Copies the blob desc = {digest, size} from src_repo on the client src into
-- repo, streaming in C with the digest checked before the last byte is sent.
-- Skips a blob the target has and mounts within one registry. A transient
-- failure restarts the upload session; a 401 refreshes both tokens once.
-- With opts.absent (repo is known not to exist on the target) the HEAD is
-- left out. Returns {skipped=true}, {mounted=true} or {copied=true, bytes=N}.
function M:copy_blob_from(src, src_repo, repo, desc, opts)
  if not digest_alg(desc.digest) or math.type(desc.size) ~= "integer" then
    return nil, "copy_blob_from: the descriptor needs a digest and an integer size", "protocol"
  end
  local from_url, err, kind = src:blob_url(src_repo, desc.digest)
  if not from_url then return nil, err, kind end
  local have = false
  if not (opts and opts.absent) then
    have, err, kind = self:head_blob(repo, desc.digest)
    if have == nil then return nil, err, kind end
  end
  local what = string.format("copy %s from %s to %s", desc.digest, from_url, self.url .. "/v2/" .. repo)
  if have then
    local ok, serr = size_matches(what, desc, have)
    if not ok then return nil, serr, "digest mismatch" end
    return { skipped = true }
  end
  local location
  if src.url == self.url and src_repo ~= repo then
    location, err, kind = self:mount_blob(repo, desc.digest, src_repo)
    if location == "mounted" then -- the same bytes: is their size the manifest's?
      have, err, kind = self:head_blob(repo, desc.digest)
      if not have then return nil, err or (what .. ": the mounted blob is not there"), kind or "protocol" end
      local ok, serr = size_matches(what, desc, have)
      if not ok then return nil, serr, "digest mismatch" end
      return { mounted = true }
    end
  end
  local attempt, refreshed = 0, false
  while true do
    if not location then
      location, err, kind = self:start_upload(repo)
      if not location then return nil, err, kind end
    end
    local res, detail
    if self.chunk_size and desc.size > self.chunk_size then
      res, err, detail = chunked.upload(self, src, src_repo, repo, desc, location, self.chunk_size)
    else
      res, err, detail = self:_stream(src, src_repo, repo, desc, location)
    end
    if res then
      local got = res.headers["docker-content-digest"]
      if got and got ~= desc.digest then
        return nil, string.format("%s: digest mismatch (the target says %s)", what, got), "digest mismatch"
      end
      return { copied = true, bytes = res.bytes }
    end
    if err ~= "cancelled" then self:cancel_upload(location) end
    location = nil
    if err == "http 401" and not refreshed then
      refreshed = true
      src.auth:forget(pull(src_repo))
      self.auth:forget(push(repo))
    elseif retry.transient_err(err) and attempt < self.retries then
      attempt = attempt + 1
      log.warn("%s: %s, retry %d/%d", what, err, attempt, self.retries)
      local ok, serr = retry.pause(self.retry, attempt, err)
      if not ok then return nil, what .. ": " .. serr, serr end
    else
      return nil, transfer_error(what, err, detail)
    end
  end
end

return M
