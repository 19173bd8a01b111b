-- kinds/harbor: Harbor v2. Its registry speaks the OCI spec with Harbor's
-- token service; what differs is around it (Harbor's REST API under
-- /api/v2.0, HTTP Basic, robot accounts named robot$...):
--   * a push needs its project: HEAD /api/v2.0/projects?project_name=P,
--     then POST /api/v2.0/projects (201, or 409: someone made it meanwhile);
--     options.public ("true"/"false", default "false") is the new
--     project's visibility;
--   * /v2/_catalog needs system-admin rights, so repositories are listed
--     through the projects and repositories API (page_size 100, Link
--     rel="next"), names in paths URL-encoded twice;
--   * Harbor's label filter: filter_tags keeps the tags whose artifact has
--     every label asked for (GET .../artifacts?with_label=true);
--   * a deletion deletes the artifact, with its tags, through the API
--     (DELETE .../repositories/R/artifacts/DIGEST, R encoded twice; 404:
--     there is none), with the same Basic credentials as the rest of it;
--   * it is detected by GET /api/v2.0/systeminfo.
local url = require("url")

local kind = {
  description = "Harbor v2: projects created before a push, listing and deletion through its REST API",
  credentials = {
    { name = "username", label = "Username", help = "A user, or a robot account (robot$name)." },
    { name = "password", label = "Password or robot secret", secret = true },
  },
  options = {
    { name = "public", label = "New projects are public", default = "false" },
  },
}

-- The Basic header of creds, or nil for anonymous access.
local function basic(creds)
  if not creds.username or creds.username == "" then return nil end
  return "Basic " .. base64.encode(creds.username .. ":" .. (creds.password or ""))
end

-- Sends one request to Harbor's REST API; returns the response or nil, err
-- naming the step.
local function call(ctx, creds, method, path, body, step)
  local res, err, detail = http.request {
    method = method, url = ctx.url .. path, tls = ctx.tls, timeout = 60,
    headers = { Accept = "application/json", Authorization = basic(creds),
                ["Content-Type"] = body and "application/json" or nil },
    body = body and json.encode(body) or nil,
  }
  if not res then return nil, string.format("harbor: %s: %s %s: %s (%s)", step, method, path, err, detail or "") end
  return res
end

-- Harbor's error message from an {"errors":[{"code","message"}]} body.
local function harbor_error(res)
  local doc = json.decode(res.body or "")
  local e = type(doc) == "table" and type(doc.errors) == "table" and doc.errors[1]
  if type(e) == "table" then return string.format("http %d %s: %s", res.status, tostring(e.code), tostring(e.message)) end
  return "http " .. res.status
end

