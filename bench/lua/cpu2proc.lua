-- cpu2proc: the pure CPU loop of cpu2 (sum of i*i % 7 over 1..M) run in one
-- concur.Process, then split in two halves over two processes started
-- together.  A process returns no value: the children do the loop and exit,
-- the parent starts and joins them.  Prints the speedup t(1 proc) / t(2 procs);
-- each time is the best of REPS (5).
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local M = math.max(1000, math.floor(20000000 * scale + 0.5))
local REPS = 5

local function work(lo, hi)
  local s = 0
  for i = lo, hi do s = s + i * i % 7 end
  if s < 0 then os.exit(2) end   -- uses s; never true
end

local function run(ranges)
  local t0 = concur.time()
  local ps = {}
  for i, r in ipairs(ranges) do
    ps[i] = concur.Process{target = work, args = r}
    ps[i]:start()
  end
  for _, p in ipairs(ps) do
    p:join()
    if p.exitcode ~= 0 then error("exit code " .. tostring(p.exitcode)) end
  end
  return concur.time() - t0
end

local half = math.floor(M / 2)
local best1, best2 = math.huge, math.huge
for _ = 1, REPS do
  best1 = math.min(best1, run{{1, M}})
  best2 = math.min(best2, run{{1, half}, {half + 1, M}})
end
print(string.format("%.6g", best1 / best2))
