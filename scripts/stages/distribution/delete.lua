-- distribution/delete: replicates deletions. ctx.task.tags holds references
-- deleted at the source: "tag", "sha256:..." or "tag@sha256:...". A tag is
-- deleted on the target only while it still resolves to the deleted digest
-- (when one is known), so newer content pushed since is kept. Registries
-- delete manifests by digest, which removes every tag pointing at it.
return {
  description = "Delete on the target the manifests deleted at the source",
  run = function(ctx)
    local dest = ctx.task.dest_repository
    local out = { deleted = 0, absent = 0, kept = 0, refs = {} }
    local failed = {}
    for _, ref in ipairs(ctx.task.tags) do
      local tag, dgst = ref:match("^([^@]+)@(%w+:%x+)$")
      if not tag then
        if ref:match("^%w+:%x+$") then dgst = ref else tag = ref end
      end
      local rec = { ref = ref }
      out.refs[#out.refs + 1] = rec
      local target = dgst
      if tag then
        local head, err = ctx.dst:head_manifest(dest, tag)
        if head == nil then
          failed[#failed + 1] = string.format("%s: %s", ref, err)
          rec.status = "failed"
        elseif head == false then
          rec.status, target = "absent", nil
        elseif dgst and head.digest ~= dgst then
          rec.status, target = "kept", nil
          rec.detail = string.format("target tag %s points at %s, not the deleted %s", tag, head.digest, dgst)
        else
          target = head.digest
        end
      end
      if target and not rec.status then
        local ok, err = ctx.dst:delete_manifest(dest, target)
        if ok == nil then
          failed[#failed + 1] = string.format("%s: %s", ref, err)
          rec.status = "failed"
        else
          rec.status = ok and "deleted" or "absent"
          rec.digest = target
        end
      end
      if rec.status ~= "failed" then out[rec.status] = out[rec.status] + 1 end
      log.info("delete %s:%s: %s", dest, ref, rec.status)
    end
    if #failed > 0 then return nil, table.concat(failed, "; "), out end
    return out
  end,
}
