-- kinds.lua - registry kinds (trusted code only). A kind is a script,
-- ROOT/kinds/<name>.lua, that says how one side of a replication is spoken
-- to: which credentials it takes, how they become registry credentials,
-- how repositories are listed, how a namespace is created before a push,
-- how it is detected from a host name, and its quirks. Every kind works as
-- a source and as a target against every other, through the same stages:
-- the stages call the registry client, and the client asks its kind.
--
-- A kind's code runs only as sandboxed tasks, in a sandbox context of its
-- own per client (never a stage's), so that the credentials it is handed
-- are out of the stages' reach; only plain data comes back.
--
--   local k = kinds.load("harbor")     -> kind | nil, err
--   k.name, k.description, k.credentials, k.hosts, k.options, k.quirks
--   k:has(hook)                        -> whether the kind defines hook
--   k:call(hook, ...)                  -> the hook's results as plain data
--   kinds.list()                       -> every kind's description
--   kinds.detect(url, opts)            -> the kind for a registry URL
local glob = require("glob")

local kinds = {}

local Kind = {}
Kind.__index = Kind
Kind.__metatable = false

local HOOKS = { "login", "catalog", "ensure_namespace", "probe", "repository", "filter_tags", "delete" }
local cache = {} -- name -> kind, for the files (checked again when the file changes)

-- The fields of a credential description, checked: { name, label, secret,
-- required, help }.
local function check_credentials(name, list)
  if list == nil then return {} end
  if type(list) ~= "table" then return nil, "kind " .. name .. ": credentials must be a list" end
  local out = {}
  for i, c in ipairs(list) do
    if type(c) ~= "table" or type(c.name) ~= "string" or not c.name:match("^[%a_][%w_]*$") then
      return nil, string.format("kind %s: credential %d needs a name (letters, digits, '_')", name, i)
    end
    out[i] = { name = c.name, label = type(c.label) == "string" and c.label or c.name,
               secret = c.secret == true, required = c.required == true,
               help = type(c.help) == "string" and c.help or nil }
  end
  return out
end

-- Loads kind name from the script roots: its module runs as a sandboxed
-- task in a fresh context; its data fields are kept as plain copies and its
-- hooks stay in that context, to be run only by k:call. Returns the kind or
-- nil, err.
function kinds.load(name)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    return nil, string.format("invalid registry kind %q", tostring(name))
  end
  local src, serr = catalog.source("kinds", name)
  if not src then return nil, serr end
  local sha = digest.sha256(src)
  if cache[name] and cache[name].sha256 == sha then return cache[name] end
  local box = sandbox.new()
  local chunk, cerr = box:load(src, "@kinds/" .. name .. ".lua", sha)
  if not chunk then return nil, cerr end
  local ok, mod = sandbox.spawn({ name = "load kind " .. name }, chunk):wait()
  if not ok then return nil, string.format("kinds/%s.lua: %s", name, mod) end
  if type(mod) ~= "table" then return nil, string.format("kind %s must return a table", name) end
  local data, derr = sandbox.plain({ description = rawget(mod, "description"), hosts = rawget(mod, "hosts"),
                                     credentials = rawget(mod, "credentials"), options = rawget(mod, "options"),
                                     quirks = rawget(mod, "quirks") }, "kind " .. name)
  if not data then return nil, derr end
  local creds, crerr = check_credentials(name, data.credentials)
  if not creds then return nil, crerr end
  local hooks = {}
  for _, h in ipairs(HOOKS) do
    local fn = rawget(mod, h)
    if fn ~= nil and type(fn) ~= "function" then
      return nil, string.format("kind %s: %s must be a function", name, h)
    end
    hooks[h] = fn
  end
  local k = setmetatable({
    name = name, sha256 = sha,
    description = type(data.description) == "string" and data.description or name,
    hosts = type(data.hosts) == "table" and data.hosts or {},
    credentials = creds, options = type(data.options) == "table" and data.options or {},
    quirks = type(data.quirks) == "table" and data.quirks or {},
    _hooks = hooks,
  }, Kind)
  cache[name] = k
  return k
end

-- Whether the kind defines hook.
function Kind:has(hook)
  return self._hooks[hook] ~= nil
end

-- Runs hook(...) as a sandboxed task named "kind NAME HOOK"; the arguments
-- must be plain data. Returns the hook's results as plain copies (a hook
-- fails by raising or by returning nil, err), or nil, err.
function Kind:call(hook, ...)
  local fn = self._hooks[hook]
  if not fn then return nil, string.format("kind %s has no %s", self.name, hook) end
  local args = table.pack(...)
  for i = 1, args.n do
    local copy, err = sandbox.plain(args[i], "argument")
    if err then return nil, err end
    args[i] = copy
  end
  local h = sandbox.spawn({ name = "kind " .. self.name .. " " .. hook }, function()
    local ok, a, b, c = xpcall(fn, task.locate, table.unpack(args, 1, args.n))
    if not ok then return nil, tostring(a) end
    return a, b, c
  end)
  local done, a, b, c = h:wait()
  if not done then return nil, string.format("kind %s: %s: %s", self.name, hook, tostring(a)) end
  if a == nil then return nil, b ~= nil and tostring(b) or string.format("kind %s: %s failed", self.name, hook) end
  local pa, perr = sandbox.plain(a, "kind " .. self.name .. " " .. hook)
  if perr then return nil, perr end
  return pa, sandbox.plain(b), sandbox.plain(c)
end

-- The API view of every kind found in the script roots: name, description,
-- the credential fields it takes, its options and its host patterns; a kind
-- that does not load is listed with its error.
function kinds.list()
  local out = setmetatable({}, json.array_mt)
  for _, e in ipairs(catalog.list("kinds")) do
    local k, err = kinds.load(e.name)
    if k then
      out[#out + 1] = { name = k.name, description = k.description,
                        credentials = setmetatable(k.credentials, json.array_mt),
                        options = setmetatable(k.options, json.array_mt),
                        hosts = setmetatable(k.hosts, json.array_mt) }
    else
      out[#out + 1] = { name = e.name, error = err }
    end
  end
  return out
end

-- The host (lower case, without port) of an http(s) URL, or nil.
local function host_of(url)
  local h = tostring(url):match("^%a+://([^/:]+)")
  return h and h:lower()
end

-- Detects the kind of the registry at url: first by its host against each
-- kind's host patterns (globs, e.g. "*.dkr.ecr.*.amazonaws.com"), then by
-- each kind's probe hook (e.g. Harbor's GET /api/v2.0/systeminfo), else
-- "distribution". opts.tls is handed to probes. Returns the kind's name
-- and how it was found ("host", "probe" or "default").
function kinds.detect(url, opts)
  local host = host_of(url)
  local loaded = {}
  for _, e in ipairs(catalog.list("kinds")) do
    local k = kinds.load(e.name)
    if k then
      loaded[#loaded + 1] = k
      for _, pat in ipairs(k.hosts) do
        if host and type(pat) == "string" and glob.match(pat:lower(), host) then return k.name, "host" end
      end
    end
  end
  -- the probes run at once (one round trip, not one per kind); the first
  -- kind in the catalog's order that says yes wins
  local probing = {}
  for _, k in ipairs(loaded) do
    if k:has("probe") then probing[#probing + 1] = k end
  end
  local said = parallel.map(probing, function(k)
    return k:call("probe", { url = url, tls = opts and opts.tls }) == true
  end) or {}
  for i, k in ipairs(probing) do
    if said[i] then return k.name, "probe" end
  end
  return "distribution", "default"
end

return kinds
