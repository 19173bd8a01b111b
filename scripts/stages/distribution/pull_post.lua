-- distribution/pull_post: apply options to what was pulled.
--   options.platforms = { "linux/amd64", ... } keeps those platforms of an
--     index. One match: the tag points at that platform's image manifest.
--     Several: a new index listing only them (its digest differs from the
--     source's).
--   Foreign and non-distributable layers are never copied: registries may not
--   redistribute them, and clients fetch them from their own URLs.
local media = require("oci.media")

-- Whether a child descriptor's platform is in the wanted set.
local function wanted(d, set)
  local p = d.platform
  if not p then return false end
  local name = p.os .. "/" .. p.architecture
  return set[name] or (p.variant and set[name .. "/" .. p.variant]) or false
end

-- Drops layers the target must not receive.
local function drop_foreign(blobs)
  local kept, dropped = {}, 0
  for _, b in ipairs(blobs) do
    if media.is_foreign(b.mediaType) then dropped = dropped + 1 else kept[#kept + 1] = b end
  end
  return kept, dropped
end

return {
  description = "Filter platforms and drop foreign layers",
  run = function(ctx)
    local set, filtering = {}, false
    for _, p in ipairs(ctx.options.platforms or {}) do set[p], filtering = true, true end
    local dropped, narrowed = 0, 0
    for _, a in ipairs(ctx.data.artifacts or {}) do
      if not a.error then
        local n
        a.blobs, n = drop_foreign(a.blobs)
        dropped = dropped + n
        for _, m in ipairs(a.manifests) do
          m.blobs, n = drop_foreign(m.blobs)
          dropped = dropped + n
        end
        if filtering and #a.manifests > 0 then
          local keep = {}
          for _, m in ipairs(a.manifests) do
            if wanted(m.descriptor, set) then keep[#keep + 1] = m end
          end
          if #keep == 0 then
            a.error = "no manifest for platform(s) " .. table.concat(ctx.options.platforms, ", ")
          elseif #keep == 1 then
            local m = keep[1]
            a.digest, a.media_type, a.body, a.blobs, a.manifests = m.digest, m.media_type, m.body, m.blobs, {}
          elseif #keep < #a.manifests then
            local index = assert(json.decode(a.body))
            local list = {}
            for _, m in ipairs(keep) do list[#list + 1] = m.descriptor end
            index.manifests = list
            a.body = json.encode(index)
            a.digest = "sha256:" .. digest.sha256(a.body)
            a.manifests = keep
          end
          narrowed = narrowed + 1
        end
      end
    end
    return { foreign_layers_dropped = dropped, indexes_narrowed = narrowed }
  end,
}
