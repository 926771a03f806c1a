-- A writer thread and a reader thread share a Queue.  The writer puts five
-- numbers, then nil, which is an item like any other: here it tells the
-- reader that nothing more will come, so both threads end and the program
-- exits.  (The Python tutorial's reader loops forever, so that program
-- never ends by itself.)
local concur = require "concur"

local function writer(q, n)
  for i = 1, n do
    q:put(i * 10)
    print(("writer: put %d"):format(i * 10))
    concur.sleep(0.01)
  end
  q:put(nil)                  -- "no more"
  print("writer: done")
end

local function reader(q)
  local total = 0
  while true do
    local item = q:get()      -- blocks until an item comes
    q:task_done()
    if item == nil then break end
    print(("reader: got %d"):format(item))
    total = total + item
  end
  print("reader: done")
  return total
end

local q = concur.Queue()
local w = concur.Thread{target = writer, args = {q, 5}, name = "writer"}
local r = concur.Thread{target = reader, args = {q}, name = "reader"}
r:start()
w:start()
w:join()
q:join()                      -- every item put has been taken and done
r:join()
print("main: reader's total", r:result(), q)
