-- jwt: RS256 tokens and Google's service-account assertion, as the
-- google-gcr kind gets its access tokens. RFC 7520 §4.1 (the JOSE cookbook's
-- jws/4_1.rsa_v15_signature.json) pins the whole compact JWS byte for byte;
-- the fake service account of tests/fixtures/keys checks the Google flow.
local t = require("tap").new(...)
local jwt = require("jwt")
local url = require("url")

local keys = assert(sys.read_tree("tests/fixtures/keys")) -- specs run from the repository's root
local SA = assert(json.decode(keys["google-sa.json"]))

-- RFC 7520 §4.1
local PAYLOAD = "It\u{2019}s a dangerous business, Frodo, going out your door. You step onto the road, and if "
  .. "you don't keep your feet, there\u{2019}s no knowing where you might be swept off to."
local COMPACT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
  .. ".SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGU"
  .. "gcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0"
  .. "IGJlIHN3ZXB0IG9mZiB0by4"
  .. ".MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xu"
  .. "glII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9e"
  .. "Ro4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd"
  .. "6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg"
local KID = "bilbo.baggins@hobbiton.example"

-- Splits a compact JWS into its decoded header and payload texts.
local function texts(compact)
  local h, p = compact:match("^([^.]*)%.([^.]*)%.")
  return base64.urldecode(h), base64.urldecode(p)
end

t.test("RFC 7520 §4.1: the compact JWS is reproduced byte for byte", function()
  local header = { { "alg", "RS256" }, { "kid", KID } }
  t.eq(jwt.json(header), '{"alg":"RS256","kid":"bilbo.baggins@hobbiton.example"}')
  t.eq(jwt.rs256(header, PAYLOAD, keys["rfc7520-bilbo.pkcs8.pem"]), COMPACT)
  t.eq(jwt.rs256(header, PAYLOAD, keys["rfc7520-bilbo.pkcs1.pem"]), COMPACT, "from the PKCS#1 PEM too")
  t.eq(jwt.rs256({ alg = "RS256", kid = KID }, PAYLOAD, keys["rfc7520-bilbo.pkcs8.pem"]), COMPACT,
       "a plain table's keys are sorted: alg, kid")
  t.eq(jwt.rs256({ { "kid", KID } }, PAYLOAD, keys["rfc7520-bilbo.pkcs8.pem"]), COMPACT, "a missing alg goes first")
end)

t.test("the JSON is deterministic: pairs in their order, table keys sorted, minimal escapes", function()
  t.eq(jwt.json { { "z", 1 }, { "a", 2 } }, '{"z":1,"a":2}')
  t.eq(jwt.json { z = 1, a = 2, m = { y = true, b = false } }, '{"a":2,"m":{"b":false,"y":true},"z":1}')
  t.eq(jwt.json { l = { 1, "two", json.null }, e = setmetatable({}, json.array_mt), o = {} },
       '{"e":[],"l":[1,"two",null],"o":{}}')
  t.eq(jwt.json { s = 'q"b\\s/\n\t\1\127 \u{E9}\u{2019}' }, '{"s":"q\\"b\\\\s/\\n\\t\\u0001\\u007f \u{E9}\u{2019}"}',
       "quotes, backslashes and controls escaped; / and UTF-8 as they are")
  t.eq(jwt.json { i = 1700000000, f = 1.5, g = 1700000000.0, n = -0.25, big = 2 ^ 60, tiny = 1e-7 },
       '{"big":1.152921504606847e+18,"f":1.5,"g":1700000000,"i":1700000000,"n":-0.25,"tiny":1e-07}')
  t.eq(jwt.json { x = 0.1 }, '{"x":0.1}', "the shortest text that reads back")
  t.eq(jwt.json {}, "{}")
end)

t.test("values JSON cannot hold, or a header that is not RS256, are misuse", function()
  t.raises(function() jwt.json { f = print } end, "a function cannot be written as JSON")
  t.raises(function() jwt.json { s = "\255" } end, "not valid UTF%-8")
  t.raises(function() jwt.json { n = 0 / 0 } end, "not finite")
  t.raises(function() jwt.json { n = math.huge } end, "not finite")
  t.raises(function() jwt.json { [1] = "a", [3] = "c" } end, "keys must be strings")
  t.raises(function() jwt.json { m = { 1, 2, x = 3 } } end, "mixes list items and keys")
  t.raises(function() jwt.json { { "a", 1 }, { "a", 2 } } end, "given twice")
  local cyc = {}
  cyc.me = cyc
  t.raises(function() jwt.json { c = cyc } end, "deeper than 32")
  t.raises(function() jwt.rs256({ alg = "HS256" }, {}, keys["rfc7520-bilbo.pkcs8.pem"]) end, "not RS256")
  t.raises(function() jwt.rs256({ { "alg", "none" } }, {}, keys["rfc7520-bilbo.pkcs8.pem"]) end, "not RS256")
  t.raises(function() jwt.rs256({}, 42, keys["rfc7520-bilbo.pkcs8.pem"]) end, "claims must be a table or a string")
  t.raises(function() jwt.rs256("x", {}, keys["rfc7520-bilbo.pkcs8.pem"]) end, "header must be a table")
end)

