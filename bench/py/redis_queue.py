# redis_queue: put + get of a small dict through redis-py, LPUSH / BRPOP with
# pickle, one process, N round trips, on a local redis-server this script
# starts on a free loopback port (or $CONCUR_REDIS_URL). Run with Debian's
# /usr/bin/python3 (python3-redis). Prints µs per round trip.
import os, pickle, random, shutil, subprocess, tempfile, time
import redis

scale = float(os.environ.get("BENCH_SCALE") or 1)
N = max(1000, int(20000 * scale + 0.5))

url = os.environ.get("CONCUR_REDIS_URL")
proc = None
if not url:
    d = tempfile.mkdtemp()
    port = 30000 + random.randint(0, 20000)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", d, "--save", "", "--appendonly", "no", "--logfile", d + "/log"])
    url = "redis://127.0.0.1:%d/0" % port
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)

r = redis.Redis.from_url(url)
key = "bench-py-%d" % os.getpid()
for i in range(200):
    r.lpush(key, pickle.dumps({"id": i, "name": "x", "vals": [1, 2, 3]}))
    r.brpop(key)
t0 = time.perf_counter()
for i in range(N):
    r.lpush(key, pickle.dumps({"id": i, "name": "x", "vals": [1, 2, 3]}))
    v = pickle.loads(r.brpop(key)[1])
    assert v["id"] == i
took = time.perf_counter() - t0
r.delete(key)
if proc:
    proc.terminate()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)
print("%.2f" % (took / N * 1e6))
