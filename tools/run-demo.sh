#!/bin/sh
# Runs every tutorial example, each under a heading, and fails if one fails.
lua=${1:-lua5.4}
status=0
for f in examples/*.lua; do
  echo "== $f"
  "$lua" "$f" || { echo "!! $f failed"; status=1; }
  echo
done
echo "== examples/embed/host examples/embed/demo.lua"
examples/embed/host examples/embed/demo.lua || { echo "!! embed demo failed"; status=1; }
exit $status
