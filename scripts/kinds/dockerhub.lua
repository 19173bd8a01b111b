-- kinds/dockerhub: Docker Hub. Its registry is registry-1.docker.io (a URL
-- of docker.io or index.docker.io is moved there: the quirk registry_url),
-- with the Docker token flow at auth.docker.io that its own challenge names
-- (a password or a personal access token as the Basic password: the
-- client's ordinary token flow does it). What differs:
--   * official images live under library/: the repository hook names
--     `ubuntu` library/ubuntu (names with a '/' stay as they are);
--   * there is no usable /v2/_catalog, so repositories are listed through
--     the Hub API (hub.docker.com, the option hub_url): a login with
--     POST /v2/auth/token {identifier, secret} (a 10-minute JWT), then
--     GET /v2/namespaces/NS/repositories?page_size=100 for each namespace
--     the repository filters name (team/** lists team), following `next`;
--   * manifest GETs count against a pull limit that the registry announces
--     in RateLimit-Limit / RateLimit-Remaining ("N;w=W") on manifest GETs
--     and HEADs (HEADs do not count); past it a GET is answered 429
--     TOOMANYREQUESTS. The quirk pull_limit makes the client slow down
--     near the end of the quota and wait for it to come back, for at most
--     the option max_wait (default 6 h) (scripts/lib/oci/ratelimit.lua);
--     the pull stage HEADs before every GET that counts;
--   * the registry refuses DELETE (405 UNSUPPORTED): a manifest is deleted
--     through the Hub API, deleting every tag that points at it
--     (DELETE /v2/namespaces/NS/repositories/R/tags/T);
--   * a push creates the repository with the account's default visibility;
--     with the option private ("true"/"false") the repository is created
--     through the Hub API first with that visibility (POST
--     /v2/namespaces/NS/repositories {name, is_private});
--   * a repository is exactly NAMESPACE/NAME: as a target, any other name
--     fails in push_prepare, before anything is pushed; the namespace must
--     be the account's own or an existing organisation it may push to
--     (organisations are not created: Harbor's POST /v2/orgs/ is not in
--     Docker's API reference).
local url = require("url")
local link = require("oci.link") -- origin(): the next page stays on the API's origin

local REGISTRY = "https://registry-1.docker.io"

local kind = {
  description = "Docker Hub: library/ names, listing and deletion through the Hub API, pull limits honoured",
  hosts = { "docker.io", "registry-1.docker.io", "index.docker.io" },
  credentials = {
    { name = "username", label = "Docker ID", help = "your Docker ID (or an organisation's, with its access token)" },
    { name = "password", label = "Password or personal access token", secret = true },
  },
  options = {
    { name = "hub_url", label = "Hub API", help = "default https://hub.docker.com" },
    { name = "namespace", label = "Namespaces to list",
      help = "comma-separated; for repository filters that name no namespace (default: your Docker ID)" },
    { name = "max_wait", label = "Longest wait for the pull limit", default = "6h",
      help = "seconds, or 15m, 6h: how long a pull waits for a used-up pull limit to come back" },
    { name = "private", label = "Create repositories private",
      help = "true or false: create each repository through the Hub API before a push; unset: leave it to the push" },
  },
  quirks = {
    registry_url = { ["docker.io"] = REGISTRY, ["index.docker.io"] = REGISTRY },
    pull_limit = { remaining = "ratelimit-remaining", limit = "ratelimit-limit", max_wait = 6 * 3600 },
  },
}

local ATTEMPTS = 5      -- Hub API calls throttled with 429
local MAX_AFTER = 60    -- the longest Retry-After honoured on the Hub API

-- The Hub API's base URL.
local function hub_of(ctx)
  return (((ctx.options or {}).hub_url) or "https://hub.docker.com"):gsub("/+$", "")
end

-- The message of a Hub API error body ({"detail"} or {"message"}).
local function hub_error(res)
  local doc = json.decode(res.body or "")
  local msg = type(doc) == "table" and (doc.detail or doc.message) or nil
  if type(msg) ~= "string" then return "http " .. res.status end
  return "http " .. res.status .. ": " .. msg:sub(1, 200):gsub("%c", " ")
end

-- Sends one Hub API request (retrying a 429 after its Retry-After, a few
-- times); returns the response or nil, err naming the step.
local function call(ctx, method, u, opts, step)
  opts = opts or {}
  local headers = { Accept = "application/json", Authorization = opts.token and ("Bearer " .. opts.token) or nil }
  if opts.body then headers["Content-Type"] = "application/json" end
  for attempt = 1, ATTEMPTS do
    local res, err, detail = http.request { method = method, url = u, headers = headers, tls = ctx.tls, timeout = 60,
                                            body = opts.body and json.encode(opts.body) or nil }
    if not res then
      return nil, string.format("dockerhub: %s: %s %s: %s (%s)", step, method, u, err, detail or "")
    end
    if (res.status ~= 429 and res.status ~= 503) or attempt == ATTEMPTS then return res end
    local wait = tonumber(res.headers["retry-after"])
    if not wait then
      local reset = tonumber(res.headers["x-ratelimit-reset"])
      wait = reset and (reset - time.now()) or 2 ^ (attempt - 1)
    end
    wait = math.max(0.1, math.min(MAX_AFTER, wait))
    log.warn("dockerhub: %s: %s %s: http %d, retry %d/%d in %.1f s", step, method, u, res.status, attempt,
             ATTEMPTS - 1, wait)
    local ok = time.sleep(wait)
    if not ok then return nil, "dockerhub: " .. step .. ": cancelled" end
  end
end

-- Logs in to the Hub API (POST /v2/auth/token); returns the access token,
-- nil when there are no credentials (anonymous: public repositories), or
-- nil, err.
local function hub_login(creds, ctx)
  if not creds.username or creds.username == "" or not creds.password or creds.password == "" then
    return nil
  end
  local u = hub_of(ctx) .. "/v2/auth/token"
  local res, err = call(ctx, "POST", u, { body = { identifier = creds.username, secret = creds.password } },
                        "logging in to the Hub API")
  if not res then return nil, err end
  local doc = json.decode(res.body or "")
  if res.status ~= 200 or type(doc) ~= "table" or type(doc.access_token) ~= "string" then
    return nil, string.format("dockerhub: logging in to the Hub API: POST %s: %s%s", u, hub_error(res),
                              res.status == 401 and " (check the Docker ID and the password or access token)" or "")
  end
  return doc.access_token
end

-- GETs every page of a Hub API list ({"count","next","previous","results"}),
-- following `next` while it stays on the Hub API's origin; returns the
-- results or nil, err.
local function pages(ctx, token, first, step)
  local out, u, seen, own = {}, first, {}, link.origin(hub_of(ctx))
  while u do
    if seen[u] then return nil, "dockerhub: " .. step .. ": the next links loop" end
    seen[u] = true
    local res, err = call(ctx, "GET", u, { token = token }, step)
    if not res then return nil, err end
    if res.status ~= 200 then return nil, string.format("dockerhub: %s: GET %s: %s", step, u, hub_error(res)) end
    local doc = json.decode(res.body or "")
    if type(doc) ~= "table" or type(doc.results) ~= "table" then
      return nil, string.format("dockerhub: %s: GET %s: the answer holds no results", step, u)
    end
    for _, r in ipairs(doc.results) do out[#out + 1] = r end
    u = type(doc.next) == "string" and doc.next ~= "" and doc.next or nil
    if u and link.origin(u) ~= own then
      return nil, string.format("dockerhub: %s: the next page %s is not on the Hub API (%s)", step, u, hub_of(ctx))
    end
  end
  return out
end

-- The namespace and repository of a Docker Hub name ("library/ubuntu"), or nil.
local function split(repo)
  return repo:match("^([^/]+)/([^/]+)$")
end

-- The namespaces the repository filters name: the first segment of each
-- filter when it is literal (team/** -> team); for a filter that names none
-- (**, */app), the option namespace, else the username.
local function namespaces(creds, ctx, patterns)
  local out, seen = {}, {}
  local function add(ns)
    ns = ns:lower()
    if ns ~= "" and not seen[ns] then seen[ns] = true out[#out + 1] = ns end
  end
  for _, p in ipairs(patterns or {}) do
    local first = tostring(p):match("^([^/]*)/") or tostring(p)
    if first ~= "" and not first:find("[%*%?%[%{\\]") and tostring(p):find("/", 1, true) then
      add(first)
    else
      local opt = (ctx.options or {}).namespace
      if opt and opt ~= "" then
        for ns in opt:gmatch("[^,%s]+") do add(ns) end
      elseif creds.username and creds.username ~= "" then
        add(creds.username)
      else
        return nil, string.format("dockerhub: the repository filter %s names no namespace, and there is no option "
          .. "namespace nor a username to list (Docker Hub has no catalog)", tostring(p))
      end
    end
  end
  if #out == 0 then
    if creds.username and creds.username ~= "" then add(creds.username) end
  end
  return out
end

-- Official images live under library/: ubuntu is library/ubuntu.
function kind.repository(creds, ctx, name)
  if not name:find("/", 1, true) then return "library/" .. name end
  return name
end

-- Lists the repositories of the namespaces the filters name, through the
-- Hub API.
function kind.catalog(creds, ctx, opts)
  local list, nerr = namespaces(creds, ctx, opts and opts.patterns)
  if not list then return nil, nerr end
  local token, lerr = hub_login(creds, ctx)
  if lerr then return nil, lerr end
  local out = {}
  for _, ns in ipairs(list) do
    local repos, err = pages(ctx, token, hub_of(ctx) .. "/v2/namespaces/" .. url.encode(ns) .. "/repositories?page_size=100",
                             "listing the repositories of " .. ns)
    if not repos then return nil, err end
    for _, r in ipairs(repos) do
      if type(r.name) == "string" then out[#out + 1] = ns .. "/" .. r.name end
    end
  end
  table.sort(out)
  return out
end

-- Checks that repo is a Docker Hub name, NAMESPACE/NAME (exactly one '/':
-- Harbor's path rule ONLY_TWO); returns its namespace and name, or nil, err
-- saying how to make names fit.
local function target_name(repo)
  local ns, name = split(repo)
  if ns then return ns, name end
  local _, slashes = repo:gsub("/", "")
  return nil, string.format("dockerhub: naming the destination %s: a Docker Hub repository is NAMESPACE/NAME, with "
    .. "exactly one '/' (this has %d); choose --dest-namespace and --flatten so that names fit (--flatten -1 "
    .. "--dest-namespace NS puts a/b/app at NS/app)", repo, slashes)
end

-- What a refused push into namespace ns means on Docker Hub (push_prepare
-- adds it to the refusal): organisations are not created here.
local function denied(creds, ns)
  local who = creds.username and creds.username ~= "" and ("the account " .. creds.username) or "an anonymous client"
  return string.format("%s cannot push into the namespace %s: it must be your Docker ID or an existing organisation "
    .. "you may push to (replica creates no organisation; create it on Docker Hub)", who, ns)
end

-- Checks the destination name (NAMESPACE/NAME) before anything is pushed.
-- With the option private, creates repository repo through the Hub API
-- (unless it exists) with that visibility; without it, nothing: the push
-- creates it. The result's `denied` says what a refused push means.
function kind.ensure_namespace(creds, ctx, repo)
  local ns, name = target_name(repo)
  if not ns then return nil, name end
  local private = (ctx.options or {}).private
  if private == nil or private == "" then return { repository = repo, created = false, denied = denied(creds, ns) } end
  if private ~= "true" and private ~= "false" then
    return nil, string.format("dockerhub: the option private must be true or false, not %q", private)
  end
  local token, lerr = hub_login(creds, ctx)
  if not token then return nil, lerr or "dockerhub: creating repository " .. repo .. ": no credentials" end
  local base = hub_of(ctx) .. "/v2/namespaces/" .. url.encode(ns) .. "/repositories"
  local res, err = call(ctx, "HEAD", base .. "/" .. url.encode(name), { token = token }, "checking repository " .. repo)
  if not res then return nil, err end
  if res.status == 200 then return { repository = repo, created = false, denied = denied(creds, ns) } end
  if res.status ~= 404 then
    return nil, string.format("dockerhub: checking repository %s: HEAD %s/%s: http %d", repo, base, name, res.status)
  end
  res, err = call(ctx, "POST", base, { token = token, body = { name = name, is_private = private == "true" } },
                  "creating repository " .. repo)
  if not res then return nil, err end
  if res.status == 201 or res.status == 200 then
    return { repository = repo, created = true, private = private == "true", denied = denied(creds, ns) }
  end
  if res.status == 409 then return { repository = repo, created = false, denied = denied(creds, ns) } end
  local why = (res.status == 403 or res.status == 404) and (": " .. denied(creds, ns)) or ""
  return nil, string.format("dockerhub: creating repository %s: POST %s: %s%s", repo, base, hub_error(res), why)
end

-- Deletes the manifest dgst of repo: every tag pointing at it, through the
-- Hub API (the registry answers DELETE with 405). {deleted = false} when no
-- tag points at it.
function kind.delete(creds, ctx, repo, dgst)
  local ns, name = split(repo)
  if not ns then return nil, string.format("dockerhub: %s is not NAMESPACE/NAME", repo) end
  local token, lerr = hub_login(creds, ctx)
  if not token then return nil, lerr or ("dockerhub: deleting from " .. repo .. ": no credentials") end
  local base = hub_of(ctx) .. "/v2/namespaces/" .. url.encode(ns) .. "/repositories/" .. url.encode(name) .. "/tags"
  local tags, err = pages(ctx, token, base .. "?page_size=100", "listing the tags of " .. repo)
  if not tags then
    if tostring(err):find(": http 404", 1, true) then return { deleted = false, tags = {} } end
    return nil, err
  end
  local deleted = {}
  for _, t in ipairs(tags) do
    if type(t.name) == "string" and t.digest == dgst then
      local step = "deleting tag " .. repo .. ":" .. t.name
      local res, derr = call(ctx, "DELETE", base .. "/" .. url.encode(t.name), { token = token }, step)
      if not res then return nil, derr end
      if res.status ~= 204 and res.status ~= 200 and res.status ~= 404 then
        return nil, string.format("dockerhub: %s: DELETE %s/%s: %s", step, base, t.name, hub_error(res))
      end
      if res.status ~= 404 then deleted[#deleted + 1] = t.name end
    end
  end
  return { deleted = #deleted > 0, tags = deleted }
end

return kind
