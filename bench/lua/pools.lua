-- pools: Pool and ThreadPool throughput, the same workloads as pools.py.
-- Prints four figures on one line:
--   1. Pool(2):map of N trivial tasks (default chunks), M tasks/s, best of REPS
--      maps on one pool;
--   2. Pool(2):apply_async of K trivial tasks, then every get: k tasks/s;
--   3. ThreadPool(2): the same as 2;
--   4. a CPU-bound map over Pool(2) against Pool(1): the speedup.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1000, math.floor(100000 * scale + 0.5))
local K = math.max(100, math.floor(10000 * scale + 0.5))
local CPU = math.max(1000, math.floor(4000000 * scale + 0.5))
local REPS = 5

local function trivial(x) return x end

local function best_of(f)
  local best = math.huge
  for _ = 1, REPS do best = math.min(best, f()) end
  return best
end

local items = {}
for i = 1, N do items[i] = i end

local function map_rate(pool)
  return N / best_of(function()
    local t0 = concur.time()
    local out = pool:map(trivial, items)
    local t = concur.time() - t0
    assert(#out == N and out[N] == N)
    return t
  end)
end

local function apply_rate(pool)
  return K / best_of(function()
    local t0 = concur.time()
    local rs = {}
    for i = 1, K do rs[i] = pool:apply_async(trivial, {i}) end
    for i = 1, K do assert(rs[i]:get() == i) end
    return concur.time() - t0
  end)
end

-- Sum of i*i % 7 over a slice: 8 slices of the range 1..CPU.
local function work(lo, hi)
  local s = 0
  for i = lo, hi do s = s + i * i % 7 end
  return s
end

local slices = {}
for k = 0, 7 do slices[#slices + 1] = {math.floor(k * CPU / 8) + 1, math.floor((k + 1) * CPU / 8)} end

local function cpu_time(pool)
  return best_of(function()
    local t0 = concur.time()
    pool:starmap(work, slices)
    return concur.time() - t0
  end)
end

local pool = concur.Pool(2)
local map = map_rate(pool)
local apply = apply_rate(pool)
local cpu2 = cpu_time(pool)
pool:terminate()
local tpool = concur.ThreadPool(2)
local tapply = apply_rate(tpool)
tpool:terminate()
local one = concur.Pool(1)
local cpu1 = cpu_time(one)
one:terminate()
print(string.format("%.6g %.6g %.6g %.6g", map / 1e6, apply / 1e3, tapply / 1e3, cpu1 / cpu2))
