-- repl/commands.lua - the colon commands of `replica repl`, each a
-- function of the session S (repl.lua) and its argument text. The table
-- below is also :help's text and Tab's list.
local pretty = require("repl.pretty")
local runner = require("runner")

local commands = {}

-- name, alias, argument, help.
local LIST = {
  { "stages", nil, "", "the template's stages, their status and duration; > marks the current one" },
  { "step", "s", "", "run the next stage and pause (at a line pause: step into the next line)" },
  { "next", "n", "", "at a line pause: run to the next line of this function (step over)" },
  { "finish", nil, "", "at a line pause: finish the stage, breakpoints ignored" },
  { "continue", "c", "", "run to the next breakpoint or the end" },
  { "run", nil, "", "run the whole template from its first stage" },
  { "restart", nil, "[STAGE]", "run again from STAGE (default: the current one), keeping earlier results" },
  { "break", "b", "STAGE|FILE:LINE", "pause before a stage, or at a line of a stage's file" },
  { "delete", nil, "N", "remove breakpoint N" },
  { "breaks", nil, "", "list the breakpoints" },
  { "where", "w", "", "where the pause is: the stage, the template position, the Lua stack" },
  { "frame", "f", "N", "look at frame N of the stack (:print and Lua see its locals)" },
  { "list", "l", "[N]", "the source around the pause (N lines each side, default 5)" },
  { "print", "p", "[EXPR]", "print a value (at a line pause, no EXPR: the frame's locals)" },
  { "input", nil, "", "the input of the current stage" },
  { "result", nil, "STAGE", "a stage's result: status, error, output" },
  { "ctx", nil, "", "the task's ctx: task, options, data, results, the two registries" },
  { "maxlen", nil, "[N]", "cut printed values at N characters (default 4000); no N: show it" },
  { "trace", "t", "on|off", "print each HTTP request as it ends: method, URL, status, bytes, time" },
  { "reload", nil, "", "reload the stage and template files that changed on disk" },
  { "edit", "e", "STAGE", "open STAGE's function in $EDITOR, then reload" },
  { "replay", nil, "[STAGE]", "with --execution: run STAGE (default: the one that failed) with its stored input and compare" },
  { "help", "h", "", "this list" },
  { "quit", "q", "", "leave (a running stage is stopped)" },
}

local BY = {}
for _, c in ipairs(LIST) do
  BY[c[1]] = c[1]
  if c[2] then BY[c[2]] = c[1] end
end

