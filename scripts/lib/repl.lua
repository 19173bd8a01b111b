-- repl.lua - `replica repl`: a debugger for one replication task. It runs
-- the task's stages one at a time through the runner's session (the code
-- `replica run` and `serve` run them with), pauses between stages and at
-- breakpoints in stage code, evaluates Lua at the prompt in the task's
-- sandbox, traces HTTP, reloads edited stages, and replays a task that
-- `replica serve` stored. The terminal, the event queue and the debugger
-- are C (sys.repl, sys.dbg); see docs/repl.md.
local runner = require("runner")
local taskrun = require("taskrun")
local setup = require("repl.setup")
local eval = require("repl.eval")
local commands = require("repl.commands")
local took = require("repl.pretty").duration

local repl = {}

-- The session: everything the commands work on.
local S = {}
local R, D -- sys.repl, sys.dbg

-- Prints text (to stdout, above the prompt).
local function say(fmt, ...)
  R.print(select("#", ...) > 0 and string.format(fmt, ...) or fmt)
end
S.say = say


-- The index of the current stage: the one running or paused, else the one
-- that failed, else the next to run.
function S.current()
  if S.job then return S.stage_started end
  if not S.run.ok then return S.run.pos - 1 end
  return S.run.pos
end

-- The index of the stage named name in the session, or nil.
function S.stage_index(name)
  for i, st in ipairs(S.run.stages) do
    if st.name == name then return i end
  end
end

-- One line about a stage's record.
local function report(r)
  if not r then return end
  if r.status == "succeeded" then
    say("[stage] %s: succeeded in %s", r.name, took(r))
  else
    say("[stage] %s: %s in %s: %s", r.name, r.status, took(r), tostring(r.error))
  end
end

-- Starts fn as the session's job (a trusted task that runs a stage or the
-- prompt's code) and waits for it; see wait_job.
local function start_job(name, fn)
  S.job_n = (S.job_n or 0) + 1
  local n = S.job_n
  local job = { n = n, name = name }
  S.job = job
  job.handle = task.spawn({ name = name }, function()
    local res = table.pack(pcall(fn))
    job.result = res[1] and table.pack(table.unpack(res, 2, res.n)) or { nil, res[2] }
    R.post("job", n)
  end)
end

-- Takes the oldest queued pause still in effect as the current one;
-- returns its id, or nil.
local function next_pause()
  while #S.pauses > 0 do
    local q = table.remove(S.pauses, 1)
    if D.info(q.id) then
      S.pause, S.pause_why = q.id, q.why
      return q.id
    end
  end
end

