-- distribution/pull: resolve the selected tags to manifests (the whole tree of
-- an index) and list their blobs. Manifests stay in memory as exact bytes
-- (ctx.data.artifacts); the stored output is a summary.
local media = require("oci.media")

-- Fetches a manifest and, for an index, its child manifests. With `dst`, a
-- tag the target already has at the source's digest is settled by two HEADs
-- (which registries such as Docker Hub do not count against pull limits)
-- and marked up to date, without fetching anything; the target's answer is
-- kept for push either way.
local function resolve(src, repo, tag, dst, dest)
  local target
  if dst then
    local th, terr = dst:head_manifest(dest, tag)
    if th == nil then return nil, terr end
    target = th
    if th then
      local sh, serr = src:head_manifest(repo, tag)
      if sh == nil then return nil, serr end
      if sh and sh.digest == th.digest then
        return { tag = tag, digest = sh.digest, uptodate = true, target = th, manifests = {}, blobs = {} }
      end
    end
  end
  local m, err = src:get_manifest(repo, tag)
  if not m then return nil, err end
  local art = { tag = tag, digest = m.digest, media_type = m.media_type, body = m.body,
                size = m.size, manifests = {}, blobs = {}, target = target }
  local kids, kerr = media.children(m)
  if not kids then return nil, string.format("%s:%s: %s", repo, tag, kerr) end
  if media.is_index(m.media_type) then
    local fetched, ferr = parallel.map(kids, function(d)
      local child, cerr = src:get_manifest(repo, d.digest)
      if not child then return nil, cerr end
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
    local arts, failed = {}, {}
    parallel.map(ctx.task.tags, function(tag, i)
      -- With a platform filter the pushed digest differs from the source's:
      -- no shortcut.
      local filtering = ctx.options.platforms and #ctx.options.platforms > 0
      local art, err = resolve(ctx.src, repo, tag, not filtering and ctx.dst or nil,
                               ctx.task.dest_repository)
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
        manifests = manifests + 1 + #a.manifests
        for _, b in ipairs(a.blobs) do blobs, bytes = blobs + 1, bytes + b.size end
        for _, m in ipairs(a.manifests) do
          for _, b in ipairs(m.blobs) do blobs, bytes = blobs + 1, bytes + b.size end
        end
      end
    end
    return { tags = #arts, up_to_date = uptodate, manifests = manifests, blobs = blobs, bytes = bytes,
             failed = failed }
  end,
}
