-- distribution/push: copy each tag children first: blobs, then child
-- manifests by digest, then the tag. A tag already pointing at the source
-- digest is skipped. Without override, a tag pointing elsewhere is kept and
-- reported. Blobs shared by several tags or repositories are copied once per
-- run: later users wait for that copy, and another repository of the target
-- mounts the blob instead of uploading it again. Child manifests shared by
-- several tags are PUT once per run too.
local tagplan = require("tagplan")

local TAG_CONCURRENCY, BLOB_CONCURRENCY = 4, 8

-- How many tags and blobs of a task copy at once. With a bandwidth limit
-- (options.bandwidth, bytes/s, applied to each blob by the target client)
-- a task copies one blob at a time, so the limit holds for the task.
local function concurrency(ctx)
  if ctx.options and ctx.options.bandwidth then return 1, 1 end
  return TAG_CONCURRENCY, BLOB_CONCURRENCY
end

-- Copies one blob into dest once per run; concurrent callers share the copy.
-- When another repository of the target is getting (or got) the same blob in
-- this run, waits for it and mounts from there instead of uploading again.
-- Copies run as children of the tag that started them.
local function ensure_blob(ctx, dest, desc)
  local run = ctx.run
  local key = dest .. "@" .. desc.digest
  local function size_error()
    local known = run.blob_sizes[desc.digest]
    if known and known ~= desc.size then
      return string.format("size mismatch (the manifest says %d bytes, the blob copied in this run has %d)",
        desc.size, known)
    end
  end
  -- The copier records the size it checked against the bytes (or that a
  -- mount's source had), before its waiters wake.
  local function checked(r)
    local serr = size_error()
    if serr then error(serr, 0) end
    run.blob_sizes[desc.digest] = desc.size
    return r
  end
  local serr = size_error()
  if serr then return nil, serr end
  for _ = 1, 3 do
    local h = run.blob_copies[key]
    local waiter = h ~= nil
    if not h then
      local first = run.first_copy[desc.digest]
      h = task.spawn({ name = "blob " .. desc.digest:sub(1, 19) }, function()
        if first and first.dest ~= dest and first.handle:wait() then
          local m, merr = ctx.dst:mount_blob(dest, desc.digest, first.dest)
          if m == "mounted" then return checked({ mounted = true }) end
          if m == nil then log.warn("mount %s from %s: %s; copying", desc.digest, first.dest, merr) end
          if type(m) == "string" then ctx.dst:cancel_upload(m) end
        end
        local r, err = ctx.dst:copy_blob_from(ctx.src, ctx.task.repository, dest, desc,
                                              { absent = ctx.data.dest_absent })
        if not r then error(err, 0) end
        if ctx.progress and r.bytes then ctx.progress("bytes", r.bytes) end
        return checked(r)
      end)
      run.blob_copies[key] = h
      if not first then run.first_copy[desc.digest] = { dest = dest, handle = h } end
    end
    local ok, r = h:wait()
    if ok then
      serr = size_error() -- a waiter's manifest may give another size than the copier's
      if serr then return nil, serr end
      if waiter then return { skipped = true, shared = true } end  -- counted by the copier
      return r
    end
    if run.blob_copies[key] == h then run.blob_copies[key] = nil end
    if run.first_copy[desc.digest] and run.first_copy[desc.digest].handle == h then
      run.first_copy[desc.digest] = nil
    end
    -- A copy started by another tag is cancelled with that tag when that
    -- tag fails; this one still needs the blob, so it starts its own.
    if r ~= "cancelled" or task.cancelled() then return nil, r end
  end
  return nil, "cancelled"
end

-- PUTs the child manifest m (of an index) into dest once per run: the other
-- tags of the run that need it wait for that PUT instead of writing it again.
-- (Distribution's filesystem storage rewrites a manifest's link in place on
-- every PUT: an index PUT that checks the child at that moment reads the link
-- empty and answers 400 DIGEST_INVALID.) Returns the digest or nil, err.
local function ensure_manifest(ctx, dest, m)
  local puts = ctx.run.manifest_puts
  local key = dest .. "@" .. m.digest
  for _ = 1, 3 do
    local h = puts[key]
    if not h then
      h = task.spawn({ name = "manifest " .. m.digest:sub(1, 19) }, function()
        local d, err = ctx.dst:put_manifest(dest, m.digest, m.body, m.media_type)
        if not d then error(err, 0) end
        return d
      end)
      puts[key] = h
    end
    local ok, r = h:wait()
    if ok then return r end
    if puts[key] == h then puts[key] = nil end
    -- A PUT started by another tag is cancelled with that tag; this one
    -- still needs the manifest, so it starts its own.
    if r ~= "cancelled" or task.cancelled() then return nil, r end
  end
  return nil, "cancelled"
end

-- The blobs of a manifest, each once (a layer may be listed twice: Docker's
-- empty layer often is); nil, err when one digest comes with two sizes.
local function distinct(blobs)
  local seen, out = {}, {}
  for _, d in ipairs(blobs) do
    local size = seen[d.digest]
    if size == nil then
      seen[d.digest] = d.size
      out[#out + 1] = d
    elseif size ~= d.size then
      return nil, string.format("blob %s: size mismatch (the manifest lists it as %d and as %d bytes)",
        d.digest, size, d.size)
    end
  end
  return out
end

-- Copies a list of blobs; returns counts or nil, err.
local function copy_blobs(ctx, dest, blobs, stats)
  local list, derr = distinct(blobs)
  if not list then return nil, derr end
  local out, err = parallel.map(list, function(d)
    local r, e = ensure_blob(ctx, dest, d)
    if not r then return nil, string.format("blob %s: %s", d.digest, e) end
    return r
  end, { limit = select(2, concurrency(ctx)) })
  if not out then return nil, err end
  for _, r in ipairs(out) do
    if r.mounted then stats.blobs_mounted = stats.blobs_mounted + 1
    elseif r.skipped then stats.blobs_skipped = stats.blobs_skipped + 1
    else
      stats.blobs_copied = stats.blobs_copied + 1
      stats.bytes = stats.bytes + (r.bytes or 0)
    end
  end
  return true
end

-- Pushes one artifact; returns a per-tag record.
local function push_tag(ctx, art, stats)
  local dest = ctx.task.dest_repository
  if art.error then return { tag = art.tag, status = "failed", stage = "pull", error = art.error } end
  if art.uptodate then return { tag = art.tag, status = "skipped", digest = art.digest } end
  local head, herr = art.target, nil
  if head == nil then head, herr = ctx.dst:head_manifest(dest, art.tag) end
  if head == nil then return { tag = art.tag, status = "failed", error = herr } end
  local action = tagplan.action(art.digest, head, ctx.options.override)
  if action == "up-to-date" then
    return { tag = art.tag, status = "skipped", digest = art.digest }
  elseif action == "kept" then
    return { tag = art.tag, status = "kept", digest = head.digest, source_digest = art.digest }
  end
  local ok, err = copy_blobs(ctx, dest, art.blobs, stats)
  if not ok then return { tag = art.tag, status = "failed", error = err } end
  for _, m in ipairs(art.manifests) do
    if not m.present then -- (a child the target has was not even fetched)
      ok, err = copy_blobs(ctx, dest, m.blobs, stats)
      if not ok then return { tag = art.tag, status = "failed", error = err } end
      local d, perr = ensure_manifest(ctx, dest, m)
      if not d then return { tag = art.tag, status = "failed", error = perr } end
    end
  end
  local d, second = ctx.dst:put_manifest(dest, art.tag, art.body, art.media_type)
  if not d then return { tag = art.tag, status = "failed", error = second } end
  -- On success the second value says whether the registry's answer named the
  -- digest it stored under the tag: push_post reads back only the others.
  return { tag = art.tag, status = "pushed", digest = d, confirmed = second or nil }
end

return {
  description = "Copy blobs, child manifests and tags to the target",
  run = function(ctx)
    local arts = ctx.data.artifacts or {}
    local stats = { blobs_copied = 0, blobs_skipped = 0, blobs_mounted = 0, bytes = 0 }
    local records = {}
    parallel.map(arts, function(art, i)
      records[i] = push_tag(ctx, art, stats)
      if ctx.progress then ctx.progress("tag", records[i]) end
      return true
    end, { limit = (concurrency(ctx)) })
    local out = { tags = records, pushed = 0, skipped = 0, kept = 0, failed = 0 }
    for k, v in pairs(stats) do out[k] = v end
    local failures = {}
    for _, r in ipairs(records) do
      out[r.status] = out[r.status] + 1
      if r.status == "failed" then failures[#failures + 1] = r.tag .. ": " .. r.error end
    end
    if #failures > 0 then
      return nil, string.format("%d of %d tag(s) failed: %s", #failures, #records,
                                table.concat(failures, "; ")), out
    end
    return out
  end,
}
