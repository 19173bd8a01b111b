#!/usr/bin/env bash
# Credentials off the command line: --from-creds-file and --to-creds-file
# (a file, or - for stdin) against real Distribution registries with Basic
# auth; --from-creds on the command line still works, with a warning that
# names the way out and never the password; a secret kind field given with
# --to-cred warns the same; bad uses are refused before anything is copied.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

registry_start src "$E2E_WORK/src" basic
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL SA=$REG_SRC_USER:$REG_SRC_PASS DA=$REG_DST_USER:$REG_DST_PASS
seed "$S" lib/app v1 oci 1 1024 "" "$SA" >/dev/null
want=$(manifest_digest "$S" lib/app v1 "$SA")
unset REPLICA_FROM_CREDS REPLICA_TO_CREDS
umask 077
printf '%s\n' "$SA" >"$E2E_WORK/src.creds"
printf '%s' "$DA" >"$E2E_WORK/dst.creds" # no newline: the first line either way

replica_run --from "$S" --to "$D" --repo lib/app --dest-namespace file \
    --from-creds-file "$E2E_WORK/src.creds" --to-creds-file "$E2E_WORK/dst.creds"
is "$RC" 0 "a run with both sides' credentials in files succeeds"
is "$(manifest_digest "$D" file/lib/app v1 "$DA")" "$want" "and copied the tag"
unlike "$OUT" 'command line' "with no warning"

set +e
OUT=$(printf '%s\n' "$SA" | "$REPLICA" run --from "$S" --to "$D" --repo lib/app --dest-namespace stdin \
    --from-creds-file - --to-creds-file "$E2E_WORK/dst.creds" 2>&1)
RC=$?
set -e
is "$RC" 0 "--from-creds-file - reads the credentials from stdin"
is "$(manifest_digest "$D" stdin/lib/app v1 "$DA")" "$want" "and the copy is there"

replica_run --from "$S" --to "$D" --repo lib/app --dest-namespace argv --from-creds "$SA" --to-creds-file "$E2E_WORK/dst.creds"
is "$RC" 0 "--from-creds on the command line still works"
like "$OUT" "--from-creds puts the password on the command line, where other users of this machine can read it \(ps\): use --from-creds-file FILE \(- reads it from stdin\) or REPLICA_FROM_CREDS" \
    "with a warning that names the way out"
unlike "$OUT" "$REG_SRC_PASS" "the warning does not repeat the password"

replica_run --from "$S" --to "$D" --repo lib/app --dest-namespace cred --from-creds-file "$E2E_WORK/src.creds" \
    --to-cred username="$REG_DST_USER" --to-cred password="$REG_DST_PASS"
is "$RC" 0 "a run with the target's fields as --to-cred succeeds"
like "$OUT" "--to-cred password=\.\.\. puts a secret on the command line, where other users of this machine can read it \(ps\): use REPLICA_TO_CRED_PASSWORD" \
    "a secret field of the kind warns, naming its variable"
unlike "$OUT" "--to-cred username=" "a field that is not secret does not"

replica_run --from "$S" --to "$D" --repo lib/app --from-creds "$SA" --from-creds-file "$E2E_WORK/src.creds"
is "$RC:$OUT" "2:replica run: give --from-creds or --from-creds-file, not both" "the flag and the file together are refused"
replica_run --from "$S" --to "$D" --repo lib/app --from-creds-file "$E2E_WORK/none"
is "$RC:$OUT" "2:replica run: --from-creds-file $E2E_WORK/none: cannot read it (at most 4 KiB)" "a missing file is refused, naming it"
set +e
OUT=$(printf 'a:b\n' | "$REPLICA" run --from "$S" --to "$D" --repo lib/app --from-creds-file - --to-creds-file - 2>&1)
RC=$?
set -e
is "$RC:$OUT" "2:replica run: --to-creds-file -: stdin gives one side's credentials only: use a file for the other" \
    "stdin for both sides is refused"
set +e
OUT=$(printf ':quit\n' | "$REPLICA" repl --from "$S" --to "$D" --repo lib/app --from-creds-file - 2>&1)
RC=$?
set -e
is "$RC:$OUT" "2:replica repl: --from-creds-file -: the REPL reads its commands from stdin: give a file" \
    "the REPL refuses stdin for credentials"
is "$(curl -s -u "$DA" "$D/v2/_catalog" | jq -c '.repositories')" '["argv/lib/app","cred/lib/app","file/lib/app","stdin/lib/app"]' \
    "the refused runs copied nothing"

# stages see the options without the credentials
R=$E2E_WORK/root
mkdir -p "$R/stages/t" "$R/templates"
printf 'return { stages = { { "show", "t/show" } } }\n' >"$R/templates/show.lua"
cat >"$R/stages/t/show.lua" <<'LUA'
return { run = function(ctx)
  local keys = {}
  for k in pairs(ctx.options) do keys[#keys + 1] = k end
  table.sort(keys)
  return { keys = table.concat(keys, " ") }
end }
LUA
replica_run --from "$S" --to "$D" --repo lib/app --scripts "$R" --template show --json \
    --from-creds "$SA" --to-creds-file "$E2E_WORK/dst.creds" --to-cred username="$REG_DST_USER"
is "$RC" 0 "a run with a stage that lists its options"
keys=$(tail -n 1 <<<"$OUT" | jq -r '.tasks[0].stages[0].output.keys')
like "$keys" '(^| )override( |$)' "the stage sees the options ($keys)"
unlike "$keys" 'creds|cred|token' "but none of the credentials, nor where they came from"

done_testing
