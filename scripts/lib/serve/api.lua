-- serve/api.lua - the plumbing of the HTTP API: routes, JSON replies and
-- errors, request bodies, and field validation for create/update bodies.
local loglimit = require("loglimit")

local api = {}

local JSON_HEADERS = { ["Content-Type"] = "application/json" }

-- An error a handler raises to answer with status and a JSON message.
local HttpError = {}
HttpError.__index = HttpError
HttpError.__tostring = function(e) return e.message end

-- Raises an HttpError (status, message); handlers use it for bad input.
function api.fail(status, fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  error(setmetatable({ status = status, message = msg }, HttpError), 0)
end

-- What a client is told when the database cannot be written, by the kind
-- that sys.db's error messages carry ("database unavailable (KIND): ...").
local UNAVAILABLE = {
  full = "the database is full (no space left on its disk): nothing was written; "
    .. "reads still work, and writes work again once there is room",
  readonly = "the database is read-only: nothing was written; reads still work",
  io = "the database cannot be written (an I/O error: is its filesystem read-only or failing?): "
    .. "nothing was written; reads still work",
}

-- Returns the 503 message for an error (a string, or anything tostring
-- takes) that says the database cannot be written, and the kind ("full",
-- "readonly", "io"); nil for any other error.
function api.unavailable(err)
  local kind = tostring(err):match("database unavailable %((%a+)%)")
  if not UNAVAILABLE[kind] then return nil end
  return UNAVAILABLE[kind], kind
end

local unavailable_log = loglimit.new(10)

-- Logs err (the database cannot be written) for method path, at most once
-- every 10 s, counting the lines left out.
local function warn_unavailable(method, path, err)
  local pass, quiet = unavailable_log:pass()
  if not pass then return end
  log.warn("%s %s: answered 503: %s%s", method, path, tostring(err),
           quiet > 0 and string.format(" (%d more such answers not logged)", quiet) or "")
end

-- Formats seconds since the epoch as ISO 8601 UTC with milliseconds; nil
-- stays nil.
function api.iso(t)
  if t == nil then return nil end
  local secs = math.floor(t)
  return string.format("%s.%03dZ", os.date("!%Y-%m-%dT%H:%M:%S", secs), math.floor((t - secs) * 1000))
end

-- The id of the object each request's 201 or 202 answer carried, for the
-- audit trail (serve/audit.lua); weak, so it goes with the request.
local created = setmetatable({}, { __mode = "k" })

-- Sends value as JSON with status.
function api.reply(req, status, value)
  if (status == 201 or status == 202) and type(value) == "table" and value.id ~= nil then created[req] = value.id end
  return req:respond(status, JSON_HEADERS, value == nil and "" or json.encode(value))
end

-- The id of the object that req's answer created (api.reply), or nil.
function api.created_id(req)
  return created[req]
end

-- Sends {"error": message}.
function api.reply_error(req, status, message)
  return req:respond(status, JSON_HEADERS, json.encode({ error = message }))
end

-- Decodes the request body as a JSON object; raises 400 on anything else.
function api.body(req)
  if req.too_large then api.fail(400, "request body is larger than the limit") end
  local body = req.body or ""
  if body == "" then api.fail(400, "request body must be a JSON object") end
  local v, err = json.decode(body)
  if v == nil then
    api.fail(400, "request body is not valid JSON: %s", (tostring(err):gsub("^.-: ", "")))
  end
  if type(v) ~= "table" or (next(v) == nil and body:match("^%s*%[")) or #v > 0 then
    api.fail(400, "request body must be a JSON object")
  end
  return v
end

-- Parses a path parameter as a positive integer id; raises 404 otherwise.
function api.id(s, what)
  local n = math.tointeger(tonumber(s))
  if not n or n < 1 or tostring(n) ~= s then api.fail(404, "%s %s not found", what, s) end
  return n
end

-- Loads row id of table tbl, or raises 404 naming what ("registry").
function api.load_row(db, tbl, id, what)
  local row = db:row("SELECT * FROM " .. tbl .. " WHERE id = ?", id)
  if not row then api.fail(404, "%s %d not found", what, id) end
  return row
end

-- Runs one write statement. A constraint violation (a name that is taken)
-- raises 409 with the message conflict; any other failure raises.
-- Returns changes, rowid.
function api.write(db, conflict, sql, ...)
  local n, rowid, kind = db:exec(sql, ...)
  if not n then
    if kind == "constraint" then api.fail(409, conflict) end
    error(rowid)
  end
  return n, rowid
end

-- Sets columns of row id in table tbl, and its `updated` time. cols is a
-- list of { column, value } (a nil value is NULL); conflict as api.write.
function api.update_row(db, tbl, id, cols, conflict)
  local sets, args = {}, {}
  for _, c in ipairs(cols) do
    sets[#sets + 1] = c[1] .. " = ?"
    args[#args + 1] = c[2] == nil and json.null or c[2]
  end
  sets[#sets + 1] = "updated = ?"
  args[#args + 1] = time.now()
  args[#args + 1] = id
  return api.write(db, conflict, "UPDATE " .. tbl .. " SET " .. table.concat(sets, ", ") .. " WHERE id = ?",
                   table.unpack(args, 1, #args))
end

-- Parses ?page=&page_size= into limit, offset (defaults 1 and 50, at most
-- 500); raises 400 for a page whose offset would overflow.
function api.paging(req)
  local q = req.query or {}
  local page = math.tointeger(tonumber(q.page or "1"))
  local size = math.tointeger(tonumber(q.page_size or "50"))
  if not page or page < 1 then api.fail(400, "page must be a positive integer") end
  if not size or size < 1 or size > 500 then api.fail(400, "page_size must be 1..500") end
  local last = math.maxinteger // size -- so that (page - 1) * size cannot overflow
  if page > last then api.fail(400, "page must be at most %d with page_size %d", last, size) end
  return size, (page - 1) * size
end

-- Field validation. A spec maps field names to { type, required, check }:
-- type is "string", "integer", "boolean", "array" (of strings) or "object";
-- check(v) returns nil or an error message. Unknown fields, wrong types and
-- missing required fields raise 400. Returns the body.
function api.validate(body, spec, partial)
  for k in pairs(body) do
    if type(k) ~= "string" or not spec[k] then
      api.fail(400, "unknown field '%s'", tostring(k))
    end
  end
  for name, f in pairs(spec) do
    local v = body[name]
    if v == nil or v == json.null then
      if v == json.null and f.nullable then
        body[name] = json.null
      elseif v == json.null then
        api.fail(400, "field '%s' must not be null", name)
      elseif f.required and not partial then
        api.fail(400, "missing required field '%s'", name)
      end
    else
      local t = f.type
      local good
      if t == "integer" then good = math.type(v) == "integer"
      elseif t == "array" then
        good = type(v) == "table" and (next(v) == nil or #v > 0)
        if good then
          for i, e in pairs(v) do
            if math.type(i) ~= "integer" or type(e) ~= "string" then good = false end
          end
        end
      elseif t == "object" then good = type(v) == "table"
      else good = type(v) == t end
      if not good then
        api.fail(400, "field '%s' must be %s", name,
                 t == "array" and "an array of strings" or (t == "integer" and "an integer" or "a " .. t))
      end
      if f.check then
        local msg = f.check(v)
        if msg then api.fail(400, "field '%s' %s", name, msg) end
      end
    end
  end
  return body
end

-- A router: add(method, pattern, fn) where pattern has {name} segments;
-- dispatch(req) calls fn(req, params) and turns raised HttpErrors into
-- replies, an error saying the database cannot be written (a full disk, a
-- read-only file, an I/O error: api.unavailable) into 503, and any other
-- into 500. Unknown paths get 404, known paths with another method 405.
-- list() returns the routes as { {method=, path=}, ... } in the order they
-- were added, each path the pattern as given to add.
function api.router()
  local routes = {}
  local r = {}

  function r.add(method, pattern, fn)
    local names = {}
    local lua_pat = "^" .. pattern:gsub("[%-%.]", "%%%0"):gsub("{(%w+)}", function(n)
      names[#names + 1] = n
      return "([^/]+)"
    end) .. "$"
    routes[#routes + 1] = { method = method, pattern = pattern, pat = lua_pat, names = names, fn = fn }
  end

  function r.list()
    local out = {}
    for i, rt in ipairs(routes) do out[i] = { method = rt.method, path = rt.pattern } end
    return out
  end

  function r.dispatch(req)
    local path = req.path:gsub("/+$", "")
    if path == "" then path = "/" end
    local allowed
    for _, rt in ipairs(routes) do
      local caps = { path:match(rt.pat) }
      if caps[1] then
        if rt.method == req.method or (req.method == "HEAD" and rt.method == "GET") then
          local params = {}
          for i, n in ipairs(rt.names) do params[n] = caps[i] end
          local ok, err = pcall(rt.fn, req, params)
          if not ok then
            if getmetatable(err) == HttpError then
              api.reply_error(req, err.status, err.message)
            elseif api.unavailable(err) then
              warn_unavailable(req.method, req.path, err)
              api.reply_error(req, 503, api.unavailable(err))
            else
              log.error("%s %s: %s", req.method, req.path, tostring(err))
              api.reply_error(req, 500, "internal error")
            end
          end
          return rt.pattern, params
        end
        allowed = allowed and (allowed .. ", " .. rt.method) or rt.method
      end
    end
    if allowed then
      req:respond(405, { ["Content-Type"] = "application/json", Allow = allowed },
                  json.encode({ error = string.format("method %s not allowed here (allowed: %s)", req.method, allowed) }))
    else
      api.reply_error(req, 404, "no such endpoint: " .. req.path)
    end
  end

  return r
end

return api
