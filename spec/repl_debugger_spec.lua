-- sys.dbg and sys.repl without a terminal: what `replica repl` is built on.
-- A sandboxed task pauses at a line breakpoint (the "paused" event), its
-- frame's locals are read and written through dbg.env, :next steps over a
-- call, :step goes into it, debug_break() pauses at the next line, a
-- cancelled pause ends, and the HTTP watch refuses dry-mode writes. Runs
-- under valgrind too (tests/valgrind.list).
local t = require("tap").new(...)
local kv = {}
for i = 1, select("#", ...) do
  local k, v = tostring(select(i, ...)):match("^([%w_]+)=(.*)$")
  if k then kv[k] = v end
end
local R, D = sys.repl, sys.dbg
D.on() -- before the tasks are spawned: they get the line hook

local SRC = [[
local function add(a, b)
  local s = a + b
  return s
end
return function(n)
  local total = 0
  for i = 1, n do
    total = add(total, i)
  end
  if n > 10 then debug_break() end
  local last = total
  return last
end
]]

-- The stage-like function of SRC, compiled as a stage file in a fresh box.
local function sum_fn()
  local chunk = assert(sandbox.new():load(SRC, "@stages/spec/sum.lua"))
  local ok, fn = sandbox.spawn({ name = "load" }, chunk):wait()
  assert(ok, fn)
  return fn
end

-- The next event; fails the test when it is not of kind.
local function expect(kind)
  local k, id, text = R.next()
  t.eq(k, kind, "the event")
  return id, text
end

t.test("a line breakpoint pauses the task; its locals read and write; continue finishes", function()
  D.breaks({ { file = "spec/sum.lua", line = 8 } })
  local h = sandbox.spawn({ name = "sum" }, sum_fn(), 3)
  local id, why = expect("paused")
  t.eq(why, "breakpoint 1")
  local info = D.info(id)
  t.eq(info.source, "@stages/spec/sum.lua")
  t.eq(info.line, 8)
  t.eq(info.frames[1].line, 8, "frame 0 is at the paused line")
  t.eq(info.task, "sum")
  t.eq(#D.paused(), 1)
  local env = D.env(id, 0, { outside = "fallback" })
  t.eq(env.i, 1, "a loop variable that starts at the paused line")
  t.eq(env.total, 0)
  t.eq(env.n, 3, "a parameter")
  t.eq(env.outside, "fallback", "a name the frame lacks comes from the fallback")
  t.eq(type(env.add), "function", "an upvalue")
  local locals = env.__locals()
  t.eq(locals.i, 1)
  t.eq(locals.n, 3)
  env.total = 100
  D.breaks({})
  t.ok(D.resume(id, "continue"))
  t.eq(D.info(id), nil, "the pause is over")
  local ok, v = h:wait()
  t.ok(ok, v)
  t.eq(v, 106, "the written local took effect (100 + 1 + 2 + 3)")
  t.raises(function() return env.total end, "the pause is over", "the env of an ended pause refuses")
end)

t.test("next steps over a call, step goes into it", function()
  D.breaks({ { file = "sum.lua", line = 8 } })
  local h = sandbox.spawn({ name = "sum" }, sum_fn(), 2)
  local id = expect("paused")
  D.breaks({})
  D.resume(id, "next")
  local id2, why = expect("paused")
  t.eq(why, "next")
  local l = D.info(id2).line
  t.ok(l == 7 or l == 8, "next stayed in the function (line " .. l .. ")")
  while D.info(id2).line ~= 8 do
    D.resume(id2, "next")
    id2 = expect("paused")
  end
  D.resume(id2, "step")
  local id3, why3 = expect("paused")
  t.eq(why3, "step")
  local info = D.info(id3)
  t.eq(info.line, 2, "step went into add")
  t.eq(#info.frames >= 2 and info.frames[2].line, 8, "the caller's frame is below it")
  t.eq(D.env(id3, 1, {}).i, 2, "frame 1's locals are the caller's")
  D.resume(id3, "continue")
  local ok, v = h:wait()
  t.ok(ok, v)
  t.eq(v, 3)
end)

t.test("debug_break() pauses at the next line; cancelling a pause ends it", function()
  local h = sandbox.spawn({ name = "sum" }, sum_fn(), 11)
  local id, why = expect("paused")
  t.eq(why, "step")
  t.eq(D.info(id).line, 11, "the line after debug_break()")
  h:cancel()
  t.eq(D.info(id), nil, "the cancelled task is no longer paused")
  t.eq(#D.paused(), 0)
  h:wait()
end)

t.test("breakpoints only match a path or its tail after a '/'", function()
  D.breaks({ { file = "um.lua", line = 8 }, { file = "other/sum.lua", line = 8 } })
  local ok, v = sandbox.spawn({ name = "sum" }, sum_fn(), 2):wait()
  t.ok(ok, v)
  t.eq(v, 3, "no pause: neither names stages/spec/sum.lua")
  D.breaks({})
end)

t.test("posted events come back in order", function()
  R.post("job", 7)
  R.post("other", 8)
  t.eq(select(2, R.next()), 7)
  t.eq(select(2, R.next()), 8)
end)

t.test("dry mode refuses writes to one origin and lets reads and other origins through", function()
  local url = kv.REG_ANON_URL
  R.dry(url)
  R.trace(true)
  local res, err, detail = http.request{ method = "PUT", url = url .. "/v2/dry/app/manifests/v1", body = "{}" }
  t.eq(res, nil)
  t.eq(err, "dry mode")
  t.match(detail, "^dry mode: PUT " .. url:gsub("%p", "%%%0") .. "/v2/dry/app/manifests/v1 was not sent$")
  local ex = http.request{ method = "POST", url = url .. "/oauth2/exchange", body = "grant_type=x" }
  t.ok(ex and ex.status, "a credential exchange (a POST under /oauth2/) goes out")
  local get = http.request{ url = url .. "/v2/?token=s3cret&x=1" }
  t.eq(get and get.status, 200, "a GET goes out")
  R.trace(false)
  R.dry(nil)
  local put = http.request{ method = "PUT", url = url .. "/v2/dry/app/manifests/v1", body = "{}" }
  t.ok(put and put.status >= 400, "without dry mode the PUT reaches the registry (which refuses the bad manifest)")
end)

t.done()
