-- serve/audit.lua - the audit trail: every API write (POST, PUT, PATCH,
-- DELETE under /api/v1 by a token holder, refused ones included) is
-- recorded after its answer: when, who (the token's name), from where (the
-- client's address), what (method, path without the query, the object's
-- kind and id) and the answer's status. Bodies are never recorded, so no
-- password, secret or source text is. Webhooks (the events table keeps
-- them) and the functions' callbacks (task_attempts) are not a user's
-- writes and are not recorded. GET /api/v1/audit lists the records.
local api = require("serve.api")

local audit = {}

local WRITES = { POST = true, PUT = true, PATCH = true, DELETE = true }

-- The path segments that name kinds of objects: a POST to one creates an
-- object whose id the answer carries.
local COLLECTIONS = { registries = true, policies = true, executions = true, functions = true,
                      templates = true }

-- Whether req is a write to record.
function audit.wanted(req)
  local path = req.path
  return WRITES[req.method] == true and path:find("^/api/v1/") ~= nil
    and not path:find("^/api/v1/webhooks/") and not path:find("^/api/v1/callbacks/")
end

-- The kind and id of the object a request to route pattern (with its
-- params) is about: the last segment followed by parameters names the kind,
-- the parameters ("kind/name" for a function) the id; a POST to a kind's
-- collection is about the object created (the answer's id).
function audit.object_of(pattern, params, created)
  if not pattern then return nil end
  local segs = {}
  for seg in pattern:gsub("^/api/v1/", ""):gmatch("[^/]+") do segs[#segs + 1] = seg end
  local kind, id
  local i = 1
  while i <= #segs do
    local seg = segs[i]
    local vals = {}
    while segs[i + 1] and segs[i + 1]:find("^{") do
      i = i + 1
      vals[#vals + 1] = params[segs[i]:sub(2, -2)]
    end
    if #vals > 0 then
      kind, id = seg, table.concat(vals, "/")
    elseif i == #segs and COLLECTIONS[seg] and (created ~= nil or not kind) then
      kind, id = seg, created
    end
    i = i + 1
  end
  return kind, id
end

-- Stores one record: fields who, address, method, path, object_kind,
-- object_id, status. A failure is logged, never raised (the answer has
-- gone already).
function audit.insert(db, r)
  local ok, err = db:exec([[INSERT INTO audit (time, who, address, method, path, object_kind, object_id, status)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?)]], time.now(), r.who, r.address or json.null,
                          r.method, r.path, r.object_kind or json.null,
                          r.object_id ~= nil and tostring(r.object_id) or json.null, r.status)
  if not ok then log.warn("audit: cannot record %s %s by %s: %s", r.method, r.path, r.who, tostring(err)) end
end

-- Records answered request req by token who; pattern and params are the
-- route it matched (nil for none).
function audit.record(s, req, who, pattern, params)
  local kind, id = audit.object_of(pattern, params or {}, api.created_id(req))
  audit.insert(s.db, { who = who or "?", address = req.peer, method = req.method, path = req.path,
                       object_kind = kind, object_id = id, status = req.status or 0 })
end

-- The API view of an audit row.
local function view(row)
  return { id = row.id, time = api.iso(row.time), who = row.who, address = row.address or json.null,
           method = row.method, path = row.path, object_kind = row.object_kind or json.null,
           object_id = row.object_id or json.null, status = row.status }
end

-- Adds GET /api/v1/audit (?limit=1..500, default 50; ?before=ID: the
-- records older than that one), newest first, with X-Total-Count.
function audit.routes(r, s)
  r.add("GET", "/api/v1/audit", function(req)
    local q = req.query or {}
    local limit = math.tointeger(tonumber(q.limit or "50"))
    if not limit or limit < 1 or limit > 500 then api.fail(400, "limit must be 1..500") end
    local before = math.maxinteger
    if q.before then
      before = math.tointeger(tonumber(q.before))
      if not before or before < 1 then api.fail(400, "before must be an audit record's id") end
    end
    local out = setmetatable({}, json.array_mt)
    for _, row in ipairs(assert(s.db:query("SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                                           before, limit))) do
      out[#out + 1] = view(row)
    end
    local total = s.db:row("SELECT count(*) AS n FROM audit").n
    return req:respond(200, { ["Content-Type"] = "application/json", ["X-Total-Count"] = tostring(total) },
                       json.encode(out))
  end)
end

return audit
