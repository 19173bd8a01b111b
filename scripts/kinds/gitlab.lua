-- kinds/gitlab: the GitLab container registry (gitlab.com and self-managed).
-- The registry speaks the OCI spec with GitLab's token service, /jwt/auth
-- (Basic user:token; the JWT lives 5 minutes on self-managed GitLab, 15 on
-- gitlab.com, and its answer carries no expires_in, so the client keeps it
-- 60 s at most and fetches a new one after a 401). What differs is around it:
--   * an image lives in an existing project, at most two levels below it
--     (group/sub/project[/a[/b]]); nothing can be created, so before a push
--     the project is looked up through the REST API (/api/v4), for an error
--     that says so rather than the registry's bare 401;
--   * /v2/_catalog is refused: repositories are listed through /api/v4
--     (PRIVATE-TOKEN, or JOB-TOKEN for gitlab-ci-token; pages by
--     X-Next-Page): in the projects of options.projects; else, for a filter
--     that names a group (grp/**, grp/sub/**), with one call for the group
--     and its subgroups (GET /groups/:id/registry/repositories), and for
--     the others (a project's or a user's namespace: the group call answers
--     404; no namespace at all) in the member projects they can match;
--   * an image path without a project answers 401, not 404 (the quirk
--     missing_401);
--   * the API's host is the token realm's (registry.gitlab.com's realm is
--     https://gitlab.com/jwt/auth), unless options.api_url names it;
--   * a 429 (Rack::Attack's "Retry later") is retried after its Retry-After.
local url = require("url")

local kind = {
  description = "GitLab container registry: /jwt/auth tokens, listing through /api/v4, images in existing projects",
  hosts = { "registry.gitlab.com" },
  credentials = {
    { name = "username", label = "Username", help = "a user, a deploy token's username, or gitlab-ci-token" },
    { name = "password", label = "Access token", secret = true,
      help = "a personal, project, group or deploy token (read_registry, write_registry), or a CI job token" },
    { name = "api_token", label = "API token", secret = true,
      help = "a token with the api or read_api scope, for listing and project checks (default: the password)" },
  },
  options = {
    { name = "api_url", label = "GitLab API",
      help = "default: from the registry's token realm (https://gitlab.com/api/v4 for registry.gitlab.com)" },
    { name = "projects", label = "Projects to list",
      help = "comma-separated project paths (group/sub/project); default: the member projects the filters can match" },
  },
  quirks = { missing_401 = true },
}

local ATTEMPTS = 5
local apis = {} -- registry URL -> its API base, learnt from the token realm

-- The value of a parameter of a WWW-Authenticate challenge, or nil.
local function challenge_param(header, name)
  return tostring(header or ""):match(name .. '%s*=%s*"([^"]*)"')
end

-- The API base of the registry at ctx.url: options.api_url, else the origin
-- (and path) of its token realm with /api/v4. Returns it or nil, err.
local function api_base(ctx)
  local given = (ctx.options or {}).api_url
  if given and given ~= "" then return (given:gsub("/+$", "")) end
  if apis[ctx.url] then return apis[ctx.url] end
  local res, err, detail = http.request { url = ctx.url .. "/v2/", tls = ctx.tls, timeout = 30 }
  if not res then return nil, string.format("gitlab: finding the API: GET %s/v2/: %s (%s)", ctx.url, err, detail or "") end
  local realm = challenge_param(res.headers["www-authenticate"], "realm")
  local base = realm and realm:match("^(https?://.-)/jwt/auth$")
  if not base then
    return nil, "gitlab: finding the API: the registry's token realm is not GitLab's /jwt/auth (give the option api_url)"
  end
  if ctx.url:find("^https:") and not base:find("^https:") then
    return nil, "gitlab: finding the API: refused: the registry is on https and its token realm " .. realm .. " is not"
  end
  apis[ctx.url] = base .. "/api/v4"
  return apis[ctx.url]
end

-- The headers that carry the API token.
local function api_headers(creds)
  local token = creds.api_token ~= nil and creds.api_token ~= "" and creds.api_token or creds.password or ""
  local h = { Accept = "application/json" }
  if creds.username == "gitlab-ci-token" and not (creds.api_token and creds.api_token ~= "") then
    h["JOB-TOKEN"] = token
  else
    h["PRIVATE-TOKEN"] = token
  end
  return h
end

-- GitLab's reason from an API error body ({"message"} or {"error"}).
local function gitlab_error(res)
  local doc = json.decode(res.body or "")
  local msg = type(doc) == "table" and (doc.message or doc.error)
  if type(msg) == "table" then msg = json.encode(msg) end
  if msg == nil and res.status == 429 then msg = tostring(res.body or ""):gsub("%s+$", "") end
  local hint = res.status == 401 and " (the token needs the api or read_api scope)" or ""
  return string.format("http %d%s%s", res.status, msg and (": " .. tostring(msg):sub(1, 200)) or "", hint)
end

-- GETs path (under the API base) with the API token, retrying a 429 or a
-- 502-504 after Retry-After (else with backoff). Returns the response or
-- nil, err naming the step.
local function get(creds, ctx, path, step)
  local base, berr = api_base(ctx)
  if not base then return nil, berr end
  local what = "GET " .. base .. path
  for attempt = 1, ATTEMPTS do
    local res, err, detail = http.request { url = base .. path, headers = api_headers(creds), tls = ctx.tls,
                                            timeout = 60 }
    if not res then return nil, string.format("gitlab: %s: %s: %s (%s)", step, what, err, detail or "") end
    local transient = res.status == 429 or (res.status >= 502 and res.status <= 504)
    if not transient or attempt == ATTEMPTS then return res, nil, what end
    local wait = math.min(tonumber(res.headers["retry-after"]) or math.min(8, 0.5 * 2 ^ (attempt - 1)), 60)
    log.warn("gitlab: %s: %s: http %d, retry %d/%d in %g s", step, what, res.status, attempt, ATTEMPTS - 1, wait)
    time.sleep(wait)
  end
end

-- GETs every page of an API list (per_page 100, following X-Next-Page);
-- returns the items or nil, err and the refusal's status.
local function pages(creds, ctx, path, step)
  local out, page = {}, "1"
  local seen = {}
  while page do
    seen[page] = true
    local p = path .. (path:find("?", 1, true) and "&" or "?") .. "per_page=100&page=" .. url.encode(page)
    local res, err, what = get(creds, ctx, p, step)
    if not res then return nil, err end
    if res.status ~= 200 then
      return nil, string.format("gitlab: %s: %s: %s", step, what, gitlab_error(res)), res.status
    end
    local list = json.decode(res.body or "")
    if type(list) ~= "table" then return nil, string.format("gitlab: %s: %s: the answer is not a JSON list", step, what) end
    for _, v in ipairs(list) do out[#out + 1] = v end
    local nxt = res.headers["x-next-page"]
    page = nxt and nxt:match("^%d+$") or nil
    if page and seen[page] then return nil, "gitlab: " .. step .. ": X-Next-Page loops" end
  end
  return out
end

-- The literal part of a repository filter: its segments before the first
-- one with a glob character ("group/sub/**" -> "group/sub").
local function literal_prefix(pattern)
  local segs = {}
  for seg in tostring(pattern):gmatch("[^/]+") do
    if seg:find("[%*%?%[%{\\]") then break end
    segs[#segs + 1] = seg
  end
  return table.concat(segs, "/")
end

-- Whether project path p may hold a repository that filter prefix l selects.
local function relevant(p, l)
  return l == "" or l == p or l:sub(1, #p + 1) == p .. "/" or p:sub(1, #l + 1) == l .. "/"
end

-- The registry repositories of the group at path and of its subgroups
-- (GET /groups/:id/registry/repositories, id the URL-encoded path). Returns
-- them, false when path names no group (404: a project, or a user's
-- namespace), or nil, err.
local function group_repositories(creds, ctx, path)
  local repos, err, status = pages(creds, ctx, "/groups/" .. url.encode(path) .. "/registry/repositories",
                                   "listing the repositories of group " .. path)
  if repos then return repos end
  if status == 404 then return false end
  return nil, err
end

-- The member projects (their paths) that may hold a repository one of the
-- filter prefixes selects, skipping those whose registry is disabled.
-- Returns the paths or nil, err.
local function member_projects(creds, ctx, prefixes)
  local list, err = pages(creds, ctx, "/projects?membership=true&simple=true&order_by=id&sort=asc", "listing projects")
  if not list then return nil, err end
  local out = {}
  for _, pr in ipairs(list) do
    local path = type(pr) == "table" and pr.path_with_namespace
    local enabled = pr.container_registry_enabled ~= false and pr.container_registry_access_level ~= "disabled"
    if type(path) == "string" and enabled then
      for _, l in ipairs(prefixes) do
        if relevant(path, l) then
          out[#out + 1] = path
          break
        end
      end
    end
  end
  return out
end

-- Appends to out the paths of the repositories in repos not in seen yet.
local function add_paths(out, seen, repos)
  for _, r in ipairs(repos) do
    if type(r) == "table" and type(r.path) == "string" and not seen[r.path] then
      seen[r.path] = true
      out[#out + 1] = r.path
    end
  end
end

-- Whether path is listed already: it is one of the groups in done, or
-- under one.
local function covered(done, path)
  for _, g in ipairs(done) do
    if path == g or path:sub(1, #g + 1) == g .. "/" then return true end
  end
  return false
end

-- Lists, into out, the repositories of the groups the filter prefixes
-- name (one call per group covers its projects and subgroups); returns
-- the prefixes that name no group (none, a project, a user's namespace),
-- to be listed project by project, or nil, err.
local function list_groups(creds, ctx, prefixes, out, seen)
  local rest, done = {}, {}
  for _, l in ipairs(prefixes) do
    if l == "" then
      rest[#rest + 1] = l
    elseif not covered(done, l) then
      local repos, err = group_repositories(creds, ctx, l)
      if repos == nil then return nil, err end
      if repos then
        done[#done + 1] = l
        add_paths(out, seen, repos)
      else
        rest[#rest + 1] = l
      end
    end
  end
  return rest
end

-- Lists, into out, the repositories of the projects given; a member
-- project without a registry, or without access to it, is skipped unless
-- the option projects named it. Returns true or nil, err.
local function list_projects(creds, ctx, projects, named, out, seen)
  for _, p in ipairs(projects) do
    local repos, err, status = pages(creds, ctx, "/projects/" .. url.encode(p) .. "/registry/repositories",
                                     "listing the repositories of project " .. p)
    if not repos and not named and (status == 403 or status == 404) then
      log.info("%s: skipped", err)
      repos = {}
    end
    if not repos then return nil, err end
    add_paths(out, seen, repos)
  end
  return true
end

-- Lists the repositories (their full paths) of the projects in
-- options.projects; else of the groups the repository filters name
-- (grp/** and grp/sub/** list through the group's endpoint), and of the
-- member projects the other filters can match.
function kind.catalog(creds, ctx, opts)
  local patterns = type(opts) == "table" and opts.patterns or {}
  local out, seen = {}, {}
  local given = (ctx.options or {}).projects
  if given and given ~= "" then
    local projects = {}
    for p in given:gmatch("[^,%s]+") do projects[#projects + 1] = p end
    local ok, err = list_projects(creds, ctx, projects, true, out, seen)
    if not ok then return nil, err end
  else
    local prefixes = {}
    for _, p in ipairs(patterns) do prefixes[#prefixes + 1] = literal_prefix(p) end
    if #prefixes == 0 then prefixes[1] = "" end
    local rest, err = list_groups(creds, ctx, prefixes, out, seen)
    if not rest then return nil, err end
    if #rest > 0 then
      local projects, perr = member_projects(creds, ctx, rest)
      if not projects then return nil, perr end
      local ok, lerr = list_projects(creds, ctx, projects, false, out, seen)
      if not ok then return nil, lerr end
    end
  end
  table.sort(out)
  return out
end

-- Finds the existing project that repository repo belongs to (repo itself,
-- or one or two levels up): nothing can be created in GitLab's registry, so
-- a missing project fails here, before any push. A token the API refuses
-- (a deploy token has no API access) leaves the check to the registry.
function kind.ensure_namespace(creds, ctx, repo)
  local candidates, cur = {}, repo
  for _ = 1, 3 do
    candidates[#candidates + 1] = cur
    cur = cur:match("^(.+)/[^/]+$")
    if not cur then break end
  end
  for _, c in ipairs(candidates) do
    local step = "finding the project of " .. repo
    local res, err, what = get(creds, ctx, "/projects/" .. url.encode(c), step)
    if not res then return nil, err end
    if res.status == 200 then
      local doc = json.decode(res.body or "")
      if type(doc) == "table" and (doc.container_registry_enabled == false or doc.container_registry_access_level == "disabled") then
        return nil, string.format("gitlab: project %s has its container registry disabled", c)
      end
      return { project = c, created = false }
    end
    if res.status == 401 or res.status == 403 then
      log.info("gitlab: %s: %s: %s; the registry will say", step, what, gitlab_error(res))
      return { created = false, checked = false }
    end
    if res.status ~= 404 then return nil, string.format("gitlab: %s: %s: %s", step, what, gitlab_error(res)) end
  end
  return nil, string.format("gitlab: no project holds %s: an image lives in an existing project, at most two levels "
                            .. "below it (tried %s); create the project first", repo, table.concat(candidates, ", "))
end

-- Whether the registry at ctx.url is GitLab's: its challenge names the
-- realm /jwt/auth and the service container_registry.
function kind.probe(ctx)
  local res = http.request { url = ctx.url .. "/v2/", tls = ctx.tls, timeout = 10 }
  if not res or res.status ~= 401 then return false end
  local h = res.headers["www-authenticate"]
  local realm = challenge_param(h, "realm")
  return realm ~= nil and realm:find("/jwt/auth$") ~= nil and challenge_param(h, "service") == "container_registry"
end

return kind
