# lock: uncontended acquire + release of one threading.Lock, in a loop.
# Prints million pairs per second.
import os
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1000, int(3000000 * scale + 0.5))

lock = threading.Lock()


def loop(n):
    for _ in range(n):
        lock.acquire()
        lock.release()


loop(N // 10)
t0 = time.perf_counter()
loop(N)
dt = time.perf_counter() - t0
print("%.6g" % (N / dt / 1e6))
