-- distribution/pull_prepare: reach the source, authenticate, and check that
-- the repository can be read. A task the planner has just listed
-- (ctx.task.listed) is known to be readable: its listing was the check, and
-- a HEAD of its first tag would cost a round trip and prove nothing more.
return {
  description = "Reach the source registry, authenticate, and check the repository is readable",
  run = function(ctx)
    local repo, tags = ctx.task.repository, ctx.task.tags
    local ok, err = ctx.src:ping()
    if not ok then
      -- a registry of another kind says which, and the step
      if ctx.src.kind ~= "distribution" then err = ctx.src.kind .. ": reaching the source: " .. err end
      return nil, err
    end
    if #tags == 0 then return nil, "no tags selected in " .. repo end
    if ctx.task.listed then return { readable = true, tags = #tags } end
    local head, herr = ctx.src:head_manifest(repo, tags[1])
    if head == nil then
      if ctx.src.kind ~= "distribution" then herr = ctx.src.kind .. ": reading the source: " .. herr end
      return nil, herr
    end
    if head == false then
      -- The first tag may have gone since listing; the repository must still list.
      local listed, lerr = ctx.src:tags(repo)
      if not listed then return nil, lerr end
    end
    return { readable = true, tags = #tags }
  end,
}
