-- The sandbox: a hostile script is stopped with an error that names it while
-- other tasks keep working, and a script cannot reach the host (files,
-- processes, bytecode) or change what other scripts see.
local t = require("tap").new(...)
local E = t.env
local HTTP = E.HTTP_URL

local MiB = 1024 * 1024

-- Allocates without end.
local function hog_memory()
  local keep = {}
  for i = 1, math.maxinteger do keep[i] = string.rep("x", 1000) .. i end
end

-- A task doing HTTP GETs until stop() is true; returns how many it did.
local function good_worker(stop)
  return function()
    local n = 0
    repeat
      local r, err = http.request{ url = HTTP .. "/files/small.txt" }
      if not r then error("GET failed: " .. tostring(err)) end
      if r.body ~= "hello from nginx\n" then error("wrong body: " .. r.body) end
      n = n + 1
    until stop()
    return n
  end
end

-- Checks that h failed with an error naming the limit and the task.
local function stopped_by(h, limit, name)
  local ok, err = h:wait()
  t.eq(ok, nil, name .. " was not stopped")
  t.match(err, limit, name)
  t.ok(type(err) == "string" and err:find("'" .. name .. "'", 1, true), "the error does not name the task")
  t.eq(h:status(), "failed")
end

t.test("a CPU loop is stopped at its CPU limit with an error naming the task", function()
  local t0 = time.mono()
  local h = task.spawn({ name = "spinner", cpu = 0.5 }, function() while true do end end)
  stopped_by(h, "CPU limit", "spinner")
  local took = time.mono() - t0
  t.ok(took >= 0.5, "stopped before its budget was used: " .. took)
  t.ok(took < 5, "stopped late: " .. took)
end)

t.test("unbounded allocation is stopped at the memory limit with an error naming the task", function()
  local h = task.spawn({ name = "allocator", memory = 8 * MiB }, hog_memory)
  stopped_by(h, "memory limit", "allocator")
end)

