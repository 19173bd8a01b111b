-- oci/link.lua - Link headers (RFC 8288) and relative URLs, for paged lists
-- and upload locations.
local link = {}

-- Returns the target of the rel="next" link in a Link header value, or nil.
-- Several links (or several joined Link headers) may be present.
function link.next(header)
  if type(header) ~= "string" then return nil end
  for target, params in header:gmatch("<([^>]*)>([^<]*)") do
    for rel in params:gmatch(';%s*[Rr][Ee][Ll]%s*=%s*"?([^";,]*)') do
      for word in rel:gmatch("%S+") do
        if word:lower() == "next" then return target end
      end
    end
  end
  return nil
end

-- Returns the scheme://authority prefix of an absolute URL, or nil.
local function prefix(url)
  return url:match("^(%a[%w+.-]*://[^/?#]*)")
end

local DEFAULT_PORT = { http = "80", https = "443" }

-- Returns the origin of an http(s) URL as "scheme://host:port", lower-case,
-- with the default port made explicit, so that two spellings of one origin
-- compare equal; nil for other URLs and for URLs with userinfo.
function link.origin(url)
  if type(url) ~= "string" then return nil end
  local scheme, authority = url:match("^(%a[%w+.-]*)://([^/?#]*)")
  scheme = scheme and scheme:lower()
  if not DEFAULT_PORT[scheme] or authority == "" or authority:find("@", 1, true) then return nil end
  local host, port = authority:match("^(%[[^%]]*%]):?(%d*)$")
  if not host then host, port = authority:match("^([^:%[%]]+):?(%d*)$") end
  if not host then return nil end
  if port == "" then port = DEFAULT_PORT[scheme] end
  return string.format("%s://%s:%d", scheme, host:lower(), tonumber(port))
end

-- Resolves ref against the absolute URL base: absolute, scheme-relative,
-- absolute-path, query-only and path-relative references.
function link.resolve(base, ref)
  if ref:match("^%a[%w+.-]*://") then return ref end
  local o = assert(prefix(base), "link.resolve: base must be an absolute URL")
  if ref:sub(1, 2) == "//" then return base:match("^(%a[%w+.-]*:)") .. ref end
  if ref:sub(1, 1) == "/" then return o .. ref end
  local path = base:sub(#o + 1):gsub("[?#].*$", "")
  if path == "" then path = "/" end
  if ref:sub(1, 1) == "?" then return o .. path .. ref end
  return o .. path:match("^(.*/)") .. ref
end

return link
