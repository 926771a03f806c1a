-- The first program of a Python threading tutorial, in Lua: a Thread
-- subclass, three threads, five numbered lines each.  The main chunk ends
-- at once; the process waits for the threads (they are not daemons).
local concur = require "concur"

local MyThread = concur.Thread:extend()

function MyThread:init(thread_id, name, delay)
  self.thread_id = thread_id
  self.name = name
  self.delay = delay
end

local function print_lines(name, delay, count)
  for i = 1, count do
    concur.sleep(delay)
    print(("%s: line %d"):format(name, i))
  end
end

function MyThread:run()
  print("Starting " .. self.name)
  print_lines(self.name, self.delay, 5)
  print("Exiting " .. self.name)
end

local threads = {
  MyThread(1, "Thread-1", 0.10),
  MyThread(2, "Thread-2", 0.15),
  MyThread(3, "Thread-3", 0.20),
}
for _, t in ipairs(threads) do t:start() end
print("Exiting Main Thread")
