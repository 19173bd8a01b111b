-- kinds/ghcr: GitHub Container Registry (ghcr.io). The registry takes a
-- personal access token (classic: read:packages, write:packages,
-- delete:packages) as the Basic password of the token flow its challenge
-- names (GET https://ghcr.io/token; any username); its tokens come without
-- expires_in, which the client's token cache treats as 60 s (and renews
-- after a 401). What differs is around it, in GitHub's packages REST API
-- (api.github.com, the option api_url), which takes the same PAT:
--   * there is no /v2/_catalog (404): repositories are listed with
--     GET /orgs/ORG/packages?package_type=container (or /users/USER/...)
--     for each owner the repository filters name (team/** lists team; the
--     option namespace, else the username, for filters that name none),
--     following Link rel="next"; a package name may hold '/', which the
--     API wants as %2F in its paths;
--   * the registry refuses DELETE (405): a manifest is deleted as the
--     package version whose name is its digest (DELETE
--     .../packages/container/NAME/versions/ID, which takes its tags along);
--   * a push creates the package, private: there is nothing to create first;
--   * a PATCH of more than 4 MiB is refused (the quirk max_chunk): blobs
--     larger than that go up in chunks of at most 4 MiB.
local url = require("url")
local link = require("oci.link") -- origin(): the next page stays on the API's origin

local kind = {
  description = "GitHub Container Registry: PATs, listing and deletion through the GitHub packages API",
  hosts = { "ghcr.io" },
  credentials = {
    { name = "username", label = "GitHub user", help = "any name works with a personal access token" },
    { name = "password", label = "Personal access token (classic)", secret = true,
      help = "read:packages to pull and list, write:packages to push, delete:packages to delete" },
  },
  options = {
    { name = "api_url", label = "GitHub REST API", help = "default https://api.github.com" },
    { name = "namespace", label = "Owners to list",
      help = "comma-separated users or organisations, for repository filters that name no owner (default: the username)" },
  },
  -- GHCR answers a PATCH of more than 4 MiB with 416 REQUESTED_RANGE_NOT_SATISFIABLE "the request body is too
  -- large and exceeds the maximum permissible limit of 4.00MiB" (oras-project/rust-oci-client#35 and #37,
  -- ocx-sh/ocx#237; registry-kinds.md section 3 Quirks). UNVERIFIED: GitHub documents no such limit.
  quirks = { max_chunk = 4 * 1024 * 1024 },
}

local ATTEMPTS = 5      -- API calls throttled (429, or 403 with no requests left)
local MAX_AFTER = 60    -- the longest wait honoured between them

local function api_of(ctx)
  return (((ctx.options or {}).api_url) or "https://api.github.com"):gsub("/+$", "")
end

-- GitHub's error message ({"message", "documentation_url"}).
local function gh_error(res)
  local doc = json.decode(res.body or "")
  local msg = type(doc) == "table" and type(doc.message) == "string" and doc.message or nil
  if not msg then return "http " .. res.status end
  return "http " .. res.status .. ": " .. msg:sub(1, 200):gsub("%c", " ")
end

-- Whether res says the API's rate limit is reached (429, or 403 with no
-- requests left): how long to wait, or nil.
local function throttled(res)
  if res.status ~= 429 and not (res.status == 403 and res.headers["x-ratelimit-remaining"] == "0") then
    return nil
  end
  local wait = tonumber(res.headers["retry-after"])
  if not wait then
    local reset = tonumber(res.headers["x-ratelimit-reset"])
    wait = reset and (reset - time.now()) or 1
  end
  return math.max(0.1, wait)
end

-- Sends one API request with the PAT; a throttled answer is retried after
-- its Retry-After (or x-ratelimit-reset), a few times, never waiting more
-- than MAX_AFTER. Returns the response or nil, err naming the step.
local function call(creds, ctx, method, u, step)
  if not creds.password or creds.password == "" then
    return nil, "ghcr: " .. step .. ": the GitHub API needs a personal access token (the password)"
  end
  local headers = { Accept = "application/vnd.github+json", ["X-GitHub-Api-Version"] = "2022-11-28",
                    Authorization = "Bearer " .. creds.password }
  for attempt = 1, ATTEMPTS do
    local res, err, detail = http.request { method = method, url = u, headers = headers, tls = ctx.tls, timeout = 60 }
    if not res then return nil, string.format("ghcr: %s: %s %s: %s (%s)", step, method, u, err, detail or "") end
    local wait = throttled(res)
    if not wait or attempt == ATTEMPTS then return res end
    if wait > MAX_AFTER then return res end
    log.warn("ghcr: %s: %s %s: http %d (rate limit), retry %d/%d in %.1f s", step, method, u, res.status, attempt,
             ATTEMPTS - 1, wait)
    if not time.sleep(wait) then return nil, "ghcr: " .. step .. ": cancelled" end
  end
end

-- GETs every page of a list, following Link rel="next" while it stays on
-- the API's origin; returns the items, or nil, err, status.
local function pages(creds, ctx, first, step)
  local out, u, seen, own = {}, first, {}, link.origin(api_of(ctx))
  while u do
    if seen[u] then return nil, "ghcr: " .. step .. ": the Link header loops" end
    seen[u] = true
    local res, err = call(creds, ctx, "GET", u, step)
    if not res then return nil, err end
    if res.status ~= 200 then
      local hint = res.status == 401 and " (check the personal access token)" or ""
      return nil, string.format("ghcr: %s: GET %s: %s%s", step, u, gh_error(res), hint), res.status
    end
    local list = json.decode(res.body or "")
    if type(list) ~= "table" then return nil, string.format("ghcr: %s: GET %s: the answer is not a JSON list", step, u) end
    for _, v in ipairs(list) do out[#out + 1] = v end
    local nxt = tostring(res.headers.link or ""):match('<([^>]+)>%s*;%s*rel="?next"?')
    if nxt and link.origin(nxt) ~= own then
      return nil, string.format("ghcr: %s: the next page %s is not on the API (%s)", step, nxt, api_of(ctx))
    end
    u = nxt
  end
  return out
end

-- Finds whether owner is an organisation or a user: the API path of its
-- packages ("/orgs/O/packages" or "/users/U/packages") that answers GET
-- path .. suffix (the orgs one first); returns the path and the items, or
-- nil, err, status.
local function owner_list(creds, ctx, owner, suffix, step)
  local api = api_of(ctx)
  local items, err, status
  for _, base in ipairs({ "/orgs/", "/users/" }) do
    local path = base .. url.encode(owner) .. "/packages"
    items, err, status = pages(creds, ctx, api .. path .. suffix, step)
    if items then return path, items end
    if status ~= 404 then return nil, err, status end
  end
  return nil, err, status
end

-- The owners the repository filters name: the first segment of each
-- literal one (team/** -> team); for a filter that names none, the option
-- namespace, else the username.
local function owners(creds, ctx, patterns)
  local out, seen = {}, {}
  local function add(o)
    o = o:lower()
    if o ~= "" and not seen[o] then seen[o] = true out[#out + 1] = o end
  end
  local function fallback(p)
    local opt = (ctx.options or {}).namespace
    if opt and opt ~= "" then
      for o in opt:gmatch("[^,%s]+") do add(o) end
    elseif creds.username and creds.username ~= "" then
      add(creds.username)
    else
      return nil, string.format("ghcr: the repository filter %s names no owner, and there is no option namespace "
        .. "nor a username to list (GHCR has no catalog)", tostring(p))
    end
    return true
  end
  for _, p in ipairs(patterns or {}) do
    local first = tostring(p):match("^([^/]*)/")
    if first and first ~= "" and not first:find("[%*%?%[%{\\]") then
      add(first)
    else
      local ok, err = fallback(p)
      if not ok then return nil, err end
    end
  end
  if #out == 0 then
    local ok, err = fallback("(none)")
    if not ok then return nil, err end
  end
  return out
end

-- Lists the container packages of the owners the filters name.
function kind.catalog(creds, ctx, opts)
  local list, oerr = owners(creds, ctx, opts and opts.patterns)
  if not list then return nil, oerr end
  local out = {}
  for _, o in ipairs(list) do
    local path, items, err = owner_list(creds, ctx, o, "?package_type=container&per_page=100",
                                        "listing the packages of " .. o)
    if not path then return nil, items end
    for _, p in ipairs(items) do
      if type(p.name) == "string" then out[#out + 1] = o .. "/" .. p.name:lower() end
    end
  end
  table.sort(out)
  return out
end

-- Deletes the manifest dgst of repo (OWNER/PACKAGE): the package version
-- named dgst, with its tags. {deleted = false} when there is none.
function kind.delete(creds, ctx, repo, dgst)
  local owner, pkg = repo:match("^([^/]+)/(.+)$")
  if not owner then return nil, string.format("ghcr: %s is not OWNER/PACKAGE", repo) end
  local suffix = "/container/" .. url.encode(pkg) .. "/versions?per_page=100"
  local path, versions, status = owner_list(creds, ctx, owner, suffix, "listing the versions of " .. repo)
  if not path then
    if status == 404 then return { deleted = false } end -- no such package
    return nil, versions
  end
  for _, v in ipairs(versions) do
    if v.name == dgst and v.id ~= nil then
      local u = string.format("%s%s/container/%s/versions/%s", api_of(ctx), path, url.encode(pkg),
                              url.encode(tostring(math.tointeger(v.id) or v.id)))
      local step = "deleting version " .. dgst:sub(1, 19) .. " of " .. repo
      local res, derr = call(creds, ctx, "DELETE", u, step)
      if not res then return nil, derr end
      if res.status == 204 or res.status == 200 then return { deleted = true, version = v.id } end
      if res.status == 404 then return { deleted = false } end
      return nil, string.format("ghcr: %s: DELETE %s: %s", step, u, gh_error(res))
    end
  end
  return { deleted = false }
end

return kind
