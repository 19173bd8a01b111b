-- webhook.lua - registry webhook payloads, normalised into artifact events:
--   { action = "push" | "delete", repository = "library/alpine",
--     tag = "3.19" | nil, digest = "sha256:..." | nil, media_type = ... | nil,
--     host = "registry.example:5000" | nil, id = ... | nil, time = ... | nil }
-- webhook.distribution(body) -> events | nil, err   (CNCF Distribution)
-- webhook.harbor(body) -> events | nil, err         (Harbor, Default or CloudEvents)
-- The body is the decoded JSON. Events that are not manifest pushes or
-- deletes are left out, and so are malformed entries within a payload. An
-- event whose repository, tag or digest is not valid in the OCI grammar
-- (oci/reference.lua: "team-a/../team-b/app" is not a repository) is left out
-- with a warning naming it; a Harbor payload naming such a repository fails.
local reference = require("oci.reference")

local webhook = {}

local MANIFEST_TYPES = {
  ["application/vnd.docker.distribution.manifest.v2+json"] = true,
  ["application/vnd.docker.distribution.manifest.list.v2+json"] = true,
  ["application/vnd.docker.distribution.manifest.v1+json"] = true,
  ["application/vnd.docker.distribution.manifest.v1+prettyjws"] = true,
  ["application/vnd.oci.image.manifest.v1+json"] = true,
  ["application/vnd.oci.image.index.v1+json"] = true,
  ["application/vnd.oci.artifact.manifest.v1+json"] = true,  -- OCI 1.1 drafts
}

-- Returns whether mt is a manifest or index media type (parameters such as
-- "; charset=utf-8" and case are ignored).
function webhook.is_manifest_type(mt)
  if type(mt) ~= "string" then return false end
  return MANIFEST_TYPES[mt:match("^%s*([^;%s]*)"):lower()] == true
end

-- Returns v when it is a non-empty string (not json.null, not ""), else nil.
local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

-- Returns whether v is a table whose keys are exactly 1..n (an empty table
-- counts, since JSON [] and {} decode alike).
local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == #v
end

-- Checks the names of an event (repository, tag, digest: each when given);
-- returns true, or nil and the message of the first that is not valid.
local function valid_names(repository, tag, digest)
  local ok, err = reference.repository(repository)
  if ok and tag then ok, err = reference.tag(tag) end
  if ok and digest then ok, err = reference.digest(digest) end
  if not ok then return nil, err end
  return true
end

-- Normalises one Distribution event; returns nil for events to leave out.
local function distribution_event(ev)
  if type(ev) ~= "table" or type(ev.target) ~= "table" then return nil end
  local target = ev.target
  local repository = str(target.repository)
  if not repository then return nil end
  local mt = str(target.mediaType)
  local digest, tag = str(target.digest), str(target.tag)
  if ev.action == "push" then
    if not webhook.is_manifest_type(mt) or not digest then return nil end
  elseif ev.action == "delete" then
    -- Deletes carry no media type, so a manifest delete and a blob delete
    -- look alike; one that does name a non-manifest type is a blob. A
    -- delete with neither digest nor tag removed the whole repository.
    if (mt and not webhook.is_manifest_type(mt)) or not (digest or tag) then return nil end
  else
    return nil                       -- pull, mount
  end
  local valid, verr = valid_names(repository, tag, digest)
  if not valid then
    log.warn("distribution webhook: %s event left out: %s", ev.action, verr)
    return nil
  end
  local request = type(ev.request) == "table" and ev.request or {}
  return {
    action = ev.action, repository = repository, tag = tag, digest = digest,
    media_type = mt, host = str(request.host), id = str(ev.id), time = str(ev.timestamp),
  }
end

-- Normalises a CNCF Distribution notification envelope ({ events = [...] });
-- returns the manifest push and delete events, or nil, err when the body is
-- not an envelope.
function webhook.distribution(body)
  if type(body) ~= "table" then
    return nil, "distribution webhook: the body is not a JSON object"
  end
  if not is_array(body.events) then
    return nil, 'distribution webhook: "events" is missing or not an array'
  end
  local out = {}
  for _, ev in ipairs(body.events) do
    out[#out + 1] = distribution_event(ev)
  end
  return out
end

-- 10000-01-01: a larger occur_at is not a time os.date can show.
local MAX_TIME = 253402300800

local HARBOR_ACTIONS = {
  PUSH_ARTIFACT = "push", DELETE_ARTIFACT = "delete",
  ["harbor.artifact.pushed"] = "push", ["harbor.artifact.deleted"] = "delete",
}

-- Returns a tag unless it is really a digest: Harbor reports a push by
-- digest with the digest in the tag field.
local function harbor_tag(v)
  v = str(v)
  if v and not v:find(":", 1, true) then return v end
  return nil
end

-- Normalises a Harbor webhook, in the Default format or as a structured
-- CloudEvent (told apart by "specversion"); returns the artifact push and
-- delete events (an empty list for other event types), or nil, err.
function webhook.harbor(body)
  if type(body) ~= "table" then
    return nil, "harbor webhook: the body is not a JSON object"
  end
  local kind, data, id, time
  if body.specversion ~= nil then
    kind, data, id, time = body.type, body.data, str(body.id), str(body.time)
    -- Some senders wrap a Default-format payload in data.
    if type(data) == "table" and type(data.event_data) == "table" then data = data.event_data end
  else
    kind, data = body.type, body.event_data
    local at = tonumber(body.occur_at)
    if at and at >= 0 and at < MAX_TIME then time = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(at)) end
  end
  if not str(kind) then
    return nil, 'harbor webhook: "type" is missing'
  end
  local action = HARBOR_ACTIONS[kind]
  if not action then return {} end
  if type(data) ~= "table" or not is_array(data.resources) then
    return nil, string.format('harbor webhook: %s has no list of "resources"', kind)
  end
  local repo = type(data.repository) == "table" and data.repository or {}
  local repository = str(repo.repo_full_name)
  if not repository and str(repo.namespace) and str(repo.name) then
    repository = repo.namespace .. "/" .. repo.name
  end
  if not repository then
    return nil, string.format('harbor webhook: %s names no repository', kind)
  end
  local valid, verr = reference.repository(repository)
  if not valid then
    return nil, string.format("harbor webhook: %s: %s", kind, verr)
  end
  local out = {}
  for _, res in ipairs(data.resources) do
    if type(res) == "table" then
      local digest, tag = str(res.digest), harbor_tag(res.tag)
      local url = str(res.resource_url)
      local ok, err = valid_names(repository, tag, digest)
      if not ok then
        log.warn("harbor webhook: %s resource left out: %s", kind, err)
      elseif digest or tag then
        out[#out + 1] = {
          action = action, repository = repository, tag = tag, digest = digest,
          host = url and url:match("^([^/]+)/"), id = id, time = time,
        }
      end
    end
  end
  return out
end

return webhook
