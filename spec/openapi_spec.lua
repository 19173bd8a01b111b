-- docs/openapi.yaml against the daemon: every route the real router serves
-- (serve.router) is documented with its method, every documented operation
-- is served, and the file is sound OpenAPI 3.1 as far as a line-based reader
-- can tell (no YAML library: the file keeps to a regular subset of YAML).
--
-- The rule for what is not the router's: an operation tagged `console` is
-- the web console's (serve/console.lua answers every path outside /api/),
-- and one marked `x-outside-router: true` is answered by serve.lua's handle
-- before the router (the health check, the event stream, GET /metrics). Neither may be a
-- route of the router, and serve.lua must name the latter's path.
--
-- Run from the repository's root (as tests/run.sh does); it needs no servers.
local t = require("tap").new(...)
local api = require("serve.api")
local serve = require("serve")

local DOC = "docs/openapi.yaml"
local METHODS = { get = true, put = true, post = true, delete = true, patch = true, head = true,
                  options = true, trace = true }

-- Reads file name of directory dir (relative to the repository's root).
local function read(dir, name)
  local files, err = sys.read_tree(dir)
  if not files then error(string.format("%s (run the spec from the repository's root)", err), 0) end
  return files[name] or error(string.format("%s/%s does not exist", dir, name), 0)
end

-- YAML, the subset docs/openapi.yaml is written in: block mappings and
-- block sequences by indentation (spaces), scalars plain or quoted on one
-- line, flow collections ([a, b], {k: v}) kept as text, block scalars (| and
-- >) skipped. Returns the root node; a node is {key, value, line, indent,
-- children, by}. Raises "docs/openapi.yaml:N: why" on anything else.
local function parse(text)
  local root = { key = "", indent = -1, line = 0, children = {}, by = {} }
  local stack = { root }
  local block -- the indent of a block scalar's key: deeper lines are its text
  local n = 0
  local function fail(why) error(string.format("%s:%d: %s", DOC, n, why), 0) end
  local function unquote(v)
    if v:find("^'") then
      if not v:find("'$") or #v < 2 then fail("unterminated quoted scalar") end
      return (v:sub(2, -2):gsub("''", "'"))
    elseif v:find('^"') then
      if not v:find('"$') or #v < 2 then fail("unterminated quoted scalar") end
      return v:sub(2, -2)
    end
    return v
  end
  local function add(parent, node)
    if parent.value and parent.value ~= "" then fail("a scalar cannot have children (continued plain scalar?)") end
    if node.seq and next(parent.by) or not node.seq and parent.items then
      fail("a node holds both mapping keys and sequence items")
    end
    node.parent = parent
    parent.children[#parent.children + 1] = node
    if node.seq then
      parent.items = (parent.items or 0) + 1
      node.key = parent.items
    else
      if parent.by[node.key] then fail(string.format("duplicate key '%s'", node.key)) end
      parent.by[node.key] = node
    end
    stack[#stack + 1] = node
  end
  for line in (text:gsub("\n?$", "\n")):gmatch("(.-)\n") do
    n = n + 1
    if line:find("\t") then fail("a tab (indent with spaces)") end
    local ind, rest = line:match("^( *)(.-)%s*$")
    ind = #ind
    if block and (rest == "" or ind > block) then goto continue end
    block = nil
    if rest == "" or rest:find("^#") then goto continue end
    while stack[#stack].indent >= ind do stack[#stack] = nil end
    if rest == "-" or rest:find("^%- ") then
      add(stack[#stack], { seq = true, indent = ind, line = n, children = {}, by = {} })
      rest = rest:gsub("^%-%s*", "")
      ind = ind + 2
      if rest == "" then goto continue end
      if not rest:find("^[^%s'\"{%[#][^:]*:$") and not rest:find("^[^%s'\"{%[#][^:]*: ")
         and not rest:find("^'[^']*':") and not rest:find('^"[^"]*":') then
        if rest:find("^[|>]") then block = ind - 2 else stack[#stack].value = unquote(rest) end -- a scalar item
        goto continue
      end
    end
    do
      local key, value
      if rest:find("^'") then key, value = rest:match("^'([^']*)':(.*)$")
      elseif rest:find('^"') then key, value = rest:match('^"([^"]*)":(.*)$')
      else key, value = rest:match("^([^%s{%[#%-][^:]*):(.*)$") end
      if not key or (value ~= "" and not value:find("^ ")) then
        fail("expected 'key: value' (continued plain scalars are not used here: write > or |)")
      end
      value = value:gsub("^%s+", "")
      local node = { key = key, indent = ind, line = n, children = {}, by = {} }
      add(stack[#stack], node)
      if value:find("^[|>]") then
        block = ind
        node.value = "" -- the text is not needed
      elseif value ~= "" then
        node.value = unquote(value)
      end
    end
    ::continue::
  end
  return root
end

-- The items of a one-line flow sequence "[a, b]".
local function flow_list(v)
  local out = {}
  if type(v) ~= "string" or not v:find("^%[.*%]$") then return nil end
  for item in v:sub(2, -2):gmatch("[^,]+") do
    out[#out + 1] = (item:gsub("^%s+", ""):gsub("%s+$", ""):gsub("^'(.*)'$", "%1"))
  end
  return out
end

-- Follows a local JSON pointer ("#/components/schemas/Error") from root.
local function resolve(root, ref)
  if type(ref) ~= "string" or not ref:find("^#/") then return nil end
  local node = root
  for part in ref:sub(3):gmatch("[^/]+") do
    part = part:gsub("~1", "/"):gsub("~0", "~")
    node = node.by[part]
    if not node then return nil end
  end
  return node
end

-- Calls fn(node) for every node under node.
local function walk(node, fn)
  for _, c in ipairs(node.children) do
    fn(c)
    walk(c, fn)
  end
end

local loaded
-- The parsed document and its operations: { {method = "GET", path, node,
-- line, tags, outside} ... } in file order. Cached.
local function doc()
  if loaded then return loaded end
  local root = parse(read("docs", "openapi.yaml"))
  local ops = {}
  local paths = root.by.paths or error(DOC .. ": no paths", 0)
  for _, p in ipairs(paths.children) do
    for _, m in ipairs(p.children) do
      if METHODS[m.key] then
        local tags = m.by.tags and flow_list(m.by.tags.value) or {}
        local console = false
        for _, tag in ipairs(tags) do console = console or tag == "console" end
        ops[#ops + 1] = { method = m.key:upper(), path = p.key, node = m, line = m.line, tags = tags,
                          console = console,
                          outside = m.by["x-outside-router"] and m.by["x-outside-router"].value == "true" }
      end
    end
  end
  loaded = { root = root, ops = ops }
  return loaded
end

-- Fails the test with one line per problem.
local function none(problems, what)
  if #problems > 0 then
    error(string.format("%d %s:\n  %s", #problems, what, table.concat(problems, "\n  ")), 0)
  end
end

-- Compares a router's routes with the documented operations. Returns the
-- problems, each one line: the routes served but not documented (or
-- documented as not the router's), and the documented operations the router
-- does not serve (or that are marked wrongly as not the router's).
local function compare(routes, d, serve_src)
  local problems, served, documented = {}, {}, {}
  local unserved = {}
  for _, rt in ipairs(routes) do served[rt.method .. " " .. rt.path] = true end
  for _, op in ipairs(d.ops) do documented[op.method .. " " .. op.path] = op end
  for _, rt in ipairs(routes) do
    local op = documented[rt.method .. " " .. rt.path]
    if not op then
      problems[#problems + 1] = string.format("%s %s is served but not in %s", rt.method, rt.path, DOC)
    elseif op.console or op.outside then
      problems[#problems + 1] = string.format("%s %s (%s:%d) is marked %s, but the router serves it", rt.method,
                                              rt.path, DOC, op.line, op.console and "console" or "x-outside-router")
    end
  end
  for _, op in ipairs(d.ops) do
    local key = op.method .. " " .. op.path
    if op.console then
      if op.path:find("^/api/") then
        unserved[#unserved + 1] = string.format("%s (%s:%d) is tagged console but under /api/", key, DOC, op.line)
      end
    elseif op.outside then
      if not serve_src:find('"' .. op.path .. '"', 1, true) then
        unserved[#unserved + 1] = string.format("%s (%s:%d) is marked x-outside-router, but serve.lua does not "
                                                .. "answer that path", key, DOC, op.line)
      end
    elseif not served[key] then
      unserved[#unserved + 1] = string.format("%s (%s:%d) is documented but the router does not serve it", key,
                                              DOC, op.line)
    end
  end
  return problems, unserved
end

-- The daemon's real router, built for a stand-in service state (building
-- it only registers the routes' functions).
local function routes()
  return serve.router({}).list()
end

t.test("the router lists its routes in the order added, each pattern as given", function()
  local r = api.router()
  r.add("GET", "/api/v1/things", function() end)
  r.add("POST", "/api/v1/things/{id}/poke", function() end)
  r.add("DELETE", "/api/v1/things/{id}", function() end)
  local got = {}
  for i, rt in ipairs(r.list()) do got[i] = rt.method .. " " .. rt.path end
  t.eq(table.concat(got, ", "), "GET /api/v1/things, POST /api/v1/things/{id}/poke, DELETE /api/v1/things/{id}")
  t.ok(#routes() > 20, "serve.router registers every module's routes")
end)

t.test("docs/openapi.yaml keeps to its YAML subset: paths at two spaces, methods at four", function()
  local d = doc()
  t.ok(#d.ops > 0, "operations found")
  local problems = {}
  for _, p in ipairs(d.root.by.paths.children) do
    if p.indent ~= 2 or not p.key:find("^/") then
      problems[#problems + 1] = string.format("%s:%d: a path must be at two spaces and start with /", DOC, p.line)
    end
    for _, m in ipairs(p.children) do
      if not METHODS[m.key] and m.key ~= "parameters" and m.key ~= "summary" and m.key ~= "description" then
        problems[#problems + 1] = string.format("%s:%d: '%s' is no method", DOC, m.line, m.key)
      elseif METHODS[m.key] and m.indent ~= 4 then
        problems[#problems + 1] = string.format("%s:%d: a method must be at four spaces", DOC, m.line)
      end
    end
  end
  none(problems, "style problem(s)")
  t.raises(function() parse("a: one\n  two\n") end, ":2: expected", "a continued plain scalar is refused")
  t.raises(function() parse("a: 1\n  b: 2\n") end, ":2: a scalar cannot have children")
  t.raises(function() parse("a: 1\na: 2\n") end, "duplicate key 'a'")
end)

t.test("it is OpenAPI 3.1 with info, components and its tags declared", function()
  local root = doc().root
  t.match(root.by.openapi and root.by.openapi.value, "^3%.1%.%d+$", "openapi")
  t.ok(root.by.info and root.by.info.by.title and root.by.info.by.version, "info has title and version")
  t.ok(not root.by.servers or not root.by.servers.children[1].by.url.value:find("/api"),
       "the servers carry no base path: paths are full")
  t.ok(root.by.components and root.by.components.by.schemas, "components.schemas")
  local declared = {}
  for _, tag in ipairs(root.by.tags.children) do declared[tag.by.name.value] = true end
  local problems = {}
  for _, op in ipairs(doc().ops) do
    if #op.tags == 0 then problems[#problems + 1] = string.format("%s:%d: no tags: [...]", DOC, op.line) end
    for _, tag in ipairs(op.tags) do
      if not declared[tag] then
        problems[#problems + 1] = string.format("%s:%d: tag '%s' is not declared under tags", DOC, op.line, tag)
      end
    end
  end
  none(problems, "tag problem(s)")
end)

t.test("every operation has a unique operationId and responses with status codes", function()
  local problems, ids = {}, {}
  for _, op in ipairs(doc().ops) do
    local where = string.format("%s:%d: %s %s", DOC, op.line, op.method, op.path)
    local id = op.node.by.operationId and op.node.by.operationId.value
    if not id then
      problems[#problems + 1] = where .. ": no operationId"
    elseif ids[id] then
      problems[#problems + 1] = string.format("%s: operationId %s is used at line %d too", where, id, ids[id])
    else
      ids[id] = op.line
    end
    local responses = op.node.by.responses
    if not responses or #responses.children == 0 then
      problems[#problems + 1] = where .. ": no responses"
    else
      for _, r in ipairs(responses.children) do
        if not (r.key:find("^[1-5]%d%d$") or r.key:find("^[1-5]XX$") or r.key == "default") then
          problems[#problems + 1] = string.format("%s:%d: '%s' is no status code", DOC, r.line, r.key)
        elseif not r.by["$ref"] and not r.by.description then
          problems[#problems + 1] = string.format("%s:%d: response %s has no description", DOC, r.line, r.key)
        end
      end
    end
  end
  none(problems, "operation problem(s)")
end)

t.test("every $ref points at a component that exists", function()
  local root, problems, n = doc().root, {}, 0
  walk(root, function(node)
    if node.key == "$ref" then
      n = n + 1
      if not (node.value or ""):find("^#/components/") then
        problems[#problems + 1] = string.format("%s:%d: %s is not a '#/components/...' reference", DOC, node.line,
                                                tostring(node.value))
      elseif not resolve(root, node.value) then
        problems[#problems + 1] = string.format("%s:%d: %s does not exist", DOC, node.line, node.value)
      end
    end
  end)
  t.ok(n > 50, "the document uses its components")
  none(problems, "dangling reference(s)")
  local s = root.by.components.by.schemas.by
  t.ok(s.Error and s.Error.by.required.value == "[error]", "Error is {error}")
  local diag = resolve(root, s.ValidationError.by.properties.by.diagnostics.by.items.by["$ref"].value)
  t.eq(diag.by.required.value, "[line, message, severity]", "ValidationError's diagnostics")
  t.eq(s.Registry.by.properties.by.password.by.writeOnly.value, "true", "Registry's password is write-only")
end)

t.test("path parameters are declared, required, and named as in the path", function()
  local root, problems = doc().root, {}
  for _, op in ipairs(doc().ops) do
    local want, got = {}, {}
    for name in op.path:gmatch("{(%w+)}") do want[#want + 1] = name end
    local params = {}
    for _, where in pairs({ op.node.parent.by.parameters or false, op.node.by.parameters or false }) do
      for _, p in ipairs(where and where.children or {}) do params[#params + 1] = p end
    end
    for _, p in ipairs(params) do
      local def = p.by["$ref"] and resolve(root, p.by["$ref"].value) or p
      if def and def.by["in"] and def.by["in"].value == "path" then
        got[#got + 1] = def.by.name.value
        if not (def.by.required and def.by.required.value == "true") then
          problems[#problems + 1] = string.format("%s:%d: path parameter %s is not required", DOC, p.line,
                                                  def.by.name.value)
        end
      end
    end
    table.sort(want)
    table.sort(got)
    if table.concat(want, ",") ~= table.concat(got, ",") then
      problems[#problems + 1] = string.format("%s:%d: %s %s declares path parameters {%s}", DOC, op.line,
                                              op.method, op.path, table.concat(got, ","))
    end
  end
  none(problems, "parameter problem(s)")
end)

t.test("security follows serve.lua: a bearer token except health, the webhooks (their secret), the FaaS callbacks (the token in their path), the console, and /metrics (a bearer token or the metrics token)",
       function()
  local root, problems = doc().root, {}
  t.eq(root.by.security.children[1].by.bearer.value, "[]", "bearer is the default")
  local schemes = root.by.components.by.securitySchemes.by
  t.eq(schemes.bearer.by.scheme.value, "bearer")
  t.eq(schemes.webhookSecret.by["in"].value .. " " .. schemes.webhookSecret.by.name.value, "header Authorization")
  for _, op in ipairs(doc().ops) do
    local sec = op.node.by.security
    local got = not sec and "bearer" or sec.value == "[]" and "none"
                or (sec.children[1] and sec.children[1].children[1] and sec.children[1].children[1].key)
    local want = op.path == "/metrics" and "bearer"
                 or (op.path == "/api/v1/health" or not op.path:find("^/api/")
                     or op.path:find("^/api/v1/callbacks/faas/")) and "none"
                 or op.path:find("^/api/v1/webhooks/") and "webhookSecret" or "bearer"
    if got ~= want then
      problems[#problems + 1] = string.format("%s:%d: %s %s: security %s, expected %s", DOC, op.line, op.method,
                                              op.path, tostring(got), want)
    end
  end
  none(problems, "security problem(s)")
end)

t.test("the console's documented headers are the ones serve/console.lua sends", function()
  local h = doc().root.by.components.by.headers.by
  t.eq(h.ContentSecurityPolicy.by.schema.by.example.value, require("serve.console").CSP, "Content-Security-Policy")
  t.eq(h.XContentTypeOptions.by.schema.by.const.value, "nosniff")
  t.eq(h.ReferrerPolicy.by.schema.by.const.value, "no-referrer")
  t.eq(h.XFrameOptions.by.schema.by.const.value, "DENY")
end)

t.test("every route the router serves is documented with its method", function()
  local undocumented = compare(routes(), doc(), read("scripts/lib", "serve.lua"))
  none(undocumented, "route(s) of serve.router missing from " .. DOC)
end)

t.test("every documented operation is served by the router, or marked as answered before it", function()
  local _, unserved = compare(routes(), doc(), read("scripts/lib", "serve.lua"))
  none(unserved, "operation(s) of " .. DOC .. " that serve.router does not serve")
end)

t.test("a route added to the router without documentation fails the comparison", function()
  local r = serve.router({})
  r.add("GET", "/api/v1/undocumented", function() end)
  r.add("DELETE", "/api/v1/registries/{id}/ping", function() end)
  local src = read("scripts/lib", "serve.lua")
  local base_undoc, base_unserved = compare(routes(), doc(), src)
  local undoc = compare(r.list(), doc(), src)
  t.eq(#undoc, #base_undoc + 2, table.concat(undoc, "; "))
  t.match(undoc[#undoc - 1], "^GET /api/v1/undocumented is served but not in")
  t.match(undoc[#undoc], "^DELETE /api/v1/registries/{id}/ping is served but not in")
  -- and the other way: a documented route the router lost
  local fewer = {}
  for _, rt in ipairs(routes()) do
    if rt.path ~= "/api/v1/events/received" then fewer[#fewer + 1] = rt end
  end
  local _, unserved = compare(fewer, doc(), src)
  t.eq(#unserved, #base_unserved + 1, table.concat(unserved, "; "))
  local found = false
  for _, p in ipairs(unserved) do
    found = found or p:find("^GET /api/v1/events/received %(.-%) is documented but the router does not serve it")
  end
  t.ok(found, "the lost route is named")
  -- and a route the router serves that the document says it does not
  local more = routes()
  more[#more + 1] = { method = "GET", path = "/api/v1/health" }
  local wrong = compare(more, doc(), src)
  t.match(wrong[#wrong], "^GET /api/v1/health %(.-%) is marked x%-outside%-router, but the router serves it")
end)

t.done()
