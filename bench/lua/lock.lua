-- lock: uncontended acquire + release of one concur.Lock from Lua, in a loop.
-- Prints million pairs per second.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1000, math.floor(10000000 * scale + 0.5))

local lock = concur.Lock()
local function loop(n)
  for _ = 1, n do
    lock:acquire()
    lock:release()
  end
end

loop(math.floor(N / 10))
local t0 = concur.time()
loop(N)
local dt = concur.time() - t0
print(string.format("%.6g", N / dt / 1e6))