t.test("a task's memory limit does not limit the others", function()
  local h = task.spawn({ name = "small", memory = 8 * MiB }, function()
    return #string.rep("y", 2 * MiB)
  end)
  local ok, n = h:wait()
  t.ok(ok, n)
  t.eq(n, 2 * MiB)
  local big = string.rep("z", 16 * MiB) -- the test task itself has the default limit
  t.eq(#big, 16 * MiB)
end)

t.test("catching the CPU-limit error with pcall does not keep a task alive", function()
  local rounds, escaped = 0, false
  local h = task.spawn({ name = "pcall-spinner", cpu = 0.3 }, function()
    for _ = 1, 200000 do
      rounds = rounds + 1
      pcall(function() while true do end end)
    end
    escaped = true
  end)
  stopped_by(h, "CPU limit", "pcall-spinner")
  t.ok(not escaped, string.format("the task ran on after its limit (%d pcall rounds)", rounds))
end)

t.test("catching the memory-limit error with pcall does not keep a task alive", function()
  local rounds, escaped = 0, false
  local h = task.spawn({ name = "pcall-allocator", memory = 8 * MiB }, function()
    for _ = 1, 2000 do -- each round runs a full emergency collection
      rounds = rounds + 1
      pcall(hog_memory)
    end
    escaped = true
  end)
  stopped_by(h, "memory limit", "pcall-allocator")
  t.ok(not escaped, string.format("the task ran on after its limit (%d pcall rounds)", rounds))
end)

t.test("hostile tasks are stopped while a well-behaved task completes its GETs", function()
  local spinner = task.spawn({ name = "spinner", cpu = 0.5 }, function() while true do end end)
  local allocator = task.spawn({ name = "allocator", memory = 8 * MiB }, hog_memory)
  local good = task.spawn(good_worker(function()
    return spinner:status() == "failed" and allocator:status() == "failed"
  end))
  stopped_by(spinner, "CPU limit", "spinner")
  stopped_by(allocator, "memory limit", "allocator")
  local ok, n = good:wait()
  t.ok(ok, n)
  t.ok(n >= 1, "no GET completed")
end)

t.test("a CPU-bound task does not stop other tasks' I/O", function()
  local spinner = task.spawn({ name = "spinner", cpu = 1 }, function() while true do end end)
  local good = task.spawn(good_worker(function() return spinner:status() == "failed" end))
  stopped_by(spinner, "CPU limit", "spinner")
  local ok, n = good:wait()
  t.ok(ok, n)
  t.ok(n >= 5, string.format("only %d GETs completed in the spinner's 1 s", n))
end)

t.test("host access is not there: io, debug, package, dofile, loadfile, os.execute/getenv, string.dump", function()
  t.eq(io, nil, "io")
  t.eq(debug, nil, "debug")
  t.eq(package, nil, "package")
  t.eq(dofile, nil, "dofile")
  t.eq(loadfile, nil, "loadfile")
  t.eq(os.execute, nil, "os.execute")
  t.eq(os.getenv, nil, "os.getenv")
  t.eq(os.exit, nil, "os.exit")
  t.eq(os.remove, nil, "os.remove")
  t.eq(os.rename, nil, "os.rename")
  t.eq(os.tmpname, nil, "os.tmpname")
  t.eq(string.dump, nil, "string.dump")
  t.eq(type(os.time), "function", "os.time is kept")
  t.eq(type(os.clock), "function", "os.clock is kept")
end)

t.test("package.loadlib cannot be reached", function()
  t.eq(package, nil)
  t.eq(_G.package, nil)
  t.eq(rawget(_G, "package"), nil)
  local ok, mod = pcall(require, "package")
  t.ok(not ok or type(mod) ~= "table" or mod.loadlib == nil, "require('package') gave loadlib")
  for _, lib in ipairs{ string, table, math, os, coroutine, utf8 } do
    for k, v in pairs(lib) do
      t.ok(k ~= "loadlib" and v ~= require, "a library exposes " .. tostring(k))
    end
  end
end)

t.test("load refuses bytecode with an error mentioning 'binary'", function()
  local chunk = "\27LuaT\0\25\147\r\n\26\n\4\8\8xV\0\0\0\0\0\0\0\0\0\0\0(w@"
  for _, mode in ipairs{ "bt", "b", "t" } do
    local f, err = load(chunk, "=bytecode", mode)
    t.eq(f, nil, "mode " .. mode)
    t.match(err, "binary", "mode " .. mode)
  end
  local f, err = load(chunk)
  t.eq(f, nil)
  t.match(err, "binary")
  -- The same through a reader function.
  local parts, i = { chunk:sub(1, 3), chunk:sub(4) }, 0
  f, err = load(function() i = i + 1; return parts[i] end)
  t.eq(f, nil, "reader")
  t.match(err, "binary", "reader")
end)

t.test("load runs text chunks in a fresh environment; their globals do not leak", function()
  local f = assert(load("return 1 + 1"))
  t.eq(f(), 2)
  f = assert(load("leaked_global = 42; string = nil; print = nil; _G.also_leaked = 1; return leaked_global"))
  t.eq(f(), 42)
  t.eq(leaked_global, nil, "global set by a loaded chunk")
  t.eq(also_leaked, nil, "_G.x set by a loaded chunk")
  t.eq(type(string), "table", "string after a chunk set it to nil")
  t.eq(type(print), "function", "print after a chunk set it to nil")
  f = assert(load("return leaked_global"))
  t.eq(f(), nil, "a second chunk sees the first one's global")
  local env = {}
  assert(load("x = 5", "=env", "t", env))()
  t.eq(env.x, 5, "an explicit env is used")
  t.eq(x, nil)
end)

t.test("library tables are read-only", function()
  local libs = { string = string, table = table, math = math, os = os, json = json, http = http,
                 task = task, time = time, digest = digest, base64 = base64, coroutine = coroutine }
  for name, lib in pairs(libs) do
    t.raises(function() lib.injected = true end, "read%-only", name)
    local field = (function() for k in pairs(lib) do return k end end)()
    t.ok(field, name .. " lists no fields")
    t.raises(function() lib[field] = false end, "read%-only", name .. "." .. tostring(field))
    t.raises(function() rawset(lib, "injected", true) end, "read%-only", "rawset on " .. name)
    t.eq(lib.injected, nil, name)
  end
  t.eq(type(http.request), "function")
  t.eq(string.rep("a", 2), "aa")
end)

t.test("a script's globals are its own; the shared globals behind them are read-only", function()
  -- _G is the script's own environment: writing it is allowed and stays here.
  _G.my_global = 1
  t.eq(my_global, 1)
  -- What it falls back to (the shared globals) cannot be reached or changed.
  t.ok(type(getmetatable(_G)) ~= "table", "getmetatable(_G) exposes the shared globals")
  t.raises(function() setmetatable(_G, nil) end, "protected")
  t.ok(type(getmetatable(string)) ~= "table", "getmetatable(string) exposes the real table")
  t.raises(function() setmetatable(string, {}) end, "protected")
end)

t.test("getmetatable('') does not expose the string table", function()
  local mt = getmetatable("")
  t.ok(type(mt) ~= "table", "getmetatable('') returned a table")
  t.raises(function() setmetatable("", {}) end)
  t.eq(("abc"):upper(), "ABC", "string methods still work")
end)

t.test("require cannot escape the library directories", function()
  for _, name in ipairs{ "../x", "/etc/passwd", "a..b", "a/b", ".a", "a.", "", "a b", "a-b" } do
    t.raises(function() require(name) end, "invalid module name", name)
  end
end)

t.test("require of a missing module raises 'not found'", function()
  t.raises(function() require("no_such_module_xyz") end, "not found")
  t.raises(function() require("no.such.module") end, "not found")
end)

t.test("require loads a library once and returns the same value", function()
  local a, b = require("tap"), require("tap")
  t.eq(type(a), "table")
  t.eq(a, b)
end)

t.test("collectgarbage cannot change the collector", function()
  t.raises(function() collectgarbage("stop") end, "not available")
  t.raises(function() collectgarbage("incremental") end, "not available")
  t.eq(type(collectgarbage("count")), "number")
end)

t.done()
