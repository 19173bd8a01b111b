-- sys.db_open: the SQLite database trusted commands (`replica serve`,
-- `replica script`) keep their state in, as their Lua code sees it.
local t = require("tap").new(...)

-- A path for a new file under WORK, unique to this run.
local function fresh_path()
  return t.tmp_path("db-spec", "sqlite")
end

local function open()
  local db, err = sys.db_open(fresh_path())
  t.ok(db, err)
  return db
end

local function add_registry(db, name)
  local now = time.now()
  return db:exec("INSERT INTO registries (name, kind, url, created, updated) VALUES (?, ?, ?, ?, ?)",
    name, "docker-registry", "https://" .. name .. ".example", now, now)
end

local function count(db, sql, ...)
  return db:row("SELECT count(*) AS n FROM " .. sql, ...).n
end

t.test("db_open creates the file in WAL mode with foreign keys on and the schema migrated", function()
  local path = fresh_path()
  local db = assert(sys.db_open(path))
  t.eq(db:row("PRAGMA database_list").file, path)
  t.eq(db:row("PRAGMA journal_mode").journal_mode, "wal")
  t.eq(db:readonly(), false, "it is open for writing")
  t.eq(db:row("PRAGMA foreign_keys").foreign_keys, 1)
  local v = db:version()
  t.ok(math.type(v) == "integer" and v >= 1, "a migrated schema version")
  t.eq(v, db:row("PRAGMA user_version").user_version)
  for _, name in ipairs({ "registries", "policies", "executions" }) do
    t.ok(db:row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", name), name)
  end
  db:close()
end)

t.test("db_open of a path it cannot create returns nil and the reason", function()
  local db, err = sys.db_open(t.tmp_path("no-such-dir") .. "/x.sqlite")
  t.eq(db, nil)
  t.match(err, "no%-such%-dir")
end)

t.test("exec returns the rows changed and the last inserted rowid", function()
  local db = open()
  local changes, id = add_registry(db, "one")
  t.eq(changes, 1)
  t.ok(math.type(id) == "integer" and id > 0)
  local _, id2 = add_registry(db, "two")
  t.eq(id2, id + 1)
  t.eq(db:exec("UPDATE registries SET kind = ?", "harbor"), 2)
  t.eq(db:exec("UPDATE registries SET kind = ? WHERE name = ?", "harbor", "none"), 0)
  t.eq(db:exec("CREATE TABLE scratch (x)"), 0, "DDL changes no rows")
  t.eq(db:exec("SELECT 1"), 0, "a query changes no rows")
  db:close()
end)

t.test("query returns typed values keyed by column, NULLs absent, bytes kept", function()
  local db = open()
  db:script("CREATE TABLE v (i INTEGER, f REAL, s TEXT, b BLOB, n TEXT)")
  db:exec("INSERT INTO v VALUES (?, ?, ?, ?, ?)", 42, 1.5, "héllo", "a\0b", nil)
  db:exec("INSERT INTO v VALUES (?, ?, ?, x'00ff00', ?)", true, false, "", json.null)
  local rows = assert(db:query("SELECT i, f, s, b, n FROM v ORDER BY rowid"))
  t.eq(#rows, 2)
  local r = rows[1]
  t.eq(math.type(r.i), "integer")
  t.eq(r.i, 42)
  t.eq(math.type(r.f), "float")
  t.eq(r.f, 1.5)
  t.eq(r.s, "héllo")
  t.eq(r.b, "a\0b", "a string with a NUL round-trips")
  t.eq(r.n, nil)
  t.eq(rows[2].i, 1, "true is 1")
  t.eq(rows[2].f, 0.0, "false is 0")
  t.eq(rows[2].s, "", "an empty string is not NULL")
  t.eq(rows[2].b, "\0\255\0", "a blob keeps its bytes")
  t.eq(rows[2].n, nil, "json.null is NULL")
  local none = assert(db:query("SELECT * FROM v WHERE i < 0"))
  t.eq(type(none), "table")
  t.eq(#none, 0)
  local named = db:row("SELECT 2 + 3 AS five, 7 / 2.0 AS half, NULL AS gone")
  t.eq(named.five, 5)
  t.eq(named.half, 3.5)
  t.eq(named.gone, nil)
  t.eq(db:row("SELECT ? AS big", math.maxinteger).big, math.maxinteger)
  db:close()
end)

t.test("row returns the first row, or a single nil when there is none", function()
  local db = open()
  add_registry(db, "a")
  add_registry(db, "b")
  t.eq(db:row("SELECT name FROM registries ORDER BY name").name, "a")
  t.eq(select("#", db:row("SELECT name FROM registries WHERE name = ?", "zz")), 1)
  t.eq(db:row("SELECT name FROM registries WHERE name = ?", "zz"), nil)
  db:close()
end)

t.test("a duplicate registry name is a constraint error", function()
  local db = open()
  t.ok(add_registry(db, "dup"))
  local ok, err, kind = add_registry(db, "dup")
  t.eq(ok, nil)
  t.match(err, "UNIQUE constraint failed: registries.name")
  t.eq(kind, "constraint")
  local _, _, k2 = db:exec("INSERT INTO registries (name) VALUES ('x')")
  t.eq(k2, "constraint", "NOT NULL is a constraint too")
  t.eq(count(db, "registries"), 1)
  db:close()
end)

t.test("a foreign key violation is a constraint error", function()
  local db = open()
  assert(db:script("CREATE TABLE parent (id INTEGER PRIMARY KEY);"
    .. "CREATE TABLE child (p INTEGER NOT NULL REFERENCES parent(id))"))
  db:exec("INSERT INTO parent (id) VALUES (1)")
  t.eq(db:exec("INSERT INTO child (p) VALUES (?)", 1), 1)
  local ok, err, kind = db:exec("INSERT INTO child (p) VALUES (?)", 2)
  t.eq(ok, nil)
  t.match(err, "FOREIGN KEY constraint failed")
  t.eq(kind, "constraint")
  local _, _, k2 = db:exec("DELETE FROM parent WHERE id = 1")
  t.eq(k2, "constraint")
  db:close()
end)

t.test("bad SQL returns nil, the reason with the start of the SQL, and kind error", function()
  local db = open()
  local ok, err, kind = db:query("SELEKT * FROM registries")
  t.eq(ok, nil)
  t.match(err, "syntax error")
  t.match(err, "SELEKT %* FROM registries")
  t.eq(kind, "error")
  local long = "SELECT * FROM no_such_table WHERE " .. string.rep("1 = 1 AND ", 20) .. "1"
  local _, err2 = db:row(long)
  t.match(err2, "no such table: no_such_table")
  t.match(err2, "%.%.%.%)$", "a long statement is cut")
  t.ok(#err2 < 200)
  local _, err3 = db:exec("SELECT 1; SELECT 2")
  t.match(err3, "one statement")
  local _, err4 = db:exec("  ")
  t.match(err4, "no SQL statement")
  t.eq(db:exec("SELECT 1;  \n"), 0, "a trailing semicolon is fine")
  db:close()
end)

t.test("a database that cannot be written fails with kind full or readonly, which the message carries", function()
  local api = require("serve.api")
  local db = open()
  t.eq(add_registry(db, "kept"), 1)
  db:script("CREATE TABLE big (x)")
  local pages = db:row("PRAGMA page_count").page_count
  db:script("PRAGMA max_page_count = " .. pages) -- no room for another page: SQLITE_FULL
  local big = string.rep("x", 64 * 1024)
  local ok, err, kind = db:exec("INSERT INTO big (x) VALUES (?)", big)
  t.eq(ok, nil)
  t.eq(kind, "full", err)
  t.match(err, "^database unavailable %(full%): database or disk is full")
  local msg, k = api.unavailable("serve/x.lua:1: " .. err) -- as an assert passes it on
  t.eq(k, "full")
  t.match(msg, "^the database is full")
  local tx, terr = pcall(db.transaction, db, function()
    assert(db:exec("INSERT INTO big (x) VALUES (?)", big))
    return true
  end)
  t.eq(tx, false, "a transaction whose function raises it re-raises")
  t.ok(api.unavailable(terr), "... an error api.unavailable still recognises: " .. tostring(terr))
  t.eq(count(db, "registries"), 1, "the rows stored before are there")
  db:script("PRAGMA query_only = 1") -- SQLITE_READONLY
  local _, rerr, rkind = add_registry(db, "refused")
  t.eq(rkind, "readonly", rerr)
  t.match(rerr, "^database unavailable %(readonly%): ")
  t.match(api.unavailable(rerr), "^the database is read%-only")
  t.eq(api.unavailable("registries.lua:3: no such table: x"), nil, "other errors are not unavailability")
  db:close()
end)

t.test("script runs several statements without parameters", function()
  local db = open()
  t.eq(db:script("CREATE TABLE s (x); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2);"), true)
  t.eq(count(db, "s"), 2)
  local ok, err, kind = db:script("INSERT INTO s VALUES (3); INSERT INTO nope VALUES (4)")
  t.eq(ok, nil)
  t.match(err, "no such table: nope")
  t.eq(kind, "error")
  db:close()
end)

t.test("transaction commits and returns what its function returns", function()
  local db = open()
  local a, b, c = db:transaction(function(x, _, z)
    add_registry(db, "t1")
    add_registry(db, "t2")
    return x, nil, z
  end, "first", nil, "third")
  t.eq(a, "first")
  t.eq(b, nil)
  t.eq(c, "third")
  t.eq(count(db, "registries"), 2)
  t.eq(db:row("SELECT count(*) AS n FROM registries").n, 2)
  t.eq(select("#", db:transaction(function() end)), 0)
  db:close()
end)

t.test("transaction rolls back when its function returns nil, err", function()
  local db = open()
  add_registry(db, "kept")
  local ok, err, extra = db:transaction(function()
    add_registry(db, "gone")
    return nil, "changed my mind", 3
  end)
  t.eq(ok, nil)
  t.eq(err, "changed my mind")
  t.eq(extra, 3)
  t.eq(count(db, "registries"), 1)
  t.eq(select("#", db:transaction(function() return nil end)), 1, "a lone nil commits")
  db:close()
end)

t.test("transaction rolls back and re-raises its function's error", function()
  local db = open()
  local thrown = { reason = "boom" }
  local ok, err = pcall(db.transaction, db, function()
    add_registry(db, "gone")
    error(thrown)
  end)
  t.eq(ok, false)
  t.eq(err, thrown, "the same error value")
  t.raises(function()
    db:transaction(function() add_registry(db, "gone"); error("plain failure") end)
  end, "plain failure")
  t.eq(count(db, "registries"), 0)
  t.ok(db:transaction(function() return add_registry(db, "after") end), "usable afterwards")
  t.eq(count(db, "registries"), 1)
  db:close()
end)

t.test("a transaction inside a transaction raises", function()
  local db = open()
  t.raises(function()
    db:transaction(function()
      add_registry(db, "gone")
      db:transaction(function() end)
    end)
  end, "transaction already open")
  t.eq(count(db, "registries"), 0)
  db:close()
end)

t.test("a yield inside a transaction fails and rolls back; the task yields normally afterwards", function()
  local db = open()
  t.raises(function()
    db:transaction(function()
      add_registry(db, "gone")
      time.sleep(0)
    end)
  end, "cannot wait here")
  t.eq(count(db, "registries"), 0)
  local t0 = time.mono()
  t.eq(time.sleep(0.05), true)
  local took = time.mono() - t0
  t.ok(took >= 0.04, "the failed sleep does not wake a later one: " .. took)
  db:close()
end)

t.test("a parameter of an unsupported type or a wrong count raises; the statement stays usable", function()
  local db = open()
  local sql = "SELECT ? AS v"
  t.raises(function() db:row(sql, {}) end, "db: parameter 1 has unsupported type table")
  t.raises(function() db:row("SELECT ?, ? AS v", 1, print) end, "parameter 2 has unsupported type function")
  t.raises(function() db:row(sql, db) end, "unsupported type userdata")
  t.raises(function() db:row(sql) end, "0 parameters given, the statement takes 1")
  t.raises(function() db:row(sql, 1, 2) end, "2 parameters given")
  t.eq(db:row(sql, 7).v, 7)
  t.eq(db:row(sql, nil).v, nil)
  db:close()
end)

t.test("a memory error while building rows leaves the statement reset", function()
  local db = open()
  local sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    .. "SELECT x, 'padding padding padding' AS pad FROM c"
  local ok, err = task.spawn({ memory = 1024 * 1024 }, function()
    return db:query(sql, 1000000)
  end):wait()
  t.eq(ok, nil)
  t.match(err, "memory")
  local rows = assert(db:query(sql, 3))
  t.eq(#rows, 3)
  t.eq(rows[3].x, 3)
  db:close()
end)

t.test("a __gc that uses the db while it steps a statement gets an error, not a crash", function()
  local db = open()
  for i = 1, 130 do db:exec("SELECT " .. i) end -- a full cache: a new statement evicts one
  local seen = { ok = 0, busy = 0 }
  local holder = {}
  for i = 1, 500 do
    holder[i] = setmetatable({}, { __gc = function()
      local ok, err = pcall(db.exec, db, "SELECT 'gc " .. i .. "'")
      if ok then
        seen.ok = seen.ok + 1
      elseif tostring(err):find("in use by a running statement") then
        seen.busy = seen.busy + 1
        local closed, cerr = pcall(db.close, db)
        if closed or not tostring(cerr):find("cannot close") then seen.closed = true end
      else
        seen.other = err
      end
    end })
  end
  holder = nil
  local rows = assert(db:query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
    .. "WHERE x < 20000) SELECT x, 'padding' AS pad FROM c"))
  collectgarbage("collect")
  t.eq(#rows, 20000)
  t.eq(rows[20000].x, 20000)
  t.eq(seen.other, nil)
  t.eq(seen.closed, nil, "close from inside a running statement refused")
  t.eq(seen.ok + seen.busy, 500)
  t.ok(seen.busy > 0, "some finalizers ran during the query")
  t.eq(db:row("SELECT 1 AS one").one, 1)
  db:close()
end)

t.test("a closed db raises on every method; close is idempotent", function()
  local db = open()
  db:close()
  db:close()
  for _, call in ipairs({
    function() db:exec("SELECT 1") end,
    function() db:query("SELECT 1") end,
    function() db:row("SELECT 1") end,
    function() db:script("SELECT 1") end,
    function() db:transaction(function() end) end,
    function() db:version() end,
  }) do
    t.raises(call, "database is closed")
  end
  do
    local scoped <close> = open()
    scoped:exec("SELECT 1")
    db = scoped
  end
  t.raises(function() db:row("SELECT 1") end, "database is closed", "<close> closes it")
end)

t.test("more distinct statements than the cache holds all work, again and again", function()
  local db = open()
  db:script("CREATE TABLE m (k INTEGER PRIMARY KEY, v TEXT)")
  for round = 1, 2 do
    for i = 1, 300 do
      local sql = string.format("INSERT OR REPLACE INTO m (k, v) VALUES (%d, ?)", i)
      t.eq(db:exec(sql, "r" .. round), 1)
      t.eq(db:row(string.format("SELECT v FROM m WHERE k = %d", i)).v, "r" .. round)
    end
  end
  t.eq(count(db, "m WHERE v = ?", "r2"), 300)
  db:close()
end)

-- PRAGMA synchronous as a number: 1 NORMAL, 2 FULL.
local function sync(db)
  return db:row("PRAGMA synchronous").synchronous
end

t.test("durable_transaction commits with synchronous = FULL and restores NORMAL after", function()
  local db = open()
  t.eq(sync(db), 1, "the connection runs with synchronous = NORMAL")
  t.eq(db:transaction(function() return sync(db) end), 1, "a plain transaction commits under NORMAL")
  local inside, name = db:durable_transaction(function(n)
    add_registry(db, n)
    return sync(db), n
  end, "durable")
  t.eq(inside, 2, "inside a durable transaction synchronous is FULL")
  t.eq(name, "durable", "its function gets the arguments and its results come back")
  t.eq(count(db, "registries WHERE name = ?", "durable"), 1, "it committed")
  t.eq(sync(db), 1, "NORMAL again after the commit")
  db:close()
end)

t.test("durable_transaction restores NORMAL after a rollback, a raise and a refused BEGIN", function()
  local db = open()
  local ok, err = db:durable_transaction(function() add_registry(db, "gone") return nil, "no" end)
  t.eq(ok, nil)
  t.eq(err, "no")
  t.eq(count(db, "registries"), 0, "rolled back")
  t.eq(sync(db), 1, "NORMAL after a rollback")
  local pok = pcall(db.durable_transaction, db, function() error("boom") end)
  t.eq(pok, false)
  t.eq(sync(db), 1, "NORMAL after a raise")
  t.eq(db:transaction(function()
    local _, terr = pcall(db.durable_transaction, db, function() end)
    t.match(terr, "transaction already open")
    return sync(db)
  end), 1, "a durable transaction cannot open inside another, and changes nothing")
  local other = assert(sys.db_open(db:row("PRAGMA database_list").file))
  assert(other:script("PRAGMA busy_timeout = 0"))
  assert(other:script("BEGIN IMMEDIATE"))
  assert(db:script("PRAGMA busy_timeout = 0"))
  local bok, berr, kind = db:durable_transaction(function() end)
  t.eq(bok, nil)
  t.eq(kind, "busy", berr)
  t.eq(sync(db), 1, "NORMAL after a BEGIN that failed busy")
  other:script("ROLLBACK")
  other:close()
  db:close()
end)

t.test("a reopened database sees what was committed", function()
  local path = fresh_path()
  local db = assert(sys.db_open(path))
  local v = db:version()
  db:transaction(function() add_registry(db, "persisted") end)
  db:transaction(function() add_registry(db, "rolled-back"); return nil, "no" end)
  local other = assert(sys.db_open(path))
  t.ok(other:row("SELECT id FROM registries WHERE name = ?", "persisted"), "visible to a second handle")
  other:close()
  db:close()
  db = assert(sys.db_open(path))
  t.eq(db:version(), v, "migrations are not applied twice")
  local rows = db:query("SELECT name FROM registries")
  t.eq(#rows, 1)
  t.eq(rows[1].name, "persisted")
  db:close()
end)

t.done()
