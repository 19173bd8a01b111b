-- tap.lua - a small TAP producer for Lua specs run by `replica script`.
--
--   local t = require("tap").new(...)   -- ... = the KEY=VALUE args from tests/tap-exec
--   t.test("name", function() t.eq(1 + 1, 2) end)
--   t.done()
--
-- Each test runs as its own task, so one failing or hanging test does not
-- take the others with it; t.env holds the servers' addresses.
local tap = {}

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function tap.new(...)
  local self = { env = {}, n = 0, failed = 0 }
  for _, a in ipairs({ ... }) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k then self.env[k] = v end
  end

  -- Fails the current test with msg, pointing at the caller's line.
  local function fail(msg, level)
    error(msg, (level or 2) + 1)
  end

  function self.ok(v, msg)
    if not v then fail(msg or "expected a true value", 2) end
    return v
  end

  function self.eq(got, want, msg)
    if got ~= want then
      fail(string.format("%sexpected %s, got %s", msg and (msg .. ": ") or "", fmt(want), fmt(got)), 2)
    end
  end

  function self.match(s, pattern, msg)
    if type(s) ~= "string" or not s:find(pattern) then
      fail(string.format("%sexpected %s to match %q", msg and (msg .. ": ") or "", fmt(s), pattern), 2)
    end
  end

  -- Calls fn and checks that it raises an error matching pattern.
  function self.raises(fn, pattern, msg)
    local ok, err = pcall(fn)
    if ok then fail((msg and (msg .. ": ") or "") .. "expected an error", 2) end
    if pattern and not tostring(err):find(pattern) then
      fail(string.format("%serror %s does not match %q", msg and (msg .. ": ") or "", fmt(err), pattern), 2)
    end
  end

  function self.test(name, fn)
    self.n = self.n + 1
    local h = task.spawn({ name = name }, fn)
    local ok, err = h:wait()
    if ok then
      print(string.format("ok %d - %s", self.n, name))
    else
      self.failed = self.failed + 1
      print(string.format("not ok %d - %s", self.n, name))
      for line in tostring(err):gmatch("[^\n]+") do print("# " .. line) end
    end
  end

  -- A path under WORK (or /tmp) no earlier call or run has used:
  -- WORK/NAME-RUNID-N.EXT (ext may be nil).
  local run_id = string.format("%x%04x", math.floor(time.now() * 1e6), math.random(0, 0xffff))
  local paths = 0
  function self.tmp_path(name, ext)
    paths = paths + 1
    local work = (self.env.WORK and self.env.WORK ~= "") and self.env.WORK or "/tmp"
    return string.format("%s/%s-%s-%d%s", work, name, run_id, paths, ext and ("." .. ext) or "")
  end

  function self.done()
    print("1.." .. self.n)
  end

  return self
end

return tap
