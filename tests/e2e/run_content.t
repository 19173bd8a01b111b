#!/usr/bin/env bash
# replica run copies what registries hold, byte for byte: OCI and Docker
# media types, multi-arch indexes and manifest lists, nested repository
# paths, unusual valid tag names, a repository with many tags, many tags of
# one index copied at once (its children are PUT once per run: Distribution
# answers DIGEST_INVALID to an index PUT that checks a child while another
# PUT rewrites it). A second run copies nothing. Namespaces and flattening rename as Harbor does.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL

long_tag=v$(printf 'x%.0s' $(seq 1 120))
many=$(seq -f 't%03g' 1 150 | paste -sd, -)
expected=$(
    seed "$S" team/a/b/app "1.0.0-rc.1_build.5,v1__x,$long_tag" oci 2 4096
    seed "$S" multi/oci v1,v2 oci-index
    seed "$S" multi/docker latest docker-list
    seed "$S" plain 1,2,3 docker 3 20000
    seed "$S" many "$many" oci 1 512
)
diag "seeded $(wc -l <<<"$expected") tags"

replica_run --from "$S" --to "$D" --repo '**'
is "$RC" 0 "the first run succeeds"
like "$OUT" "5/5 repositories succeeded; tags: 159 pushed" "every tag of every repository is pushed"

mismatch=0
while read -r ref want; do
    repo=${ref%%:*} tag=${ref#*:}
    got=$(manifest_digest "$D" "$repo" "$tag")
    if [[ $got != "$want" ]]; then
        mismatch=$((mismatch + 1))
        diag "$ref: target has $got, source $want"
    fi
done <<<"$expected"
is "$mismatch" 0 "every target tag resolves to the source's digest (exact manifest bytes)"

accept='Accept: application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.list.v2+json'
missing=0
for ref in multi/oci:v1 multi/oci:v2 multi/docker:latest; do
    repo=${ref%%:*}
    for child in $(curl -s -H "$accept" "$S/v2/$repo/manifests/${ref#*:}" | grep -o 'sha256:[0-9a-f]\{64\}'); do
        [[ $(manifest_digest "$D" "$repo" "$child") == "$child" ]] || missing=$((missing + 1))
    done
done
is "$missing" 0 "every child manifest of the indexes and manifest lists is on the target by digest"

is "$(tag_list "$D" many | wc -l)" 150 "all 150 tags of the many-tag repository are listed on the target"
is "$(tag_list "$D" team/a/b/app)" "$(tag_list "$S" team/a/b/app)" "unusual tag names survive"

replica_run --from "$S" --to "$D" --repo '**'
is "$RC" 0 "the second run succeeds"
like "$OUT" "tags: 0 pushed, 159 up to date, 0 kept; blobs: 0 copied \(0 B\), 0 mounted" \
    "the second run copies nothing"

replica_run --from "$S" --to "$D" --repo 'team/**' --dest-namespace mirror --flatten 2 --tag 'v*'
is "$RC" 0 "a run with a namespace, flattening and a tag filter succeeds"
is "$(manifest_digest "$D" mirror/b/app v1__x)" "$(manifest_digest "$S" team/a/b/app v1__x)" \
    "team/a/b/app:v1__x lands at mirror/b/app with --flatten 2"
is "$(tag_list "$D" mirror/b/app | wc -l)" 2 "only the tags matching v* are copied"

replica_run --from "$S" --to "$D" --repo 'team/**' --dest-namespace mirror --flatten 4
is "$RC" 1 "a flattening level deeper than the path fails"
like "$OUT" "fewer than the flattening level 4" "with a clear error"

# --- eight tags of one index, copied at once -----------------------------------------------------
shared=$(seed "$S" shared/multi v1 oci-index 2 4096 | sed -n 's|^shared/multi:v1 ||p')
index=$(curl -s -H 'Accept: application/vnd.oci.image.index.v1+json' "$S/v2/shared/multi/manifests/v1")
for t in a b c d e f g; do
    curl -s -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' --data-binary "$index" \
        "$S/v2/shared/multi/manifests/$t"
done
results="" digests=""
for k in $(seq 1 20); do # into a fresh repository each time, where the children are new
    replica_run --from "$S" --to "$D" --repo shared/multi --dest-namespace fresh$k
    results+="$RC"
    for t in v1 a g; do digests+=" $(manifest_digest "$D" "fresh$k/shared/multi" "$t")"; done
done
is "$results" "$(printf "0%.0s" $(seq 1 20))" "eight tags of one index are copied at once into a new repository, 20 times over"
is "$(tr ' ' '\n' <<<"$digests" | sed '/^$/d' | sort -u)" "$shared" "and every tag verifies by digest"

done_testing
