-- kinds/gar: Google Artifact Registry (and gcr.io, now served by it). A
-- service-account JSON key becomes a JWT signed with RS256, exchanged at the
-- key's token_uri for an OAuth2 access token (the JWT-bearer grant, RFC
-- 7523), which the registry takes as Basic oauth2accesstoken:<token> (about
-- an hour). A repository is <project>/<repository>/<image> on
-- <location>-docker.pkg.dev; its Artifact Registry repository must exist
-- before a push, so it is created through the Artifact Registry API when
-- missing (409 Conflict: someone made it meanwhile). Uploads move to
-- /artifacts-uploads/ on the same host, which keeps its credentials.
local jwt = require("jwt")

local kind = {
  description = "Google Artifact Registry: service-account keys, repositories created before a push",
  hosts = { "*-docker.pkg.dev", "gcr.io", "*.gcr.io" },
  credentials = {
    { name = "key_json", label = "Service-account JSON key", secret = true,
      help = "The key file's contents; or give the username oauth2accesstoken and an access token as the password." },
  },
  options = {
    { name = "api_url", label = "Artifact Registry API", help = "Default https://artifactregistry.googleapis.com." },
    { name = "location", label = "Location", help = "Taken from the host (us-docker.pkg.dev: us) when not given." },
  },
}

local SCOPE = "https://www.googleapis.com/auth/cloud-platform"
local tokens = {} -- client_email -> {token, expires}: the access tokens this context fetched

-- Fetches (or reuses) an access token for the key in creds; returns the
-- token and its lifetime in seconds, or nil, err.
local function access_token(creds)
  if not creds.key_json or creds.key_json == "" then
    if creds.username == "oauth2accesstoken" and creds.password then return creds.password, 3600 end
    return nil, "gar: no service-account key (credential key_json) and no access token"
  end
  local key = json.decode(creds.key_json)
  if type(key) ~= "table" or type(key.client_email) ~= "string" then
    return nil, "gar: the credential key_json is not a service-account key (no client_email)"
  end
  local cached = tokens[key.client_email]
  if cached and time.now() < cached.expires - 60 then return cached.token, cached.expires - time.now() end
  local req, err = jwt.google_token_request(key, SCOPE)
  if not req then return nil, "gar: signing the token request: " .. err end
  local res, rerr, detail = http.request { method = req.method, url = req.url, headers = req.headers, body = req.body,
                                           timeout = 60 }
  if not res then return nil, string.format("gar: token request to %s: %s (%s)", req.url, rerr, detail or "") end
  local doc = json.decode(res.body or "") or {}
  if res.status ~= 200 or type(doc.access_token) ~= "string" then
    return nil, string.format("gar: token request to %s: http %d %s: %s", req.url, res.status,
                              tostring(doc.error or ""), tostring(doc.error_description or ""))
  end
  local ttl = tonumber(doc.expires_in) or 3600
  tokens[key.client_email] = { token = doc.access_token, expires = time.now() + ttl }
  return doc.access_token, ttl
end

-- The registry's credentials: oauth2accesstoken and an access token.
function kind.login(creds, ctx)
  local token, ttl = access_token(creds)
  if not token then return nil, ttl end
  return { username = "oauth2accesstoken", password = token, expires_in = ttl }
end

-- Creates the Artifact Registry repository that repository repo
-- (project/repository/image) lives in, unless it exists.
function kind.ensure_namespace(creds, ctx, repo)
  local project, name = repo:match("^([^/]+)/([^/]+)/.+$")
  if not project then
    return nil, string.format("gar: %s is not project/repository/image", repo)
  end
  local location = (ctx.options or {}).location or tostring(ctx.url):match("^%a+://([%w-]+)%-docker%.pkg%.dev")
  if not location then return nil, "gar: no location (give the option 'location')" end
  local token, terr = access_token(creds)
  if not token then return nil, terr end
  local api = ((ctx.options or {}).api_url or "https://artifactregistry.googleapis.com"):gsub("/+$", "")
  local parent = string.format("%s/v1/projects/%s/locations/%s/repositories", api, project, location)
  local headers = { Authorization = "Bearer " .. token, Accept = "application/json" }
  local res, err, detail = http.request { url = parent .. "/" .. name, headers = headers, timeout = 60 }
  if not res then return nil, string.format("gar: checking repository %s: %s (%s)", name, err, detail or "") end
  if res.status == 200 then return { repository = project .. "/" .. name, created = false } end
  if res.status ~= 404 then
    return nil, string.format("gar: checking repository %s/%s: http %d %s", project, name, res.status, res.body:sub(1, 200))
  end
  headers["Content-Type"] = "application/json"
  res, err, detail = http.request { method = "POST", url = parent .. "?repositoryId=" .. name, headers = headers,
                                    body = json.encode({ format = "DOCKER" }), timeout = 60 }
  if not res then return nil, string.format("gar: creating repository %s: %s (%s)", name, err, detail or "") end
  if res.status == 200 then return { repository = project .. "/" .. name, created = true } end
  if res.status == 409 then return { repository = project .. "/" .. name, created = false } end
  local doc = json.decode(res.body or "") or {}
  local e = type(doc.error) == "table" and doc.error or {}
  return nil, string.format("gar: creating repository %s/%s: http %d %s: %s", project, name, res.status,
                            tostring(e.status or ""), tostring(e.message or ""))
end

return kind
