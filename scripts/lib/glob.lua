-- glob.lua - doublestar globs, as Harbor's filters use them.
--   *       any run of characters within one path level
--   **      as a whole level: zero or more levels; elsewhere like *
--   ?       one character other than '/'
--   [abc] [a-z] [!a]   a character class within one level
--   {a,b}   alternatives, which may nest
-- glob.match(pattern, name) -> boolean; glob.compile(pattern) -> matcher
local glob = {}

-- Splits s at top-level commas of a brace body.
local function split_alternatives(body)
  local parts, depth, start = {}, 0, 1
  for i = 1, #body do
    local c = body:sub(i, i)
    if c == "{" then depth = depth + 1
    elseif c == "}" then depth = depth - 1
    elseif c == "," and depth == 0 then
      parts[#parts + 1] = body:sub(start, i - 1)
      start = i + 1
    end
  end
  parts[#parts + 1] = body:sub(start)
  return parts
end

-- Expands the first brace group of pattern, recursively, into plain patterns.
local function expand(pattern, out)
  local open = pattern:find("{", 1, true)
  if not open then
    out[#out + 1] = pattern
    return out
  end
  local depth = 0
  for i = open, #pattern do
    local c = pattern:sub(i, i)
    if c == "{" then depth = depth + 1
    elseif c == "}" then
      depth = depth - 1
      if depth == 0 then
        local prefix, suffix = pattern:sub(1, open - 1), pattern:sub(i + 1)
        for _, alt in ipairs(split_alternatives(pattern:sub(open + 1, i - 1))) do
          expand(prefix .. alt .. suffix, out)
        end
        return out
      end
    end
  end
  error("glob: unbalanced '{' in " .. string.format("%q", pattern), 0)
end

-- Translates one path level of a glob into an anchored Lua pattern.
local function level_pattern(seg)
  local out, i = { "^" }, 1
  while i <= #seg do
    local c = seg:sub(i, i)
    if c == "*" then
      while seg:sub(i + 1, i + 1) == "*" do i = i + 1 end
      out[#out + 1] = "[^/]*"
    elseif c == "?" then
      out[#out + 1] = "[^/]"
    elseif c == "[" then
      local close = seg:find("]", i + 2, true)
      if not close then error("glob: unclosed '[' in " .. string.format("%q", seg), 0) end
      local body = seg:sub(i + 1, close - 1)
      local negate = body:sub(1, 1) == "!" or body:sub(1, 1) == "^"
      if negate then body = body:sub(2) end
      body = body:gsub("[%%%]%^]", "%%%0")
      out[#out + 1] = "[" .. (negate and "^" or "") .. body .. "]"
      i = close
    elseif c == "\\" and i < #seg then
      i = i + 1
      out[#out + 1] = "%" .. seg:sub(i, i)
    else
      out[#out + 1] = c:gsub("%p", "%%%0")
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

-- Splits s at '/'.
local function levels(s)
  local t = {}
  for part in (s .. "/"):gmatch("(.-)/") do t[#t + 1] = part end
  return t
end

-- Matches name levels [ni..] against pattern levels [pi..].
local function match_levels(pat, pi, name, ni)
  while pi <= #pat do
    local p = pat[pi]
    if p == "**" then
      if pi == #pat then return true end  -- trailing ** takes everything left
      for k = ni, #name + 1 do
        if match_levels(pat, pi + 1, name, k) then return true end
      end
      return false
    end
    if ni > #name or not name[ni]:find(p) then return false end
    pi, ni = pi + 1, ni + 1
  end
  return ni > #name
end

-- Compiles pattern into a function(name) -> boolean. Raises on a malformed
-- pattern.
function glob.compile(pattern)
  local alternatives = {}
  for _, p in ipairs(expand(pattern, {})) do
    local pat = {}
    for _, seg in ipairs(levels(p)) do
      pat[#pat + 1] = seg == "**" and "**" or level_pattern(seg)
    end
    alternatives[#alternatives + 1] = pat
  end
  return function(name)
    local parts = levels(name)
    for _, pat in ipairs(alternatives) do
      if match_levels(pat, 1, parts, 1) then return true end
    end
    return false
  end
end

-- Returns whether name matches pattern.
function glob.match(pattern, name)
  return glob.compile(pattern)(name)
end

-- Builds a filter from include and exclude pattern lists: a name passes when
-- it matches some include (or there are none) and no exclude.
function glob.filter(includes, excludes)
  local inc, exc = {}, {}
  for i, p in ipairs(includes or {}) do inc[i] = glob.compile(p) end
  for i, p in ipairs(excludes or {}) do exc[i] = glob.compile(p) end
  return function(name)
    local ok = #inc == 0
    for _, m in ipairs(inc) do
      if m(name) then ok = true break end
    end
    if not ok then return false end
    for _, m in ipairs(exc) do
      if m(name) then return false end
    end
    return true
  end
end

return glob
