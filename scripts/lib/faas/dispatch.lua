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
-- In async mode a 500 is retried too: the queue-worker reports a function
-- whose process failed (or a queue error) as 500, and never retries itself.
local RETRIED_ASYNC = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- The invocation object of one side from its spec ({url, kind, fields,
-- options, tls}), with the fields sealed for that registry's URL. Returns a
-- new table; the fields never leave it in clear.
local function side_object(spec, keyring)
  local o = { url = spec.url, kind = spec.kind, options = next(spec.options or {}) and spec.options or nil }
  if spec.tls then
    o.ca_file, o.insecure = spec.tls.ca_file, spec.tls.insecure or nil
    o.cert_file, o.key_file = spec.tls.cert_file, spec.tls.key_file
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
-- take), async_gateway (async mode: OpenFaaS's /async-function/NAME),
-- lease_note (added to the error of a lease that ran out), hooks}. Its
-- run(t [, first]) sends task t as attempts first, first + 1, ... (first
-- defaults to 1) and returns the record a local run
-- would: {repository, dest_repository, tags, status, stages, attempts (the
-- last attempt's number)}, with error when no function answered it.
--
-- hooks (optional; `replica serve` gives them) keep the attempts' state:
--   begin(t, n) -> fields for the invocation ({call_id, callback_url,
--     heartbeat, execution, task_id}), or nil, why when attempt n must not be sent; called
--     before it is sent, so the attempt is on record first;
--   deadline(t, n) -> the time (time.mono) attempt n's lease runs out, or
--     nil for none; a lease that runs out abandons the attempt as lost;
--   finish(t, n, outcome, err): outcome is "succeeded", "failed" (the
--     task ran and failed, or the answer was refused), "lost" (another
--     attempt follows, if any are left) or "cancelled";
--   await(t, n) (async mode) -> the result the callback brought
--     ({status (X-Function-Status), headers, body}), or nil, err and
--     whether the lease ran out. begin's fields may say adopted = true: the
--     attempt was queued before (by an earlier daemon) and is only awaited.
function dispatch.new(cfg)
  local d = {}
  local source = side_object(cfg.source, cfg.keyring)
  local target = side_object(cfg.target, cfg.keyring)
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. cfg.token }
  local hooks = cfg.hooks or {}

  -- The invocation of attempt n of task t with the fields extra (JSON).
  local function invocation_of(t, n, extra)
    return json.encode({ kind = "task", attempt = n, template = cfg.template,
      call_id = extra.call_id, callback_url = extra.callback_url, heartbeat = extra.heartbeat,
      execution = extra.execution, task_id = extra.task_id, repository = t.repository, dest_repository = t.dest_repository,
      tags = setmetatable(t.tags, json.array_mt), options = cfg.options, source = source, target = target })
  end

  -- Sends attempt n of task t with the fields extra; returns the answer or
  -- nil, err.
  local function send(t, n, extra)
    return http.request{ method = "POST", url = cfg.gateway, headers = headers, body = invocation_of(t, n, extra),
                         timeout = cfg.timeout, follow = false }
  end

  -- Async mode: queues attempt n (unless it was adopted) with the callback
  -- URL and call id in OpenFaaS's headers, then waits for the result the
  -- callback brings. A 202 means "leased", never "done". Returns the answer
  -- (the queue's refusal, or the callback's result), or nil, err, expired.
  local function send_async(t, n, extra)
    if not extra.adopted then
      local h = { ["X-Callback-Url"] = extra.callback_url, ["X-Call-Id"] = extra.call_id }
      for k, v in pairs(headers) do h[k] = v end
      local res, err = http.request{ method = "POST", url = cfg.async_gateway, headers = h,
                                     body = invocation_of(t, n, extra), timeout = 60, follow = false }
      if not res then return nil, "gateway " .. cfg.async_gateway .. ": " .. tostring(err) end
      if res.status ~= 202 then return res end
    end
    return hooks.await(t, n)
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
    if expired then return nil, "the lease ran out: no news from the function" .. (cfg.lease_note or ""), true end
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
      local res, err, expired
      if cfg.async_gateway then
        res, err, expired = send_async(t, n, extra)
      else
        res, err, expired = send_leased(t, n, extra)
      end
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
      record.error = res and answer_error(res) or (expired or cfg.async_gateway) and err
                     or ("gateway " .. cfg.gateway .. ": " .. tostring(err))
      if res and not (cfg.async_gateway and RETRIED_ASYNC or RETRIED)[res.status] then
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

-- Returns the sender of a template's remote stages ({name, fn, remote =
-- URL}) for cfg = {token, keyring, template (its name), source, target,
-- options, retries, timeout}: runner.run calls it as remote(s, ctx, input)
-- for each such stage. It POSTs the one-stage invocation (docs/faas.md: the
-- stage's name, the task, the sealed sides, the input, the earlier results
-- and the task's data) to the stage's URL with the functions' token, sends
-- it again as the next attempt when the platform lost it, and takes the
-- task's data back from the answer. Returns ok, output, err, attempts.
function dispatch.stage_sender(cfg)
  local source = side_object(cfg.source, cfg.keyring)
  local target = side_object(cfg.target, cfg.keyring)
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. cfg.token }
  return function(s, ctx, input)
    local t = ctx.task
    local data, derr = sandbox.plain(ctx.data or {}, "the task's data")
    if not data then return false, nil, "remote stage " .. s.name .. ": " .. derr, 0 end
    local err
    for n = 1, cfg.retries + 1 do
      local body = json.encode({ kind = "stage", attempt = n, template = cfg.template, stage = s.name,
        repository = t.repository, dest_repository = t.dest_repository, tags = setmetatable(t.tags, json.array_mt),
        options = cfg.options, source = source, target = target, input = input,
        results = next(ctx.results or {}) and sandbox.plain(ctx.results, "results") or nil,
        data = next(data) and data or nil })
      local res, rerr = http.request{ method = "POST", url = s.remote, headers = headers, body = body,
                                      timeout = cfg.timeout, follow = false }
      local v = res and res.status == 200 and json.decode(res.body or "")
      if type(v) == "table" and v.kind == "stage" then
        if v.attempt ~= n then return false, nil, string.format("remote stage %s: the answer is for attempt %s, not %d", s.name, tostring(v.attempt), n), n end
        if type(v.data) == "table" then
          for k in pairs(ctx.data) do ctx.data[k] = nil end
          for k, x in pairs(v.data) do ctx.data[k] = x end
        end
        if v.status == "succeeded" then return true, v.output, nil, n end
        return false, v.output, type(v.error) == "string" and v.error or "the remote stage failed", n
      end
      err = string.format("remote stage %s at %s: %s", s.name, s.remote,
                          res and (res.status == 200 and "the answer is not a stage result" or answer_error(res)) or tostring(rerr))
      if res and (res.status == 200 or not RETRIED[res.status]) then return false, nil, err, n end
      if task.cancelled() then return false, nil, "cancelled", n end
      if n <= cfg.retries then
        local wait = backoff(n, res)
        log.warn("%s: %s (attempt %d); attempt %d in %.1f s", t.repository, err, n, n + 1, wait)
        if not time.sleep(wait) then return false, nil, "cancelled", n end
      end
    end
    return false, nil, err, cfg.retries + 1
  end
end

return dispatch
