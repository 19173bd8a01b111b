-- serve/registries.lua - /api/v1/registries: the registries replication
-- reads from and writes to. Passwords and webhook secrets are write-only:
-- the password is sealed with the keyring (AES-256-GCM, bound to the
-- registry's name), the webhook secret is kept as its SHA-256, and neither
-- appears in any response.
local api = require("serve.api")
local oci = require("oci")

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
end

local SPEC = {
  name = { type = "string", required = true, check = check_name },
  kind = { type = "string", check = check_kind },
  url = { type = "string", required = true, check = check_url },
  description = { type = "string", nullable = true },
  username = { type = "string", nullable = true },
  password = { type = "string", nullable = true },
  ca_file = { type = "string", nullable = true },
  insecure = { type = "boolean" },
  webhook_secret = { type = "string", nullable = true,
                     check = function(v) if #v < 16 then return "must be at least 16 characters" end end },
}

-- The API view of a row: never the password or the secret.
local function view(row)
  return {
    id = row.id, name = row.name, kind = row.kind, url = row.url,
    description = row.description, username = row.username, ca_file = row.ca_file,
    insecure = row.insecure == 1, has_password = row.password_sealed ~= nil,
    has_webhook_secret = row.webhook_secret_hash ~= nil,
    created = api.iso(row.created), updated = api.iso(row.updated),
  }
end

-- Loads a registry row by id, or raises 404.
local function load(db, id)
  return api.load_row(db, "registries", id, "registry")
end

-- Builds an OCI client for a registry row, decrypting its password.
-- Returns the client or nil, err.
function registries.client(s, row, extra)
  local password
  if row.password_sealed then
    local p, err = s.keyring:open(row.password_sealed, "registry:" .. row.id)
    if not p then return nil, string.format("registry %s: password: %s", row.name, err) end
    password = p
  end
  local ok, client = pcall(oci.new, {
    url = row.url, username = row.username, password = password,
    chunk_size = extra and extra.chunk_size, max_speed = extra and extra.max_speed,
    tls = { ca_file = row.ca_file, insecure = row.insecure == 1 },
  })
  if not ok then return nil, string.format("registry %s: %s", row.name, tostring(client)) end
  return client
end

local function conflict(name)
  return string.format("a registry named '%s' exists already", tostring(name))
end

-- Writes the fields of body into the row with id (create or update).
local function store_fields(s, id, body)
  local cols = {}
  for _, f in ipairs({ "name", "kind", "url", "description", "username", "ca_file" }) do
    if body[f] ~= nil then cols[#cols + 1] = { f, body[f] } end
  end
  if body.insecure ~= nil then cols[#cols + 1] = { "insecure", body.insecure and 1 or 0 } end
  if body.password ~= nil then
    cols[#cols + 1] = { "password_sealed", body.password ~= json.null and body.password ~= ""
                        and s.keyring:seal(body.password, "registry:" .. id) or nil }
  end
  if body.webhook_secret ~= nil then
    cols[#cols + 1] = { "webhook_secret_hash",
                        body.webhook_secret ~= json.null and digest.sha256(body.webhook_secret) or nil }
  end
  api.update_row(s.db, "registries", id, cols, conflict(body.name))
end

local function create(s, req)
  local body = api.validate(api.body(req), SPEC)
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
  load(s.db, id)
  local body = api.validate(api.body(req), SPEC, true)
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
end

return registries
