-- distribution/push_prepare: reach the target and check push access to the
-- destination repository, unless every tag is already up to date.
-- Distribution creates repositories on first push, so there is no namespace
-- to create.
return {
  description = "Reach the target registry and check push access",
  run = function(ctx)
    local ok, err = ctx.dst:ping()
    if not ok then return nil, err end
    local needed = false
    for _, a in ipairs(ctx.data.artifacts or {}) do
      if not a.uptodate and not a.error then needed = true break end
    end
    if not needed then
      return { writable = "not checked: every tag is up to date", repository = ctx.task.dest_repository }
    end
    -- Opening (and cancelling) an upload session proves push access.
    local loc, uerr = ctx.dst:start_upload(ctx.task.dest_repository)
    if not loc then return nil, uerr end
    ctx.dst:cancel_upload(loc)
    return { writable = true, repository = ctx.task.dest_repository }
  end,
}
