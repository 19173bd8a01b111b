-- kinds/quay: Quay.io and Red Hat Quay. The registry speaks the OCI spec
-- with Quay's token service (/v2/auth, Basic user:password, a robot account
-- NS+NAME with its token, or $oauthtoken with an OAuth token); what differs
-- is around it, in Quay's REST API (/api/v1, Bearer <OAuth token>):
--   * a push needs its namespace: an organisation is created when missing
--     (POST /api/v1/organization/; 400 "already exists" is success: someone
--     made it meanwhile, or it is a user's namespace), then the repository
--     (POST /api/v1/repository, with options.visibility, default private;
--     400 "Repository already exists" is success). Without an OAuth token
--     nothing can be created: Quay then makes the repository itself at token
--     time, private, in a namespace that must exist;
--   * a robot account can push only into its own namespace (said before any
--     push is tried);
--   * listing: with an OAuth token and filters that name their namespaces,
--     GET /api/v1/repository?namespace=NS following next_page; otherwise
--     /v2/_catalog (the client's, following Link with Quay's next_page);
--   * a 429 (nginx's HTML page) is retried after its Retry-After.
-- Manifests are PUT with their real media type (the client always sends
-- it): Quay parses a PUT without one, or with application/json, as schema 1.
-- A repository that does not exist answers 401 like one the credentials
-- cannot read (the quirk missing_401). Deletion goes through the registry
-- API (DELETE by digest, 202).
local url = require("url")

local kind = {
  description = "Quay.io / Red Hat Quay: organisations and repositories created through its API, robot accounts",
  hosts = { "quay.io", "*.quay.io" },
  credentials = {
    { name = "username", label = "Username",
      help = "a user, a robot account (namespace+robot), or $oauthtoken with an OAuth token as the password" },
    { name = "password", label = "Password, robot token or OAuth token", secret = true },
    { name = "oauth_token", label = "OAuth token for the API", secret = true,
      help = "an OAuth application token (create:repo, and org:admin to create organisations); "
          .. "without it, and unless the username is $oauthtoken, nothing is created and listing uses /v2/_catalog" },
  },
  options = {
    { name = "visibility", label = "Visibility of new repositories", default = "private",
      help = "private or public" },
    { name = "org_email", label = "E-mail of new organisations", default = "{org}@quay.io",
      help = "{org} is the organisation's name" },
  },
  -- a repository that does not exist (yet) answers 401, not 404
  quirks = { missing_401 = true },
}

local ATTEMPTS = 5

-- The OAuth token for the REST API, or nil.
local function oauth_token(creds)
  if creds.oauth_token and creds.oauth_token ~= "" then return creds.oauth_token end
  if creds.username == "$oauthtoken" and creds.password and creds.password ~= "" then return creds.password end
  return nil
end

-- Quay's reason from an ApiException body ({"detail", "error_message",
-- "error_type", ...}), or the status alone (a 429 is nginx's HTML page).
local function quay_error(res)
  local doc = json.decode(res.body or "")
  if type(doc) == "table" then
    local msg = doc.error_message or doc.detail or doc.message
    if type(doc.errors) == "table" and type(doc.errors[1]) == "table" then msg = msg or doc.errors[1].message end
    if msg ~= nil then
      local etype = doc.error_type and (" " .. tostring(doc.error_type)) or ""
      return string.format("http %d%s: %s", res.status, etype, tostring(msg):sub(1, 200))
    end
  end
  return "http " .. res.status .. (res.status == 429 and " Too Many Requests" or "")
end

-- Whether a refusal says the thing already exists (Quay answers 400).
local function already_exists(res)
  if res.status == 409 then return true end
  if res.status ~= 400 then return false end
  local doc = json.decode(res.body or "")
  local msg = type(doc) == "table" and tostring(doc.error_message or doc.detail or "") or ""
  return msg:lower():find("already exists", 1, true) ~= nil
end

-- Sends one request to Quay's REST API with the OAuth token, retrying a 429
-- or a 502-504 (after Retry-After, else with backoff); returns the response
-- or nil, err naming the step.
local function call(ctx, token, method, path, body, step)
  local what = method .. " " .. path
  for attempt = 1, ATTEMPTS do
    local res, err, detail = http.request {
      method = method, url = ctx.url .. path, tls = ctx.tls, timeout = 60,
      headers = { Accept = "application/json", Authorization = "Bearer " .. token,
                  ["Content-Type"] = body and "application/json" or nil },
      body = body and json.encode(body) or nil,
    }
    if not res then return nil, string.format("quay: %s: %s: %s (%s)", step, what, err, detail or "") end
    local transient = res.status == 429 or (res.status >= 502 and res.status <= 504)
    if not transient or attempt == ATTEMPTS then return res end
    local wait = tonumber(res.headers["retry-after"]) or math.min(8, 0.5 * 2 ^ (attempt - 1))
    wait = math.min(wait, 60)
    log.warn("quay: %s: %s: http %d, retry %d/%d in %g s", step, what, res.status, attempt, ATTEMPTS - 1, wait)
    time.sleep(wait)
  end
end

-- Whether a repository filter's first segment holds glob characters.
local function globbed(s)
  return s:find("[%*%?%[%{\\]") ~= nil
end

-- Lists the repositories of the namespaces the filters name, through the
-- REST API; false (the client lists /v2/_catalog) without an OAuth token,
-- without filters, or when a filter's namespace is a pattern.
function kind.catalog(creds, ctx, opts)
  local token = oauth_token(creds)
  local patterns = type(opts) == "table" and opts.patterns or {}
  if not token or #patterns == 0 then return false end
  local namespaces, list = {}, {}
  for _, p in ipairs(patterns) do
    local ns = p:match("^([^/]+)/") or p
    if globbed(ns) then return false end
    if not namespaces[ns] then
      namespaces[ns] = true
      list[#list + 1] = ns
    end
  end
  table.sort(list)
  local out = {}
  for _, ns in ipairs(list) do
    local step = "listing the repositories of " .. ns
    local page, seen = nil, {}
    repeat
      local q = { namespace = ns, next_page = page }
      local path = "/api/v1/repository?" .. url.query(q)
      local res, err = call(ctx, token, "GET", path, nil, step)
      if not res then return nil, err end
      if res.status == 404 then break end -- no such namespace: nothing to list
      if res.status ~= 200 then return nil, string.format("quay: %s: GET %s: %s", step, path, quay_error(res)) end
      local doc = json.decode(res.body or "")
      if type(doc) ~= "table" or type(doc.repositories) ~= "table" then
        return nil, string.format("quay: %s: GET %s: the answer holds no repositories", step, path)
      end
      for _, r in ipairs(doc.repositories) do
        if type(r) == "table" and type(r.name) == "string" then
          out[#out + 1] = (type(r.namespace) == "string" and r.namespace or ns) .. "/" .. r.name
        end
      end
      page = type(doc.next_page) == "string" and doc.next_page ~= "" and doc.next_page or nil
      if page and seen[page] then return nil, "quay: " .. step .. ": next_page loops" end
      if page then seen[page] = true end
    until not page
  end
  table.sort(out)
  return out
end

-- Makes sure the organisation and the repository of repo (namespace/name)
-- exist before a push.
function kind.ensure_namespace(creds, ctx, repo)
  local ns, name = repo:match("^([^/]+)/(.+)$")
  if not ns then
    return nil, string.format("quay: %s has no namespace: Quay repositories are namespace/name", repo)
  end
  local robot_ns = tostring(creds.username or ""):match("^([^+]+)%+[^+]+$")
  if robot_ns and robot_ns ~= ns then
    return nil, string.format("quay: the robot account %s can push only into its namespace %s, not %s",
                              creds.username, robot_ns, ns)
  end
  local options = ctx.options or {}
  local visibility = options.visibility or "private"
  if visibility ~= "private" and visibility ~= "public" then
    return nil, string.format("quay: the option visibility must be private or public, not %q", visibility)
  end
  local token = oauth_token(creds)
  if not token then
    -- Quay creates the repository at token time, private, if the namespace exists.
    return { namespace = ns, created = false, api = false }
  end

  local rpath = "/api/v1/repository/" .. url.encode(ns) .. "/" .. url.encode_path(name)
  local step = "checking repository " .. repo
  local res, err = call(ctx, token, "GET", rpath, nil, step)
  if not res then return nil, err end
  if res.status == 200 then return { namespace = ns, repository = repo, created = false } end
  if res.status ~= 404 then return nil, string.format("quay: %s: GET %s: %s", step, rpath, quay_error(res)) end

  local org_created = false
  local opath = "/api/v1/organization/" .. url.encode(ns)
  step = "checking organization " .. ns
  res, err = call(ctx, token, "GET", opath, nil, step)
  if not res then return nil, err end
  if res.status == 404 then
    step = "creating organization " .. ns
    local email = tostring(options.org_email or "{org}@quay.io"):gsub("{org}", function() return ns end)
    res, err = call(ctx, token, "POST", "/api/v1/organization/", { name = ns, email = email }, step)
    if not res then return nil, err end
    if res.status == 201 then
      org_created = true
    elseif not already_exists(res) then -- a user's namespace, or made meanwhile
      return nil, string.format("quay: %s: POST /api/v1/organization/: %s", step, quay_error(res))
    end
  elseif res.status ~= 200 then
    return nil, string.format("quay: %s: GET %s: %s", step, opath, quay_error(res))
  end

  step = "creating repository " .. repo
  res, err = call(ctx, token, "POST", "/api/v1/repository",
                  { namespace = ns, repository = name, visibility = visibility, description = "", repo_kind = "image" },
                  step)
  if not res then return nil, err end
  if res.status == 201 or res.status == 200 then
    return { namespace = ns, repository = repo, created = true, visibility = visibility,
             organization_created = org_created }
  end
  if already_exists(res) then
    -- made meanwhile; a new organisation still makes earlier tokens stale
    return { namespace = ns, repository = repo, created = org_created, organization_created = org_created }
  end
  return nil, string.format("quay: %s: POST /api/v1/repository: %s", step, quay_error(res))
end

return kind
