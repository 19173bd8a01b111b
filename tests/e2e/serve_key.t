#!/usr/bin/env bash
# The key file of replica serve belongs to its database: once a registry
# password is sealed, a start without the key file, or with another key,
# is refused with a message that names the file and says what to do, and no
# new key is created in its place; the right key starts, and the password
# still works. A database from before the key check value existed gets one
# at its next start with the right key.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

registry_start src "$E2E_WORK/src" basic
S=$REG_SRC_URL

# serve_refused NAME ARGS...: runs serve expecting it to refuse to start;
# its exit code in $RC and its standard error in $ERR.
serve_refused() {
    local name=$1
    shift
    set +e
    ERR=$(timeout 30 "$REPLICA" serve --db "$E2E_WORK/$name.db" --listen 127.0.0.1:0 "$@" 2>&1 >/dev/null)
    RC=$?
    set -e
}

serve_start keys
key=$SERVE_DB.key
is "$(stat -c %a "$key")" 600 "the first start creates the key file"
is "$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM settings WHERE name = 'key_check'")" 1 \
    "and stores a key check value in the database"
api POST /registries "$(registry_json src "$S" "\"username\": \"$REG_SRC_USER\", \"password\": \"$REG_SRC_PASS\"")"
REG=$(jget .id)
api POST "/registries/$REG/ping"
is "$(jget .ok)" true "a registry with a password works"
serve_stop
cp "$key" "$E2E_WORK/key.backup"

# --- the key file is missing ----------------------------------------------
rm "$key"
serve_refused keys
ok $((RC == 0)) "without its key file the daemon refuses to start (exit $RC)"
like "$ERR" "key file $key does not exist" "the message names the missing key file"
like "$ERR" "restore the key file from your backup, or name it with --key-file" "and says what to do"
is "$(test -e "$key" && echo created || echo absent)" absent "no new key file is created"
serve_refused keys --key-file "$E2E_WORK/other.key"
like "$ERR" "key file $E2E_WORK/other.key does not exist" "a wrong --key-file path is refused the same way"
is "$(test -e "$E2E_WORK/other.key" && echo created || echo absent)" absent "and not created either"

# --- another key -------------------------------------------------------------
head -c 32 /dev/urandom >"$key"
chmod 600 "$key"
serve_refused keys
ok $((RC == 0)) "with another key the daemon refuses to start (exit $RC)"
like "$ERR" "key file $key is not the key of the database" "the message says the key file is the wrong one"

# --- the right key -----------------------------------------------------------
cp "$E2E_WORK/key.backup" "$key"
serve_start keys
api POST "/registries/$REG/ping"
is "$(jget .ok)" true "with the right key restored it starts, and the stored password still works"
serve_stop

# --- a database from before the key check value --------------------------------
sqlite3 "$SERVE_DB" "DELETE FROM settings"
head -c 32 /dev/urandom >"$key"
serve_refused keys
like "$ERR" "is not the key of the database" \
    "without a key check value, a key that cannot open a sealed password is refused"
is "$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM settings")" 0 "and no key check value is written"
cp "$E2E_WORK/key.backup" "$key"
serve_start keys
is "$(sqlite3 "$SERVE_DB" "SELECT count(*) FROM settings WHERE name = 'key_check'")" 1 \
    "with the right key it starts and writes the key check value"
api POST "/registries/$REG/ping"
is "$(jget .ok)" true "and the password works"
serve_stop

# --- a database with nothing sealed may get a new key -------------------------------
serve_start empty
rm "$SERVE_DB.key"
serve_stop
sqlite3 "$SERVE_DB" "DELETE FROM settings"
serve_start empty
is "$(stat -c %a "$SERVE_DB.key")" 600 "a database with no sealed value gets a new key file"
serve_stop
done_testing
