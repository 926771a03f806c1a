# tables: a list of N small dicts {"id": i, "name": "x"} handed to a
# threading.Thread as its argument and handed back (through a result slot).
#   to:   from just before t.start() in the creator to the target's first line
#   back: from just before the target returns to just after join() + reading
#         the result in the creator
# Prints "to back" in millions of tables per second, each the median of REPS.
# Python threads share the list by reference: this is thread start/join cost.
import os
import statistics
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1, int(100000 * scale + 0.5))
REPS = 5

lst = [{"id": i, "name": "x"} for i in range(1, N + 1)]


def target(l, out):
    t_in = time.perf_counter()
    n = len(l)
    t_out = time.perf_counter()
    out.append((l, t_in, t_out, n))


to, back = [], []
for r in range(REPS + 1):  # the first repetition is a warm-up
    out = []
    t = threading.Thread(target=target, args=(lst, out))
    t0 = time.perf_counter()
    t.start()
    t.join()
    l, t_in, t_out, n = out[0]
    t1 = time.perf_counter()
    if n != N or len(l) != N or l[-1]["id"] != N or l[0]["name"] != "x":
        raise RuntimeError("bad list")
    if r > 0:
        to.append(N / (t_in - t0) / 1e6)
        back.append(N / (t1 - t_out) / 1e6)
print("%.6g %.6g" % (statistics.median(to), statistics.median(back)))
