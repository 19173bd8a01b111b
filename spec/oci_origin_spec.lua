-- spec/oci_origin_spec.lua - where the oci client sends registry
-- credentials. A registry answer can name another origin (a Link to the next
-- page, an upload Location, a token realm, a redirect): the password or token
-- goes only to the registry's own origin and to the realm its challenge
-- names, and a registry on https never sends the client to plain http.
-- tests/fakereg.py plays the registry; its "other" listener records what
-- reaches it.
local t = require("tap").new(...)
local oci = require("oci")
local link = require("oci.link")
local E = t.env
local TLS = { ca_file = E.TEST_CA }
local USER, PASS = "alice", "hunter2-registry-pw"

-- Returns the requests the stand-in has recorded so far.
local function records()
  local r = assert(http.request { url = E.FAKEREG_OTHER_URL .. "/requests" })
  return assert(json.decode(r.body))
end

-- Returns the requests recorded after the first n, on listener `other`.
local function other_since(n)
  local out = {}
  for i, r in ipairs(records()) do
    if r.authorization == json.null then r.authorization = nil end
    if i > n and r.listener == "other" then out[#out + 1] = r end
  end
  return out
end

-- A client of the Basic-auth stand-in on base (FAKEREG_URL or FAKEREG_TLS_URL).
local function basic_client(base)
  return oci.new { url = base .. "/basic", username = USER, password = PASS, tls = TLS, retries = 0 }
end

t.test("link.origin spells one origin one way: lower case, default port explicit", function()
  t.eq(link.origin("https://Reg.Example/v2/"), "https://reg.example:443")
  t.eq(link.origin("https://reg.example:443/x"), "https://reg.example:443")
  t.eq(link.origin("HTTP://reg.example"), "http://reg.example:80")
  t.eq(link.origin("http://127.0.0.1:5000/v2/_catalog?n=1"), "http://127.0.0.1:5000")
  t.eq(link.origin("http://[::1]:5000/v2/"), "http://[::1]:5000")
  t.ok(link.origin("http://reg.example:8080") ~= link.origin("http://reg.example"))
  t.ok(link.origin("https://reg.example") ~= link.origin("http://reg.example:443"))
  t.eq(link.origin("http://u:p@reg.example/"), nil)
  t.eq(link.origin("ftp://reg.example/"), nil)
  t.eq(link.origin("/v2/_catalog"), nil)
end)

t.test("authorization(scope, url): credentials for the registry's origin only", function()
  local reg = basic_client(E.FAKEREG_URL)
  t.match(assert(reg:authorization("", E.FAKEREG_URL .. "/v2/x/blobs/uploads/1")), "^Basic ")
  local v, err = reg:authorization("", E.FAKEREG_OTHER_URL .. "/upload/1")
  t.eq(v, nil, "another port is another origin")
  t.eq(err, nil)
  v, err = reg:authorization("", "https://127.0.0.1:" .. E.FAKEREG_URL:match(":(%d+)$") .. "/x")
  t.eq(v, nil, "another scheme is another origin")
  t.eq(err, nil)
  local tls = basic_client(E.FAKEREG_TLS_URL)
  local _, terr, kind = tls:authorization("", E.FAKEREG_OTHER_URL .. "/upload/1")
  t.eq(kind, "insecure")
  t.match(terr, "no downgrade to http")
end)

t.test("a Link to another origin is followed without the credentials", function()
  local n = #records()
  local reg = basic_client(E.FAKEREG_URL)
  local list, err = reg:catalog()
  t.ok(list, err)
  t.eq(table.concat(list, ","), "a,b", "both pages")
  local got = other_since(n)
  t.eq(#got, 1)
  t.match(got[1].path, "^/v2/_catalog%?last=a")
  t.eq(got[1].authorization, nil, "the other origin got no Authorization")
end)

t.test("an upload Location on another origin gets the PUT without the credentials", function()
  local n = #records()
  local reg = basic_client(E.FAKEREG_URL)
  local d, err = reg:put_blob("a", "hello")
  t.eq(d, "sha256:" .. digest.sha256("hello"), err)
  local got = other_since(n)
  t.eq(#got, 1)
  t.eq(got[1].method, "PUT")
  t.match(got[1].path, "^/upload/1%?digest=sha256%%3A")
  t.eq(got[1].authorization, nil, "the other origin got no Authorization")
end)

t.test("a registry on https whose Link names http:// is refused", function()
  local n = #records()
  local reg = basic_client(E.FAKEREG_TLS_URL)
  local list, err, kind = reg:catalog()
  t.eq(list, nil)
  t.eq(kind, "insecure")
  t.match(err, "^GET http://127%.0%.0%.1:%d+/v2/_catalog%?last=a: refused: the registry https://")
  t.eq(#other_since(n), 0, "nothing reached the http origin")
end)

t.test("a registry on https whose upload Location names http:// is refused", function()
  local n = #records()
  local reg = basic_client(E.FAKEREG_TLS_URL)
  local d, err, kind = reg:put_blob("a", "hello")
  t.eq(d, nil)
  t.eq(kind, "insecure")
  t.match(err, "^PUT http://127%.0%.0%.1:%d+/upload/1%?digest=.*no downgrade to http")
  t.eq(#other_since(n), 0, "nothing reached the http origin")
end)

t.test("the token realm the challenge names gets the credentials; over http only from http", function()
  local n = #records()
  local reg = oci.new { url = E.FAKEREG_URL .. "/bearer", username = USER, password = PASS, retries = 0 }
  local p, err = reg:ping()
  t.ok(p, err)
  t.eq(p.auth, "bearer")
  local got = other_since(n)
  t.eq(#got, 1)
  t.match(got[1].path, "^/token%?service=fakereg")
  t.eq(got[1].authorization, "Basic " .. base64.encode(USER .. ":" .. PASS))

  n = #records()
  local tls = oci.new { url = E.FAKEREG_TLS_URL .. "/bearer", username = USER, password = PASS, tls = TLS,
                        retries = 0 }
  local kind
  p, err, kind = tls:ping()
  t.eq(p, nil)
  t.eq(kind, "insecure")
  t.match(err, "token realm http://127%.0%.0%.1:%d+/token is not %(no downgrade to http%)")
  t.eq(#other_since(n), 0, "the http realm got nothing")
end)

t.test("a redirect from https is not followed to http; from http it is", function()
  local n = #records()
  local r, err = http.request { url = E.FAKEREG_TLS_URL .. "/redirect/x", tls = TLS,
                                headers = { Authorization = "Basic c2VjcmV0" } }
  t.eq(r, nil, "the redirect to http was refused")
  t.ok(err ~= nil)
  t.eq(#other_since(n), 0, "nothing reached the http origin")
  r, err = http.request { url = E.FAKEREG_URL .. "/redirect/x" }
  t.ok(r, err)
  t.eq(r.status, 200)
  t.eq(r.body, "other")
end)

t.done()
