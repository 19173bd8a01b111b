-- scriptset.lua - where the stage functions and process templates that a
-- run uses come from (trusted code only). A set answers get(kind, name)
-- with an entry:
--   { kind = "stages" | "templates", name = "distribution/push",
--     origin = "bundled" | "user" | "draft", version = 0 | N,
--     sha256 = hex | nil, source = text | nil }
-- An entry without source is a file under the script roots, which the
-- runner compiles from disk (box:compile); one with source is compiled from
-- that text, cached by its sha256 (box:load). `replica run` and `replica
-- check` use the files alone; `replica serve` lays its stored versions over
-- them, and pins an execution's entries when it starts.
local scriptset = {}

local KINDS = { stages = "stage", templates = "template" }

-- The "no stage named 'x'" message of a name a set lacks.
local function missing(kind, name)
  return string.format("no %s named '%s'", KINDS[kind] or kind, name)
end

-- The files under the script roots: version 0, origin "bundled".
function scriptset.files()
  local set = { id = "files" }
  function set.get(kind, name)
    local src, err = catalog.source(kind, name)
    if not src then return nil, err end
    return { kind = kind, name = name, origin = "bundled", version = 0 }
  end
  function set.list(kind)
    local out = {}
    for _, e in ipairs(catalog.list(kind)) do out[#out + 1] = e.name end
    return out
  end
  return set
end

-- Adds the source text and its sha256 to a file entry (in place); returns
-- the entry, or nil and err when the file cannot be read.
function scriptset.materialize(e)
  if e.source then return e end
  local src, err = catalog.source(e.kind, e.name)
  if not src then return nil, err end
  e.source, e.sha256 = src, digest.sha256(src)
  return e
end

-- A set whose entries come from upper (get, list) where it has them, and
-- from base otherwise: the daemon's stored versions over the files, or an
-- execution's pins over the live set.
function scriptset.overlay(base, upper)
  local set = { id = false }
  function set.get(kind, name)
    local e = upper.get(kind, name)
    if e then return e end
    return base.get(kind, name)
  end
  function set.list(kind)
    local seen, out = {}, {}
    for _, list in ipairs({ upper.list(kind), base.list(kind) }) do
      for _, n in ipairs(list) do
        if not seen[n] then seen[n], out[#out + 1] = true, n end
      end
    end
    table.sort(out)
    return out
  end
  return set
end

-- A set of the given entries only ({ entry, ... }, each with its kind and
-- name), for pins and drafts.
function scriptset.of(entries)
  local by = { stages = {}, templates = {} }
  for _, e in ipairs(entries) do by[e.kind][e.name] = e end
  local set = { id = false }
  function set.get(kind, name)
    local e = by[kind] and by[kind][name]
    if e then return e end
    return nil, missing(kind, name)
  end
  function set.list(kind)
    local out = {}
    for n in pairs(by[kind] or {}) do out[#out + 1] = n end
    table.sort(out)
    return out
  end
  return set
end

return scriptset
