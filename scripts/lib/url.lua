-- url.lua - URLs for the registry kinds' API calls (RFC 3986): percent-
-- encoding, query strings, and the parts of an http(s) URL. Pure Lua; the
-- character classes are spelled out, so no locale enters.
local url = {}

-- Returns s as a string (numbers are accepted), raising a caller's error
-- naming fn otherwise.
local function str(s, fn)
  local ty = type(s)
  if ty == "string" then return s end
  if ty == "number" then return tostring(s) end
  error(string.format("url.%s: string expected, got %s", fn, ty), 3)
end

local function escape(c)
  return string.format("%%%02X", c:byte())
end

-- url.encode(s): every byte but the unreserved ones (A-Z a-z 0-9 - . _ ~) as
-- %XX with upper-case hex (RFC 3986 §2.1, §2.3). A space is %20, never +.
function url.encode(s)
  return (str(s, "encode"):gsub("[^A-Za-z0-9%-._~]", escape))
end

-- url.encode_path(s): url.encode, keeping "/" (a path's segments encoded).
function url.encode_path(s)
  return (str(s, "encode_path"):gsub("[^A-Za-z0-9%-._~/]", escape))
end

-- url.decode(s) -> string | nil, err: every %XX as its byte. "+" stays "+"
-- (it means a space only in HTML forms); a "%" not followed by two hex
-- digits is an error.
function url.decode(s)
  s = str(s, "decode")
  if s:find("%", 1, true) then
    for i in s:gmatch("()%%") do
      if not s:find("^[0-9A-Fa-f][0-9A-Fa-f]", i + 1) then
        return nil, "invalid percent-encoding"
      end
    end
  end
  return (s:gsub("%%([0-9A-Fa-f][0-9A-Fa-f])", function(h) return string.char(tonumber(h, 16)) end))
end

-- A query value as text: strings, numbers and booleans.
local function scalar(v, k)
  local ty = type(v)
  if ty == "string" then return v end
  if ty == "number" or ty == "boolean" then return tostring(v) end
  error(string.format("url.query: the value of '%s' is a %s", k, ty), 3)
end

-- url.query(t) -> "a=1&b=2": each key=value encoded, keys sorted (by their
-- encoded form, byte by byte). A list value repeats the key once per item,
-- in the list's order; an empty list leaves the key out.
function url.query(t)
  if type(t) ~= "table" then error("url.query: table expected, got " .. type(t), 2) end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("url.query: keys must be strings, got " .. type(k), 2) end
    keys[#keys + 1] = { k, url.encode(k) }
  end
  table.sort(keys, function(a, b) return a[2] < b[2] end)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k[1]]
    if type(v) == "table" then
      for _, item in ipairs(v) do out[#out + 1] = k[2] .. "=" .. url.encode(scalar(item, k[1])) end
    else
      out[#out + 1] = k[2] .. "=" .. url.encode(scalar(v, k[1]))
    end
  end
  return table.concat(out, "&")
end

-- url.parse_query(q) -> { {name, value}, ... } | nil, err: the pairs of a
-- raw query string, in order, decoded ("a" alone is {"a", ""}; empty pieces
-- between "&" are skipped).
function url.parse_query(q)
  q = str(q, "parse_query")
  local out = {}
  for piece in q:gmatch("[^&]+") do
    local k, v = piece:match("^([^=]*)=?(.*)$")
    local dk, err = url.decode(k)
    if not dk then return nil, err end
    local dv, verr = url.decode(v)
    if not dv then return nil, verr end
    out[#out + 1] = { dk, dv }
  end
  return out
end

local DEFAULT_PORT = { http = 80, https = 443 }

-- url.parse(s) -> { scheme, host, port, path, query, fragment, userinfo } |
-- nil, err, for absolute URLs with an authority (scheme://host...).
-- scheme and host are lower-cased (an IPv6 host keeps its brackets); port is
-- an integer, the scheme's default when absent (nil for schemes other than
-- http and https); path is "/" when empty; query and fragment are the raw
-- text after "?" and "#", or nil; userinfo is the raw text before "@", or nil.
function url.parse(s)
  s = str(s, "parse")
  local scheme, rest = s:match("^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
  if not scheme then return nil, "not an absolute URL (scheme://host...)" end
  scheme = scheme:lower()
  local authority = rest:match("^[^/?#]*")
  rest = rest:sub(#authority + 1)
  local userinfo, hostport = authority:match("^(.*)@([^@]*)$")
  if not userinfo then hostport = authority end
  local host, port = hostport:match("^(%[[0-9A-Fa-f:.]+%]):?(.*)$")
  if not host then host, port = hostport:match("^([^:%[%]]*):?(.*)$") end
  if not host or host == "" then return nil, "the URL has no host" end
  if host:find("[%s%c%%]") then return nil, "the URL's host holds an invalid character" end
  local portnum = DEFAULT_PORT[scheme]
  if port ~= "" then
    portnum = port:match("^%d+$") and tonumber(port)
    if not portnum or portnum < 1 or portnum > 65535 then
      return nil, "the URL's port is not a number from 1 to 65535"
    end
  end
  local path = rest:match("^[^?#]*")
  rest = rest:sub(#path + 1)
  local query, fragment
  if rest:sub(1, 1) == "?" then
    query = rest:match("^%?([^#]*)")
    rest = rest:sub(#query + 2)
  end
  if rest:sub(1, 1) == "#" then fragment = rest:sub(2) end
  return {
    scheme = scheme,
    host = host:lower(),
    port = portnum,
    path = path == "" and "/" or path,
    query = query,
    fragment = fragment,
    userinfo = userinfo,
  }
end

return url
