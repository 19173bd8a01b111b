-- The small modules scripts build on: json, digest, hmac, base64, time, log
-- and print. Digests and encodings are checked against published vectors.
local t = require("tap").new(...)

-- Compares two JSON-like values structurally.
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b and math.type(a) == math.type(b)
  end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

t.test("json: encode then decode gives the same value back", function()
  local v = { name = "replica", n = 3, ratio = 0.25, yes = true, no = false,
              list = { 1, "two", { three = 3 } }, nested = { a = { b = { c = "deep" } } },
              text = "quote \" backslash \\ newline \n tab \t unicode \u{e9}\u{1F600}" }
  local s = json.encode(v)
  t.eq(type(s), "string")
  local back, err = json.decode(s)
  t.ok(back, err)
  t.ok(same(back, v), "round trip changed the value: " .. s)
end)

t.test("json: integers decode as Lua integers, fractions as floats", function()
  local v = json.decode('{"i": 3, "neg": -7, "big": 9007199254740992, "zero": 0, "f": 2.5, "e": 1e2}')
  t.eq(math.type(v.i), "integer")
  t.eq(v.i, 3)
  t.eq(math.type(v.neg), "integer")
  t.eq(math.type(v.big), "integer")
  t.eq(v.big, 9007199254740992)
  t.eq(math.type(v.zero), "integer")
  t.eq(math.type(v.f), "float")
  t.eq(v.f, 2.5)
  t.eq(v.e, 100)
  local arr = json.decode("[1, 2, 3]")
  t.eq(math.type(arr[2]), "integer")
  t.eq(json.encode({ size = 1024 }), '{"size":1024}', "integers encode without a fraction")
end)

