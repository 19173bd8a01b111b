-- oci/auth.lua - registry authentication: WWW-Authenticate challenges, Basic,
-- and the Docker token flow with a token cache per scope.
--
-- Credentials live in a private table keyed by the auth object, never in a
-- field, so logging or encoding a client cannot leak them, and no error
-- message built here contains them. The Basic credentials go to the registry
-- (oci.lua decides which URLs are its own) and to the token realm its
-- challenge names; a registry on https may only name an https realm.
local retry = require("oci.retry")

local auth = {}
local Auth = {}
Auth.__index = Auth
Auth.__metatable = false -- stage code must not reach, and change, the class of every client's auth

local secrets = setmetatable({}, { __mode = "k" })  -- auth object -> Basic header
local logins = setmetatable({}, { __mode = "k" })   -- auth object -> {fn, expires, inflight, headers}

-- The part of a token's lifetime kept in reserve: 10%, at most 30 s.
local function margin(ttl)
  return math.min(30, ttl / 10)
end

-- Percent-encodes a query parameter value.
local function urlencode(s)
  return (s:gsub("[^%w%-._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Reads a quoted-string starting at s[i] == '"'; returns its value and the
-- index after the closing quote.
local function quoted(s, i)
  local out, j = {}, i + 1
  while j <= #s do
    local c = s:sub(j, j)
    if c == "\\" then
      out[#out + 1] = s:sub(j + 1, j + 1)
      j = j + 2
    elseif c == '"' then
      return table.concat(out), j + 1
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
  return table.concat(out), j
end

-- Parses a WWW-Authenticate value (several challenges may be joined by
-- commas) into a list of {scheme = "bearer", params = {realm = ...}}.
function auth.parse_challenges(value)
  local list, cur, i = {}, nil, 1
  value = value or ""
  while true do
    local _, e, tok = value:find("^[%s,]*([%w!#$%%&'*+.^_`|~-]+)", i)
    if not e then break end
    i = e + 1
    local _, eq = value:find("^%s*=%s*", i)
    if eq and cur then
      local v
      if value:sub(eq + 1, eq + 1) == '"' then
        v, i = quoted(value, eq + 1)
      else
        local _, ve, tv = value:find("^([^,%s]*)", eq + 1)
        v, i = tv, ve + 1
      end
      cur.params[tok:lower()] = v
    else
      cur = { scheme = tok:lower(), params = {} }
      list[#list + 1] = cur
    end
  end
  return list
end

-- Creates the auth state of one client. opts: username, password, tls,
-- timeout, retry (options for retry.run), https (the registry is on https:
-- an http token realm is refused).
-- opts.login, when given, is a function returning {username, password,
-- expires_in} (a registry kind's login: ECR, Artifact Registry and ACR
-- turn their own credentials into registry ones that expire), or
-- {anonymous = true, expires_in} for none (ACR with anonymous pull: the
-- token flow without Authorization); it is called when the credentials are
-- first needed and again when they expire.
function auth.new(opts)
  local self = setmetatable({ scheme = nil, tokens = {}, inflight = {}, https = opts.https or false,
                              tls = opts.tls, timeout = opts.timeout, retry = opts.retry or {} }, Auth)
  if opts.username then
    secrets[self] = "Basic " .. base64.encode(opts.username .. ":" .. (opts.password or ""))
  end
  if opts.login then logins[self] = { fn = opts.login } end
  return self
end

-- Returns the Basic header value of the credentials, logging in through
-- the kind first when there are none yet or they expired (concurrent
-- callers share one login); nil when the kind's login said anonymous; or
-- nil, err.
function Auth:basic()
  local l = logins[self]
  if not l then return secrets[self] end
  if (secrets[self] or l.anonymous) and l.expires and time.mono() < l.expires then return secrets[self] end
  if not l.inflight then
    l.inflight = task.spawn({ name = "login" }, function()
      local c, err = l.fn()
      local anonymous = type(c) == "table" and c.anonymous == true
      if type(c) ~= "table" or (type(c.username) ~= "string" and not anonymous) then
        return nil, err or "the registry kind's login returned no username"
      end
      local ttl = tonumber(c.expires_in) or 3600
      secrets[self] = not anonymous and ("Basic " .. base64.encode(c.username .. ":" .. (c.password or ""))) or nil
      l.anonymous = anonymous
      l.headers = type(c.headers) == "table" and c.headers or nil
      l.expires = time.mono() + ttl - margin(ttl)
      self.tokens = {} -- tokens of the old credentials go with them
      return true
    end)
  end
  local h = l.inflight
  local done, ok, err = h:wait()
  if l.inflight == h then l.inflight = nil end
  if not done then return nil, ok end
  if not ok then return nil, err end
  return secrets[self]
end

-- Returns the headers the kind's login asked to send with every request to
-- the registry (a tenant, say), logging in first when needed; nil for none.
function Auth:extra_headers()
  local l = logins[self]
  if not l then return nil end
  if not l.headers or not l.expires then self:basic() end
  return l.headers
end

-- Returns an auth state for a forked client: the same credentials, the
-- scheme learnt so far, a copy of the token cache, nothing in flight.
function Auth:fork(retry_opts, tls)
  local c = {}
  for k, v in pairs(self) do c[k] = v end
  c.tokens, c.inflight, c.tls, c.retry = {}, {}, tls, retry_opts or self.retry
  for k, v in pairs(self.tokens) do c.tokens[k] = { token = v.token, expires = v.expires } end
  setmetatable(c, Auth)
  secrets[c] = secrets[self]
  if logins[self] then
    logins[c] = { fn = logins[self].fn, expires = logins[self].expires, headers = logins[self].headers,
                  anonymous = logins[self].anonymous }
  end
  return c
end

-- True when the credentials come from a registry kind's login.
function Auth:has_login()
  return logins[self] ~= nil
end

-- Makes the next request log in through the kind again.
function Auth:relogin()
  if logins[self] then logins[self].expires = nil end
end

-- True when the client was given credentials (a kind's login that said
-- anonymous gave none).
function Auth:has_credentials()
  return secrets[self] ~= nil or (logins[self] ~= nil and not logins[self].anonymous)
end

-- Returns nil when realm may receive the credentials of a registry on https
-- (https) or http; else why not.
local function realm_refused(realm, https)
  local scheme = tostring(realm):match("^(%a[%w+.-]*)://[^/?#]")
  scheme = scheme and scheme:lower()
  if scheme ~= "https" and scheme ~= "http" then
    return string.format("the token realm %q is not an absolute http(s) URL", tostring(realm))
  end
  if https and scheme ~= "https" then
    return string.format("refused: the registry is on https, and its token realm %s is not (no downgrade to http)",
      realm)
  end
  return nil
end

-- Adopts the scheme of a 401's WWW-Authenticate header (Bearer preferred,
-- then Basic); returns true when it is one this client can answer, or nil,
-- err when the Bearer realm may not be used (http from a registry on https).
function Auth:learn(header)
  local list = auth.parse_challenges(header)
  for _, c in ipairs(list) do
    if c.scheme == "bearer" and c.params.realm then
      local refused = realm_refused(c.params.realm, self.https)
      if refused then return nil, refused end
      self.scheme, self.realm, self.service = "bearer", c.params.realm, c.params.service
      return true
    end
  end
  for _, c in ipairs(list) do
    if c.scheme == "basic" then
      self.scheme = "basic"
      return true
    end
  end
  return false
end

-- Returns the cache key of a scope list: its scopes, sorted, space-separated.
local function scope_key(scope)
  local list = {}
  for s in (scope or ""):gmatch("%S+") do list[#list + 1] = s end
  table.sort(list)
  return table.concat(list, " ")
end

-- Fetches a token for the scopes in key from the realm; stores it in the
-- cache and returns it, or nil, err. A 401 to credentials from the kind's
-- login (an ACR refresh token that expired) logs in again, once.
local function fetch_token(self, key, relogged)
  local refused = realm_refused(self.realm, self.https)
  if refused then return nil, "GET " .. tostring(self.realm) .. ": " .. refused end
  local q = {}
  if self.service then q[#q + 1] = "service=" .. urlencode(self.service) end
  for s in key:gmatch("%S+") do q[#q + 1] = "scope=" .. urlencode(s) end
  local url = self.realm
  if #q > 0 then url = url .. (url:find("?", 1, true) and "&" or "?") .. table.concat(q, "&") end
  local what = "GET " .. self.realm
  local basic, berr = self:basic()
  if berr then return nil, what .. ": " .. berr end
  local res, err, detail = retry.run(self.retry, what, function()
    return http.request { url = url, headers = { Accept = "application/json", Authorization = basic },
                          tls = self.tls, timeout = self.timeout }
  end)
  if not res then
    return nil, string.format("%s: %s%s", what, err, detail and detail ~= err and (" (" .. detail .. ")") or "")
  end
  if res.status == 401 and logins[self] and not relogged then
    logins[self].expires = nil
    return fetch_token(self, key, true)
  end
  if res.status ~= 200 then
    local hint = res.status == 401 and " (check the username and password)" or ""
    if res.status == 401 and not basic then hint = " (no credentials: the registry gives no anonymous token)" end
    return nil, string.format("%s: http %d for scope '%s'%s", what, res.status, key, hint)
  end
  local doc = json.decode(res.body)
  local token = type(doc) == "table" and (doc.token or doc.access_token)
  if type(token) ~= "string" or token == "" then
    return nil, what .. ": the response holds no token"
  end
  local ttl = tonumber(doc.expires_in) or 60
  if ttl <= 0 then ttl = 60 end
  self.tokens[key] = { token = token, expires = time.mono() + ttl - margin(ttl) }
  return token
end

-- Returns a cached token for key, or fetches one; concurrent callers share one
-- fetch. Returns the token or nil, err.
function Auth:token(key)
  local t = self.tokens[key]
  if t and time.mono() < t.expires then return t.token end
  while true do
    local h = self.inflight[key]
    if not h then
      h = task.spawn({ name = "token " .. key }, fetch_token, self, key)
      self.inflight[key] = h
    end
    local ok, token, err = h:wait()
    if self.inflight[key] == h then self.inflight[key] = nil end
    if ok then return token, err end
    -- The fetching task died with its parent: fetch again unless we were stopped too.
    if token ~= "cancelled" or task.cancelled() then return nil, token end
  end
end

-- Returns the Authorization value for a space-separated scope list: Basic,
-- Bearer (fetching a token when needed) or nil for none; or nil, err.
function Auth:header(scope)
  if self.scheme == "basic" then return self:basic() end
  if self.scheme ~= "bearer" then return nil end
  local token, err = self:token(scope_key(scope))
  if not token then return nil, err end
  return "Bearer " .. token
end

-- Drops the cached token for a scope list (every cached token without one)
-- so that the next header() fetches anew.
function Auth:forget(scope)
  if scope == nil then
    self.tokens = {}
  else
    self.tokens[scope_key(scope)] = nil
  end
end

-- Handles a 401 to a request made with scope: returns true when one retry may
-- succeed (a token to refresh, or a scheme learnt just now), or nil, err when
-- the challenge names a realm that may not be used.
function Auth:unauthorized(scope, header)
  if self.scheme == "bearer" then
    self:forget(scope)
    if logins[self] then logins[self].expires = nil end -- the kind's credentials may have expired too
    -- the realm or service may have moved; a Basic challenge to a request
    -- that carried a token (Harbor answers so) keeps the token flow
    for _, c in ipairs(auth.parse_challenges(header)) do
      if c.scheme == "bearer" then
        local _, err = self:learn(header)
        if err then return nil, err end
        break
      end
    end
    return true
  end
  if self.scheme == "basic" then
    local l = logins[self]
    if l then -- the kind's credentials may have expired early: log in again, once
      l.expires = nil
      return true
    end
    return false
  end
  return self:learn(header)
end

return auth
