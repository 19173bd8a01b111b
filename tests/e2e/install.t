#!/usr/bin/env bash
# `make install` as a packager or an operator uses it: it puts the binary,
# the scripts, the console, the docs and the systemd unit under
# DESTDIR/PREFIX, and the installed binary finds its scripts and console
# relative to itself: moved elsewhere, run from another directory with no
# REPLICA_SCRIPTS or REPLICA_CONSOLE, it replicates between two real
# registries with the installed scripts and serves the installed console.
# The unit passes systemd-analyze verify (skipped without systemd-analyze).
# make uninstall removes every file it installed.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"

[[ -f $ROOT/build/web/index.html ]] || { echo "1..0 # SKIP the console is not built (make web)"; exit 0; }

# install DESTDIR PREFIX: `make install` of the binary under test, built
# already (-o: nothing is rebuilt, whatever the timestamps say).
BUILD=$(cd "$(dirname "$REPLICA")" && pwd)
install_to() {
    make --no-print-directory -s -C "$ROOT" install DESTDIR="$1" PREFIX="$2" BUILD="$BUILD" \
        -o "$BUILD/replica" -o build/web/index.html
}

DEST=$E2E_WORK/dest
install_to "$DEST" /usr/local >"$E2E_WORK/install.out" 2>&1 && rc=0 || rc=$?
ok "$rc" "make install DESTDIR=... PREFIX=/usr/local succeeds"
P=$DEST/usr/local
for f in bin/replica share/replica/scripts/lib/replicate.lua share/replica/scripts/templates/distribution.lua \
    share/replica/web/index.html share/replica/web/assets/app.js share/doc/replica/README.md \
    share/doc/replica/LICENSE share/doc/replica/architecture.md share/doc/replica/install.md \
    share/doc/replica/openapi.yaml lib/systemd/system/replica.service; do
    if [[ -f $P/$f ]]; then ok 0 "it installs $f"; else ok 1 "it installs $f"; fi
done
is "$(stat -c %a "$P/bin/replica")" 755 "the binary is mode 755"
is "$(find "$P/share" -type f ! -perm -444 | wc -l)" 0 "every installed data file is readable by all"
if cmp -s "$BUILD/replica" "$P/bin/replica"; then same=yes; else same=no; fi
is "$same" yes "the installed binary is the one built"

# Moved away from DESTDIR: only its own prefix can lead it to its files.
# A template and a console marker that exist only in the installed copy
# show which files it uses.
MOVED=$E2E_WORK/elsewhere/opt/replica
mkdir -p "$(dirname "$MOVED")" "$E2E_WORK/cwd"
mv "$P" "$MOVED"
INST=$MOVED/bin/replica
cp "$MOVED/share/replica/scripts/templates/distribution.lua" \
   "$MOVED/share/replica/scripts/templates/installed_only.lua"
echo '<!-- the installed console -->' >>"$MOVED/share/replica/web/index.html"
cd "$E2E_WORK/cwd"
unset REPLICA_SCRIPTS REPLICA_CONSOLE

out=$("$INST" check 2>&1) && rc=0 || rc=$?
is "$rc" 0 "the moved binary's replica check passes (its scripts found)"
like "$out" ", 2 template\(s\)" "and it checked the installed scripts (the tree has one template, they have two)"

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
seed "$REG_SRC_URL" inst/app v1,v2 oci 2 2048 first >/dev/null
set +e
OUT=$("$INST" run --from "$REG_SRC_URL" --to "$REG_DST_URL" --repo inst/app --template installed_only 2>&1)
RC=$?
set -e
is "$RC" 0 "the moved binary's replica run succeeds with an installed-only template"
is "$(tag_list "$REG_DST_URL" inst/app | tr '\n' ' ')" "v1 v2 " "and the target has both tags"

REPLICA=$INST serve_start installed
BASE=${API%/api/v1}
like "$(cat "$SERVE_OUT")" "console at $BASE/" "the moved binary's replica serve finds a console"
page=$(curl -s "$BASE/")
like "$page" '<!-- the installed console -->' "GET / is the installed console's index.html"
like "$page" '<script type="module" src="/assets/app.js">' "the console's page, with its bundle"
is "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/assets/app.js")" 200 "and its bundle is served"
serve_stop
cd "$ROOT"

# The unit: ExecStart names PREFIX's binary; systemd-analyze verify it,
# with ExecStart pointed at where the binary now is (verify checks it is
# executable).
UNIT=$MOVED/lib/systemd/system/replica.service
like "$(grep '^ExecStart=' "$UNIT")" '^ExecStart=/usr/local/bin/replica serve --db /var/lib/replica/replica\.db' \
    "the unit runs PREFIX/bin/replica serve on /var/lib/replica/replica.db"
for d in DynamicUser=yes StateDirectory=replica ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    NoNewPrivileges=yes 'CapabilityBoundingSet=' MemoryDenyWriteExecute=yes LockPersonality=yes \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' SystemCallFilter=@system-service; do
    like "$(grep -x -- "$d" "$UNIT")" . "the unit has $d"
done
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$E2E_WORK/unit"
    sed "s|/usr/local/bin/replica|$INST|" "$UNIT" >"$E2E_WORK/unit/replica.service"
    out=$(systemd-analyze verify "$E2E_WORK/unit/replica.service" 2>&1) && rc=0 || rc=$?
    is "$rc:$out" "0:" "systemd-analyze verify finds nothing to say about the unit"
    out=$(systemd-analyze security --offline=yes --threshold=20 "$E2E_WORK/unit/replica.service" 2>&1) && rc=0 || rc=$?
    like "$out" 'Overall exposure level for replica.service: [0-1]\.[0-9]' "systemd-analyze security rates its exposure below 2 of 10"
    is "$rc" 0 "within the threshold"
else
    ok 0 "# SKIP systemd-analyze is not installed"
fi

# Another prefix: the unit follows it, and the binary still finds its files.
DEST2=$E2E_WORK/dest2
install_to "$DEST2" /opt/replica >>"$E2E_WORK/install.out" 2>&1
is "$(grep '^ExecStart=' "$DEST2/opt/replica/lib/systemd/system/replica.service" | cut -d' ' -f1)" \
    "ExecStart=/opt/replica/bin/replica" "with PREFIX=/opt/replica the unit runs /opt/replica/bin/replica"
(cd / && "$DEST2/opt/replica/bin/replica" check >/dev/null 2>&1) && rc=0 || rc=$?
is "$rc" 0 "and that binary's replica check finds its scripts"
make --no-print-directory -s -C "$ROOT" uninstall DESTDIR="$DEST2" PREFIX=/opt/replica
is "$(find "$DEST2" ! -type d | wc -l)" 0 "make uninstall removes every file it installed"

done_testing
