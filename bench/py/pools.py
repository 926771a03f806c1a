# pools: multiprocessing.Pool and multiprocessing.pool.ThreadPool throughput,
# the same workloads as pools.lua (start method "fork"). Prints four figures:
#   1. Pool(2).map of N trivial tasks (default chunks), M tasks/s, best of REPS;
#   2. Pool(2).apply_async of K trivial tasks, then every get: k tasks/s;
#   3. ThreadPool(2): the same as 2;
#   4. a CPU-bound map over Pool(2) against Pool(1): the speedup. The range is
#      10x smaller than in the Lua script: the metric is a ratio of times.
import multiprocessing
import multiprocessing.pool
import os
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1000, int(100000 * scale + 0.5))
K = max(100, int(10000 * scale + 0.5))
CPU = max(1000, int(400000 * scale + 0.5))
REPS = 5


def trivial(x):
    return x


def best_of(f):
    return min(f() for _ in range(REPS))


def map_rate(pool):
    items = list(range(1, N + 1))

    def once():
        t0 = time.perf_counter()
        out = pool.map(trivial, items)
        t = time.perf_counter() - t0
        assert len(out) == N and out[-1] == N
        return t
    return N / best_of(once)


def apply_rate(pool):
    def once():
        t0 = time.perf_counter()
        rs = [pool.apply_async(trivial, (i,)) for i in range(1, K + 1)]
        for i, r in enumerate(rs, 1):
            assert r.get() == i
        return time.perf_counter() - t0
    return K / best_of(once)


def work(lo, hi):
    s = 0
    for i in range(lo, hi + 1):
        s = s + i * i % 7
    return s


SLICES = [(k * CPU // 8 + 1, (k + 1) * CPU // 8) for k in range(8)]


def cpu_time(pool):
    def once():
        t0 = time.perf_counter()
        pool.starmap(work, SLICES)
        return time.perf_counter() - t0
    return best_of(once)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    with multiprocessing.Pool(2) as pool:
        m = map_rate(pool)
        a = apply_rate(pool)
        cpu2 = cpu_time(pool)
    with multiprocessing.pool.ThreadPool(2) as tpool:
        ta = apply_rate(tpool)
    with multiprocessing.Pool(1) as one:
        cpu1 = cpu_time(one)
    print("%.6g %.6g %.6g %.6g" % (m / 1e6, a / 1e3, ta / 1e3, cpu1 / cpu2))
