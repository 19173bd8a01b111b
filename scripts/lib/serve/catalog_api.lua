-- serve/catalog_api.lua - /api/v1/functions, /api/v1/templates and
-- /api/v1/validate: the stage functions and process templates, bundled and
-- user ones (serve/library.lua), with their versions. Every save is checked
-- first (validate.lua) and a bad one answers 400 with diagnostics that
-- carry line numbers, storing nothing. No answer shows a filesystem path.
local api = require("serve.api")
local library = require("serve.library")
local runner = require("runner")
local validate = require("validate")
local scriptset = require("scriptset")

local catalog_api = {}

local SEGMENT = "^[%w_%-]+$"

-- Checks a path segment of a function or template name; raises 404.
local function segment(v, what)
  if not v:match(SEGMENT) or #v > 100 then api.fail(404, "%s %s not found", what, v) end
  return v
end

-- Whether a bundled file kind/name exists.
local function bundled(kind, name)
  return library.files().get(kind, name) ~= nil
end

-- The version row of a user version as the API shows it.
local function version_view(r)
  return { version = r.version, created = api.iso(r.created), by = r.by, sha256 = r.sha256 }
end

-- Answers 400 with the diagnostics of a failed validation.
local function fail_validation(req, what, diags)
  local first = diags[1]
  return api.reply(req, 400, {
    error = string.format("%s does not validate: line %d: %s", what, first.line, first.message),
    diagnostics = setmetatable(diags, json.array_mt),
  })
end

-- The template names every policy uses: name -> { {id, name} }.
local function policy_templates(db)
  local out = {}
  for _, r in ipairs(assert(db:query("SELECT id, name, template FROM policies ORDER BY id"))) do
    out[r.template] = out[r.template] or setmetatable({}, json.array_mt)
    table.insert(out[r.template], { id = r.id, name = r.name })
  end
  return out
end

