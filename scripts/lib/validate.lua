-- validate.lua - checks a stage function's or a process template's source
-- before it is saved or run, and says where each problem is: the syntax
-- (Lua stops at the first error), the contract (a function returns a table
-- with run; a template a list of {name, function} or {name, remote = url}
-- stages), references to functions the script set lacks, and uses of what
-- the sandbox does not provide. `replica check` and the daemon's API (every
-- save, and POST /validate) share it. Diagnostics are
-- { line = N, message = "...", severity = "error" | "warning" }.
local runner = require("runner")

local validate = {}

local FORBIDDEN = { io = true, debug = true, package = true, dofile = true, loadfile = true }
local FORBIDDEN_OS = { execute = true, getenv = true, exit = true, remove = true, rename = true,
                       tmpname = true, setlocale = true }

-- Blanks out comments and string literals (keeping their line breaks, so
-- that lines still count right) so names inside them do not count.
local function strip(src)
  local out, i, n = {}, 1, #src
  local function blank(from, to)
    local _, lines = src:sub(from, to):gsub("\n", "")
    out[#out + 1] = '""' .. string.rep("\n", lines)
  end
  while i <= n do
    local c = src:sub(i, i)
    if src:sub(i, i + 1) == "--" then
      local eq = src:match("^%-%-%[(=*)%[", i)
      local stop
      if eq then
        local close = src:find("]" .. eq .. "]", i, true)
        stop = close and close + #eq + 1 or n
      else
        stop = (src:find("\n", i, true) or n + 1) - 1
      end
      blank(i, stop)
      i = stop + 1
    elseif c == "[" and src:match("^%[=*%[", i) then
      local eq = src:match("^%[(=*)%[", i)
      local close = src:find("]" .. eq .. "]", i, true)
      local stop = close and close + #eq + 1 or n
      blank(i, stop)
      i = stop + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == c or d == "\n" then break
        else j = j + 1 end
      end
      blank(i, math.min(j, n))
      i = j + 1
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

-- Returns the forbidden names a source uses as globals, as a list of
-- { what = "io" | "os.execute" | ..., line = N } (the first use of each).
function validate.forbidden_uses(src)
  local code, found, seen = strip(src), {}, {}
  local locals = {}
  for name in code:gmatch("local%s+([%a_][%w_]*)") do locals[name] = true end
  local line, pos = 1, 1
  for at, pre, name, post in code:gmatch("()([%.:%w_]?)%f[%a_]([%a_][%w_]*)%f[^%w_]([%s%.]*[%w_]*)") do
    if pre ~= "." and pre ~= ":" and not locals[name] then
      local what
      if FORBIDDEN[name] then what = name end
      local field = post:match("^%s*%.%s*([%a_][%w_]*)")
      if name == "os" and field and FORBIDDEN_OS[field] then what = "os." .. field end
      if what and not seen[what] then
        local _, nl = code:sub(pos, at):gsub("\n", "")
        line, pos = line + nl, at + 1
        seen[what] = true
        found[#found + 1] = { what = what, line = line }
      end
    end
  end
  return found
end

-- Splits "stages/x.lua:12: message" (an error of the chunk named chunk) into
-- line and message; anything else is line nil and the whole text.
local function locate(err, chunk)
  err = tostring(err)
  local from = 1
  while true do
    local i = err:find(chunk .. ":", from, true)
    if not i then return nil, err end
    local line, msg = err:sub(i + #chunk + 1):match("^(%d+): (.*)$")
    if line then return math.tointeger(tonumber(line)), msg end
    from = i + 1
  end
end

-- The line of source's last top-level-looking return, or nil.
local function last_return(source)
  local n, at = 0, nil
  for l in (source .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if l:find("^return") then at = n end
  end
  return at
end

-- The line of source that first names function fn in a string literal, or nil.
local function line_naming(source, fn)
  local n = 0
  for l in (source .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if l:find('"' .. fn .. '"', 1, true) or l:find("'" .. fn .. "'", 1, true) then return n end
  end
end

-- Checks source as a stage function ("function") or process template
-- ("template") named name (a function's "kind/name"; used in messages and
-- chunk names), whose functions are looked up in set (scriptset; the
-- files when nil). Returns the diagnostics (empty when it is good) and,
-- for a good source, what it loaded: the stage ({description}) or the
-- checked template (runner.template_from's).
function validate.source(kind, name, source, set)
  local dir = kind == "template" and "templates" or "stages"
  local chunk = dir .. "/" .. name .. ".lua"
  local diags = {}
  local function add(line, msg, severity)
    for _, d in ipairs(diags) do
      if d.line == (line or 1) then return end -- one problem per line: the first said
    end
    diags[#diags + 1] = { line = line or 1, message = msg, severity = severity or "error" }
  end
  local compiled, cerr = sandbox.new():load(source, "=" .. chunk)
  if not compiled then
    local line, msg = locate(cerr, chunk)
    add(line, msg)
    return diags
  end
  for _, f in ipairs(validate.forbidden_uses(source)) do
    add(f.line, string.format("uses %s, which the sandbox does not provide", f.what))
  end
  local entry = { kind = dir, name = name, origin = "draft", version = 0, source = source,
                  sha256 = digest.sha256(source) }
  local loaded
  if dir == "stages" then
    local st, err = runner.stage(name, require("scriptset").of({ entry }))
    if not st then
      local line, msg = locate(err, chunk)
      if not line and msg:find("must return a table with a run function", 1, true) then
        line = last_return(source)
      end
      add(line, msg)
    else
      loaded = { description = st.description }
    end
  else
    local data, derr = runner.template_data(entry)
    if not data then
      local line, msg = locate(derr, chunk)
      add(line, msg)
    else
      local tpl, terr = runner.template_from(name, data, set)
      if not tpl then
        terr = tostring(terr):gsub("^template '[^']*': ", "")
        local missing_fn = terr:match("no stage named '([^']+)'")
        local broken_fn = terr:match("^stages/([%w_/%-]+)%.lua:")
        if missing_fn then
          add(line_naming(source, missing_fn), "no function named '" .. missing_fn .. "'")
        elseif broken_fn then
          add(line_naming(source, broken_fn), "function " .. broken_fn .. " does not load: " .. terr)
        else
          add(nil, terr)
        end
      else
        loaded = tpl
      end
    end
  end
  if #diags > 0 then loaded = nil end
  return diags, loaded
end

return validate
