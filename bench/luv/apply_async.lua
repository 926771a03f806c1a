-- luv peer of pools.lua's threadpool-apply-async: K trivial tasks queued on
-- libuv's work pool with `work:queue(i)` (work = uv.new_work(trivial,
-- after)), then the loop run until all K after-callbacks arrived; k tasks/s,
-- best of REPS. Run with UV_THREADPOOL_SIZE=2 (bench/run.lua sets it) so the
-- pool has ThreadPool(2)'s two threads. Prints one figure.
local uv = require "luv"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local K = math.max(100, math.floor(10000 * scale + 0.5))
local REPS = 5

local got, sum = 0, 0
local work = uv.new_work(function(x) return x end, function(x)
  got = got + 1
  sum = sum + x
end)

local best = math.huge
for _ = 1, REPS do
  got, sum = 0, 0
  local t0 = uv.hrtime()
  for i = 1, K do assert(work:queue(i)) end
  uv.run()
  local dt = (uv.hrtime() - t0) / 1e9
  assert(got == K and sum == K * (K + 1) / 2, "lost results")
  if dt < best then best = dt end
end
print(string.format("%.6g", K / best / 1e3))
