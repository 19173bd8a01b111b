-- Doublestar globs and Harbor's naming rules, as `replica run` filters and
-- renames repositories and tags.
local t = require("tap").new(...)
local glob = require("glob")
local naming = require("naming")

local cases = {
  -- pattern, name, expected
  { "library/*", "library/nginx", true },
  { "library/*", "library/nginx/sub", false },
  { "library/**", "library/nginx/sub", true },
  { "library/**", "library", true },
  { "**", "a/b/c", true },
  { "**/app", "app", true },
  { "**/app", "a/b/app", true },
  { "**/app", "a/b/app2", false },
  { "a/**/z", "a/z", true },
  { "a/**/z", "a/b/c/z", true },
  { "a/**/z", "a/b/c/y", false },
  { "*", "nginx", true },
  { "*", "lib/nginx", false },
  { "v?.0", "v1.0", true },
  { "v?.0", "v10.0", false },
  { "1.{2,3}.*", "1.3.7", true },
  { "1.{2,3}.*", "1.4.7", false },
  { "{lib,app}/{x,y{1,2}}", "app/y2", true },
  { "{lib,app}/{x,y{1,2}}", "app/y3", false },
  { "[abc]*", "beta", true },
  { "[!abc]*", "beta", false },
  { "[a-c]x", "bx", true },
  { "release-*", "release-1.2_rc+3", true },
  { "1.2.%d", "1.2.%d", true },
  { "1.2.%d", "1.2.3", false },
  { "a.b", "axb", false },
  { "latest", "latest", true },
  { "latest", "latest2", false },
  { "", "", true },
}

t.test("doublestar globs match as in Harbor", function()
  for _, c in ipairs(cases) do
    t.eq(glob.match(c[1], c[2]), c[3], c[1] .. " ~ " .. c[2])
  end
end)

t.test("malformed globs raise a clear error", function()
  t.raises(function() glob.compile("a{b") end, "unbalanced")
  t.raises(function() glob.compile("[ab") end, "unclosed")
end)

t.test("matching takes linear time, whatever stars the pattern has", function()
  -- make fuzz's glob seeds showed these (tests/fuzz/corpus/glob/many_stars
  -- and many_doublestars ran for seconds each): every star backtracked, so
  -- a policy's pattern took a task's whole CPU budget on one tag or
  -- repository name.
  local h = task.spawn({ name = "many-stars", cpu = 1 }, function()
    return glob.match("*a*a*a*a*a*a*a*a*a*b", string.rep("a", 40) .. "c"),
      glob.match("**/**/**/**/**/**/**/**/x", string.rep("a/", 60) .. "y"),
      glob.match("*a*a*a*a*a*a*a*a*a*b", string.rep("a", 40) .. "b"),
      glob.match("**/a*/**/b?/**/x", "p/q/a1/r/b2/s/t/x")
  end)
  local ok, no_b, no_x, yes_b, yes_x = h:wait()
  t.eq(ok, true, "within a second of CPU: " .. tostring(no_b))
  t.eq(no_b, false)
  t.eq(no_x, false)
  t.eq(yes_b, true)
  t.eq(yes_x, true)
end)

t.test("a pattern with too many brace alternatives is refused", function()
  t.eq(glob.compile(string.rep("{a,b}", 10))(string.rep("ab", 5)), true, "1024 alternatives are fine")
  t.raises(function() glob.compile(string.rep("{a,b}", 11)) end, "more than 1024 alternatives")
end)

t.test("include and exclude lists combine", function()
  local f = glob.filter({ "library/**", "apps/*" }, { "**/*-debug" })
  t.eq(f("library/nginx"), true)
  t.eq(f("apps/web"), true)
  t.eq(f("apps/web-debug"), false)
  t.eq(f("other/x"), false)
  local all = glob.filter({}, { "tmp/**" })
  t.eq(all("anything/here"), true)
  t.eq(all("tmp/x"), false)
end)

t.test("destination namespace and flattening follow Harbor", function()
  local repo = "a/b/c/img"
  t.eq(naming.destination(repo, "n", -1), "n/img")
  t.eq(naming.destination(repo, "n", 0), "n/a/b/c/img")
  t.eq(naming.destination(repo, "n", 1), "n/b/c/img")
  t.eq(naming.destination(repo, "n", 2), "n/c/img")
  t.eq(naming.destination(repo, "n", 3), "n/img")
  local r, err = naming.destination(repo, "n", 4)
  t.eq(r, nil)
  t.match(err, "fewer than the flattening level 4")
  t.eq(naming.destination("img", "n", 0), "n/img")
  t.eq(naming.destination("img", "n", -1), "n/img")
  t.eq(naming.destination(repo, nil, 2), repo, "no namespace keeps the name")
  t.eq(naming.destination(repo, "", -1), repo)
  t.eq(naming.destination("x/y", "mirror/", 0), "mirror/x/y", "a trailing slash is dropped")
end)

t.test("destination refuses a namespace or repository outside the OCI grammar", function()
  for _, ns in ipairs { "..", "mirror/..", "../x", "mirror/./x", "Mirror", "a//b", "/mirror", "-x" } do
    local r, err = naming.destination("evil/app", ns, 0)
    t.eq(r, nil, ns)
    t.match(err, "^destination namespace: invalid repository name ", ns)
  end
  for _, repo in ipairs { "evil/../../library/app", "team-a/../team-b/app", "./x", "a//b", "A/b" } do
    for _, flatten in ipairs { -1, 0, 1 } do
      local r, err = naming.destination(repo, "mirror", flatten)
      t.eq(r, nil, repo)
      t.match(err, "^invalid repository name ", repo)
    end
    t.eq(naming.destination(repo, nil, 0), nil, "no namespace: " .. repo)
  end
  local r, err = naming.destination(string.rep("a", 250), "mirror", 0)
  t.eq(r, nil, "a destination over 255 characters")
  t.match(err, "^destination: invalid repository name ")
end)

t.done()
