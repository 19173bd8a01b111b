-- sys.keyring, sys.random and task log capture: the privileged functions
-- `replica serve` relies on to keep registry passwords sealed at rest and to
-- store what each replication task logged.
local t = require("tap").new(...)

-- A path for a new file under WORK, unique to this run.
local function fresh_path()
  return t.tmp_path("sys-spec", "key")
end

local function keyring()
  local k, err = sys.keyring(fresh_path())
  t.ok(k, err)
  return k
end

-- Returns sealed with the character at position i (1-based, after "v1:")
-- replaced by a different base64 character.
local function flip(sealed, i)
  local pos = 3 + i
  local c = sealed:sub(pos, pos)
  local d = (c == "A") and "B" or "A"
  return sealed:sub(1, pos - 1) .. d .. sealed:sub(pos + 1)
end

t.test("a sealed value opens with the same keyring and looks like v1:base64", function()
  local k = keyring()
  local sealed = k:seal("s3cret")
  t.eq(type(sealed), "string")
  t.match(sealed, "^v1:[A-Za-z0-9+/=_-]+$")
  t.ok(not sealed:find("s3cret", 1, true), "the plaintext is not visible")
  t.eq(k:open(sealed), "s3cret")
end)

t.test("binary values, NUL bytes and the empty string round-trip", function()
  local k = keyring()
  local bin = "a\0b\255\0\1" .. string.rep("\0", 100)
  t.eq(k:open(k:seal(bin)), bin)
  t.eq(k:open(k:seal("")), "")
  local big = sys.random(4096) .. sys.random(4096)
  t.eq(k:open(k:seal(big)), big, "8 KiB of random bytes")
end)

t.test("the aad binds a sealed value to its context", function()
  local k = keyring()
  local sealed = k:seal("pw", "registry:1")
  t.eq(k:open(sealed, "registry:1"), "pw")
  local plain, err = k:open(sealed, "registry:2")
  t.eq(plain, nil)
  t.match(err, "cannot decrypt")
  t.eq(k:open(sealed), nil, "no aad is not the same as some aad")
  t.eq(k:open(k:seal("pw")), "pw", "the aad defaults to the empty string")
  t.eq(k:open(k:seal("pw"), ""), "pw")
end)

