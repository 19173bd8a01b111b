-- Registry kinds (kinds.lua): the bundled kinds load with their credential
-- fields, hosts pick the kind, a hook runs sandboxed and hands back only
-- plain data, a hook's failure is an error naming the kind and the step,
-- never a secret, and the chunk quirks (min_chunk, max_chunk) bound a
-- client's chunk size.
local t = require("tap").new(...)
local kinds = require("kinds")

t.test("the bundled kinds load, each with its description and credential fields", function()
  for _, name in ipairs({ "distribution", "harbor", "ecr", "gar", "dockerhub", "ghcr" }) do
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
    { "https://docker.io", "dockerhub" },
    { "https://registry-1.docker.io", "dockerhub" },
    { "https://index.docker.io", "dockerhub" },
    { "https://ghcr.io", "ghcr" },
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

t.test("Docker Hub names official images library/: the repository hook, through the client", function()
  local hub = assert(kinds.load("dockerhub"))
  t.eq(hub:call("repository", {}, { url = "https://registry-1.docker.io" }, "ubuntu"), "library/ubuntu")
  t.eq(hub:call("repository", {}, { url = "https://registry-1.docker.io" }, "team/app"), "team/app", "a '/' stays")
  local reg = require("oci").new { url = "https://docker.io", kind = hub }
  t.eq(reg:repository_name("nginx"), "library/nginx")
  t.eq(require("oci").new { url = "https://r.example" }:repository_name("nginx"), "nginx", "other kinds: as given")
end)

t.test("Docker Hub and GHCR list the namespaces the filters name, and say so when they name none", function()
  for _, name in ipairs({ "dockerhub", "ghcr" }) do
    local k = assert(kinds.load(name))
    local res, err = k:call("catalog", {}, { url = "https://x.example", options = { hub_url = "http://127.0.0.1:1",
                                                                                     api_url = "http://127.0.0.1:1" } },
                            { patterns = { "**" } })
    t.eq(res, nil, name)
    t.match(err, "^" .. name .. ": the repository filter %*%* names no ")
    t.match(err, "no catalog")
    -- a namespace named: the API is asked (nothing answers here), naming the step
    res, err = k:call("catalog", { username = "u", password = "secret-pat-0123456789" },
                      { url = "https://x.example", options = { hub_url = "http://127.0.0.1:1", api_url = "http://127.0.0.1:1" } },
                      { patterns = { "team/**" } })
    t.eq(res, nil)
    t.match(err, name == "dockerhub" and "^dockerhub: logging in to the Hub API: POST http://127%.0%.0%.1:1/v2/auth/token: connect"
                 or "^ghcr: listing the packages of team: GET http://127%.0%.0%.1:1/orgs/team/packages")
    t.ok(not err:find("secret-pat", 1, true), "no secret in the error")
  end
end)

t.test("a kind's delete hook deletes instead of the registry's DELETE, and its failure names the kind", function()
  local gh = assert(kinds.load("ghcr"))
  t.ok(gh:has("delete") and assert(kinds.load("dockerhub")):has("delete"), "both kinds delete through their APIs")
  local reg = require("oci").new { url = "http://127.0.0.1:1", kind = gh, credentials = { username = "u", password = "pat" },
                                   kind_options = { api_url = "http://127.0.0.1:1" }, retries = 0 }
  local ok, err, why = reg:delete_manifest("team/app", "sha256:" .. string.rep("a", 64))
  t.eq(ok, nil)
  t.match(err, "^ghcr: listing the versions of team/app: GET http://127%.0%.0%.1:1/orgs/team/packages/container/app/versions")
  t.eq(why, "delete")
  t.raises(function() reg:delete_manifest("team/app", "v1") end, "a digest is required")
end)

t.test("harbor and ecr delete through their APIs; without a hook the registry's DELETE fails naming the kind", function()
  local oci = require("oci")
  local D = "sha256:" .. string.rep("b", 64)
  local harbor = oci.new { url = "http://127.0.0.1:1", kind = assert(kinds.load("harbor")), retries = 0,
                           credentials = { username = "u", password = "secret-0123456789" } }
  local ok, err = harbor:delete_manifest("team/sub/app", D)
  t.eq(ok, nil)
  t.match(err, "^harbor: deleting artifact " .. D .. " of team/sub/app: DELETE "
               .. "/api/v2.0/projects/team/repositories/sub%%252Fapp/artifacts/" .. D .. ": ")
  local ecr = oci.new { url = "http://127.0.0.1:1", kind = assert(kinds.load("ecr")), retries = 0,
                        kind_options = { api_url = "http://127.0.0.1:1" },
                        credentials = { access_key_id = "AKIDEXAMPLE", secret_access_key = "secret-0123456789",
                                        region = "us-east-1" } }
  ok, err = ecr:delete_manifest("team/app", D)
  t.eq(ok, nil)
  t.match(err, "^ecr: deleting image " .. D .. " of team/app: BatchDeleteImage: ")
  local quay = oci.new { url = "http://127.0.0.1:1", kind = assert(kinds.load("quay")), retries = 0,
                         credentials = { username = "u", password = "secret-0123456789" } }
  t.ok(not assert(kinds.load("quay")):has("delete"), "quay deletes with the registry's DELETE")
  ok, err = quay:delete_manifest("team/app", D)
  t.eq(ok, nil)
  t.match(err, "^quay: deleting team/app@" .. D .. ": GET http://127%.0%.0%.1:1/v2/: connect")
  t.ok(not err:find("secret-", 1, true), "no secret in the error")
end)

t.test("the chunk quirks bound a client's chunk size: ECR's min_chunk raises it, GHCR's max_chunk lowers or sets it", function()
  local oci = require("oci")
  local MiB = 1024 * 1024
  local ghcr, ecr = assert(kinds.load("ghcr")), assert(kinds.load("ecr"))
  t.eq(ghcr.quirks.max_chunk, 4 * MiB)
  local function chunk(kind, asked)
    return oci.new { url = "https://r.example", kind = kind, chunk_size = asked }.chunk_size
  end
  t.eq(chunk(ghcr, nil), 4 * MiB, "GHCR without --chunk-size: blobs over 4 MiB go up in 4 MiB chunks")
  t.eq(chunk(ghcr, 8 * MiB), 4 * MiB, "a larger chunk size is lowered")
  t.eq(chunk(ghcr, MiB), MiB, "a smaller one is kept")
  t.eq(chunk(ecr, MiB), 5 * MiB, "ECR raises a smaller one to 5 MiB")
  t.eq(chunk(ecr, nil), nil, "and leaves monolithic uploads alone")
  t.eq(chunk(nil, nil), nil, "a client without a kind: as asked")
end)

t.done()
