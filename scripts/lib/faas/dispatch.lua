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
-- take), hooks}. Its run(t [, first]) sends task t as attempts first,
-- first + 1, ... (first defaults to 1) and returns the record a local run
-- would: {repository, dest_repository, tags, status, stages, attempts (the
-- last attempt's number)}, with error when no function answered it.
--
-- hooks (optional; `replica serve` gives them) keep the attempts' state:
--   begin(t, n) -> fields for the invocation ({call_id, callback_url,
--     heartbeat}), or nil, why when attempt n must not be sent; called
--     before it is sent, so the attempt is on record first;
--   deadline(t, n) -> the time (time.mono) attempt n's lease runs out, or
--     nil for none; a lease that runs out abandons the attempt as lost;
--   finish(t, n, outcome, err): outcome is "succeeded", "failed" (the
--     task ran and failed, or the answer was refused), "lost" (another
--     attempt follows, if any are left) or "cancelled".
function dispatch.new(cfg)
  local d = {}
  local source = side_object(cfg.source, cfg.keyring)
  local target = side_object(cfg.target, cfg.keyring)
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. cfg.token }
  local hooks = cfg.hooks or {}

  -- Sends attempt n of task t with the fields extra; returns the answer or
  -- nil, err.
  local function send(t, n, extra)
    local body = json.encode({ kind = "task", attempt = n, template = cfg.template,
      call_id = extra.call_id, callback_url = extra.callback_url, heartbeat = extra.heartbeat,
      repository = t.repository, dest_repository = t.dest_repository,
      tags = setmetatable(t.tags, json.array_mt), options = cfg.options, source = source, target = target })
    return http.request{ method = "POST", url = cfg.gateway, headers = headers, body = body,
                         timeout = cfg.timeout, follow = false }
  end

  -- send under attempt n's lease: when hooks.deadline's time passes with no
  -- renewal, the request is abandoned. Returns the answer, or nil, err and
  -- whether the lease ran out.
  local function send_leased(t, n, extra)
    if not hooks.deadline then
      local res, err = send(t, n, extra)
      return res, err
    end
    local res, err, expired
    local h = task.spawn({ name = "dispatch " .. t.repository }, function() res, err = send(t, n, extra) end)
    local watch = task.spawn({ name = "lease " .. t.repository }, function()
      while true do
        local at = hooks.deadline(t, n)
        if not at then return end
        local left = at - time.mono()
        if left <= 0 then
          expired = true
          h:cancel()
          return
        end
        if not time.sleep(left) then return end
      end
    end)
    h:wait()
    watch:cancel()
    if expired then return nil, "the lease ran out: no news from the function", true end
    return res, err
  end

  -- The record's outcome for hooks.finish.
  local function finish(t, n, outcome, err)
    if hooks.finish then hooks.finish(t, n, outcome, err) end
  end

  function d.run(t, first)
    first = first or 1
    local record = { repository = t.repository, dest_repository = t.dest_repository, tags = t.tags,
                     status = "failed", stages = setmetatable({}, json.array_mt) }
    for n = first, first + cfg.retries do
      record.attempts = n
      local extra, why = {}, nil
      if hooks.begin then extra, why = hooks.begin(t, n) end
      if not extra then
        record.error = why
        return record
      end
      local res, err, expired = send_leased(t, n, extra)
      if task.cancelled() then
        record.error = "cancelled"
        finish(t, n, "cancelled", "cancelled")
        return record
      end
      local v = res and res.status == 200 and json.decode(res.body or "")
      if type(v) == "table" and type(v.stages) == "table" then
        if v.attempt ~= n then
          record.error = string.format("the answer is for attempt %s, not %d", tostring(v.attempt), n)
          finish(t, n, "failed", record.error)
          return record
        end
        record.status = v.status == "succeeded" and "succeeded" or "failed"
        record.stages, record.error = v.stages, nil
        finish(t, n, record.status, nil)
        return record
      end
      if res and res.status == 200 then
        record.error = "the function's answer is not a task result"
        finish(t, n, "failed", record.error)
        return record
      end
      record.error = res and answer_error(res) or expired and err or ("gateway " .. cfg.gateway .. ": " .. tostring(err))
      if res and not RETRIED[res.status] then
        finish(t, n, "failed", record.error)
        return record
      end
      finish(t, n, "lost", record.error)
      if n < first + cfg.retries then
        local wait = backoff(n - first + 1, res)
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
