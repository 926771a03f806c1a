-- Stopping threads with t:cancel(): one blocked in a queue, one that catches
-- the cancel and goes on, one busy in a loop that polls concur.cancelled().
local concur = require "concur"

local jobs, ready = concur.Queue(), concur.Semaphore(0)

local waiter = concur.Thread{name = "waiter", target = function(jobs, ready)
  ready:release()
  return jobs:get()   -- blocked here: the cancel raises concur.CancelledError
end, args = {jobs, ready}}

local cleaner = concur.Thread{name = "cleaner", target = function(ready)
  local ok, err = pcall(function()
    ready:release()
    concur.sleep(3600)
  end)
  -- Caught like any error; the thread goes on.
  return err == concur.CancelledError, concur.cancelled()
end, args = {ready}}

local counter = concur.Thread{name = "counter", target = function(ready)
  local n = 0
  ready:release()
  while not concur.cancelled() do n = n + 1 end   -- (or the cancel's hook stops it)
  return n
end, args = {ready}}

local all = {waiter, cleaner, counter}
for _, t in ipairs(all) do t:start() end
for _ = 1, #all do ready:acquire() end   -- all three are running

local t0 = concur.time()
for _, t in ipairs(all) do print("cancel " .. t.name, t:cancel()) end
for _, t in ipairs(all) do t:join() end
print("all ended in under 0.5 s:", concur.time() - t0 < 0.5)

local ok, err = pcall(waiter.result, waiter)
print("waiter raised CancelledError:", not ok and err == concur.CancelledError)
print("cleaner caught it, cancelled():", cleaner:result())
print("counter stopped:", pcall(counter.result, counter) or "by the hook")
print("the queue lost nothing:", jobs:qsize())
print("cancel an ended thread:", waiter:cancel())
