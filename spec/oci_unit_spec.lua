-- spec/oci_unit_spec.lua - the oci client's parsing and retry rules, with no
-- registry: Link headers, relative URLs, WWW-Authenticate challenges,
-- Retry-After, backoff, manifests' children, and what the client keeps.
local t = require("tap").new(...)
local oci = require("oci")
local auth = require("oci.auth")
local link = require("oci.link")
local retry = require("oci.retry")

t.test("link.next finds rel=next among several links and joined headers", function()
  t.eq(link.next('</v2/_catalog?last=b&n=2>; rel="next"'), "/v2/_catalog?last=b&n=2")
  t.eq(link.next('<http://x/prev>; rel="prev", <http://x/next>; rel="next"'), "http://x/next")
  t.eq(link.next('<a>; rel=next'), "a")
  t.eq(link.next('<a>; title="x"; rel="last next"'), "a")
  t.eq(link.next('<a>; rel="prev"'), nil)
  t.eq(link.next(nil), nil)
end)

t.test("link.resolve handles absolute, path, query and relative references", function()
  local base = "http://127.0.0.1:5000/v2/_catalog?n=2"
  t.eq(link.resolve(base, "https://other/x"), "https://other/x")
  t.eq(link.resolve(base, "/v2/_catalog?last=b&n=2"), "http://127.0.0.1:5000/v2/_catalog?last=b&n=2")
  t.eq(link.resolve(base, "//h:1/p"), "http://h:1/p")
  t.eq(link.resolve(base, "?last=b"), "http://127.0.0.1:5000/v2/_catalog?last=b")
  t.eq(link.resolve("http://h/v2/a/tags/list", "list?last=x"), "http://h/v2/a/tags/list?last=x")
  t.eq(link.resolve("http://h", "x"), "http://h/x")
end)

