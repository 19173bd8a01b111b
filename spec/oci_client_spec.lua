-- spec/oci_client_spec.lua - the oci client against real registries: Debian's
-- docker-registry (CNCF Distribution 2.8) without auth, with htpasswd, and
-- with token auth (tests/tokenserver.py), plus the sidecar in front of the
-- anonymous one for tags paging, blob GET faults and storage corruption.
-- Started by tests/registry.sh; every image here is built and pushed by the
-- client itself.
local t = require("tap").new(...)
local oci = require("oci")
local env = t.env

if (env.REG_ANON_URL or "") == "" then
  print("1..0 # SKIP no registries (start them with tests/registry.sh)")
  return
end

local FAST = { base = 0.05, cap = 0.2 }  -- backoff for tests
local anon = oci.new { url = env.REG_ANON_URL, backoff = FAST }
local basic = oci.new { url = env.REG_BASIC_URL, username = env.REG_BASIC_USER,
                        password = env.REG_BASIC_PASS, backoff = FAST }
local token = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER,
                        password = env.REG_TOKEN_PASS, backoff = FAST }
local sidecar = oci.new { url = env.REG_ANON_SIDECAR_URL, backoff = FAST }

-- Fixtures ------------------------------------------------------------------

local serial = 0

-- Returns n bytes that no other call returns.
local function random_bytes(n)
  serial = serial + 1
  local seed = string.format("%s/%d/%.17g", task.name(), serial, math.random())
  local parts = {}
  for i = 1, (n + 31) // 32 do parts[i] = digest.sha256(seed .. i, "raw") end
  return table.concat(parts):sub(1, n)
end

local KINDS = {
  oci = { manifest = oci.OCI_MANIFEST, index = oci.OCI_INDEX,
          config = "application/vnd.oci.image.config.v1+json",
          layer = "application/vnd.oci.image.layer.v1.tar+gzip" },
  docker = { manifest = oci.DOCKER_MANIFEST, index = oci.DOCKER_LIST,
             config = "application/vnd.docker.container.image.v1+json",
             layer = "application/vnd.docker.image.rootfs.diff.tar.gzip" },
}

-- Formats a descriptor the way a hand-written manifest would (not as
-- json.encode would: key order and spacing differ, so a client that
-- re-serialised manifests would change their digests).
local function desc_json(d, indent)
  local platform = d.platform and string.format(',\n%s  "platform": { "os": "linux", "architecture": "%s" }',
    indent, d.platform) or ""
  return string.format('%s{\n%s  "mediaType": "%s",\n%s  "size": %d,\n%s  "digest": "%s"%s\n%s}',
    indent, indent, d.mediaType, indent, d.size, indent, d.digest, platform, indent)
end

