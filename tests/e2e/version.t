#!/usr/bin/env bash
# replica version: its own version, then each library's as the library
# reports it, checked against what the system says of the same library (its
# command-line tool, pkg-config or dpkg).
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"

out=$("$REPLICA" version)
like "$(head -n 1 <<<"$out")" '^replica [0-9]+\.[0-9]+\.[0-9]+' "the first line is replica's version"
is "$("$REPLICA" --version)" "$out" "--version prints the same"
curl_lib=$(curl --version | head -n 1 | sed -n 's/.* libcurl\/\([^ ]*\).*/\1/p')
like "$out" "  libcurl $curl_lib \\(OpenSSL/" "libcurl, as curl(1) reports it, with its TLS library"
like "$out" "  libevent $(pkg-config --modversion libevent)" "libevent"
like "$out" "  $(lua5.4 -v | awk '{ print $1, $2 }')" "Lua"
like "$out" "  lua-cjson $(dpkg-query -W -f='${Version}' lua-cjson | sed 's/[+-].*//')" "lua-cjson"
like "$out" "  SQLite $(sqlite3 --version | awk '{ print $1 }')" "SQLite"
like "$out" "  $(openssl version | awk '{ print $1, $2 }')" "OpenSSL"
like "$out" "  http-parser $(dpkg-query -W -f='${Version}' libhttp-parser2.9 | sed 's/-.*//')" "http-parser"
like "$out" '  libedit [0-9]+\.[0-9]+' "libedit"

done_testing
