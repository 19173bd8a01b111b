-- serve/webhooks.lua - POST /api/v1/webhooks/distribution and /harbor.
-- The Authorization header carries a source registry's webhook secret
-- ("Bearer <secret>" or the bare secret, as Harbor's "auth header" sends
-- it); the secret also tells which registry the events come from. Each
-- request is stored in the events table before the 2xx is sent, then its
-- artifacts are matched against the enabled event-triggered policies of
-- that registry and queued, coalesced per repository, in one transaction.
-- The insert is a durable commit (synced to disk before the 202). Events
-- still 'new' (the daemon died in between, or matching raised) are matched
-- at start and retried every few seconds after.
local api = require("serve.api")
local executions = require("serve.executions")
local webhook = require("webhook")
local scrape = require("serve.scrape")

local webhooks = {}

-- Finds the registry whose webhook secret the header carries, or nil (nil,
-- err when the registries cannot be read).
function webhooks.registry_of(db, header)
  if not header or header == "" then return nil end
  local secret = header:match("^[Bb]earer%s+(.-)%s*$") or header
  return db:row("SELECT id, name FROM registries WHERE webhook_secret_hash = ?", digest.sha256(secret))
end

-- The parser of a webhook source ("distribution" or "harbor").
local function parser(source)
  return source == "harbor" and webhook.harbor or webhook.distribution
end

-- Matches a stored event against the registry's event policies and queues
-- its artifacts (arts, when the caller parsed the payload already);
-- marks it matched or ignored, and starts the policies it queued work for.
-- Returns the ids of the executions it touched.
function webhooks.process(s, event_id, arts)
  local db = s.db
  local ev = db:row("SELECT * FROM events WHERE id = ?", event_id)
  if not ev or ev.status ~= "new" then return {} end
  local perr
  if not arts then arts, perr = parser(ev.source)(json.decode(ev.payload) or {}) end
  local touched, kick, reasons = {}, {}, {}
  local ok, err = db:transaction(function()
    if not arts then
      assert(db:exec("UPDATE events SET status = 'ignored', detail = ? WHERE id = ?", perr, event_id))
      return true
    end
    local pols = assert(db:query([[SELECT * FROM policies WHERE trigger = 'event' AND enabled = 1
                                   AND src_registry = ? ORDER BY id]], ev.registry))
    for _, p in ipairs(pols) do
      for _, a in ipairs(arts) do
        local id, why = executions.add_artifact(s, p, a)
        if id then
          touched[id] = true
          kick[p.id] = true
        else
          reasons[#reasons + 1] = string.format("policy %d: %s%s: %s", p.id, a.repository,
                                                a.tag and (":" .. a.tag) or "", why)
        end
      end
    end
    local n = 0
    for _ in pairs(touched) do n = n + 1 end
    local detail = string.format("%d artifact(s), %d policy(ies)%s", #arts, #pols,
                                 #reasons > 0 and ("; " .. table.concat(reasons, "; ", 1, math.min(#reasons, 20))) or "")
    assert(db:exec("UPDATE events SET status = ?, detail = ? WHERE id = ?",
                   n > 0 and "matched" or "ignored", detail, event_id))
    return true
  end)
  if not ok then
    log.error("webhook event %d: %s", event_id, tostring(err))
    return {}
  end
  scrape.webhook(s, ev.source, next(touched) and "matched" or "ignored")
  for pid in pairs(kick) do executions.kick(s, pid) end
  local ids = setmetatable({}, json.array_mt)
  for id in pairs(touched) do ids[#ids + 1] = id end
  table.sort(ids)
  return ids
end

-- Handles one webhook POST of the given source ("distribution" or "harbor").
local function receive(s, req, source)
  local reg = webhooks.registry_of(s.db, req:header("authorization"))
  if not reg then
    return api.reply_error(req, 401, "missing or unknown webhook secret (Authorization header)")
  end
  local arts, perr = parser(source)(api.body(req))
  if not arts then api.fail(400, "not a %s webhook payload: %s", source, perr) end
  local id = assert(s.db:durable_transaction(function()
    local _, rowid = assert(s.db:exec([[INSERT INTO events (received, source, payload, registry, status)
                                        VALUES (?, ?, ?, ?, 'new')]], time.now(), source, req.body, reg.id))
    return rowid
  end))
  scrape.webhook(s, source, "received")
  local execs = webhooks.process(s, id, arts)
  return api.reply(req, 202, { event = id, artifacts = #arts, executions = execs })
end

-- Matches the events still 'new' that were received at least min_age
-- seconds ago (all of them without min_age): those a crash or a failed
-- matching left. An event whose matching raises stays 'new' for the next
-- call. Returns how many were matched or ignored.
function webhooks.rematch(s, min_age)
  local before = min_age and (time.now() - min_age) or math.huge
  local rows, err = s.db:query("SELECT id FROM events WHERE status = 'new' AND received <= ? ORDER BY id", before)
  if not rows then
    log.warn("webhook events: cannot list the unmatched ones: %s", tostring(err))
    return 0
  end
  local n = 0
  for _, r in ipairs(rows) do
    local ok, perr = pcall(webhooks.process, s, r.id)
    if not ok then
      log.warn("webhook event %d: matching failed, retried later: %s", r.id, tostring(perr))
    elseif s.db:row("SELECT 1 AS done FROM events WHERE id = ? AND status <> 'new'", r.id) then
      n = n + 1
    end
  end
  if n > 0 then log.info("matched %d webhook event(s) left unmatched", n) end
  return n
end

-- Matches the events left 'new' by a crash (at start).
function webhooks.recover(s)
  webhooks.rematch(s)
end

function webhooks.routes(r, s)
  r.add("POST", "/api/v1/webhooks/distribution", function(req) return receive(s, req, "distribution") end)
  r.add("POST", "/api/v1/webhooks/harbor", function(req) return receive(s, req, "harbor") end)
  r.add("GET", "/api/v1/events/received", function(req)
    local limit, offset = api.paging(req)
    local out = setmetatable({}, json.array_mt)
    for _, e in ipairs(assert(s.db:query([[SELECT id, received, source, registry, status, detail FROM events
                                           ORDER BY id DESC LIMIT ? OFFSET ?]], limit, offset))) do
      e.received = api.iso(e.received)
      out[#out + 1] = e
    end
    return api.reply(req, 200, out)
  end)
end

return webhooks
