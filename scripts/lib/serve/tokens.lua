-- serve/tokens.lua - API tokens: random, shown once, stored only as their
-- SHA-256. Bearer tokens authenticate every API call except the webhooks,
-- which check their registry's shared secret instead.
local tokens = {}

local PREFIX = "rpl_"

-- Returns the lower-case hex SHA-256 of s.
function tokens.hash(s)
  return digest.sha256(s)
end

-- Creates a token named name; returns the token (the only time it exists in
-- clear) or nil, err (e.g. the name is taken).
function tokens.create(db, sys, name)
  local raw = sys.random(32)
  local tok = PREFIX .. base64.urlencode(raw)
  local ok, err = db:exec("INSERT INTO tokens (name, hash, created) VALUES (?, ?, ?)",
                          name, tokens.hash(tok), time.now())
  if not ok then return nil, err end
  return tok
end

-- Creates the admin token when the database has none; returns it, or nil
-- when tokens exist already.
function tokens.bootstrap(db, sys)
  local row = db:row("SELECT count(*) AS n FROM tokens")
  if row and row.n > 0 then return nil end
  return tokens.create(db, sys, "admin")
end

-- Checks an Authorization header value against the stored hashes. Returns
-- the token's name, or nil and the message for a 401, or nil, the
-- database's error and true when the tokens could not be read.
function tokens.check(db, header)
  if not header or header == "" then return nil, "missing bearer token (Authorization: Bearer <token>)" end
  local tok = header:match("^[Bb]earer%s+(%S+)%s*$")
  if not tok then return nil, "the Authorization header must be 'Bearer <token>'" end
  local row, err = db:row("SELECT name FROM tokens WHERE hash = ?", tokens.hash(tok))
  if err then return nil, err, true end
  if not row then return nil, "invalid token" end
  return row.name
end

-- `replica token create`: prints a new token for the database.
function tokens.cli_create(opts, sys)
  local path = opts.db or opts.default_db
  local db, err = sys.db_open(path)
  if not db then return nil, err end
  local name = opts.name
  if not name then
    local n = db:row("SELECT count(*) AS n FROM tokens").n
    name = "token-" .. (n + 1)
  end
  local tok, terr = tokens.create(db, sys, name)
  db:close()
  if not tok then return nil, string.format("cannot create token '%s': %s", name, terr) end
  print(tok)
  return 0
end

return tokens
