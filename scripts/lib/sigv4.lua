-- sigv4.lua - AWS Signature Version 4 for request headers (what ECR's
-- control plane takes), on digest/hmac and url. The algorithm is AWS's
-- (docs.aws.amazon.com/general/latest/gr/sigv4_signing.html), checked
-- against AWS's own test suite in spec/sigv4_spec.lua. Not for Amazon S3,
-- whose canonical URI is neither normalised nor encoded again.
local url = require("url")

local sigv4 = {}

local ALGORITHM = "AWS4-HMAC-SHA256"
local DEFAULT_PORT = { http = 80, https = 443 }

-- Headers the signer writes itself: the caller must not give them.
local RESERVED = { authorization = true, ["x-amz-date"] = true }

-- The canonical URI of a request path, as AWS wants it for services other
-- than S3: dot segments resolved and empty segments dropped (a trailing "/"
-- kept), then every segment URI-encoded. The path is taken as it goes on the
-- wire, so an escape already in it is encoded again ("%20" signs as "%2520").
local function canonical_uri(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      segs[#segs] = nil
    elseif seg ~= "." then
      segs[#segs + 1] = url.encode(seg)
    end
  end
  local out = "/" .. table.concat(segs, "/")
  if #segs > 0 and path:sub(-1) == "/" then out = out .. "/" end
  return out
end

-- The canonical query string: each name and value decoded then URI-encoded,
-- sorted by name, then by value, joined by "&".
local function canonical_query(query)
  if not query or query == "" then return "" end
  local pairs_, err = url.parse_query(query)
  if not pairs_ then return nil, "the URL's query: " .. err end
  for i, p in ipairs(pairs_) do pairs_[i] = { url.encode(p[1]), url.encode(p[2]) } end
  table.sort(pairs_, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i, p in ipairs(pairs_) do pairs_[i] = p[1] .. "=" .. p[2] end
  return table.concat(pairs_, "&")
end

-- A header value as AWS canonicalises it: trimmed, runs of spaces as one;
-- a list (a header sent once per item) is its items joined by ",". Returns
-- nil, type for a value that is neither a string nor a number.
local function canonical_value(v)
  if type(v) == "table" then
    local items = {}
    for i, item in ipairs(v) do
      local c, bad = canonical_value(item)
      if not c then return nil, bad end
      items[i] = c
    end
    return table.concat(items, ",")
  end
  if type(v) ~= "string" and type(v) ~= "number" then return nil, type(v) end
  return (tostring(v):gsub("^[ \t]+", ""):gsub("[ \t]+$", ""):gsub("[ \t]+", " "))
end

local function required(opts, name)
  local v = opts[name]
  if type(v) ~= "string" or v == "" then error("sigv4.sign: '" .. name .. "' is required (a string)", 3) end
  return v
end

-- sigv4.sign(opts) -> headers, info | nil, err. opts: method, url, headers
-- ({name = value | {values}}), body (default ""), access_key, secret_key,
-- session_token, region, service, now (seconds, default time.now()),
-- sign_headers (names of the given headers to sign; default all of them),
-- content_sha256 (true: add and sign X-Amz-Content-Sha256).
-- headers are the ones to add to the request (Authorization, X-Amz-Date, and
-- X-Amz-Security-Token / X-Amz-Content-Sha256 when asked); info holds
-- canonical_request, string_to_sign, signed_headers, scope and signature.
-- A URL that does not parse gives nil, err; misuse raises.
function sigv4.sign(opts)
  if type(opts) ~= "table" then error("sigv4.sign: table expected, got " .. type(opts), 2) end
  local method = required(opts, "method")
  local access_key = required(opts, "access_key")
  local secret_key = required(opts, "secret_key")
  local region = required(opts, "region")
  local service = required(opts, "service")
  local u, err = url.parse(required(opts, "url"))
  if not u then return nil, err end
  local body = opts.body or ""
  if type(body) ~= "string" then error("sigv4.sign: 'body' must be a string", 2) end
  local token = opts.session_token
  if token ~= nil and (type(token) ~= "string" or token == "") then
    error("sigv4.sign: 'session_token' must be a non-empty string", 2)
  end
  local now = opts.now or time.now()
  local amz_date, day = time.format(now, "basic"), time.format(now, "date")
  local payload_hash = digest.sha256(body)

  -- the headers by lower-case name
  local given = {}
  for name, v in pairs(opts.headers or {}) do
    if type(name) ~= "string" then error("sigv4.sign: header names must be strings", 2) end
    local lname = name:lower()
    if RESERVED[lname] then error("sigv4.sign: the signer sets '" .. name .. "' itself", 2) end
    if given[lname] then error("sigv4.sign: header '" .. lname .. "' is given twice", 2) end
    local c, bad = canonical_value(v)
    if not c then error(string.format("sigv4.sign: the value of header '%s' is a %s", name, bad), 2) end
    given[lname] = c
  end
  local signed = {}
  if opts.sign_headers then
    for _, name in ipairs(opts.sign_headers) do
      local lname = tostring(name):lower()
      if not given[lname] then error("sigv4.sign: sign_headers names '" .. lname .. "', which is not given", 2) end
      signed[lname] = given[lname]
    end
  else
    for lname, v in pairs(given) do signed[lname] = v end
  end
  if not given.host then
    local port = (u.port and u.port ~= DEFAULT_PORT[u.scheme]) and (":" .. u.port) or ""
    signed.host = u.host .. port
  end
  signed.host = signed.host or given.host
  local add = { ["X-Amz-Date"] = amz_date }
  signed["x-amz-date"] = amz_date
  local function own(lname, header, value)
    if given[lname] then error("sigv4.sign: give '" .. header .. "' either as a header or as an option", 3) end
    signed[lname] = value
    add[header] = value
  end
  if token then own("x-amz-security-token", "X-Amz-Security-Token", token) end
  if opts.content_sha256 then own("x-amz-content-sha256", "X-Amz-Content-Sha256", payload_hash) end

  local names = {}
  for lname in pairs(signed) do names[#names + 1] = lname end
  table.sort(names)
  local lines = {}
  for i, lname in ipairs(names) do lines[i] = lname .. ":" .. signed[lname] .. "\n" end
  local signed_headers = table.concat(names, ";")
  local query, qerr = canonical_query(u.query)
  if not query then return nil, qerr end
  local canonical_request = table.concat({
    method, canonical_uri(u.path), query, table.concat(lines), signed_headers, payload_hash,
  }, "\n")
  local scope = table.concat({ day, region, service, "aws4_request" }, "/")
  local string_to_sign = table.concat({ ALGORITHM, amz_date, scope, digest.sha256(canonical_request) }, "\n")
  local k = hmac.sha256("AWS4" .. secret_key, day, "raw")
  k = hmac.sha256(k, region, "raw")
  k = hmac.sha256(k, service, "raw")
  k = hmac.sha256(k, "aws4_request", "raw")
  local signature = hmac.sha256(k, string_to_sign)
  add.Authorization = string.format("%s Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                                    ALGORITHM, access_key, scope, signed_headers, signature)
  return add, {
    canonical_request = canonical_request,
    string_to_sign = string_to_sign,
    signed_headers = signed_headers,
    scope = scope,
    signature = signature,
  }
end

return sigv4
