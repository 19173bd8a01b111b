-- serve/metrics.lua - a registry of metrics (counters, gauges, histograms,
-- each a family of series told apart by their label values) and its
-- exposition in the Prometheus text format, version 0.0.4. Label values may
-- come from registries (hosts, statuses) or from users (template and stage
-- names), so they are escaped, made valid UTF-8, and each family holds a
-- bounded number of series: past its bound, new label sets count in one
-- series whose labels are all "other".
local metrics = {}

metrics.CONTENT_TYPE = "text/plain; version=0.0.4"
metrics.MAX_SERIES = 200 -- series of one family, by default

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"

-- A label value as the format writes it inside double quotes: valid UTF-8
-- (bytes of an invalid sequence become "?"), with \, " and newlines
-- escaped. A new string.
function metrics.escape(v)
  v = tostring(v)
  if not utf8.len(v) then v = v:gsub("[\128-\255]", "?") end
  return (v:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- A HELP text as the format writes it: \ and newlines escaped.
local function escape_help(s)
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

-- A sample value as the format writes it: integers exactly, other numbers
-- in the fewest digits that read back the same, and +Inf, -Inf, NaN.
function metrics.number(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", math.tointeger(v)) end
  local short = string.format("%.15g", v)
  if tonumber(short) == v then return short end
  return (string.format("%.17g", v))
end

-- The series of family f for the label table labels ({name = value}; a
-- missing label is ""), created on first use; the "other" series once the
-- family is full.
local function series(f, labels)
  local vals = {}
  for i, n in ipairs(f.labels) do
    local v = labels and labels[n]
    vals[i] = v == nil and "" or tostring(v)
  end
  local key = table.concat(vals, "\0")
  local s = f.series[key]
  if s then return s end
  if f.count >= f.max - 1 then
    for i = 1, #vals do vals[i] = "other" end
    local okey = table.concat(vals, "\0")
    if f.series[okey] then return f.series[okey] end
    key = okey
  end
  s = { values = vals, value = 0 }
  if f.kind == "histogram" then
    s.buckets, s.sum, s.value = {}, 0, 0
    for i = 1, #f.bounds do s.buckets[i] = 0 end
  end
  f.series[key] = s
  f.count = f.count + 1
  return s
end

local Family = {}
Family.__index = Family

-- Adds n (default 1) to a counter's or gauge's series of labels.
function Family:inc(labels, n)
  local s = series(self, labels)
  s.value = s.value + (n or 1)
end

-- Sets a series of labels to v: a gauge, or a counter kept elsewhere (the
-- engine's request counts) whose current total is copied here.
function Family:set(labels, v)
  series(self, labels).value = v
end

-- Counts observation v (seconds, say) in a histogram's series of labels.
function Family:observe(labels, v)
  local s = series(self, labels)
  for i, b in ipairs(self.bounds) do
    if v <= b then s.buckets[i] = s.buckets[i] + 1 end
  end
  s.sum = s.sum + v
  s.value = s.value + 1 -- the count
end

-- Removes every series (a gauge refilled at each scrape).
function Family:clear()
  self.series, self.count = {}, 0
end

-- The label pairs of series s, with extra ("le" of a bucket) appended:
-- "{a=\"x\",le=\"1\"}", or "" when there are none.
local function label_text(f, s, extra)
  local parts = {}
  for i, n in ipairs(f.labels) do parts[#parts + 1] = n .. '="' .. metrics.escape(s.values[i]) .. '"' end
  if extra then parts[#parts + 1] = extra end
  if #parts == 0 then return "" end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Appends family f's lines to out: HELP, TYPE, then its series in the
-- order of their label values.
local function render_family(f, out)
  out[#out + 1] = "# HELP " .. f.name .. " " .. escape_help(f.help)
  out[#out + 1] = "# TYPE " .. f.name .. " " .. f.kind
  local keys = {}
  for k in pairs(f.series) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local s = f.series[k]
    if f.kind == "histogram" then
      for i, b in ipairs(f.bounds) do
        out[#out + 1] = f.name .. "_bucket" .. label_text(f, s, 'le="' .. metrics.number(b) .. '"') .. " "
                        .. metrics.number(s.buckets[i])
      end
      out[#out + 1] = f.name .. "_bucket" .. label_text(f, s, 'le="+Inf"') .. " " .. metrics.number(s.value)
      out[#out + 1] = f.name .. "_sum" .. label_text(f, s) .. " " .. metrics.number(s.sum)
      out[#out + 1] = f.name .. "_count" .. label_text(f, s) .. " " .. metrics.number(s.value)
    else
      out[#out + 1] = f.name .. label_text(f, s) .. " " .. metrics.number(s.value)
    end
  end
end

local Registry = {}
Registry.__index = Registry

-- Declares a family: kind "counter", "gauge" or "histogram", its name and
-- help, its label names, and opts {buckets = upper bounds, ascending (a
-- histogram's), max = series at most}. Raises on a bad or repeated name.
-- Returns the family, which the registry owns.
function Registry:family(kind, name, help, labels, opts)
  opts = opts or {}
  assert(name:match(NAME), "metrics: bad name " .. name)
  assert(not self.by_name[name], "metrics: " .. name .. " is declared twice")
  for _, l in ipairs(labels or {}) do
    assert(l:match(LABEL) and l ~= "le" and not l:find("^__"), "metrics: bad label name " .. l)
  end
  local f = setmetatable({ kind = kind, name = name, help = help, labels = labels or {},
                           max = opts.max or metrics.MAX_SERIES, series = {}, count = 0 }, Family)
  if kind == "histogram" then
    f.bounds = assert(opts.buckets, "metrics: a histogram needs buckets")
    for i = 2, #f.bounds do assert(f.bounds[i] > f.bounds[i - 1], "metrics: buckets must ascend") end
  end
  self.by_name[name] = f
  self.order[#self.order + 1] = f
  return f
end

function Registry:counter(name, help, labels, opts) return self:family("counter", name, help, labels, opts) end
function Registry:gauge(name, help, labels, opts) return self:family("gauge", name, help, labels, opts) end
function Registry:histogram(name, help, labels, opts) return self:family("histogram", name, help, labels, opts) end

-- The exposition of every family, in the order they were declared: one
-- string ending in a newline.
function Registry:render()
  local out = {}
  for _, f in ipairs(self.order) do render_family(f, out) end
  return table.concat(out, "\n") .. "\n"
end

-- A new, empty registry; the caller owns it.
function metrics.new()
  return setmetatable({ by_name = {}, order = {} }, Registry)
end

return metrics
