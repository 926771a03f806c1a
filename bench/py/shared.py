# shared: multiprocessing's shared state beside concur's: a Value('q') with
# `with v.get_lock(): v.value += 1` from two processes, set+get pairs on a
# Manager().dict(), a read-modify-write of one key of a Manager dict under a
# Manager Lock from two processes, a 10^6-element Array('q', lock=False)
# summed by two processes (`sum(arr[lo:hi])`), and the parent alone summing
# `arr[:]`.  Fork start method.
# Prints: M adds/s, M pairs/s, k updates/s, M elements/s, M elements/s.
import multiprocessing
import os
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)


def count(n, least):
    return max(least, int(n * scale + 0.5))


N_ADD = count(100000, 1000)    # per process
N_SET = count(5000, 100)       # a manager's round trips are slow: fewer ops
N_UPD = count(1000, 50)        # per process
N_ARR = count(1000000, 1000)
REPS = 5                       # array sums: best of


# Two processes run body(i, *args) (i = 0, 1) once both are up: the clock
# runs from the "go" to the second result, so forking is not counted.
def child(body, i, ready, go, results, *args):
    ready.put(True)
    go.wait()
    results.put(body(i, *args))


def race(ctx, body, *args):
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=child, args=(body, i, ready, go, results) + args)
          for i in range(2)]
    for p in ps:
        p.start()
    ready.get()
    ready.get()
    t0 = time.perf_counter()
    go.set()
    r = results.get() + results.get()
    dt = time.perf_counter() - t0
    for p in ps:
        p.join()
    return dt, r


def check(what, got, want):
    if got != want:
        raise SystemExit("%s: total %r, expected %r" % (what, got, want))


def adds(_, v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    return 0


def updates(_, d, lock, n):
    for _ in range(n):
        with lock:
            d["k"] = d.get("k", 0) + 1
    return 0


def sum_half(i, arr, n, h):
    lo, hi = (0, h) if i == 0 else (h, n)
    return sum(arr[lo:hi])


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    out = []

    # value-add-proc
    v = ctx.Value("q", 0)
    race(ctx, adds, v, N_ADD // 10)
    v.value = 0
    dt, _ = race(ctx, adds, v, N_ADD)
    check("value-add-proc", v.value, 2 * N_ADD)
    out.append(2 * N_ADD / dt / 1e6)

    m = ctx.Manager()

    # dict-setget
    d = m.dict()
    keys = ["key%d" % i for i in range(1000)]

    def pairs(n):
        for i in range(n):
            k = keys[i % 1000]
            d[k] = "value"
            d[k]

    pairs(N_SET // 10)
    t0 = time.perf_counter()
    pairs(N_SET)
    dt = time.perf_counter() - t0
    out.append(N_SET / dt / 1e6)

    # dict-update-proc
    d, lock = m.dict(), m.Lock()
    race(ctx, updates, d, lock, N_UPD // 10)
    del d["k"]
    dt, _ = race(ctx, updates, d, lock, N_UPD)
    check("dict-update-proc", d["k"], 2 * N_UPD)
    out.append(2 * N_UPD / dt / 1e3)
    m.shutdown()

    # array-sum-proc, array-sum-totable
    a = ctx.Array("q", N_ARR, lock=False)
    a[:] = range(1, N_ARR + 1)
    want = N_ARR * (N_ARR + 1) // 2
    best = float("inf")
    for _ in range(REPS):
        dt, s = race(ctx, sum_half, a, N_ARR, N_ARR // 2)
        check("array-sum-proc", s, want)
        best = min(best, dt)
    out.append(N_ARR / best / 1e6)

    best = float("inf")
    for _ in range(REPS):
        t0 = time.perf_counter()
        s = sum(a[:])
        dt = time.perf_counter() - t0
        check("array-sum-totable", s, want)
        best = min(best, dt)
    out.append(N_ARR / best / 1e6)

    print(" ".join("%.6g" % x for x in out))