t.test("a key rsa refuses comes back as nil, err, quoting no key", function()
  for _, name in ipairs { "rsa1024.pem", "ec-p256.pem", "rsa2048-encrypted.pem", "rfc7520-bilbo.pub.pem" } do
    local tok, err = jwt.rs256({ typ = "JWT" }, { sub = "x" }, keys[name])
    t.eq(tok, nil, name)
    t.ok(type(err) == "string" and not err:find("MII", 1, true), name)
  end
end)

t.test("decode returns header, claims and the parts to verify; verify_rs256 checks the signature", function()
  local pem = keys["rfc7520-bilbo.pkcs8.pem"]
  local tok = assert(jwt.rs256({ typ = "JWT", kid = KID }, { sub = "frodo", n = 3, l = { "a" } }, pem))
  local h, c, parts = jwt.decode(tok)
  t.ok(h, c)
  t.eq(h.alg, "RS256")
  t.eq(h.kid, KID)
  t.eq(c.sub, "frodo")
  t.eq(c.n, 3)
  t.eq(c.l[1], "a")
  t.eq(parts.signing_input, tok:match("^(.*)%."))
  t.eq(parts.payload, '{"l":["a"],"n":3,"sub":"frodo"}')
  t.eq(rsa.verify_sha256(keys["rfc7520-bilbo.pub.pem"], parts.signing_input, parts.signature), true)
  local vh, vc = jwt.verify_rs256(tok, keys["rfc7520-bilbo.pub.pem"])
  t.ok(vh, vc)
  t.eq(vc.sub, "frodo")
  local nh, nerr = jwt.verify_rs256(tok, keys["google-sa.pub.pem"])
  t.eq(nh, nil)
  t.eq(nerr, "bad signature")
  -- a changed claim breaks the signature
  local forged = tok:gsub("^([^.]*)%.[^.]*", "%1." .. base64.urlencode('{"sub":"sauron"}'))
  t.eq(select(2, jwt.verify_rs256(forged, keys["rfc7520-bilbo.pub.pem"])), "bad signature")
end)

t.test("decode refuses what is not a compact JWT", function()
  local bad = {
    { "", "not a compact JWS" }, { "a.b", "not a compact JWS" }, { "a.b.c.d", "not a compact JWS" },
    { "a b.c.d", "not a compact JWS" }, { "a=.b.c", "not a compact JWS" },
    { "a.b.c", "not base64url" },
    { base64.urlencode("[1]") .. "." .. base64.urlencode("{}") .. ".", "header is not a JSON object" },
    { base64.urlencode("{}") .. "." .. base64.urlencode("nope") .. ".", "payload is not a JSON object" },
    { COMPACT, "payload is not a JSON object" },
  }
  for _, c in ipairs(bad) do
    local h, err = jwt.decode(c[1])
    t.eq(h, nil, c[1])
    t.match(err, c[2], c[1])
  end
  t.eq(select(2, jwt.decode(nil)), "jwt.decode: not a string")
  local unsigned = base64.urlencode('{"alg":"none"}') .. "." .. base64.urlencode("{}") .. "."
  t.eq(select(2, jwt.verify_rs256(unsigned, keys["rfc7520-bilbo.pub.pem"])), "the JWT's alg is not RS256")
end)

local NOW = 1704067200 -- 2024-01-01T00:00:00Z
local SCOPE = "https://www.googleapis.com/auth/cloud-platform"

