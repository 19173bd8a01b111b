-- repl/pretty.lua - values as text for `replica repl`'s :print, :ctx,
-- :result and the values of expressions at the prompt. Tables are walked
-- raw (no metamethod runs), keys in a stable order, nested tables indented,
-- cycles named, the whole cut at maxlen characters. Fields whose names say
-- they hold a secret (password, token, secret, authorization, credentials,
-- creds: --from-creds USER:PASSWORD)
-- print as "***", so credentials never reach the terminal.
local pretty = {}

local SECRET = { "password", "passwd", "token", "secret", "authorization", "credential", "creds",
                 "private_key", "sealed", "signing" }

-- Whether a field named k must not be shown.
local function secret(k)
  if type(k) ~= "string" then return false end
  local l = k:lower()
  for _, w in ipairs(SECRET) do
    if l:find(w, 1, true) then return true end
  end
  return false
end

-- A string as a Lua literal, control characters escaped.
local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"):gsub("\r", "\\r"))
end

-- Orders keys: numbers first (ascending), then strings, then the rest.
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    local rank = { number = 1, string = 2 }
    return (rank[ta] or 3) < (rank[tb] or 3)
  end
  if ta == "number" or ta == "string" then return a < b end
  return false
end

-- A scalar, or the name of a table or function seen in a cycle.
local function scalar(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return string.format("%s: %p", t, v)
end

-- Formats v; returns the text (cut at maxlen, default 4000, with a note of
-- how much more there was).
function pretty.format(v, maxlen)
  maxlen = maxlen or 4000
  local out, n, seen = {}, 0, {}
  local function emit(s)
    out[#out + 1] = s
    n = n + #s
  end
  local function walk(x, indent)
    if type(x) ~= "table" then return emit(scalar(x)) end
    if seen[x] then return emit("<cycle: " .. scalar(x) .. ">") end
    if n > maxlen then return emit("{...}") end
    seen[x] = true
    local keys, count = {}, 0
    for k in next, x do
      count = count + 1
      keys[count] = k
    end
    if count == 0 then
      seen[x] = nil
      return emit("{}")
    end
    table.sort(keys, key_order)
    local len = rawlen(x)
    local is_list = len == count
    emit("{\n")
    for i, k in ipairs(keys) do
      if n > maxlen then break end
      emit(indent .. "  ")
      if not is_list then
        if type(k) == "string" and k:match("^[%a_][%w_]*$") then emit(k .. " = ")
        else emit("[" .. scalar(k) .. "] = ") end
      end
      local val = rawget(x, k)
      if secret(k) and val ~= nil and type(val) ~= "table" then emit('"***"') else walk(val, indent .. "  ") end
      emit(i < count and ",\n" or "\n")
    end
    emit(indent .. "}")
    seen[x] = nil
  end
  walk(v, "")
  local s = table.concat(out)
  if #s > maxlen then
    s = s:sub(1, maxlen) .. string.format("\n... (%d more characters; :maxlen N shows more)", #s - maxlen)
  end
  return s
end

-- Formats the n values of a call's results, separated by tabs (one line
-- each when any is a table).
function pretty.values(vals, maxlen)
  local parts = {}
  for i = 1, vals.n or #vals do parts[i] = pretty.format(vals[i], maxlen) end
  return table.concat(parts, "\t")
end

-- A stage record's duration ("0.25 s"), or "" before it ended.
function pretty.duration(r)
  if not (r.started and r.finished) then return "" end
  return string.format("%.2f s", r.finished - r.started)
end

return pretty