-- "file:line" of a pause (dbg.info's table).
local function where(info)
  return string.format("%s:%d", (info.source or "?"):gsub("^@", ""), info.line)
end

-- Shows where the current pause stopped.
local function show_pause()
  local info = D.info(S.pause)
  if not info then return end
  S.frame = 0
  say("[paused] %s: %s (%s)", S.job and S.job.stage or info.task, where(info), S.pause_why or "paused")
  commands.show_line(S, info)
end

-- A stage task paused (event "paused"): it becomes the current pause when
-- there is none (returns true), else it waits in the queue, announced.
local function on_pause(id, why)
  if not S.pause then
    S.pause, S.pause_why = id, why
    show_pause()
    return true
  end
  S.pauses[#S.pauses + 1] = { id = id, why = why }
  local info = D.info(id)
  if info then say("[paused] also task %s at %s (%s): shown once this pause goes on", info.task, where(info), why) end
  return false
end

-- Waits for the job: returns "done" when it ended, "paused" when a stage
-- task paused (S.pause set). Ctrl-C cancels the job (its stage and the
-- stage's transfers) and waits for it to end.
local function wait_job()
  while S.job do
    local kind, id, text = R.next()
    if kind == nil then -- the REPL itself is cancelled (SIGTERM): its tasks end with it
      S.last_job, S.job = { result = { nil, "cancelled" } }, nil
      return "done"
    elseif kind == "job" and id == S.job.n then
      S.last_job = S.job
      S.job = nil
      return "done"
    elseif kind == "paused" then
      if on_pause(id, text) then return "paused" end
    elseif kind == "interrupt" then
      if not S.job.cancelled then
        S.job.cancelled = true
        say("[interrupt] stopping %s", S.job.stage and ("stage " .. S.job.stage) or S.job.name)
        S.job.handle:cancel()
      end
    end
  end
  return "done"
end

-- Runs the next stage as the job and waits for it. Returns "paused", or
-- its record (reported), or nil when the job failed (said).
local function step_job()
  local st = S.run.stages[S.run.pos]
  S.stage_started = S.run.pos
  start_job("repl stage " .. st.name, function() return S.run:step() end)
  S.job.stage = st.name
  if wait_job() == "paused" then return "paused" end
  D.mute(false)
  local r = S.last_job.result[1]
  if not r then
    say("[error] %s", tostring(S.last_job.result[2]))
    return nil
  end
  report(r)
  return r
end

-- Whether a stage breakpoint is set on stage name.
local function stage_break(name)
  for _, b in ipairs(S.breaks) do
    if b.stage == name then return b end
  end
end

-- Runs stages: one ("step"), or until a stage breakpoint, a pause, a
-- failure or the end ("continue"). first: the stage about to run is where
-- the user stands, so its own stage breakpoint does not stop it.
local function go(mode, first)
  S.mode = mode
  if S.loaded and not S.rebuild(S.run.pos) then return end
  while true do
    local st = S.run.stages[S.run.pos]
    if not st or not S.run.ok then
      local failed = runner.failure(S.run.results)
      if S.run.pos > #S.run.stages and S.run.ok then say("[done] every stage succeeded")
      elseif failed then say("[done] the task failed: %s", failed) end
      return
    end
    if not first and stage_break(st.name) then
      say("[break] before stage %s (%d/%d)", st.name, S.run.pos, #S.run.stages)
      return
    end
    first = false
    local r = step_job()
    if r == "paused" then return end
    if not r then return end
    if r.status == "cancelled" then -- interrupted: the stage is the next one again
      S.run:rewind(S.stage_started)
      return
    end
    if mode == "step" or r.status ~= "succeeded" then
      if r.status == "succeeded" and S.run.pos > #S.run.stages then say("[done] every stage succeeded") end
      return
    end
  end
end
S.go = go

-- Runs stages 1..i-1 again, since a stored task's results do not hold
-- ctx.data (what the stages keep in memory for the later ones: manifests,
-- say). Returns true when they succeeded and stage i is next.
function S.rebuild(i)
  S.loaded = false
  if i <= 1 then return true end
  say("[replay] the database keeps no ctx.data (what stages hold in memory): running stages 1-%d again first", i - 1)
  S.run:rewind(1)
  while S.run.pos < i do
    local r = step_job()
    if r == "paused" or not r or r.status ~= "succeeded" then return false end
  end
  return true
end

-- Resumes the current pause: "continue" (to the next breakpoint, then on
-- through the stages), "next", "step", or "finish" (the rest of the stage,
-- breakpoints muted). A continue shows the next queued pause, if any; else
-- it waits as go does.
function S.resume(how)
  local id = S.pause
  S.pause = nil
  if how == "finish" then
    D.mute(true)
    D.resume(id, "continue")
  else
    D.resume(id, how)
  end
  if (how == "continue" or how == "finish") and next_pause() then
    show_pause()
    return
  end
  if wait_job() == "paused" then return end
  D.mute(false)
  local r = S.last_job.result[1]
  report(r)
  if r and r.status == "cancelled" then return S.run:rewind(S.stage_started) end
  if r and r.status == "succeeded" and how == "continue" and S.mode == "continue" then go("continue") end
end

-- Cancels the job (a paused or running stage) and waits for it to end.
function S.abandon()
  while S.job do -- a pause announced before the cancel may come in first
    S.job.cancelled = true
    S.job.handle:cancel()
    S.pauses, S.pause = {}, nil
    wait_job()
  end
  S.pause = nil
  D.mute(false)
end

-- Runs Lua text at the prompt; prints its values or its error. At a pause
-- the code sees the paused frame's locals; the paused stage stays paused.
function S.evaluate(src)
  S.vars.ctx, S.vars.results = S.ctx, S.ctx.results
  local cur = S.current()
  S.vars.input = cur > 1 and S.run.results[cur - 1].output or nil
  local frame
  if S.pause then frame = D.env(S.pause, S.frame or 0, S.vars) end
  local outer = S.job -- a paused stage's job: the prompt's code runs beside it
  start_job("repl prompt", function()
    return sandbox.spawn({ name = "prompt" }, S.eval_body, src, S.vars, frame, S.maxlen):wait()
  end)
  local w = wait_job()
  if w == "paused" then -- the prompt's own code paused (it called a stage's function)
    S.job = outer
    return
  end
  S.job = outer
  local res = S.last_job.result
  local done, ok, text = res[1], res[2], res[3]
  if not done then
    say("error: %s", tostring(ok))
  elseif not ok then
    say("error: %s", tostring(text))
  elseif text then
    say("%s", text)
  end
end

-- The words Tab completes: commands, stage names, ctx's fields, globals.
local function words()
  local w = commands.names()
  for _, st in ipairs(S.run.stages) do w[#w + 1] = st.name end
  for k in pairs(S.ctx) do w[#w + 1] = "ctx." .. k end
  for _, k in ipairs({ "ctx", "input", "results", "json", "log", "time", "http", "digest", "base64",
                       "task", "parallel", "string", "table", "math", "pairs", "ipairs", "print",
                       "tostring", "tonumber", "type", "require", "pcall", "select", "next" }) do
    w[#w + 1] = k
  end
  for k in pairs(S.vars) do if type(k) == "string" then w[#w + 1] = k end end
  return w
end

-- The prompt: the next stage, or the paused line.
local function prompt()
  if S.pause then
    local info = D.info(S.pause)
    if info then return string.format("repl %s:%d> ", S.job and S.job.stage or "?", info.line) end
  end
  local st = S.run.stages[S.current()]
  return string.format("repl %s> ", st and st.name or "(end)")
end

-- Loads the stored results (replay): the stages before the first that did
-- not succeed count as done, and the session stands at that stage.
function S.load_stored()
  local stored = S.task.stored
  if not stored then return end
  local at
  for i, r in ipairs(stored) do
    local j = S.stage_index(r.name)
    if j then
      S.run.results[j] = { name = r.name, ["function"] = r["function"], status = r.status, started = r.started,
                           finished = r.finished, error = r.error, output = r.output }
      if r.status == "succeeded" then S.ctx.results[r.name] = r.output end
      if r.status ~= "succeeded" and not at then at = j end
    end
    if i == #stored and not at then at = #stored + 1 end
  end
  S.run.pos = at or 1
  S.run.ok = true
  S.loaded = true
end

-- The `replica repl` entry point; returns the exit code.
function repl.main(opts, sys)
  R, D = sys.repl, sys.dbg
  S.R, S.D, S.sys = R, D, sys
  local t, err = setup.load(opts, sys)
  if not t then return nil, err end
  S.task, S.template, S.set, S.opts = t, t.template, t.set, t.opts
  S.ctx = taskrun.context(t.task, t.src, t.dst, t.opts, taskrun.shared())
  local run, rerr = runner.session(t.template, S.ctx)
  if not run then return nil, rerr end
  S.run = run
  S.vars, S.breaks, S.pauses, S.maxlen, S.frame = {}, {}, {}, 4000, 0
  S.eval_body = eval.runner(run.box)
  if opts.dry then
    R.dry(t.dst_url)
    S.dry = true
  end
  D.on()
  local interactive = R.open({})
  S.interactive = interactive
  S.load_stored()
  say("replica repl: %s -> %s, template %s, %d stage(s)%s", t.task.repository, t.task.dest_repository,
      t.template.name, #run.stages, S.dry and ", dry mode (no writes to the target)" or "")
  say("  tags: %s", table.concat(t.task.tags, ", "))
  if t.stored then say("  loaded %s; next: %s", t.source, (run.stages[run.pos] or {}).name or "(end)") end
  if interactive then say("  :help lists the commands; Lua works too; an empty line repeats :step/:next") end
  local pending = ""
  while true do
    R.words(words())
    R.prompt(pending ~= "" and ".... " or prompt())
    local kind, _, text = R.next()
    if kind == nil or kind == "eof" then break end -- nil: cancelled (SIGTERM)
    if kind == "paused" then
      on_pause(_, text)
    elseif kind == "line" then
      local line = text
      if pending ~= "" and line:match("^%s*:") then
        say("error: an unfinished Lua statement was dropped: %s", (pending:gsub("\n", " ")))
        pending = ""
      end
      if pending ~= "" then
        line = pending .. "\n" .. text
        pending = ""
        local st, src = eval.compile(line)
        if st == "incomplete" then pending = line
        elseif st == "error" then say("error: %s", src)
        else S.evaluate(src) end
      elseif line:match("^%s*$") then
        if S.last_cmd then commands.run(S, S.last_cmd) end
      elseif line:match("^%s*:") then
        local c = line:match("^%s*(.-)%s*$")
        local name = c:match("^:(%S+)")
        if name == "s" or name == "step" or name == "n" or name == "next" then S.last_cmd = c else S.last_cmd = nil end
        if commands.run(S, c) == "quit" then break end
      else
        S.last_cmd = nil
        local st, src = eval.compile(line)
        if st == "incomplete" then pending = line
        elseif st == "error" then say("error: %s", src)
        else S.evaluate(src) end
      end
    end
  end
  S.abandon()
  R.close()
  return 0
end

return repl
