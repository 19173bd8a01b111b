-- oci.lua - an OCI Distribution (Docker Registry v2) client.
--
--   local oci = require("oci")
--   local reg = oci.new{ url = "https://r.example", username = "u", password = "p" }
--   local m, err = reg:get_manifest("lib/app", "1.0")
--
-- Failures return nil, err, kind: err names the request and what went wrong
-- ("GET http://…/v2/x/manifests/y: http 404 MANIFEST_UNKNOWN"), and kind is
-- the short reason ("http 404", "timeout", "digest mismatch", …) for code
-- that branches on it. Transient failures are retried (oci/retry.lua), 401s
-- run the auth flow (oci/auth.lua), and blob bytes are streamed in C by
-- blob.copy, never read into Lua.
--
-- Credentials go only to the registry's own origin (scheme, host and port)
-- and to the token realm its challenge names; a Link or Location naming
-- another origin is followed without them. A registry on https never sends
-- the client to http: such a Link, Location or realm fails the call. Names
-- and references are checked against the OCI grammar (oci/reference.lua)
-- before any URL is built from them.
local auth = require("oci.auth")
local common = require("oci.common")
local link = require("oci.link")
local media = require("oci.media")
local ratelimit = require("oci.ratelimit")
local reference = require("oci.reference")
local retry = require("oci.retry")

local oci = {
  OCI_MANIFEST = media.OCI_MANIFEST,
  OCI_INDEX = media.OCI_INDEX,
  DOCKER_MANIFEST = media.DOCKER_MANIFEST,
  DOCKER_LIST = media.DOCKER_LIST,
  ACCEPT = media.ACCEPT,
  children = media.children,
  is_index = media.is_index,
  is_foreign = media.is_foreign,
}

local Registry = {}
Registry.__index = Registry
Registry.__metatable = false -- stage code must not reach, and change, the class of every client

-- The kind of a client, its credentials and the context its hooks get,
-- kept out of the client's fields (stage code holds clients).
local kinds_of = setmetatable({}, { __mode = "k" })

local pull = common.pull
local http_error, transfer_error = common.http_error, common.transfer_error

-- The PATCH chunk size of a client (nil: monolithic uploads) from the one
-- asked for and its kind's quirks: min_chunk raises a smaller one (ECR
-- refuses parts under 5 MiB but the last), max_chunk lowers a larger one and
-- sets one when none was asked (GHCR refuses a PATCH above about 4 MiB).
local function chunk_size_of(asked, quirks)
  local min_chunk = quirks and math.tointeger(tonumber(quirks.min_chunk))
  local max_chunk = quirks and math.tointeger(tonumber(quirks.max_chunk))
  if min_chunk and asked and asked < min_chunk then asked = min_chunk end
  if max_chunk and max_chunk > 0 and (not asked or asked > max_chunk) then asked = max_chunk end
  return asked
end

