-- futures: submit + result round trips, the same workloads as futures.py.
-- Prints two figures on one line, µs per round trip (`pool:submit(trivial,
-- i)` then `f:result()`, one at a time, N after N/10 warm-up), the median of
-- REPS batches:
--   1. on ThreadPool(2);
--   2. on Pool(2) (worker processes).
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(200, math.floor(20000 * scale + 0.5))
local REPS = 5

local function trivial(x) return x end

local function round_trip_us(pool)
  for i = 1, math.floor(N / 10) do assert(pool:submit(trivial, i):result() == i) end
  local times = {}
  for r = 1, REPS do
    local t0 = concur.time()
    for i = 1, N do
      if pool:submit(trivial, i):result() ~= i then error("wrong result") end
    end
    times[r] = (concur.time() - t0) / N * 1e6
  end
  table.sort(times)
  return times[math.floor((REPS + 1) / 2)]
end

local tpool = concur.ThreadPool(2)
local thr = round_trip_us(tpool)
tpool:shutdown()
local pool = concur.Pool(2)
local proc = round_trip_us(pool)
pool:shutdown()
print(string.format("%.6g %.6g", thr, proc))
