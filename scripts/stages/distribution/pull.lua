-- distribution/pull: resolve the selected tags to manifests (the whole tree of
-- an index) and list their blobs. Manifests stay in memory as exact bytes
-- (ctx.data.artifacts); the stored output is a summary.
local oci = require("oci")

-- Fetches a manifest and, for an index, its child manifests.
local function resolve(src, repo, tag)
  local m, err = src:get_manifest(repo, tag)
  if not m then return nil, err end
  local art = { tag = tag, digest = m.digest, media_type = m.media_type, body = m.body,
                size = m.size, manifests = {}, blobs = {} }
  local kids, kerr = oci.children(m)
  if not kids then return nil, string.format("%s:%s: %s", repo, tag, kerr) end
  if oci.is_index(m.media_type) then
    local fetched, ferr = parallel.map(kids, function(d)
      local child, cerr = src:get_manifest(repo, d.digest)
      if not child then return nil, cerr end
      local blobs, berr = oci.children(child)
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
      local art, err = resolve(ctx.src, repo, tag)
      arts[i] = art or { tag = tag, error = err }
      if not art then failed[tag] = err end
      return true
    end, { limit = 8 })
    ctx.data.artifacts = arts
    local manifests, blobs, bytes = 0, 0, 0
    for _, a in ipairs(arts) do
      if not a.error then
        manifests = manifests + 1 + #a.manifests
        for _, b in ipairs(a.blobs) do blobs, bytes = blobs + 1, bytes + b.size end
        for _, m in ipairs(a.manifests) do
          for _, b in ipairs(m.blobs) do blobs, bytes = blobs + 1, bytes + b.size end
        end
      end
    end
    return { tags = #arts, manifests = manifests, blobs = blobs, bytes = bytes, failed = failed }
  end,
}
