#!/usr/bin/env bash
# A brand-new registry kind is only a script: a kind that exists nowhere in
# the tree is written into a temporary script root and used with --scripts
# DIR by the already-built binary. Its made-up registry (tests/tenantreg.py,
# in front of a real Distribution) needs an X-Tenant header on every request
# and a namespace created by a PUT before a push. The replication succeeds
# and verifies by digest; a re-run creates nothing and copies nothing; a
# wrong tenant fails clearly; nothing outside the temporary root changes.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
source "$ROOT/tests/registry.sh"
source "$ROOT/tests/lib/tenantreg.sh"

registry_start src "$E2E_WORK/src"
registry_start back "$E2E_WORK/back"
S=$REG_SRC_URL
want_app=$(seed "$S" team/app v1,v2 oci 2 4096 new-kind | sed -n 's|^team/app:v2 ||p')
want_multi=$(seed "$S" team/multi v1 oci-index 2 4096 new-kind | sed -n 's|^team/multi:v1 ||p')
tenantreg_start t1 mirror 's3cret-tenant-pw' "$REG_BACK_URL"
trap 'kill $TPID 2>/dev/null || true; _e2e_cleanup' EXIT # and stop the registries
stats() { curl -s "$T/_tenantreg/stats" | jq -r ".$1"; }

tree_state() { (cd "$ROOT" && git status --porcelain --untracked-files=all -- . ':!build' | sort; \
                find scripts engine -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum; }
before=$(tree_state)

K=$E2E_WORK/kinds-root
tenantreg_kind "$K"

replica_run --scripts "$K" --from "$S" --to "$T" --to-kind tenantreg --to-creds 'mirror:s3cret-tenant-pw' \
    --to-cred tenant=t1 --repo 'team/**' --json
is "$RC" 0 "a replication into the made-up registry with the new kind succeeds"
[[ $RC == 0 ]] || diag "$OUT"
is "$(manifest_digest "$REG_BACK_URL" team/app v2)" "$want_app" "team/app:v2 landed with the source digest"
is "$(manifest_digest "$REG_BACK_URL" team/multi v1)" "$want_multi" "the multi-arch team/multi:v1 too"
is "$(stats namespaces_created)" 1 "the kind created the namespace team once"
is "$(stats without_tenant)" 0 "every request carried the tenant header"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '[.tasks[].stages[] | select(.name == "push_prepare") | .output.namespace.created] | map(tostring) | sort | join(",")' <<<"$json")" \
    "false,true" "push_prepare reports the namespace one task created and the other found made"
if grep -q 's3cret-tenant-pw' <<<"$OUT"; then leaked=yes; else leaked=no; fi
is "$leaked" no "the password appears nowhere in the output"

replica_run --scripts "$K" --from "$S" --to "$T" --to-kind tenantreg --to-creds 'mirror:s3cret-tenant-pw' \
    --to-cred tenant=t1 --repo 'team/**' --json
is "$RC" 0 "a re-run succeeds"
json=$(grep '^{' <<<"$OUT" | tail -n 1)
is "$(jq -r '.summary.pushed' <<<"$json"):$(jq -r '.summary.skipped' <<<"$json")" "0:3" "and copies nothing: every tag is up to date"
is "$(stats namespaces_created)" 1 "and creates nothing"

seed "$S" team/new v1 oci 1 1024 new-kind >/dev/null
replica_run --scripts "$K" --from "$S" --to "$T" --to-kind tenantreg --to-creds 'mirror:s3cret-tenant-pw' \
    --to-cred tenant=t2 --repo 'team/new'
is "$RC" 1 "a wrong tenant fails"
like "$OUT" "unknown tenant" "with the registry's own reason"
is "$(manifest_digest "$REG_BACK_URL" team/new v1)" missing "and nothing was pushed"

replica_run --scripts "$K" --from "$S" --to "$T" --to-kind tenantreg --to-creds 'mirror:s3cret-tenant-pw' --repo 'team/new'
is "$RC" 1 "a run without the tenant the kind requires is refused"
like "$OUT" "the tenantreg kind needs the credential 'tenant'" "before anything is sent, naming the field"

replica_run --scripts "$K" --from "$S" --to "$T" --to-kind tenantreg --to-cred tenant=t1 --to-cred colour=blue \
    --to-creds 'mirror:s3cret-tenant-pw' --repo 'team/new'
is "$RC" 1 "a credential field the kind does not take is refused"
like "$OUT" "takes no credential 'colour'" "naming it"

is "$(tree_state)" "$before" "nothing outside the temporary script root changed"
done_testing