-- The command words, for Tab.
function commands.names()
  local out = {}
  for _, c in ipairs(LIST) do out[#out + 1] = ":" .. c[1] end
  return out
end

-- The text of a source file a frame names ("@stages/x.lua" or "@/path").
local function source_of(S, src)
  local name = src:match("^@stages/(.+)%.lua$")
  if name then
    local e = S.set.get("stages", name)
    if e and e.source then return e.source end
  end
  name = src:match("^@templates/(.+)%.lua$")
  if name then
    local e = S.set.get("templates", name)
    if e and e.source then return e.source end
  end
  local path = src:match("^@(.+)$")
  if path then return S.R.read(path) end
end

-- The lines of text.
local function lines_of(text)
  local out = {}
  for l in (text .. "\n"):gmatch("(.-)\r?\n") do out[#out + 1] = l end
  return out
end

-- Prints lines around line `at` of source src (n each side), marking it.
local function list(S, src, at, n)
  local text = source_of(S, src)
  if not text then return S.say("(no source for %s)", src) end
  local ls = lines_of(text)
  local out = {}
  for i = math.max(1, at - n), math.min(#ls, at + n) do
    out[#out + 1] = string.format("%s%4d  %s", i == at and "->" or "  ", i, ls[i])
  end
  S.say(table.concat(out, "\n"))
end

-- Prints the paused line (after a pause is announced).
function commands.show_line(S, info)
  local text = info.source and source_of(S, info.source)
  if not text then return end
  local l = lines_of(text)[info.line]
  if l then S.say("%4d  %s", info.line, l) end
end

-- A stage's index by name or number; or nil and a message.
local function stage_arg(S, arg)
  if arg == "" then return nil, "name a stage" end
  local i = math.tointeger(tonumber(arg)) or S.stage_index(arg)
  if not i or not S.run.stages[i] then return nil, "no stage '" .. arg .. "' (see :stages)" end
  return i
end

-- Refuses a command that needs a line pause.
local function need_pause(S, what)
  if not S.pause then
    S.say("%s works at a line pause (set one with :break FILE:LINE, or debug_break() in a stage)", what)
    return false
  end
  return true
end

-- Whether a stage can start now: not while one is paused (:c, :n, :finish
-- go on; :restart and :run abandon it).
local function idle(S)
  if S.job then
    S.say("a stage is paused: :continue, :next, :step or :finish go on with it; :restart or :run abandon it")
    return false
  end
  return true
end

local H = {}
local took = pretty.duration

function H.stages(S)
  local out = {}
  local cur = S.current()
  for i, st in ipairs(S.run.stages) do
    local r = S.run.results[i]
    local status = r.status
    if S.job and i == S.stage_started then status = S.pause and "paused" or "running"
    elseif status == "skipped" and S.run.ok and i >= S.run.pos then status = "pending" end
    local br = ""
    for _, b in ipairs(S.breaks) do if b.stage == st.name then br = " [break]" end end
    out[#out + 1] = string.format("%s %d  %-16s %-32s %-10s %s%s", i == cur and ">" or " ", i, st.name,
                                  st.fn or st.remote or "", status, r.finished and took(r) or "", br)
  end
  S.say(table.concat(out, "\n"))
end

function H.step(S)
  if S.pause then return S.resume("step") end
  if not idle(S) then return end
  S.go("step", true)
end

function H.next(S)
  if S.pause then return S.resume("next") end
  return H.step(S)
end

function H.finish(S)
  if not need_pause(S, ":finish") then return end
  S.mode = "step"
  S.resume("finish")
end

function H.continue(S)
  if S.pause then
    S.mode = "continue"
    return S.resume("continue")
  end
  if not idle(S) then return end
  S.go("continue", true)
end

function H.run(S)
  S.abandon()
  S.run:rewind(1)
  S.go("continue", true)
end

function H.restart(S, arg)
  local i = S.current()
  if arg ~= "" then
    local j, err = stage_arg(S, arg)
    if not j then return S.say("%s", err) end
    i = j
  end
  S.abandon()
  for j = 1, i - 1 do
    if S.run.results[j].status ~= "succeeded" then
      return S.say("stage %s has no result to start from: :restart %s first", S.run.stages[j].name, S.run.stages[j].name)
    end
  end
  S.run:rewind(i)
  S.go("continue", true)
end

-- Syncs the line breakpoints into the debugger.
local function push_breaks(S)
  local lines = {}
  for _, b in ipairs(S.breaks) do
    if b.file then lines[#lines + 1] = { file = b.file, line = b.line, id = b.id } end
  end
  S.D.breaks(lines)
end

H["break"] = function(S, arg)
  if arg == "" then return H.breaks(S) end
  S.next_break = (S.next_break or 0) + 1
  local file, line = arg:match("^(.+):(%d+)$")
  local b = { id = S.next_break }
  if file then
    file = file:gsub("^.*/(stages/)", "%1")
    b.file, b.line = file, math.tointeger(tonumber(line))
    local known = false
    for _, st in ipairs(S.run.stages) do
      local path = "stages/" .. (st.fn or "") .. ".lua"
      if path == file or path:sub(-#file - 1) == "/" .. file then known = true end
    end
    S.breaks[#S.breaks + 1] = b
    push_breaks(S)
    S.say("breakpoint %d at %s:%d%s", b.id, file, b.line,
          known and "" or " (no stage of this template is that file: it may be a library)")
  else
    local i, err = stage_arg(S, arg)
    if not i then return S.say("%s", err) end
    b.stage = S.run.stages[i].name
    S.breaks[#S.breaks + 1] = b
    S.say("breakpoint %d before stage %s", b.id, b.stage)
  end
end

function H.delete(S, arg)
  local n = math.tointeger(tonumber(arg))
  for i, b in ipairs(S.breaks) do
    if b.id == n then
      table.remove(S.breaks, i)
      push_breaks(S)
      return S.say("deleted breakpoint %d", n)
    end
  end
  S.say("no breakpoint %s (see :breaks)", arg)
end

function H.breaks(S)
  if #S.breaks == 0 then return S.say("no breakpoints") end
  local out = {}
  for _, b in ipairs(S.breaks) do
    out[#out + 1] = b.stage and string.format("%d  before stage %s", b.id, b.stage)
                     or string.format("%d  %s:%d", b.id, b.file, b.line)
  end
  S.say(table.concat(out, "\n"))
end

function H.where(S)
  local cur = S.current()
  local st = S.run.stages[cur]
  if not S.pause then
    if not st then return S.say("at the end of the template (%d stages)", #S.run.stages) end
    if not S.job and not S.run.ok then
      return S.say("stage %d/%d: %s (%s) %s: :restart runs it again", cur, #S.run.stages, st.name,
                   st.fn or st.remote, S.run.results[cur].status)
    end
    return S.say("%s stage %d/%d: %s (%s)", S.job and "in" or "before", cur, #S.run.stages, st.name,
                 st.fn or st.remote)
  end
  local info = S.D.info(S.pause)
  if not info then return S.say("the pause is over") end
  local out = { string.format("paused in stage %d/%d: %s (%s), task %q, %s", cur, #S.run.stages, st.name,
                              st.fn or st.remote, info.task, S.pause_why or "") }
  for _, f in ipairs(info.frames) do
    if f.what ~= "C" then
      out[#out + 1] = string.format("%s #%d  %s:%d in %s", f.level == S.frame and ">" or " ", f.level,
                                    f.source:gsub("^@", ""), f.line,
                                    f.name ~= "" and ("function '" .. f.name .. "'") or f.what)
    end
  end
  S.say(table.concat(out, "\n"))
end

function H.frame(S, arg)
  if not need_pause(S, ":frame") then return end
  local n = math.tointeger(tonumber(arg)) or 0
  local info = S.D.info(S.pause)
  if not info or not info.frames[n + 1] then return S.say("no frame %s (see :where)", arg) end
  S.frame = n
  local f = info.frames[n + 1]
  S.say("#%d  %s:%d", n, f.source:gsub("^@", ""), f.line)
end

function H.list(S, arg)
  local n = math.tointeger(tonumber(arg)) or 5
  if S.pause then
    local info = S.D.info(S.pause)
    local f = info and info.frames[(S.frame or 0) + 1]
    if not f then return S.say("the pause is over") end
    return list(S, f.source, f.line, n)
  end
  local st = S.run.stages[S.run.pos]
  if not st or not st.fn then return S.say("no stage function to list") end
  list(S, "@stages/" .. st.fn .. ".lua", 1, n * 4)
end

function H.print(S, arg)
  if arg == "" then
    if not need_pause(S, ":print with no expression") then return end
    return S.evaluate("return __locals()")
  end
  S.evaluate("return " .. arg)
end

function H.input(S)
  local cur = S.current()
  if cur <= 1 then return S.say("nil (the first stage has no input)") end
  local r = S.run.results[cur - 1]
  S.say("%s", pretty.format(r.output, S.maxlen))
end

function H.result(S, arg)
  local i, err = stage_arg(S, arg)
  if not i then return S.say("%s", err) end
  local r = S.run.results[i]
  local out = { string.format("%s: %s%s", r.name, r.status, r.finished and (" in " .. took(r)) or "") }
  if r.error then out[#out + 1] = "error: " .. tostring(r.error) end
  if r.output ~= nil then out[#out + 1] = "output: " .. pretty.format(r.output, S.maxlen) end
  S.say(table.concat(out, "\n"))
end

-- A client as its URL and kind (its fields hold credentials and caches).
local function client_view(c)
  if type(c) ~= "table" then return c end
  local kind = rawget(c, "kind")
  return { url = rawget(c, "url") or rawget(c, "base"), kind = type(kind) == "table" and rawget(kind, "name") or kind }
end

function H.ctx(S)
  local c = S.ctx
  S.say("%s", pretty.format({ task = c.task, options = c.options, data = c.data, results = c.results,
                              src = client_view(c.src), dst = client_view(c.dst) }, S.maxlen))
end

function H.maxlen(S, arg)
  local n = math.tointeger(tonumber(arg))
  if n and n > 0 then S.maxlen = n end
  S.say("maxlen %d", S.maxlen)
end

function H.trace(S, arg)
  if arg ~= "on" and arg ~= "off" then return S.say(":trace on or :trace off") end
  S.R.trace(arg == "on")
  S.say("trace %s", arg)
end

-- The sha256 of each file the session runs: the template and its stages.
local function shas(S)
  local out = { ["templates/" .. S.template.name] = S.template.entry and S.template.entry.sha256 }
  for _, st in ipairs(S.run.stages) do
    if st.entry then out["stages/" .. st.entry.name] = st.entry.sha256 end
  end
  return out
end

function H.reload(S)
  local before = shas(S)
  local set = S.set -- its get reads the files again
  local tpl, err = runner.template(S.template.name, set)
  if not tpl then return S.say("reload failed, the old code stays: %s", err) end
  local same = #tpl.stages == #S.run.stages
  for i, st in ipairs(tpl.stages) do same = same and S.run.stages[i].name == st.name end
  S.template, S.set = tpl, set
  S.run:use(tpl.stages)
  local changed = {}
  for k, v in pairs(shas(S)) do
    if before[k] ~= v then changed[#changed + 1] = k .. ".lua" end
  end
  table.sort(changed)
  S.run.box = sandbox.new() -- fresh instances of the libraries the stages require
  S.eval_body = require("repl.eval").runner(S.run.box)
  if not same then
    S.run:rewind(1)
    S.say("the template's stages changed: back at the first stage")
  end
  S.say(#changed > 0 and ("reloaded: " .. table.concat(changed, ", ")) or "nothing changed on disk")
end

function H.edit(S, arg)
  local i, err = stage_arg(S, arg)
  if not i then return S.say("%s", err) end
  local st = S.run.stages[i]
  if not st.fn then return S.say("stage %s is remote: there is no file to edit", st.name) end
  local path
  for _, e in ipairs(catalog.list("stages")) do
    if e.name == st.fn then path = e.path end
  end
  if not path then return S.say("stage %s's function %s is not a file (a stored version)", st.name, st.fn) end
  local rc = S.R.edit(path)
  if rc ~= 0 then S.say("the editor exited with %s", tostring(rc)) end
  H.reload(S)
end

function H.replay(S, arg)
  local stored = S.task.stored
  if not stored then return S.say(":replay needs a stored execution: replica repl --db FILE --execution ID") end
  local name = arg
  if name == "" then
    for _, r in ipairs(stored) do
      if r.status == "failed" or r.status == "cancelled" then name = r.name break end
    end
    if name == "" then return S.say("no stage failed in the stored task: name one") end
  end
  local i, err = stage_arg(S, name)
  if not i then return S.say("%s", err) end
  local old
  for _, r in ipairs(stored) do if r.name == S.run.stages[i].name then old = r end end
  local stored_input
  for _, r in ipairs(stored) do
    if i > 1 and r.name == S.run.stages[i - 1].name then stored_input = r.output end
  end
  S.abandon()
  if not S.rebuild(i) then return S.say("the stages before %s did not succeed again: no replay", S.run.stages[i].name) end
  S.run:rewind(i)
  if i > 1 then S.run.results[i - 1].output = stored_input end
  S.say("replaying stage %s with its stored input", S.run.stages[i].name)
  S.go("step", true)
  if S.job then return end -- paused inside it
  local new = S.run.results[i]
  if not old then return S.say("the stored task has no result for %s", new.name) end
  S.say("stored: %s%s", old.status, old.error and (": " .. tostring(old.error)) or "")
  S.say("now:    %s%s", new.status, new.error and (": " .. tostring(new.error)) or "")
  local a, b = pretty.format(old.output, S.maxlen), pretty.format(new.output, S.maxlen)
  if a == b then S.say("output: the same") else S.say("output was: %s\noutput now: %s", a, b) end
end

function H.help(S)
  local out = {}
  for _, c in ipairs(LIST) do
    out[#out + 1] = string.format("  :%-9s %-4s %-16s %s", c[1], c[2] and (":" .. c[2]) or "", c[3], c[4])
  end
  out[#out + 1] = "  anything else is Lua in the task's sandbox (ctx, input, results; calls may do I/O)"
  out[#out + 1] = "  an empty line repeats :step or :next; Ctrl-C stops the running stage"
  S.say(table.concat(out, "\n"))
end

function H.quit()
  return "quit"
end

-- Runs command line c (":name args"). Returns "quit" to leave.
function commands.run(S, c)
  local name, arg = c:match("^:(%S+)%s*(.-)%s*$")
  local full = name and BY[name]
  if not full then return S.say("unknown command %s (:help lists them)", tostring(name or c)) end
  return H[full](S, arg or "")
end

return commands