-- GETs every page of a Harbor list (page_size 100, following Link
-- rel="next"); returns the concatenated items or nil, err.
local function pages(ctx, creds, path, step)
  local out, next_path = {}, path .. (path:find("?", 1, true) and "&" or "?") .. "page_size=100"
  local seen = {}
  while next_path do
    if seen[next_path] then return nil, "harbor: " .. step .. ": the Link header loops" end
    seen[next_path] = true
    local res, err = call(ctx, creds, "GET", next_path, nil, step)
    if not res then return nil, err end
    if res.status ~= 200 then return nil, string.format("harbor: %s: GET %s: %s", step, next_path, harbor_error(res)) end
    local list = json.decode(res.body)
    if type(list) ~= "table" then return nil, "harbor: " .. step .. ": the answer is not a JSON list" end
    for _, v in ipairs(list) do out[#out + 1] = v end
    local link = res.headers.link
    next_path = link and link:match('<([^>]+)>%s*;%s*rel="?next"?')
    if next_path and next_path:find("^https?://") then next_path = next_path:match("^https?://[^/]+(/.*)$") end
  end
  return out
end

-- Whether a Harbor answers at ctx.url (GET /api/v2.0/systeminfo, no
-- credentials needed).
function kind.probe(ctx)
  local res = http.request { url = ctx.url .. "/api/v2.0/systeminfo", tls = ctx.tls, timeout = 10,
                             headers = { Accept = "application/json" } }
  if not res or res.status ~= 200 then return false end
  local doc = json.decode(res.body or "")
  return type(doc) == "table" and doc.harbor_version ~= nil
end

-- Lists every repository of every project the credentials can see.
function kind.catalog(creds, ctx)
  local projects, err = pages(ctx, creds, "/api/v2.0/projects?with_detail=false", "listing projects")
  if not projects then return nil, err end
  local out = {}
  for _, p in ipairs(projects) do
    if type(p.name) == "string" then
      local repos, rerr = pages(ctx, creds, "/api/v2.0/projects/" .. url.encode(p.name) .. "/repositories",
                                "listing the repositories of project " .. p.name)
      if not repos then return nil, rerr end
      for _, r in ipairs(repos) do
        if type(r.name) == "string" then out[#out + 1] = r.name end
      end
    end
  end
  table.sort(out)
  return out
end

-- Keeps the tags of repo whose artifact carries every label in
-- filters.labels (Harbor's label filter of a replication rule).
function kind.filter_tags(creds, ctx, repo, tags, filters)
  local project, rest = repo:match("^([^/]+)/(.+)$")
  if not project then return nil, "harbor: " .. repo .. " has no project" end
  local path = string.format("/api/v2.0/projects/%s/repositories/%s/artifacts?with_label=true&with_tag=true",
                             url.encode(project), url.encode(url.encode(rest)))
  local arts, err = pages(ctx, creds, path, "reading the labels of " .. repo)
  if not arts then return nil, err end
  local want = filters.labels or {}
  local ok_tag = {}
  for _, a in ipairs(arts) do
    local have = {}
    for _, l in ipairs(type(a.labels) == "table" and a.labels or {}) do have[l.name] = true end
    local all = true
    for _, w in ipairs(want) do all = all and have[w] == true end
    if all then
      for _, t in ipairs(type(a.tags) == "table" and a.tags or {}) do ok_tag[t.name] = true end
    end
  end
  local out = {}
  for _, t in ipairs(tags) do
    if ok_tag[t] then out[#out + 1] = t end
  end
  return out
end

-- Creates the project of repository repo unless it exists.
function kind.ensure_namespace(creds, ctx, repo)
  local project = repo:match("^([^/]+)/")
  if not project then
    return nil, string.format("harbor: %s has no project: Harbor repositories are project/name", repo)
  end
  local q = "/api/v2.0/projects?project_name=" .. url.encode(project)
  local res, err = call(ctx, creds, "HEAD", q, nil, "checking project " .. project)
  if not res then return nil, err end
  if res.status == 200 then return { project = project, created = false } end
  if res.status ~= 404 then
    return nil, string.format("harbor: checking project %s: HEAD %s: http %d", project, q, res.status)
  end
  local public = (ctx.options or {}).public == "true" and "true" or "false"
  res, err = call(ctx, creds, "POST", "/api/v2.0/projects",
                  { project_name = project, metadata = { public = public } }, "creating project " .. project)
  if not res then return nil, err end
  if res.status == 201 then return { project = project, created = true, public = public == "true" } end
  if res.status == 409 then return { project = project, created = false } end
  return nil, string.format("harbor: creating project %s: POST /api/v2.0/projects: %s", project, harbor_error(res))
end

-- Deletes the artifact dgst of repo (PROJECT/NAME), with its tags, through
-- Harbor's API: {deleted = true}, or {deleted = false} when Harbor has no
-- such artifact, repository or project (404); nil, err otherwise.
function kind.delete(creds, ctx, repo, dgst)
  local project, rest = repo:match("^([^/]+)/(.+)$")
  if not project then
    return nil, string.format("harbor: %s has no project: Harbor repositories are project/name", repo)
  end
  local path = string.format("/api/v2.0/projects/%s/repositories/%s/artifacts/%s",
                             url.encode(project), url.encode(url.encode(rest)), dgst)
  local step = "deleting artifact " .. dgst .. " of " .. repo
  local res, err = call(ctx, creds, "DELETE", path, nil, step)
  if not res then return nil, err end
  if res.status == 200 then return { deleted = true } end
  if res.status == 404 then return { deleted = false } end
  return nil, string.format("harbor: %s: DELETE %s: %s", step, path, harbor_error(res))
end

return kind
