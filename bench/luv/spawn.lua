-- luv peer of spawn.lua: create and join one `uv.new_thread` running an empty
-- function, one after another (each thread gets a new lua_State that loads the
-- function's dumped bytecode). Prints microseconds per thread.
local uv = require "luv"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1, math.floor(5000 * scale + 0.5))
local WARM = math.max(1, math.floor(500 * scale + 0.5))

local function f() end

local function spawn_loop(n)
  for _ = 1, n do
    local t = assert(uv.new_thread(f))
    t:join()
  end
end

spawn_loop(WARM)
local t0 = uv.hrtime()
spawn_loop(N)
local dt = (uv.hrtime() - t0) / 1e9
print(string.format("%.6g", dt / N * 1e6))
