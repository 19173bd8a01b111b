-- repl/setup.lua - the task a `replica repl` session debugs: from the
-- command line (the registries, credentials and naming of `replica run`,
-- one repository), or from a `replica serve` database (--db, --execution,
-- --task: the policy, its registries, the pinned scripts and the stored
-- stage results). Either way the session gets the same thing:
--   { template, task, src, dst, opts, set, stored (list of stored stage
--     records, or nil), source (what the task came from, for the banner) }
local replicate = require("replicate")
local runner = require("runner")
local scriptset = require("scriptset")

local setup = {}

-- A script set over the files whose entries carry their source and sha256,
-- so the REPL knows what it runs (and :reload what changed). Cached in the
-- engine by hash, so reloading an unchanged file costs no compile.
function setup.files()
  local files = scriptset.files()
  return {
    id = "repl files",
    get = function(kind, name)
      local e, err = files.get(kind, name)
      if not e then return nil, err end
      return scriptset.materialize(e)
    end,
    list = files.list,
  }
end

-- The task from the command line: one repository (--repo, a name), its
-- tags (--tag globs, all by default).
local function from_flags(opts)
  local ok, oerr = replicate.options(opts)
  if not ok then return nil, oerr end
  local repos = opts.repos or {}
  if #repos ~= 1 or repos[1]:find("[%*%?%[%{\\]") then
    return nil, "--repo names the one repository to debug (a name, not a glob)"
  end
  local set = setup.files()
  local template, terr = runner.template(opts.template or "distribution", set)
  if not template then return nil, terr end
  local src, dst, src_spec = replicate.endpoints(opts)
  if not src then return nil, dst end
  local tasks, perr = replicate.plan(src, opts)
  if not tasks then return nil, perr end
  if #tasks == 0 then return nil, string.format("no tags of %s match the tag filters", repos[1]) end
  return { template = template, task = tasks[1], src = src, dst = dst, opts = opts, set = set,
           dst_url = opts.to, source = src_spec.url }
end

-- The task execution opts.execution ran in the database opts.db (opts.task,
-- else its first failed task, else its first).
local function from_db(opts, sys)
  local serve = require("serve")
  local policies = require("serve.policies")
  local registries = require("serve.registries")
  local library = require("serve.library")
  local exec_id = math.tointeger(tonumber(opts.execution))
  if not exec_id then return nil, "--execution must be an execution id" end
  if not sys.repl.exists(opts.db) then return nil, "--db: no database at " .. opts.db end
  local db, derr = sys.db_open(opts.db)
  if not db then return nil, "--db: " .. tostring(derr) end
  local keyring, kerr = serve.load_key(sys, db, opts.db, opts.key_file or (opts.db .. ".key"))
  if not keyring then return nil, kerr end
  local s = { db = db, keyring = keyring, sys = sys }
  local e = db:row("SELECT * FROM executions WHERE id = ?", exec_id)
  if not e then return nil, string.format("execution %d is not in %s", exec_id, opts.db) end
  local row
  if opts.task then
    row = db:row("SELECT * FROM tasks WHERE id = ? AND execution = ?", math.tointeger(tonumber(opts.task)) or -1, exec_id)
    if not row then return nil, string.format("task %s is not a task of execution %d", opts.task, exec_id) end
  else
    row = db:row([[SELECT * FROM tasks WHERE execution = ? ORDER BY status <> 'Failed', id LIMIT 1]], exec_id)
    if not row then return nil, string.format("execution %d has no tasks", exec_id) end
  end
  local p = db:row("SELECT * FROM policies WHERE id = ?", e.policy)
  if not p then return nil, "the execution's policy was deleted" end
  local popts = policies.options(p)
  -- The execution's pins of versions stored in the daemon (made in the
  -- console or the API) over the files: a bundled or file stage runs from
  -- the disk, where it is being edited.
  local stored_pins = {}
  for _, e in ipairs(library.pins(db, exec_id)) do
    if e.origin ~= "bundled" then stored_pins[#stored_pins + 1] = e end
  end
  local set = scriptset.overlay(setup.files(), scriptset.of(stored_pins))
  local template, terr = runner.template(p.template or "distribution", set)
  if not template then return nil, terr end
  local src_row = db:row("SELECT * FROM registries WHERE id = ?", p.src_registry)
  local dst_row = db:row("SELECT * FROM registries WHERE id = ?", p.dst_registry)
  if not src_row or not dst_row then return nil, "a registry of the policy was deleted" end
  local src, serr = registries.client(s, src_row)
  if not src then return nil, serr end
  local dst, dserr = registries.client(s, dst_row, { max_speed = popts.bandwidth })
  if not dst then return nil, dserr end
  local stored = {}
  for _, r in ipairs(assert(db:query("SELECT * FROM stage_results WHERE task = ? ORDER BY seq", row.id))) do
    stored[#stored + 1] = { name = r.name, ["function"] = r["function"], status = r.status, started = r.started,
                            finished = r.finished, error = r.error,
                            output = r.output and json.decode(r.output) or nil }
  end
  local t = { repository = row.repository, dest_repository = row.dest_repository,
              tags = json.decode(row.tags) or {}, kind = row.kind }
  return { template = template, task = t, src = src, dst = dst, opts = popts, set = set, stored = stored,
           dst_url = dst_row.url, db = db,
           source = string.format("execution %d, task %d (%s), policy %s", exec_id, row.id, row.status, p.name) }
end

-- Builds the session's task from opts (sys for the database and keyring).
-- Returns the table above, or nil, err.
function setup.load(opts, sys)
  if opts.db or opts.execution then
    if not (opts.db and opts.execution) then return nil, "--db and --execution go together" end
    return from_db(opts, sys)
  end
  return from_flags(opts)
end

return setup
