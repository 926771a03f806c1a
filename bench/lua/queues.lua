-- queues: one producer to one consumer through a concur.Queue, threads then
-- processes, for small integers, 1 KiB strings and small tables; then a
-- round trip through two Queues (threads, processes).
-- Prints: M items/s for thr-int thr-str thr-tab proc-int proc-str proc-tab,
-- then µs per round trip for threads and processes.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1000, math.floor(400000 * scale + 0.5))
local R = math.max(100, math.floor(20000 * scale + 0.5))

local KIB = string.rep("x", 1024)
local payloads = {
  int = function(i) return i end,
  str = function() return KIB end,
  tab = function(i) return {id = i, name = "x"} end,
}

local function consume(q, n, done)
  for _ = 1, n do q:get() end
  done:put(true)
end

local function stream(Runner, kind, n)
  local q, done = concur.Queue(), concur.Queue()
  local make = payloads[kind]
  local c = Runner{target = consume, args = {q, n, done}}
  c:start()
  local t0 = concur.time()
  for i = 1, n do q:put(make(i)) end
  done:get()
  local dt = concur.time() - t0
  c:join()
  return n / dt / 1e6
end

local function echo(a, b, n)
  for _ = 1, n do b:put(a:get()) end
end

local function round_trips(Runner, n)
  local a, b = concur.Queue(), concur.Queue()
  local other = Runner{target = echo, args = {a, b, n}}
  other:start()
  local t0 = concur.time()
  for i = 1, n do
    a:put(i)
    b:get()
  end
  local dt = concur.time() - t0
  other:join()
  return dt / n * 1e6
end

stream(concur.Thread, "int", math.floor(N / 10))
local out = {}
for _, Runner in ipairs{concur.Thread, concur.Process} do
  for _, kind in ipairs{"int", "str", "tab"} do
    out[#out + 1] = string.format("%.6g", stream(Runner, kind, N))
  end
end
out[#out + 1] = string.format("%.6g", round_trips(concur.Thread, R))
out[#out + 1] = string.format("%.6g", round_trips(concur.Process, R))
print(table.concat(out, " "))
