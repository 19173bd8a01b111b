-- check.lua - `replica check`: validates every stage function and process
-- template under the script roots with the check the daemon runs on every
-- save (validate.lua): syntax, the contract, references to missing
-- functions, and use of what the sandbox does not provide, each with its
-- line; and loads every registry kind.
local scriptset = require("scriptset")
local validate = require("validate")
local kinds = require("kinds")

local check = {}

-- The `replica check` entry point: prints what it found; returns the exit code.
function check.main()
  local set = scriptset.files()
  local problems, counts = {}, {}
  for _, kind in ipairs({ "stages", "templates" }) do
    counts[kind] = 0
    for _, name in ipairs(set.list(kind)) do
      counts[kind] = counts[kind] + 1
      local src, err = catalog.source(kind, name)
      local diags = src and validate.source(kind == "stages" and "function" or "template", name, src, set)
                    or { { line = 1, message = err } }
      for _, d in ipairs(diags) do
        problems[#problems + 1] = string.format("%s %s: line %d: %s", kind, name, d.line, d.message)
      end
    end
  end
  counts.kinds = 0
  for _, e in ipairs(catalog.list("kinds")) do
    counts.kinds = counts.kinds + 1
    local _, err = kinds.load(e.name)
    if err then problems[#problems + 1] = string.format("kinds %s: %s", e.name, err) end
    local src = catalog.source("kinds", e.name)
    for _, f in ipairs(src and validate.forbidden_uses(src) or {}) do
      problems[#problems + 1] = string.format("kinds %s: line %d: uses %s, which the sandbox does not provide",
                                              e.name, f.line, f.what)
    end
  end
  for _, p in ipairs(problems) do print("ERROR " .. p) end
  print(string.format("%d stage(s), %d template(s), %d kind(s) checked, %d problem(s)", counts.stages,
                      counts.templates, counts.kinds, #problems))
  return #problems == 0 and 0 or 1
end

return check
