-- A writer process and a reader process share a Queue made before they were
-- forked.  The main process starts both, joins the writer, waits until the
-- reader has taken every item (q:join), then terminates the reader, which is
-- still blocked in get waiting for more.  A process killed while it waits
-- (or even in the middle of a get or a put) leaves the queue usable.
local concur = require "concur"

local function writer(q, n)
  for i = 1, n do
    q:put({n = i, square = i * i, from = concur.current_process().name})
  end
end

local function reader(q)
  while true do
    local msg = q:get()
    print(("reader %d: %d squared is %d (sent by %s)"):format(
      concur.current_process().pid, msg.n, msg.square, msg.from))
    io.stdout:flush()
    q:task_done()
  end
end

local q = concur.Queue()
local r = concur.Process{target = reader, args = {q}, name = "reader"}
local w = concur.Process{target = writer, args = {q, 5}, name = "writer"}
r:start()
w:start()
w:join()
print("main: writer joined, exit code", w.exitcode)
q:join()                      -- the reader has taken and done all five
r:terminate()
r:join()
print("main: reader terminated, exit code", r.exitcode)
q:put("still works")
print("main: the queue after that:", q:get(), q)
