#!/usr/bin/env bash
# replica serve against clients that misbehave (raw sockets, tests/rawhttp.py):
# a request without a token is refused before its body is read, so such
# clients cannot pin memory; slow heads and slow bodies are cut off at their
# deadlines; one address cannot take more than its share of connections; and
# with the file descriptors used up the daemon neither spins nor floods its
# log, and answers again once the clients leave.
set -euo pipefail
source "$(dirname "$0")/../lib/serve.sh"
RAW="python3 $ROOT/tests/rawhttp.py"

# val KEY LINE: the value of KEY=VALUE in LINE.
val() {
    sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

serve_start limits --header-timeout 2 --body-timeout 2
port=${API#http://127.0.0.1:}
port=${port%%/*}

# --- auth before the body ---------------------------------------------------
out=$($RAW early "$port" 2000000)
is "$(val status "$out")" 401 "a POST without a token is answered 401 while only its headers were sent"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
     --data-binary @<(head -c 2000000 /dev/zero | tr '\0' ' ') "$API/registries")
is "$st" 400 "with the token, a body over --max-body reaches the handler (400, not read)"
out=$($RAW bodies "$port" "$SERVE_PID" 24 4194304)
before=$(val before "$out") during=$(val during "$out") after=$(val after "$out")
echo "# RSS with 24 unauthenticated 4 MiB bodies (kB): $out"
ok $((during - before < 16384 ? 0 : 1)) "24 unauthenticated 4 MiB bodies leave memory flat ($before -> $during kB)"
ok $((after - before < 16384 ? 0 : 1)) "... and after they close ($after kB)"

# --- deadlines ----------------------------------------------------------------
out=$($RAW trickle "$port" head 8)
is "$(val closed "$out")" 1 "a head trickled a byte every 0.25 s is cut off"
ok "$(awk -v s="$(val secs "$out")" 'BEGIN { print !(s >= 1.5 && s < 5) }')" "... at the 2 s header deadline ($(val secs "$out") s)"
out=$($RAW trickle "$port" body 8 "$TOKEN")
is "$(val closed "$out")" 1 "a body trickled a byte every 0.25 s is cut off"
ok "$(awk -v s="$(val secs "$out")" 'BEGIN { print !(s >= 1.5 && s < 5) }')" "... at the 2 s body deadline ($(val secs "$out") s)"
is "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" 200 "the daemon still answers"
serve_stop

# --- connection caps ------------------------------------------------------------
serve_start caps --max-per-address 4
port=${API#http://127.0.0.1:}
port=${port%%/*}
out=$($RAW cap "$port" 4)
is "$(val refused "$out")" 503 "a fifth connection from one address is refused with 503"
is "$(val held "$out")" 200 "... while the four it has are served"
is "$(val after "$out")" 200 "once they close, the address is served again"
serve_stop

# --- out of file descriptors --------------------------------------------------
limited=$E2E_WORK/replica-nofile
printf '#!/usr/bin/env bash\nulimit -n 64 || exit 1\nexec %q "$@"\n' "$REPLICA" >"$limited"
chmod +x "$limited"
REPLICA=$limited serve_start fds
port=${API#http://127.0.0.1:}
port=${port%%/*}
is "$(awk '/Max open files/ { print $4 }' "/proc/$SERVE_PID/limits")" 64 "the daemon runs with 64 descriptors"
out=$($RAW hold "$port" "$SERVE_PID" 100 3)
echo "# with the descriptors used up: $out"
ok $(($(val held "$out") >= 64 ? 0 : 1)) "100 clients hold half-sent requests ($(val held "$out") connected)"
ok $(($(val cpu_ms "$out") < 500 ? 0 : 1)) "meanwhile the daemon does not spin ($(val cpu_ms "$out") ms CPU in 3 s)"
n=$(grep -c "accept" "$SERVE_LOG" || true)
ok $((n >= 1 && n <= 3 ? 0 : 1)) "the accept error is logged, rate-limited ($n lines)"
st=000
for _ in $(seq 1 200); do
    st=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$API/health" || true)
    [[ $st == 200 ]] && break
    sleep 0.05
done
is "$st" 200 "once the clients left, /api/v1/health answers again"
serve_stop

done_testing
