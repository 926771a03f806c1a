# futures: concurrent.futures submit + result round trips, the same workloads
# as futures.lua. Prints two figures, µs per round trip (`ex.submit(trivial,
# i)` then `f.result()`, one at a time, N after N/10 warm-up), the median of
# REPS batches:
#   1. on ThreadPoolExecutor(2);
#   2. on ProcessPoolExecutor(2) with the fork start method.
# N is 4x smaller than in the Lua script: the metric is a time per round trip.
import concurrent.futures
import multiprocessing
import os
import statistics
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(50, int(5000 * scale + 0.5))
REPS = 5


def trivial(x):
    return x


def round_trip_us(ex):
    for i in range(N // 10):
        assert ex.submit(trivial, i).result() == i
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for i in range(N):
            if ex.submit(trivial, i).result() != i:
                raise RuntimeError("wrong result")
        times.append((time.perf_counter() - t0) / N * 1e6)
    return statistics.median(times)


if __name__ == "__main__":
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        thr = round_trip_us(ex)
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        proc = round_trip_us(ex)
    print("%.6g %.6g" % (thr, proc))
