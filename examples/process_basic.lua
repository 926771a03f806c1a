-- Processes with a target and arguments: concur.cpu_count(), two named
-- children, and the list of live ones (active_children) while they work.
-- Each child is a fork of this script: it sees `greeting` as it was at start.
local concur = require "concur"

local greeting = "hello"

local function worker(n, delay)
  concur.sleep(delay)
  local me = concur.current_process()
  print(("%s from %s (pid %d): %d squared is %d"):format(greeting, me.name, me.pid, n, n * n))
end

print("The number of CPU is:", concur.cpu_count())

local p1 = concur.Process{name = "Child-1", target = worker, args = {3, 0.2}}
local p2 = concur.Process{name = "Child-2", target = worker, args = {4, 0.4}}
p1:start()
p2:start()

for _, p in ipairs(concur.active_children()) do
  print("The Child", p.name, "PID", p.pid)
end

p1:join()
p2:join()
print("active children after join:", #concur.active_children())
