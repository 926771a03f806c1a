-- shared: concur.Value, Array and Dict: atomic adds on one Value from two
-- processes, set+get pairs on a Dict, d:update on one key from two processes,
-- a 10^6-element int Array summed by two processes (a[i] in a loop), and the
-- same Array copied out with a:totable() and summed by the parent alone.
-- Prints: M adds/s, M pairs/s, k updates/s, M elements/s, M elements/s.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local function count(n, least) return math.max(least, math.floor(n * scale + 0.5)) end
local N_ADD = count(1000000, 1000)     -- per process
local N_SET = count(500000, 1000)
local N_UPD = count(100000, 100)       -- per process
local N_ARR = count(1000000, 1000)
local REPS = 5                         -- array sums: best of

-- Two processes run body(i, ...) (i = 1, 2) once both are up: the clock runs
-- from the "go" to the second result, so forking is not counted.
local function child(body, i, ready, go, results, ...)
  ready:put(true)
  go:wait()
  results:put(body(i, ...))
end

local function race(body, ...)
  local ready, go, results = concur.Queue(), concur.Event(), concur.Queue()
  local ps = {}
  for i = 1, 2 do
    ps[i] = concur.Process{target = child, args = {body, i, ready, go, results, ...}}
    ps[i]:start()
  end
  ready:get(); ready:get()
  local t0 = concur.time()
  go:set()
  local r = results:get() + results:get()
  local dt = concur.time() - t0
  for i = 1, 2 do ps[i]:join() end
  return dt, r
end

local function check(what, got, want)
  if got ~= want then
    error(("%s: total %s, expected %s"):format(what, tostring(got), tostring(want)))
  end
end

local out = {}
local function report(v) out[#out + 1] = string.format("%.6g", v) end

-- value-add-proc
local function adds(_, v, n)
  for _ = 1, n do v:add(1) end
  return 0
end
do
  local v = concur.Value(0)
  race(adds, v, math.floor(N_ADD / 10))
  v.value = 0
  local dt = race(adds, v, N_ADD)
  check("value-add-proc", v.value, 2 * N_ADD)
  report(2 * N_ADD / dt / 1e6)
end

-- dict-setget
do
  local d = concur.Dict()
  local keys = {}
  for i = 1, 1000 do keys[i] = "key" .. i end
  local function pairs_(n)
    for i = 1, n do
      local k = keys[i % 1000 + 1]
      d[k] = "value"
      local _ = d[k]
    end
  end
  pairs_(math.floor(N_SET / 10))
  local t0 = concur.time()
  pairs_(N_SET)
  local dt = concur.time() - t0
  report(N_SET / dt / 1e6)
end

-- dict-update-proc
local function incr(x) return (x or 0) + 1 end
local function updates(_, d, n)
  for _ = 1, n do d:update("k", incr) end
  return 0
end
do
  local d = concur.Dict()
  race(updates, d, math.floor(N_UPD / 10))
  d.k = nil
  local dt = race(updates, d, N_UPD)
  check("dict-update-proc", d.k, 2 * N_UPD)
  report(2 * N_UPD / dt / 1e3)
end

-- array-sum-proc, array-sum-totable
do
  local list = {}
  for i = 1, N_ARR do list[i] = i end
  local a = concur.Array("int", list)
  list = nil
  local want = N_ARR * (N_ARR + 1) / 2
  local half = math.floor(N_ARR / 2)
  local function sum_half(i, arr, n, h)
    local lo, hi = 1, h
    if i == 2 then lo, hi = h + 1, n end
    local s = 0
    for j = lo, hi do s = s + arr[j] end
    return s
  end
  local best = math.huge
  for _ = 1, REPS do
    local dt, s = race(sum_half, a, N_ARR, half)
    check("array-sum-proc", s, want)
    if dt < best then best = dt end
  end
  report(N_ARR / best / 1e6)

  best = math.huge
  for _ = 1, REPS do
    local t0 = concur.time()
    local t = a:totable()
    local s = 0
    for j = 1, #t do s = s + t[j] end
    local dt = concur.time() - t0
    check("array-sum-totable", s, want)
    if dt < best then best = dt end
  end
  report(N_ARR / best / 1e6)
end

print(table.concat(out, " "))
