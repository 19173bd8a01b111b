-- kinds/acr: Azure Container Registry (<registry>.azurecr.io). The registry
-- speaks the OCI spec with its own token service (/oauth2/token, whose
-- answer is {"access_token"}); what differs is how credentials become
-- registry ones, and one scope:
--   * the admin user, a service principal (client ID and secret) or a
--     repository-scoped token go as Basic, to /oauth2/token through the
--     registry's challenge;
--   * an Entra ID (AAD) access token is exchanged at /oauth2/exchange for
--     an ACR refresh token (grant_type=access_token), which then goes as the
--     password of the null user 00000000-0000-0000-0000-000000000000; a
--     service principal with a tenant first gets that Entra ID token
--     (client credentials, scope https://containerregistry.azure.net/.default);
--     a refresh token may be given as it is (az acr login --expose-token).
--     The login lasts as long as the refresh token (its exp), and is made
--     again after a refusal;
--   * tag lists need the action metadata_read, not pull (the quirk
--     tags_scope);
--   * _catalog (registry:catalog:*) and tag lists are paged with a relative
--     Link (</v2/_catalog?last=x&n=N&orderby=>), which the client resolves;
--   * repositories are created by the first push: nothing to prepare;
--   * without credentials, a registry with anonymous pull enabled gives
--     tokens to anyone (/oauth2/token without Authorization) for pulls and
--     tag lists; its catalog still needs credentials, so an anonymous
--     source names its repositories exactly.
local jwt = require("jwt")
local url = require("url")

local NULL_USER = "00000000-0000-0000-0000-000000000000"
local ACR_SCOPE = "https://containerregistry.azure.net/.default"

local kind = {
  description = "Azure Container Registry: admin user, service principals, Entra ID tokens and ACR refresh tokens",
  hosts = { "*.azurecr.io", "*.azurecr.cn", "*.azurecr.us" },
  credentials = {
    { name = "username", label = "Username",
      help = "the admin user, a service principal's client ID, or a repository-scoped token's name" },
    { name = "password", label = "Password", secret = true },
    { name = "client_id", label = "Service principal (client ID)" },
    { name = "client_secret", label = "Service principal secret", secret = true },
    { name = "tenant", label = "Entra ID tenant",
      help = "with client_id and client_secret: log in through Entra ID and /oauth2/exchange; without it the "
          .. "service principal goes as Basic" },
    { name = "aad_access_token", label = "Entra ID access token", secret = true,
      help = "exchanged at /oauth2/exchange for an ACR refresh token (az account get-access-token)" },
    { name = "refresh_token", label = "ACR refresh token", secret = true,
      help = "az acr login --expose-token" },
  },
  options = {
    { name = "aad_url", label = "Entra ID endpoint", default = "https://login.microsoftonline.com",
      help = "the authority of a national cloud (https://login.chinacloudapi.cn, ...)" },
  },
  quirks = { tags_scope = "metadata_read" },
}

local REFRESH_TTL = 3 * 3600 -- what an ACR refresh token lives, when its exp cannot be read
local BASIC_TTL = 24 * 3600  -- Basic credentials do not expire; checked again daily
local ATTEMPTS = 5

-- The registry's service name: its host (and port), as its challenge says.
local function service(ctx)
  return tostring(ctx.url):match("^%a+://([^/]+)")
end

-- Whether a credential field is set.
local function set(v)
  return type(v) == "string" and v ~= ""
end

-- The error text of an OAuth-style answer: {error, error_description}
-- (Entra ID) or {errors: [{code, message}]} (ACR).
local function oauth_error(res)
  local doc = json.decode(res.body or "")
  if type(doc) == "table" then
    if doc.error ~= nil then
      return string.format("http %d %s: %s", res.status, tostring(doc.error),
                           tostring(doc.error_description or ""):gsub("[\r\n].*$", ""))
    end
    local e = type(doc.errors) == "table" and doc.errors[1]
    if type(e) == "table" then return string.format("http %d %s: %s", res.status, tostring(e.code), tostring(e.message)) end
  end
  return "http " .. res.status
end

-- Sends one request (req for http.request), retrying a 429 or a 502-504
-- after Retry-After (else with backoff); returns the last response or nil,
-- err naming the step.
local function send(req, step)
  local res, err, detail
  local method = req.method or "GET"
  for attempt = 1, ATTEMPTS do
    res, err, detail = http.request(req)
    if not res then return nil, string.format("acr: %s: %s %s: %s (%s)", step, method, req.url, err, detail or "") end
    local transient = res.status == 429 or (res.status >= 502 and res.status <= 504)
    if not transient or attempt == ATTEMPTS then break end
    local wait = math.min(tonumber(res.headers["retry-after"]) or math.min(8, 0.5 * 2 ^ (attempt - 1)), 60)
    log.warn("acr: %s: %s %s: http %d, retry %d/%d in %g s", step, method, req.url, res.status, attempt, ATTEMPTS - 1,
             wait)
    time.sleep(wait)
  end
  return res
end

-- POSTs a form (through send); returns the decoded answer or nil, err
-- naming the step.
local function post_form(ctx, target, form, step, tls)
  local res, err = send({ method = "POST", url = target, tls = tls, timeout = 60, body = url.query(form),
                          headers = { ["Content-Type"] = "application/x-www-form-urlencoded",
                                      Accept = "application/json" } }, step)
  if not res then return nil, err end
  if res.status ~= 200 then return nil, string.format("acr: %s: POST %s: %s", step, target, oauth_error(res)) end
  local doc = json.decode(res.body or "")
  if type(doc) ~= "table" then return nil, string.format("acr: %s: POST %s: the answer is not JSON", step, target) end
  return doc
end

-- Seconds until a JWT's exp (at most cap), or fallback when it has none.
local function lifetime(token, fallback, cap)
  local _, claims = jwt.decode(token)
  local exp = type(claims) == "table" and tonumber(claims.exp)
  if not exp then return fallback end
  return math.max(1, math.min(cap or fallback, exp - time.now()))
end

-- An Entra ID access token for the service principal (client credentials).
local function aad_token(creds, ctx)
  local base = tostring((ctx.options or {}).aad_url or "https://login.microsoftonline.com"):gsub("/+$", "")
  if ctx.url:find("^https:") and not base:find("^https:") then
    return nil, "acr: Entra ID login: refused: the registry is on https and " .. base .. " is not"
  end
  local doc, err = post_form(ctx, base .. "/" .. url.encode(creds.tenant) .. "/oauth2/v2.0/token",
                             { grant_type = "client_credentials", client_id = creds.client_id,
                               client_secret = creds.client_secret, scope = ACR_SCOPE },
                             "Entra ID login of " .. creds.client_id, nil)
  if not doc then return nil, err end
  if not set(doc.access_token) then return nil, "acr: Entra ID login: the answer holds no access_token" end
  return doc.access_token
end

-- Exchanges an Entra ID access token for an ACR refresh token.
local function exchange(creds, ctx, aad)
  local tenant = creds.tenant
  if not set(tenant) then
    local _, claims = jwt.decode(aad)
    tenant = type(claims) == "table" and claims.tid or nil
  end
  local doc, err = post_form(ctx, ctx.url .. "/oauth2/exchange",
                             { grant_type = "access_token", service = service(ctx), tenant = tenant,
                               access_token = aad },
                             "exchanging the Entra ID token", ctx.tls)
  if not doc then return nil, err end
  if not set(doc.refresh_token) then return nil, "acr: exchanging the Entra ID token: the answer holds no refresh_token" end
  return doc.refresh_token
end

-- What an operator can give instead of nothing.
local CREDENTIALS = "username and password, client_id and client_secret [and tenant], aad_access_token, "
                    .. "or refresh_token"

-- Whether any credential was given (else the client is anonymous).
local function given(creds)
  for _, name in ipairs({ "username", "password", "client_id", "client_secret", "tenant", "aad_access_token",
                          "refresh_token" }) do
    if set(creds[name]) then return true end
  end
  return false
end

-- Without credentials: checks that the registry gives anonymous tokens
-- (anonymous pull enabled) by asking its token service for one without
-- Authorization. Returns the anonymous login, or nil, err naming the step.
local function anonymous(ctx)
  local step = "anonymous pull (no credentials given)"
  local target = ctx.url .. "/oauth2/token?service=" .. url.encode(service(ctx))
  local res, err = send({ url = target, tls = ctx.tls, timeout = 60, headers = { Accept = "application/json" } }, step)
  if not res then return nil, err end
  if res.status == 200 then return { anonymous = true, expires_in = BASIC_TTL } end
  local why = oauth_error(res)
  if res.status == 401 or res.status == 403 then
    why = why .. ": the registry does not allow anonymous pull (az acr update --anonymous-pull-enabled); "
          .. "give credentials (" .. CREDENTIALS .. ")"
  end
  return nil, string.format("acr: %s: GET %s: %s", step, target, why)
end

-- Turns the credentials given into the registry's: Basic ones as they are,
-- else an ACR refresh token as the null user's password; none at all is
-- an anonymous login, where the registry allows anonymous pull.
function kind.login(creds, ctx)
  local refresh, err
  if set(creds.refresh_token) then
    refresh = creds.refresh_token
  elseif set(creds.aad_access_token) then
    refresh, err = exchange(creds, ctx, creds.aad_access_token)
  elseif set(creds.client_id) and set(creds.client_secret) and set(creds.tenant) then
    local aad
    aad, err = aad_token(creds, ctx)
    if aad then refresh, err = exchange(creds, ctx, aad) end
  elseif set(creds.client_id) and set(creds.client_secret) then
    return { username = creds.client_id, password = creds.client_secret, expires_in = BASIC_TTL }
  elseif set(creds.username) then
    return { username = creds.username, password = creds.password or "", expires_in = BASIC_TTL }
  elseif not given(creds) then
    return anonymous(ctx)
  else
    return nil, "acr: incomplete credentials (give " .. CREDENTIALS .. ")"
  end
  if not refresh then return nil, err end
  return { username = NULL_USER, password = refresh, expires_in = lifetime(refresh, REFRESH_TTL, REFRESH_TTL) }
end

-- Leaves listing to /v2/_catalog (false), which needs credentials: an
-- anonymous client (anonymous pull covers pulls and tag lists only) fails
-- here, saying to name the repositories.
function kind.catalog(creds, ctx, opts)
  if given(creds) then return false end
  return nil, "acr: listing repositories: the registry's catalog (/v2/_catalog) needs credentials, and none were "
              .. "given (anonymous pull covers pulls only): give credentials (" .. CREDENTIALS .. "), or name each "
              .. "repository exactly (--repo team/app)"
end

return kind
