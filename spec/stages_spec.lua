-- The stage runner and the distribution kind's pull_post stage, without
-- registries: what a template author relies on.
local t = require("tap").new(...)
local runner = require("runner")

local function template(stages)
  return { name = "test", stages = stages }
end

t.test("stage results come in template order with name, function, status and times", function()
  local tpl = assert(runner.template("distribution"))
  local names = {}
  for i, s in ipairs(tpl.stages) do names[i] = s.name end
  t.eq(table.concat(names, " "), "pull_prepare pull pull_post push_prepare push push_post")
  local res, ok = runner.run(template({ { name = "a", fn = "common/pass" }, { name = "b", fn = "common/pass" } }),
    { task = {}, options = {}, data = {} })
  t.eq(ok, true)
  t.eq(#res, 2)
  t.eq(res[1].name, "a")
  t.eq(res[1]["function"], "common/pass")
  t.eq(res[1].status, "succeeded")
  t.ok(res[1].started <= res[1].finished)
end)

t.test("a failing stage records its error and the later stages are skipped", function()
  -- pull_post raises on an artifact without blob lists.
  local res, ok
  local tpl = { name = "t", stages = { { name = "x", fn = "distribution/pull_post" }, { name = "y", fn = "common/pass" } } }
  res, ok = runner.run(tpl, { task = {}, options = { platforms = { "linux/amd64" } },
    data = { artifacts = { { tag = "v1", blobs = {}, manifests = { {} } } } } })
  t.eq(ok, false)
  t.eq(res[1].status, "failed")
  t.match(res[1].error, "attempt to index a nil value")
  t.eq(res[2].status, "skipped")
  t.eq(res[2].started, nil)
end)

t.test("a remote stage that answers something other than JSON fails with a clear error", function()
  local tpl = { name = "t", stages = { { name = "r", remote = t.env.HTTP_URL .. "/echo" } } }
  local res, ok = runner.run(tpl, { task = { repository = "x" }, options = {}, data = {} })
  t.eq(ok, false)
  t.match(res[1].error, "invalid JSON")
  tpl.stages[1].remote = t.env.HTTP_URL .. "/status/500"
  res, ok = runner.run(tpl, { task = {}, options = {}, data = {} })
  t.eq(ok, false)
  t.match(res[1].error, "http 500")
end)

local pull_post = assert(runner.stage("distribution/pull_post"))

local function layer(mt, d) return { mediaType = mt, digest = d, size = 1 } end

t.test("pull_post drops foreign and non-distributable layers", function()
  local art = { tag = "v1", manifests = {}, blobs = {
    layer("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:a"),
    layer("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "sha256:b"),
    layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "sha256:c"),
  } }
  local out = pull_post.run({ options = {}, data = { artifacts = { art } } })
  t.eq(out.foreign_layers_dropped, 2)
  t.eq(#art.blobs, 1)
  t.eq(art.blobs[1].digest, "sha256:a")
end)

t.test("pull_post narrows an index to the asked platforms", function()
  local function child(arch, d)
    return { descriptor = { mediaType = "application/vnd.oci.image.manifest.v1+json", digest = d, size = 2,
                            platform = { os = "linux", architecture = arch } },
             digest = d, media_type = "application/vnd.oci.image.manifest.v1+json", body = "{}", blobs = {} }
  end
  local index = json.encode({ schemaVersion = 2, mediaType = "application/vnd.oci.image.index.v1+json",
    manifests = { { digest = "sha256:1" }, { digest = "sha256:2" }, { digest = "sha256:3" } } })
  local one = { tag = "one", body = index, manifests = { child("amd64", "sha256:1"), child("arm64", "sha256:2"), child("s390x", "sha256:3") }, blobs = {} }
  local two = { tag = "two", body = index, manifests = { child("amd64", "sha256:1"), child("arm64", "sha256:2"), child("s390x", "sha256:3") }, blobs = {} }
  pull_post.run({ options = { platforms = { "linux/arm64" } }, data = { artifacts = { one } } })
  t.eq(one.digest, "sha256:2", "one platform: the tag points at its image manifest")
  t.eq(#one.manifests, 0)
  pull_post.run({ options = { platforms = { "linux/arm64", "linux/amd64" } }, data = { artifacts = { two } } })
  t.eq(#two.manifests, 2, "two platforms: a narrower index")
  local doc = assert(json.decode(two.body))
  t.eq(#doc.manifests, 2)
  t.eq(two.digest, "sha256:" .. digest.sha256(two.body), "whose digest is that of its new bytes")
  local none = { tag = "none", body = index, manifests = { child("amd64", "sha256:1") }, blobs = {} }
  pull_post.run({ options = { platforms = { "linux/riscv64" } }, data = { artifacts = { none } } })
  t.match(none.error, "no manifest for platform")
end)

local verify = assert(runner.stage("distribution/verify"))

-- A target client that answers HEADs from a table of tag -> digest, and
-- counts them.
local function target(tags)
  local dst = { heads = 0 }
  function dst:head_manifest(_, tag)
    self.heads = self.heads + 1
    return tags[tag] and { digest = tags[tag] } or false
  end
  return dst
end

t.test("verify counts a tag whose PUT the registry confirmed, and reads back only the others", function()
  local dst = target({ v2 = "sha256:2", v3 = "sha256:3" })
  local out = assert(verify.run({ task = { dest_repository = "r" }, dst = dst, options = {} }, { tags = {
    { tag = "v1", status = "pushed", digest = "sha256:1", confirmed = true },
    { tag = "v2", status = "pushed", digest = "sha256:2" },
    { tag = "v3", status = "pushed", digest = "sha256:3" },
    { tag = "v4", status = "skipped", digest = "sha256:4" },
  } }))
  t.eq(dst.heads, 2, "one HEAD for each unconfirmed push, none for the confirmed or skipped tag")
  t.eq(out.verified, 3)
  t.eq(out.confirmed, 1)
  t.eq(out.read_back, 2)
end)

t.test("verify fails a read-back tag that is missing or resolves elsewhere, naming it", function()
  local dst = target({ v2 = "sha256:other" })
  local out, err = verify.run({ task = { dest_repository = "r" }, dst = dst, options = {} }, { tags = {
    { tag = "v1", status = "pushed", digest = "sha256:1" },
    { tag = "v2", status = "pushed", digest = "sha256:2" },
  } })
  t.eq(out, nil)
  t.match(err, "v1: missing on the target")
  t.match(err, "v2 resolves to sha256:other, expected sha256:2")
end)

t.done()
