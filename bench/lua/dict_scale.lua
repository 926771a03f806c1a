-- dict_scale: how a concur.Dict's get scales with its size (concur only: no
-- Python counterpart).  Integer keys, 16-byte string values.
--   1. a reader thread does d[k] on keys already in the Dict, timing each
--      get, while the main thread inserts 10^6 keys: the longest single get
--      seen is the growth pause (the table grows incrementally);
--   2. the arena bytes that Dict of 10^6 keys holds (core.shm_in_use()
--      before and after);
--   3. ns per d[k] on random keys of a Dict of 10^3 keys, and of the one of
--      10^6 keys (the same random sequence, scaled to each size).
-- Prints: ns/get at 10^3, ns/get at 10^6, their ratio, MB of arena, and the
-- longest get (µs).
local concur = require "concur"
local core = require "concur.core"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local BIG = math.max(10000, math.floor(1000000 * scale + 0.5))
local SMALL = 1000
local GETS = math.max(10000, math.floor(1000000 * scale + 0.5))
local REPS = 3                         -- get timings: best of
local PRE = 1000                       -- keys in the Dict before the reader starts

local function value(i) return string.format("%016d", i) end

-- The reader: gets of keys 1..PRE until `stop`, returns the longest (s) and
-- how many gets it did.
local function reader(d, stop, started, pre)
  local time = concur.time
  local longest, n, k = 0, 0, 1
  started:set()
  repeat
    for _ = 1, 256 do
      local t0 = time()
      local _ = d[k]
      local dt = time() - t0
      if dt > longest then longest = dt end
      k = k % pre + 1
    end
    n = n + 256
  until stop:is_set()
  return longest, n
end

collectgarbage()
local before = core.shm_in_use()
local big = concur.Dict()
for i = 1, PRE do big[i] = value(i) end
local stop, started = concur.Event(), concur.Event()
local t = concur.Thread{target = reader, args = {big, stop, started, PRE}}
t:start()
started:wait()
for i = PRE + 1, BIG do big[i] = value(i) end
stop:set()
local longest = t:result()
t = nil
stop, started = nil, nil
collectgarbage()
local bytes = core.shm_in_use() - before
assert(#big == BIG, "dict-scale: wrong key count")

local small = concur.Dict()
for i = 1, SMALL do small[i] = value(i) end

-- One random sequence in [0, 1), scaled to each size.
math.randomseed(12345)
local RND = 65536
local rnd = {}
for i = 1, RND do rnd[i] = math.random() end

local function time_gets(d, n)
  local keys = {}
  for i = 1, RND do keys[i] = math.floor(rnd[i] * n) + 1 end
  local best = math.huge
  for _ = 1, REPS do
    local t0 = concur.time()
    local j = 0
    for _ = 1, GETS do
      j = j % RND + 1
      local _ = d[keys[j]]
    end
    local dt = concur.time() - t0
    if dt < best then best = dt end
  end
  if d[keys[1]] ~= value(keys[1]) then error("dict-scale: wrong value") end
  return best / GETS * 1e9
end

local ns_small = time_gets(small, SMALL)
local ns_big = time_gets(big, BIG)
print(string.format("%.6g %.6g %.6g %.6g %.6g", ns_small, ns_big, ns_big / ns_small,
  bytes / 1e6, longest * 1e6))
