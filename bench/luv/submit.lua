-- luv peer of futures.lua's threadpool-submit: µs per round trip of one
-- `work:queue(i)` on libuv's work pool, then `uv.run()` until its
-- after-callback has the result, one at a time, N after N/10 warm-up; the
-- median of REPS batches. Run with UV_THREADPOOL_SIZE=2 (bench/run.lua sets
-- it). Prints one figure.
local uv = require "luv"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(200, math.floor(20000 * scale + 0.5))
local REPS = 5

local result
local work = uv.new_work(function(x) return x end, function(x) result = x end)

local function round_trip(i)
  result = nil
  assert(work:queue(i))
  uv.run()
  return result
end

for i = 1, math.floor(N / 10) do assert(round_trip(i) == i) end
local times = {}
for r = 1, REPS do
  local t0 = uv.hrtime()
  for i = 1, N do
    if round_trip(i) ~= i then error("wrong result") end
  end
  times[r] = (uv.hrtime() - t0) / 1e3 / N
end
table.sort(times)
print(string.format("%.6g", times[math.floor((REPS + 1) / 2)]))
