-- distribution/verify: after push, every replicated tag must resolve on the
-- target to the digest it has at the source.
return {
  description = "Check that each target tag resolves to the source digest",
  run = function(ctx, input)
    local dest = ctx.task.dest_repository
    local records = input and input.tags or {}
    local checks = {}
    for _, r in ipairs(records) do
      -- Skipped tags were compared by digest just before: only new pushes.
      if r.status == "pushed" then checks[#checks + 1] = r end
    end
    local bad = {}
    parallel.map(checks, function(r)
      local head, err = ctx.dst:head_manifest(dest, r.tag)
      if not head then
        bad[#bad + 1] = string.format("%s: %s", r.tag, err or "missing on the target")
      elseif head.digest ~= r.digest then
        bad[#bad + 1] = string.format("%s resolves to %s, expected %s", r.tag, head.digest, r.digest)
      end
      return true
    end, { limit = 8 })
    if #bad > 0 then return nil, table.concat(bad, "; ") end
    return { verified = #checks }
  end,
}