-- The templates (names, sorted) in set whose stages or delete_stages name
-- function fn.
local function templates_using(set, fn)
  local out = setmetatable({}, json.array_mt)
  for _, t in ipairs(set.list("templates")) do
    local e = set.get("templates", t)
    local data = e and runner.template_data(e)
    if type(data) == "table" then
      local found = false
      for _, list in ipairs({ data.stages, data.delete_stages }) do
        if type(list) == "table" then
          for _, st in ipairs(list) do
            if type(st) == "table" and st[2] == fn then found = true end
          end
        end
      end
      if found then out[#out + 1] = t end
    end
  end
  return out
end

-- ---------------------------------------------------------------- functions

-- The list view of function name in set.
local function function_item(db, set, name)
  local e = set.get("stages", name)
  local st, err = runner.stage(name, set)
  return {
    name = name, kind = name:match("^([^/]+)/") or "", description = st and st.description or nil,
    origin = e and e.origin or "bundled", version = e and e.version or 0,
    updated = e and api.iso(e.created) or nil, bundled = bundled("stages", name), error = err,
  }
end

-- GET /functions
local function list_functions(s, req)
  local set, out = library.set(s.db), setmetatable({}, json.array_mt)
  for _, name in ipairs(set.list("stages")) do out[#out + 1] = function_item(s.db, set, name) end
  return api.reply(req, 200, out)
end

-- The full name of the function a request names.
local function fname(p)
  return segment(p.kind, "function") .. "/" .. segment(p.name, "function")
end

-- GET /functions/{kind}/{name}
local function get_function(s, req, p)
  local name = fname(p)
  local set = library.set(s.db)
  local e = set.get("stages", name)
  if not e then api.fail(404, "function %s not found", name) end
  local v = function_item(s.db, set, name)
  local m = scriptset.materialize(e)
  v.source = m and m.source or nil
  v.sha256 = m and m.sha256 or nil
  v.used_by = templates_using(set, name)
  v.versions = setmetatable({}, json.array_mt)
  for _, r in ipairs(library.versions(s.db, "stages", name)) do v.versions[#v.versions + 1] = version_view(r) end
  return api.reply(req, 200, v)
end

-- GET .../versions/{n} of kind ("stages" or "templates") and name; version
-- 0 is the bundled file.
local function get_version(s, req, kind, name, n)
  local what = kind == "stages" and "function" or "template"
  local num = math.tointeger(tonumber(n))
  if not num or num < 0 or tostring(num) ~= n then api.fail(404, "%s %s has no version %s", what, name, n) end
  if num == 0 then
    local e = library.files().get(kind, name)
    local m = e and scriptset.materialize(e)
    if not m then api.fail(404, "%s %s has no bundled version", what, name) end
    return api.reply(req, 200, { name = name, version = 0, origin = "bundled", sha256 = m.sha256, source = m.source })
  end
  local r = library.version(s.db, kind, name, num)
  if not r then api.fail(404, "%s %s has no version %d", what, name, num) end
  local v = version_view(r)
  v.name, v.source, v.origin = name, r.source, "user"
  return api.reply(req, 200, v)
end

-- Reads {"source": "..."} (or, for templates, the structured form, turned
-- into Lua by build) from a PUT body; returns the source.
local function body_source(req, build)
  local body = api.body(req)
  if body.source ~= nil then
    api.validate(body, { source = { type = "string", required = true } })
    return body.source
  end
  if not build then api.fail(400, "missing required field 'source'") end
  return build(body)
end

-- Saves a validated source; answers 201 (first user version) or 200.
local function save(s, req, kind, name, source)
  if #source > 512 * 1024 then api.fail(400, "the source is larger than 512 KiB") end
  local what = (kind == "stages" and "function " or "template ") .. name
  local diags = validate.source(kind == "stages" and "function" or "template", name, source, library.set(s.db))
  if #diags > 0 then return fail_validation(req, what, diags) end
  local version, first, unchanged = library.save(s.db, kind, name, source, req.who)
  log.info("%s: version %d saved by %s%s", what, version, tostring(req.who), unchanged and " (unchanged)" or "")
  return api.reply(req, first and 201 or 200, { name = name, version = version, unchanged = unchanged or nil })
end

-- Refuses (409) to delete kind/name when it would then resolve to nothing
-- while a template a policy uses needs it.
local function check_delete(s, kind, name)
  if bundled(kind, name) then return end -- the bundled one comes back
  local used = policy_templates(s.db)
  if kind == "templates" then
    if used[name] then
      api.fail(409, "template %s is used by policy %s, and no bundled template of that name would replace it",
               name, used[name][1].name)
    end
    return
  end
  local set = library.set(s.db)
  for _, t in ipairs(templates_using(set, name)) do
    if used[t] then
      api.fail(409, "function %s is needed by template %s, which policy %s uses, and no bundled function "
               .. "of that name would replace it", name, t, used[t][1].name)
    end
  end
end

-- DELETE of the user versions of kind/name.
local function delete(s, req, kind, name)
  local what = kind == "stages" and "function" or "template"
  if not library.current(s.db, kind, name) then
    if bundled(kind, name) then api.fail(409, "%s %s is bundled: only user versions can be deleted", what, name) end
    api.fail(404, "%s %s not found", what, name)
  end
  check_delete(s, kind, name)
  local n = library.delete(s.db, kind, name)
  log.info("%s %s: %d user version(s) deleted by %s", what, name, n, tostring(req.who))
  return api.reply(req, 204)
end

-- ---------------------------------------------------------------- templates

-- A Lua string literal for s (double quotes; \\, \", \n, \r, \t and \ddd
-- for other control bytes), as the console's composer writes it too.
local function lua_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end

-- Checks a structured stage list field; returns it.
local function stage_list(v, field)
  if type(v) ~= "table" or (next(v) ~= nil and #v == 0) then
    api.fail(400, "field '%s' must be an array of stages", field)
  end
  for i, st in ipairs(v) do
    if type(st) ~= "table" then api.fail(400, "field '%s': stage %d must be an object", field, i) end
    api.validate(st, { name = { type = "string", required = true }, ["function"] = { type = "string" },
                       remote = { type = "string" } })
    if (st["function"] == nil) == (st.remote == nil) then
      api.fail(400, "field '%s': stage %d must name a function or a remote URL (one of them)", field, i)
    end
    if st.remote and not st.remote:match("^https?://[^%s]+$") then
      api.fail(400, "field '%s': stage %d: remote must be an http:// or https:// URL", field, i)
    end
  end
  return v
end

-- Writes the Lua of a template from its structured form (PUT /templates
-- with stages): what the console's composer shows.
function catalog_api.template_lua(body)
  local out = { "-- Written by replica serve from the template composer.", "return {" }
  local function field(k, v)
    if v ~= nil and v ~= json.null then out[#out + 1] = string.format("  %s = %s,", k, lua_string(v)) end
  end
  field("description", body.description)
  field("source", body.source_kind)
  field("target", body.target_kind)
  for _, key in ipairs({ "stages", "delete_stages" }) do
    local list = body[key]
    if list ~= nil and list ~= json.null then
      out[#out + 1] = "  " .. key .. " = {"
      for _, st in ipairs(list) do
        if st.remote then
          out[#out + 1] = string.format("    { %s, remote = %s },", lua_string(st.name), lua_string(st.remote))
        else
          out[#out + 1] = string.format("    { %s, %s },", lua_string(st.name), lua_string(st["function"]))
        end
      end
      out[#out + 1] = "  },"
    end
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- Turns a structured PUT /templates body into Lua.
local function build_template(body)
  api.validate(body, { description = { type = "string", nullable = true }, source_kind = { type = "string", nullable = true },
                       target_kind = { type = "string", nullable = true }, stages = { type = "object", required = true },
                       delete_stages = { type = "object", nullable = true } })
  stage_list(body.stages, "stages")
  if #body.stages == 0 then api.fail(400, "field 'stages' must list at least one stage") end
  if body.delete_stages ~= nil and body.delete_stages ~= json.null then stage_list(body.delete_stages, "delete_stages") end
  return catalog_api.template_lua(body)
end

-- The stage list of a checked template as the API shows it.
local function stages_view(list)
  local out = setmetatable({}, json.array_mt)
  for _, st in ipairs(list) do out[#out + 1] = { name = st.name, ["function"] = st.fn, remote = st.remote } end
  return out
end

-- The list view of template name in set.
local function template_item(set, name)
  local e = set.get("templates", name)
  local tpl, err = runner.template(name, set)
  local v = { name = name, origin = e and e.origin or "bundled", version = e and e.version or 0,
              updated = e and api.iso(e.created) or nil, bundled = bundled("templates", name), error = err }
  if tpl then
    v.description, v.source_kind, v.target_kind = tpl.description, tpl.source, tpl.target
    v.stages = stages_view(tpl.stages)
    if tpl.delete_stages then v.delete_stages = stages_view(tpl.delete_stages) end
  end
  return v
end

-- GET /templates
local function list_templates(s, req)
  local set, out = library.set(s.db), setmetatable({}, json.array_mt)
  for _, name in ipairs(set.list("templates")) do out[#out + 1] = template_item(set, name) end
  return api.reply(req, 200, out)
end

-- GET /templates/{name}
local function get_template(s, req, p)
  local name = segment(p.name, "template")
  local set = library.set(s.db)
  local e = set.get("templates", name)
  if not e then api.fail(404, "template %s not found", name) end
  local v = template_item(set, name)
  local m = scriptset.materialize(e)
  v.source, v.sha256 = m and m.source or nil, m and m.sha256 or nil
  v.used_by = policy_templates(s.db)[name] or setmetatable({}, json.array_mt)
  v.versions = setmetatable({}, json.array_mt)
  for _, r in ipairs(library.versions(s.db, "templates", name)) do v.versions[#v.versions + 1] = version_view(r) end
  return api.reply(req, 200, v)
end

-- POST /validate
local function post_validate(s, req)
  local body = api.validate(api.body(req), { kind = { type = "string", required = true },
                                             source = { type = "string", required = true },
                                             name = { type = "string" } })
  if body.kind ~= "function" and body.kind ~= "template" then
    api.fail(400, "field 'kind' must be function or template")
  end
  local name = body.name or (body.kind == "function" and "draft/function" or "draft")
  local ok = body.kind == "function" and name:match("^[%w_%-]+/[%w_%-]+$") or name:match(SEGMENT)
  if not ok then api.fail(400, "field 'name' is not a valid %s name", body.kind) end
  local diags = validate.source(body.kind, name, body.source, library.set(s.db))
  return api.reply(req, 200, { ok = #diags == 0, diagnostics = setmetatable(diags, json.array_mt) })
end

-- Adds the routes to router r; s is the service state.
function catalog_api.routes(r, s)
  r.add("GET", "/api/v1/functions", function(req) return list_functions(s, req) end)
  r.add("GET", "/api/v1/functions/{kind}/{name}", function(req, p) return get_function(s, req, p) end)
  r.add("PUT", "/api/v1/functions/{kind}/{name}", function(req, p)
    local name = fname(p)
    return save(s, req, "stages", name, body_source(req))
  end)
  r.add("DELETE", "/api/v1/functions/{kind}/{name}", function(req, p) return delete(s, req, "stages", fname(p)) end)
  r.add("GET", "/api/v1/functions/{kind}/{name}/versions/{n}", function(req, p)
    return get_version(s, req, "stages", fname(p), p.n)
  end)
  r.add("GET", "/api/v1/templates", function(req) return list_templates(s, req) end)
  r.add("GET", "/api/v1/templates/{name}", function(req, p) return get_template(s, req, p) end)
  r.add("PUT", "/api/v1/templates/{name}", function(req, p)
    local name = segment(p.name, "template")
    return save(s, req, "templates", name, body_source(req, build_template))
  end)
  r.add("DELETE", "/api/v1/templates/{name}", function(req, p)
    return delete(s, req, "templates", segment(p.name, "template"))
  end)
  r.add("GET", "/api/v1/templates/{name}/versions/{n}", function(req, p)
    return get_version(s, req, "templates", segment(p.name, "template"), p.n)
  end)
  r.add("POST", "/api/v1/validate", function(req) return post_validate(s, req) end)
end

return catalog_api
