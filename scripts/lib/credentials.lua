-- credentials.lua - finds the credentials for a registry the way docker does:
-- an explicit "USER:PASSWORD" (flag or environment) first, then the docker
-- config file: credHelpers for the host, auths for the host, then credsStore.
-- Secrets are returned, never logged.
local credentials = {}

-- Returns "host[:port]" of a registry URL.
function credentials.host(url)
  return (url:gsub("^%a[%w+.-]*://", ""):match("^[^/]+")) or url
end

-- Splits "USER:PASSWORD" at its first colon.
function credentials.split(s)
  local user, pass = s:match("^([^:]*):(.*)$")
  if not user then return nil, nil, "credentials must be USER:PASSWORD" end
  return user, pass
end

-- Asks a docker credential helper; returns user, secret or nil.
local function from_helper(name, host)
  local out, err = creds.helper(name, host)
  if not out then
    log.warn("credential helper %s for %s: %s", name, host, err)
    return nil
  end
  local t = json.decode(out)
  if type(t) ~= "table" or not t.Secret then return nil end
  return t.Username, t.Secret
end

-- Keys a host may appear under in config.json's auths.
local function auth_keys(host)
  local keys = { host, "https://" .. host, "http://" .. host, "https://" .. host .. "/v1/",
                 "https://" .. host .. "/v2/" }
  if host == "docker.io" or host == "registry-1.docker.io" or host == "index.docker.io" then
    keys[#keys + 1] = "https://index.docker.io/v1/"
  end
  return keys
end

-- Returns username, password (both nil for anonymous access), or nil, nil, err.
function credentials.resolve(url, explicit)
  if explicit and explicit ~= "" then return credentials.split(explicit) end
  local text = creds.docker_config()
  if not text then return nil, nil end
  local cfg, err = json.decode(text)
  if type(cfg) ~= "table" then return nil, nil, "docker config.json: " .. tostring(err) end
  local host = credentials.host(url)
  if type(cfg.credHelpers) == "table" and cfg.credHelpers[host] then
    return from_helper(cfg.credHelpers[host], host)
  end
  for _, k in ipairs(auth_keys(host)) do
    local a = type(cfg.auths) == "table" and cfg.auths[k]
    if type(a) == "table" then
      if a.auth then
        local plain = base64.decode(a.auth)
        if plain then return credentials.split(plain) end
      end
      if a.username then return a.username, a.password end
      if a.identitytoken then return "<token>", a.identitytoken end
    end
  end
  if cfg.credsStore then return from_helper(cfg.credsStore, host) end
  return nil, nil
end

return credentials
