-- redis_queue: put + get of a small table through a redis.Queue, one
-- process, N round trips (each a put then a get) on a local redis-server
-- this script starts on a free loopback port (or $CONCUR_REDIS_URL).
-- Prints µs per round trip.
local concur = require "concur"
local redis = require "concur.redis"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local N = math.max(1000, math.floor(20000 * scale + 0.5))

local url, stop = os.getenv("CONCUR_REDIS_URL"), nil
if not url then
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  math.randomseed(os.time() + concur.getpid())
  local port = 30000 + math.random(0, 20000)
  assert(os.execute(("redis-server --port %d --bind 127.0.0.1 --dir %s --save '' "
    .. "--appendonly no --daemonize yes --pidfile %s/pid --logfile %s/log"):format(port, dir, dir, dir)))
  for _ = 1, 200 do
    local p = io.popen("redis-cli -p " .. port .. " ping 2>/dev/null")
    local out = p:read("*a")
    p:close()
    if out:find("PONG") then break end
    concur.sleep(0.02)
  end
  url = "redis://127.0.0.1:" .. port .. "/0"
  stop = function()
    local f = io.open(dir .. "/pid")
    local pid = f and f:read("*l")
    if f then f:close() end
    if pid then os.execute("kill " .. pid) end
    os.execute("sleep 0.2; rm -rf " .. dir)
  end
end

local q = redis.Queue{url = url, name = "bench-" .. concur.getpid()}
for i = 1, 200 do q:put({id = i, name = "x", vals = {1, 2, 3}}); q:get() end   -- warm up
local t0 = concur.time()
for i = 1, N do
  q:put({id = i, name = "x", vals = {1, 2, 3}})
  local v = q:get()
  assert(v.id == i)
end
local took = concur.time() - t0
q:shutdown(true)
q:close()
if stop then stop() end
print(("%.2f"):format(took / N * 1e6))
