-- serve/metrics.lua and what feeds GET /metrics besides the stages: the
-- exposition a Prometheus server reads (escaped label values, bounded
-- series, cumulative histogram buckets), sys.http_stats (the engine's
-- request counts) and the retry counts of oci/retry.lua.
local t = require("tap").new(...)
local metrics = require("serve.metrics")
local retry = require("oci.retry")

-- The lines of text that start with prefix, in order.
local function lines_of(text, prefix)
  local out = {}
  for l in text:gmatch("[^\n]+") do
    if l:sub(1, #prefix) == prefix then out[#out + 1] = l end
  end
  return out
end

t.test("a counter renders HELP, TYPE and one line per label set, sorted", function()
  local reg = metrics.new()
  local c = reg:counter("replica_things_total", "Things done.", { "result" })
  c:inc({ result = "ok" })
  c:inc({ result = "ok" }, 2)
  c:inc({ result = "failed" })
  t.eq(reg:render(), table.concat({
    "# HELP replica_things_total Things done.",
    "# TYPE replica_things_total counter",
    'replica_things_total{result="failed"} 1',
    'replica_things_total{result="ok"} 3',
    "" }, "\n"))
end)

t.test("a family without labels renders bare samples; a declared family with no series only its HELP and TYPE", function()
  local reg = metrics.new()
  reg:gauge("replica_up", "Up."):set(nil, 1)
  reg:counter("replica_none_total", "None yet.", { "kind" })
  t.eq(reg:render(), "# HELP replica_up Up.\n# TYPE replica_up gauge\nreplica_up 1\n"
                     .. "# HELP replica_none_total None yet.\n# TYPE replica_none_total counter\n")
end)

t.test("label values are escaped: backslash, double quote and newline; HELP escapes backslash and newline", function()
  local reg = metrics.new()
  reg:counter("replica_x_total", "a \\ b\nc", { "host" }):inc({ host = 'ev"il\\host\nx' })
  local text = reg:render()
  t.eq(lines_of(text, "# HELP")[1], "# HELP replica_x_total a \\\\ b\\nc")
  t.eq(lines_of(text, "replica_x_total")[1], 'replica_x_total{host="ev\\"il\\\\host\\nx"} 1')
end)

t.test("a label value that is not valid UTF-8 becomes valid (its high bytes as ?)", function()
  t.eq(metrics.escape("caf\xc3\xa9"), "caf\xc3\xa9")
  t.eq(metrics.escape("bad\xff\xfehost"), "bad??host")
end)

t.test("numbers: integers exactly, floats in their shortest form, infinities and NaN by name", function()
  t.eq(metrics.number(42), "42")
  t.eq(metrics.number(2 ^ 40), "1099511627776")
  t.eq(metrics.number(0.05), "0.05")
  t.eq(metrics.number(1 / 3), "0.33333333333333331")
  t.eq(metrics.number(math.huge), "+Inf")
  t.eq(metrics.number(-math.huge), "-Inf")
  t.eq(metrics.number(0 / 0), "NaN")
end)

t.test("a family holds at most max series: later label sets count in one series labelled other", function()
  local reg = metrics.new()
  local c = reg:counter("replica_req_total", "Requests.", { "host", "status" }, { max = 4 })
  for i = 1, 10 do c:inc({ host = "h" .. i, status = "200" }) end
  c:inc({ host = "h1", status = "200" })
  local samples = lines_of(reg:render(), "replica_req_total")
  t.eq(#samples, 4)
  t.eq(samples[1], 'replica_req_total{host="h1",status="200"} 2')
  t.eq(samples[4], 'replica_req_total{host="other",status="other"} 7')
end)

t.test("a histogram's buckets are cumulative, +Inf equals the count, and the sum adds up", function()
  local reg = metrics.new()
  local h = reg:histogram("replica_d_seconds", "Durations.", { "stage" }, { buckets = { 0.1, 1, 10 } })
  for _, v in ipairs{ 0.05, 0.1, 0.5, 3, 100 } do h:observe({ stage = "push" }, v) end
  t.eq(table.concat(lines_of(reg:render(), "replica_d_seconds"), "\n"), table.concat({
    'replica_d_seconds_bucket{stage="push",le="0.1"} 2',
    'replica_d_seconds_bucket{stage="push",le="1"} 3',
    'replica_d_seconds_bucket{stage="push",le="10"} 4',
    'replica_d_seconds_bucket{stage="push",le="+Inf"} 5',
    'replica_d_seconds_sum{stage="push"} 103.65',
    'replica_d_seconds_count{stage="push"} 5' }, "\n"))
end)

t.test("bad declarations raise: names, the reserved le label, a name twice, unsorted buckets", function()
  local reg = metrics.new()
  t.raises(function() reg:counter("bad-name", "x") end, "bad name")
  t.raises(function() reg:counter("replica_a_total", "x", { "le" }) end, "bad label name")
  reg:counter("replica_b_total", "x")
  t.raises(function() reg:gauge("replica_b_total", "x") end, "declared twice")
  t.raises(function() reg:histogram("replica_c_seconds", "x", {}, { buckets = { 1, 0.5 } }) end, "ascend")
end)

t.test("sys.http_stats counts every finished request by host:port, method and status", function()
  local host = t.env.HTTP_URL
  local hp = host:match("^https?://([^/]+)")
  local function count(method, status)
    for _, r in ipairs(sys.http_stats().requests) do
      if r.host == hp and r.method == method and r.status == status then return r.count end
    end
    return 0
  end
  local before200, before404 = count("GET", "200"), count("GET", "404")
  assert(http.request{ url = host .. "/files/small.txt" })
  assert(http.request{ url = host .. "/status/404" })
  assert(http.request{ url = host .. "/files/small.txt" })
  t.eq(count("GET", "200"), before200 + 2)
  t.eq(count("GET", "404"), before404 + 1)
  local s = sys.http_stats()
  t.eq(s.active, 0)
  t.eq(s.queued, 0)
end)

t.test("sys.http_stats shows a request in flight while it runs", function()
  local host = t.env.FAULT_URL
  local h = task.spawn({ name = "slow" }, function()
    return http.request{ url = host .. "/stall", timeout = 1 }
  end)
  local seen = 0
  for _ = 1, 200 do
    seen = sys.http_stats().active
    if seen > 0 then break end
    time.sleep(0.01)
  end
  t.eq(seen, 1)
  h:cancel()
  h:wait()
  t.eq(sys.http_stats().active, 0)
end)

t.test("retries are counted by kind and reason", function()
  local before = retry.counts.request["503"] or 0
  local calls = 0
  local res = retry.run({ retries = 2, base = 0.001, cap = 0.001 }, "test", function()
    calls = calls + 1
    if calls < 3 then return { status = 503, headers = {} } end
    return { status = 200, headers = {} }
  end)
  t.eq(res.status, 200)
  t.eq(retry.counts.request["503"], before + 2)
  local closed = retry.counts.blob.closed or 0
  retry.pause({ base = 0.001, cap = 0.001 }, 1, "closed")
  retry.pause({ base = 0.001, cap = 0.001 }, 1, "http 502")
  t.eq(retry.counts.blob.closed, closed + 1)
  t.ok((retry.counts.blob["502"] or 0) >= 1, "http 502 counts as 502")
end)

t.done()
