# queues: one producer to one consumer through a queue.Queue (threads) and a
# multiprocessing.Queue (processes, start method "fork"), for small integers,
# 1 KiB strings and small dicts; then a round trip through two queues.
# Prints: M items/s for thr-int thr-str thr-tab proc-int proc-str proc-tab,
# then µs per round trip for threads and processes.
import multiprocessing
import os
import queue
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1000, int(100000 * scale + 0.5))
R = max(100, int(5000 * scale + 0.5))

KIB = "x" * 1024
payloads = {
    "int": lambda i: i,
    "str": lambda i: KIB,
    "tab": lambda i: {"id": i, "name": "x"},
}


def consume(q, n, done):
    for _ in range(n):
        q.get()
    done.put(True)


def stream(make_queue, make_runner, kind, n):
    q, done = make_queue(), make_queue()
    make = payloads[kind]
    c = make_runner(target=consume, args=(q, n, done))
    c.start()
    t0 = time.perf_counter()
    for i in range(n):
        q.put(make(i))
    done.get()
    dt = time.perf_counter() - t0
    c.join()
    return n / dt / 1e6


def echo(a, b, n):
    for _ in range(n):
        b.put(a.get())


def round_trips(make_queue, make_runner, n):
    a, b = make_queue(), make_queue()
    other = make_runner(target=echo, args=(a, b, n))
    other.start()
    t0 = time.perf_counter()
    for i in range(n):
        a.put(i)
        b.get()
    dt = time.perf_counter() - t0
    other.join()
    return dt / n * 1e6


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    stream(queue.Queue, threading.Thread, "int", N // 10)
    out = []
    for mq, mr in ((queue.Queue, threading.Thread), (ctx.Queue, ctx.Process)):
        for kind in ("int", "str", "tab"):
            out.append("%.6g" % stream(mq, mr, kind, N))
    out.append("%.6g" % round_trips(queue.Queue, threading.Thread, R))
    out.append("%.6g" % round_trips(ctx.Queue, ctx.Process, R))
    print(" ".join(out))
