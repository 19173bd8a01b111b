-- distribution/push_prepare: reach the target, make sure the namespace the
-- destination repository needs exists (the target's registry kind creates
-- it: a Harbor project, a Quay organisation, an ECR repository; plain
-- Distribution creates repositories on first push, so there is nothing to
-- create), and check push access to the destination repository, unless
-- every tag is already up to date. A refused push access gets the kind's
-- reading of it when ensure_namespace gave one (its result's `denied`).
return {
  description = "Reach the target registry, create the namespace it needs, and check push access",
  run = function(ctx)
    local ok, err = ctx.dst:ping()
    if not ok then
      -- a registry of another kind says which, and the step
      if ctx.dst.kind ~= "distribution" then err = ctx.dst.kind .. ": reaching the target: " .. err end
      return nil, err
    end
    local needed = false
    for _, a in ipairs(ctx.data.artifacts or {}) do
      if not a.uptodate and not a.error then needed = true break end
    end
    if not needed then
      return { writable = "not checked: every tag is up to date", repository = ctx.task.dest_repository }
    end
    local ns, nerr = ctx.dst:ensure_namespace(ctx.task.dest_repository)
    if not ns then return nil, nerr end
    local denied = ns.denied -- the kind's reading of a refusal (Docker Hub: the namespace must be writable)
    ns.denied = nil
    -- Opening (and cancelling) an upload session proves push access.
    local loc, uerr, ukind = ctx.dst:start_upload(ctx.task.dest_repository)
    if not loc then
      if ctx.dst.kind ~= "distribution" then uerr = ctx.dst.kind .. ": checking push access: " .. uerr end
      if type(denied) == "string" and (ukind == "http 401" or ukind == "http 403") then uerr = uerr .. ": " .. denied end
      return nil, uerr, { namespace = ns }
    end
    ctx.dst:cancel_upload(loc)
    return { writable = true, repository = ctx.task.dest_repository, namespace = ns }
  end,
}
