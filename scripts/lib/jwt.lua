-- jwt.lua - RS256 JSON Web Tokens (RFC 7515, 7518 §3.3, 7519) on the rsa
-- and base64 modules, and the assertion of Google's service-account
-- JWT-bearer grant (RFC 7523). The JSON is written here, deterministically,
-- so a signature can be compared byte for byte (RFC 7520 §4.1 in
-- spec/jwt_spec.lua).
--
-- A header or claims set is a JSON object given as either
--   a table with string keys: written with its keys sorted, or
--   a list of {key, value} pairs: written in that order,
-- and its values as JSON: strings (UTF-8), numbers, booleans, json.null, and
-- tables (a sequence or json.array_mt is an array; else an object, keys
-- sorted).
local url = require("url")

local jwt = {}

local GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
local JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
local MAX_DEPTH = 32

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }

local function json_string(s)
  if not utf8.len(s) then error("jwt: a string is not valid UTF-8", 0) end
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- The shortest decimal text that reads back as x.
local function json_number(x)
  if math.type(x) == "integer" then return string.format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then error("jwt: a number is not finite", 0) end
  if x == math.floor(x) and math.abs(x) < 2 ^ 53 then return string.format("%d", math.tointeger(x)) end
  for p = 15, 17 do
    local s = string.format("%." .. p .. "g", x)
    if tonumber(s) == x then return s end
  end
end

local encode

-- Whether t is a list of {key, value} pairs (a non-empty sequence of
-- two-element tables with string keys).
local function is_pairs(t)
  if #t == 0 then return false end
  for _, p in ipairs(t) do
    if type(p) ~= "table" or type(p[1]) ~= "string" or #p ~= 2 then return false end
  end
  return true
end

