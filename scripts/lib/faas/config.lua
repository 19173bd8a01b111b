-- faas/config.lua - the coordinator's FaaS settings, read from the options
-- that `replica run` and `replica serve` share: --executor, --gateway, the
-- functions' token (REPLICA_FUNCTION_TOKEN or --function-token-file),
-- --seal-key-file and the --faas-* limits. See docs/faas.md.
local config = {}

-- Reads a number option v (default when nil) that must be positive (or,
-- with zero_ok, at least 0); integer asks for a whole number. Returns it or
-- nil and an error that names flag.
local function number(v, default, flag, integer, zero_ok)
  local n = tonumber(v == nil and default or v)
  if integer then n = math.tointeger(n) end
  if not n or n ~= n or n > 1e7 or n < 0 or (n == 0 and not zero_ok) then
    local what = integer and (zero_ok and "a whole number" or "a positive integer")
                 or "a positive number of seconds"
    return nil, flag .. " must be " .. what
  end
  return n
end

config.number = number

-- The async route of a sync gateway URL: OpenFaaS serves a function at
-- /function/NAME and queues it at /async-function/NAME. Returns the URL or
-- nil, err.
local function async_url(gateway)
  local head, tail = gateway:match("^(https?://[^/]+.-)/function/(.+)$")
  if not head then
    return nil, "--faas-mode async needs an OpenFaaS gateway URL ending in /function/NAME (its queue is /async-function/NAME)"
  end
  return head .. "/async-function/" .. tail
end

-- Reads the functions' token and the seal key from opts. Returns token,
-- keyring, or nil, err.
local function secrets(opts, sys)
  if type(opts.function_token) ~= "string" then
    return nil, opts.function_token_file
      and ("--function-token-file " .. opts.function_token_file .. ": cannot read it")
      or "--executor faas needs the functions' token: REPLICA_FUNCTION_TOKEN or --function-token-file"
  end
  local token = opts.function_token:match("^%s*(.-)%s*$")
  if token == "" then return nil, "the functions' token is empty" end
  if not opts.seal_key_file then
    return nil, "--executor faas needs --seal-key-file (the key the functions open credentials with)"
  end
  local keyring, kerr, why = sys.keyring(opts.seal_key_file, { create = false })
  if not keyring then
    return nil, why == "missing" and ("seal key file " .. opts.seal_key_file
      .. " does not exist: give the key the functions hold (--seal-key-file)") or kerr
  end
  return token, keyring
end

-- The settings of a template's remote stages ({name, fn, remote = URL}):
-- {token, keyring, retries, timeout} when the functions' token or a seal
-- key is given, false when neither is (the stages are then a bare POST), or
-- nil, err.
function config.stages(opts, sys)
  if opts.function_token == nil and opts.seal_key_file == nil then return false end
  local token, keyring = secrets(opts, sys)
  if not token then return nil, "remote stages: " .. keyring:gsub("^%-%-executor faas needs", "need") end
  local retries, err = number(opts.faas_retries, 4, "--faas-retries", true, true)
  if not retries then return nil, err end
  local timeout
  timeout, err = number(opts.faas_timeout, 3600, "--faas-timeout")
  if not timeout then return nil, err end
  return { token = token, keyring = keyring, retries = retries, timeout = timeout }
end

-- The options object of an invocation, from the options of run or a
-- policy ({override, bandwidth (bytes/s), chunk_size, stall_timeout (s),
-- platforms}).
function config.options(opts)
  return { override = opts.override, chunk_size = opts.chunk_size, stall_timeout = opts.stall_timeout,
           bandwidth = opts.bandwidth and tostring(opts.bandwidth) or nil,
           platforms = opts.platforms and setmetatable(opts.platforms, json.array_mt) or nil }
end

-- Reads the settings from opts (sys: for the keyring; default_concurrency:
-- what --faas-concurrency defaults to). Returns false when the executor is
-- local and no --gateway is given; else a new table {executor, gateway,
-- async_gateway, mode, token, keyring, retries, timeout, concurrency,
-- lease}; or nil, err.
function config.read(opts, sys, default_concurrency)
  local ex = opts.executor or "local"
  if ex ~= "local" and ex ~= "faas" then return nil, "--executor must be local or faas" end
  if ex == "local" and opts.gateway == nil then return false end
  if type(opts.gateway) ~= "string" or not opts.gateway:find("^https?://[^/]") then
    return nil, "--executor faas needs --gateway URL (e.g. http://gateway:8080/function/replica)"
  end
  local token, keyring = secrets(opts, sys)
  if not token then return nil, keyring end
  local cfg = { executor = ex, gateway = opts.gateway, token = token, keyring = keyring,
                mode = opts.faas_mode or "sync" }
  if cfg.mode ~= "sync" and cfg.mode ~= "async" then return nil, "--faas-mode must be sync or async" end
  if cfg.mode == "async" then
    local url, aerr = async_url(cfg.gateway)
    if not url then return nil, aerr end
    cfg.async_gateway = url
  end
  local err
  cfg.retries, err = number(opts.faas_retries, 4, "--faas-retries", true, true)
  if not cfg.retries then return nil, err end
  cfg.timeout, err = number(opts.faas_timeout, 3600, "--faas-timeout")
  if not cfg.timeout then return nil, err end
  cfg.concurrency, err = number(opts.faas_concurrency, default_concurrency, "--faas-concurrency", true)
  if not cfg.concurrency then return nil, err end
  cfg.lease, err = number(opts.faas_lease, 60, "--faas-lease")
  if not cfg.lease then return nil, err end
  if cfg.lease < 2 then return nil, "--faas-lease must be at least 2 seconds" end
  return cfg
end

return config
