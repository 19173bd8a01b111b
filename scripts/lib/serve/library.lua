-- serve/library.lua - the stage functions and process templates that
-- `replica serve` keeps in its database, over the bundled files. Every save
-- is a new, immutable version (number, time, content hash, the token that
-- saved it); a user version shadows the bundled file of the same name, and
-- deleting it (with all its history) brings the bundled one back. Bundled
-- files are never written. An execution pins the entries it runs when it
-- starts (execution_scripts), so later saves change only later executions.
local scriptset = require("scriptset")

local library = {}

local files = scriptset.files()

-- The entry of the current user version of kind/name, or nil.
function library.current(db, kind, name)
  local r = db:row([[SELECT v.version, v.sha256, v.created, v.by, s.source FROM script_versions v
                     JOIN script_sources s ON s.sha256 = v.sha256
                     WHERE v.kind = ? AND v.name = ? ORDER BY v.version DESC LIMIT 1]], kind, name)
  if not r then return nil end
  return { kind = kind, name = name, origin = "user", version = r.version, sha256 = r.sha256,
           source = r.source, created = r.created, by = r.by }
end

-- The names of kind with a user version, sorted.
function library.names(db, kind)
  local out = {}
  for _, r in ipairs(assert(db:query("SELECT DISTINCT name FROM script_versions WHERE kind = ? ORDER BY name", kind))) do
    out[#out + 1] = r.name
  end
  return out
end

-- The versions of kind/name, newest first: { {version, created, by, sha256} }.
function library.versions(db, kind, name)
  return assert(db:query([[SELECT version, created, by, sha256 FROM script_versions
                           WHERE kind = ? AND name = ? ORDER BY version DESC]], kind, name))
end

-- Version n of kind/name with its source, or nil.
function library.version(db, kind, name, n)
  return db:row([[SELECT v.version, v.created, v.by, v.sha256, s.source FROM script_versions v
                  JOIN script_sources s ON s.sha256 = v.sha256
                  WHERE v.kind = ? AND v.name = ? AND v.version = ?]], kind, name, n)
end

-- Stores source under its sha256 (once); must run inside a transaction.
local function put_source(db, source, sha)
  assert(db:exec("INSERT OR IGNORE INTO script_sources (sha256, source) VALUES (?, ?)", sha, source))
end

-- Saves source as the next version of kind/name, by the token named by.
-- Returns the version and whether it is the first user version; a source
-- identical to the current version stores nothing and returns that version
-- and "unchanged".
function library.save(db, kind, name, source, by)
  local sha = digest.sha256(source)
  local version, first, unchanged
  assert(db:durable_transaction(function()
    local cur = db:row([[SELECT version, sha256 FROM script_versions WHERE kind = ? AND name = ?
                         ORDER BY version DESC LIMIT 1]], kind, name)
    if cur and cur.sha256 == sha then
      version, unchanged = cur.version, true
      return true
    end
    version, first = (cur and cur.version or 0) + 1, cur == nil
    put_source(db, source, sha)
    assert(db:exec([[INSERT INTO script_versions (kind, name, version, sha256, created, by)
                     VALUES (?, ?, ?, ?, ?, ?)]], kind, name, version, sha, time.now(), by or "?"))
    return true
  end))
  return version, first, unchanged
end

-- Removes every version of kind/name, and the sources nothing refers to any
-- more. Returns how many versions went.
function library.delete(db, kind, name)
  local n
  assert(db:durable_transaction(function()
    n = assert(db:exec("DELETE FROM script_versions WHERE kind = ? AND name = ?", kind, name))
    return library.prune_sources(db)
  end))
  return n
end

-- Deletes the sources that neither a version nor an execution's pin refers
-- to (a deleted function's, a pruned draft run's). Must run inside a
-- transaction; returns true.
function library.prune_sources(db)
  assert(db:exec([[DELETE FROM script_sources WHERE sha256 NOT IN (SELECT sha256 FROM script_versions)
                   AND sha256 NOT IN (SELECT sha256 FROM execution_scripts)]]))
  return true
end

-- The daemon's live script set: user versions over the bundled files.
function library.set(db)
  return scriptset.overlay(files, {
    get = function(kind, name) return library.current(db, kind, name) end,
    list = function(kind) return library.names(db, kind) end,
  })
end

-- The bundled files' set.
function library.files()
  return files
end

-- The entries execution id pinned, as a list of entries with their sources.
function library.pins(db, id)
  local out = {}
  for _, r in ipairs(assert(db:query([[SELECT p.kind, p.name, p.origin, p.version, p.sha256, s.source
                                       FROM execution_scripts p JOIN script_sources s ON s.sha256 = p.sha256
                                       WHERE p.execution = ? ORDER BY p.kind, p.name]], id))) do
    out[#out + 1] = { kind = r.kind, name = r.name, origin = r.origin, version = r.version,
                      sha256 = r.sha256, source = r.source }
  end
  return out
end

-- Pins entries (a list; file entries get their source read first) for
-- execution id, keeping pins it has already. Must run inside a transaction;
-- returns true or nil, err (a bundled file that cannot be read).
function library.pin(db, id, entries)
  for _, e in ipairs(entries) do
    local m, err = scriptset.materialize(e)
    if not m then return nil, err end
    put_source(db, m.source, m.sha256)
    assert(db:exec([[INSERT OR IGNORE INTO execution_scripts (execution, kind, name, origin, version, sha256)
                     VALUES (?, ?, ?, ?, ?, ?)]], id, m.kind, m.name, m.origin, m.version, m.sha256))
  end
  return true
end

-- The script set of execution id: its pins over the live set (the live set
-- answers only what was never pinned: an execution that has not started).
function library.execution_set(db, id)
  return scriptset.overlay(library.set(db), scriptset.of(library.pins(db, id)))
end

-- The entries a checked template runs (runner.template's): the template's
-- own and each function of its stages and delete_stages.
function library.entries_of(template)
  local out, seen = { template.entry }, {}
  for _, list in ipairs({ template.stages, template.delete_stages or {} }) do
    for _, st in ipairs(list) do
      if st.entry and not seen[st.entry.name] then
        seen[st.entry.name] = true
        out[#out + 1] = st.entry
      end
    end
  end
  return out
end

return library