-- The JSON of an object given as a table (keys sorted) or as pairs.
local function encode_object(t, depth, ordered)
  local out = {}
  if ordered then
    local seen = {}
    for _, p in ipairs(t) do
      if seen[p[1]] then error("jwt: key '" .. p[1] .. "' is given twice", 0) end
      seen[p[1]] = true
      out[#out + 1] = json_string(p[1]) .. ":" .. encode(p[2], depth)
    end
  else
    local keys = {}
    for k in pairs(t) do
      if type(k) ~= "string" then error("jwt: an object's keys must be strings, got " .. type(k), 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for i, k in ipairs(keys) do out[i] = json_string(k) .. ":" .. encode(t[k], depth) end
  end
  return "{" .. table.concat(out, ",") .. "}"
end

function encode(v, depth)
  local ty = type(v)
  if ty == "string" then return json_string(v) end
  if ty == "number" then return json_number(v) end
  if ty == "boolean" then return tostring(v) end
  if v == json.null then return "null" end
  if ty ~= "table" then error("jwt: a " .. ty .. " cannot be written as JSON", 0) end
  if depth >= MAX_DEPTH then error("jwt: nested deeper than " .. MAX_DEPTH .. " levels (a cycle?)", 0) end
  local n = #v
  if getmetatable(v) == json.array_mt or n > 0 then
    local count = 0
    for _ in pairs(v) do count = count + 1 end
    if count ~= n then error("jwt: a table mixes list items and keys", 0) end
    local out = {}
    for i = 1, n do out[i] = encode(v[i], depth + 1) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  return encode_object(v, depth + 1, false)
end

-- jwt.json(object) -> text: the JSON jwt.rs256 writes for a header or
-- claims set (a table, or a list of {key, value} pairs). Raises on values
-- JSON cannot hold.
function jwt.json(obj)
  if type(obj) ~= "table" then error("jwt.json: table expected, got " .. type(obj), 2) end
  return encode_object(obj, 1, is_pairs(obj))
end

-- Returns the value of key in a header given as a table or as pairs.
local function field(obj, key)
  if is_pairs(obj) then
    for _, p in ipairs(obj) do
      if p[1] == key then return p[2] end
    end
    return nil
  end
  return obj[key]
end

-- jwt.rs256(header, claims, pem) -> compact JWS | nil, err. header's alg
-- must be "RS256" (it is put first when absent); claims is a JSON object
-- as above, or a string taken as the payload's bytes as they are. pem is
-- the private key (rsa.sign_sha256); its errors come back as nil, err.
function jwt.rs256(header, claims, pem)
  if type(header) ~= "table" then error("jwt.rs256: header must be a table", 2) end
  local alg = field(header, "alg")
  if alg == nil then
    if is_pairs(header) then
      local h = { { "alg", "RS256" } }
      for _, p in ipairs(header) do h[#h + 1] = p end
      header = h
    else
      local h = { alg = "RS256" }
      for k, v in pairs(header) do h[k] = v end
      header = h
    end
  elseif alg ~= "RS256" then
    error("jwt.rs256: the header's alg is " .. tostring(alg) .. ", not RS256", 2)
  end
  local payload
  if type(claims) == "string" then
    payload = claims
  elseif type(claims) == "table" then
    payload = jwt.json(claims)
  else
    error("jwt.rs256: claims must be a table or a string", 2)
  end
  local input = base64.urlencode(jwt.json(header)) .. "." .. base64.urlencode(payload)
  local sig, err = rsa.sign_sha256(pem, input)
  if not sig then return nil, err end
  return input .. "." .. base64.urlencode(sig)
end

-- jwt.decode(compact) -> header, claims, parts | nil, err, without checking
-- the signature: header and claims are the decoded JSON objects; parts holds
-- signing_input, payload (its bytes) and signature (raw bytes).
function jwt.decode(compact)
  if type(compact) ~= "string" then return nil, "jwt.decode: not a string" end
  local h64, p64, s64 = compact:match("^([A-Za-z0-9_-]*)%.([A-Za-z0-9_-]*)%.([A-Za-z0-9_-]*)$")
  if not h64 then return nil, "not a compact JWS (three base64url parts joined by '.')" end
  local htext, ptext, sig = base64.urldecode(h64), base64.urldecode(p64), base64.urldecode(s64)
  if not htext or not ptext or not sig then return nil, "a part of the JWT is not base64url" end
  local header = htext:find("^[ \t\r\n]*{") and json.decode(htext)
  if type(header) ~= "table" then return nil, "the JWT's header is not a JSON object" end
  local claims = ptext:find("^[ \t\r\n]*{") and json.decode(ptext)
  if type(claims) ~= "table" then return nil, "the JWT's payload is not a JSON object" end
  return header, claims, { signing_input = h64 .. "." .. p64, payload = ptext, signature = sig }
end

-- jwt.verify_rs256(compact, pem_public) -> header, claims | nil, err: decodes
-- and checks an RS256 signature (rsa.verify_sha256). It does not look at the
-- claims: the caller checks exp, aud and the rest.
function jwt.verify_rs256(compact, pem)
  local header, claims, parts = jwt.decode(compact)
  if not header then return nil, claims end
  if header.alg ~= "RS256" then return nil, "the JWT's alg is not RS256" end
  local ok, err = rsa.verify_sha256(pem, parts.signing_input, parts.signature)
  if not ok then return nil, err end
  return header, claims
end

-- Checks a service-account key (a table, or its JSON text); returns it, or
-- nil, err. The error never quotes the key.
local function service_account(key)
  if type(key) == "string" then
    key = json.decode(key)
    if type(key) ~= "table" then return nil, "the service-account key is not a JSON object" end
  end
  if type(key) ~= "table" then return nil, "the service-account key must be a table" end
  if key.type ~= nil and key.type ~= "service_account" then
    return nil, "not a service-account key (its type is not service_account)"
  end
  for _, f in ipairs { "private_key", "client_email" } do
    if type(key[f]) ~= "string" or key[f] == "" then return nil, "the service-account key has no " .. f end
  end
  if key.token_uri ~= nil and type(key.token_uri) ~= "string" then
    return nil, "the service-account key's token_uri is not a string"
  end
  return key
end

-- The space-separated scope list of a string or a list of strings.
local function scopes(scope)
  if type(scope) == "table" then scope = table.concat(scope, " ") end
  if type(scope) ~= "string" or scope == "" then error("jwt: scope must be a string or a list of strings", 3) end
  return scope
end

-- jwt.google_assertion(key, scope, now) -> JWT | nil, err: the assertion of
-- Google's JWT-bearer grant for a service-account key file (decoded, or its
-- JSON text). Header {"alg":"RS256","typ":"JWT","kid":private_key_id};
-- claims iss = client_email, scope (a string, or a list joined by spaces),
-- aud = the key's token_uri (Google's token endpoint when absent),
-- iat = now (default time.now(), in whole seconds), exp = iat + 3600.
local function google_assertion(k, scope, now)
  local iat = math.floor(now or time.now())
  local header = { { "alg", "RS256" }, { "typ", "JWT" } }
  if type(k.private_key_id) == "string" and k.private_key_id ~= "" then
    header[3] = { "kid", k.private_key_id }
  end
  local claims = {
    { "iss", k.client_email },
    { "scope", scope },
    { "aud", k.token_uri or GOOGLE_TOKEN_URI },
    { "iat", iat },
    { "exp", iat + 3600 },
  }
  return jwt.rs256(header, claims, k.private_key)
end

function jwt.google_assertion(key, scope, now)
  scope = scopes(scope)
  local k, err = service_account(key)
  if not k then return nil, err end
  return google_assertion(k, scope, now)
end

-- jwt.google_token_request(key, scope, now) -> request | nil, err: the token
-- request to send with http.request: { method = "POST", url = token_uri,
-- headers = {Content-Type = form}, body = "grant_type=...&assertion=..." }.
function jwt.google_token_request(key, scope, now)
  scope = scopes(scope)
  local k, err = service_account(key)
  if not k then return nil, err end
  local assertion, serr = google_assertion(k, scope, now)
  if not assertion then return nil, serr end
  return {
    method = "POST",
    url = k.token_uri or GOOGLE_TOKEN_URI,
    headers = { ["Content-Type"] = "application/x-www-form-urlencoded" },
    body = "grant_type=" .. url.encode(JWT_BEARER) .. "&assertion=" .. url.encode(assertion),
  }
end

return jwt
