# qkinds: one producer to one consumer of small integers through a
# queue.LifoQueue and a queue.PriorityQueue between threads, then between
# processes through the nearest multiprocessing has: those queues served by a
# manager process (multiprocessing has no LIFO or priority queue of its own).
# Prints: M items/s for thr-lifo thr-prio proc-lifo proc-prio.
import multiprocessing
import os
import queue
import threading
import time
from multiprocessing.managers import BaseManager

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1000, int(200000 * scale + 0.5))
NP = max(500, N // 20)   # a manager's round trips are slow: fewer items


class KindsManager(BaseManager):
    pass


KindsManager.register("LifoQueue", queue.LifoQueue)
KindsManager.register("PriorityQueue", queue.PriorityQueue)
KindsManager.register("Queue", queue.Queue)


def consume(q, n, done):
    for _ in range(n):
        q.get()
    done.put(True)


def stream(make_queue, make_done, make_runner, n):
    q, done = make_queue(), make_done()
    c = make_runner(target=consume, args=(q, n, done))
    c.start()
    t0 = time.perf_counter()
    for i in range(n):
        q.put(i)
    done.get()
    dt = time.perf_counter() - t0
    c.join()
    return n / dt / 1e6


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    stream(queue.PriorityQueue, queue.Queue, threading.Thread, N // 10)
    out = []
    for kind in (queue.LifoQueue, queue.PriorityQueue):
        out.append("%.6g" % stream(kind, queue.Queue, threading.Thread, N))
    m = KindsManager(ctx=ctx)
    m.start()
    for name in ("LifoQueue", "PriorityQueue"):
        out.append("%.6g" % stream(getattr(m, name), m.Queue, ctx.Process, NP))
    m.shutdown()
    print(" ".join(out))
