-- pipe: a 100 MiB string sent through a concur.Pipe from a child process to
-- its parent (send / recv; the child makes the string first and says when
-- it is ready).  Prints GB/s.
local concur = require "concur"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local SIZE = math.max(1048576, math.floor((100 * 1048576) * math.min(scale, 1) + 0.5))

local function sender(conn, size)
  local s = string.rep("x", size)
  conn:send("ready")
  conn:send(s)
end

local function once()
  local a, b = concur.Pipe()
  local p = concur.Process{target = sender, args = {b, SIZE}}
  p:start()
  assert(a:recv() == "ready")
  local t0 = concur.time()
  local s = a:recv()
  local dt = concur.time() - t0
  p:join()
  assert(#s == SIZE)
  return SIZE / dt / 1e9
end

once()
print(string.format("%.6g", once()))
