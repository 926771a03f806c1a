-- proc: create, start and join one empty concur.Process (a fork), one after
-- another.  Prints microseconds per process.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1, math.floor(300 * scale + 0.5))
local WARM = math.max(1, math.floor(30 * scale + 0.5))

local function f() end

local function proc_loop(n)
  for _ = 1, n do
    local p = concur.Process{target = f}
    p:start()
    p:join()
    if p.exitcode ~= 0 then error("exit code " .. tostring(p.exitcode)) end
  end
end

proc_loop(WARM)
local t0 = concur.time()
proc_loop(N)
local dt = concur.time() - t0
print(string.format("%.6g", dt / N * 1e6))
