-- taskrun.lua - running one task (a repository and its tags) through a
-- template: what `replica run` and `replica function` share. The result of
-- a task is its stages' results in template order.
local runner = require("runner")

local taskrun = {}

-- Returns a new table shared by the tasks of one run: the stages record
-- there which blobs and manifests the run already copied (so tasks of the
-- same run do not copy them twice), and the size each copied blob has.
function taskrun.shared()
  return { blob_copies = {}, first_copy = {}, manifest_puts = {}, blob_sizes = {} }
end

-- The options stages see: opts without the credentials the command was
-- given (from_creds, to_cred, function_token, their files...): stages reach
-- the registries through the clients, never through the secrets. A new
-- table; opts is not changed.
function taskrun.stage_options(opts)
  local out = {}
  for k, v in pairs(opts or {}) do
    if type(k) ~= "string" or not (k:find("_creds?$") or k:find("_creds?_") or k:find("_token")) then
      out[k] = v
    end
  end
  return out
end

-- The ctx a task's stages see: the task, the two clients, the options
-- (taskrun.stage_options's), the run's shared table, the stages' own data
-- and the progress hook (optional).
function taskrun.context(t, src, dst, opts, run, hook)
  return { task = t, src = src, dst = dst, options = taskrun.stage_options(opts), run = run, data = {},
           progress = hook }
end

-- Runs task t (repository, dest_repository, tags) through template with the
-- clients src and dst, the options opts and the run's shared table run;
-- never raises. view = {task_started(t), stage(t, name), task_done(t, record),
-- hook(kind, value), on_stage(event, name, result), remote (the sender of
-- remote stages, see runner.run)}, each optional. Returns
-- the record: {repository, dest_repository, tags, status, stages}.
function taskrun.run(template, t, src, dst, opts, run, view)
  view = view or {}
  local ctx = taskrun.context(t, src, dst, opts, run, view.hook)
  if view.task_started then view.task_started(t) end
  local results, ok = runner.run(template, ctx, function(ev, name, r)
    if ev == "start" and view.stage then view.stage(t, name) end
    if view.on_stage then view.on_stage(ev, name, r) end
  end, view.remote)
  local record = { repository = t.repository, dest_repository = t.dest_repository,
                   tags = t.tags, status = ok and "succeeded" or "failed", stages = results }
  if view.task_done then view.task_done(t, record) end
  return record
end

return taskrun
