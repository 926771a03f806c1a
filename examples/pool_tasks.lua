-- The tutorial's Pool program: five tasks on a pool of four worker processes.
-- Four start at once; the fifth waits for a free worker.  close() says no
-- more tasks will come, join() waits until every task is done.
local concur = require "concur"

local function long_time_task(name)
  print(("Run task %s (%d)..."):format(name, concur.getpid()))
  local start = concur.time()
  concur.sleep(math.random() * 3)
  print(("Task %s runs %.2f seconds."):format(name, concur.time() - start))
end

print(("Parent process %d."):format(concur.getpid()))
local p = concur.Pool(4)
for i = 0, 4 do
  p:apply_async(long_time_task, {i})
end
print("Waiting for all subprocesses done...")
p:close()
p:join()
print("All subprocesses done.")
