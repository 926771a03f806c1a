# str1m: a 1 MiB string sent to a threading.Thread as its argument and
# returned by it (through a result slot), ROUNDS times one after another.
# Prints GB/s (1e9 bytes/s), counting 2 MiB per round trip. Python threads
# share the string by reference, so this is mostly thread start/join cost.
import os
import threading
import time

scale = float(os.environ.get("BENCH_SCALE") or 1)
ROUNDS = max(1, int(200 * scale + 0.5))
WARM = 20
SIZE = 1 << 20

s = "abcdefgh" * (SIZE // 8)


def echo(x, out):
    out.append(x)


def rounds(n):
    for _ in range(n):
        out = []
        t = threading.Thread(target=echo, args=(s, out))
        t.start()
        t.join()
        r = out[0]
        if len(r) != SIZE:
            raise RuntimeError("bad length %d" % len(r))


rounds(WARM)
t0 = time.perf_counter()
rounds(ROUNDS)
dt = time.perf_counter() - t0
print("%.6g" % (2 * SIZE * ROUNDS / dt / 1e9))
