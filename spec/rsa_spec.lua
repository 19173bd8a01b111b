-- rsa: RS256 signatures (RSASSA-PKCS1-v1_5 with SHA-256) for the registry
-- kinds that sign their own token requests. PKCS#1 v1.5 is deterministic, so
-- the RFC 7520 §4.1 vector pins the exact bytes; everything the module
-- refuses comes back as nil/false and a sentence that quotes no key.
local t = require("tap").new(...)

local keys = assert(sys.read_tree("tests/fixtures/keys")) -- specs run from the repository's root

-- RFC 7520 §4.1 (ietf-jose/cookbook jws/4_1.rsa_v15_signature.json)
local SIGNING_INPUT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9"
  .. ".SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGU"
  .. "gcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0"
  .. "IGJlIHN3ZXB0IG9mZiB0by4"
local SIGNATURE = "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xu"
  .. "glII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9e"
  .. "Ro4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd"
  .. "6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg"

-- Fails if err quotes any line of the key's base64 body.
local function quotes_no_key(err, pem)
  for line in pem:gmatch("[^\n]+") do
    if not line:find("^%-%-%-%-%-") and #line > 8 then
      t.ok(not err:find(line, 1, true), "the error quotes the key: " .. err)
    end
  end
end

t.test("the RFC 7520 §4.1 signature is reproduced byte for byte, from PKCS#8 and from PKCS#1", function()
  for _, name in ipairs { "rfc7520-bilbo.pkcs8.pem", "rfc7520-bilbo.pkcs1.pem" } do
    local sig, err = rsa.sign_sha256(keys[name], SIGNING_INPUT)
    t.ok(sig, err)
    t.eq(#sig, 256, name)
    t.eq(base64.urlencode(sig), SIGNATURE, name)
  end
end)

t.test("verify accepts the RFC's signature with a public key, a PKCS#1 public key or a certificate", function()
  local sig = assert(base64.urldecode(SIGNATURE))
  t.eq(rsa.verify_sha256(keys["rfc7520-bilbo.pub.pem"], SIGNING_INPUT, sig), true)
  t.eq(rsa.verify_sha256(keys["rfc7520-bilbo.rsapub.pem"], SIGNING_INPUT, sig), true)
  local data = "any bytes \0 at all"
  local gsig = assert(rsa.sign_sha256(json.decode(keys["google-sa.json"]).private_key, data))
  t.eq(rsa.verify_sha256(keys["google-sa.crt.pem"], data, gsig), true)
  t.eq(rsa.verify_sha256(keys["google-sa.pub.pem"], data, gsig), true)
end)

t.test("verify says false for a changed message, a changed signature or another key", function()
  local sig = assert(base64.urldecode(SIGNATURE))
  local pub = keys["rfc7520-bilbo.pub.pem"]
  local ok, err = rsa.verify_sha256(pub, SIGNING_INPUT .. ".", sig)
  t.eq(ok, false)
  t.eq(err, "bad signature")
  local flipped = sig:sub(1, 100) .. string.char(sig:byte(101) ~ 1) .. sig:sub(102)
  t.eq(select(2, rsa.verify_sha256(pub, SIGNING_INPUT, flipped)), "bad signature")
  t.eq(select(2, rsa.verify_sha256(keys["google-sa.pub.pem"], SIGNING_INPUT, sig)), "bad signature")
  t.match(select(2, rsa.verify_sha256(pub, SIGNING_INPUT, sig:sub(2))), "^bad signature %(its length")
  t.match(select(2, rsa.verify_sha256(pub, SIGNING_INPUT, "")), "^bad signature")
end)

t.test("sign refuses keys under 2048 bits, non-RSA keys, encrypted keys and non-keys, quoting none", function()
  local cases = {
    { "rsa1024.pem", "shorter than 2048 bits" },
    { "ec-p256.pem", "^not an RSA key$" },
    { "rsa2048-encrypted.pem", "^encrypted private keys are not supported$" },
    { "rfc7520-bilbo.pkcs1-encrypted.pem", "^encrypted private keys are not supported$" },
    { "rfc7520-bilbo.pub.pem", "^not a PEM private key" },
    { "google-sa.crt.pem", "^not a PEM private key" },
  }
  for _, c in ipairs(cases) do
    local sig, err = rsa.sign_sha256(keys[c[1]], "data")
    t.eq(sig, nil, c[1])
    t.match(err, c[2], c[1])
    quotes_no_key(err, keys[c[1]])
  end
  for _, junk in ipairs { "", "garbage", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                          keys["rfc7520-bilbo.pkcs8.pem"]:sub(1, 900) } do
    local sig, err = rsa.sign_sha256(junk, "data")
    t.eq(sig, nil)
    t.eq(err, "not a PEM private key (PKCS#8 or PKCS#1)")
    quotes_no_key(err, junk)
  end
end)

t.test("verify refuses short keys, non-RSA keys and non-keys", function()
  local sig = assert(base64.urldecode(SIGNATURE))
  local ok, err = rsa.verify_sha256(keys["rsa1024.pub.pem"], "x", sig:sub(1, 128))
  t.eq(ok, false)
  t.match(err, "shorter than 2048 bits")
  t.eq(select(2, rsa.verify_sha256(keys["ec-p256.pem"], "x", sig)), "not a PEM public key or certificate")
  t.eq(select(2, rsa.verify_sha256("", "x", sig)), "not a PEM public key or certificate")
  t.eq(select(2, rsa.verify_sha256(keys["rfc7520-bilbo.pkcs8.pem"], "x", sig)),
       "not a PEM public key or certificate", "a private key is not taken for a public one")
end)

t.test("a key file with other PEM blocks around the key still signs; an oversized text is misuse", function()
  local bundle = keys["google-sa.crt.pem"] .. keys["rfc7520-bilbo.pkcs8.pem"]
  local sig = assert(rsa.sign_sha256(bundle, SIGNING_INPUT))
  t.eq(base64.urlencode(sig), SIGNATURE)
  t.raises(function() rsa.sign_sha256(("x"):rep(65 * 1024), "d") end, "larger than 65536 bytes")
  t.raises(function() rsa.sign_sha256(nil, "d") end, "bad argument #1")
  t.raises(function() rsa.sign_sha256(keys["rfc7520-bilbo.pkcs8.pem"]) end, "bad argument #2")
  t.raises(function() rsa.verify_sha256(keys["rfc7520-bilbo.pub.pem"], "d") end, "bad argument #3")
end)

t.test("signing and verifying many times keeps giving the same answer (no state leaks between calls)", function()
  local pem = keys["rfc7520-bilbo.pkcs1.pem"]
  for i = 1, 20 do
    local sig = assert(rsa.sign_sha256(pem, SIGNING_INPUT))
    if i % 5 == 0 then t.eq(base64.urlencode(sig), SIGNATURE) end
    t.eq(rsa.sign_sha256(keys["rsa1024.pem"], "x"), nil)
    t.eq(rsa.verify_sha256(keys["rfc7520-bilbo.pub.pem"], SIGNING_INPUT, sig), true)
  end
end)

t.done()
