#!/bin/sh
# fuzz/run.sh BIN - runs a fuzzer (`make fuzz`: the transfer, the pipe) for $FUZZ_SECONDS
# seconds, one process and one job, and ends with a one-line verdict.  New
# inputs go to build/fuzz/corpus (the seeds in fuzz/corpus are only read);
# a crash leaves its input in build/fuzz/ and makes the exit status 1.
# The pipe target (fuzz_pipe) has no seeds, dictionary or fixed crashes of
# its own: its corpus grows in build/fuzz/pipe-corpus.
bin=$1
secs=${FUZZ_SECONDS:-60}
dir=$(dirname "$bin")   # build/fuzz, or build/fuzz-RUNTIME
name=$(basename "$bin")
case $name in
  fuzz_pipe) log=$dir/pipe.log; corpus="$dir/pipe-corpus"; extra= ;;
  *) log=$dir/fuzz.log; corpus="$dir/corpus fuzz/corpus"; extra=-dict=fuzz/transfer.dict ;;
esac
mkdir -p "$dir/corpus" "$dir/pipe-corpus"
echo "fuzz: $secs s of $bin, 1 job (libFuzzer's output: $log)${FUZZ_TRANSFER_SKIP:+, skipping: $FUZZ_TRANSFER_SKIP}"
if [ "$name" != fuzz_pipe ]; then
  # First the crashes found before (fuzz/crashes), replayed with no skip at
  # all: each must now run clean.  lua-*: liblua's own bugs, left out.
  replay=$(ls fuzz/crashes/* | grep -v -e '/README.md$' -e '/lua-[^/]*$')
  # shellcheck disable=SC2086
  if ! FUZZ_TRANSFER_SKIP= "$bin" -timeout=10 -rss_limit_mb=2048 $replay >"$dir/replay.log" 2>&1; then
    tail -n 40 "$dir/replay.log"
    echo "fuzz: CRASH replaying a fixed crash of fuzz/crashes (log: $dir/replay.log)"
    exit 1
  fi
  echo "fuzz: $(echo "$replay" | wc -w) fixed crashes of fuzz/crashes replayed, no skip: clean"
fi
export FUZZ_TRANSFER_SKIP
# shellcheck disable=SC2086
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  $extra -artifact_prefix="$dir/$name-" $FUZZ_ARGS $corpus \
  >"$log" 2>&1
rc=$?
done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)
cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
if [ "$rc" = 0 ] && [ -n "$done_line" ]; then
  runs=$(echo "$done_line" | awk '{print $2}')
  s=$(echo "$done_line" | awk '{print $5}')
  echo "fuzz: $runs runs in $s s, no crash ($cov, ${eps:-?} exec/s)"
  exit 0
fi
runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
why=$(grep -m 1 -E '^fuzz_(transfer|pipe): |==[0-9]+==ERROR|^ERROR: libFuzzer|^SUMMARY: ' "$log")
unit=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
echo "---- end of $log"
tail -n 40 "$log"
echo "----"
if [ -n "$runs" ]; then when="after $runs runs"; else when="while running the corpus"; fi
echo "fuzz: CRASH $when (exit $rc): ${why:-see $log}"
[ -n "$unit" ] && echo "fuzz: reproducer $unit; rerun with: $bin $unit"
exit 1
