# spawn: create, start and join one empty threading.Thread, one after another.
# Prints microseconds per thread.
import os
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1, int(5000 * scale + 0.5))
WARM = max(1, int(500 * scale + 0.5))


def f():
    pass


def spawn_loop(n):
    for _ in range(n):
        t = threading.Thread(target=f)
        t.start()
        t.join()


spawn_loop(WARM)
t0 = time.perf_counter()
spawn_loop(N)
dt = time.perf_counter() - t0
print("%.6g" % (dt / N * 1e6))
