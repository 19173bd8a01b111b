-- faas/invocation.lua - reading one `replica function` invocation: checks
-- its JSON (a whole task: template, source and target registry, repository,
-- tags, options), opens its sealed registry credentials and builds the two
-- registry clients. Every refusal is a status (400, 413, 422) and a message
-- that names the field; no message holds a credential.
local reference = require("oci.reference")
local runner = require("runner")
local endpoint = require("endpoint")
local replicate = require("replicate")

local invocation = {}

-- The AAD that binds sealed credentials to their purpose and registry: a
-- blob sealed for one registry URL does not open for another.
function invocation.aad(url)
  return "replica:function-credentials:" .. endpoint.url(url)
end

local OPTIONS = { override = "boolean", bandwidth = "string", chunk_size = "string", stall_timeout = "number",
                  platforms = "table" }
local SIDE_FIELDS = { url = true, kind = true, credentials = true, options = true, insecure = true,
                      ca_file = true, cert_file = true, key_file = true }

-- Returns a 400 refusal: nil, 400, message.
local function bad(fmt, ...)
  return nil, 400, string.format(fmt, ...)
end

-- Checks the options object; returns the options table the stages get, or
-- nil, status, err.
local function read_options(o)
  if o == nil then o = {} end
  if type(o) ~= "table" then return bad("options must be an object") end
  local out = { override = true }
  for k, v in pairs(o) do
    if not OPTIONS[k] then return bad("options.%s is not an option (known: bandwidth, chunk_size, override, platforms, stall_timeout)", tostring(k)) end
    if type(v) ~= OPTIONS[k] then return bad("options.%s must be a %s", k, OPTIONS[k] == "table" and "list" or OPTIONS[k]) end
    out[k] = v
  end
  if out.bandwidth then
    out.bandwidth = replicate.parse_bytes(out.bandwidth)
    if not out.bandwidth or out.bandwidth < 1024 then return bad("options.bandwidth must be a byte rate of at least 1K (e.g. 10M)") end
  end
  if out.stall_timeout and not (out.stall_timeout > 0 and out.stall_timeout < math.huge) then
    return bad("options.stall_timeout must be a number of seconds above 0")
  end
  if out.chunk_size then
    out.chunk_size = replicate.parse_bytes(out.chunk_size)
    if not out.chunk_size or out.chunk_size < 1024 then return bad("options.chunk_size must be a byte count of at least 1K (e.g. 10M)") end
  end
  if out.platforms then
    for i, p in ipairs(out.platforms) do
      if type(p) ~= "string" then return bad("options.platforms[%d] must be a string", i) end
    end
  end
  return out
end

