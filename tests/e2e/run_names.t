#!/usr/bin/env bash
# replica run and names outside the OCI grammar: a source whose catalog lists
# "evil/../../library/app" (tests/fakereg.py in front of a real registry)
# gets only its valid repositories copied, all under --dest-namespace, with a
# warning naming what was left out; an invalid --repo or --dest-namespace is
# refused before anything is copied.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/fakereg.sh"
trap 'fakereg_stop; _e2e_cleanup' EXIT

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" good/app v1 oci 1 1024 >/dev/null
seed "$S" library/app v1 oci 1 1024 >/dev/null
fakereg_start "$E2E_WORK/fakereg" "$S"
EVIL=$FAKEREG_URL/evil

replica_run --from "$EVIL" --to "$D" --dest-namespace mirror
is "$RC" 0 "a run from a source that lists invalid names succeeds for the valid ones"
like "$OUT" 'left out invalid repository name "evil/\.\./\.\./library/app"' "it names the repository it left out"
like "$OUT" 'left out invalid repository name "Bad/Name"' "and every other one"
catalog=$(curl -s "$D/v2/_catalog" | tr -d ' \n')
is "$catalog" '{"repositories":["mirror/good/app"]}' "only mirror/good/app landed on the target"
is "$(manifest_digest "$D" library/app v1)" missing "library/app at the target's root was not written"

replica_run --from "$EVIL" --to "$D" --repo 'evil/../../library/app' --dest-namespace mirror
is "$RC" 1 "a --repo that is not a valid name fails the run"
like "$OUT" 'repository filter: invalid repository name "evil/\.\./\.\./library/app": a repository name is' \
    "naming it and what the grammar allows"

for ns in .. mirror/.. Mirror; do
    replica_run --from "$S" --to "$D" --repo good/app --dest-namespace "$ns"
    is "$RC:$(head -n 1 <<<"$OUT")" "1:replica: --dest-namespace: invalid repository name \"$ns\": a repository name is path components separated by '/', each of lower-case letters and digits joined by '.', '_', '__' or dashes (no '.' or '..' components), at most 255 characters" \
        "--dest-namespace $ns is refused"
done
is "$(curl -s "$D/v2/_catalog" | tr -d ' \n')" '{"repositories":["mirror/good/app"]}' "the refused runs copied nothing"

done_testing
