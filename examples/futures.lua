-- Futures: submit, as_completed, wait, cancel and an executor's map.
local concur = require "concur"

local function slow_square(x)
  concur.sleep(0.05 * x)
  return x * x
end

local ex = concur.ProcessPoolExecutor{max_workers = 3}
local fs = {}
for i = 3, 1, -1 do fs[#fs + 1] = ex:submit(slow_square, i) end
fs[1]:add_done_callback(function(f) print("callback:", f) end)
for f in concur.as_completed(fs, 5) do print("completed:", f:result()) end

local bad = ex:submit(function() error("no luck", 0) end)
local done, not_done = concur.wait({bad, ex:submit(slow_square, 4)}, 5, concur.FIRST_EXCEPTION)
print("first exception:", #done, #not_done, (done[1]:exception():match("^[^\n]*")))

for v, i in ex:map(slow_square, {1, 2, 3}) do print("map", i, v) end
ex:shutdown()

local pool = concur.ThreadPool(1)
local started, gate = concur.Event(), concur.Event()
local running = pool:submit(function(s, e) s:set(); e:wait() end, started, gate)
started:wait()
local queued = pool:submit(slow_square, 5)
print("cancel queued:", queued:cancel(), queued)
print("cancel running:", running:cancel())
gate:set()
print(pcall(queued.result, queued))
pool:shutdown()
