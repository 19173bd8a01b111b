-- serve/preview.lua - POST /api/v1/policies/{id}/preview: a dry run of a
-- policy (goharbor/harbor#4096). It plans as a run of the policy would
-- (replicate.plan over the source, with the policy's filters and naming),
-- then HEADs each selected tag on the source and at its destination on the
-- target and says what the run would do with it: copy, up-to-date or kept
-- (tagplan.action, the rule the push stage applies). Nothing is copied and
-- nothing is written: no execution, no task, no log line in the database.
-- A disabled policy can be previewed too.
local api = require("serve.api")
local policies = require("serve.policies")
local registries = require("serve.registries")
local replicate = require("replicate")
local tagplan = require("tagplan")

local preview = {}

local MAX_TAGS = 10000   -- the most tags one answer lists (?max_tags= lowers it)
local HEADS_AT_ONCE = 16 -- tags looked at concurrently (a source and a target HEAD each)

-- "source registry 'hub' (https://registry-1.docker.io)".
local function named(side, row)
  return string.format("%s registry '%s' (%s)", side, row.name, row.url)
end

-- Loads the registry row id of the policy's side ("source" or "target")
-- and builds its client; raises 502 when that fails.
local function side_client(s, side, id)
  local row = s.db:row("SELECT * FROM registries WHERE id = ?", id)
  if not row then api.fail(409, "the %s registry %d of the policy does not exist", side, id) end
  local client, err = registries.client(s, row)
  if not client then api.fail(502, "%s: %s", named(side, row), err) end
  return client, row
end

-- Parses ?max_tags= (1..MAX_TAGS); raises 400 otherwise.
local function max_tags(req)
  local v = (req.query or {}).max_tags
  if v == nil then return MAX_TAGS end
  local n = math.tointeger(tonumber(v))
  if not n or n < 1 or n > MAX_TAGS then api.fail(400, "max_tags must be 1..%d", MAX_TAGS) end
  return n
end

-- The planned tasks as one list of { task, tag }, at most limit long;
-- returns it and whether tags were left out.
local function flatten(tasks, limit)
  local items = {}
  for _, t in ipairs(tasks) do
    for _, tag in ipairs(t.tags) do
      if #items == limit then return items, true end
      items[#items + 1] = { task = t, tag = tag }
    end
  end
  return items, false
end

local function run(s, req, p)
  local row = policies.load(s.db, api.id(p.id, "policy"))
  local limit = max_tags(req)
  local opts = policies.options(row)
  local src, src_row = side_client(s, "source", row.src_registry)
  local dst, dst_row = side_client(s, "target", row.dst_registry)

  local tasks, perr, kind = replicate.plan(src, opts)
  if not tasks and kind == "options" then
    api.fail(409, "policy %d cannot be planned: %s", row.id, perr)
  elseif not tasks then
    api.fail(502, "%s: %s", named("source", src_row), perr)
  end
  local items, truncated = flatten(tasks, limit)

  -- The digest compared is the source tag's manifest digest, the one the
  -- push stage pushes: serve policies have no platform filter (which would
  -- narrow an index to another digest).
  local found, herr = parallel.map(items, function(it)
    local sh, serr = src:head_manifest(it.task.repository, it.tag)
    if sh == nil then
      return nil, string.format("%s: %s:%s: %s", named("source", src_row), it.task.repository, it.tag, serr)
    end
    if not sh then -- deleted since the tag list: a run would not find it either
      log.info("preview of policy %d: %s:%s is gone from the source", row.id, it.task.repository, it.tag)
      return false
    end
    local th, terr = dst:head_manifest(it.task.dest_repository, it.tag)
    if th == nil then
      return nil, string.format("%s: %s:%s: %s", named("target", dst_row), it.task.dest_repository, it.tag, terr)
    end
    return { tag = it.tag, digest = sh.digest, target_digest = th and th.digest or json.null,
             action = tagplan.action(sh.digest, th, opts.override) }
  end, { limit = HEADS_AT_ONCE })
  if not found then api.fail(502, "%s", herr) end

  local totals = { repositories = 0, tags = 0, copy = 0, up_to_date = 0, kept = 0 }
  local counter = { copy = "copy", ["up-to-date"] = "up_to_date", kept = "kept" }
  local repos, by_task = setmetatable({}, json.array_mt), {}
  for i, it in ipairs(items) do
    local entry = found[i]
    if entry then
      local r = by_task[it.task]
      if not r then
        r = { repository = it.task.repository, dest_repository = it.task.dest_repository,
              tags = setmetatable({}, json.array_mt) }
        by_task[it.task] = r
        repos[#repos + 1] = r
      end
      r.tags[#r.tags + 1] = entry
      totals.tags = totals.tags + 1
      totals[counter[entry.action]] = totals[counter[entry.action]] + 1
    end
  end
  totals.repositories = #repos
  return api.reply(req, 200, { repositories = repos, totals = totals, truncated = truncated })
end

-- Adds the route to router r; s is the service state (db, keyring).
function preview.routes(r, s)
  r.add("POST", "/api/v1/policies/{id}/preview", function(req, p) return run(s, req, p) end)
end

return preview
