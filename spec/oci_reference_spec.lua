-- spec/oci_reference_spec.lua - which repository names, tags and digests the
-- OCI grammar admits (oci/reference.lua). Everything replica takes from a
-- webhook, a catalog, the API or the command line passes through these
-- checks, so a name like "team-a/../team-b/app" can never reach a filter or
-- a URL.
local t = require("tap").new(...)
local reference = require("oci.reference")

local SHA256 = "sha256:" .. string.rep("a", 64)
local SHA512 = "sha512:" .. string.rep("0", 128)

t.test("valid repository names are accepted as they are", function()
  for _, n in ipairs { "a", "library/alpine", "a/b/c/d/e", "my-app", "my--app", "my__app",
                       "my.app", "my_app", "a1/b2.c3", "0", "x/y-z_w.v", "team-a/app",
                       string.rep("a", 255), string.rep("ab/", 84) .. "abc" } do
    t.eq(reference.repository(n), n, n)
  end
end)

t.test("invalid repository names are refused with the grammar in the message", function()
  for _, n in ipairs { "", "/", "a/", "/a", "a//b", "..", ".", "a/../b", "team-a/../team-b/app",
                       "evil/../../library/app", "a/./b", "A", "Library/alpine", "a..b", "a_.b", "a___b",
                       "-a", "a-", "_a", "a.", ".a", "a b", "a%2e%2e/b", "a:b", "a@b", "a?b", "a#b",
                       "a\\b", "a\nb", string.rep("a", 256) } do
    local ok, err = reference.repository(n)
    t.eq(ok, nil, n)
    t.match(err, "^invalid repository name ", n)
    t.ok(err:find(string.format("%q", n), 1, true), "the message names " .. n)
    t.match(err, "'__'")
  end
  t.eq(reference.repository(nil), nil)
  t.eq(reference.repository(42), nil)
end)

t.test("valid tags are accepted, 128 characters at most", function()
  for _, tag in ipairs { "v1", "latest", "1.0.0-rc.1", "_x", "A_b-C.d", "0", string.rep("x", 128) } do
    t.eq(reference.tag(tag), tag, tag)
  end
end)

t.test("invalid tags are refused", function()
  for _, tag in ipairs { "", ".x", "-x", "..", "a/b", "a:b", "a@b", "a b", "a%2f", string.rep("x", 129) } do
    local ok, err = reference.tag(tag)
    t.eq(ok, nil, tag)
    t.match(err, "^invalid tag ", tag)
    t.match(err, "1 to 128")
  end
end)

t.test("digests follow the OCI image spec grammar; sha256 and sha512 need their hex length", function()
  for _, d in ipairs { SHA256, SHA512, "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
                       "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "a.b_c-d:x=" } do
    t.eq(reference.digest(d), d, d)
  end
  for _, d in ipairs { "", "sha256", "sha256:", ":abc", "sha256:" .. string.rep("a", 63),
                       "sha256:" .. string.rep("A", 64), "sha512:" .. string.rep("0", 64), "SHA256:abc",
                       "sha256:../../x", "a..b:x", "a-:x", "sha256:ab cd", "sha256:a/b" } do
    local ok, err = reference.digest(d)
    t.eq(ok, nil, d)
    t.match(err, "^invalid digest ", d)
  end
end)

t.test("a manifest reference is a digest when it holds ':', else a tag", function()
  t.eq(reference.ref("v1"), "v1")
  t.eq(reference.ref(SHA256), SHA256)
  t.eq(reference.ref("v1:"), nil)
  t.eq(reference.ref("V1:x"), nil)
  t.eq(reference.ref("../x"), nil)
  t.eq(reference.check("a/b", "v1"), true)
  t.eq(reference.check("a/b"), true)
  local ok, err = reference.check("a/../b", "v1")
  t.eq(ok, nil)
  t.match(err, "invalid repository name")
  ok, err = reference.check("a/b", "..")
  t.eq(ok, nil)
  t.match(err, "invalid tag")
end)

t.done()
