-- pingpong: a round trip between the main thread and a second one through
-- two concur.Events (set / wait / clear), then the same between two processes.
-- Prints microseconds per round trip: threads, processes.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(100, math.floor(20000 * scale + 0.5))

local function peer(ping, pong, n)
  for _ = 1, n do
    ping:wait()
    ping:clear()
    pong:set()
  end
end

local function round_trips(Runner, n)
  local ping, pong = concur.Event(), concur.Event()
  local other = Runner{target = peer, args = {ping, pong, n}}
  other:start()
  local t0 = concur.time()
  for _ = 1, n do
    ping:set()
    pong:wait()
    pong:clear()
  end
  local dt = concur.time() - t0
  other:join()
  return dt / n * 1e6
end

round_trips(concur.Thread, math.floor(N / 10))
local threads = round_trips(concur.Thread, N)
local processes = round_trips(concur.Process, N)
print(string.format("%.6g %.6g", threads, processes))