t.test("google_assertion: header, claims and a signature the service account's certificate verifies", function()
  local a, err = jwt.google_assertion(SA, SCOPE, NOW + 0.75)
  t.ok(a, err)
  local htext, ptext = texts(a)
  t.eq(htext, '{"alg":"RS256","typ":"JWT","kid":"' .. SA.private_key_id .. '"}')
  t.eq(ptext, '{"iss":"replica@replica-test.iam.gserviceaccount.com",'
    .. '"scope":"https://www.googleapis.com/auth/cloud-platform",'
    .. '"aud":"http://127.0.0.1/token","iat":1704067200,"exp":1704070800}')
  local h, c, parts = assert(jwt.decode(a))
  t.eq(h.kid, SA.private_key_id)
  t.eq(c.exp - c.iat, 3600)
  t.eq(rsa.verify_sha256(keys["google-sa.crt.pem"], parts.signing_input, parts.signature), true)
  t.eq(rsa.verify_sha256(keys["google-sa.pub.pem"], parts.signing_input, parts.signature), true)
  t.eq(rsa.verify_sha256(keys["rfc7520-bilbo.pub.pem"], parts.signing_input, parts.signature), false)
  t.eq(jwt.google_assertion(SA, SCOPE, NOW + 0.75), a, "the same inputs give the same assertion")
end)

t.test("google_assertion: scope lists, Google's endpoint by default, the key as JSON text, now from the clock", function()
  local key = {}
  for k, v in pairs(SA) do key[k] = v end
  key.token_uri, key.private_key_id = nil, nil
  local a = assert(jwt.google_assertion(key, { SCOPE, "https://www.googleapis.com/auth/devstorage.read_write" }, NOW))
  local htext, ptext = texts(a)
  t.eq(htext, '{"alg":"RS256","typ":"JWT"}', "no kid without a private_key_id")
  local c = json.decode(ptext)
  t.eq(c.aud, "https://oauth2.googleapis.com/token")
  t.eq(c.scope, SCOPE .. " https://www.googleapis.com/auth/devstorage.read_write")
  local b = assert(jwt.google_assertion(keys["google-sa.json"], SCOPE, NOW))
  t.eq(b, jwt.google_assertion(SA, SCOPE, NOW), "the key file's text works as well as its table")
  local before = math.floor(time.now())
  local _, cl = jwt.decode(assert(jwt.google_assertion(SA, SCOPE)))
  t.ok(cl.iat >= before and cl.iat <= time.now() + 1, "iat is now")
  t.eq(math.type(cl.iat), "integer")
end)

t.test("google_token_request: the JWT-bearer POST to the key's token_uri", function()
  local req, err = jwt.google_token_request(SA, SCOPE, NOW)
  t.ok(req, err)
  t.eq(req.method, "POST")
  t.eq(req.url, "http://127.0.0.1/token")
  t.eq(req.headers["Content-Type"], "application/x-www-form-urlencoded")
  local assertion = assert(jwt.google_assertion(SA, SCOPE, NOW))
  t.eq(req.body, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" .. assertion)
  local form = assert(url.parse_query(req.body))
  t.eq(form[1][1], "grant_type")
  t.eq(form[1][2], "urn:ietf:params:oauth:grant-type:jwt-bearer")
  t.eq(form[2][1], "assertion")
  t.ok(jwt.verify_rs256(form[2][2], keys["google-sa.crt.pem"]))
end)

t.test("google_*: a key file that cannot sign is nil, err, and the error quotes no key", function()
  local function with(changes)
    local key = {}
    for k, v in pairs(SA) do key[k] = v end
    for k, v in pairs(changes) do key[k] = v end
    return key
  end
  local cases = {
    { with { private_key = json.null }, "has no private_key" },
    { with { private_key = "" }, "has no private_key" },
    { with { client_email = 7 }, "has no client_email" },
    { with { type = "authorized_user" }, "not a service%-account key" },
    { with { private_key = keys["rsa1024.pem"] }, "shorter than 2048 bits" },
    { with { private_key = SA.private_key:sub(1, 500) }, "not a PEM private key" },
    { with { token_uri = {} }, "token_uri is not a string" },
    { "{not json", "not a JSON object" },
    { 42, "must be a table" },
  }
  for i, c in ipairs(cases) do
    for _, fn in ipairs { jwt.google_assertion, jwt.google_token_request } do
      local v, err = fn(c[1], SCOPE, NOW)
      t.eq(v, nil, "case " .. i)
      t.match(err, c[2], "case " .. i)
      t.ok(not err:find("MII", 1, true) and not err:find("PRIVATE", 1, true), "case " .. i .. " quotes the key")
    end
  end
  t.raises(function() jwt.google_assertion(SA, "", NOW) end, "scope must be")
  t.raises(function() jwt.google_token_request(SA, nil, NOW) end, "scope must be")
end)

t.done()
