"""redis_pool_rq: Python RQ (Debian's python3-rq, 1.13) beside redis.Pool.

Prints one figure: k tasks/s for K trivial tasks (x + 1) through a local
redis-server this script starts, with two `rq worker` processes of class
SimpleWorker (the job runs in the worker itself: RQ's default Worker forks
per job and is several times slower, so this is RQ at its fastest).
Timed from the first enqueue until every job is in the finished registry.
Run with /usr/bin/python3 (where python3-rq is installed).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def inc(x):
    return x + 1


def main():
    import redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    scale = float(os.environ.get("BENCH_SCALE") or 1)
    k = max(200, int(2000 * scale + 0.5))
    here = os.path.dirname(os.path.abspath(__file__))
    tmp = tempfile.mkdtemp(prefix="rq-bench-")
    port = 21000 + os.getpid() % 20000
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                            "--save", "", "--dir", tmp], stdout=subprocess.DEVNULL)
    workers = []
    try:
        conn = redis.Redis(port=port)
        for _ in range(500):
            try:
                conn.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        env = dict(os.environ, PYTHONPATH=here)
        url = "redis://127.0.0.1:%d/0" % port
        for _ in range(2):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "rq.cli", "worker", "-w", "rq.worker.SimpleWorker",
                 "-u", url, "-q", "default"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        q = Queue("default", connection=conn)
        reg = FinishedJobRegistry(queue=q)
        # warm up: both workers up, a job through
        deadline = time.time() + 30
        from rq import Worker
        while len(Worker.all(connection=conn)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        q.enqueue("redis_pool_rq.inc", 1)
        while reg.count < 1 and time.time() < deadline:
            time.sleep(0.005)
        base = reg.count
        t0 = time.time()
        for i in range(k):
            q.enqueue("redis_pool_rq.inc", i)
        while reg.count < base + k:
            time.sleep(0.002)
        t = time.time() - t0
        print("%.3f" % (k / t / 1000))
    finally:
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait()
        srv.terminate()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
