-- naming.lua - where a source repository lands on the target, with Harbor's
-- destination namespace and flattening rules:
--   repository a/b/c/img, namespace n
--   flatten -1 -> n/img          (everything but the last level replaced)
--   flatten  0 -> n/a/b/c/img    (the full path kept under the namespace)
--   flatten  1 -> n/b/c/img      (the first N levels replaced)
--   flatten  3 -> n/img
--   flatten  4 -> error: only 3 levels precede the last one
-- Without a namespace the repository keeps its name.
local naming = {}

-- Returns the target repository name, or nil, err.
function naming.destination(repository, namespace, flatten)
  flatten = flatten or 0
  if math.type(flatten) ~= "integer" then
    return nil, "flatten must be an integer"
  end
  if namespace == nil or namespace == "" then
    return repository
  end
  namespace = namespace:gsub("/+$", "")
  local parts = {}
  for p in repository:gmatch("[^/]+") do parts[#parts + 1] = p end
  if flatten < 0 then
    return namespace .. "/" .. parts[#parts]
  end
  if flatten > #parts - 1 then
    return nil, string.format(
      "repository %q has %d level(s) before its name, fewer than the flattening level %d",
      repository, #parts - 1, flatten)
  end
  return namespace .. "/" .. table.concat(parts, "/", flatten + 1)
end

return naming
