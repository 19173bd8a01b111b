-- repl/eval.lua - Lua typed at `replica repl`'s prompt. A line is first
-- compiled as `return LINE;`, so that an expression prints its values (as
-- lua.c does); a statement the parser finds unfinished ("<eof>") waits for
-- more lines. The code runs as a sandboxed task in the session's sandbox
-- context, so it sees what a stage sees (ctx, and its clients, whose
-- calls yield and do real I/O) under a stage's limits, and no metamethod of
-- a script's value ever runs in trusted code: the values come back as text.
local eval = {}

-- The body of the prompt's task, compiled in the session's sandbox context.
local BODY = [[
local src, vars, frame, maxlen = ...
local pretty = require("repl.pretty")
if getmetatable(vars) == nil then setmetatable(vars, { __index = _ENV }) end
local f, err = load(src, "=stdin", "t", frame or vars)
if not f then return false, err end
local res = table.pack(xpcall(f, function(m)
  if type(m) == "string" then return m end
  local ok, s = pcall(tostring, m)
  return ok and s or "(an error value of type " .. type(m) .. ")"
end))
if not res[1] then return false, res[2] end
if res.n == 1 then return true, nil end
return true, pretty.values(table.pack(table.unpack(res, 2, res.n)), maxlen)
]]

-- Compiles the text typed so far (compile only: nothing runs). Returns
-- "ok", source to run | "incomplete" | "error", message.
function eval.compile(text)
  local ret = "return " .. text .. ";"
  if load(ret, "=stdin", "t", {}) then return "ok", ret end
  local f, err = load(text, "=stdin", "t", {})
  if f then return "ok", text end
  if tostring(err):find("<eof>$") then return "incomplete" end
  return "error", err
end

-- Returns the function that runs source src with the names of vars (a
-- table the session keeps, so globals set at the prompt stay) and, at a
-- pause, frame (sys.dbg.env's table of the paused frame's locals, which
-- falls back on vars), in sandbox context box. Run it as a task: it returns
-- true, text of the values (nil for none) | false, error message.
function eval.runner(box)
  local body, err = box:load(BODY, "=repl prompt", digest.sha256(BODY))
  if not body then error(err) end
  return body
end

return eval
