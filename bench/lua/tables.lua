-- tables: a list of N small tables {id = i, name = "x"} sent to a concur.Thread
-- as its argument and returned by it.
--   to:   from just before t:start() in the creator to the target's first line
--   back: from just before the target returns to just after t:result() returns
-- Prints two numbers on one line, "to back", in millions of tables per second,
-- each the median of REPS repetitions. concur.time() is one monotonic clock
-- shared by all threads.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1, math.floor(100000 * scale + 0.5))
local REPS = 5

local list = {}
for i = 1, N do list[i] = {id = i, name = "x"} end

local function target(l)
  local t_in = concur.time()
  local n = #l
  local t_out = concur.time()
  return l, t_in, t_out, n
end

local function median(xs)
  table.sort(xs)
  local k = #xs
  if k % 2 == 1 then return xs[math.floor((k + 1) / 2)] end
  return (xs[math.floor(k / 2)] + xs[math.floor(k / 2) + 1]) / 2
end

local to, back = {}, {}
for r = 1, REPS + 1 do                      -- the first repetition is a warm-up
  local t = concur.Thread{target = target, args = {list}}
  local t0 = concur.time()
  t:start()
  local l, t_in, t_out, n = t:result()
  local t1 = concur.time()
  if n ~= N or #l ~= N or l[N].id ~= N or l[1].name ~= "x" then
    error("bad list")
  end
  if r > 1 then
    to[#to + 1] = N / (t_in - t0) / 1e6
    back[#back + 1] = N / (t1 - t_out) / 1e6
  end
end
print(string.format("%.6g %.6g", median(to), median(back)))
