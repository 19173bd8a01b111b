-- url: percent-encoding, query strings and URL parts (RFC 3986) for the
-- registry kinds' API calls. The examples are RFC 3986's (§1.1.2, §2, §3,
-- §6.2.2.1) and the inputs that trip encoders up: UTF-8, "+", space, "%".
local t = require("tap").new(...)
local url = require("url")

t.test("encode keeps exactly the unreserved characters (RFC 3986 §2.3) and escapes the rest upper-case", function()
  local unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
  t.eq(url.encode(unreserved), unreserved)
  t.eq(url.encode(":/?#[]@!$&'()*+,;="), "%3A%2F%3F%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D",
       "gen-delims and sub-delims (§2.2) are escaped")
  t.eq(url.encode("a b"), "a%20b", "a space is %20, never +")
  t.eq(url.encode("a+b"), "a%2Bb")
  t.eq(url.encode("100%"), "100%25")
  t.eq(url.encode("%20"), "%2520", "an escape is encoded again")
  t.eq(url.encode("\u{E9}\u{1234}\u{1F600}"), "%C3%A9%E1%88%B4%F0%9F%98%80", "UTF-8 is escaped byte by byte")
  t.eq(url.encode("\0\n\127\255"), "%00%0A%7F%FF")
  t.eq(url.encode(""), "")
  t.eq(url.encode(42), "42")
  -- every byte: 66 kept, 190 escaped, and decode undoes it
  local all = {}
  for b = 0, 255 do all[#all + 1] = string.char(b) end
  all = table.concat(all)
  local enc = url.encode(all)
  t.eq(#enc, 66 + 190 * 3)
  t.eq(url.decode(enc), all)
  t.ok(not enc:find("%%%x?[a-f]"), "hex digits are upper-case")
  t.raises(function() url.encode(nil) end, "url.encode: string expected, got nil")
end)

t.test("encode_path keeps the slashes and escapes each segment", function()
  t.eq(url.encode_path("/v2/library/ubuntu/manifests/latest"), "/v2/library/ubuntu/manifests/latest")
  t.eq(url.encode_path("/a b/c+d/\u{E9}/"), "/a%20b/c%2Bd/%C3%A9/")
  t.eq(url.encode_path("sha256:abc?x#y"), "sha256%3Aabc%3Fx%23y")
end)

t.test("decode undoes escapes, either case of hex (§6.2.2.1), and refuses a broken one", function()
  t.eq(url.decode("a%20b"), "a b")
  t.eq(url.decode("%3a%3A"), "::", "upper and lower-case hex are the same (§6.2.2.1)")
  t.eq(url.decode("a+b"), "a+b", "+ is a plus sign, not a space")
  t.eq(url.decode("%C3%A9"), "\u{E9}")
  t.eq(url.decode("%2520"), "%20", "decoded once")
  t.eq(url.decode("plain"), "plain")
  for _, bad in ipairs { "%", "%2", "%zz", "a%2x", "100%" } do
    local v, err = url.decode(bad)
    t.eq(v, nil, bad)
    t.eq(err, "invalid percent-encoding", bad)
  end
end)

t.test("query encodes keys and values, sorts the keys, repeats a key for a list", function()
  t.eq(url.query { b = 2, a = 1 }, "a=1&b=2")
  t.eq(url.query { scope = "repository:a/b:pull,push", service = "registry.example.com" },
       "scope=repository%3Aa%2Fb%3Apull%2Cpush&service=registry.example.com")
  t.eq(url.query { scope = { "repository:a:pull", "repository:b:pull" } },
       "scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull", "a list repeats the key, in order")
  t.eq(url.query { q = "a b+c%", ["k y"] = "\u{E9}" }, "k%20y=%C3%A9&q=a%20b%2Bc%25")
  t.eq(url.query { n = 100, ok = true, empty = "" }, "empty=&n=100&ok=true")
  t.eq(url.query { x = {} }, "", "an empty list leaves the key out")
  t.eq(url.query {}, "")
  t.eq(url.query { B = 1, a = 2, ["_"] = 3, ["~"] = 4 }, "B=1&_=3&a=2&~=4", "byte order of the encoded keys")
  t.raises(function() url.query { f = print } end, "the value of 'f' is a function")
  t.raises(function() url.query { [1] = "x" } end, "keys must be strings")
  t.raises(function() url.query("a=1") end, "table expected")
end)

t.test("parse_query splits a raw query into decoded pairs, in order", function()
  local q = assert(url.parse_query("b=2&a=%20x+&c&&d=&e=f=g"))
  t.eq(#q, 5)
  t.eq(q[1][1] .. "|" .. q[1][2], "b|2")
  t.eq(q[2][1] .. "|" .. q[2][2], "a| x+")
  t.eq(q[3][1] .. "|" .. q[3][2], "c|")
  t.eq(q[4][1] .. "|" .. q[4][2], "d|")
  t.eq(q[5][1] .. "|" .. q[5][2], "e|f=g")
  t.eq(#assert(url.parse_query("")), 0)
  t.eq(select(2, url.parse_query("a=%")), "invalid percent-encoding")
end)

t.test("parse splits RFC 3986's examples into scheme, host, port, path, query and fragment", function()
  -- §3: foo://example.com:8042/over/there?name=ferret#nose
  local u = assert(url.parse("foo://example.com:8042/over/there?name=ferret#nose"))
  t.eq(u.scheme, "foo")
  t.eq(u.host, "example.com")
  t.eq(u.port, 8042)
  t.eq(u.path, "/over/there")
  t.eq(u.query, "name=ferret")
  t.eq(u.fragment, "nose")
  -- §1.1.2
  u = assert(url.parse("ldap://[2001:db8::7]/c=GB?objectClass?one"))
  t.eq(u.host, "[2001:db8::7]")
  t.eq(u.port, nil, "no default port for ldap here")
  t.eq(u.path, "/c=GB")
  t.eq(u.query, "objectClass?one", "a query may hold '?'")
  u = assert(url.parse("http://www.ietf.org/rfc/rfc2396.txt"))
  t.eq(u.port, 80)
  t.eq(u.path, "/rfc/rfc2396.txt")
  t.eq(u.query, nil)
  u = assert(url.parse("telnet://192.0.2.16:80/"))
  t.eq(u.host, "192.0.2.16")
  t.eq(u.port, 80)
  for _, s in ipairs { "mailto:John.Doe@example.com", "urn:oasis:names:specification:docbook:dtd:xml:4.1.2",
                       "news:comp.infosystems.www.servers.unix" } do
    local v, err = url.parse(s)
    t.eq(v, nil, s)
    t.match(err, "not an absolute URL", s)
  end
end)

t.test("parse normalises what registry URLs need and refuses what they must not be", function()
  local u = assert(url.parse("HTTPS://Registry.Example.COM:5000"))
  t.eq(u.scheme, "https")
  t.eq(u.host, "registry.example.com")
  t.eq(u.port, 5000)
  t.eq(u.path, "/", "an empty path is /")
  u = assert(url.parse("https://ecr.us-east-1.amazonaws.com/?"))
  t.eq(u.port, 443)
  t.eq(u.query, "", "a '?' with nothing after is an empty query")
  u = assert(url.parse("https://user:p%40ss@host:8443/v2/a%2Fb/tags/list?n=10#x"))
  t.eq(u.userinfo, "user:p%40ss")
  t.eq(u.host, "host")
  t.eq(u.path, "/v2/a%2Fb/tags/list", "the path is kept raw")
  t.eq(u.query, "n=10")
  u = assert(url.parse("http://[::1]:8080/x"))
  t.eq(u.host, "[::1]")
  t.eq(u.port, 8080)
  t.eq(assert(url.parse("https://h:/p")).port, 443, "an empty port is the default")
  local bad = {
    { "", "not an absolute URL" }, { "//host/x", "not an absolute URL" }, { "/v2/", "not an absolute URL" },
    { "https://", "has no host" }, { "https:///x", "has no host" }, { "https://u@/x", "has no host" },
    { "https://h:0/", "port" }, { "https://h:65536/", "port" }, { "https://h:8x/", "port" },
    { "https://[::1/", "has no host" }, { "https://h st/", "invalid character" },
  }
  for _, c in ipairs(bad) do
    local v, err = url.parse(c[1])
    t.eq(v, nil, c[1])
    t.match(err, c[2], c[1])
  end
end)

t.done()
