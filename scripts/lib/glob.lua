-- glob.lua - doublestar globs, as Harbor's filters use them.
--   *       any run of characters within one path level
--   **      as a whole level: zero or more levels; elsewhere like *
--   ?       one character other than '/'
--   [abc] [a-z] [!a]   a character class within one level
--   {a,b}   alternatives, which may nest
-- glob.match(pattern, name) -> boolean; glob.compile(pattern) -> matcher
-- Matching takes time linear in the pattern times the name, whatever the
-- pattern.
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

-- Expansion stops past this many alternatives: "{a,b}" repeated n times
-- would make 2^n of them.
local MAX_ALTERNATIVES = 1024

-- Expands the first brace group of pattern, recursively, into plain patterns.
local function expand(pattern, out)
  local open = pattern:find("{", 1, true)
  if not open then
    if #out >= MAX_ALTERNATIVES then
      error(string.format("glob: more than %d alternatives in %q", MAX_ALTERNATIVES, pattern), 0)
    end
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

-- The items of a compiled level: STAR is any run of characters; every other
-- item matches one character: ANY any, a number that byte, a string the
-- anchored Lua pattern of a class ("^[a-c]$").
local STAR, ANY = {}, {}

-- Compiles one path level of a glob into its items.
local function level_items(seg)
  local out, i = {}, 1
  while i <= #seg do
    local c = seg:sub(i, i)
    if c == "*" then
      while seg:sub(i + 1, i + 1) == "*" do i = i + 1 end
      out[#out + 1] = STAR
    elseif c == "?" then
      out[#out + 1] = ANY
    elseif c == "[" then
      local close = seg:find("]", i + 2, true)
      if not close then error("glob: unclosed '[' in " .. string.format("%q", seg), 0) end
      local body = seg:sub(i + 1, close - 1)
      local negate = body:sub(1, 1) == "!" or body:sub(1, 1) == "^"
      if negate then body = body:sub(2) end
      body = body:gsub("[%%%]%^]", "%%%0")
      out[#out + 1] = "^[" .. (negate and "^" or "") .. body .. "]$"
      i = close
    else
      if c == "\\" and i < #seg then i = i + 1 end
      out[#out + 1] = seg:byte(i)
    end
    i = i + 1
  end
  return out
end

-- Whether the subject's elements 1..n match items, where star matches any
-- run of elements and every other item one element, as one(item, k) says of
-- element k. Greedy, going back only to the last star: at most n * #items
-- calls of one, where backtracking into every star (Lua patterns, or
-- recursion) takes exponential time on "*a*a*a*a*b" against "aaaa...c".
local function match_items(items, n, star, one)
  local ii, k, back_i, back_k = 1, 1, nil, nil
  while k <= n do
    local item = items[ii]
    if item == star then
      back_i, back_k = ii, k
      ii = ii + 1
    elseif item ~= nil and one(item, k) then
      ii, k = ii + 1, k + 1
    elseif back_i then
      back_k = back_k + 1
      ii, k = back_i + 1, back_k
    else
      return false
    end
  end
  while items[ii] == star do ii = ii + 1 end
  return ii > #items
end

-- Whether one path level s matches the items of a compiled level.
local function match_level(items, s)
  return match_items(items, #s, STAR, function(item, k)
    if item == ANY then return true end
    if type(item) == "number" then return s:byte(k) == item end
    return s:sub(k, k):find(item) ~= nil
  end)
end

-- Splits s at '/'.
local function levels(s)
  local t = {}
  for part in (s .. "/"):gmatch("(.-)/") do t[#t + 1] = part end
  return t
end

-- Whether the levels of a name match the compiled levels of a pattern,
-- "**" being zero or more whole levels.
local function match_levels(pat, name)
  return match_items(pat, #name, "**", function(items, k) return match_level(items, name[k]) end)
end

-- Compiles pattern into a function(name) -> boolean. Raises on a malformed
-- pattern.
function glob.compile(pattern)
  local alternatives = {}
  for _, p in ipairs(expand(pattern, {})) do
    local pat = {}
    for _, seg in ipairs(levels(p)) do
      pat[#pat + 1] = seg == "**" and "**" or level_items(seg)
    end
    alternatives[#alternatives + 1] = pat
  end
  return function(name)
    local parts = levels(name)
    for _, pat in ipairs(alternatives) do
      if match_levels(pat, parts) then return true end
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
