-- distribution/verify: after push, every replicated tag must resolve on the
-- target to the digest it has at the source. The registry's answer to a
-- tag's PUT names the digest it stored (Docker-Content-Digest, which push
-- checks against the bytes it sent): such a tag is confirmed by that answer,
-- and reading it back would ask the registry the same question again. A tag
-- whose PUT was answered without the header is read back with a HEAD.
return {
  description = "Check that each target tag resolves to the source digest",
  run = function(ctx, input)
    local dest = ctx.task.dest_repository
    local records = input and input.tags or {}
    local checks, confirmed = {}, 0
    for _, r in ipairs(records) do
      -- Skipped tags were compared by digest just before: only new pushes.
      if r.status == "pushed" then
        if r.confirmed then confirmed = confirmed + 1 else checks[#checks + 1] = r end
      end
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
    return { verified = confirmed + #checks, confirmed = confirmed, read_back = #checks }
  end,
}
