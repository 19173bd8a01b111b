-- replicate.lua - `replica run`: plan the tasks (one per source repository,
-- holding its selected tags), run each through the process template with at
-- most `jobs` at once, and report. The result of a task is its stages'
-- results in template order.
local glob = require("glob")
local naming = require("naming")
local runner = require("runner")
local credentials = require("credentials")
local progress = require("progress")
local reference = require("oci.reference")
local endpoints = require("endpoint")
local taskrun = require("taskrun")
local faas_config = require("faas.config")

local replicate = {}

-- Whether a glob has no special characters (a literal name).
local function literal(p)
  return not p:find("[%*%?%[%{\\]")
end

-- Parses a byte count with an optional K, M or G suffix (powers of 1024);
-- returns the count or nil. `replica function` reads its options with it too.
local function parse_bytes(s)
  if s == nil then return nil end
  local n, unit = tostring(s):match("^(%d+)([KkMmGg]?)i?[Bb]?$")
  if not n then return nil end
  local mult = ({ [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 })[unit:lower()]
  return math.tointeger(tonumber(n) * mult)
end

replicate.parse_bytes = parse_bytes

-- Parses NAME=VALUE items (--from-cred, --from-option) into into; returns
-- into or nil, err naming flag.
local function name_values(list, into, flag)
  for _, item in ipairs(list or {}) do
    local k, v = tostring(item):match("^([%a_][%w_]*)=(.*)$")
    if not k then return nil, string.format("%s must be NAME=VALUE, got %q", flag, tostring(item):gsub("=.*", "=...")) end
    into[k:lower()] = v
  end
  return into
end

-- Warns about secrets given on the command line, where any user of the
-- machine reads them (ps, /proc/PID/cmdline): --from-creds, and
-- --from-cred NAME=VALUE for a field the kind marks secret. The warning
-- names the flag and the way out, never the value.
local function warn_command_line(side, opts, kind)
  if opts[side .. "_creds_argv"] then
    log.warn("--%s-creds puts the password on the command line, where other users of this machine can read it "
      .. "(ps): use --%s-creds-file FILE (- reads it from stdin) or REPLICA_%s_CREDS", side, side, side:upper())
  end
  local secret = {}
  for _, c in ipairs(kind.credentials) do secret[c.name] = c.secret end
  for _, item in ipairs(opts[side .. "_cred"] or {}) do
    local k = tostring(item):match("^([%a_][%w_]*)=")
    if k and secret[k:lower()] then
      log.warn("--%s-cred %s=... puts a secret on the command line, where other users of this machine can read it "
        .. "(ps): use REPLICA_%s_CRED_%s", side, k, side:upper(), k:upper())
    end
  end
end

-- The TLS settings of one side ("from" or "to") from --from-ca,
-- --from-cert, --from-key and --from-insecure: {ca_file, cert_file,
-- key_file, insecure}. An unverified side is warned about.
local function side_tls(side, opts, url)
  local tls = { ca_file = opts[side .. "_ca"], cert_file = opts[side .. "_cert"], key_file = opts[side .. "_key"],
                insecure = opts[side .. "_insecure"] or false }
  if tls.insecure and url:find("^https://") then
    log.warn("--%s-insecure: the TLS certificate of %s is not verified: anyone on the path can pose as it "
      .. "(trust its CA with --%s-ca FILE instead)", side, url, side)
  end
  return tls
end

-- Builds the registry client of one side ("from" or "to"): its kind (given
-- with --from-kind, or detected from the host), its credentials (USER:PASSWORD
-- from the flag, the environment or docker's config, and the kind's own
-- fields from --from-cred NAME=VALUE and REPLICA_FROM_CRED_<NAME>), its
-- options (--from-option) and TLS. Returns the client and its spec ({url,
-- kind, fields, options, tls}: what --executor faas seals and sends), or
-- nil, err.
function replicate.endpoint(side, opts, chunk_size, max_speed)
  local url = opts[side]
  if not url or url == "" then return nil, "missing registry URL" end
  url = endpoints.url(url)
  local tls = side_tls(side, opts, url)
  local kind, found = endpoints.kind(url, opts[side .. "_kind"], tls)
  if not kind then return nil, found end
  if found ~= "default" then log.info("--%s %s: registry kind %s (%s)", side, url, kind.name, found) end
  local fields = {}
  for k, v in pairs(creds.env("REPLICA_" .. side:upper() .. "_CRED_")) do
    if v ~= "" then fields[k] = v end -- an empty variable gives nothing
  end
  local ok, ferr = name_values(opts[side .. "_cred"], fields, "--" .. side .. "-cred")
  if not ok then return nil, ferr end
  local options, oerr = name_values(opts[side .. "_option"], {}, "--" .. side .. "-option")
  if not options then return nil, oerr end
  for k in pairs(fields) do -- an unknown name is refused before any lookup
    local known, kerr = endpoints.check_credentials(kind, { [k] = true }, false)
    if not known then return nil, kerr end
  end
  warn_command_line(side, opts, kind)
  if not fields.username then
    local user, pass, err = credentials.resolve(url, opts[side .. "_creds"])
    if err then return nil, err end
    fields.username, fields.password = user, pass
  end
  local cok, cerr = endpoints.check_credentials(kind, fields, function(name)
    return string.format("--%s-cred %s=... or REPLICA_%s_CRED_%s", side, name, side:upper(), name:upper())
  end)
  if not cok then return nil, cerr end
  local client, err = endpoints.client{ url = url, kind = kind, fields = fields, options = options, tls = tls,
                                        chunk_size = chunk_size, max_speed = max_speed,
                                        timeout = opts.stall_timeout }
  if not client then return nil, err end
  return client, { url = url, kind = kind.name, fields = fields, options = options, tls = tls }
end

-- Returns the names in list that are valid for check (reference.repository
-- or reference.tag); each other one is left out with a warning naming it and
-- where it came from.
local function valid_only(list, check, where)
  local out = {}
  for _, n in ipairs(list) do
    local ok, err = check(n)
    if ok then out[#out + 1] = n else log.warn("%s: left out %s", where, err) end
  end
  return out
end

-- Lists the source repositories the filters select, sorted. A literal
-- repository filter that is not a valid name is refused: nil, err,
-- "options"; a catalog that cannot be listed is nil, err, "source".
local function select_repos(src, opts)
  local excludes = opts.exclude_repos or {}
  local includes = {}
  local all_literal = #(opts.repos or {}) > 0
  for i, p in ipairs(opts.repos or {}) do
    all_literal = all_literal and literal(p)
    if literal(p) then
      local ok, err = reference.repository(p)
      if not ok then return nil, "repository filter: " .. err, "options" end
      -- the source's kind may name it otherwise (Docker Hub: ubuntu is library/ubuntu)
      local name, nerr = src:repository_name(p)
      if not name then return nil, "repository filter: " .. nerr, "options" end
      p = name
    end
    includes[i] = p
  end
  local names
  if all_literal then
    names = includes  -- no catalog needed: registries like Docker Hub refuse it
  else
    local cat, err = src:catalog({ patterns = includes })
    if not cat then return nil, "listing the source catalog: " .. err, "source" end
    names = valid_only(cat, reference.repository, "the source catalog")
  end
  local keep, out = glob.filter(includes, excludes), {}
  for _, n in ipairs(names) do
    if keep(n) then out[#out + 1] = n end
  end
  table.sort(out)
  return out, all_literal
end

-- Plans the tasks: for each repository, its tags that pass the tag filters
-- (and opts.labels, which the source's kind applies: Harbor's labels).
-- Each task is {repository, dest_repository, tags, listed = true}: listed
-- says the source has just listed the repository for these credentials,
-- so it is known to be readable (pull_prepare need not check it again).
-- Returns the tasks, or nil, err and what failed: "source" (a listing the
-- source refused or could not answer) or "options" (a filter, or a
-- destination name the namespace and flattening cannot make).
function replicate.plan(src, opts)
  local repos, named, rkind = select_repos(src, opts)
  if not repos then return nil, named, rkind end
  local keep = glob.filter(opts.tags, opts.exclude_tags)
  local planned, naming_failed = {}, {}
  local ok, perr, at = parallel.map(repos, function(repo, i)
    local tags, terr, kind = src:tags(repo)
    if not tags and kind == "http 404" and named then
      return nil, string.format("repository %s not found on the source (%s)", repo, terr)
    elseif not tags and kind == "http 404" then
      tags = {}  -- listed in the catalog but holding no tags (only blobs, after a mount)
    elseif not tags then
      return nil, string.format("listing tags of %s: %s", repo, terr)
    end
    local sel = {}
    for _, t in ipairs(valid_only(tags, reference.tag, "the tags of " .. repo)) do
      if keep(t) then sel[#sel + 1] = t end
    end
    table.sort(sel)
    if opts.labels and #opts.labels > 0 and #sel > 0 then
      -- a filter only the source's kind can apply (Harbor's labels)
      local kept, ferr = src:filter_tags(repo, sel, { labels = opts.labels })
      if not kept then
        naming_failed[i] = ferr and ferr:find("cannot filter", 1, true) and true or nil
        return nil, ferr
      end
      sel = kept
    end
    local dest, nerr = naming.destination(repo, opts.dest_namespace, opts.flatten)
    if not dest then
      naming_failed[i] = true
      return nil, nerr
    end
    planned[i] = { repository = repo, dest_repository = dest, tags = sel, listed = true }
    return true
  end, { limit = 8 })
  if not ok then return nil, perr, at and naming_failed[at] and "options" or "source" end
  local tasks = {}
  for _, t in ipairs(planned) do
    if #t.tags > 0 then tasks[#tasks + 1] = t end
  end
  return tasks
end

-- Lists the tags kept on the target because --no-override forbade replacing them.
local function kept_tags(records)
  local out = {}
  for _, r in ipairs(records) do
    for _, s in ipairs(r.stages) do
      if s.name == "push" and type(s.output) == "table" and type(s.output.tags) == "table" then
        for _, tr in ipairs(s.output.tags) do
          if tr.status == "kept" then
            out[#out + 1] = string.format("%s:%s  target has %s, source %s", r.dest_repository,
                                          tr.tag, tr.digest, tr.source_digest)
          end
        end
      end
    end
  end
  return out
end

-- Lists each failed repository:tag with its stage and reason.
local function failures(records)
  local out = {}
  for _, r in ipairs(records) do
    if r.status ~= "succeeded" then
      local failed_stage
      for _, s in ipairs(r.stages) do
        if s.status == "failed" or s.status == "cancelled" then failed_stage = s break end
      end
      local per_tag = failed_stage and failed_stage.output and failed_stage.output.tags
      local listed = false
      if type(per_tag) == "table" then
        for _, tr in ipairs(per_tag) do
          if tr.status == "failed" then
            out[#out + 1] = string.format("%s:%s  stage %s: %s", r.repository, tr.tag,
                                          tr.stage or failed_stage.name, tr.error)
            listed = true
          end
        end
      end
      if not listed then
        out[#out + 1] = string.format("%s:%s  %s: %s", r.repository, table.concat(r.tags, ","),
          failed_stage and ("stage " .. failed_stage.name) or "dispatch",
          failed_stage and failed_stage.error or r.error or r.status)
      end
    end
  end
  return out
end

-- Totals over the records.
local function totals(records)
  local t = { tasks = #records, succeeded = 0, failed = 0, tags = 0, pushed = 0, skipped = 0,
              kept = 0, bytes = 0, blobs_copied = 0, blobs_mounted = 0, blobs_skipped = 0 }
  for _, r in ipairs(records) do
    local k = r.status == "succeeded" and "succeeded" or "failed"
    t[k] = t[k] + 1
    t.tags = t.tags + #r.tags
    for _, s in ipairs(r.stages) do
      if s.name == "push" and type(s.output) == "table" then
        for _, k in ipairs({ "pushed", "skipped", "kept", "bytes", "blobs_copied", "blobs_mounted", "blobs_skipped" }) do
          t[k] = t[k] + (s.output[k] or 0)
        end
      end
    end
  end
  return t
end

-- With --executor faas, the dispatcher that sends each task to --gateway
-- (faas/dispatch.lua) and how many tasks it keeps in flight; false for the
-- local executor; nil, err for a bad option.
local function faas_dispatcher(opts, sys, template, src_spec, dst_spec)
  -- A one-shot run holds each request open: async mode and leases need a
  -- callback route at an address that outlives the request, which is serve's.
  for _, o in ipairs({ { opts.faas_mode == "async", "--faas-mode async" }, { opts.faas_lease, "--faas-lease" },
                       { opts.callback_url, "--callback-url" } }) do
    if o[1] then
      return nil, o[2] .. " is for replica serve: its callback route outlives a request; "
        .. "replica run holds each task's request open (sync mode)"
    end
  end
  local cfg, err = faas_config.read(opts, sys, opts.jobs)
  if not cfg then return cfg, err end
  if cfg.executor ~= "faas" then return false end
  -- Required here: faas.invocation (which dispatch seals with) requires this module.
  return require("faas.dispatch").new{ gateway = cfg.gateway, token = cfg.token, keyring = cfg.keyring,
                       template = template.name, source = src_spec, target = dst_spec,
                       options = faas_config.options(opts), retries = cfg.retries, timeout = cfg.timeout },
         cfg.concurrency
end

-- The sender of template's remote stages (faas/dispatch.lua's
-- stage_sender: the token, sealed credentials and attempts), or false when
-- it has none or no token and seal key are given (a bare POST then); nil,
-- err for bad settings.
function replicate.stage_sender(opts, sys, template, src_spec, dst_spec)
  local remote = false
  for _, st in ipairs(template.stages) do remote = remote or st.remote ~= nil end
  if not remote then return false end
  local sc, err = faas_config.stages(opts, sys)
  if not sc then return sc, err end
  return require("faas.dispatch").stage_sender{ token = sc.token, keyring = sc.keyring, template = template.name,
    source = src_spec, target = dst_spec, options = faas_config.options(opts), retries = sc.retries,
    timeout = sc.timeout }
end

-- The `replica run` entry point (sys: the trusted system module); returns
-- the exit code.
-- Checks and normalises the options `replica run` and `replica repl`
-- share, in place: override, jobs, flatten, dest_namespace, chunk_bytes
-- (--chunk-size as a count of bytes) and bandwidth (bytes/s). Returns opts
-- or nil, err.
function replicate.options(opts)
  opts.override = not opts.no_override
  opts.jobs = math.tointeger(tonumber(opts.jobs or 8))
  if not opts.jobs or opts.jobs < 1 then return nil, "--jobs must be a positive integer" end
  if opts.flatten ~= nil then
    opts.flatten = math.tointeger(tonumber(opts.flatten))
    if not opts.flatten then return nil, "--flatten must be an integer" end
  end
  if opts.dest_namespace ~= nil and opts.dest_namespace ~= "" then
    local ok, err = reference.repository(opts.dest_namespace)
    if not ok then return nil, "--dest-namespace: " .. err end
  end
  if opts.chunk_size then
    local chunk = parse_bytes(opts.chunk_size)
    if not chunk or chunk < 1024 then return nil, "--chunk-size must be a byte count of at least 1K (e.g. 10M)" end
    opts.chunk_bytes = chunk
  end
  if opts.stall_timeout then
    local t = tonumber(opts.stall_timeout)
    if not t or t <= 0 or t ~= t or t == math.huge then return nil, "--stall-timeout must be a number of seconds above 0" end
    opts.stall_timeout = t
  end
  if opts.bandwidth then
    local bw = parse_bytes(opts.bandwidth)
    if not bw or bw < 1024 then return nil, "--bandwidth must be a byte rate of at least 1K (e.g. 10M)" end
    opts.bandwidth = bw
  end
  return opts
end

-- Builds both sides' clients from the options (replicate.options's):
-- returns src, dst, src_spec, dst_spec, or nil, err.
function replicate.endpoints(opts)
  local src, src_spec = replicate.endpoint("from", opts)
  if not src then return nil, "--from: " .. src_spec end
  local dst, dst_spec = replicate.endpoint("to", opts, opts.chunk_bytes, opts.bandwidth)
  if not dst then return nil, "--to: " .. dst_spec end
  return src, dst, src_spec, dst_spec
end

-- The requests this process made, from the engine's HTTP client
-- (sys.http_stats): {source = {total, GET = n, HEAD = n, ...}, target =
-- {...}, other = n (a redirect's CDN, a token service elsewhere), per_tag,
-- per_blob}, the rates over the tags and the blobs the run dealt with.
-- When both sides are one registry its requests are all under source.
local function request_counts(sys, src, dst, sum)
  local function host(c) return c.origin and c.origin:match("^%a[%w+.-]*://(.*)$") end
  local side_of = { [host(dst) or ""] = "target", [host(src) or ""] = "source" }
  local out = { source = { total = 0 }, target = { total = 0 }, other = 0 }
  for _, r in ipairs(sys.http_stats().requests) do
    local side = out[side_of[r.host]]
    if side then
      side.total = side.total + r.count
      side[r.method] = (side[r.method] or 0) + r.count
    else
      out.other = out.other + r.count
    end
  end
  local all = out.source.total + out.target.total + out.other
  local blobs = sum.blobs_copied + sum.blobs_mounted + sum.blobs_skipped
  out.per_tag = sum.tags > 0 and all / sum.tags or nil
  out.per_blob = blobs > 0 and all / blobs or nil
  return out
end

function replicate.main(opts, sys)
  local ok, oerr = replicate.options(opts)
  if not ok then return nil, oerr end
  local template, terr = runner.template(opts.template or "distribution")
  if not template then return nil, terr end
  local src, dst, src_spec, dst_spec = replicate.endpoints(opts)
  if not src then return nil, dst end
  local remote, limit = faas_dispatcher(opts, sys, template, src_spec, dst_spec)
  if remote == nil then return nil, limit end
  limit = remote and limit or opts.jobs
  local stages, serr = replicate.stage_sender(opts, sys, template, src_spec, dst_spec)
  if stages == nil then return nil, serr end

  local started = time.mono()
  local tasks, perr = replicate.plan(src, opts)
  if not tasks then return nil, perr end

  if opts.dry_run then
    for _, t in ipairs(tasks) do
      for _, tag in ipairs(t.tags) do
        print(string.format("%s:%s -> %s:%s", t.repository, tag, t.dest_repository, tag))
      end
    end
    print(string.format("%d repositories, would copy up to %d tags (dry run)", #tasks,
                        (function() local n = 0 for _, t in ipairs(tasks) do n = n + #t.tags end return n end)()))
    return 0
  end

  local view = progress.new(tasks, opts)
  view.remote = stages or nil
  local run = taskrun.shared()
  local records = {}
  parallel.map(tasks, function(t, i)
    if remote then
      view.task_started(t)
      records[i] = remote.run(t)
      view.task_done(t, records[i])
    else
      records[i] = taskrun.run(template, t, src, dst, opts, run, view)
    end
    return true
  end, { limit = limit })
  view.finish()

  local sum = totals(records)
  sum.seconds = time.mono() - started
  local failed = failures(records)
  if opts.json then
    sum.requests = sys and sys.http_stats and request_counts(sys, src, dst, sum) or nil
    print(json.encode({ run_id = opts.run_id, template = template.name, summary = sum, tasks = records }))
  else
    print(string.format("%d/%d repositories succeeded; tags: %d pushed, %d up to date, %d kept; "
      .. "blobs: %d copied (%s), %d mounted, %d present; %.1f s",
      sum.succeeded, sum.tasks, sum.pushed, sum.skipped, sum.kept, sum.blobs_copied,
      progress.human_bytes(sum.bytes), sum.blobs_mounted, sum.blobs_skipped, sum.seconds))
    for _, k in ipairs(kept_tags(records)) do print("KEPT " .. k) end
    for _, f in ipairs(failed) do print("FAILED " .. f) end
  end
  return #failed == 0 and 0 or 1
end

return replicate
