-- The same three threads, with the main thread waiting for each one
-- (join) before it says goodbye.
local concur = require "concur"

local MyThread = concur.Thread:extend()

function MyThread:init(thread_id, name, delay)
  self.thread_id = thread_id
  self.name = name
  self.delay = delay
end

function MyThread:run()
  print("Starting " .. self.name)
  for i = 1, 5 do
    concur.sleep(self.delay)
    print(("%s: line %d"):format(self.name, i))
  end
  print("Exiting " .. self.name)
  return self.thread_id
end

local threads = {}
for i, delay in ipairs({0.10, 0.15, 0.20}) do
  local t = MyThread(i, "Thread-" .. i, delay)
  t:start()
  threads[#threads + 1] = t
end
for _, t in ipairs(threads) do
  t:join()
  print(("joined %s (result %d)"):format(t.name, t:result()))
end
print("Exiting Main Thread")
