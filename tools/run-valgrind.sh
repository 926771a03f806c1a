#!/bin/sh
# valgrind memcheck over every example, and the fixtures written for it
# (spec/fixtures/valgrind_*.lua): no definitely or indirectly lost block and
# no memory error.  usage: run-valgrind.sh LUA
lua=${1:-lua5.4}
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind"; exit 1; }
# memcheck shadows every mapped byte: a small shared arena keeps it quick.
CONCUR_ARENA_MB=${CONCUR_ARENA_MB:-256}; export CONCUR_ARENA_MB
status=0
failed=""
for f in examples/*.lua spec/fixtures/valgrind_*.lua; do
  printf '%s: ' "$f"
  log=$(mktemp)
  # Forked children report into the same log, with their own exit status:
  # judge the log, not only the parent's status.
  if valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
      --show-leak-kinds=definite,indirect --error-exitcode=99 \
      "$lua" "$f" >/dev/null 2>"$log" &&
     ! grep -qE "definitely lost|indirectly lost|Invalid (read|write|free)|uninitialised|Mismatched|Syscall param" "$log"; then
    echo "clean"
  else
    # valgrind's own notes ("--PID-- WARNING: unhandled syscall", from
    # pidfd_open on older valgrinds) are noise here: left out.
    echo "FAILED"; grep -v '^--[0-9]*-- ' "$log"; status=1
    failed="$failed $f"
  fi
  rm -f "$log"
done
[ $status -eq 0 ] || echo "valgrind: FAILED:$failed"
exit $status
