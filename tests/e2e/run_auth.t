#!/usr/bin/env bash
# replica run authenticates the way registries ask: a token server (the
# Docker token flow) on one side, Basic auth on the other, with credentials
# from the command line, the environment or docker's config.json. Bad
# credentials fail with a clear error, and no password is ever printed.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

registry_start src "$E2E_WORK/src" token
registry_start dst "$E2E_WORK/dst" basic
S=$REG_SRC_URL D=$REG_DST_URL
SRC_CREDS="$REG_SRC_USER:$REG_SRC_PASS" DST_CREDS="$REG_DST_USER:$REG_DST_PASS"

expected=$(seed "$S" secure/app v1,v2 oci 2 4096 seed "$SRC_CREDS"
           seed "$S" secure/multi v1 oci-index 2 4096 seed "$SRC_CREDS")

export DOCKER_CONFIG=$E2E_WORK/docker
mkdir -p "$DOCKER_CONFIG"
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "${D#http://}" "$(printf '%s' "$DST_CREDS" | base64 -w0)" \
    >"$DOCKER_CONFIG/config.json"

replica_run --from "$S" --to "$D" --repo 'secure/**' --from-creds "$SRC_CREDS" --json
is "$RC" 0 "token source (--from-creds) to Basic target (docker config.json) succeeds"
bad=0
while read -r ref want; do
    [[ $(manifest_digest "$D" "${ref%%:*}" "${ref#*:}" "$DST_CREDS") == "$want" ]] || bad=$((bad + 1))
done <<<"$expected"
is "$bad" 0 "every tag arrived with its source digest"
unlike "$OUT" "$REG_SRC_PASS|$REG_DST_PASS" "no password appears in the output, JSON included"

tokens=$(curl -s "$REG_SRC_TOKEN_URL/stats")
diag "token server: $tokens"
like "$tokens" '"denied": 0' "the token server denied nothing"

REPLICA_FROM_CREDS=$SRC_CREDS replica_run --from "$S" --to "$D" --repo 'secure/**'
is "$RC" 0 "credentials from REPLICA_FROM_CREDS work too"
like "$OUT" "0 pushed, 3 up to date" "and the re-run finds everything in place"

replica_run --from "$S" --to "$D" --repo secure/app --from-creds "$REG_SRC_USER:wrong-password"
is "$RC" 1 "a wrong source password fails the run"
like "$OUT" "secure/app.*401.*(username|password|credentials)" "naming the repository and the auth failure"
unlike "$OUT" "wrong-password|$REG_DST_PASS" "without printing any password"

rm "$DOCKER_CONFIG/config.json"
replica_run --from "$S" --to "$D" --repo secure/app --from-creds "$SRC_CREDS"
is "$RC" 1 "a target that needs credentials and gets none fails"
like "$OUT" "stage push_prepare: .*401" "in push_prepare, with the registry's 401"

done_testing
