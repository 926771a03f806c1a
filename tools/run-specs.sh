#!/bin/sh
# Runs every spec with busted on Lua 5.4 and ends with "N passed, M failed".
# A crash or sanitizer report after busted's own summary still fails the run.
# usage: run-specs.sh LUA [busted args...]   (SPECS="spec/a_spec.lua ...": only those)
lua=${1:-lua5.4}; shift
# Specs that start a Lua subprocess run $CONCUR_LUA: the same interpreter.
CONCUR_LUA=${CONCUR_LUA:-$lua}; export CONCUR_LUA
out=$(mktemp); rcf=$(mktemp)
# busted itself starts under Debian's default lua (5.1) and re-executes with
# --lua; running its script with Lua 5.4 directly skips that hop, which also
# keeps sanitizer runtimes (LD_PRELOAD) out of the 5.1 interpreter.
busted_bin=$(command -v busted) || { echo "busted not found"; echo "0 passed, 1 failed"; exit 1; }
{ "$lua" "$busted_bin" -o utfTerminal "$@" ${SPECS:-spec} 2>&1; echo $? > "$rcf"; } | tee "$out"
rc=$(cat "$rcf")
summary=$(grep -a -E '^[0-9]+ success' "$out" | tail -n 1)
rm -f "$out" "$rcf"
if [ -z "$summary" ]; then
  echo "0 passed, 1 failed (busted printed no summary; exit status $rc)"
  exit 1
fi
set -- $(echo "$summary" | sed -E 's/^([0-9]+) success[a-z]* \/ ([0-9]+) failure[a-z]* \/ ([0-9]+) error[a-z]* \/ ([0-9]+) pending.*/\1 \2 \3 \4/')
passed=$1; failed=$(( $2 + $3 ))
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1
  echo "busted exited with status $rc after its summary (a crash or a sanitizer report)"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