t.test("json: invalid input returns nil, err instead of raising", function()
  for _, s in ipairs{ "{bad", "", "[1,]", "{\"a\":}", "nul", "'single'" } do
    local ok, v, err = pcall(json.decode, s)
    t.ok(ok, "json.decode raised on " .. string.format("%q", s) .. ": " .. tostring(v))
    t.eq(v, nil, s)
    t.eq(type(err), "string", s)
    t.ok(#err > 0, s)
  end
end)

t.test("json: decode raises on a non-string (misuse)", function()
  t.raises(function() json.decode(nil) end)
  t.raises(function() json.decode({}) end)
end)

t.test("json.null stands for null both ways", function()
  t.ok(json.null ~= nil, "json.null is nil")
  local v = json.decode('{"a": null, "b": [null, 1]}')
  t.eq(v.a, json.null)
  t.eq(v.b[1], json.null)
  t.eq(v.b[2], 1)
  t.eq(json.encode({ json.null }), "[null]")
  t.eq(json.encode(json.null), "null")
end)

t.test("json: encode raises on values JSON cannot hold", function()
  t.raises(function() json.encode(function() end) end)
  t.raises(function() json.encode({ f = print }) end)
end)

t.test("digest.sha256 matches the FIPS 180-2 vectors", function()
  t.eq(digest.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  t.eq(digest.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  t.eq(digest.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
end)

t.test("digest.sha256(s, 'raw') is the 32 bytes of the hex digest", function()
  local raw = digest.sha256("abc", "raw")
  t.eq(#raw, 32)
  t.eq(hex(raw), digest.sha256("abc"))
  t.eq(digest.sha256("abc", "hex"), digest.sha256("abc"))
  t.raises(function() digest.sha256("abc", "base32") end)
end)

t.test("digest.sha256 is binary-safe", function()
  t.ok(digest.sha256("a\0b") ~= digest.sha256("a"), "input cut at NUL")
end)

t.test("hmac.sha256 matches RFC 4231 test cases 1 and 2", function()
  t.eq(hmac.sha256("Jefe", "what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
  t.eq(hmac.sha256(string.rep("\11", 20), "Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
  t.eq(#hmac.sha256("Jefe", "what do ya want for nothing?", "raw"), 32)
end)

t.test("base64 matches the RFC 4648 vectors both ways", function()
  local vectors = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
                    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } }
  for _, v in ipairs(vectors) do
    t.eq(base64.encode(v[1]), v[2], "encode " .. v[1])
    t.eq(base64.decode(v[2]), v[1], "decode " .. v[2])
  end
  t.eq(base64.decode("Zg"), "f", "padding is optional")
  t.eq(base64.encode("\251\255\191"), "+/+/")
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  all = table.concat(all)
  t.eq(base64.decode(base64.encode(all)), all, "every byte round-trips")
end)

t.test("base64.urlencode uses - and _ and no padding", function()
  t.eq(base64.urlencode("\251\255\191"), "-_-_")
  t.eq(base64.urlencode("\251\255"), "-_8")
  t.eq(base64.urlencode("f"), "Zg")
  t.eq(base64.urlencode("foobar"), "Zm9vYmFy")
  t.eq(base64.urldecode("-_8"), "\251\255")
  t.eq(base64.urldecode("Zg"), "f")
end)

t.test("base64.decode of invalid input returns nil, err", function()
  for _, s in ipairs{ "!!!!", "Zm9v!", "Z", "Zm9vY", "Zm 9v", "-_8=" } do
    local ok, v, err = pcall(base64.decode, s)
    t.ok(ok, "base64.decode raised on " .. s)
    t.eq(v, nil, s)
    t.eq(type(err), "string", s)
  end
  t.eq(base64.urldecode("+/8"), nil, "the standard alphabet is not URL-safe")
end)

t.test("time.now() is the wall clock in seconds since the epoch", function()
  local now = time.now()
  t.eq(type(now), "number")
  t.ok(now > 1.7e9 and now < 4.1e9, "time.now() = " .. now)
  t.ok(math.abs(now - os.time()) < 2, "time.now() and os.time() differ")
end)

t.test("time.mono() increases", function()
  local a = time.mono()
  task.yield()
  local b = time.mono()
  t.ok(b >= a, "time.mono went backwards")
  time.sleep(0.01)
  t.ok(time.mono() > b, "time.mono did not advance over a sleep")
end)

t.test("time.sleep(0.05) takes at least 0.05 s", function()
  local a = time.mono()
  t.eq(time.sleep(0.05), true)
  local took = time.mono() - a
  t.ok(took >= 0.05, "slept only " .. took)
  t.ok(took < 1, "slept far too long: " .. took)
  t.eq(time.sleep(0), true)
  t.raises(function() time.sleep(-1) end, "negative")
end)

t.test("time.sleep after a long blocking call still sleeps its whole time", function()
  -- A C call that blocks the loop (a long query inside a transaction, which
  -- cannot pause) leaves the loop's cached "now" behind. A timer armed from
  -- that stale time fires early once anything else (here a ticking task)
  -- wakes the loop. The sleep is the very next call after the block.
  local db = assert(sys.db_open(t.tmp_path("sleep-after-block", "sqlite")))
  local ticking = true
  local ticker = task.spawn(function()
    while ticking do time.sleep(0.005) end
    return true
  end)
  time.sleep(0.02)
  local a, b = time.mono(), nil
  t.eq(time.sleep(db:transaction(function()
    db:row("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) "
      .. "SELECT count(*) AS n FROM c")
    b = time.mono()
    return 0.1
  end)), true)
  local took = time.mono() - b
  ticking = false
  t.ok(ticker:wait())
  t.ok(took >= 0.1, ("slept only %.3f s after blocking for %.3f s"):format(took, b - a))
  db:close()
end)

t.test("sleeping tasks run concurrently", function()
  local a = time.mono()
  local hs = {}
  for i = 1, 50 do hs[i] = task.spawn(function() return time.sleep(0.1) end) end
  for i = 1, 50 do t.ok(hs[i]:wait(), "sleeper " .. i) end
  local took = time.mono() - a
  t.ok(took < 1, "50 sleeps of 0.1 s took " .. took)
end)

t.test("log functions exist and accept a message or a format", function()
  for _, level in ipairs{ "debug", "info", "warn", "error" } do
    t.eq(type(log[level]), "function", "log." .. level)
  end
  log.debug("runtime_spec: log.debug smoke test")
  log.debug("runtime_spec: %s %d", "formatted", 1)
  log.info("runtime_spec: log.info smoke test (expected in the test output)")
  log.info("runtime_spec: %s %d", "log.info formatted", 2)
  log.warn("runtime_spec: log.warn smoke test (expected in the test output)")
  log.error("runtime_spec: log.error smoke test (expected in the test output)")
  log.info({}) -- any value is logged as is
end)

t.test("print exists and takes any values", function()
  t.eq(type(print), "function")
  print("# runtime_spec: print works", 1, nil, true)
end)

t.test("task.locate gives an error raised inside a C function the position of the Lua code", function()
  local ok, err = xpcall(function()
    for _ in ipairs(nil) do end
  end, task.locate)
  t.eq(ok, false)
  t.match(err, "runtime_spec%.lua:%d+: attempt to index a nil value$")
  local _, placed = xpcall(function() error("boom") end, task.locate)
  t.match(placed, "runtime_spec%.lua:%d+: boom$")
  t.eq(select(2, placed:gsub(":%d+:", "")), 1, "a message with a position is left alone")
  local _, tbl = xpcall(function() error({ code = 7 }) end, task.locate)
  t.eq(type(tbl) == "table" and tbl.code, 7, "a table error passes through")
end)

t.done()
