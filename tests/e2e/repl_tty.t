#!/usr/bin/env bash
# replica repl on a terminal (tmux, a real pty) against real Distribution
# registries: Ctrl-C during a big blob returns to the prompt within a second
# and pushes no partial manifest; history survives a restart and Tab
# completes a stage name, Ctrl-R finds an earlier line.
set -euo pipefail
source "$(dirname "$0")/../lib/e2e.sh"
command -v tmux >/dev/null || { echo "1..0 # SKIP tmux is not installed"; exit 0; }
SOCK=$E2E_WORK/tmux.sock
trap 'tmux -S "$SOCK" kill-server 2>/dev/null || true; _e2e_cleanup' EXIT

registry_start src "$E2E_WORK/src"
registry_start dst "$E2E_WORK/dst"
S=$REG_SRC_URL D=$REG_DST_URL
seed "$S" lib/small v1 oci 1 1024 >/dev/null
head -c $((32 << 20)) /dev/urandom >"$E2E_WORK/big.bin"
push_big_image "$S" lib/big v1 "$E2E_WORK/big.bin" >/dev/null
export REPLICA_HISTORY=$E2E_WORK/history HOME=$E2E_WORK

# start ARGS...: the REPL in a fresh tmux session (100x40), its screen read
# with screen(); waits for the first prompt. The session before is killed
# only once the new one exists: tmux's server exits with its last session,
# and a new-session sent while it goes fails ("server exited unexpectedly").
N=0
start() {
    local old=$N
    N=$((N + 1))
    tmux -S "$SOCK" new-session -d -s "R$N" -x 100 -y 40 \
        "env REPLICA_HISTORY=$REPLICA_HISTORY HOME=$HOME TERM=xterm $REPLICA repl $*; echo REPL-EXIT-\$?; sleep 30"
    ((old == 0)) || tmux -S "$SOCK" kill-session -t "R$old" 2>/dev/null || true
    wait_screen 'repl [a-z_]+> $' 20
}
screen() { tmux -S "$SOCK" capture-pane -p -J -N -t "R$N" -S -200; }
keys() { tmux -S "$SOCK" send-keys -t "R$N" "$@"; }
type_line() { keys -l "$1"; keys Enter; }
# wait_screen REGEX [SECONDS]: polls the screen until its text matches.
wait_screen() {
    local end=$((SECONDS + ${2:-20}))
    until screen | grep -Eq "$1"; do
        ((SECONDS < end)) || { echo "# the screen never matched $1:" >&2; screen | sed 's/^/#   /' >&2; return 1; }
        sleep 0.05
    done
}

