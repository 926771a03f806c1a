-- spawn: create, start and join one empty concur.Thread, one after another.
-- Prints microseconds per thread.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1, math.floor(5000 * scale + 0.5))
local WARM = math.max(1, math.floor(500 * scale + 0.5))

local function f() end

local function spawn_loop(n)
  for _ = 1, n do
    local t = concur.Thread{target = f}
    t:start()
    t:join()
  end
end

spawn_loop(WARM)
local t0 = concur.time()
spawn_loop(N)
local dt = concur.time() - t0
print(string.format("%.6g", dt / N * 1e6))
