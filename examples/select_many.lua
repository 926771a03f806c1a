-- Wait on a queue, a stop event and a child process at once with
-- concur.select: each is handled as soon as it is ready, with no polling.
local concur = require "concur"

local jobs, stop = concur.Queue(), concur.Event()
local child = concur.Process{target = function()
  for i = 1, 3 do jobs:put("job " .. i) end
  stop:set()   -- the child says it is done, then ends
end}
child:start()

-- What is still to watch: a set Event or an ended child stays ready, so
-- each leaves the list once seen.
local watching = {jobs, stop, child}
local function forget(x)
  for i, o in ipairs(watching) do
    if o == x then table.remove(watching, i) end
  end
end
local stopped, ended = false, false
while not (stopped and ended and jobs:empty()) do
  for _, ready in ipairs(concur.select(watching, 5)) do
    if ready == jobs then
      print("got " .. jobs:get())
    elseif ready == stop then
      stopped = true
      forget(stop)
    elseif ready == child then
      ended = true
      forget(child)
    end
  end
end
child:join()
print("stop seen, child ended with exit code " .. child.exitcode)
