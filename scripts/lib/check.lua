-- check.lua - `replica check`: loads and validates every stage function and
-- process template under the script roots: syntax, shape, references to
-- missing stages, and use of what the sandbox does not provide.
local runner = require("runner")

local check = {}

local FORBIDDEN = { io = true, debug = true, package = true, dofile = true, loadfile = true }
local FORBIDDEN_OS = { execute = true, getenv = true, exit = true, remove = true, rename = true,
                       tmpname = true, setlocale = true }

-- Removes comments and string literals so names inside them do not count.
local function strip(src)
  local out, i, n = {}, 1, #src
  while i <= n do
    local c = src:sub(i, i)
    if src:sub(i, i + 1) == "--" then
      local eq = src:match("^%-%-%[(=*)%[", i)
      if eq then
        local close = src:find("]" .. eq .. "]", i, true)
        i = close and close + #eq + 2 or n + 1
      else
        local nl = src:find("\n", i, true)
        i = nl or n + 1
      end
    elseif c == "[" and src:match("^%[=*%[", i) then
      local eq = src:match("^%[(=*)%[", i)
      local close = src:find("]" .. eq .. "]", i, true)
      out[#out + 1] = '""'
      i = close and close + #eq + 2 or n + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then j = j + 2
        elseif d == c or d == "\n" then break
        else j = j + 1 end
      end
      out[#out + 1] = '""'
      i = j + 1
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

-- Returns the forbidden names a source uses as globals.
function check.forbidden_uses(src)
  local code, found, seen = strip(src), {}, {}
  local locals = {}
  for name in code:gmatch("local%s+([%a_][%w_]*)") do locals[name] = true end
  for pre, name, post in code:gmatch("([%.:%w_]?)%f[%a_]([%a_][%w_]*)%f[^%w_]([%s%.]*[%w_]*)") do
    if pre ~= "." and pre ~= ":" and not locals[name] then
      local what
      if FORBIDDEN[name] then what = name end
      local field = post:match("^%s*%.%s*([%a_][%w_]*)")
      if name == "os" and field and FORBIDDEN_OS[field] then what = "os." .. field end
      if what and not seen[what] then
        seen[what] = true
        found[#found + 1] = what
      end
    end
  end
  return found
end

-- Checks every file of a kind; returns a list of problems.
local function check_kind(kind, problems)
  local n = 0
  for _, item in ipairs(catalog.list(kind)) do
    n = n + 1
    local ok, err
    if kind == "stages" then ok, err = runner.stage(item.name)
    else ok, err = runner.template(item.name) end
    if not ok then problems[#problems + 1] = string.format("%s %s: %s", kind, item.name, err) end
  end
  return n
end

-- The `replica check` entry point: prints what it found; returns the exit code.
function check.main(opts)
  local problems = {}
  local stages = check_kind("stages", problems)
  local templates = check_kind("templates", problems)
  for _, kind in ipairs({ "stages", "templates" }) do
    for _, item in ipairs(catalog.list(kind)) do
      local src = catalog.source(kind, item.name)
      if src then
        for _, what in ipairs(check.forbidden_uses(src)) do
          problems[#problems + 1] = string.format(
            "%s %s: uses %s, which the sandbox does not provide", kind, item.name, what)
        end
      end
    end
  end
  for _, p in ipairs(problems) do print("ERROR " .. p) end
  print(string.format("%d stage(s), %d template(s) checked, %d problem(s)", stages, templates, #problems))
  return #problems == 0 and 0 or 1
end

return check
