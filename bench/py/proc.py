# proc: create, start and join one empty multiprocessing.Process (start
# method "fork"), one after another. Prints microseconds per process.
import multiprocessing
import os
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1, int(300 * scale + 0.5))
WARM = max(1, int(30 * scale + 0.5))


def f():
    pass


def proc_loop(n):
    for _ in range(n):
        p = multiprocessing.Process(target=f)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("exit code %r" % p.exitcode)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    proc_loop(WARM)
    t0 = time.perf_counter()
    proc_loop(N)
    dt = time.perf_counter() - t0
    print("%.6g" % (dt / N * 1e6))
