# cpu2: a pure CPU loop (sum of i*i % 7 over 1..M) run in one threading.Thread,
# then split in two halves over two threads started together.
# Prints the speedup t(1 thread) / t(2 threads); each time is the best of REPS.
# M is smaller than in the Lua script (CPython is ~15x slower per iteration);
# the metric is a ratio of times, so only the shape of the work matters.
import os
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
M = max(1000, int(2000000 * scale + 0.5))
REPS = 3


def work(lo, hi, out, k):
    s = 0
    for i in range(lo, hi + 1):
        s = s + i * i % 7
    out[k] = s


def one():
    out = [0]
    t0 = time.perf_counter()
    t = threading.Thread(target=work, args=(1, M, out, 0))
    t.start()
    t.join()
    return time.perf_counter() - t0, out[0]


def two():
    half = M // 2
    out = [0, 0]
    t0 = time.perf_counter()
    a = threading.Thread(target=work, args=(1, half, out, 0))
    b = threading.Thread(target=work, args=(half + 1, M, out, 1))
    a.start()
    b.start()
    a.join()
    b.join()
    return time.perf_counter() - t0, out[0] + out[1]


best1 = best2 = float("inf")
for _ in range(REPS):
    d1, s1 = one()
    d2, s2 = two()
    assert s1 == s2, "sums differ"
    best1 = min(best1, d1)
    best2 = min(best2, d2)
print("%.6g" % (best1 / best2))
