-- runner.lua - runs a process template's stages for one task, in order, and
-- records each stage's result: name, function, status, started, finished,
-- output, error. A stage fails by raising or by returning nil, err (an
-- optional third value is kept as its output); the stages after it are
-- recorded as skipped. Where each function and template comes from is a
-- script set (scriptset.lua): the files by default; each result records the
-- version of the function that ran.
local scriptset = require("scriptset")

local runner = {}

local files = scriptset.files()
local stage_cache, template_cache = {}, {} -- of the files set only

-- Runs fn(...) as a sandboxed task named name, with the engine's per-task
-- limits; returns its outcome: true, results... or nil, err.
local function sandboxed(name, fn, ...)
  return sandbox.spawn({ name = name }, fn, ...):wait()
end

-- An error value as a message. Runs inside the sandbox: a table's
-- __tostring is script code.
local function message(v)
  if type(v) == "string" then return v end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "(an error value of type " .. type(v) .. ")"
end

-- Compiles entry e (a script set's) into the sandbox context box, not run:
-- from its source when it has one, else from its file.
local function compile(box, e)
  if e.source then
    return box:load(e.source, "@" .. e.kind .. "/" .. e.name .. ".lua", e.sha256 or digest.sha256(e.source))
  end
  return box:compile(e.kind, e.name)
end

-- Loads stage entry e into the sandbox context box (its top-level code
-- runs as a sandboxed task). Returns its run function and description, or
-- nil, err.
local function load_stage(box, e)
  local name = e.name
  local chunk, err = compile(box, e)
  if not chunk then return nil, err end
  local ok, run, desc = sandboxed("load stage " .. name, function()
    local st = chunk()
    if type(st) ~= "table" or type(rawget(st, "run")) ~= "function" then return false end
    local d = rawget(st, "description")
    return rawget(st, "run"), type(d) == "string" and d or nil
  end)
  if not ok then return nil, string.format("stages/%s.lua: %s", name, run) end
  if not run then
    return nil, string.format("stage '%s' must return a table with a run function", name)
  end
  return run, desc
end

-- The body of a stage's task: runs the stage; returns ok, output, err with
-- err a string.
local function stage_entry(run, ctx, input)
  local ok, out, err, partial = xpcall(run, task.locate, ctx, input)
  if not ok then return false, nil, message(out) end
  if out == nil and err ~= nil then return false, partial, message(err) end
  return true, out
end

-- Runs stage function fn (an entry of a script set, or a name in the files)
-- loaded into box (a fresh context when nil) as a sandboxed task named
-- "stage <label>". Returns ok, output, err; the output is a plain copy of
-- what the stage returned.
function runner.call(fn, ctx, input, box, label)
  local e = fn
  if type(fn) == "string" then
    local ferr
    e, ferr = files.get("stages", fn)
    if not e then return false, nil, ferr end
  end
  local name = e.name
  local run, lerr = load_stage(box or sandbox.new(), e)
  if not run then return false, nil, lerr end
  local done, ok, out, err = sandboxed("stage " .. (label or name), stage_entry, run, ctx, input)
  if not done then return false, nil, ok end
  if out ~= nil then
    local copy, cerr = sandbox.plain(out, "stage output")
    if cerr then return false, nil, cerr end
    out = copy
  end
  return ok, out, err
end

-- Checks a stage function by name ("distribution/pull") in set (the files
-- when nil): it loads and returns a table with a run function. Returns
-- { name, description, entry, run }, whose run(ctx, input) runs the stage
-- as runner.call does and returns output | nil, err, partial output.
function runner.stage(name, set)
  local cache = not set or set == files
  if cache and stage_cache[name] then return stage_cache[name] end
  local e, gerr = (set or files).get("stages", name)
  if not e then return nil, gerr end
  local run, desc = load_stage(sandbox.new(), e)
  if not run then return nil, desc end
  local st = { name = name, description = desc, entry = e }
  function st.run(ctx, input)
    local ok, out, err = runner.call(e, ctx, input)
    if ok then return out end
    return nil, err, out
  end
  if cache then stage_cache[name] = st end
  return st
end

-- Runs a template entry's code as a sandboxed task and returns the plain
-- data it returned, or nil, err.
function runner.template_data(e)
  local chunk, err = compile(sandbox.new(), e)
  if not chunk then return nil, err end
  local ok, tpl = sandboxed("load template " .. e.name, chunk)
  if not ok then return nil, string.format("templates/%s.lua: %s", e.name, tpl) end
  return sandbox.plain(tpl, "template '" .. e.name .. "'")
end

-- Loads and checks a template by name from set (the files when nil); every
-- stage it names must exist in the set. Its code runs as a sandboxed task,
-- and only the plain data it returns is kept. Returns { name, description,
-- source, target, entry, stages = { {name=, fn=, remote=, entry=} } }.
function runner.template(name, set)
  local cache = not set or set == files
  if cache and template_cache[name] then return template_cache[name] end
  local e, gerr = (set or files).get("templates", name)
  if not e then return nil, gerr end
  local data, perr = runner.template_data(e)
  if perr then return nil, perr end
  local out, terr = runner.template_from(name, data, set)
  if not out then return nil, terr end
  out.entry = e
  if cache then template_cache[name] = out end
  return out
end

-- Checks a template table (as a template script returns it) named name,
-- whose functions come from set (the files when nil). An optional
-- delete_stages list runs for deletion tasks.
function runner.template_from(name, tpl, set)
  if type(tpl) ~= "table" or type(tpl.stages) ~= "table" or #tpl.stages == 0 then
    return nil, string.format("template '%s' must return a table with a list of stages", name)
  end
  local out = { name = name, description = tpl.description, source = tpl.source,
                target = tpl.target, stages = {} }
  local seen = {}
  for i, s in ipairs(tpl.stages) do
    local sname, fn, remote = s[1], s[2], s.remote
    if type(sname) ~= "string" or (type(fn) ~= "string" and type(remote) ~= "string") then
      return nil, string.format("template '%s': stage %d must be { name, function } or { name, remote = url }", name, i)
    end
    if seen[sname] then
      return nil, string.format("template '%s': stage name '%s' is used twice", name, sname)
    end
    seen[sname] = true
    local entry
    if fn then
      local st, serr = runner.stage(fn, set)
      if not st then return nil, string.format("template '%s': %s", name, serr) end
      entry = st.entry
    end
    out.stages[i] = { name = sname, fn = fn, remote = remote, entry = entry }
  end
  if tpl.delete_stages ~= nil then
    local dtpl, derr = runner.template_from(name .. " (delete_stages)", { stages = tpl.delete_stages }, set)
    if not dtpl then return nil, derr end
    out.delete_stages = dtpl.stages
  end
  return out
end

-- Calls a stage that runs on a FaaS platform: POST {stage, task, input} as
-- JSON, the response body is the output.
local function call_remote(url, stage_name, ctx, input)
  local body = json.encode({ stage = stage_name, task = ctx.task, options = ctx.options, input = input })
  local res, err, detail = http.request{ method = "POST", url = url, body = body,
    headers = { ["Content-Type"] = "application/json" }, timeout = 300 }
  if not res then return nil, string.format("remote stage %s: %s (%s)", url, err, detail) end
  if res.status < 200 or res.status > 299 then
    return nil, string.format("remote stage %s: http %d %s", url, res.status, res.body:sub(1, 200))
  end
  if res.body == "" then return {} end
  local out, jerr = json.decode(res.body)
  if out == nil then return nil, "remote stage " .. url .. ": invalid JSON: " .. jerr end
  return out
end

-- Runs one stage, catching errors. A remote stage goes to remote(s, ctx,
-- input) when the caller gave that (faas/dispatch.lua's stage sender: the
-- token, sealed credentials and attempts), else as a bare POST. Returns ok,
-- output, err and, for a remote stage, the attempts it took.
local function run_stage(s, ctx, input, box, remote)
  if s.remote and remote then return remote(s, ctx, input) end
  if s.remote then
    local out, err = call_remote(s.remote, s.name, ctx, input)
    return out ~= nil, out, err
  end
  return runner.call(s.entry or s.fn, ctx, input, box, s.name)
end

-- What every run of stages for a task sets up in ctx: plain options, its
-- own forks of the registry clients, the results table. Returns a fresh
-- sandbox context for the task's stages.
local function prepare(ctx)
  ctx.results = ctx.results or {}
  ctx.options = assert(sandbox.plain(ctx.options or {}, "options"))
  if ctx.src and ctx.src.fork then ctx.src = ctx.src:fork() end
  if ctx.dst and ctx.dst.fork then ctx.dst = ctx.dst:fork() end
  return sandbox.new()
end

-- Runs one stage of template, by name, for ctx with input (the one-stage
-- invocation of `replica function`): the stage runs here even when the
-- template marks it remote, since this is where it was sent. Returns the
-- stage's result record, or nil, err when the template has no such stage
-- with a function.
function runner.run_one(template, name, ctx, input)
  local st
  for _, s in ipairs(template.stages) do
    if s.name == name then st = s end
  end
  if not st then return nil, string.format("template '%s' has no stage '%s'", template.name, name) end
  if not st.fn then
    return nil, string.format("stage '%s' of template '%s' names no function to run here", name, template.name)
  end
  local box = prepare(ctx)
  local r = { name = name, ["function"] = st.fn, function_version = st.entry and st.entry.version,
              function_origin = st.entry and st.entry.origin, started = time.now() }
  local ok, out, err = runner.call(st.entry or st.fn, ctx, input, box, name)
  r.finished, r.output = time.now(), out
  if ok then r.status = "succeeded" else r.status, r.error = task.cancelled() and "cancelled" or "failed", err end
  return r
end

-- The failure of a task's stage results (runner.run's, or a function's
-- answer): "stage: error" of the first stage that failed or was cancelled,
-- or nil when none did.
function runner.failure(results)
  for _, r in ipairs(results) do
    if r.status == "failed" or r.status == "cancelled" then return r.name .. ": " .. tostring(r.error) end
  end
