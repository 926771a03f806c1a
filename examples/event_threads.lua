-- Ten threads wait for one Event; the main thread sets it once all of them
-- are waiting, and every one of them goes on.
local concur = require "concur"

local function worker(i, ready, go)
  ready:release()                   -- "I am about to wait"
  local ok = go:wait(10)
  print(("thread %d: event seen (%s)"):format(i, tostring(ok)))
  return i
end

local ready, go = concur.Semaphore(0), concur.Event()
local threads = {}
for i = 1, 10 do
  threads[i] = concur.Thread{target = worker, args = {i, ready, go}}
  threads[i]:start()
end
for _ = 1, 10 do ready:acquire() end
print("main: all ten are waiting; setting the event", go)
go:set()
local sum = 0
for _, t in ipairs(threads) do
  t:join()
  sum = sum + t:result()
end
print("main: joined all ten, sum of results", sum, go)
