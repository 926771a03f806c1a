-- cpu2: a pure CPU loop (sum of i*i % 7 over 1..M) run in one concur.Thread,
-- then split in two halves over two concur.Threads started together.
-- Prints the speedup t(1 thread) / t(2 threads); each time is the best of REPS (5).
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local M = math.max(1000, math.floor(20000000 * scale + 0.5))
local REPS = 5

local function work(lo, hi)
  local s = 0
  for i = lo, hi do s = s + i * i % 7 end
  return s
end

local function one()
  local t0 = concur.time()
  local t = concur.Thread{target = work, args = {1, M}}
  t:start()
  local s = t:result()
  return concur.time() - t0, s
end

local function two()
  local half = math.floor(M / 2)
  local t0 = concur.time()
  local a = concur.Thread{target = work, args = {1, half}}
  local b = concur.Thread{target = work, args = {half + 1, M}}
  a:start()
  b:start()
  local s = a:result() + b:result()
  return concur.time() - t0, s
end

local best1, best2 = math.huge, math.huge
for _ = 1, REPS do
  local d1, s1 = one()
  local d2, s2 = two()
  assert(s1 == s2, "sums differ")
  best1 = math.min(best1, d1)
  best2 = math.min(best2, d2)
end
print(string.format("%.6g", best1 / best2))
