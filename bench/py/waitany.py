# select: latency of multiprocessing.connection.wait over 8 pipes, one of
# which gets a message from another thread (a ping through a queue.Queue
# starts each round); then put+get pairs on one queue.Queue, twice (Python
# has no selector over queues: the same number twice, for the ratios).
# Prints: µs per round trip, then M put+get pairs/s, twice.
import os
import queue
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import wait

scale = float(os.environ.get("BENCH_SCALE") or 1)
R = max(100, int(5000 * scale + 0.5))
P = max(1000, int(300000 * scale + 0.5))


def answer(ping, writers, n):
    for i in range(n):
        ping.get()
        writers[i % 8].send(i)


def round_trips(n):
    ping = queue.Queue()
    pipes = [Pipe(False) for _ in range(8)]
    readers = [r for r, _ in pipes]
    writers = [w for _, w in pipes]
    t = threading.Thread(target=answer, args=(ping, writers, n))
    t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        ping.put(True)
        r = wait(readers)
        r[0].recv()
    dt = time.perf_counter() - t0
    t.join()
    return dt / n * 1e6


def pairs_per_s(n):
    q = queue.Queue()
    t0 = time.perf_counter()
    for i in range(n):
        q.put(i)
        q.get()
    return n / (time.perf_counter() - t0) / 1e6


if __name__ == "__main__":
    round_trips(R // 10)
    rt = round_trips(R)
    pp = pairs_per_s(P)
    print("%.6g %.6g %.6g" % (rt, pp, pp))
