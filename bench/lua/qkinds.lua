-- qkinds: one producer to one consumer of small integers through a
-- LifoQueue and a PriorityQueue, between threads, then between processes.
-- Prints: M items/s for thr-lifo thr-prio proc-lifo proc-prio.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1000, math.floor(200000 * scale + 0.5))

local function consume(q, n, done)
  for _ = 1, n do q:get() end
  done:put(true)
end

local function stream(Runner, Kind, n)
  local q, done = Kind(), concur.Queue()
  local c = Runner{target = consume, args = {q, n, done}}
  c:start()
  local t0 = concur.time()
  for i = 1, n do q:put(i) end
  done:get()
  local dt = concur.time() - t0
  c:join()
  return n / dt / 1e6
end

stream(concur.Thread, concur.PriorityQueue, math.floor(N / 10))
local out = {}
for _, Runner in ipairs{concur.Thread, concur.Process} do
  for _, Kind in ipairs{concur.LifoQueue, concur.PriorityQueue} do
    out[#out + 1] = string.format("%.6g", stream(Runner, Kind, N))
  end
end
print(table.concat(out, " "))
