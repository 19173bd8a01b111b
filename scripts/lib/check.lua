-- check.lua - `replica check`: loads and validates every stage function and
-- process template under the script roots: syntax, shape, references to
-- missing stages, and use of what the sandbox does not provide.
local runner = require("runner")

local validate = require("validate")

local check = {}

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
        for _, what in ipairs(validate.forbidden_uses(src)) do
          problems[#problems + 1] = string.format(
            "%s %s: uses %s, which the sandbox does not provide (line %d)", kind, item.name, what.what, what.line)
        end
      end
    end
  end
  for _, p in ipairs(problems) do print("ERROR " .. p) end
  print(string.format("%d stage(s), %d template(s) checked, %d problem(s)", stages, templates, #problems))
  return #problems == 0 and 0 or 1
end

return check
