-- serve/policies.lua - /api/v1/policies: what to replicate from where to
-- where, and when. Fields follow Harbor's replication policies: source and
-- target registry, repository and tag include/exclude globs, destination
-- namespace and flattening, trigger (manual, cron, event), override,
-- replicate deletions, enabled, plus the process template, jobs, a
-- bandwidth limit and how many ended executions to keep.
local api = require("serve.api")
local glob = require("glob")
local cron = require("cron")
local runner = require("runner")
local library = require("serve.library")
local retention = require("serve.retention")
local reference = require("oci.reference")

local policies = {}

-- Returns nil when every pattern of v compiles, else why not.
local function check_globs(v)
  for _, p in ipairs(v) do
    local ok, err = pcall(glob.compile, p)
    if not ok or p == "" then return string.format("has a bad pattern %q: %s", p, ok and "empty" or tostring(err)) end
  end
end

-- Returns a check for include patterns: they compile, and each literal one
-- (no glob characters) is a valid name for check_name (reference.repository
-- or reference.tag).
local function check_includes(check_name)
  return function(v)
    local err = check_globs(v)
    if err then return err end
    for _, p in ipairs(v) do
      if not p:find("[%*%?%[%{\\]") then
        local ok, nerr = check_name(p)
        if not ok then return "has " .. nerr end
      end
    end
  end
end

-- Returns nil when v is empty (no namespace) or a valid repository path,
-- else why not.
local function check_namespace(v)
  if v == "" then return nil end
  local ok, err = reference.repository(v)
  if not ok then return "must be a repository path: " .. err end
end

local function check_cron(v)
  local _, err = cron.parse(v)
  if err then return err end
end

local function check_template(v)
  if not v:match("^[%w_%-]+$") then return "must be a template name (letters, digits, '_' or '-')" end
end

