-- serve/registries.lua - /api/v1/registries: the registries replication
-- reads from and writes to. Passwords and webhook secrets are write-only:
-- the password is sealed with the keyring (AES-256-GCM, bound to the
-- registry's name), the webhook secret is kept as its SHA-256, and neither
-- appears in any response. A client certificate (mTLS) is named by paths on
-- the daemon's machine (cert_file, key_file), as the CA is (ca_file): the
-- key stays in its file, readable by the daemon only, and never enters the
-- database or an API answer.
local api = require("serve.api")
local oci = require("oci")
local kinds = require("kinds")

local registries = {}

local function check_url(v)
  if not v:match("^https?://[^/@%s]+$") and not v:match("^https?://[^/@%s]+/[^@%s]*$") then
    return "must be an http:// or https:// URL without credentials"
  end
end

local function check_name(v)
  if not v:match("^[%w][%w%._%-]*$") or #v > 128 then
    return "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
  end
end

local function check_kind(v)
  if not v:match("^[a-z][a-z0-9_%-]*$") then return "must be a lower-case registry kind (e.g. distribution)" end
  local _, err = kinds.load(v)
  if err then return "names no usable registry kind: " .. err end
end

-- Checks an object of string values (credentials, options).
local function check_strings(v)
  for k, x in pairs(v) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then return "has a bad field name" end
    if type(x) ~= "string" and x ~= json.null then return "must map names to strings" end
  end
end

local SPEC = {
  name = { type = "string", required = true, check = check_name },
  kind = { type = "string", check = check_kind },
  url = { type = "string", required = true, check = check_url },
  description = { type = "string", nullable = true },
  username = { type = "string", nullable = true },
  password = { type = "string", nullable = true },
  ca_file = { type = "string", nullable = true },
  cert_file = { type = "string", nullable = true },
  key_file = { type = "string", nullable = true },
  insecure = { type = "boolean" },
  credentials = { type = "object", check = check_strings },
  options = { type = "object", check = check_strings },
  webhook_secret = { type = "string", nullable = true,
                     check = function(v) if #v < 16 then return "must be at least 16 characters" end end },
}

-- The API view of a row: never the password or the secret.
local function view(row)
  return {
    id = row.id, name = row.name, kind = row.kind, url = row.url,
    description = row.description, username = row.username, ca_file = row.ca_file,
    cert_file = row.cert_file, key_file = row.key_file,
    insecure = row.insecure == 1, has_password = row.password_sealed ~= nil,
    credentials_set = setmetatable(row.credential_names and json.decode(row.credential_names) or {}, json.array_mt),
    options = row.options and json.decode(row.options) or nil,
    has_webhook_secret = row.webhook_secret_hash ~= nil,
    created = api.iso(row.created), updated = api.iso(row.updated),
  }
end

-- Loads a registry row by id, or raises 404.
local function load(db, id)
  return api.load_row(db, "registries", id, "registry")
end

-- The spec of registry row: {url, kind (the kind's name), fields (the
-- credentials by name, opened), options, tls}, what the FaaS dispatcher
-- seals and sends; or nil, err. The caller owns the table; the fields are
-- in clear, so it never leaves the daemon unsealed.
function registries.spec(s, row)
  local password
  if row.password_sealed then
    local p, err = s.keyring:open(row.password_sealed, "registry:" .. row.id)
    if not p then return nil, string.format("registry %s: password: %s", row.name, err) end
    password = p
  end
  local fields = {}
  if row.credentials_sealed then
    local c, err = s.keyring:open(row.credentials_sealed, "registry-credentials:" .. row.id)
    if not c then return nil, string.format("registry %s: credentials: %s", row.name, err) end
    fields = json.decode(c) or {}
  end
  fields.username, fields.password = row.username, password
  return { url = row.url, kind = row.kind or "distribution", fields = fields,
           options = row.options and json.decode(row.options) or {},
           tls = { ca_file = row.ca_file, cert_file = row.cert_file, key_file = row.key_file,
                   insecure = row.insecure == 1 } }
end

-- A client for registry row (extra: {chunk_size, max_speed} for a target),
-- with its credentials opened (or taken from spec, the row's
-- registries.spec, when the caller has it); or nil, err. The caller owns
-- the client.
function registries.client(s, row, extra, spec)
  local serr
  if not spec then spec, serr = registries.spec(s, row) end
  if not spec then return nil, serr end
  local kind, kerr = kinds.load(spec.kind)
  if not kind then return nil, string.format("registry %s: %s", row.name, kerr) end
  local ok, client = pcall(oci.new, {
    url = spec.url, username = spec.fields.username, password = spec.fields.password,
    chunk_size = extra and extra.chunk_size, max_speed = extra and extra.max_speed,
    tls = spec.tls, kind = kind, credentials = spec.fields, kind_options = spec.options,
  })
  if not ok then return nil, string.format("registry %s: %s", row.name, tostring(client)) end
  return client
end

-- Checks the credential fields of body against the kind (the new one, or
-- the row's); raises 400 for a field the kind does not take.
local function check_fields(body, kind_name)
  if body.credentials == nil then return end
  local kind = assert(kinds.load(kind_name))
  local known = {}
  for _, c in ipairs(kind.credentials) do known[c.name] = true end
  for k in pairs(body.credentials) do
    if k == "username" or k == "password" then
      api.fail(400, "field 'credentials': give %s as the field '%s'", k, k)
    end
    if not known[k] then api.fail(400, "field 'credentials': the %s kind takes no '%s'", kind.name, k) end
  end
end

-- Raises 400 when the registry would have a client key without its
-- certificate: body's fields, else the row's (nil for a new registry).
local function check_client_cert(body, row)
  local function value(f)
    local v = body[f]
    if v == nil and row then v = row[f] end
    if v == json.null or v == "" then return nil end
    return v
  end
  if value("key_file") and not value("cert_file") then
    api.fail(400, "field 'key_file': needs 'cert_file' (the client certificate the key belongs to)")
  end
end

local function conflict(name)
  return string.format("a registry named '%s' exists already", tostring(name))
end

-- Writes the fields of body into the row with id (create or update).
local function store_fields(s, id, body)
  local cols = {}
  for _, f in ipairs({ "name", "kind", "url", "description", "username", "ca_file", "cert_file", "key_file" }) do
    if body[f] ~= nil then cols[#cols + 1] = { f, body[f] } end
  end
  if body.insecure ~= nil then cols[#cols + 1] = { "insecure", body.insecure and 1 or 0 } end
  if body.password ~= nil then
    cols[#cols + 1] = { "password_sealed", body.password ~= json.null and body.password ~= ""
                        and s.keyring:seal(body.password, "registry:" .. id) or nil }
  end
  if body.credentials ~= nil then
    local row = s.db:row("SELECT credentials_sealed FROM registries WHERE id = ?", id)
    local cur = {}
    if row and row.credentials_sealed then
      cur = json.decode(assert(s.keyring:open(row.credentials_sealed, "registry-credentials:" .. id))) or {}
    end
    for k, v in pairs(body.credentials) do
      if v == json.null or v == "" then cur[k] = nil else cur[k] = v end
    end
    local names = {}
    for k in pairs(cur) do names[#names + 1] = k end
    table.sort(names)
    cols[#cols + 1] = { "credentials_sealed", #names > 0 and s.keyring:seal(json.encode(cur), "registry-credentials:" .. id) or nil }
    cols[#cols + 1] = { "credential_names", #names > 0 and json.encode(names) or nil }
  end
  if body.options ~= nil then cols[#cols + 1] = { "options", json.encode(body.options) } end
  if body.webhook_secret ~= nil then
    cols[#cols + 1] = { "webhook_secret_hash",
                        body.webhook_secret ~= json.null and digest.sha256(body.webhook_secret) or nil }
  end
  api.update_row(s.db, "registries", id, cols, conflict(body.name))
end

local function create(s, req)
  local body = api.validate(api.body(req), SPEC)
  check_fields(body, body.kind or "distribution")
  check_client_cert(body, nil)
  local now = time.now()
  local id
  local ok, err = s.db:transaction(function()
    id = select(2, api.write(s.db, conflict(body.name),
      "INSERT INTO registries (name, kind, url, created, updated) VALUES (?, ?, ?, ?, ?)",
      body.name, body.kind or "distribution", body.url, now, now))
    store_fields(s, id, body)
    return true
  end)
  if not ok then error(err) end
  return api.reply(req, 201, view(load(s.db, id)))
end

local function update(s, req, p)
  local id = api.id(p.id, "registry")
  local row = load(s.db, id)
  local body = api.validate(api.body(req), SPEC, true)
  check_fields(body, body.kind or row.kind)
  check_client_cert(body, row)
  store_fields(s, id, body)
  return api.reply(req, 200, view(load(s.db, id)))
end

local function delete(s, req, p)
  local id = api.id(p.id, "registry")
  load(s.db, id)
  local used = s.db:row("SELECT name FROM policies WHERE src_registry = ? OR dst_registry = ? LIMIT 1", id, id)
  if used then api.fail(409, "registry %d is used by policy '%s'", id, used.name) end
  assert(s.db:exec("DELETE FROM registries WHERE id = ?", id))
  return api.reply(req, 204)
end

local function list(s, req)
  local limit, offset = api.paging(req)
  local out = setmetatable({}, json.array_mt)
  for _, row in ipairs(assert(s.db:query("SELECT * FROM registries ORDER BY id LIMIT ? OFFSET ?", limit, offset))) do
    out[#out + 1] = view(row)
  end
  return api.reply(req, 200, out)
end

-- POST /registries/{id}/ping: checks the registry answers /v2/ with the
-- stored credentials.
local function ping(s, req, p)
  local row = load(s.db, api.id(p.id, "registry"))
  local client, err = registries.client(s, row)
  if not client then return api.reply(req, 200, { ok = false, error = err }) end
  local ok, perr = client:ping()
  return api.reply(req, 200, { ok = ok and true or false, error = not ok and perr or nil })
end

-- Adds the routes to router r; s is the service state (db, keyring).
function registries.routes(r, s)
  r.add("GET", "/api/v1/registries", function(req) return list(s, req) end)
  r.add("POST", "/api/v1/registries", function(req) return create(s, req) end)
  r.add("GET", "/api/v1/registries/{id}", function(req, p)
    return api.reply(req, 200, view(load(s.db, api.id(p.id, "registry"))))
  end)
  r.add("PUT", "/api/v1/registries/{id}", function(req, p) return update(s, req, p) end)
  r.add("DELETE", "/api/v1/registries/{id}", function(req, p) return delete(s, req, p) end)
  r.add("POST", "/api/v1/registries/{id}/ping", function(req, p) return ping(s, req, p) end)
  r.add("GET", "/api/v1/kinds", function(req) return api.reply(req, 200, kinds.list()) end)
end

return registries
