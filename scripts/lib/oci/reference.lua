-- oci/reference.lua - the OCI distribution-spec grammar of repository names,
-- tags and digests. Every name that comes from outside (a webhook, a catalog
-- or tags listing, the API, the command line) is checked here before it is
-- matched against filters or put into a URL: a name such as
-- "team-a/../team-b/app" is not a repository, and libcurl or a proxy could
-- turn it into another one.
--
--   repository  [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
--               at most 255 characters
--   tag         [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
--   digest      algorithm ":" encoded (OCI image spec), algorithm
--               [a-z0-9]+([+._-][a-z0-9]+)*, encoded [a-zA-Z0-9=_-]+; sha256
--               and sha512 need 64 and 128 lower-case hex digits
--
-- Each check returns the value when it is valid, or nil and a message that
-- names the value and says what the grammar allows.
local reference = {}

reference.NAME_MAX = 255

local NAME_RULE = "a repository name is path components separated by '/', each of lower-case letters "
  .. "and digits joined by '.', '_', '__' or dashes (no '.' or '..' components), at most 255 characters"
local TAG_RULE = "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
local DIGEST_RULE = "a digest is algorithm:encoded, e.g. sha256: and 64 lower-case hex digits"

local ENCODED_HEX = { sha256 = 64, sha512 = 128 }

-- Returns the value as quoted in a message (%q, cut to 300 characters).
local function show(v)
  if type(v) ~= "string" then return tostring(v) end
  if #v > 300 then v = v:sub(1, 300) .. "..." end
  return string.format("%q", v)
end

-- Returns whether c is one path component of a repository name.
local function component(c)
  if not c:match("^[a-z0-9][a-z0-9._-]*$") or not c:match("[a-z0-9]$") then return false end
  for sep in c:gmatch("[._-]+") do
    if sep ~= "." and sep ~= "_" and sep ~= "__" and not sep:match("^%-+$") then return false end
  end
  return true
end

-- Checks a repository name (e.g. "library/alpine"); returns it or nil, err.
function reference.repository(name)
  if type(name) == "string" and name ~= "" and #name <= reference.NAME_MAX then
    local ok = name:sub(-1) ~= "/"
    for c in (name .. "/"):gmatch("([^/]*)/") do
      ok = ok and component(c)
    end
    if ok then return name end
  end
  return nil, string.format("invalid repository name %s: %s", show(name), NAME_RULE)
end

-- Checks a tag (e.g. "v1.2"); returns it or nil, err.
function reference.tag(tag)
  if type(tag) == "string" and #tag <= 128 and tag:match("^[A-Za-z0-9_][A-Za-z0-9._-]*$") then
    return tag
  end
  return nil, string.format("invalid tag %s: %s", show(tag), TAG_RULE)
end

-- Checks a digest (e.g. "sha256:<64 hex>"); returns it or nil, err.
function reference.digest(d)
  if type(d) == "string" then
    local alg, enc = d:match("^([a-z0-9]+[a-z0-9+._-]*):([a-zA-Z0-9=_-]+)$")
    local ok = alg ~= nil and alg:match("[a-z0-9]$") and not alg:find("[+._-][+._-]")
    local hex = alg and ENCODED_HEX[alg]
    if ok and hex then ok = #enc == hex and enc:match("^[a-f0-9]+$") end
    if ok then return d end
  end
  return nil, string.format("invalid digest %s: %s", show(d), DIGEST_RULE)
end

-- Checks a manifest reference: a digest when it holds ':', else a tag;
-- returns it or nil, err.
function reference.ref(r)
  if type(r) == "string" and r:find(":", 1, true) then return reference.digest(r) end
  return reference.tag(r)
end

-- Checks a repository and a manifest reference together, for the client's
-- URL builders; returns true or nil, err.
function reference.check(repo, ref)
  local ok, err = reference.repository(repo)
  if ok and ref ~= nil then ok, err = reference.ref(ref) end
  if not ok then return nil, err end
  return true
end

return reference