# --- 6. Ctrl-C during a big blob -------------------------------------------------------
start --from "$S" --to "$D" --repo lib/big --bandwidth 2M
type_line ':c'
wait_screen '\[stage\] push_prepare: succeeded' 30
# the push stage is moving the 32 MiB layer at 2 MiB/s: wait until 2 MiB landed
uploads=$REG_DST_STORAGE/docker/registry/v2/repositories/lib/big/_uploads end=$((SECONDS + 30))
until (($(cat "$uploads"/*/data 2>/dev/null | wc -c) > (2 << 20))); do
    ((SECONDS < end)) || { screen | sed 's/^/#   /' >&2; break; }
    sleep 0.05
done
t0=$(date +%s%N)
keys C-c
wait_screen '\[stage\] push: cancelled' 5
t1=$(date +%s%N)
wait_screen 'repl push> $' 5
ms=$(((t1 - t0) / 1000000))
ok "$((ms >= 1000))" "Ctrl-C during the blob stopped the stage in under a second ($ms ms)"
like "$(screen)" '\[interrupt\] stopping stage push' "the REPL says what it stops"
is "$(manifest_digest "$D" lib/big v1)" missing "no manifest was pushed for the interrupted tag"
type_line ':stages'
wait_screen '> 5  push +distribution/push +pending' 5
ok $? "the REPL kept running: :stages answers, with push ready to run again"
type_line ':quit'
wait_screen 'REPL-EXIT-0' 10
ok $? ":quit ends it with 0"

# --- 9. line editing: history and Tab ----------------------------------------------------
start --from "$S" --to "$D" --repo lib/small
type_line ':break push_post'
wait_screen 'breakpoint 1 before stage push_post' 5
keys -l ':result push_pr'
keys Tab
wait_screen 'repl pull_prepare> :result push_prepare ?$' 5
ok $? "Tab completes a stage name"
keys C-u
keys -l 'ctx.task.tags'
keys Enter
wait_screen '"v1"' 10
keys -l '1 + 41'
keys Enter
wait_screen '^42$' 5
type_line ':quit'
wait_screen 'REPL-EXIT-0' 10
# (libedit's format: a header line, then one line each, spaces as \040)
grep -Eq '^:break(\\040| )push_post$' "$REPLICA_HISTORY"
ok $? "the history file holds the lines typed"
is "$(stat -c %a "$REPLICA_HISTORY")" 600 "readable by its owner only"
start --from "$S" --to "$D" --repo lib/small
keys Up
wait_screen 'repl pull_prepare> :quit$' 5
ok $? "after a restart, Up brings back the last line of the previous session"
keys Up
wait_screen 'repl pull_prepare> 1 \+ 41$' 5
ok $? "and the ones before it"
keys C-u
keys C-r
keys -l 'brea'
wait_screen ':break push_post' 5
ok $? "Ctrl-R finds an earlier line"
# libedit's search ends at the first Enter and leaves the line to edit;
# readline's runs it: a second Enter is sent only when the first did not
keys Enter
wait_screen 'breakpoint 1 before stage push_post' 1 2>/dev/null || keys Enter
wait_screen 'breakpoint 1 before stage push_post' 5
ok $? "and Enter runs it"
type_line ':quit'
wait_screen 'REPL-EXIT-0' 10

# --- output above the prompt, debug_break(), Ctrl-C at the prompt and on a loop ------
R=$E2E_WORK/root
mkdir -p "$R/stages/t" "$R/templates"
printf 'return { stages = { { "tick", "t/tick" } } }\n' >"$R/templates/tick.lua"
printf 'return { stages = { { "spin", "t/spin" } } }\n' >"$R/templates/spin.lua"
cat >"$R/stages/t/tick.lua" <<'LUA'
return {
  run = function(ctx)
    local h = task.spawn(function()
      for i = 1, 400 do log.info("tick %d", i) time.sleep(0.02) end
    end)
    debug_break()
    local after = "past the break"
    h:cancel()
    return { after = after }
  end,
}
LUA
cat >"$R/stages/t/spin.lua" <<'LUA'
return { run = function(ctx) local n = 0 while true do n = n + 1 end end }
LUA
start --from "$S" --to "$D" --repo lib/small --scripts "$R" --template tick
type_line ':c'
wait_screen 'repl tick:7> $' 10
keys -l ':whe'
wait_screen 'tick 30$' 10
last=$(screen | grep -v '^$' | tail -n 1)
is "$last" "repl tick:7> :whe" "log lines printed while the prompt is up go above it, and the line being typed stays"
like "$(screen)" '\[paused\] tick: stages/t/tick.lua:7 \(step\)' "debug_break() paused at the next line"
keys -l 're'
keys Enter
wait_screen 'paused in stage 1/1: tick' 5
ok $? "the line typed between the log lines ran as :where"
keys -l 'garbage'
keys C-c
wait_screen '\^C$' 5
type_line '1 + 1'
wait_screen '^2$' 5
ok $? "Ctrl-C at the prompt dropped the line being typed (the next line ran alone)"
type_line ':c'
wait_screen '\[stage\] tick: succeeded' 10
ok $? "the stage goes on after the pause"
type_line ':quit'
wait_screen 'REPL-EXIT-0' 10

start --from "$S" --to "$D" --repo lib/small --scripts "$R" --template spin --cpu 60
type_line ':s'
wait_screen '^:s$|repl spin> :s$' 5
t0=$(date +%s%N)
keys C-c
wait_screen '\[stage\] spin: cancelled' 5
t1=$(date +%s%N)
ms=$(((t1 - t0) / 1000000))
ok "$((ms >= 1000))" "Ctrl-C stops a stage that loops without waiting, in under a second ($ms ms)"
type_line ':quit'
wait_screen 'REPL-EXIT-0' 10

done_testing
