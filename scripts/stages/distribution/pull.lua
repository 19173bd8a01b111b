-- distribution/pull: resolve the selected tags to manifests (the whole tree of
-- an index) and list their blobs. Manifests stay in memory as exact bytes
-- (ctx.data.artifacts); the stored output is a summary.
local media = require("oci.media")

-- Runs fn() once per key among the tags of a task (they resolve at once):
-- later callers wait for the first one's result.
local function once(cache, key, fn)
  local h = cache[key]
  if not h then
    h = task.spawn({ name = "manifest " .. key:sub(1, 19) }, fn)
    cache[key] = h
  end
  local ok, a, b = h:wait()
  if not ok then return nil, a end
  return a, b
end

-- Fetches a manifest and, for an index, its child manifests. With `dst`, a
-- tag the target already has at the source's digest is settled by two HEADs
-- (which registries such as Docker Hub do not count against pull limits)
-- and marked up to date, without fetching anything; the target's answer is
-- kept for push either way. A target that cannot answer (a name it
-- refuses, say) settles nothing here and is asked no more: push_prepare and
-- push, which own the target, say why.
--
-- A source whose manifest GETs count against a pull limit (its kind's
-- quirk pull_limit: Docker Hub) is spared every GET that can be: the tag
-- is HEADed first, tags at one digest share one GET, a manifest the target
-- already has is read from the target (unless the target counts pulls too),
-- and an index's children that the target has are not fetched at all
-- (marked `present`: push skips them).
local function resolve(src, repo, tag, dst, dest, cache, absent)
  local target
  if absent then target, dst = false, nil end -- the target has no such repository
  local saving = type(src.quirks) == "table" and src.quirks.pull_limit ~= nil
  if dst then
    local th = dst:head_manifest(dest, tag)
    if th == nil then dst = nil else target = th end
  end
  local sh
  if target or saving then
    local serr
    sh, serr = src:head_manifest(repo, tag)
    if sh == nil then return nil, serr end
    if sh and target and sh.digest == target.digest then
      return { tag = tag, digest = sh.digest, uptodate = true, target = target, manifests = {}, blobs = {} }
    end
  end
  local m, err, from_target
  if saving and sh then
    m, err = once(cache, sh.digest, function()
      if dst and not (type(dst.quirks) == "table" and dst.quirks.pull_limit) then
        local has = dst:head_manifest(dest, sh.digest)
        if has then
          local tm = dst:get_manifest(dest, sh.digest)
          if tm then return tm, true end
        end
      end
      return src:get_manifest(repo, sh.digest)
    end)
    if m then m, from_target = m, err == true end
  else
    m, err = src:get_manifest(repo, tag)
  end
  if not m then return nil, err end
  local art = { tag = tag, digest = m.digest, media_type = m.media_type, body = m.body,
                size = m.size, manifests = {}, blobs = {}, target = target }
  local kids, kerr = media.children(m)
  if not kids then return nil, string.format("%s:%s: %s", repo, tag, kerr) end
  if from_target then
    -- the target holds this manifest, so it holds its children and blobs too
    for i, d in ipairs(kids) do
      if media.is_index(m.media_type) then
        art.manifests[i] = { descriptor = d, digest = d.digest, media_type = d.mediaType, present = true, blobs = {} }
      end
    end
    return art
  end
  if media.is_index(m.media_type) then
    local fetched, ferr = parallel.map(kids, function(d)
      if saving and dst then
        local has = dst:head_manifest(dest, d.digest)
        if has and has.digest == d.digest then
          return { descriptor = d, digest = d.digest, media_type = d.mediaType, present = true, blobs = {} }
        end
      end
      local child, cerr
      if saving then
        child, cerr = once(cache, d.digest, function() return src:get_manifest(repo, d.digest) end)
      else
        child, cerr = src:get_manifest(repo, d.digest)
      end
      if not child then return nil, cerr end
      if child.size ~= d.size then
        return nil, string.format("%s@%s: size mismatch (the index says %d bytes, the manifest has %d)",
          repo, d.digest, d.size, child.size)
      end
      if media.is_index(child.media_type) then
        return nil, string.format("%s@%s: an index inside an index is not supported", repo, d.digest)
      end
      local blobs, berr = media.children(child)
      if not blobs then return nil, string.format("%s@%s: %s", repo, d.digest, berr) end
      return { descriptor = d, digest = child.digest, media_type = child.media_type,
               body = child.body, blobs = blobs }
    end, { limit = 8 })
    if not fetched then return nil, ferr end
    art.manifests = fetched
  else
    art.blobs = kids
  end
  return art
end

return {
  description = "Resolve tags to manifests and the blobs they need",
  run = function(ctx)
    local repo = ctx.task.repository
    local arts, failed, cache = {}, {}, {}
    -- A destination repository the target does not have (one GET) needs no
    -- HEAD of its tags here nor of its blobs in push. Only when tags are
    -- overwritten anyway: a registry wrong about it then costs uploads, not
    -- a kept tag.
    local absent = ctx.dst and ctx.options.override ~= false
                   and ctx.dst:has_repository(ctx.task.dest_repository) == false
    ctx.data.dest_absent = absent or nil
    -- With a platform filter the pushed digest differs from the source's:
    -- no shortcut.
    local filtering = ctx.options.platforms and #ctx.options.platforms > 0
    parallel.map(ctx.task.tags, function(tag, i)
      local art, err = resolve(ctx.src, repo, tag, not filtering and ctx.dst or nil,
                               ctx.task.dest_repository, cache, absent)
      arts[i] = art or { tag = tag, error = err }
      if not art then failed[tag] = err end
      return true
    end, { limit = 8 })
    ctx.data.artifacts = arts
    local manifests, blobs, bytes, uptodate = 0, 0, 0, 0
    for _, a in ipairs(arts) do
      if a.uptodate then
        uptodate = uptodate + 1
      elseif not a.error then
        manifests = manifests + 1
        for _, b in ipairs(a.blobs) do blobs, bytes = blobs + 1, bytes + b.size end
        for _, m in ipairs(a.manifests) do
          if not m.present then manifests = manifests + 1 end
          for _, b in ipairs(m.blobs) do blobs, bytes = blobs + 1, bytes + b.size end
        end
      end
    end
    return { tags = #arts, up_to_date = uptodate, manifests = manifests, blobs = blobs, bytes = bytes,
             failed = failed }
  end,
}
