#!/bin/sh
# Runs every tutorial example, each under a heading, and fails if one fails.
lua=${1:-lua5.4}
status=0
for f in examples/*.lua; do
  echo "== $f"
  "$lua" "$f" || { echo "!! $f failed"; status=1; }
  echo
done
host=${CONCUR_HOST:-examples/embed/host}
echo "== $host examples/embed/demo.lua"
"$host" examples/embed/demo.lua || { echo "!! embed demo failed"; status=1; }
exit $status