-- Creates a client. opts: url (required), username, password, kind (a
-- registry kind from kinds.load; credentials = the fields it takes and
-- kind_options = its options), tls = {ca_file=, insecure=}, timeout (stall
-- limit, default 60 s),
-- retries (default 4), backoff = {base=, cap=} in seconds, chunk_size (bytes:
-- upload larger blobs in chunks, resuming from the target's reported range),
-- max_speed (bytes/s: the rate limit of each blob copied into this registry).
-- A kind's quirks may move the registry (registry_url: {host = URL}, Docker
-- Hub's docker.io is served at registry-1.docker.io), bound its chunks
-- (min_chunk, max_chunk: bytes) and give it a pull limit (pull_limit:
-- oci/ratelimit.lua; its option max_wait bounds a wait).
function oci.new(opts)
  assert(type(opts) == "table" and type(opts.url) == "string", "oci.new: 'url' is required")
  local url = opts.url:gsub("/+$", "")
  local moved = opts.kind and type(opts.kind.quirks) == "table" and type(opts.kind.quirks.registry_url) == "table"
                and opts.kind.quirks.registry_url
  if moved then
    local scheme, host, rest = url:match("^(https?)://([^/:@]+)(.*)$")
    local to = host and moved[host:lower()]
    if type(to) == "string" and scheme == "https" then url = to:gsub("/+$", "") .. rest end
  end
  assert(url:match("^https?://[^/@]+$") or url:match("^https?://[^/@]+/[^@]*$"),
    "oci.new: 'url' must be http(s)://host[:port] without credentials")
  local path = url:match("^%a+://[^/]+(/.*)$") or ""
  assert(not (path .. "/"):find("/%.%.?/") and not path:find("//", 1, true) and not path:find("%", 1, true),
    "oci.new: the path of 'url' must not hold '.', '..' or empty segments, nor percent-escapes")
  local backoff = opts.backoff or {}
  local self = setmetatable({
    url = url,
    origin = assert(link.origin(url), "oci.new: 'url' must be http(s)://host[:port] without credentials"),
    tls = opts.tls,
    timeout = opts.timeout or 60,
    retries = opts.retries or retry.RETRIES,
    chunk_size = (opts.chunk_size or 0) > 0 and opts.chunk_size or nil,  -- PATCH chunks above this
    max_speed = (opts.max_speed or 0) > 0 and opts.max_speed or nil,
  }, Registry)
  self.retry = { retries = self.retries, base = backoff.base, cap = backoff.cap }
  local kind = opts.kind
  self.kind = kind and kind.name or "distribution"
  self.quirks = {} -- the kind's quirks (plain data), for the client and the stages
  for k, v in pairs(kind and kind.quirks or {}) do self.quirks[k] = v end
  self.chunk_size = chunk_size_of(self.chunk_size, kind and kind.quirks)
  if kind and type(kind.quirks.pull_limit) == "table" then
    local lim, lerr = ratelimit.new(kind.quirks.pull_limit, kind.name, (opts.kind_options or {}).max_wait)
    assert(lim, lerr and ("oci.new: " .. lerr))
    ratelimit.attach(self, lim)
  end
  local login
  if kind then
    kinds_of[self] = { kind = kind, credentials = opts.credentials or {},
                       ctx = { url = url, tls = opts.tls, options = opts.kind_options or {} } }
    local k = kinds_of[self]
    if kind:has("login") then
      login = function() return kind:call("login", k.credentials, k.ctx) end
    end
  end
  self.auth = auth.new { username = opts.username, password = opts.password, tls = opts.tls, login = login,
                         timeout = self.timeout, retry = self.retry, https = self.origin:find("^https:") ~= nil }
  return self
end

-- Runs client self's kind hook when the kind has it: returns true and the
-- hook's results, or false when there is no such hook. (A local, not a
-- method: stage code holds clients, and must not run the login hook.)
local function kind_hook(self, hook, ...)
  local k = kinds_of[self]
  if not k or not k.kind:has(hook) then return false end
  return true, k.kind:call(hook, k.credentials, k.ctx, ...)
end

-- The name this registry's kind gives repository name (the kind's
-- repository hook: Docker Hub puts official images under library/), or
-- name itself; nil, err when the kind refuses it.
function Registry:repository_name(name)
  local has, res, err = kind_hook(self, "repository", name)
  if not has then return name end
  if type(res) ~= "string" then return nil, err or ("the registry kind refuses the repository name " .. name) end
  local ok, rerr = reference.repository(res)
  if not ok then return nil, "the registry kind's name for " .. name .. ": " .. rerr end
  return res
end

