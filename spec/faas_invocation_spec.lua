-- spec/faas_invocation_spec.lua - what `replica function` accepts as an
-- invocation: a whole task or one stage with sealed credentials, or a
-- cancel. Every refusal is a 4xx that names the field, and sealed
-- credentials open only with the right key
-- and for the registry they were sealed for. No registry is contacted.
local t = require("tap").new(...)
local invocation = require("faas.invocation")

local function keyring()
  local k, err = sys.keyring(t.tmp_path("faas-spec", "key"))
  t.ok(k, err)
  return k
end

local K = keyring()
local DST = "http://127.0.0.1:9"

-- Returns a valid invocation table, changed by edit(inv) if given.
local function valid(edit)
  local inv = { kind = "task", attempt = 2, template = "distribution",
                source = { url = "http://127.0.0.1:8", kind = "distribution" },
                target = { url = DST, kind = "distribution",
                           credentials = K:seal(json.encode({ username = "u", password = "secret-pw" }),
                                                invocation.aad(DST)) },
                repository = "lib/app", tags = { "v1" }, options = { bandwidth = "2M", stall_timeout = 20 } }
  if edit then edit(inv) end
  return json.encode(inv)
end

t.test("a valid invocation gives the task, both clients and the options", function()
  local inv, status, err = invocation.read(valid(), false, K)
  t.ok(inv, tostring(status) .. " " .. tostring(err))
  t.eq(inv.attempt, 2)
  t.eq(inv.task.repository, "lib/app")
  t.eq(inv.task.dest_repository, "lib/app", "dest_repository defaults to repository")
  t.eq(inv.options.bandwidth, 2 * 1024 * 1024)
  t.eq(inv.options.override, true)
  t.eq(inv.options.stall_timeout, 20)
  t.ok(inv.src and inv.dst)
end)

t.test("a side's TLS fields (CA, client certificate and key paths) reach its client", function()
  local inv, status, err = invocation.read(valid(function(i)
    i.target.ca_file, i.target.cert_file, i.target.key_file = "/ca.pem", "/client.pem", "/client.key"
    i.source.cert_file, i.source.insecure = "/both.pem", true
  end), false, K)
  t.ok(inv, tostring(status) .. " " .. tostring(err))
  local d, s = inv.dst.tls, inv.src.tls
  t.eq(table.concat({ d.ca_file, d.cert_file, d.key_file, tostring(d.insecure) }, " "),
       "/ca.pem /client.pem /client.key false")
  t.eq(table.concat({ s.cert_file, tostring(s.key_file), tostring(s.insecure) }, " "), "/both.pem nil true",
       "a key in the certificate's file needs no key_file")
end)

t.test("a one-stage invocation names a stage of the template and carries its input and data", function()
  local inv, status, err = invocation.read(valid(function(i)
    i.kind, i.stage, i.input, i.data, i.results = "stage", "push", { tags = 1 }, { artifacts = {} }, { pull = {} }
    i.call_id, i.heartbeat, i.execution, i.task_id = "k3-t1-a2", 15, 7, 42
  end), false, K)
  t.ok(inv, tostring(status) .. " " .. tostring(err))
  t.eq(inv.kind, "stage")
  t.eq(inv.stage, "push")
  t.eq(inv.input.tags, 1)
  t.ok(inv.data.artifacts and inv.results.pull, "data and results")
  t.eq(inv.call_id .. " " .. inv.heartbeat, "k3-t1-a2 15")
  t.eq(inv.execution .. " " .. inv.task_id, "7 42", "the coordinator's ids, for the log")
end)

t.test("a cancel names a call id", function()
  local inv = invocation.read('{"cancel": "k3-t1-a2"}', false, K)
  t.eq(inv.kind .. " " .. inv.call_id, "cancel k3-t1-a2")
end)

t.test("refusals are 400 (413 for a large body) and name the field", function()
  local cases = {
    { nil, 400, "not JSON", "{" },
    { function(i) i.tags = nil end, 400, "tags" },
    { function(i) i.tags = { "../x" } end, 400, "tags%[1%]" },
    { function(i) i.repository = "Lib/App" end, 400, "repository" },
    { function(i) i.dest_repository = "a//b" end, 400, "dest_repository" },
    { function(i) i.template = "nosuch" end, 400, "template" },
    { function(i) i.kind = "stage" end, 400, "stage must be the name of a stage" },
    { function(i) i.kind, i.stage = "stage", "nosuch" end, 400, "template 'distribution' has no stage 'nosuch'" },
    { function(i) i.kind, i.stage, i.data = "stage", "push", { 1 } end, 400, "data must be an object" },
    { function(i) i.kind = "job" end, 400, "kind must be" },
    { function(i) i.call_id = "a b" end, 400, "call_id" },
    { function(i) i.heartbeat = 0 end, 400, "heartbeat" },
    { function(i) i.execution = "7" end, 400, "execution must be a positive integer" },
    { function(i) i.task_id = 1.5 end, 400, "task_id must be a positive integer" },
    { function(i) i.task_id = 0 end, 400, "task_id must be a positive integer" },
    { nil, 400, "cancel must be the call id", '{"cancel": ""}' },
    { function(i) i.attempt = 0 end, 400, "attempt" },
    { function(i) i.options.nope = true end, 400, "options.nope" },
    { function(i) i.options.stall_timeout = 0 end, 400, "options.stall_timeout must be a number of seconds above 0" },
    { function(i) i.options.stall_timeout = "20" end, 400, "options.stall_timeout must be a number" },
    { function(i) i.source = nil end, 400, "source" },
    { function(i) i.target.password = "x" end, 400, "target.password" },
    { function(i) i.target.credentials = { username = "u", password = "p" } end, 400, "plain credentials" },
    { function(i) i.callback_url = "ftp://x" end, 400, "callback_url" },
    { function(i) i.source.cert_file = 1 end, 400, "source.cert_file must be a file path" },
    { function(i) i.target.key_file = "/k.pem" end, 400, "target.key_file needs target.cert_file" },
  }
  for _, c in ipairs(cases) do
    local inv, status, err = invocation.read(c[4] or valid(c[1]), false, K)
    t.eq(inv, nil)
    t.eq(status, c[2], err)
    t.ok(tostring(err):find(c[3]), tostring(err) .. " names " .. c[3])
    t.ok(not tostring(err):find("secret-pw", 1, true), "and holds no password")
  end
  local _, status = invocation.read("{}", true, K)
  t.eq(status, 413)
end)

t.test("credentials open only with the same key and for the same registry URL", function()
  local other = keyring()
  local inv, status, err = invocation.read(valid(), false, other)
  t.eq(inv, nil)
  t.eq(status, 422)
  t.ok(err:find("could not be opened with this key", 1, true), err)
  inv, status = invocation.read(valid(function(i) i.target.url = "http://127.0.0.1:10" end), false, K)
  t.eq(status, 422, "sealed for another registry")
  t.eq(invocation.aad("127.0.0.1:9/"), "replica:function-credentials:https://127.0.0.1:9",
       "the AAD names the normalised URL")
end)

t.done()
