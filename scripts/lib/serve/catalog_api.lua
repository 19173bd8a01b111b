-- serve/catalog_api.lua - GET /api/v1/templates and /api/v1/functions: the
-- process templates and stage functions found in the scripts directories.
local api = require("serve.api")
local runner = require("runner")

local catalog_api = {}

-- Lists the templates with their stages; a template that does not load is
-- listed with its error so the console can show it.
local function templates()
  local out = setmetatable({}, json.array_mt)
  for _, e in ipairs(catalog.list("templates")) do
    local tpl, err = runner.template(e.name)
    local v = { name = e.name, path = e.path }
    if tpl then
      v.description, v.source, v.target = tpl.description, tpl.source, tpl.target
      v.stages = setmetatable({}, json.array_mt)
      for _, st in ipairs(tpl.stages) do
        v.stages[#v.stages + 1] = { name = st.name, ["function"] = st.fn, remote = st.remote }
      end
      if tpl.delete_stages then
        v.delete_stages = {}
        for _, st in ipairs(tpl.delete_stages) do
          v.delete_stages[#v.delete_stages + 1] = { name = st.name, ["function"] = st.fn, remote = st.remote }
        end
      end
    else
      v.error = err
    end
    out[#out + 1] = v
  end
  return out
end

-- Lists the stage functions with their descriptions (or load errors).
local function functions()
  local out = setmetatable({}, json.array_mt)
  for _, e in ipairs(catalog.list("stages")) do
    local st, err = runner.stage(e.name)
    out[#out + 1] = { name = e.name, path = e.path, description = st and st.description or nil,
                      error = err }
  end
  return out
end

function catalog_api.routes(r)
  r.add("GET", "/api/v1/templates", function(req) return api.reply(req, 200, templates()) end)
  r.add("GET", "/api/v1/templates/{name}", function(req, p)
    for _, t in ipairs(templates()) do
      if t.name == p.name then return api.reply(req, 200, t) end
    end
    api.fail(404, "template %s not found", p.name)
  end)
  r.add("GET", "/api/v1/functions", function(req) return api.reply(req, 200, functions()) end)
end

return catalog_api
