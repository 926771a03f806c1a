-- waitany: latency of concur.select over 8 queues, one of which gets an item
-- from another thread (a ping through a ninth queue starts each round); then
-- put+get pairs on one queue with nobody selecting and with a thread blocked
-- in select on other queues (the cost a selector elsewhere adds: none).
-- Prints: µs per round trip, then M put+get pairs/s without and with.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local R = math.max(100, math.floor(20000 * scale + 0.5))
local P = math.max(1000, math.floor(1000000 * scale + 0.5))

local function answer(ping, qs, n)
  for i = 1, n do
    ping:get()
    qs[i % 8 + 1]:put(i)
  end
end

local function round_trips(n)
  local ping, qs = concur.Queue(), {}
  for i = 1, 8 do qs[i] = concur.Queue() end
  local t = concur.Thread{target = answer, args = {ping, qs, n}}
  t:start()
  local t0 = concur.time()
  for _ = 1, n do
    ping:put(true)
    local r = concur.select(qs)
    r[1]:get()
  end
  local dt = concur.time() - t0
  t:join()
  return dt / n * 1e6
end

local function pairs_per_s(n)
  local q = concur.Queue()
  local t0 = concur.time()
  for i = 1, n do
    q:put(i)
    q:get()
  end
  return n / (concur.time() - t0) / 1e6
end

round_trips(math.floor(R / 10))
local out = {string.format("%.6g", round_trips(R)), string.format("%.6g", pairs_per_s(P))}
local others, stop = {concur.Queue(), concur.Queue()}, concur.Event()
local sel = concur.Thread{target = function(qs, stop)
  while not stop:is_set() do concur.select(qs) end
end, args = {{others[1], others[2]}, stop}}
sel:start()
concur.sleep(0.05)
out[#out + 1] = string.format("%.6g", pairs_per_s(P))
stop:set()
others[1]:put(true)
sel:join()
print(table.concat(out, " "))
