-- serve/console.lua - serves the web console's built files (build/web) at /.
-- They need no token: the console asks for one and sends it to the API.
-- /assets/* are files, any other GET path outside /api/ is index.html, so
-- that every view of the console has its own URL. Every answer carries a
-- strict Content-Security-Policy: scripts and styles only from this origin,
-- no inline script, nothing from a third party.
local console = {}

console.CSP = table.concat({
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
  "connect-src 'self'", "font-src 'self'", "base-uri 'none'", "form-action 'self'",
  "frame-ancestors 'none'",
}, "; ")

local TYPES = {
  html = "text/html; charset=utf-8", js = "text/javascript; charset=utf-8",
  css = "text/css; charset=utf-8", json = "application/json", map = "application/json",
  png = "image/png", svg = "image/svg+xml", ico = "image/x-icon", txt = "text/plain; charset=utf-8",
  woff2 = "font/woff2",
}

-- Loads the files of dir (nil or "none": no console). Returns the console
-- (its files keyed by URL path, with type and ETag), or nil and why there
-- is none, which the daemon logs.
function console.load(sys, dir)
  if not dir or dir == "none" then return nil, "no console directory (--console none)" end
  local files, err = sys.read_tree(dir)
  if not files then return nil, err end
  if not files["index.html"] then return nil, dir .. " has no index.html (run 'make web')" end
  local c = { files = {} }
  for name, body in pairs(files) do
    local ext = name:match("%.([%w]+)$")
    c.files["/" .. name] = { body = body, type = TYPES[ext] or "application/octet-stream",
                             etag = '"' .. digest.sha256(body):sub(1, 32) .. '"' }
  end
  return c
end

-- The headers every console answer carries.
local function headers(f)
  return {
    ["Content-Type"] = f and f.type or "application/json",
    ["Content-Security-Policy"] = console.CSP,
    ["X-Content-Type-Options"] = "nosniff",
    ["Referrer-Policy"] = "no-referrer",
    ["X-Frame-Options"] = "DENY",
    ["Cache-Control"] = "no-cache",
    ETag = f and f.etag or nil,
  }
end

-- Answers a request for a path outside /api/ from console c (nil when the
-- daemon has none).
function console.serve(c, req)
  if req.method ~= "GET" and req.method ~= "HEAD" then
    local h = headers(nil)
    h.Allow = "GET, HEAD"
    return req:respond(405, h, json.encode({ error = "the console answers GET and HEAD only" }))
  end
  if not c then
    return req:respond(404, headers(nil), json.encode({
      error = "this daemon serves no console (build it with 'make web', or see --console)" }))
  end
  local path = req.path
  local f = c.files[path]
  if not f and (path:find("^/assets/") or path:find("%.[%w]+$")) then
    return req:respond(404, headers(nil), json.encode({ error = "no such file: " .. path }))
  end
  f = f or c.files["/index.html"]
  local h = headers(f)
  if req:header("if-none-match") == f.etag then return req:respond(304, h, "") end
  return req:respond(200, h, f.body) -- httpd sends no body for HEAD
end

return console
