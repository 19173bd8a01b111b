-- endpoint.lua - the registry client of one side of a task, built from a
-- URL, a registry kind and that kind's credentials and options: what
-- `replica run` (from its flags) and `replica function` (from an
-- invocation) share.
local oci = require("oci")
local kinds = require("kinds")

local endpoint = {}

-- Returns url with a scheme (https:// when it has none) and no trailing slash.
function endpoint.url(url)
  if not url:find("^https?://") then url = "https://" .. url end
  return (url:gsub("/+$", ""))
end

-- Loads the registry kind named kind_name, or the one detected from url's
-- host when it is nil. Returns kind, how it was found ("given", "default",
-- or the detection's reason), or nil, err.
function endpoint.kind(url, kind_name, tls)
  local found = "given"
  if not kind_name then kind_name, found = kinds.detect(url, { tls = tls }) end
  local kind, kerr = kinds.load(kind_name)
  if not kind then return nil, kerr end
  return kind, found
end

-- Checks fields (the credentials by name) against what kind takes: no
-- unknown name, and (unless hint is false) every required one, hint(name)
-- saying how to give a missing one. Returns true or nil, err.
function endpoint.check_credentials(kind, fields, hint)
  local known, names = {}, {}
  for _, c in ipairs(kind.credentials) do
    known[c.name] = true
    names[#names + 1] = c.name
  end
  for k in pairs(fields) do
    if not known[k] then
      return nil, string.format("the %s kind takes no credential '%s' (it takes: %s)", kind.name, k,
                                table.concat(names, ", "))
    end
  end
  for _, c in ipairs(hint ~= false and kind.credentials or {}) do
    if c.required and (fields[c.name] == nil or fields[c.name] == "") then
      return nil, string.format("the %s kind needs the credential '%s'%s", kind.name, c.name,
                                type(hint) == "function" and (" (" .. hint(c.name) .. ")") or "")
    end
  end
  return true
end

-- Builds the client: spec = {url, kind, fields (credentials by name, with
-- username and password), options (the kind's), tls, chunk_size, max_speed,
-- timeout (the stall limit in seconds; nil: oci's default)}.
-- Returns the client or nil, err (settings oci.new refuses, say).
function endpoint.client(spec)
  local fields = spec.fields or {}
  local ok, client = pcall(oci.new, { url = spec.url, username = fields.username, password = fields.password,
                                      chunk_size = spec.chunk_size, max_speed = spec.max_speed, tls = spec.tls,
                                      timeout = spec.timeout,
                                      kind = spec.kind, credentials = fields, kind_options = spec.options or {} })
  if not ok then return nil, (tostring(client):gsub("^[^:]*:%d+: ", "")) end
  return client
end

return endpoint
