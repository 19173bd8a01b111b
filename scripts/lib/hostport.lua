-- hostport.lua - the HOST:PORT of a --listen flag, shared by `replica serve`
-- and `replica function`.
local hostport = {}

-- Parses HOST:PORT ([v6]:PORT, or :PORT for default_host); returns host,
-- port, or nil and an error that shows example.
function hostport.parse(s, default_host, example)
  local host, port = s:match("^%[([%x:]+)%]:(%d+)$")
  if not host then host, port = s:match("^([^:]*):(%d+)$") end
  port = math.tointeger(tonumber(port))
  if not port or port > 65535 then return nil, "--listen must be HOST:PORT, e.g. " .. example end
  if host == "" then host = default_host end
  return host, port
end

return hostport
