# cpu2proc: the pure CPU loop of cpu2 (sum of i*i % 7 over 1..M) run in one
# multiprocessing.Process (start method "fork"), then split in two halves over
# two processes started together. The children do the loop and exit; the
# parent starts and joins them. Prints the speedup t(1 proc) / t(2 procs);
# each time is the best of REPS. M is 10x smaller than in the Lua script, as
# in cpu2.py: the metric is a ratio of times.
import multiprocessing
import os
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
M = max(1000, int(2000000 * scale + 0.5))
REPS = 5


def work(lo, hi):
    s = 0
    for i in range(lo, hi + 1):
        s = s + i * i % 7
    if s < 0:  # uses s; never true
        os._exit(2)


def run(ranges):
    t0 = time.perf_counter()
    ps = [multiprocessing.Process(target=work, args=r) for r in ranges]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("exit code %r" % p.exitcode)
    return time.perf_counter() - t0


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    half = M // 2
    best1 = best2 = float("inf")
    for _ in range(REPS):
        best1 = min(best1, run([(1, M)]))
        best2 = min(best2, run([(1, half), (half + 1, M)]))
    print("%.6g" % (best1 / best2))
