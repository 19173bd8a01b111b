-- oci/manifests.lua - the client's manifest methods: GET, HEAD and PUT of
-- exact bytes, with digests checked, and DELETE by digest. oci.lua adds them to every client.
local common = require("oci.common")
local pull, push = common.pull, common.push
local digest_alg, digest_of = common.digest_alg, common.digest_of
local http_error = common.http_error
local media = require("oci.media")
local ratelimit = require("oci.ratelimit")
local reference = require("oci.reference")

local M = {}

-- Returns the URL of a manifest, or nil, err, "invalid name" when repo or ref
-- is not valid in the OCI grammar (no URL is built from such a name).
function M:manifest_url(repo, ref)
  local ok, err = reference.check(repo, ref)
  if not ok then return nil, "manifest: " .. err, "invalid name" end
  return self.url .. "/v2/" .. repo .. "/manifests/" .. ref
end

-- Checks that body hashes to every digest given (the reference when it is a
-- digest, the registry's Docker-Content-Digest); returns its digest or nil, err.
local function check_digest(what, body, ref, header, media_type)
  local alg = digest_alg(ref)
  local d = digest_of(body, alg)
  if alg and d ~= ref then
    return nil, string.format("%s: digest mismatch (the body hashes to %s)", what, d), "digest mismatch"
  end
  -- Signed schema1 manifests are hashed without their signatures: no check.
  local signed = media_type and media_type:find("prettyjws", 1, true)
  if header and not signed then
    local halg = digest_alg(header)
    if halg and digest_of(body, halg) ~= header then
      return nil, string.format("%s: digest mismatch (the registry says %s, the body hashes to %s)",
        what, header, digest_of(body, halg)), "digest mismatch"
    end
  end
  return d
end

-- GETs a manifest as exact bytes: {body, media_type, digest, size}, the
-- digest computed and checked against the reference and the registry's header.
-- On a registry whose kind has a pull limit (oci/ratelimit.lua), the GET
-- waits its turn, and a 429 saying the limit is used up is waited out
-- (probing with HEADs, which do not count) for at most the kind's max_wait.
function M:get_manifest(repo, ref)
  local url, uerr, ukind = self:manifest_url(repo, ref)
  if not url then return nil, uerr, ukind end
  local what = "GET " .. url
  local lim = ratelimit.of(self)
  local started = time.mono()
  local res, err, kind, mark
  while true do
    if lim then
      local lerr
      mark, lerr = lim:acquire(function()
        return (self:_request("HEAD", url, pull(repo), { headers = { Accept = media.ACCEPT } }))
      end, started)
      if not mark then
        if lerr == "cancelled" then return nil, what .. ": cancelled", "cancelled" end
        local last = res and (": last answer " .. select(1, http_error(what, res, self))) or ""
        return nil, lerr .. last, "rate limit"
      end
    end
    res, err, kind = self:_request("GET", url, pull(repo),
      { headers = { Accept = media.ACCEPT }, max_body = media.MAX_MANIFEST, final = lim and lim.final })
    if lim then lim:done(mark) end
    if not res and kind == "too large" then
      return nil, string.format("%s: the manifest is larger than %d MiB, the most replica reads", what,
        media.MAX_MANIFEST // (1024 * 1024)), kind
    end
    if not res then return nil, err, kind end
    if not lim then break end
    lim:observe(res, mark)
    if not lim:exhausted(res) then break end
  end
  if res.status ~= 200 then return nil, http_error(what, res, self) end
  local mt = media.strip(res.headers["content-type"])
  if not mt or mt == "application/json" or mt == "text/plain" or mt == "application/octet-stream" then
    local doc = json.decode(res.body)
    mt = type(doc) == "table" and media.detect(doc) or mt
  end
  local d
  d, err, kind = check_digest(what, res.body, ref, res.headers["docker-content-digest"], mt)
  if not d then return nil, err, kind end
  return { body = res.body, media_type = mt, digest = d, size = #res.body }
end

-- HEADs a manifest: {digest, media_type, size}, false when it does not exist,
-- or nil, err. Without a Docker-Content-Digest header it GETs the manifest.
-- A registry whose kind has the quirk missing_401 (Quay) answers a
-- repository that does not exist (yet) with 401, not 404: such a 401, after
-- a fresh token, is taken as absent too (the push_prepare stage still checks
-- the credentials and push access before anything is pushed).
function M:head_manifest(repo, ref)
  local url, uerr, ukind = self:manifest_url(repo, ref)
  if not url then return nil, uerr, ukind end
  local lim = ratelimit.of(self)
  local mark = lim and lim:mark()
  local res, err, kind = self:_request("HEAD", url, pull(repo), { headers = { Accept = media.ACCEPT } })
  if not res then return nil, err, kind end
  if lim then lim:observe(res, mark) end -- a HEAD does not count, and says what is left
  if res.status == 404 or (res.status == 401 and self.quirks and self.quirks.missing_401 == true) then
    return false
  end
  if res.status ~= 200 then return nil, http_error("HEAD " .. url, res, self) end
  local d = res.headers["docker-content-digest"]
  if not digest_alg(d) then
    local m
    m, err, kind = self:get_manifest(repo, ref)
    if not m then return nil, err, kind end
    return { digest = m.digest, media_type = m.media_type, size = m.size }
  end
  return { digest = d, media_type = media.strip(res.headers["content-type"]),
           size = tonumber(res.headers["content-length"]) }
end

-- PUTs a manifest's exact bytes under ref (a tag or its digest); returns the
-- digest after checking the registry's Docker-Content-Digest against it,
-- and whether the registry confirmed it so (true when that header came: the
-- registry named the digest it stored; false when it said nothing).
function M:put_manifest(repo, ref, body, media_type)
  assert(type(body) == "string", "put_manifest: 'body' must be a string")
  if not media_type then
    local doc = json.decode(body)
    media_type = type(doc) == "table" and media.detect(doc)
    if not media_type then return nil, "put_manifest: the media type is unknown", "protocol" end
  end
  local url, uerr, ukind = self:manifest_url(repo, ref)
  if not url then return nil, uerr, ukind end
  local what = "PUT " .. url
  local want = digest_of(body, digest_alg(ref))
  if digest_alg(ref) and want ~= ref then
    return nil, what .. ": digest mismatch (the body hashes to " .. want .. ")", "digest mismatch"
  end
  local res, err, kind = self:_request("PUT", url, push(repo),
    { headers = { ["Content-Type"] = media_type }, body = body })
  if not res then return nil, err, kind end
  if res.status ~= 201 and res.status ~= 200 then return nil, http_error(what, res, self) end
  local got = res.headers["docker-content-digest"]
  if got and got ~= want then
    return nil, string.format("%s: digest mismatch (the registry says %s, the body hashes to %s)",
      what, got, want), "digest mismatch"
  end
  return want, got ~= nil
end

-- The error of a refused DELETE: http_error's, and the message of the
-- registry's first OCI error (why it refused: a repository with deletion
-- disabled, a protected tag), which the code alone does not say.
local function delete_error(what, res, reg)
  local err, kind = http_error(what, res, reg)
  local doc = json.decode(res.body or "")
  local e = type(doc) == "table" and type(doc.errors) == "table" and doc.errors[1]
  local msg = type(e) == "table" and type(e.message) == "string" and e.message
  if msg and msg ~= "" then err = err .. ": " .. msg:sub(1, 200):gsub("%c", " ") end
  return err, kind
end

-- DELETEs the manifest with digest dgst (registries delete by digest only):
-- true when deleted, false when it was not there, or nil, err, kind (a
-- registry with deletes disabled answers 405 UNSUPPORTED).
function M:delete_manifest(repo, dgst)
  assert(digest_alg(dgst), "delete_manifest: a digest is required")
  local url, uerr, ukind = self:manifest_url(repo, dgst)
  if not url then return nil, uerr, ukind end
  local res, err, kind = self:_request("DELETE", url, "repository:" .. repo .. ":delete", {})
  if not res then return nil, err, kind end
  if res.status == 404 then return false end
  if res.status ~= 202 and res.status ~= 200 and res.status ~= 204 then
    return nil, delete_error("DELETE " .. url, res, self)
  end
  return true
end

return M
