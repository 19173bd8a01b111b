-- naming.lua - where a source repository lands on the target, with Harbor's
-- destination namespace and flattening rules:
--   repository a/b/c/img, namespace n
--   flatten -1 -> n/img          (everything but the last level replaced)
--   flatten  0 -> n/a/b/c/img    (the full path kept under the namespace)
--   flatten  1 -> n/b/c/img      (the first N levels replaced)
--   flatten  3 -> n/img
--   flatten  4 -> error: only 3 levels precede the last one
-- Without a namespace the repository keeps its name. The repository and the
-- namespace must be valid OCI repository paths (oci/reference.lua), and so
-- is every name returned.
local reference = require("oci.reference")

local naming = {}

-- Returns name when it is a valid repository name, else nil, err.
local function checked(name)
  local ok, err = reference.repository(name)
  if not ok then return nil, "destination: " .. err end
  return name
end

-- Returns the target repository name, or nil, err.
function naming.destination(repository, namespace, flatten)
  flatten = flatten or 0
  if math.type(flatten) ~= "integer" then
    return nil, "flatten must be an integer"
  end
  local ok, err = reference.repository(repository)
  if not ok then return nil, err end
  if namespace == nil or namespace == "" then
    return repository
  end
  namespace = tostring(namespace):gsub("/+$", "")
  ok, err = reference.repository(namespace)
  if not ok then return nil, "destination namespace: " .. err end
  local parts = {}
  for p in repository:gmatch("[^/]+") do parts[#parts + 1] = p end
  if flatten < 0 then
    return checked(namespace .. "/" .. parts[#parts])
  end
  if flatten > #parts - 1 then
    return nil, string.format(
      "repository %q has %d level(s) before its name, fewer than the flattening level %d",
      repository, #parts - 1, flatten)
  end
  return checked(namespace .. "/" .. table.concat(parts, "/", flatten + 1))
end

return naming