-- Keeps the tags of repo that pass filters only the registry's kind knows
-- ({labels = {...}}: Harbor's labels), through the kind's filter_tags hook.
-- Returns the tags kept, or nil, err (a kind without the hook cannot filter).
function Registry:filter_tags(repo, tags, filters)
  local has, kept, err = kind_hook(self, "filter_tags", repo, tags, filters)
  if not has then
    return nil, string.format("the %s kind cannot filter by label (a Harbor source can)", self.kind)
  end
  if type(kept) ~= "table" then return nil, err or "the registry kind's tag filter failed" end
  return kept
end

-- Makes sure the namespace that repository repo needs on this registry
-- exists before a push (a Harbor project, a Quay organisation, an ECR
-- repository: the kind's ensure_namespace); a no-op for kinds that create
-- repositories on first push. Returns the kind's record of what it did
-- ({created = true|false, ...}) or nil, err.
function Registry:ensure_namespace(repo)
  local ok, err = reference.repository(repo)
  if not ok then return nil, "ensure_namespace: " .. err, "invalid name" end
  local has, res, herr = kind_hook(self, "ensure_namespace", repo)
  if not has then return { created = false, needed = false } end
  if res == nil then return nil, herr, "namespace" end
  -- tokens granted before the namespace existed grant nothing in it
  if type(res) == "table" and res.created then self.auth:forget() end
  return res
end

-- Returns a shallow copy of a table of settings (nil stays nil).
local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Returns a client for one task: the same registry, settings and
-- credentials, with its own state (token cache, discovered auth, ping), so
-- that nothing the task's stages do to it reaches another task. The first
-- fork pings this client once, and the forks made meanwhile wait for that
-- ping, so that they all start with its answer (and with its kind's login:
-- one login, not one per task).
function Registry:fork()
  if not self._ping then
    if not self._ping_task then
      self._ping_task = task.spawn({ name = "ping " .. self.url }, function() return self:ping() end)
    end
    self._ping_task:wait()
  end
  local c = {}
  for k, v in pairs(self) do c[k] = copy(v) end -- settings tables (tls, retry) copied too
  c._ping_task = nil
  setmetatable(c, Registry)
  c.auth = self.auth:fork(c.retry, c.tls)
  kinds_of[c] = kinds_of[self]
  ratelimit.attach(c, ratelimit.of(self)) -- one pull quota for the client and its forks
  return c
end

-- Sends one request (no auth), retrying transient failures (but not an
-- answer opts.final(res) says is final); returns the response or nil, err, kind.
function Registry:_send(method, url, headers, opts)
  headers = self:headers_for(url, headers)
  local what = method .. " " .. url
  local ropts = self.retry
  if opts.final then ropts = setmetatable({ final = opts.final }, { __index = self.retry }) end
  local res, err, detail = retry.run(ropts, what, function()
    return http.request { method = method, url = url, headers = headers, body = opts.body,
                          tls = self.tls, timeout = self.timeout, max_body = opts.max_body,
                          hold_origin = true }
  end)
  if not res then return nil, transfer_error(what, err, detail) end
  return res
end

-- Returns headers (a table, changed in place) plus the headers the kind asks
-- for on every request to the registry, when url is on its own origin.
function Registry:headers_for(url, headers)
  headers = headers or {}
  local extra = self.auth:extra_headers()
  if extra and link.origin(url) == self.origin then
    for k, v in pairs(extra) do
      if headers[k] == nil then headers[k] = v end
    end
  end
  return headers
end

-- Learns once how the registry authenticates, from GET /v2/ without
-- credentials; returns true or nil, err, kind.
function Registry:_discover()
  if self.auth.scheme then return true end
  local url = self.url .. "/v2/"
  local res, err, kind = self:_send("GET", url, {}, {})
  if not res then return nil, err, kind end
  if res.status == 401 then
    local learnt, lerr = self.auth:learn(res.headers["www-authenticate"])
    if lerr then return nil, "GET " .. url .. ": " .. lerr, "insecure" end
    if not learnt then
      return nil, "GET " .. url .. ": http 401 with no usable WWW-Authenticate challenge", "http 401"
    end
  elseif res.status == 200 then
    self.auth.scheme = "none"
    -- that was a ping too: the registry answers, and asks for no credentials
    self._ping = self._ping or { auth = "none", api = res.headers["docker-distribution-api-version"] }
  else
    return nil, http_error("GET " .. url, res, self)
  end
  return true
end

-- Checks that a request to url may be made by this client: a registry on
-- https refuses any http:// URL (a Link, Location or redirect it named).
-- Returns true, and whether url is on the registry's own origin; or nil,
-- err, "insecure".
function Registry:_may_send(method, url)
  local o = link.origin(url)
  if self.origin:find("^https:") and not (o and o:find("^https:")) then
    return nil, string.format("%s%s: refused: the registry %s is on https, and this URL is not (no downgrade "
      .. "to http)", method and (method .. " ") or "", tostring(url), self.url), "insecure"
  end
  return true, o == self.origin
end

-- Returns the Authorization header value for a space-separated scope list
-- (nil when the registry needs none), or nil, err, kind. With url, the
-- request's target: nil (no credentials) when url is on another origin, and
-- nil, err, "insecure" for an http URL of a registry on https.
function Registry:authorization(scope, url)
  if url then
    local ok, own, kind = self:_may_send(nil, url)
    if not ok then return nil, own, kind end
    if not own then return nil end
  end
  local ok, err, kind = self:_discover()
  if not ok then return nil, err, kind end
  local value, aerr = self.auth:header(scope)
  if aerr then return nil, aerr, "auth" end
  return value
end

-- Sends a request with auth for scope, retrying transient failures; a 401
-- refreshes the auth once and retries. A url on another origin gets no
-- credentials, and one on http from a registry on https is refused. opts:
-- headers, body, max_body, final (see _send). Returns the response (any
-- status) or nil, err, kind.
function Registry:_request(method, url, scope, opts)
  opts = opts or {}
  local ok, own, okind = self:_may_send(method, url)
  if not ok then return nil, own, okind end
  local refreshed = not own  -- another origin's 401 is not ours to answer
  while true do
    local authz, err, kind
    if own then
      authz, err, kind = self:authorization(scope)
      if err then return nil, err, kind end
    end
    local headers = {}
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    headers.Authorization = authz
    local res
    res, err, kind = self:_send(method, url, headers, opts)
    if not res then return nil, err, kind end
    if refreshed or (res.status ~= 401 and not (res.status == 403 and self.auth:has_login())) then return res end
    refreshed = true
    if res.status == 403 then
      -- a kind's login (ECR) answers an expired password with 403: log in again, once
      self.auth:relogin()
    end
    local again, aerr = self.auth:unauthorized(scope, res.headers["www-authenticate"])
    if aerr then return nil, method .. " " .. url .. ": " .. aerr, "insecure" end
    if not again then return res end
  end
end

-- Checks that the registry speaks the v2 API and that the credentials are
-- accepted; returns {auth = "none"|"basic"|"bearer", api = version header}.
function Registry:ping()
  if self._ping then return self._ping end  -- once per client: every task pings
  local url = self.url .. "/v2/"
  local res, err, kind = self:_request("GET", url, "")
  if not res and kind == "auth" and self.auth.scheme == "bearer" and not self.auth:has_credentials()
     and tostring(err):find(": http 401 for scope ''", 1, true) then
    -- An anonymous client, and a token service (Quay's) that gives
    -- anonymous callers tokens for repositories only: the challenge of
    -- /v2/ was the answer; each repository's pull says the rest.
    self._ping = { auth = "bearer", anonymous = true }
    return self._ping
  end
  if not res then return nil, err, kind end
  if res.status ~= 200 then return nil, http_error("GET " .. url, res, self) end
  self._ping = { auth = self.auth.scheme, api = res.headers["docker-distribution-api-version"] }
  return self._ping
end

-- Drops the query parameter n from url (for registries that refuse our page size).
local function without_n(url)
  local s = url:gsub("([?&])n=%d+&?", "%1"):gsub("[?&]$", "")
  return s
end

-- GETs a paged JSON list from path, following Link rel="next", and returns
-- the concatenated arrays found under field.
function Registry:_pages(path, scope, field)
  local url, out, seen = self.url .. path, {}, {}
  local function get(u)
    return self:_request("GET", u, scope, { headers = { Accept = "application/json" } })
  end
  local res, err, kind = get(url)
  if res and res.status == 400 and url:find("[?&]n=%d") then
    url = without_n(url)  -- PAGINATION_NUMBER_INVALID: take the server's page size
    res, err, kind = get(url)
  end
  while true do
    if not res then return nil, err, kind end
    if res.status ~= 200 then return nil, http_error("GET " .. url, res, self) end
    local doc = json.decode(res.body)
    if type(doc) ~= "table" then return nil, "GET " .. url .. ": invalid JSON", "protocol" end
    if type(doc[field]) == "table" then
      for _, v in ipairs(doc[field]) do out[#out + 1] = v end
    end
    local nxt = link.next(res.headers.link)
    if not nxt then return out end
    url = link.resolve(url, nxt)
    if seen[url] then return nil, "GET " .. url .. ": the Link header loops", "protocol" end
    seen[url] = true
    res, err, kind = get(url)
  end
end

-- Lists every repository, following pages of opts.n (default 1000) entries,
-- or through the kind's own API when it has one (registries without a
-- usable _catalog: Docker Hub, GHCR, Harbor without admin rights), which
-- gets opts.patterns, the repository filters (Docker Hub lists the
-- namespaces they name). A hook that answers false leaves this listing to
-- /v2/_catalog (Quay lists through its API only with an OAuth token).
function Registry:catalog(opts)
  local has, list, err = kind_hook(self, "catalog", { patterns = opts and opts.patterns or {} })
  if has and list ~= false then
    if list == nil then return nil, err, "catalog" end
    return list
  end
  local n = opts and opts.n or 1000
  return self:_pages("/v2/_catalog?n=" .. n, "registry:catalog:*", "repositories")
end

-- The token scope that lists repo's tags: the pull scope, or the actions
-- the kind's quirk tags_scope names (ACR lists tags with metadata_read).
local function tags_scope(self, repo)
  local actions = self.quirks.tags_scope
  return type(actions) == "string" and actions:match("^[%w_,]+$") and ("repository:" .. repo .. ":" .. actions)
         or pull(repo)
end

-- Lists every tag of repo, following pages of opts.n (default 1000) entries.
function Registry:tags(repo, opts)
  local ok, err = reference.repository(repo)
  if not ok then return nil, "tags: " .. err, "invalid name" end
  local n = opts and opts.n or 1000
  return self:_pages("/v2/" .. repo .. "/tags/list?n=" .. n, tags_scope(self, repo), "tags")
end

-- Says whether the registry has repository repo, from one GET of its tags
-- (n=1): false on a 404 (or the 401 of a registry with the quirk
-- missing_401), true on a 200, nil, err when the answer says neither. A
-- repository that is not there holds no tag and no blob, so a push into it
-- need not ask about either.
function Registry:has_repository(repo)
  local ok, err = reference.repository(repo)
  if not ok then return nil, "has_repository: " .. err, "invalid name" end
  local url = self.url .. "/v2/" .. repo .. "/tags/list?n=1"
  local res, rerr, kind = self:_request("GET", url, tags_scope(self, repo), { headers = { Accept = "application/json" } })
  if not res then return nil, rerr, kind end
  if res.status == 404 or (res.status == 401 and self.quirks.missing_401 == true) then return false end
  if res.status == 200 then return true end
  return nil, http_error("GET " .. url, res, self)
end

-- The manifest and blob methods live in their own files.
for _, part in ipairs { "oci.manifests", "oci.blobs" } do
  for name, fn in pairs(require(part)) do Registry[name] = fn end
end

-- DELETEs the manifest with digest dgst: through the kind's delete hook
-- when it has one (registries whose /v2/ API refuses deletion, as Docker
-- Hub and GHCR do with 405: their own APIs delete), else the registry's
-- DELETE /v2/REPO/manifests/DIGEST (whose error, on a registry of a kind,
-- says so: "gitlab: deleting REPO@DIGEST: DELETE ...: http 403 ..."). True
-- when deleted, false when it was not there, or nil, err, kind.
local registry_delete = Registry.delete_manifest
function Registry:delete_manifest(repo, dgst)
  assert(common.digest_alg(dgst), "delete_manifest: a digest is required")
  local ok, rerr = reference.repository(repo)
  if not ok then return nil, "delete_manifest: " .. rerr, "invalid name" end
  local has, res, err = kind_hook(self, "delete", repo, dgst)
  if not has then
    local done, derr, dkind = registry_delete(self, repo, dgst)
    if done == nil and self.kind ~= "distribution" then
      derr = string.format("%s: deleting %s@%s: %s", self.kind, repo, dgst, derr)
    end
    return done, derr, dkind
  end
  if type(res) ~= "table" then return nil, err or (self.kind .. ": delete failed"), "delete" end
  return res.deleted == true
end

return oci
