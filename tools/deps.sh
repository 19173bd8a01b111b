#!/bin/sh
# tools/deps.sh - installs the Debian packages replica builds, tests and
# benchmarks with. Quiet and quick when everything is present.
#   tools/deps.sh build   libraries and tools for `make`
#   tools/deps.sh test    plus the servers and tools the tests start
#   tools/deps.sh bench   plus the peers the benchmarks compare against
#   tools/deps.sh fuzz    plus clang and its libFuzzer runtime, for `make fuzz`
#   tools/deps.sh node    Node.js and npm, unless the machine has them
set -eu

build="gcc make pkg-config liblua5.4-dev lua-cjson-dev libcurl4-openssl-dev libevent-dev
libsqlite3-dev libssl-dev libhttp-parser-dev libedit-dev"
test="$build perl curl openssl nginx-light libnginx-mod-http-echo iproute2 valgrind procps
docker-registry apache2-utils python3 python3-yaml jq sqlite3 lua5.4 chromium fonts-dejavu-core tmux
mount e2fsprogs systemd strace"
bench="$test skopeo wrk time"
fuzz="$build clang libclang-rt-14-dev"

case "${1:-build}" in
node)
    # The console's build and browser tests need Node.js and npm; a machine
    # that has them from elsewhere (NodeSource) keeps its own.
    command -v node >/dev/null && command -v npm >/dev/null && exit 0
    want="nodejs npm" ;;
build) want=$build ;;
test) want=$test ;;
bench) want=$bench ;;
fuzz) want=$fuzz ;;
*) echo "usage: $0 build|test|bench|fuzz|node" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
    *" installed") ;;
    *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing (run as root, or install them)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
