-- str1m: a 1 MiB string sent to a concur.Thread as its argument and returned
-- by it (t:result()), ROUNDS times one after another.
-- Prints GB/s (1e9 bytes/s), counting 2 MiB per round trip (there and back).
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local ROUNDS = math.max(1, math.floor(200 * scale + 0.5))
local WARM = 20
local SIZE = 1048576

local s = string.rep("abcdefgh", math.floor(SIZE / 8))

local function echo(x) return x end

local function rounds(n)
  for _ = 1, n do
    local t = concur.Thread{target = echo, args = {s}}
    t:start()
    local r = t:result()
    if #r ~= SIZE then error("bad length " .. #r) end
  end
end

rounds(WARM)
local t0 = concur.time()
rounds(ROUNDS)
local dt = concur.time() - t0
print(string.format("%.6g", 2 * SIZE * ROUNDS / dt / 1e9))
