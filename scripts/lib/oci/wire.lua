-- oci/wire.lua - the one place the oci modules hand headers to the engine.
local wire = {}

-- Returns headers with every value as a one-element list. Both forms mean
-- the same to http.request and blob.copy, but the engine's add_headers
-- (engine/lua_http.c) leaves a plain string value on the stack and then
-- raises "invalid key to 'next'"; the list form avoids that path.
function wire.headers(t)
  local out = {}
  for k, v in pairs(t or {}) do
    out[k] = type(v) == "table" and v or { v }
  end
  return out
end

-- http.request with headers passed through wire.headers.
function wire.request(opts)
  opts.headers = wire.headers(opts.headers)
  return http.request(opts)
end

return wire
