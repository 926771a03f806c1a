-- redis_pool: redis.Pool apply_async throughput with two workers, beside
-- Python RQ (bench/py/redis_pool_rq.py).  Starts its own redis-server on a
-- loopback port (in a temporary directory) and two `concur-worker
-- --processes 1`; prints k tasks/s for K trivial tasks (x + 1): every
-- apply_async, then every get, after one warm-up task.
local concur = require "concur"
local redis = require "concur.redis"

local scale = tonumber(os.getenv("BENCH_SCALE")) or 1
local K = math.max(200, math.floor(2000 * scale + 0.5))
local LUA = "lua5.4"
do
  local i = -1
  while arg and arg[i] do LUA = arg[i]; i = i - 1 end
end
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local port = 22000 + concur.getpid() % 20000
local url = ("redis://127.0.0.1:%d/0"):format(port)
os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' --dir %s --daemonize yes "
  .. "--pidfile %s/r.pid --logfile %s/r.log"):format(port, dir, dir, dir))
local pids = {}
local function cleanup()
  for _, pid in ipairs(pids) do os.execute(("kill -KILL -%d 2>/dev/null; kill -KILL %d 2>/dev/null"):format(pid, pid)) end
  os.execute(("redis-cli -p %d shutdown nosave >/dev/null 2>&1; rm -rf %s"):format(port, dir))
end
local ok, err = pcall(function()
  local pool
  local t_end = concur.time() + 10
  while true do   -- the server up
    local okc, p = pcall(redis.Pool, {url = url, name = "bench"})
    if okc then pool = p break end
    if concur.time() > t_end then error(p) end
    concur.sleep(0.02)
  end
  for _ = 1, 2 do
    local f = assert(io.popen(("setsid %s bin/concur-worker --url %s --name bench --processes 1 "
      .. ">/dev/null 2>&1 & echo $!"):format(LUA, url)))
    pids[#pids + 1] = tonumber(f:read("*l"))
    f:close()
  end
  local function inc(x) return x + 1 end
  pool:map(inc, {1, 2, 3, 4}, 1)   -- warm up
  local t0 = concur.time()
  local rs = {}
  for i = 1, K do rs[i] = pool:apply_async(inc, {i}) end
  for i = 1, K do assert(rs[i]:get() == i + 1) end
  local t = concur.time() - t0
  print(("%.3f"):format(K / t / 1000))
  pool:terminate()
end)
cleanup()
if not ok then error(err, 0) end
