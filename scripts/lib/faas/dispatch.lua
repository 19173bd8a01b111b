-- faas/dispatch.lua - the coordinator's side of `replica function`, sync
-- mode: each task is one POST to the gateway (OpenFaaS's /function/NAME, a
-- Knative service, an nginx upstream of instances), held open until the
-- function answers the task's stage results. Credentials travel sealed
-- under the key shared with the functions. A dispatch that the platform
-- lost (a connection error, 502, 503, 504, or 429 from max_inflight) is sent
-- again as the next attempt, with backoff; see docs/faas.md.
local invocation = require("faas.invocation")

local dispatch = {}

-- Statuses that mean "the platform did not run it": dispatched again.
local RETRIED = { [429] = true, [502] = true, [503] = true, [504] = true }

-- The invocation object of one side from its spec ({url, kind, fields,
-- options, tls}), with the fields sealed for that registry's URL. Returns a
-- new table; the fields never leave it in clear.
local function side_object(spec, keyring)
  local o = { url = spec.url, kind = spec.kind, options = next(spec.options or {}) and spec.options or nil }
  if spec.tls then
    o.ca_file, o.insecure = spec.tls.ca_file, spec.tls.insecure or nil
  end
  if spec.fields and next(spec.fields) then
    o.credentials = keyring:seal(json.encode(spec.fields), invocation.aad(spec.url))
  end
  return o
end

-- The delay before attempt n + 1 after answer res (nil: a connection error):
-- Retry-After when the function or gateway names one (capped at 60 s),
-- else 0.5 s doubled per attempt, capped at 10 s.
local function backoff(n, res)
  local ra = res and tonumber(res.headers["retry-after"])
  if ra and ra >= 0 then return math.min(ra, 60) end
  return math.min(0.5 * 2 ^ (n - 1), 10)
end

-- The error text of an answer: its JSON "error", or its status.
local function answer_error(res)
  local v = json.decode(res.body or "")
  local e = type(v) == "table" and type(v.error) == "string" and v.error or nil
  return string.format("http %d%s", res.status, e and (": " .. e) or "")
end

-- Returns a dispatcher for cfg = {gateway, token, keyring, template (its
-- name), source, target (side specs), options (the invocation's options
-- object), retries (attempts after the first), timeout (seconds a task may
-- take)}. Its run(t) sends task t and returns the record a local run
-- would: {repository, dest_repository, tags, status, stages, attempts},
-- with error when no function answered it.
function dispatch.new(cfg)
  local d = {}
  local source = side_object(cfg.source, cfg.keyring)
  local target = side_object(cfg.target, cfg.keyring)
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. cfg.token }

  -- Sends attempt n of task t; returns the answer or nil, err.
  local function send(t, n)
    local body = json.encode({ kind = "task", attempt = n, template = cfg.template,
      repository = t.repository, dest_repository = t.dest_repository,
      tags = setmetatable(t.tags, json.array_mt), options = cfg.options, source = source, target = target })
    return http.request{ method = "POST", url = cfg.gateway, headers = headers, body = body,
                         timeout = cfg.timeout, follow = false }
  end

  function d.run(t)
    local record = { repository = t.repository, dest_repository = t.dest_repository, tags = t.tags,
                     status = "failed", stages = setmetatable({}, json.array_mt) }
    for n = 1, cfg.retries + 1 do
      record.attempts = n
      local res, err = send(t, n)
      local v = res and res.status == 200 and json.decode(res.body or "")
      if type(v) == "table" and type(v.stages) == "table" then
        if v.attempt ~= n then
          record.error = string.format("the answer is for attempt %s, not %d", tostring(v.attempt), n)
          return record
        end
        record.status = v.status == "succeeded" and "succeeded" or "failed"
        record.stages, record.error = v.stages, nil
        return record
      end
      if res and res.status == 200 then
        record.error = "the function's answer is not a task result"
        return record
      end
      record.error = res and answer_error(res) or ("gateway " .. cfg.gateway .. ": " .. tostring(err))
      if res and not RETRIED[res.status] then return record end
      if n <= cfg.retries then
        local wait = backoff(n, res)
        log.warn("%s: attempt %d: %s; attempt %d in %.1f s", t.repository, n, record.error, n + 1, wait)
        if not time.sleep(wait) then
          record.error = "cancelled"
          return record
        end
      end
    end
    return record
  end

  return d
end

return dispatch