t.test("a tampered sealed value does not open", function()
  local k = keyring()
  local sealed = k:seal("tamper me please")
  local body = #sealed - 3
  for _, i in ipairs({ 1, body // 2, body - 2 }) do
    local bad = flip(sealed, i)
    t.ok(bad ~= sealed)
    local plain, err = k:open(bad)
    t.eq(plain, nil, "flipped char " .. i)
    t.match(err, "tampered")
  end
  t.eq(k:open(sealed:sub(1, -5)), nil, "truncated")
  t.eq(k:open("v2" .. sealed:sub(3)), nil, "unknown version")
  t.eq(k:open("not sealed at all"), nil, "garbage")
  t.eq(k:open(""), nil, "empty")
  t.eq(k:open(sealed), "tamper me please", "the original still opens")
end)

t.test("sealing the same value twice gives different ciphertexts", function()
  local k = keyring()
  local a, b = k:seal("same"), k:seal("same")
  t.ok(a ~= b, "a fresh nonce each time")
  t.eq(k:open(a), "same")
  t.eq(k:open(b), "same")
end)

t.test("the key file persists: a second keyring on the same path opens the values", function()
  local path = fresh_path()
  local k1 = assert(sys.keyring(path))
  local sealed = k1:seal("kept", "ctx")
  k1 = nil
  collectgarbage()
  local k2, err = sys.keyring(path)
  t.ok(k2, err)
  t.eq(k2:open(sealed, "ctx"), "kept")
  t.eq(k2:open(k2:seal("back")), "back")
end)

t.test("with create = false an absent key file is missing, and is not created", function()
  local path = fresh_path()
  local k, err, kind = sys.keyring(path, { create = false })
  t.eq(k, nil)
  t.eq(kind, "missing")
  t.match(err, "does not exist")
  t.eq(select(3, sys.keyring(path, { create = false })), "missing", "no file was created")
  local made = assert(sys.keyring(path))
  local again, aerr = sys.keyring(path, { create = false })
  t.ok(again, aerr)
  t.eq(again:open(made:seal("same key")), "same key", "an existing key file loads as usual")
end)

t.test("a keyring with another key file cannot open the values", function()
  local k1, k2 = keyring(), keyring()
  local sealed = k1:seal("mine")
  local plain, err = k2:open(sealed)
  t.eq(plain, nil)
  t.match(err, "wrong key file")
end)

t.test("a key file in a missing directory is nil and an error naming the path", function()
  local path = t.tmp_path("no-such-dir") .. "/replica.key"
  local k, err = sys.keyring(path)
  t.eq(k, nil)
  t.eq(type(err), "string")
  t.ok(err:find(path, 1, true), "error names the path: " .. tostring(err))
end)

t.test("keyring misuse raises", function()
  local k = keyring()
  t.raises(function() sys.keyring() end, "string expected")
  t.raises(function() k:seal() end, "string expected")
  t.raises(function() k.seal({}, "x") end, "replica.sys.keyring expected")
  t.raises(function() k:open({}) end, "string expected")
end)

t.test("random returns n bytes, different each call", function()
  for _, n in ipairs({ 1, 16, 32, 4096 }) do
    local r = sys.random(n)
    t.eq(type(r), "string")
    t.eq(#r, n)
  end
  local a, b = sys.random(32), sys.random(32)
  t.ok(a ~= b, "two calls differ")
  t.ok(sys.random(4096):find("[^%z]"), "not all zero")
end)

t.test("random refuses a size outside 1..4096", function()
  t.raises(function() sys.random(0) end, "1%.%.4096")
  t.raises(function() sys.random(-1) end, "1%.%.4096")
  t.raises(function() sys.random(4097) end, "1%.%.4096")
  t.raises(function() sys.random(5000) end, "1%.%.4096")
  t.raises(function() sys.random("x") end, "number expected")
  t.raises(function() sys.random(1.5) end, "integer")
end)

t.test("a new task starts untagged", function()
  t.eq(sys.task_log(0), 0)
end)

-- Waits for handle h, failing the test when the task failed.
local function join(h)
  local ok, err = h:wait()
  t.ok(ok, err)
end

t.test("lines of tagged tasks and their children are captured in order", function()
  sys.log_capture()
  sys.log_drain() -- anything left from earlier tests
  local before = time.now()
  join(task.spawn({ name = "tagged" }, function()
    t.eq(sys.task_log(42), 0, "the previous tag")
    log.info("x %d", 1)
    join(task.spawn({ name = "child" }, function()
      log.warn("from the child")
      log.error("child error")
    end))
    log.info("after the child")
  end))
  join(task.spawn({ name = "untagged" }, function()
    log.info("not captured")
  end))
  local lines, dropped = sys.log_drain()
  local after = time.now()
  t.eq(dropped, 0)
  t.eq(#lines, 4)
  local want = {
    { "info", "x 1" },
    { "warn", "from the child" },
    { "error", "child error" },
    { "info", "after the child" },
  }
  for i, w in ipairs(want) do
    local l = lines[i]
    t.eq(l.tag, 42, "line " .. i)
    t.eq(l.level, w[1], "line " .. i)
    t.eq(l.message, w[2], "line " .. i)
    t.eq(type(l.ts), "number")
    t.ok(l.ts >= before - 1 and l.ts <= after + 1, "ts close to time.now()")
    if i > 1 then t.ok(l.ts >= lines[i - 1].ts, "timestamps in order") end
  end
  local again, d2 = sys.log_drain()
  t.eq(#again, 0, "a second drain is empty")
  t.eq(d2, 0)
end)

t.test("task_log(0) stops capture and returns the previous tag", function()
  sys.log_capture()
  sys.log_drain()
  join(task.spawn(function()
    sys.task_log(7)
    log.info("kept")
    t.eq(sys.task_log(0), 7)
    log.info("not kept")
    t.eq(sys.task_log(-3), 0, "a negative tag is no tag")
    log.info("not kept either")
  end))
  local lines = sys.log_drain()
  t.eq(#lines, 1)
  t.eq(lines[1].message, "kept")
  t.eq(lines[1].tag, 7)
end)

t.test("a child keeps the tag it was spawned with", function()
  sys.log_capture()
  sys.log_drain()
  join(task.spawn(function()
    sys.task_log(1)
    local h = task.spawn(function()
      time.sleep(0.01)
      log.info("child, spawned under tag 1")
    end)
    sys.task_log(2)
    log.info("parent, now tag 2")
    join(h)
  end))
  local lines = sys.log_drain()
  t.eq(#lines, 2)
  t.eq(lines[1].tag, 2)
  t.eq(lines[1].message, "parent, now tag 2")
  t.eq(lines[2].tag, 1)
  t.eq(lines[2].message, "child, spawned under tag 1")
end)

t.test("log_drain(max) returns at most max lines and keeps the rest", function()
  sys.log_capture()
  sys.log_capture() -- idempotent
  sys.log_drain()
  join(task.spawn(function()
    sys.task_log(9)
    for i = 1, 3 do log.info("line %d", i) end
  end))
  local first, dropped = sys.log_drain(1)
  t.eq(dropped, 0)
  t.eq(#first, 1)
  t.eq(first[1].message, "line 1")
  t.eq(#sys.log_drain(0), 0, "max 0 takes nothing")
  local rest = sys.log_drain(10)
  t.eq(#rest, 2)
  t.eq(rest[1].message, "line 2")
  t.eq(rest[2].message, "line 3")
  t.eq(#sys.log_drain(), 0)
end)

t.test("log lines are formatted like log.info formats them", function()
  sys.log_capture()
  sys.log_drain()
  join(task.spawn(function()
    sys.task_log(3)
    log.info("one argument is logged as is: %d")
    log.info("%s=%q", "k", "v")
    log.info(12)
  end))
  local lines = sys.log_drain()
  t.eq(#lines, 3)
  t.eq(lines[1].message, "one argument is logged as is: %d")
  t.eq(lines[2].message, 'k="v"')
  t.eq(lines[3].message, "12")
end)

t.test("sys.read_tree reads a directory of files into memory, skipping dotfiles", function()
  local dir = "tests/fixtures/tree" -- specs run from the repository's root
  local files, err = sys.read_tree(dir)
  t.ok(files, err)
  t.eq(files["index.html"], "<html>")
  t.eq(files["assets/app.js"], "js")
  t.eq(files["assets/deep/d.txt"], "d")
  t.eq(files[".hidden"], nil, "dotfiles are left out")
  local none, nerr = sys.read_tree(dir .. "/missing")
  t.eq(none, nil)
  t.match(nerr, "cannot read .*/missing")
  local small, serr = sys.read_tree(dir, 5)
  t.eq(small, nil, "a tree over the byte limit is refused")
  t.match(serr, "larger than 5 bytes")
end)

t.test("box:load with a key compiles a source once; every load is its own instance", function()
  local src = "local n = 0 return function() n = n + 1 return n, rawequal(_ENV, _G) end"
  local f1 = assert(sandbox.new():load(src, "=keyed", "k-" .. sys.random(8):byte(1)))
  local a, b = f1(), nil
  local f2 = assert(sandbox.new():load(src, "=keyed", "k-same"))
  local f3 = assert(sandbox.new():load(src, "=keyed", "k-same"))
  b = f2()
  local c = f3()
  t.eq(a(), 1)
  t.eq(a(), 2)
  t.eq(b(), 1, "instances from one cached factory share no locals")
  t.eq(c(), 1)
  local bad, err = sandbox.new():load("return = 1", "=broken", "k-bad")
  t.eq(bad, nil)
  t.match(err, "^broken:1: ")
  bad, err = sandbox.new():load("return = 1", "=broken", "k-bad")
  t.eq(bad, nil, "a source that failed is not cached as good")
  t.match(err, "^broken:1: ")
  for i = 1, 600 do assert(sandbox.new():load("return " .. i, "=many", "k-many-" .. i)) end
  local f = assert(sandbox.new():load("return 7", "=many", "k-many-1"))
  t.eq(f(), 7, "past the cache's bound it starts again, and loads still work")
end)

t.done()