t.test("auth.parse_challenges reads Bearer and Basic challenges, quoted or not", function()
  local c = auth.parse_challenges(
    'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')
  t.eq(#c, 1)
  t.eq(c[1].scheme, "bearer")
  t.eq(c[1].params.realm, "https://auth.example/token")
  t.eq(c[1].params.service, "registry.example")
  t.eq(c[1].params.scope, "repository:a/b:pull,push")
  c = auth.parse_challenges('Basic realm="a \\"quoted\\" realm", Bearer realm=http://t/token, service=s')
  t.eq(#c, 2)
  t.eq(c[1].scheme, "basic")
  t.eq(c[1].params.realm, 'a "quoted" realm')
  t.eq(c[2].params.realm, "http://t/token")
  t.eq(c[2].params.service, "s")
  t.eq(#auth.parse_challenges(""), 0)
end)

t.test("retry.after reads delta seconds and the three HTTP-date forms", function()
  local now = 784111777 - 10  -- 10 s before Sun, 06 Nov 1994 08:49:37 GMT
  t.eq(retry.after("7", now), 7)
  t.eq(retry.after(" 0 ", now), 0)
  t.eq(retry.after("Sun, 06 Nov 1994 08:49:37 GMT", now), 10)
  t.eq(retry.after("Sunday, 06-Nov-94 08:49:37 GMT", now), 10)
  t.eq(retry.after("Sun Nov  6 08:49:37 1994", now), 10)
  t.eq(retry.after("Sun, 06 Nov 1994 08:49:37 GMT", now + 100), 0, "a date in the past")
  t.eq(retry.http_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0)
  t.eq(retry.http_date("Tue, 29 Feb 2000 12:00:00 GMT"), 951825600)
  t.eq(retry.after("soon", now), nil)
  t.eq(retry.after(nil, now), nil)
end)

t.test("retry.backoff doubles from the base up to the cap, with jitter in the upper half", function()
  for n = 1, 8 do
    local d = math.min(10, 0.5 * 2 ^ (n - 1))
    for _ = 1, 20 do
      local w = retry.backoff(n)
      t.ok(w >= d / 2 and w <= d, string.format("retry %d waited %.3f, outside [%.3f, %.3f]", n, w, d / 2, d))
    end
  end
end)

t.test("retry.run: an origin that refused every attempt is tried once per request until it answers", function()
  local opts = { retries = 2, base = 0.001, cap = 0.001 }
  local calls
  -- fn for retry.run that answers with the given results in turn (the last repeats)
  local function answers(...)
    local list = { ... }
    calls = 0
    return function()
      calls = calls + 1
      local a = list[math.min(calls, #list)]
      if a == "connect" or a == "closed" then return nil, a, a .. " (detail)" end
      return { status = a }
    end
  end
  local dead = "GET http://Down.example:5000/v2/x"
  local res, err, detail = retry.run(opts, dead, answers("connect"))
  t.eq(res, nil)
  t.eq(err .. " " .. calls, "connect 3", "the first request: every retry")
  t.eq(detail, "connect (detail)")
  res, err, detail = retry.run(opts, "HEAD http://down.example:5000/v2/y/blobs/z", answers("connect"))
  t.eq(err .. " " .. calls, "connect 1", "a later request to the origin is tried once")
  t.match(detail, "^connect %(detail%); not retried: http://down.example:5000 refused every attempt of an earlier request$")
  retry.run(opts, "GET http://other.example/v2/", answers("connect"))
  t.eq(calls, 3, "another origin keeps its retries")
  retry.run(opts, "GET http://down.example:5000/v2/", answers("closed", 200))
  t.eq(calls, 2, "an answer other than a refused connection brings the retries back at once")
  retry.run(opts, dead, answers("connect"))
  t.eq(calls, 3, "and after it got through, a refusal is retried in full again")
  retry.run(opts, dead, answers("connect", 200))
  t.eq(calls, 1, "found down again: one try")
  retry.run({ retries = 0 }, "GET http://once.example/v2/", answers("connect"))
  retry.run(opts, "GET http://once.example/v2/", answers("connect"))
  t.eq(calls, 3, "a request made without retries does not mark its origin down")
  retry.run(opts, "GET http://other.example/v2/", answers(200))
end)

t.test("retry.transient: connect, closed, timeout, 429 and 5xx (not 501); nothing else", function()
  for _, e in ipairs { "connect", "closed", "timeout" } do t.ok(retry.transient(nil, e), e) end
  for _, e in ipairs { "tls", "cancelled", "bad url", "too large" } do t.ok(not retry.transient(nil, e), e) end
  for _, s in ipairs { 429, 500, 502, 503, 504 } do t.ok(retry.transient({ status = s }), tostring(s)) end
  for _, s in ipairs { 200, 401, 404, 501 } do t.ok(not retry.transient({ status = s }), tostring(s)) end
  t.ok(retry.transient_err("http 503"))
  t.ok(not retry.transient_err("http 404"))
  t.ok(not retry.transient_err("digest mismatch"))
end)

t.test("retry.run retries up to `retries` times, then returns the last answer", function()
  local calls = 0
  local res = retry.run({ retries = 3, base = 0.001, cap = 0.002 }, "GET x", function()
    calls = calls + 1
    return { status = 503, headers = {} }
  end)
  t.eq(calls, 4)
  t.eq(res.status, 503)
  calls = 0
  local _, err = retry.run({ retries = 3, base = 0.001 }, "GET x", function()
    calls = calls + 1
    if calls < 3 then return nil, "connect", "refused" end
    return nil, "tls", "bad certificate"
  end)
  t.eq(calls, 3, "stops at the first permanent failure")
  t.eq(err, "tls")
end)

t.test("retry.run honours Retry-After on 429 and 503", function()
  local calls, started = 0, time.mono()
  local res = retry.run({ retries = 2, base = 0.001 }, "GET x", function()
    calls = calls + 1
    if calls == 1 then return { status = 429, headers = { ["retry-after"] = "1" } } end
    return { status = 200, headers = {} }
  end)
  local took = time.mono() - started
  t.eq(res.status, 200)
  t.ok(took >= 0.95 and took < 3, string.format("waited %.2f s for Retry-After: 1", took))
end)

t.test("retry.run sleeps through time.sleep, so cancelling the task stops it", function()
  local h = task.spawn(function()
    return retry.run({ retries = 2 }, "GET x", function()
      return { status = 503, headers = { ["retry-after"] = "30" } }
    end)
  end)
  time.sleep(0.1)
  local started = time.mono()
  h:cancel()
  local ok, err = h:wait()
  t.ok(time.mono() - started < 1, "cancel took effect at once")
  t.ok(not ok or err == "cancelled")
end)

t.test("a refused connection is retried, then reported with the URL", function()
  local reg = oci.new { url = "http://127.0.0.1:1", retries = 2, backoff = { base = 0.01, cap = 0.02 } }
  local ok, err, kind = reg:ping()
  t.eq(ok, nil)
  t.eq(kind, "connect")
  t.match(err, "^GET http://127%.0%.0%.1:1/v2/: connect")
end)

t.test("oci.new refuses a URL with credentials in it and keeps credentials out of the client", function()
  t.raises(function() oci.new { url = "http://user:pw@127.0.0.1:5000" } end, "without credentials")
  t.raises(function() oci.new {} end, "'url' is required")
  local reg = oci.new { url = "http://127.0.0.1:5000/", username = "alice", password = "s3cret-pw" }
  t.eq(reg.url, "http://127.0.0.1:5000")
  -- Walk everything reachable from the client: no string holds the secret.
  local seen = {}
  local function walk(v)
    if type(v) == "string" then
      t.ok(not v:find("s3cret", 1, true) and not v:find(base64.encode("alice:s3cret-pw"), 1, true),
        "the client holds its password in a field")
    elseif type(v) == "table" and not seen[v] then
      seen[v] = true
      for k, x in pairs(v) do walk(k); walk(x) end
      walk(getmetatable(v))
    end
  end
  walk(reg)
end)

t.test("oci.children lists an image's config and layers, and an index's manifests", function()
  local image = [[{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":2},
    "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l1","size":10},
              {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l2","size":20}]}]]
  local c = assert(oci.children(image))
  t.eq(#c, 3)
  t.eq(c[1].digest, "sha256:c")
  t.eq(c[2].digest, "sha256:l1")
  t.eq(c[3].size, 20)
  local index = [[{"schemaVersion":2,"manifests":[
    {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":5,
     "platform":{"architecture":"amd64","os":"linux"}}]}]]
  c = assert(oci.children({ body = index, media_type = oci.OCI_INDEX }))
  t.eq(#c, 1)
  t.eq(c[1].platform.architecture, "amd64")
  c = assert(oci.children(json.decode(index)), "the media type is guessed from the shape")
  t.eq(c[1].digest, "sha256:a")
  local _, err = oci.children('{"schemaVersion":1,"fsLayers":[]}')
  t.match(err, "Docker schema 1 %(application/vnd.docker.distribution.manifest.v1%+json%) is not supported")
  _, err = oci.children('{"schemaVersion":2,"mediaType":"application/x-thing"}')
  t.match(err, "unsupported media type application/x%-thing")
  _, err = oci.children('{"manifests":[{"digest":"sha256:a"}]}')
  t.match(err, "manifests%[1%] is not a descriptor")
  _, err = oci.children("{not json")
  t.match(err, "invalid JSON")
end)

t.test("oci.is_index is true for OCI indexes and Docker manifest lists only", function()
  t.ok(oci.is_index(oci.OCI_INDEX))
  t.ok(oci.is_index(oci.DOCKER_LIST))
  t.ok(not oci.is_index(oci.OCI_MANIFEST))
  t.ok(not oci.is_index(oci.DOCKER_MANIFEST))
  t.ok(not oci.is_index(nil))
end)

t.test("oci.is_foreign is true for foreign and non-distributable layers only", function()
  t.ok(oci.is_foreign("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"))
  t.ok(oci.is_foreign("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"))
  t.ok(not oci.is_foreign("application/vnd.oci.image.layer.v1.tar+gzip"))
  t.ok(not oci.is_foreign("application/vnd.docker.image.rootfs.diff.tar.gzip"))
  t.ok(not oci.is_foreign(nil))
end)

t.test("a name or reference outside the OCI grammar fails the call before any URL is built", function()
  -- Port 1 refuses connections: a call that got as far as a request would fail with "connect".
  local reg = oci.new { url = "http://127.0.0.1:1", retries = 0 }
  local D = "sha256:" .. string.rep("a", 64)
  local calls = {
    { "get_manifest", function() return reg:get_manifest("a/../b", "v1") end, "invalid repository name" },
    { "get_manifest tag", function() return reg:get_manifest("a/b", "../v1") end, "invalid tag" },
    { "get_manifest digest", function() return reg:get_manifest("a/b", "sha256:../x") end, "invalid digest" },
    { "head_manifest", function() return reg:head_manifest("team-a/../team-b/app", "v1") end, "invalid repository" },
    { "put_manifest", function() return reg:put_manifest("a/./b", "v1", "{}", oci.OCI_MANIFEST) end, "invalid repository" },
    { "delete_manifest", function() return reg:delete_manifest("../b", D) end, "invalid repository" },
    { "head_blob", function() return reg:head_blob("a//b", D) end, "invalid repository" },
    { "start_upload", function() return reg:start_upload("A/b") end, "invalid repository" },
    { "mount_blob", function() return reg:mount_blob("a/b", D, "x/../../y") end, "invalid repository" },
    { "put_blob", function() return reg:put_blob("a/b/..", "x") end, "invalid repository" },
    { "tags", function() return reg:tags("a/../b") end, "invalid repository" },
    { "copy_blob_from", function() return reg:copy_blob_from(reg, "a/../b", "c", { digest = D, size = 1 }) end,
      "invalid repository" },
  }
  for _, c in ipairs(calls) do
    local v, err, kind = c[2]()
    t.eq(v, nil, c[1])
    t.eq(kind, "invalid name", c[1])
    t.match(err, c[3], c[1])
  end
  local url, err = reg:blob_url("a/../b", D)
  t.eq(url, nil)
  t.match(err, "^blob: invalid repository name")
  t.raises(function() oci.new { url = "http://127.0.0.1:1/x/../y" } end, "must not hold '.', '..'")
end)

t.done()