end

-- Starts a run of the template's stages for ctx (its delete_stages when
-- ctx.task.kind is "delete"), taken one stage at a time: runner.run's loop,
-- and `replica repl`'s. Returns a session, or nil, err:
--   s.stages      the stages run, in template order
--   s.results     a record per stage (every one "skipped" until it runs)
--   s.pos         the index of the next stage to run
--   s.ok          whether every stage so far succeeded
--   s:step()      runs the next stage when the run can go on, and returns
--                 its record (nil when it cannot: at the end, or after a
--                 failure)
--   s:rewind(i)   makes stage i the next, keeping the results before it;
--                 the stages from i on are "skipped" again
--   s:use(stages) runs these stages from now on (the same names, reloaded)
-- Each stage runs as its own sandboxed task, with fresh instances of the
-- modules the task's stages require (one context per task), and gets its
-- own copy of the options and its own clients of the two registries (forks
-- of ctx.src and ctx.dst). hook(event, stage_name, result), if given, is
-- called on "start" and "end"; remote (optional) sends the remote stages
-- (see run_stage).
function runner.session(template, ctx, hook, remote)
  local stages = template.stages
  if ctx.task and ctx.task.kind == "delete" then
    stages = template.delete_stages
    if not stages then return nil, "template '" .. template.name .. "' has no delete_stages" end
  end
  local s = { stages = stages, results = {}, pos = 1, ok = true }
  s.box = prepare(ctx) -- the REPL's :reload puts a fresh context here

  -- A fresh "skipped" record for stage i.
  local function skipped(i)
    local st = s.stages[i]
    return { name = st.name, ["function"] = st.fn or st.remote, status = "skipped",
             function_version = st.entry and st.entry.version, function_origin = st.entry and st.entry.origin }
  end
  for i = 1, #stages do s.results[i] = skipped(i) end

  function s:step()
    local i = self.pos
    if not self.ok or i > #self.stages then return nil end
    local st, r = self.stages[i], skipped(i)
    self.results[i], self.pos = r, i + 1
    if task.cancelled() then
      r.status, r.error, self.ok = "cancelled", "cancelled", false
      return r
    end
    local input
    if i > 1 then input = self.results[i - 1].output end
    r.started = time.now()
    if hook then hook("start", st.name, r) end
    local ok, out, err, attempts = run_stage(st, ctx, input, self.box, remote)
    r.finished, r.attempts = time.now(), attempts
    r.output = out
    if ok then
      r.status = "succeeded"
      ctx.results[st.name] = out
    else
      r.status = task.cancelled() and "cancelled" or "failed"
      r.error = err
      self.ok = false
    end
    if hook then hook("end", st.name, r) end
    return r
  end

  function s:rewind(i)
    for j = i, #self.stages do
      ctx.results[self.stages[j].name] = nil
      self.results[j] = skipped(j)
    end
    self.pos, self.ok = i, true
    for j = 1, i - 1 do self.ok = self.ok and self.results[j].status == "succeeded" end
  end

  function s:use(list)
    self.stages = list
  end
  return s
end

-- Runs the template's stages for ctx, as runner.session takes them, until
-- one fails (the stages after it are recorded as skipped). Returns results
-- (a list in template order) and whether every stage succeeded.
function runner.run(template, ctx, hook, remote)
  local s, err = runner.session(template, ctx, hook, remote)
  if not s then return { { name = "delete", status = "failed", error = err } }, false end
  while s:step() do end
  return s.results, s.ok
end

return runner
