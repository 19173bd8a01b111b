-- tagplan.lua - what a replication does with one tag, given the digest it
-- would push and what the target holds under that tag. The push stage
-- (stages/distribution/push.lua) acts on it and the daemon's preview
-- (serve/preview.lua) reports it, so both say the same.
local tagplan = {}

-- source_digest: the manifest digest the run would push (the source tag's
-- manifest digest; a platform filter narrows an index to another digest).
-- target: the target's HEAD answer for the tag ({digest = ...}), or false
-- when the target lacks it. override: whether a tag pointing elsewhere may
-- be replaced. Returns "copy", "up-to-date" or "kept".
function tagplan.action(source_digest, target, override)
  if not target then return "copy" end
  if target.digest == source_digest then return "up-to-date" end
  if override then return "copy" end
  return "kept"
end

return tagplan