-- Opens side's sealed credentials with keyring; returns the fields by name
-- (username, password, the kind's others), or nil, status, err.
local function open_credentials(name, side, keyring)
  if side.credentials == nil then return {} end
  if type(side.credentials) ~= "string" then
    return bad("%s.credentials must be a sealed string (replica function seal): plain credentials are refused", name)
  end
  local plain = keyring:open(side.credentials, invocation.aad(side.url))
  if not plain then
    return nil, 422, string.format("%s.credentials could not be opened with this key (--seal-key-file): "
      .. "sealed under another key, for another registry URL, or damaged", name)
  end
  local fields = json.decode(plain)
  if type(fields) ~= "table" then return nil, 422, name .. ".credentials: the sealed text is not a JSON object" end
  local out = {}
  for k, v in pairs(fields) do
    if type(k) ~= "string" or type(v) ~= "string" then
      return nil, 422, name .. ".credentials: every sealed field must be a string"
    end
    out[k:lower()] = v
  end
  return out
end

-- Builds the client of one side (name "source" or "target") from its object;
-- returns the client or nil, status, err.
local function side_client(name, side, keyring, opts)
  if type(side) ~= "table" then return bad("%s must be an object with a url", name) end
  for k in pairs(side) do
    if not SIDE_FIELDS[k] then
      return bad("%s.%s is not a field (known: url, kind, credentials, options, insecure, ca_file, cert_file, "
        .. "key_file)", name, tostring(k))
    end
  end
  if type(side.url) ~= "string" or side.url == "" then return bad("%s.url must be a registry URL", name) end
  if side.kind ~= nil and type(side.kind) ~= "string" then return bad("%s.kind must be a string", name) end
  if side.options ~= nil and type(side.options) ~= "table" then return bad("%s.options must be an object", name) end
  local fields, status, err = open_credentials(name, side, keyring)
  if not fields then return nil, status, err end
  local url = endpoint.url(side.url)
  for _, f in ipairs({ "ca_file", "cert_file", "key_file" }) do
    if side[f] ~= nil and type(side[f]) ~= "string" then return bad("%s.%s must be a file path", name, f) end
  end
  if side.key_file and not side.cert_file then return bad("%s.key_file needs %s.cert_file", name, name) end
  local tls = { ca_file = side.ca_file, cert_file = side.cert_file, key_file = side.key_file,
                insecure = side.insecure == true }
  local kind, kerr = endpoint.kind(url, side.kind, tls)
  if not kind then return bad("%s.kind: %s", name, kerr) end
  local ok, cerr = endpoint.check_credentials(kind, fields, function(c)
    return "seal it into " .. name .. ".credentials as \"" .. c .. "\""
  end)
  if not ok then return bad("%s.credentials: %s", name, cerr) end
  local options = {}
  for k, v in pairs(side.options or {}) do options[tostring(k):lower()] = tostring(v) end
  local client, oerr = endpoint.client{ url = url, kind = kind, fields = fields, options = options, tls = tls,
                                        chunk_size = name == "target" and opts.chunk_size or nil,
                                        max_speed = name == "target" and opts.bandwidth or nil,
                                        timeout = opts.stall_timeout }
  if not client then return bad("%s: %s", name, oerr) end
  return client
end

-- Checks a list of tag names; returns it or nil, status, err.
local function read_tags(tags)
  if type(tags) ~= "table" or #tags == 0 then return bad("tags must be a non-empty list of tag names") end
  local out = {}
  for i, t in ipairs(tags) do
    if type(t) ~= "string" then return bad("tags[%d] must be a string", i) end
    local ok, err = reference.tag(t)
    if not ok then return bad("tags[%d]: %s", i, err) end
    out[i] = t
  end
  return out
end

-- Checks the one-stage fields of invocation inv for template: stage (the
-- name of one of its stages that runs a function), input (any JSON),
-- results and data (objects: the earlier stages' outputs and the task's
-- data). Returns the stage's name, or nil, err.
local function read_stage(inv, template)
  if type(inv.stage) ~= "string" then return nil, "stage must be the name of a stage of the template" end
  local found
  for _, st in ipairs(template.stages) do
    if st.name == inv.stage then found = st end
  end
  if not found then return nil, string.format("stage: template '%s' has no stage '%s'", template.name, inv.stage) end
  if not found.fn then
    return nil, string.format("stage: stage '%s' of template '%s' names no function to run here", inv.stage, template.name)
  end
  for _, f in ipairs({ "results", "data" }) do
    if inv[f] ~= nil and (type(inv[f]) ~= "table" or (next(inv[f]) ~= nil and #inv[f] > 0)) then
      return nil, f .. " must be an object"
    end
  end
  return inv.stage
end

-- Whether s can be a call id: what names one attempt, in a cancel too.
function invocation.call_id_ok(s)
  return #s >= 1 and #s <= 128 and not s:find("[^%w%._:/%-]")
end

-- Parses and checks the invocation body (too_large: the body was over
-- --max-body), opening credentials with keyring. Returns the invocation
-- {kind = "task" or "stage", attempt, template, task, src, dst, options,
-- callback_url, callback_token, call_id, heartbeat, execution, task_id
-- (the coordinator's, for the log); for a stage also stage
-- (its name), input, results, data}, or a cancel {kind = "cancel", call_id},
-- or nil, status, err.
function invocation.read(body, too_large, keyring)
  if too_large then return nil, 413, "the invocation is larger than --max-body" end
  local inv, jerr = json.decode(body or "")
  if inv == nil then return bad("the body is not JSON: %s", tostring(jerr)) end
  if type(inv) ~= "table" then return bad("the body must be a JSON object") end
  if inv.cancel ~= nil then
    if type(inv.cancel) ~= "string" or not invocation.call_id_ok(inv.cancel) then
      return bad("cancel must be the call id of an invocation")
    end
    return { kind = "cancel", call_id = inv.cancel }
  end
  local kind = inv.kind == nil and "task" or inv.kind
  if kind ~= "task" and kind ~= "stage" then return bad("kind must be \"task\" or \"stage\"") end
  local attempt = inv.attempt == nil and 1 or math.tointeger(inv.attempt)
  if not attempt or attempt < 1 then return bad("attempt must be a positive integer") end
  if type(inv.template) ~= "string" then return bad("template must be a template name, e.g. \"distribution\"") end
  local template, terr = runner.template(inv.template)
  if not template then return bad("template: %s", terr) end
  local stage
  if kind == "stage" then
    local serr
    stage, serr = read_stage(inv, template)
    if not stage then return bad("%s", serr) end
  end
  if type(inv.repository) ~= "string" then return bad("repository must be a repository name") end
  local ok, rerr = reference.repository(inv.repository)
  if not ok then return bad("repository: %s", rerr) end
  local dest = inv.dest_repository == nil and inv.repository or inv.dest_repository
  if type(dest) ~= "string" then return bad("dest_repository must be a repository name") end
  ok, rerr = reference.repository(dest)
  if not ok then return bad("dest_repository: %s", rerr) end
  local tags, status, err = read_tags(inv.tags)
  if not tags then return nil, status, err end
  local opts
  opts, status, err = read_options(inv.options)
  if not opts then return nil, status, err end
  if inv.callback_url ~= nil and (type(inv.callback_url) ~= "string" or not inv.callback_url:find("^https?://")) then
    return bad("callback_url must be an http(s) URL")
  end
  if inv.callback_token ~= nil and type(inv.callback_token) ~= "string" then return bad("callback_token must be a string") end
  if inv.call_id ~= nil and (type(inv.call_id) ~= "string" or not invocation.call_id_ok(inv.call_id)) then
    return bad("call_id must be 1 to 128 letters, digits and . _ : / -")
  end
  local heartbeat = inv.heartbeat
  if heartbeat ~= nil and (type(heartbeat) ~= "number" or heartbeat < 1 or heartbeat > 3600) then
    return bad("heartbeat must be a number of seconds from 1 to 3600")
  end
  local ids = {}
  for _, k in ipairs{ "execution", "task_id" } do
    if inv[k] ~= nil then
      ids[k] = type(inv[k]) == "number" and math.tointeger(inv[k])
      if not ids[k] or ids[k] < 1 then return bad("%s must be a positive integer", k) end
    end
  end
  if inv.source == nil then return bad("source must be an object with a url") end
  if inv.target == nil then return bad("target must be an object with a url") end
  local src, dst
  src, status, err = side_client("source", inv.source, keyring, opts)
  if not src then return nil, status, err end
  dst, status, err = side_client("target", inv.target, keyring, opts)
  if not dst then return nil, status, err end
  return { kind = kind, attempt = attempt, template = template, src = src, dst = dst, options = opts,
           stage = stage, input = kind == "stage" and inv.input or nil, results = inv.results, data = inv.data,
           task = { kind = "copy", repository = inv.repository, dest_repository = dest, tags = tags },
           callback_url = inv.callback_url, callback_token = inv.callback_token, call_id = inv.call_id,
           heartbeat = heartbeat, execution = ids.execution, task_id = ids.task_id }
end

return invocation