local SPEC = {
  name = { type = "string", required = true,
           check = function(v) if v == "" or #v > 128 then return "must be 1-128 characters" end end },
  description = { type = "string", nullable = true },
  source_registry = { type = "integer", required = true },
  target_registry = { type = "integer", required = true },
  repositories = { type = "array", check = check_includes(reference.repository) },
  exclude_repositories = { type = "array", check = check_globs },
  tags = { type = "array", check = check_includes(reference.tag) },
  exclude_tags = { type = "array", check = check_globs },
  labels = { type = "array", check = function(v)
               for _, l in ipairs(v) do if l == "" or #l > 128 then return "has an empty or too long label" end end
             end },
  dest_namespace = { type = "string", nullable = true, check = check_namespace },
  flatten = { type = "integer", check = function(v) if v < -1 then return "must be -1 or more" end end },
  trigger = { type = "string", check = function(v)
                if v ~= "manual" and v ~= "cron" and v ~= "event" then return "must be manual, cron or event" end end },
  cron = { type = "string", nullable = true, check = check_cron },
  override = { type = "boolean" },
  replicate_deletion = { type = "boolean" },
  enabled = { type = "boolean" },
  template = { type = "string", check = check_template },
  jobs = { type = "integer", check = function(v) if v < 1 or v > 256 then return "must be 1..256" end end },
  bandwidth_kbps = { type = "integer", check = function(v) if v < 0 then return "must be 0 (unlimited) or more" end end },
  executor = { type = "string", nullable = true, check = function(v)
                 if v ~= "local" and v ~= "faas" then return "must be local or faas (or null: the daemon's --executor)" end end },
  retries = { type = "integer", nullable = true, check = function(v)
                if v < 0 or v > 100 then return "must be 0..100 (or null: the daemon's --faas-retries)" end end },
  keep_executions = { type = "integer", nullable = true, check = function(v)
                        if v < 0 or v > 1e9 then
                          return "must be 0 (keep all) or more (or null: the daemon's --keep-executions)"
                        end end },
}

-- Column of each list field.
local LISTS = { repositories = "repos", exclude_repositories = "exclude_repos", tags = "tags",
                exclude_tags = "exclude_tags", labels = "labels" }
local PLAIN = { "name", "description", "dest_namespace", "flatten", "trigger", "cron", "template",
                "jobs", "bandwidth_kbps", "executor", "retries", "keep_executions" }
local BOOLS = { "override", "replicate_deletion", "enabled" }

local function decode_list(s)
  local ok, v = pcall(json.decode, s or "[]")
  return ok and type(v) == "table" and v or {}
end

-- The API view of a policy row.
function policies.view(row)
  local v = {
    id = row.id, name = row.name, description = row.description,
    source_registry = row.src_registry, target_registry = row.dst_registry,
    dest_namespace = row.dest_namespace, flatten = row.flatten, trigger = row.trigger,
    cron = row.cron, override = row.override == 1, replicate_deletion = row.replicate_deletion == 1,
    enabled = row.enabled == 1, template = row.template, jobs = row.jobs,
    bandwidth_kbps = row.bandwidth_kbps, created = api.iso(row.created), updated = api.iso(row.updated),
    executor = row.executor or json.null, retries = row.retries or json.null,
    keep_executions = row.keep_executions or json.null,
  }
  for field, col in pairs(LISTS) do v[field] = setmetatable(decode_list(row[col]), json.array_mt) end
  return v
end

-- Loads a policy row by id, or raises 404.
function policies.load(db, id)
  return api.load_row(db, "policies", id, "policy")
end

-- The replication options of a policy row (the shape replicate.plan and the
-- stages read, as `replica run` builds them).
function policies.options(row)
  local v = policies.view(row)
  return {
    repos = v.repositories, exclude_repos = v.exclude_repositories, tags = v.tags,
    exclude_tags = v.exclude_tags, labels = v.labels, dest_namespace = v.dest_namespace, flatten = v.flatten,
    override = v.override, jobs = v.jobs, template = v.template,
    bandwidth = v.bandwidth_kbps > 0 and v.bandwidth_kbps * 1024 or nil,
  }
end

-- Checks the registries exist, the trigger is complete and the executor
-- is one this daemon has; raises 400.
local function check_refs(s, merged)
  local db = s.db
  if merged.executor == "faas" and not s.faas then
    api.fail(400, "field 'executor': this daemon has no FaaS gateway (start it with --gateway; docs/faas.md)")
  end
  for _, f in ipairs({ "source_registry", "target_registry" }) do
    if not db:row("SELECT id FROM registries WHERE id = ?", merged[f]) then
      api.fail(400, "field '%s': registry %d does not exist", f, merged[f])
    end
  end
  local _, terr = runner.template(merged.template or "distribution", library.set(db))
  if terr then api.fail(400, "field 'template' names no usable template: %s", terr) end
  if merged.trigger == "cron" and (merged.cron == nil or merged.cron == json.null) then
    api.fail(400, "a cron trigger needs field 'cron' (5 fields, e.g. \"0 2 * * *\", or Harbor's 6 with seconds first)")
  end
end

local function conflict(name)
  return string.format("a policy named '%s' exists already", tostring(name))
end

-- Writes body's fields into policy id.
local function store_fields(db, id, body)
  local cols = {}
  for _, f in ipairs(PLAIN) do
    if body[f] ~= nil then cols[#cols + 1] = { f, body[f] } end
  end
  for field, col in pairs(LISTS) do
    if body[field] ~= nil then cols[#cols + 1] = { col, json.encode(setmetatable(body[field], json.array_mt)) } end
  end
  for _, f in ipairs(BOOLS) do
    if body[f] ~= nil then cols[#cols + 1] = { f, body[f] and 1 or 0 } end
  end
  if body.source_registry then cols[#cols + 1] = { "src_registry", body.source_registry } end
  if body.target_registry then cols[#cols + 1] = { "dst_registry", body.target_registry } end
  api.update_row(db, "policies", id, cols, conflict(body.name))
end

local function create(s, req)
  local body = api.validate(api.body(req), SPEC)
  check_refs(s, body)
  local now, id = time.now(), nil
  local ok, err = s.db:transaction(function()
    id = select(2, api.write(s.db, conflict(body.name),
      "INSERT INTO policies (name, src_registry, dst_registry, created, updated) VALUES (?, ?, ?, ?, ?)",
      body.name, body.source_registry, body.target_registry, now, now))
    store_fields(s.db, id, body)
    return true
  end)
  if not ok then error(err) end
  return api.reply(req, 201, policies.view(policies.load(s.db, id)))
end

local function update(s, req, p)
  local id = api.id(p.id, "policy")
  local cur = policies.view(policies.load(s.db, id))
  local body = api.validate(api.body(req), SPEC, true)
  local merged = {}
  for k, v in pairs(cur) do merged[k] = v end
  for k, v in pairs(body) do merged[k] = v end
  check_refs(s, merged)
  store_fields(s.db, id, body)
  if body.keep_executions ~= nil then retention.ended(s, id) end -- the new limit applies now
  return api.reply(req, 200, policies.view(policies.load(s.db, id)))
end

local function delete(s, req, p)
  local id = api.id(p.id, "policy")
  policies.load(s.db, id)
  local in_progress = "SELECT id FROM executions WHERE policy = ? AND status IN ('Pending', 'Running') LIMIT 1"
  if s.db:row(in_progress, id) then api.fail(409, "policy %d has an execution in progress; stop it first", id) end
  retention.clear(s, id) -- its executions in batches, yielding between them
  -- a trigger may have come meanwhile: the policy goes only without a run in progress
  local n = assert(s.db:exec([[DELETE FROM policies WHERE id = ?1 AND NOT EXISTS
                               (SELECT 1 FROM executions WHERE policy = ?1 AND status IN ('Pending', 'Running'))]], id))
  if n == 0 and s.db:row("SELECT id FROM policies WHERE id = ?", id) then
    api.fail(409, "policy %d has an execution in progress; stop it first", id)
  end
  return api.reply(req, 204)
end

local function list(s, req)
  local limit, offset = api.paging(req)
  local out = setmetatable({}, json.array_mt)
  for _, row in ipairs(assert(s.db:query("SELECT * FROM policies ORDER BY id LIMIT ? OFFSET ?", limit, offset))) do
    out[#out + 1] = policies.view(row)
  end
  return api.reply(req, 200, out)
end

-- Adds the routes to router r; s is the service state.
function policies.routes(r, s)
  r.add("GET", "/api/v1/policies", function(req) return list(s, req) end)
  r.add("POST", "/api/v1/policies", function(req) return create(s, req) end)
  r.add("GET", "/api/v1/policies/{id}", function(req, p)
    return api.reply(req, 200, policies.view(policies.load(s.db, api.id(p.id, "policy"))))
  end)
  r.add("PUT", "/api/v1/policies/{id}", function(req, p) return update(s, req, p) end)
  r.add("DELETE", "/api/v1/policies/{id}", function(req, p) return delete(s, req, p) end)
end

return policies
