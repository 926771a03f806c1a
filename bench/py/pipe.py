# pipe: a 100 MiB bytes object sent through a multiprocessing.Pipe from a
# child process (start method "fork") to its parent (send_bytes /
# recv_bytes; the child makes the bytes first and says when it is ready).
# Prints GB/s.
import multiprocessing
import os
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
SIZE = max(1 << 20, int((100 << 20) * min(scale, 1) + 0.5))


def sender(conn, size):
    s = b"x" * size
    conn.send_bytes(b"ready")
    conn.send_bytes(s)


def once(ctx):
    a, b = ctx.Pipe()
    p = ctx.Process(target=sender, args=(b, SIZE))
    p.start()
    assert a.recv_bytes() == b"ready"
    t0 = time.perf_counter()
    s = a.recv_bytes()
    dt = time.perf_counter() - t0
    p.join()
    assert len(s) == SIZE
    return SIZE / dt / 1e9


if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    once(ctx)
    print("%.6g" % once(ctx))
