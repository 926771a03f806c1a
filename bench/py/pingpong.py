# pingpong: a round trip between the main thread and a second one through two
# threading.Events (set / wait / clear), then the same between two processes
# with multiprocessing.Events (start method "fork").
# Prints microseconds per round trip: threads, processes.
import multiprocessing
import os
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(100, int(5000 * scale + 0.5))


def peer(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def round_trips(make_event, make_runner, n):
    ping, pong = make_event(), make_event()
    other = make_runner(target=peer, args=(ping, pong, n))
    other.start()
    t0 = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    dt = time.perf_counter() - t0
    other.join()
    return dt / n * 1e6


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    round_trips(threading.Event, threading.Thread, N // 10)
    threads = round_trips(threading.Event, threading.Thread, N)
    processes = round_trips(ctx.Event, ctx.Process, N)
    print("%.6g %.6g" % (threads, processes))