-- Builds and pushes an image (config + 2 random layers) into repo under ref
-- (nil: its digest); returns {body, digest, media_type, config, layers}.
local function push_image(reg, repo, ref, kind, arch)
  local k = KINDS[kind or "oci"]
  local layers = {}
  for i = 1, 2 do
    local data = random_bytes(700 + 513 * i)
    layers[i] = { mediaType = k.layer, digest = assert(reg:put_blob(repo, data)), size = #data }
  end
  local config = json.encode { architecture = arch or "amd64", os = "linux",
    rootfs = { type = "layers", diff_ids = { layers[1].digest, layers[2].digest } } }
  local cfg = { mediaType = k.config, digest = assert(reg:put_blob(repo, config)), size = #config }
  local body = string.format('{\n   "schemaVersion": 2,\n   "mediaType": "%s",\n   "config": \n%s,\n'
    .. '   "layers": [\n%s,\n%s\n   ]\n}\n', k.manifest, desc_json(cfg, "   "),
    desc_json(layers[1], "      "), desc_json(layers[2], "      "))
  local d = "sha256:" .. digest.sha256(body)
  local put, confirmed = reg:put_manifest(repo, ref or d, body, k.manifest)
  t.eq(put, d, "put_manifest returns the digest")
  t.eq(confirmed, true, "and that Distribution's answer confirmed it (Docker-Content-Digest)")
  return { body = body, digest = d, media_type = k.manifest, size = #body, config = cfg, layers = layers }
end

-- Pushes two images and an index (OCI) or manifest list (Docker) of them.
local function push_index(reg, repo, ref, kind)
  local k = KINDS[kind]
  local a = push_image(reg, repo, nil, kind, "amd64")
  local b = push_image(reg, repo, nil, kind, "arm64")
  local body = string.format('{"schemaVersion":2,  "mediaType":"%s",\n"manifests":[\n%s,\n%s]}', k.index,
    desc_json({ mediaType = k.manifest, size = a.size, digest = a.digest, platform = "amd64" }, " "),
    desc_json({ mediaType = k.manifest, size = b.size, digest = b.digest, platform = "arm64" }, " "))
  local d = assert(reg:put_manifest(repo, ref, body, k.index))
  return { body = body, digest = d, media_type = k.index, size = #body, images = { a, b } }
end

-- Calls the token server or the sidecar: GET PATH or POST PATH; returns the decoded JSON.
local function helper(base, method, path)
  local res = assert(http.request { method = method, url = base .. path })
  t.eq(res.status, 200, method .. " " .. path)
  return json.decode(res.body)
end

-- Token server settings and counters.
local function tokens_control(query) return helper(env.REG_TOKEN_TOKEN_URL, "POST", "/control?" .. query) end
local function tokens_stats() return helper(env.REG_TOKEN_TOKEN_URL, "GET", "/stats") end

-- Checks that a manifest reads back as exactly what was pushed, by tag and digest.
local function check_round_trip(reg, repo, tag, pushed)
  for _, ref in ipairs { tag, pushed.digest } do
    local m = assert(reg:get_manifest(repo, ref))
    t.ok(m.body == pushed.body, "GET " .. ref .. " returns the exact bytes")
    t.eq(m.digest, pushed.digest)
    t.eq(m.media_type, pushed.media_type)
    t.eq(m.size, #pushed.body)
    local h = assert(reg:head_manifest(repo, ref))
    t.eq(h.digest, pushed.digest, "HEAD " .. ref)
    t.eq(h.media_type, pushed.media_type)
    t.eq(h.size, #pushed.body)
  end
end

-- Tests ---------------------------------------------------------------------

t.test("ping: an anonymous registry needs no auth", function()
  local p = assert(anon:ping())
  t.eq(p.auth, "none")
  t.eq(p.api, "registry/2.0")
end)

t.test("ping: basic auth accepts good credentials", function()
  local p = assert(basic:ping())
  t.eq(p.auth, "basic")
end)

t.test("basic auth: a wrong password fails clearly, and no error shows it", function()
  local pass = "wrong-" .. env.REG_BASIC_PASS
  local reg = oci.new { url = env.REG_BASIC_URL, username = env.REG_BASIC_USER, password = pass }
  local ok, err, kind = reg:ping()
  t.eq(ok, nil)
  t.eq(kind, "http 401")
  t.eq(err, "GET " .. env.REG_BASIC_URL .. "/v2/: http 401 UNAUTHORIZED (the credentials were refused or lack access)")
  local _, err2 = reg:get_manifest("lib/app", "latest")
  t.match(err2, "http 401")
  for _, e in ipairs { err, err2 } do
    t.ok(not e:find(pass, 1, true) and not e:find(env.REG_BASIC_PASS, 1, true), "the password is in: " .. e)
  end
  local _, err3 = oci.new { url = env.REG_BASIC_URL }:ping()
  t.match(err3, "http 401 UNAUTHORIZED %(the registry needs credentials%)")
end)

t.test("basic auth: push an image and read it back", function()
  local img = push_image(basic, "basic/app", "v1", "oci")
  check_round_trip(basic, "basic/app", "v1", img)
  t.eq(basic:head_blob("basic/app", img.layers[1].digest), img.layers[1].size)
end)

t.test("manifests: an OCI image manifest round-trips as exact bytes (PUT, GET, HEAD)", function()
  local img = push_image(anon, "lib/oci-image", "v1", "oci")
  check_round_trip(anon, "lib/oci-image", "v1", img)
  local m = assert(anon:get_manifest("lib/oci-image", "v1"))
  local c = assert(oci.children(m))
  t.eq(#c, 3)
  t.eq(c[1].digest, img.config.digest)
  t.eq(c[2].digest, img.layers[1].digest)
  t.eq(c[3].size, img.layers[2].size)
  t.ok(not oci.is_index(m.media_type))
end)

t.test("manifests: a Docker schema2 manifest round-trips as exact bytes", function()
  local img = push_image(anon, "lib/docker-image", "v1", "docker")
  check_round_trip(anon, "lib/docker-image", "v1", img)
  t.eq(#assert(oci.children(assert(anon:get_manifest("lib/docker-image", "v1")))), 3)
end)

t.test("manifests: an OCI index round-trips as exact bytes; its children are its images", function()
  local idx = push_index(anon, "lib/oci-multi", "v1", "oci")
  check_round_trip(anon, "lib/oci-multi", "v1", idx)
  local m = assert(anon:get_manifest("lib/oci-multi", "v1"))
  t.ok(oci.is_index(m.media_type))
  local c = assert(oci.children(m))
  t.eq(#c, 2)
  t.eq(c[1].digest, idx.images[1].digest)
  t.eq(c[2].mediaType, oci.OCI_MANIFEST)
  check_round_trip(anon, "lib/oci-multi", idx.images[2].digest, idx.images[2])
end)

t.test("manifests: a Docker manifest list round-trips as exact bytes", function()
  local idx = push_index(anon, "lib/docker-multi", "v1", "docker")
  check_round_trip(anon, "lib/docker-multi", "v1", idx)
  local m = assert(anon:get_manifest("lib/docker-multi", "v1"))
  t.eq(m.media_type, oci.DOCKER_LIST)
  t.eq(#assert(oci.children(m)), 2)
end)

t.test("manifests: missing ones are false on HEAD and a clear error on GET", function()
  t.eq(anon:head_manifest("lib/oci-image", "no-such-tag"), false)
  local m, err, kind = anon:get_manifest("lib/oci-image", "no-such-tag")
  t.eq(m, nil)
  t.eq(err, "GET " .. env.REG_ANON_URL .. "/v2/lib/oci-image/manifests/no-such-tag: http 404 MANIFEST_UNKNOWN")
  t.eq(kind, "http 404")
end)

t.test("put_manifest: a digest reference that does not match the body is refused", function()
  local img = push_image(anon, "lib/put-check", "v1", "oci")
  local _, err, kind = anon:put_manifest("lib/put-check", img.digest, img.body .. " ", img.media_type)
  t.eq(kind, "digest mismatch")
  t.match(err, "^PUT .*: digest mismatch")
end)

t.test("get_manifest: a manifest corrupted in storage fails with digest mismatch", function()
  local img = push_image(anon, "lib/corrupt-manifest", "v1", "oci")
  helper(env.REG_ANON_SIDECAR_URL, "POST", "/corrupt?digest=" .. img.digest)
  local _, err, kind = anon:get_manifest("lib/corrupt-manifest", "v1")
  t.eq(kind, "digest mismatch", "by tag: the registry's Docker-Content-Digest")
  t.match(err, "the registry says " .. img.digest)
  _, err, kind = anon:get_manifest("lib/corrupt-manifest", img.digest)
  t.eq(kind, "digest mismatch", "by digest: the reference")
end)

t.test("head_blob: the size of a present blob, false for a missing one", function()
  local img = push_image(anon, "lib/blobs", "v1", "oci")
  t.eq(anon:head_blob("lib/blobs", img.layers[2].digest), img.layers[2].size)
  t.eq(anon:head_blob("lib/blobs", "sha256:" .. digest.sha256("never pushed")), false)
  local _, err = anon:head_blob("lib/blobs", "sha256:nothex")
  t.match(err, "invalid digest")
end)

t.test("start_upload and mount_blob (202) return absolute upload locations; cancel_upload ends them", function()
  local loc = assert(anon:start_upload("lib/uploads"))
  t.match(loc, "^" .. env.REG_ANON_URL:gsub("%p", "%%%0") .. "/v2/lib/uploads/blobs/uploads/")
  t.eq(assert(http.request { url = loc }).status, 204, "the session exists")
  anon:cancel_upload(loc)
  t.eq(assert(http.request { url = loc }).status, 404, "cancel_upload ended it")
  local missing = "sha256:" .. digest.sha256("not in lib/blobs")
  loc = assert(anon:mount_blob("lib/uploads", missing, "lib/blobs"))
  t.match(loc, "^http://.*/v2/lib/uploads/blobs/uploads/", "no such blob to mount: an ordinary session")
  anon:cancel_upload(loc)
end)

t.test("mount_blob: 201 across repositories of one registry", function()
  local img = push_image(anon, "lib/mount-src", "v1", "oci")
  t.eq(anon:head_blob("lib/mount-dst", img.layers[1].digest), false)
  t.eq(assert(anon:mount_blob("lib/mount-dst", img.layers[1].digest, "lib/mount-src")), "mounted")
  t.eq(anon:head_blob("lib/mount-dst", img.layers[1].digest), img.layers[1].size)
end)

t.test("tags: every tag of a repository (Distribution answers in one page)", function()
  local img = push_image(anon, "lib/tagged", "t1", "oci")
  for i = 2, 5 do assert(anon:put_manifest("lib/tagged", "t" .. i, img.body, img.media_type)) end
  local tags = assert(anon:tags("lib/tagged"))
  table.sort(tags)
  t.eq(table.concat(tags, " "), "t1 t2 t3 t4 t5")
  local _, err, kind = anon:tags("lib/never-pushed")
  t.eq(kind, "http 404")
  t.match(err, "NAME_UNKNOWN")
end)

t.test("tags: Link rel=next pages are followed (sidecar paging 2 per page)", function()
  local tags = assert(sidecar:tags("lib/tagged", { n = 2 }))
  t.eq(table.concat(tags, " "), "t1 t2 t3 t4 t5")
end)

t.test("catalog: Link rel=next pages are followed over 120 repositories", function()
  local base = push_image(anon, "cat/base", "v1", "oci")
  local names = {}
  for i = 1, 120 do names[i] = string.format("cat/r%03d", i) end
  assert(parallel.map(names, function(repo)
    for _, d in ipairs { base.config, base.layers[1], base.layers[2] } do
      local r, err = anon:mount_blob(repo, d.digest, "cat/base")
      if r ~= "mounted" then return nil, err or ("not mounted: " .. r) end
    end
    return anon:put_manifest(repo, "v1", base.body, base.media_type)
  end, { limit = 8 }))
  -- Only the cat/ repositories: the other tests push elsewhere.
  local function cat(list)
    local out = {}
    for _, r in ipairs(list) do
      if r:match("^cat/r") then out[#out + 1] = r end
    end
    return table.concat(out, " ")
  end
  local want = table.concat(names, " ")
  t.eq(cat(assert(anon:catalog { n = 25 })), want, "pages of 25")
  t.eq(cat(assert(anon:catalog())), want, "pages of 1000")
end)

t.test("token auth: ping fetches a token, and the catalog needs registry:catalog:*", function()
  tokens_control("reset=1&expires_in=300&lifetime=&anonymous=pull&fail=0")
  local p = assert(token:ping())
  t.eq(p.auth, "bearer")
  local img = push_image(token, "tok/app", "v1", "oci")
  check_round_trip(token, "tok/app", "v1", img)
  local repos = table.concat(assert(token:catalog()), " ")
  t.match(repos, "tok/app")
  local s = tokens_stats()
  t.ok(s.requests >= 3, "tokens for the ping, the push and the catalog")
end)

t.test("token auth: a cross-repository mount asks for pull on the source repository too", function()
  tokens_control("reset=1")
  local m = assert(token:get_manifest("tok/app", "v1"))
  local layer = assert(oci.children(m))[2]
  t.eq(assert(token:mount_blob("tok/mounted", layer.digest, "tok/app")), "mounted")
  t.eq(token:head_blob("tok/mounted", layer.digest), layer.size)
  local s = tokens_stats()
  local found = false
  for _, sc in ipairs(s.scopes) do
    found = found or sc == "repository:tok/app:pull repository:tok/mounted:pull,push"
  end
  t.ok(found, "the mount's scopes: " .. table.concat(s.scopes, " | "))
end)

t.test("token auth: tokens are cached per scope, and concurrent callers share one fetch", function()
  tokens_control("reset=1&expires_in=300&lifetime=")
  local reg = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS }
  for _ = 1, 3 do assert(reg:head_manifest("tok/app", "v1")) end
  local m = assert(reg:get_manifest("tok/app", "v1"))
  local c = assert(oci.children(m))
  local sizes = assert(parallel.map({ c[1], c[2], c[3], c[1], c[2], c[3] }, function(d)
    return reg:head_blob("tok/app", d.digest)
  end, { limit = 6 }))
  t.eq(sizes[2], c[2].size)
  local s = tokens_stats()
  t.eq(s.requests, 1, "one token for repository:tok/app:pull: " .. table.concat(s.scopes, " | "))
  t.eq(s.scopes[1], "repository:tok/app:pull")
end)

t.test("token auth: a token past expires_in is fetched anew before use", function()
  tokens_control("reset=1&expires_in=1&lifetime=5")  -- the registry would take it longer
  local reg = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS }
  assert(reg:head_manifest("tok/app", "v1"))
  time.sleep(1.1)
  assert(reg:head_manifest("tok/app", "v1"))
  t.eq(tokens_stats().requests, 2)
  tokens_control("expires_in=300&lifetime=")
end)

t.test("token auth: a 401 mid-run refreshes the token once and retries", function()
  -- The token says it lasts 300 s, but the registry stops taking it within 2 s
  -- (at least 1 s after it was issued: exp has whole seconds).
  tokens_control("reset=1&expires_in=300&lifetime=2")
  local reg = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS }
  assert(reg:head_manifest("tok/app", "v1"))
  time.sleep(2.1)
  tokens_control("lifetime=")
  local h = assert(reg:head_manifest("tok/app", "v1"))
  t.ok(h.digest)
  t.eq(tokens_stats().requests, 2, "the stale token was replaced once")
end)

t.test("token auth: a refreshed token that still lacks access fails after exactly one refresh", function()
  tokens_control("reset=1&anonymous=none")
  local reg = oci.new { url = env.REG_TOKEN_URL }
  local ok, err, kind = reg:head_manifest("tok/app", "v1")
  tokens_control("anonymous=pull")
  t.eq(ok, nil)
  t.eq(kind, "http 401")
  t.match(err, "^HEAD .*/v2/tok/app/manifests/v1: http 401 %(the registry needs credentials%)")
  t.eq(tokens_stats().requests, 2, "one token, one refresh")
end)

t.test("token auth: anonymous callers may pull but not push", function()
  tokens_control("reset=1&anonymous=pull")
  local reg = oci.new { url = env.REG_TOKEN_URL }
  local m = assert(reg:get_manifest("tok/app", "v1"))
  local _, err, kind = reg:put_manifest("tok/app", "v2", m.body, m.media_type)
  t.eq(kind, "http 401")
  t.match(err, "^PUT .*: http 401 UNAUTHORIZED")
end)

t.test("token auth: bad credentials fail at the token server, and no error shows them", function()
  tokens_control("reset=1")
  local pass = "not-" .. env.REG_TOKEN_PASS
  local reg = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = pass }
  local _, err, kind = reg:ping()
  t.eq(kind, "auth")
  t.match(err, "^GET " .. env.REG_TOKEN_TOKEN_URL:gsub("%p", "%%%0") .. "/token: http 401")
  t.match(err, "check the username and password")
  local _, err2 = reg:get_manifest("tok/app", "v1")
  for _, e in ipairs { err, err2 } do
    t.ok(not e:find(pass, 1, true) and not e:find(base64.encode(env.REG_TOKEN_USER .. ":" .. pass), 1, true),
      "the password is in: " .. e)
  end
  t.eq(tokens_stats().denied, 2)
end)

t.test("token auth: a failing token server is retried, honouring Retry-After", function()
  tokens_control("reset=1&fail=1&retry_after=1")
  local reg = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS }
  local started = time.mono()
  assert(reg:head_manifest("tok/app", "v1"))
  local took = time.mono() - started
  tokens_control("retry_after=")
  t.ok(took >= 0.95, string.format("retried after %.2f s, Retry-After said 1", took))
  t.eq(tokens_stats().requests, 2)
end)

t.test("copy_blob_from: an image's blobs stream between registries; present ones are skipped", function()
  local img = push_image(anon, "copy/src", "v1", "oci")
  local m = assert(anon:get_manifest("copy/src", "v1"))
  for _, d in ipairs(assert(oci.children(m))) do
    local r = assert(token:copy_blob_from(anon, "copy/src", "copy/dst", d))
    t.ok(r.copied, "copied " .. d.digest)
    t.eq(r.bytes, d.size)
    t.eq(token:head_blob("copy/dst", d.digest), d.size)
  end
  t.eq(assert(token:put_manifest("copy/dst", "v1", m.body, m.media_type)), img.digest)
  check_round_trip(token, "copy/dst", "v1", img)
  local again = assert(token:copy_blob_from(anon, "copy/src", "copy/dst", img.layers[1]))
  t.ok(again.skipped, "the second copy finds the blob present")
end)

t.test("copy_blob_from: both sides authenticated (token to basic)", function()
  local img = push_image(token, "copy/tok-src", "v1", "docker")
  for _, d in ipairs { img.config, img.layers[1], img.layers[2] } do
    t.ok(assert(basic:copy_blob_from(token, "copy/tok-src", "copy/from-token", d)).copied)
  end
  assert(basic:put_manifest("copy/from-token", "v1", img.body, img.media_type))
  check_round_trip(basic, "copy/from-token", "v1", img)
end)

t.test("copy_blob_from: within one registry it mounts", function()
  local img = push_image(anon, "copy/mount-src", "v1", "oci")
  local r = assert(anon:copy_blob_from(anon, "copy/mount-src", "copy/mount-dst", img.layers[1]))
  t.ok(r.mounted)
  t.eq(anon:head_blob("copy/mount-dst", img.layers[1].digest), img.layers[1].size)
end)

t.test("copy_blob_from: a stale source token (401) is refreshed once", function()
  tokens_control("reset=1&expires_in=300&lifetime=2")
  local src = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS }
  local img = push_image(src, "copy/stale-src", "v1", "oci")
  assert(src:head_blob("copy/stale-src", img.layers[1].digest))  -- caches a pull token
  time.sleep(2.1)
  tokens_control("lifetime=")
  local r = assert(anon:copy_blob_from(src, "copy/stale-src", "copy/stale-dst", img.layers[1]))
  t.ok(r.copied)
  t.eq(anon:head_blob("copy/stale-dst", img.layers[1].digest), img.layers[1].size)
  local pulls = 0
  for _, sc in ipairs(tokens_stats().scopes) do
    if sc == "repository:copy/stale-src:pull" then pulls = pulls + 1 end
  end
  t.eq(pulls, 2, "the pull token was fetched, went stale in blob.copy, and was fetched once more")
end)

t.test("copy_blob_from: an 8 MiB blob (twice the stream's buffer) streams through", function()
  local data = random_bytes(8 * 1024 * 1024)
  local d = { digest = assert(anon:put_blob("copy/big", data)), size = #data }
  data = nil
  collectgarbage("collect")
  local r = assert(token:copy_blob_from(anon, "copy/big", "copy/big-dst", d))
  t.eq(r.bytes, d.size)
  t.eq(token:head_blob("copy/big-dst", d.digest), d.size)
end)

t.test("copy_blob_from: a 0-byte blob is copied", function()
  local d = { digest = assert(anon:put_blob("copy/empty", "")), size = 0 }
  t.eq(d.digest, "sha256:" .. digest.sha256(""))
  for i = 1, 5 do
    local r = assert(basic:copy_blob_from(anon, "copy/empty", "copy/empty-dst" .. i, d))
    t.ok(r.copied)
    t.eq(basic:head_blob("copy/empty-dst" .. i, d.digest), 0)
  end
end)

t.test("copy_blob_from: a 503 and a truncated body from the source restart the upload", function()
  local img = push_image(anon, "copy/flaky", "v1", "oci")
  for _, mode in ipairs { "503", "truncate" } do
    local before = helper(env.REG_ANON_SIDECAR_URL, "POST", "/control?fail=1&fail_mode=" .. mode).blob_gets
    local d = mode == "503" and img.layers[1] or img.layers[2]
    local r = assert(token:copy_blob_from(sidecar, "copy/flaky", "copy/flaky-dst", d))
    t.ok(r.copied, mode)
    t.eq(helper(env.REG_ANON_SIDECAR_URL, "GET", "/control").blob_gets - before, 2, mode .. ": two GETs")
    t.eq(token:head_blob("copy/flaky-dst", d.digest), d.size)
  end
end)

t.test("copy_blob_from: a source that keeps failing gives up after `retries`", function()
  local img = push_image(anon, "copy/down", "v1", "oci")
  local src = oci.new { url = env.REG_ANON_SIDECAR_URL, backoff = FAST }
  local dst = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS,
                        retries = 2, backoff = FAST }
  local before = helper(env.REG_ANON_SIDECAR_URL, "POST", "/control?fail=10&fail_mode=503").blob_gets
  local r, err, kind = dst:copy_blob_from(src, "copy/down", "copy/down-dst", img.layers[1])
  local gets = helper(env.REG_ANON_SIDECAR_URL, "POST", "/control?fail=0").blob_gets - before
  t.eq(r, nil)
  t.eq(kind, "http 503")
  t.match(err, "^copy " .. img.layers[1].digest .. " from .*: http 503")
  t.eq(gets, 3, "the first try and two retries")
  t.eq(dst:head_blob("copy/down-dst", img.layers[1].digest), false)
end)

t.test("copy_blob_from: a blob corrupted at the source fails with digest mismatch, and the target never has it", function()
  local img = push_image(anon, "copy/corrupt", "v1", "oci")
  local d = img.layers[1]
  helper(env.REG_ANON_SIDECAR_URL, "POST", "/corrupt?digest=" .. d.digest)
  local r, err, kind = basic:copy_blob_from(anon, "copy/corrupt", "copy/corrupt-dst", d)
  t.eq(r, nil)
  t.eq(kind, "digest mismatch")
  t.match(err, "^copy " .. d.digest .. " from .*: digest mismatch")
  t.eq(basic:head_blob("copy/corrupt-dst", d.digest), false)
  local r2 = assert(basic:copy_blob_from(anon, "copy/corrupt", "copy/corrupt-dst", img.layers[2]))
  t.ok(r2.copied, "the intact layer still copies")
end)

t.done()
