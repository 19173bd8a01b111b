-- spec/oci_ratelimit_spec.lua - pull quotas a kind announces
-- (oci/ratelimit.lua), with no registry: the header grammar, which 429s
-- mean a used-up quota, pacing near the end, waiting with probes, the
-- max_wait bound, estimates that err low with requests in flight, and the
-- kinds' quirks as the client applies them (Docker Hub's registry_url and
-- pull_limit).
local t = require("tap").new(...)
local ratelimit = require("oci.ratelimit")
local oci = require("oci")
local kinds = require("kinds")

local function answer(status, remaining, limit, extra)
  local h = { ["ratelimit-remaining"] = remaining, ["ratelimit-limit"] = limit }
  for k, v in pairs(extra or {}) do h[k] = v end
  return { status = status, headers = h, body = "" }
end
local QUIRK = { remaining = "ratelimit-remaining", limit = "ratelimit-limit" }

t.test("ratelimit.parse reads N and N;w=W; ratelimit.duration reads seconds, m, h and d", function()
  t.eq(select("#", ratelimit.parse("100;w=21600")), 2)
  local n, w = ratelimit.parse("100;w=21600")
  t.eq(n, 100)
  t.eq(w, 21600)
  n, w = ratelimit.parse(" 7 ")
  t.eq(n, 7)
  t.eq(w, nil)
  t.eq(ratelimit.parse("many"), nil)
  t.eq(ratelimit.parse(nil), nil)
  t.eq(ratelimit.duration("90"), 90)
  t.eq(ratelimit.duration("15m"), 900)
  t.eq(ratelimit.duration("6h"), 21600)
  t.eq(ratelimit.duration("1.5h"), 5400)
  t.eq(ratelimit.duration("2d"), 172800)
  t.eq(ratelimit.duration("soon"), nil)
  t.eq(ratelimit.duration("-1"), nil)
  local lim, err = ratelimit.new(QUIRK, "hub", "tomorrow")
  t.eq(lim, nil)
  t.match(err, "max_wait must be a duration")
  t.eq(ratelimit.new({ max_wait = 30 }, "hub").max_wait, 30, "the quirk's default")
  t.eq(ratelimit.new({ max_wait = 30 }, "hub", "2m").max_wait, 120, "the option overrides it")
  t.eq(ratelimit.new({}, "hub").max_wait, 21600, "6 h without either")
end)

t.test("a 429 means a used-up quota when it says 0 left, or TOOMANYREQUESTS without Retry-After", function()
  local lim = ratelimit.new(QUIRK, "hub")
  t.ok(lim:exhausted(answer(429, "0;w=60", "10;w=60")), "0 left")
  t.ok(not lim:exhausted(answer(429, nil, nil, { ["retry-after"] = "2" })), "a plain 429 with Retry-After: a throttle")
  local coded = { status = 429, headers = {}, body = '{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}' }
  t.ok(lim:exhausted(coded), "TOOMANYREQUESTS with no Retry-After")
  coded.headers["retry-after"] = "1"
  t.ok(not lim:exhausted(coded), "TOOMANYREQUESTS with Retry-After: a throttle (ECR says so)")
  t.ok(not lim:exhausted(answer(200, "0;w=60", "10;w=60")), "a 200 never")
  t.ok(lim.final(answer(429, "0;w=60")), "final is exhausted, for retry.run")
end)

t.test("acquire counts GETs down, slows down at the reserve, and waits with probes when none are left", function()
  local lim = ratelimit.new(QUIRK, "hub")
  t.ok(lim:observe(answer(200, "3;w=2", "4;w=2")), "the headers were read")
  t.eq(lim.remaining, 3)
  local started = time.mono()
  local m1 = lim:acquire(function() error("no probe while some are left") end, started)
  local m2 = lim:acquire(function() error("no probe") end, started)
  t.ok(m1 and m2 and m2.seq > m1.seq, "two GETs granted at once")
  t.ok(time.mono() - started < 0.2, "without waiting")
  lim:done(m1)
  lim:done(m2)
  -- 1 left = the reserve: spaced 2/4 = 0.5 s apart
  local t0 = time.mono()
  t.ok(lim:acquire(function() error("no probe") end, t0))
  t.eq(lim.remaining, 0)
  local probes = 0
  local m4 = lim:acquire(function()
    probes = probes + 1
    return answer(200, probes < 2 and "0;w=2" or "2;w=2", "4;w=2")
  end, t0)
  local took = time.mono() - t0
  t.ok(m4, "granted once a probe said the count went up")
  t.eq(probes, 2, "after two HEAD probes")
  t.ok(took >= 0.45 and took < 2, string.format("a probe step (0.5 s) apart: %.2f s", took))
end)

