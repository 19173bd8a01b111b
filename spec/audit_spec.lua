-- What the audit trail and retention of `replica serve` take from a request
-- and from the command line: the object each write route is about (for
-- every write route of the daemon's real router), which requests are
-- recorded, and the retention options' checks.
local t = require("tap").new(...)
local audit = require("serve.audit")
local retention = require("serve.retention")
local serve = require("serve")

-- The "kind/id" audit.object_of gives for pattern, its params and created.
local function object(pattern, params, created)
  local kind, id = audit.object_of(pattern, params or {}, created)
  return tostring(kind) .. "/" .. tostring(id)
end

t.test("each route names its object: the path's parameters, or the object a POST created", function()
  t.eq(object("/api/v1/registries", {}, 4), "registries/4")
  t.eq(object("/api/v1/registries", {}, nil), "registries/nil", "a refused creation names the kind only")
  t.eq(object("/api/v1/registries/{id}", { id = "4" }), "registries/4")
  t.eq(object("/api/v1/registries/{id}/ping", { id = "4" }), "registries/4", "an action on an object names it")
  t.eq(object("/api/v1/policies/{id}/executions", { id = "3" }, 41), "executions/41", "a run names the execution")
  t.eq(object("/api/v1/policies/{id}/executions", { id = "3" }), "policies/3", "a refused run names the policy")
  t.eq(object("/api/v1/executions/{id}/retry", { id = "41" }, 41), "executions/41")
  t.eq(object("/api/v1/functions/{kind}/{name}", { kind = "distribution", name = "push" }), "functions/distribution/push")
  t.eq(object("/api/v1/templates/{name}", { name = "mirror" }, nil), "templates/mirror")
  t.eq(object("/api/v1/validate"), "nil/nil", "a validation is about no object")
  t.eq(object(nil), "nil/nil", "an unknown path neither")
end)

t.test("every write route of the daemon but validate, the webhooks and callbacks names a kind", function()
  local missing = {}
  for _, rt in ipairs(serve.router({}).list()) do
    local req = { method = rt.method, path = rt.path }
    if rt.method ~= "GET" and audit.wanted(req) and rt.path ~= "/api/v1/validate" then
      local params = {}
      for name in rt.path:gmatch("{(%w+)}") do params[name] = "x" end
      if not audit.object_of(rt.path, params, nil) then missing[#missing + 1] = rt.method .. " " .. rt.path end
    end
  end
  t.eq(table.concat(missing, ", "), "", "write routes without an object kind")
end)

t.test("only writes under /api/v1, and neither webhooks nor callbacks, are recorded", function()
  t.eq(audit.wanted{ method = "POST", path = "/api/v1/policies" }, true)
  t.eq(audit.wanted{ method = "DELETE", path = "/api/v1/policies/1" }, true)
  t.eq(audit.wanted{ method = "PATCH", path = "/api/v1/anything" }, true, "an unknown path too")
  t.eq(audit.wanted{ method = "GET", path = "/api/v1/policies" }, false)
  t.eq(audit.wanted{ method = "HEAD", path = "/api/v1/policies" }, false)
  t.eq(audit.wanted{ method = "POST", path = "/api/v1/webhooks/harbor" }, false)
  t.eq(audit.wanted{ method = "POST", path = "/api/v1/callbacks/faas/tok" }, false)
  t.eq(audit.wanted{ method = "POST", path = "/login" }, false)
end)

t.test("retention's options: defaults, 0 keeps all, bad values are refused", function()
  local c = assert(retention.config({}))
  t.eq(c.executions .. " " .. c.events .. " " .. c.audit, "50 " .. 30 * 86400 .. " " .. 90 * 86400)
  c = assert(retention.config({ keep_executions = "0", keep_events = "0.5", keep_audit = "0" }))
  t.eq(c.executions .. " " .. c.events .. " " .. c.audit, "0 43200.0 0")
  for _, bad in ipairs{ { keep_executions = "-1" }, { keep_executions = "2.5" }, { keep_executions = "x" },
                        { keep_events = "-1" }, { keep_events = "nan" }, { keep_audit = "" } } do
    local ok, err = retention.config(bad)
    local k = next(bad)
    t.eq(ok, nil, k .. "=" .. bad[k])
    t.match(err, "^%-%-keep%-", "the message names the option")
  end
end)

t.test("the periodic pass is hourly, or a quarter of a short window, at least 10 s apart", function()
  t.eq(assert(retention.config({})).every, 3600)
  t.eq(assert(retention.config({ keep_events = "0.5" })).every, 3600, "a 12-hour window: hourly")
  t.eq(assert(retention.config({ keep_events = "0.1" })).every, 0.1 * 86400 / 4, "2.4 hours: every 36 min")
  t.eq(assert(retention.config({ keep_events = "30", keep_audit = "0.01" })).every, 0.01 * 86400 / 4,
       "the shorter window decides")
  t.eq(assert(retention.config({ keep_events = "0.0001" })).every, 10, "never more often than every 10 s")
  t.eq(assert(retention.config({ keep_events = "0", keep_audit = "0" })).every, 3600, "0 (keep all) is no window")
end)

t.done()
