-- The quay, gitlab and acr kinds without their stand-ins (tests/e2e/kind_*.t
-- run them against those): they load with their credential fields, hosts
-- pick them, their hooks decide what they can without a network (a robot
-- account's namespace, Quay's listing left to /v2/_catalog, ACR's login
-- choices, an anonymous ACR client's login and its listing refused),
-- errors carry no secret; and the client's side of them: the tag
-- list scope quirk, a kind's login made again when the token service
-- refuses its credentials, and a login that answers anonymous (no
-- credentials sent).
local t = require("tap").new(...)
local kinds = require("kinds")
local oci = require("oci")
local env = t.env

t.test("quay, gitlab and acr load, with their credential fields and quirks", function()
  for _, name in ipairs({ "quay", "gitlab", "acr" }) do
    local k, err = kinds.load(name)
    t.ok(k, err)
    t.eq(type(k.description), "string")
  end
  local function fields(name)
    local out = {}
    for _, c in ipairs(kinds.load(name).credentials) do out[c.name] = c end
    return out
  end
  local q, g, a = fields("quay"), fields("gitlab"), fields("acr")
  t.ok(q.password.secret and q.oauth_token.secret, "Quay's password and OAuth token are secret")
  t.ok(g.password.secret and g.api_token.secret, "GitLab's tokens are secret")
  t.ok(a.client_secret.secret and a.refresh_token.secret and a.aad_access_token.secret and not a.client_id.secret,
       "ACR's secrets are secret, the client ID is not")
  t.eq(kinds.load("acr").quirks.tags_scope, "metadata_read")
  t.eq(kinds.load("quay").quirks.missing_401, true)
  t.eq(kinds.load("gitlab").quirks.missing_401, true)
end)

t.test("hosts pick quay, gitlab and acr", function()
  for _, c in ipairs({ { "https://quay.io", "quay" }, { "https://eu.quay.io", "quay" },
                       { "https://registry.gitlab.com", "gitlab" },
                       { "https://myreg.azurecr.io", "acr" }, { "https://myreg.azurecr.cn", "acr" } }) do
    local name, how = kinds.detect(c[1])
    t.eq(name, c[2], c[1])
    t.eq(how, "host")
  end
end)

t.test("quay: without an OAuth token, or with a namespace pattern, listing is left to /v2/_catalog", function()
  local q = assert(kinds.load("quay"))
  local ctx = { url = "http://127.0.0.1:1" }
  t.eq(q:call("catalog", { username = "u", password = "p" }, ctx, { patterns = { "team/**" } }), false)
  t.eq(q:call("catalog", { username = "$oauthtoken", password = "tok" }, ctx, { patterns = { "*/app" } }), false)
  t.eq(q:call("catalog", { username = "$oauthtoken", password = "tok" }, ctx, { patterns = {} }), false)
end)

t.test("quay: a robot account is kept to its namespace; without an OAuth token nothing is created", function()
  local q = assert(kinds.load("quay"))
  local ctx = { url = "http://127.0.0.1:1", options = {} }
  local res, err = q:call("ensure_namespace", { username = "org+bot", password = "secret-robot-token" }, ctx, "other/app")
  t.eq(res, nil)
  t.match(err, "^quay: the robot account org%+bot can push only into its namespace org, not other$")
  res = q:call("ensure_namespace", { username = "org+bot", password = "secret-robot-token" }, ctx, "org/app")
  t.eq(res.created, false)
  t.eq(res.api, false)
  res, err = q:call("ensure_namespace", { username = "$oauthtoken", password = "tok" },
                    { url = ctx.url, options = { visibility = "secret" } }, "org/app")
  t.eq(res, nil)
  t.match(err, "visibility must be private or public")
end)

t.test("acr: the login turns each kind of credential into the registry's, and names what is missing", function()
  local a = assert(kinds.load("acr"))
  local ctx = { url = "https://myreg.azurecr.io", options = {} }
  local res = assert(a:call("login", { refresh_token = "rt-not-a-jwt" }, ctx))
  t.eq(res.username, "00000000-0000-0000-0000-000000000000")
  t.eq(res.password, "rt-not-a-jwt")
  t.ok(res.expires_in > 0 and res.expires_in <= 3 * 3600, "a refresh token without exp lives 3 hours at most")
  res = assert(a:call("login", { client_id = "cid", client_secret = "csecret" }, ctx))
  t.eq(res.username .. ":" .. res.password, "cid:csecret", "a service principal without a tenant goes as Basic")
  res = assert(a:call("login", { username = "admin", password = "pw" }, ctx))
  t.eq(res.username, "admin")
  local none, err = a:call("login", { client_id = "cid" }, ctx)
  t.eq(none, nil)
  t.match(err, "^acr: incomplete credentials %(give username and password, client_id and client_secret")
  none, err = a:call("login", {}, { url = "http://127.0.0.1:1", options = {} })
  t.eq(none, nil)
  t.match(err, "^acr: anonymous pull %(no credentials given%): GET http://127.0.0.1:1/oauth2/token%?service=",
          "no credentials at all: the registry is asked for an anonymous token")
  t.eq(a:call("catalog", { username = "admin", password = "pw" }, ctx, { patterns = { "**" } }), false,
       "with credentials, listing is left to /v2/_catalog")
  none, err = a:call("catalog", {}, ctx, { patterns = { "**" } })
  t.eq(none, nil)
  t.match(err, "^acr: listing repositories: the registry's catalog %(/v2/_catalog%) needs credentials")
  local secret = "sp-secret-never-shown-0123"
  none, err = a:call("login", { client_id = "cid", client_secret = secret, tenant = "tid" },
                     { url = "http://127.0.0.1:1", options = { aad_url = "http://127.0.0.1:1" } })
  t.eq(none, nil)
  t.match(err, "^acr: Entra ID login of cid: POST http://127.0.0.1:1/tid/oauth2/v2.0/token: ")
  t.ok(not err:find(secret, 1, true), "the secret is not in the error")
  none, err = a:call("login", { client_id = "cid", client_secret = secret, tenant = "tid" },
                     { url = "https://myreg.azurecr.io", options = { aad_url = "http://login.example" } })
  t.eq(none, nil)
  t.match(err, "refused: the registry is on https")
end)

-- A stand-in for a kind with a login: its logins hand out the passwords of
-- list in turn (the last one again once they run out).
local function login_kind(list, user)
  local calls = 0
  local k = { name = "fakelogin", quirks = {} }
  function k.has(_, hook) return hook == "login" end
  function k.call(_, hook)
    if hook ~= "login" then return nil, "no " .. hook end
    calls = calls + 1
    return { username = user, password = list[math.min(calls, #list)], expires_in = 3600 }
  end
  return k, function() return calls end
end

if (env.REG_TOKEN_URL or "") ~= "" then
  t.test("a token service refusing a kind's login logs in again, once", function()
    local k, calls = login_kind({ "not-" .. env.REG_TOKEN_PASS, env.REG_TOKEN_PASS }, env.REG_TOKEN_USER)
    local reg = oci.new { url = env.REG_TOKEN_URL, kind = k, backoff = { base = 0.05, cap = 0.2 } }
    local p, err = reg:ping()
    t.ok(p, err)
    t.eq(calls(), 2, "the refused login was made again")
    local k2, calls2 = login_kind({ "not-" .. env.REG_TOKEN_PASS }, env.REG_TOKEN_USER)
    local bad = oci.new { url = env.REG_TOKEN_URL, kind = k2, backoff = { base = 0.05, cap = 0.2 } }
    local none, berr = bad:ping()
    t.eq(none, nil)
    t.match(berr, "http 401 for scope '' %(check the username and password%)")
    t.eq(calls2(), 2, "a login that stays refused is made again once only")
  end)

  t.test("a kind's login that answers anonymous sends no credentials to the token service", function()
    local calls = 0
    local k = { name = "fakeanon", quirks = {} }
    function k.has(_, hook) return hook == "login" end
    function k.call()
      calls = calls + 1
      return { anonymous = true, expires_in = 3600 }
    end
    local function stats() return json.decode(assert(http.request { url = env.REG_TOKEN_TOKEN_URL .. "/stats" }).body) end
    assert(http.request { method = "POST", url = env.REG_TOKEN_TOKEN_URL .. "/control?anonymous=pull" })
    local before = stats()
    local reg = oci.new { url = env.REG_TOKEN_URL, kind = k }
    local p, err = reg:ping()
    t.ok(p, err)
    t.eq(select(2, reg:tags("anon/none")), select(2, oci.new { url = env.REG_TOKEN_URL }:tags("anon/none")),
         "a tag list answers as it does to a client without credentials")
    local after = stats()
    t.ok(after.issued > before.issued, "tokens were issued")
    t.eq(after.denied, before.denied, "and none was refused: no credentials were sent")
    t.eq(reg.auth:has_credentials(), false, "the client counts as one without credentials")
    t.eq(calls, 1, "one login for all of it")
  end)

  t.test("the quirk tags_scope asks a tag list's token for its actions", function()
    local k = { name = "fakescope", quirks = { tags_scope = "metadata_read" } }
    function k.has() return false end
    local reg = oci.new { url = env.REG_TOKEN_URL, username = env.REG_TOKEN_USER, password = env.REG_TOKEN_PASS, kind = k }
    reg:tags("scope/app")
    local res = assert(http.request { url = env.REG_TOKEN_TOKEN_URL .. "/stats" })
    local scopes = table.concat(json.decode(res.body).scopes or {}, " ")
    t.match(scopes, "repository:scope/app:metadata_read", "the token was asked for metadata_read")
  end)
end

t.done()
