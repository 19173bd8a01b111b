-- spec/replicate_plan_spec.lua - what `replica run` and the daemon's
-- executions plan from a source's listings. A source can list names outside
-- the OCI grammar ("evil/../../library/app" would land in library/app at the
-- target's root once libcurl resolved the dots): such a repository or tag is
-- left out with a warning, and a filter naming one is refused.
-- tests/fakereg.py plays the source under /evil: its catalog lists
-- ["evil/../../library/app", "good/app", "Bad/Name"], and the tags of
-- good/app are ["v1", "..", "v2"].
local t = require("tap").new(...)
local oci = require("oci")
local replicate = require("replicate")
local E = t.env

-- Returns the paths the stand-in received under /evil since the first n requests.
local function evil_paths(n)
  local r = assert(http.request { url = E.FAKEREG_URL .. "/requests" })
  local out = {}
  for i, rec in ipairs(assert(json.decode(r.body))) do
    if i > n and rec.path:find("^/evil/") then out[#out + 1] = rec.path end
  end
  return out, #json.decode(r.body)
end

t.test("catalog entries and tags that are not valid names are left out; nothing lands outside the namespace", function()
  local _, n = evil_paths(0)
  local src = oci.new { url = E.FAKEREG_URL .. "/evil", retries = 0 }
  local tasks, err = replicate.plan(src, { dest_namespace = "mirror" })
  t.ok(tasks, err)
  t.eq(#tasks, 1, "only good/app is planned")
  t.eq(tasks[1].repository, "good/app")
  t.eq(tasks[1].dest_repository, "mirror/good/app")
  t.eq(table.concat(tasks[1].tags, ","), "v1,v2", "the tag '..' is left out")
  local paths = evil_paths(n)
  for _, p in ipairs(paths) do
    t.ok(not p:find("library", 1, true) and not p:find("..", 1, true) and not p:find("Bad", 1, true),
      "no request for a left-out name: " .. p)
  end
  t.eq(#paths, 3, "/v2/, the catalog and the tags of good/app: " .. table.concat(paths, " "))
end)

t.test("with flattening too, every destination stays under the namespace", function()
  local src = oci.new { url = E.FAKEREG_URL .. "/evil", retries = 0 }
  for _, flatten in ipairs { -1, 0, 1 } do
    local tasks, err = replicate.plan(src, { dest_namespace = "mirror", flatten = flatten })
    t.ok(tasks, err)
    for _, task in ipairs(tasks) do t.match(task.dest_repository, "^mirror/[a-z]") end
  end
end)

t.test("a literal repository filter that is not a valid name is refused", function()
  local src = oci.new { url = E.FAKEREG_URL .. "/evil", retries = 0 }
  for _, repo in ipairs { "evil/../../library/app", "Good/App", "team-a/./app" } do
    local tasks, err = replicate.plan(src, { repos = { repo } })
    t.eq(tasks, nil, repo)
    t.match(err, "^repository filter: invalid repository name ", repo)
    t.ok(err:find(string.format("%q", repo), 1, true), "the message names " .. repo)
  end
  local tasks, err = replicate.plan(src, { repos = { "good/**", "evil/../x" } })
  t.eq(tasks, nil, "a literal filter beside a glob")
  t.match(err, 'invalid repository name "evil/%.%./x"')
end)

t.done()
