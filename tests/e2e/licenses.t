#!/usr/bin/env bash
# The licence, and that docs/licenses.md tells the truth: LICENSE is the
# Apache License 2.0; every Debian package the binary links (by ldd) is in
# the table, with no GPL-only licence; the direct dependencies' copyright
# files still name the licence the table gives; every npm package the
# console bundles is in the table with a permissive licence. (`make check`
# leaves it out: a sanitized binary also links the sanitizers' runtimes.)
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
DOC=$ROOT/docs/licenses.md

cmp -s "$ROOT/LICENSE" /usr/share/common-licenses/Apache-2.0
ok $? "LICENSE is the Apache License 2.0 (Debian's copy of the text)"

# row PACKAGE: the licence cell of PACKAGE's row in the tables, or nothing.
row() { awk -F'|' -v p="\`$1\`" '$2 ~ "^ *" p " *$" { print $NF == "" ? $(NF-1) : $NF }' "$DOC" | sed 's/^ *//; s/ *$//' | head -n 1; }

# the packages of the shared objects the binary loads (usrmerge: dpkg knows
# some by their /lib path, others by /usr/lib)
mapfile -t pkgs < <(ldd "$REPLICA" | awk '/=>/ { print $3 }' | while read -r so; do
    dpkg -S "$so" 2>/dev/null || dpkg -S "$(readlink -f "$so")" 2>/dev/null || echo "UNKNOWN($so):"
done | cut -d: -f1 | sort -u)
ok "$((${#pkgs[@]} < 8))" "ldd finds the binary's libraries (${#pkgs[@]} packages)"
missing=() gpl_only=()
for p in "${pkgs[@]}"; do
    lic=$(row "$p")
    [[ -n $lic ]] || { missing+=("$p"); continue; }
    lic=${lic%% (*} # the licence, not the note after it
    # GPL alone (not "LGPL", not "or GPL" beside another licence) is refused
    if [[ $lic =~ (^|[^L])GPL && ! $lic =~ [[:space:]]or[[:space:]] && ! $lic =~ LGPL ]]; then gpl_only+=("$p: $lic"); fi
done
is "${missing[*]-}" "" "every linked package is in docs/licenses.md"
is "${gpl_only[*]-}" "" "none of them is GPL-only"

# main_licence PACKAGE: the License of the "Files: *" stanza of its copyright file
main_licence() {
    awk 'BEGIN { RS = ""; FS = "\n" } {
        star = 0; lic = ""
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^Files:[ \t]*\*[ \t]*$/) star = 1
            if ($i ~ /^License:/ && lic == "") { lic = $i; sub(/^License:[ \t]*/, "", lic) }
        }
        if (star && lic != "") { print lic; exit }
    }' "/usr/share/doc/$1/copyright"
}
for p in libcurl4 libevent-2.1-7 liblua5.4-0 lua-cjson libsqlite3-0 libssl3 libhttp-parser2.9; do
    want=$(row "$p" | awk '{ print $1 }')
    is "$(main_licence "$p")" "$want" "$p's copyright file still gives $want"
done
like "$(grep -m 1 '^License:' /usr/share/doc/libedit2/copyright)" 'BSD-3-clause' "libedit2's copyright file gives BSD-3-clause"

bad=()
while read -r name license; do
    [[ $(row "$name") == "$license" ]] || bad+=("$name $license (table: $(row "$name"))")
    [[ $license =~ ^(MIT|ISC|BSD-2-Clause|BSD-3-Clause|Apache-2\.0|0BSD)$ ]] || bad+=("$name $license (not permissive)")
done < <(jq -r '.packages | to_entries[] | select(.key != "" and (.value.dev // false) == false)
                | "\(.key | sub("^node_modules/"; "")) \(.value.license)"' "$ROOT/web/package-lock.json")
is "${bad[*]-}" "" "every npm package the console bundles is in the table, with its permissive licence"

done_testing