t.test("max_wait bounds a wait, and a Retry-After beyond it fails at once", function()
  local lim = ratelimit.new(QUIRK, "hub", "1")
  lim:observe(answer(200, "0;w=3600", "100;w=3600"))
  local started = time.mono()
  local ok, err = lim:acquire(function() return answer(200, "0;w=3600", "100;w=3600") end, started)
  local took = time.mono() - started
  t.eq(ok, nil)
  t.match(err, "^hub: the pull limit %(100 per 3600 s%) is used up, and it was not back within max_wait %(1 s%)")
  t.ok(took >= 0.9 and took < 3, string.format("after max_wait: %.2f s", took))
  local lim2 = ratelimit.new(QUIRK, "hub", "5")
  lim2:observe(answer(429, "0;w=3600", "100;w=3600", { ["retry-after"] = "600" }))
  started = time.mono()
  ok, err = lim2:acquire(function() error("no probe") end, started)
  t.eq(ok, nil)
  t.match(err, "not back within max_wait %(5 s%)")
  t.ok(time.mono() - started < 0.5, "at once: the Retry-After is past the bound")
end)

t.test("an answer is read less the GETs it may not have counted: the estimate errs low", function()
  local lim = ratelimit.new(QUIRK, "hub")
  lim:observe(answer(200, "10;w=60", "10;w=60"))
  local before = lim:mark()
  local g1 = lim:acquire(function() end, time.mono())
  local g2 = lim:acquire(function() end, time.mono())
  lim:observe(answer(200, "9;w=60", "10;w=60"), before) -- a HEAD sent before both GETs, answered late
  t.eq(lim.remaining, 7, "both GETs granted since are taken off")
  lim:done(g1)
  lim:observe(answer(200, "9;w=60", "10;w=60"), g1) -- g1's own answer: g2 was granted after it
  t.eq(lim.remaining, 8)
  local head = lim:mark()
  lim:observe(answer(200, "9;w=60", "10;w=60"), head) -- a HEAD sent while g2 is unanswered
  t.eq(lim.remaining, 8, "g2, granted before and not answered yet, is taken off")
  lim:done(g2)
  lim:observe(answer(200, "8;w=60", "10;w=60"), lim:mark())
  t.eq(lim.remaining, 8, "with nothing in flight the registry's count stands")
end)

t.test("Docker Hub's quirks: docker.io and index.docker.io are registry-1.docker.io, with a pull limit", function()
  local hub = assert(kinds.load("dockerhub"))
  for _, u in ipairs({ "https://docker.io", "https://index.docker.io/", "https://DOCKER.IO" }) do
    t.eq(oci.new { url = u, kind = hub }.url, "https://registry-1.docker.io", u)
  end
  t.eq(oci.new { url = "https://registry-1.docker.io", kind = hub }.url, "https://registry-1.docker.io")
  t.eq(oci.new { url = "https://docker.io" }.url, "https://docker.io", "only the kind moves it")
  t.eq(hub.quirks.pull_limit.remaining, "ratelimit-remaining")
  local reg = oci.new { url = "https://docker.io", kind = hub, kind_options = { max_wait = "10m" } }
  t.eq(ratelimit.of(reg).max_wait, 600, "the option max_wait bounds the wait")
  local near = oci.new { url = "http://127.0.0.1:1", kind = hub, retries = 0 } -- (a fork pings: nothing answers here)
  t.eq(ratelimit.of(near:fork()), ratelimit.of(near), "a fork shares its client's quota")
  t.raises(function() oci.new { url = "https://docker.io", kind = hub, kind_options = { max_wait = "later" } } end,
           "max_wait must be a duration")
  t.eq(ratelimit.of(oci.new { url = "https://r.example" }), nil, "other registries have none")
end)

t.done()
