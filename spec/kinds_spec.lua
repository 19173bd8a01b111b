-- Registry kinds (kinds.lua): the bundled kinds load with their credential
-- fields, hosts pick the kind, a hook runs sandboxed and hands back only
-- plain data, and a hook's failure is an error naming the kind and the
-- step, never a secret.
local t = require("tap").new(...)
local kinds = require("kinds")

t.test("the bundled kinds load, each with its description and credential fields", function()
  for _, name in ipairs({ "distribution", "harbor", "ecr", "gar" }) do
    local k, err = kinds.load(name)
    t.ok(k, err)
    t.eq(k.name, name)
    t.eq(type(k.description), "string")
  end
  local ecr = kinds.load("ecr")
  local fields = {}
  for _, c in ipairs(ecr.credentials) do fields[c.name] = c end
  t.ok(fields.access_key_id.required and fields.secret_access_key.required, "ECR needs a key id and a secret")
  t.ok(fields.secret_access_key.secret and fields.session_token.secret, "which are secret")
  t.eq(ecr.quirks.min_chunk, 5 * 1024 * 1024)
end)

t.test("a kind is chosen by its host patterns, else distribution", function()
  local cases = {
    { "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "ecr" },
    { "https://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "ecr" },
    { "https://europe-docker.pkg.dev", "gar" },
    { "https://gcr.io", "gar" },
    { "https://eu.gcr.io", "gar" },
    { "http://127.0.0.1:1", "distribution" }, -- nothing listens: no probe answers
  }
  for _, c in ipairs(cases) do
    local name, how = kinds.detect(c[1])
    t.eq(name, c[2], c[1])
    t.eq(how, c[2] == "distribution" and "default" or "host")
  end
end)

t.test("names that are not kinds are refused", function()
  local k, err = kinds.load("../etc/passwd")
  t.eq(k, nil)
  t.match(err, "invalid registry kind")
  k, err = kinds.load("nosuchkind")
  t.eq(k, nil)
  t.match(err, "no registry kind named 'nosuchkind'")
end)

t.test("a hook's failure names the kind and the step, and no secret", function()
  local ecr = assert(kinds.load("ecr"))
  local secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY-spec"
  local res, err = ecr:call("login", { access_key_id = "AKIDEXAMPLE", secret_access_key = secret },
                            { url = "https://1.dkr.ecr.us-east-1.amazonaws.com",
                              options = { api_url = "http://127.0.0.1:1" } })
  t.eq(res, nil)
  t.match(err, "^ecr: GetAuthorizationToken: ")
  t.ok(not err:find(secret, 1, true), "the secret is not in the error")
  local none, nerr = ecr:call("probe", {})
  t.eq(none, nil)
  t.match(nerr, "kind ecr has no probe")
end)

t.test("a hook gets plain copies and hands back plain data", function()
  local gar = assert(kinds.load("gar"))
  local res, err = gar:call("login", { username = "oauth2accesstoken", password = "ya29.token" }, { url = "https://us-docker.pkg.dev" })
  t.ok(res, err)
  t.eq(res.username, "oauth2accesstoken")
  t.eq(res.password, "ya29.token")
  t.eq(getmetatable(res), nil, "the result is a plain table")
  local bad, berr = gar:call("login", { key_json = "{}" }, { url = "https://us-docker.pkg.dev" })
  t.eq(bad, nil)
  t.match(berr, "not a service%-account key")
end)

t.done()
