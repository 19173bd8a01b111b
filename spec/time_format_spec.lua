-- time.format and time.parse_rfc3339: the UTC forms the registry kinds
-- write (SigV4's X-Amz-Date and credential scope, JWT claims) and read
-- (token responses' issued_at/expires_at). The examples are RFC 3339 §5.8's
-- and the AWS SigV4 test suite's date; os.date("!...") (libc's gmtime) is
-- the independent check of the calendar arithmetic.
local t = require("tap").new(...)

local SIGV4 = 1440938160 -- 20150830T123600Z, the AWS SigV4 test suite's date

t.test("time.format writes RFC 3339, RFC 3339 with milliseconds, ISO 8601 basic and the date", function()
  t.eq(time.format(SIGV4, "rfc3339"), "2015-08-30T12:36:00Z")
  t.eq(time.format(SIGV4), "2015-08-30T12:36:00Z", "rfc3339 is the default")
  t.eq(time.format(SIGV4, "rfc3339ms"), "2015-08-30T12:36:00.000Z")
  t.eq(time.format(SIGV4, "basic"), "20150830T123600Z")
  t.eq(time.format(SIGV4, "date"), "20150830")
  t.eq(time.format(SIGV4 + 0.999, "rfc3339ms"), "2015-08-30T12:36:00.999Z")
  t.eq(time.format(SIGV4 + 0.999, "rfc3339"), "2015-08-30T12:36:00Z", "seconds are truncated, not rounded")
  t.eq(time.format(SIGV4 + 0.999, "basic"), "20150830T123600Z")
end)

t.test("time.format agrees with gmtime across the range, and time.parse_rfc3339 reads it back", function()
  local samples = { 0, -1, 86399, 86400, 951782400, 951868799, 1709164800, 4107542399, -2208988800,
                    -62135596800, 253402300799, 2147483647, 2147483648 }
  local x = 12345
  for _ = 1, 2000 do -- a deterministic spread over years 0001 to 9999
    x = (x * 1103515245 + 12345) % 2147483648
    samples[#samples + 1] = math.floor(-62135596800 + (x / 2147483648) * (253402300799 + 62135596800))
  end
  for _, s in ipairs(samples) do
    local d = os.date("!*t", s) -- fields, since %Y is not zero-padded before 1000
    local want = string.format("%04d-%02d-%02dT%02d:%02d:%02dZ", d.year, d.month, d.day, d.hour, d.min, d.sec)
    if time.format(s) ~= want then t.eq(time.format(s), want, "t = " .. s) end
    local basic = want:gsub("[-:]", "")
    if time.format(s, "basic") ~= basic then t.eq(time.format(s, "basic"), basic, "t = " .. s) end
    if time.format(s, "date") ~= basic:sub(1, 8) then t.eq(time.format(s, "date"), basic:sub(1, 8), "t = " .. s) end
    if time.parse_rfc3339(want) ~= s then t.eq(time.parse_rfc3339(want), s, want .. " read back") end
  end
  t.eq(time.format(-62167219200), "0000-01-01T00:00:00Z")
  t.eq(time.format(253402300799.999, "rfc3339ms"), "9999-12-31T23:59:59.999Z")
  t.eq(time.format(-0.5, "rfc3339ms"), "1969-12-31T23:59:59.500Z")
end)

t.test("time.format takes a time to the microsecond, so parse and format round-trip milliseconds", function()
  for _, s in ipairs { "2024-01-01T00:00:00.123Z", "2024-01-01T00:00:00.001Z", "1999-12-31T23:59:59.999Z",
                       "2038-01-19T03:14:07.100Z" } do
    t.eq(time.format(assert(time.parse_rfc3339(s)), "rfc3339ms"), s)
  end
  t.eq(time.format(time.now()):match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$") ~= nil, true)
end)

t.test("time.format refuses times outside years 0000-9999, NaN and unknown formats", function()
  t.raises(function() time.format(253402300800) end, "out of range")
  t.raises(function() time.format(-62167219201) end, "out of range")
  t.raises(function() time.format(0 / 0) end, "out of range")
  t.raises(function() time.format(math.huge) end, "out of range")
  t.raises(function() time.format(0, "iso") end, "invalid option 'iso'")
  t.raises(function() time.format("soon") end, "number expected")
end)

t.test("time.parse_rfc3339 reads RFC 3339 §5.8's examples", function()
  t.eq(time.parse_rfc3339("1985-04-12T23:20:50.52Z"), 482196050.52)
  -- "1996-12-19T16:39:57-08:00 ... the same instant as 1996-12-20T00:39:57Z"
  t.eq(time.parse_rfc3339("1996-12-19T16:39:57-08:00"), time.parse_rfc3339("1996-12-20T00:39:57Z"))
  t.eq(time.parse_rfc3339("1996-12-20T00:39:57Z"), 851042397)
  -- leap seconds: both name the same instant, counted as the next second
  t.eq(time.parse_rfc3339("1990-12-31T23:59:60Z"), 662688000)
  t.eq(time.parse_rfc3339("1990-12-31T15:59:60-08:00"), 662688000)
  -- "1937-01-01T12:00:27.87+00:20 ... the same instant as 1937-01-01T11:40:27.87Z"
  t.eq(time.format(time.parse_rfc3339("1937-01-01T12:00:27.87+00:20"), "rfc3339ms"), "1937-01-01T11:40:27.870Z")
end)

t.test("time.parse_rfc3339 reads what registries' token responses carry", function()
  t.eq(time.parse_rfc3339("2015-08-30T12:36:00Z"), SIGV4)
  t.eq(math.type(time.parse_rfc3339("2015-08-30T12:36:00Z")), "integer", "no fraction: an integer")
  local v = time.parse_rfc3339("2024-01-01T00:00:00.123456789Z")
  t.eq(math.type(v), "float")
  t.ok(math.abs(v - (1704067200 + 0.123456789)) < 1e-6, tostring(v))
  t.eq(time.parse_rfc3339("2024-01-01T00:00:00.000000000Z"), 1704067200)
  t.eq(time.parse_rfc3339("2024-01-01T00:00:00.1234567891234Z"), time.parse_rfc3339("2024-01-01T00:00:00.123456789Z"),
       "digits past the ninth are ignored")
  t.eq(time.parse_rfc3339("2024-01-01T05:30:00+05:30"), 1704067200)
  t.eq(time.parse_rfc3339("2023-12-31T19:00:00-05:00"), 1704067200)
  t.eq(time.parse_rfc3339("2024-01-01T00:00:00-00:00"), 1704067200, "-00:00 (offset unknown) is UTC")
  t.eq(time.parse_rfc3339("2024-02-29t00:00:00z"), 1709164800, "t and z may be lower case")
  t.eq(time.parse_rfc3339("2000-02-29T00:00:00Z"), 951782400, "2000 is a leap year")
  t.eq(time.parse_rfc3339("0000-01-01T00:00:00Z"), -62167219200)
  t.eq(time.parse_rfc3339("9999-12-31T23:59:59Z"), 253402300799)
end)

t.test("time.parse_rfc3339 refuses what RFC 3339 does not allow, saying why", function()
  local cases = {
    { "", "expected YYYY%-MM%-DDTHH:MM:SS" },
    { "2024-01-01", "expected YYYY%-MM%-DDTHH:MM:SS" },
    { "2024-01-01 00:00:00Z", "expected YYYY%-MM%-DDTHH:MM:SS" },
    { "24-01-01T00:00:00Z", "expected YYYY" },
    { "2024-1-01T00:00:00Z", "expected YYYY" },
    { "+2024-01-01T00:00:00Z", "expected YYYY" },
    { "2024-01-01T00:00Z", "expected YYYY" },
    { "2024-00-01T00:00:00Z", "month out of range" },
    { "2024-13-01T00:00:00Z", "month out of range" },
    { "2024-01-00T00:00:00Z", "day out of range" },
    { "2024-04-31T00:00:00Z", "day out of range" },
    { "2023-02-29T00:00:00Z", "day out of range" },
    { "1900-02-29T00:00:00Z", "day out of range" },
    { "2024-01-01T24:00:00Z", "time of day out of range" },
    { "2024-01-01T00:60:00Z", "time of day out of range" },
    { "2024-01-01T00:00:61Z", "time of day out of range" },
    { "2024-01-01T00:00:00", "expected a time zone" },
    { "2024-01-01T00:00:00.Z", "expected digits after '.'" },
    { "2024-01-01T00:00:00,5Z", "expected a time zone" },
    { "2024-01-01T00:00:00+0100", "expected an offset of the form" },
    { "2024-01-01T00:00:00+1", "expected an offset of the form" },
    { "2024-01-01T00:00:00+24:00", "offset out of range" },
    { "2024-01-01T00:00:00+01:60", "offset out of range" },
    { "2024-01-01T00:00:00ZZ", "unexpected characters after the time zone" },
    { "2024-01-01T00:00:00Z\0", "unexpected characters after the time zone" },
    { "2024-01-01T00:00:00Z ", "unexpected characters after the time zone" },
    { " 2024-01-01T00:00:00Z", "expected YYYY" },
  }
  for _, c in ipairs(cases) do
    local v, err = time.parse_rfc3339(c[1])
    t.eq(v, nil, c[1])
    t.match(err, "^not an RFC 3339 date%-time: " .. c[2], c[1])
  end
  t.raises(function() time.parse_rfc3339(nil) end, "string expected")
end)

t.done()
