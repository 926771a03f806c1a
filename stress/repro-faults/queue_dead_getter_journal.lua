-- Reproducer: a consumer killed after it journaled its get (gj.valid = 1,
-- src/queue.c get_locked) but before get_apply stored the new nget leaves a
-- bounded queue "full" for every putter until another consumer takes
-- head_lock.  A putter never applies the dead consumer's journal: its sleep
-- (wait_change) only ever calls tail_check, the producers' side.  So put
-- raises concur.Full after its timeout (or blocks for ever without one) on a
-- queue whose only item is gone, and qsize()/full() say 1/true.
-- The producer side has the mirror image covered: a getter's tail_check
-- commits an item journaled by a killed producer.
--
-- The kill must land between two stores, so the child is stopped there with
-- gdb (breakpoint on the apply call in journal_commit, after `valid = 1`;
-- the child only gets, so only get_locked's inlined copy is hit), and
-- killed there.  Needs gdb and the -g build.
--
--   LUA_PATH='./lua/?.lua;;' LUA_CPATH='./build/?.so;;' lua5.4 stress/repro-faults/queue_dead_getter_journal.lua
--
-- Expected: put succeeds (the queue has room: its item was taken), at the
--           latest when a slice of its wait or its timeout ends.
-- Seen:     "put raised Full after 1.0 s; qsize 1 full true", then a get by a
--           living consumer repairs it (Empty, qsize 0) and put works.
local concur = require "concur"

-- The line of `apply(q);` in journal_commit (the one indented by two spaces).
local LINE
do
  local i = 0
  for line in io.lines("src/queue.c") do
    i = i + 1
    if line == "  apply(q);" then LINE = i; break end
  end
  assert(LINE, "apply(q); not found in src/queue.c")
end
-- package.searchpath is 5.2+: the same search, by hand, on 5.1.
local searchpath = package.searchpath or function(name, path)
  for pattern in path:gmatch("[^;]+") do
    local file = pattern:gsub("%?", (name:gsub("%.", "/")))
    local f = io.open(file)
    if f then f:close(); return file end
  end
end
local so = searchpath("concur.core", package.cpath)

local q, go_on = concur.Queue(1), concur.Event()
q:put("only item")
local child = concur.Process{target = function()
  go_on:wait(30)
  q:get(true, 5)
  os.exit(0)
end}
child:start()

-- gdb attaches, sets the breakpoint, lets the child go on, and SIGKILLs it at the breakpoint.
local gdb_script = os.tmpname()
local f = assert(io.open(gdb_script, "w"))
f:write(("set pagination off\nset breakpoint pending on\nbreak queue.c:%d\ncontinue\nprint q->gj.valid\nkill\nquit\n"):format(LINE))
f:close()
local gdb = io.popen(("gdb -q -batch -p %d -x %s 2>&1"):format(child.pid, gdb_script))
-- Give gdb the time to attach: the child waits on go_on until we set it.
local attached = false
for _ = 1, 200 do
  local st = io.open("/proc/" .. child.pid .. "/status"):read("*a")
  local tracer = tonumber(st:match("TracerPid:%s*(%d+)"))
  if tracer and tracer ~= 0 then attached = true; break end
  concur.sleep(0.05)
end
assert(attached, "gdb did not attach")
concur.sleep(1)              -- let gdb set its breakpoint and continue
go_on:set()
local out = gdb:read("*a")
gdb:close()
os.remove(gdb_script)
assert(child:join(10), "child not ended")
print("gdb: " .. (out:match("Breakpoint 1[%.%d]*, [^\n]*") or "?") .. " | gj.valid " .. (out:match("%$1 = (%d+)") or "?"))
print("child exit code", child.exitcode)
if child.exitcode ~= -9 then print("the child was not killed at the breakpoint: no reproduction"); os.exit(2) end

local t0 = concur.time()
local ok, err = pcall(q.put, q, "new item", true, 1)
print(("put %s after %.1f s; qsize %d full %s"):format(ok and "succeeded" or "raised " .. tostring(err),
  concur.time() - t0, q:qsize(), tostring(q:full())))
local bug = not ok
local ok2, v = pcall(q.get, q, true, 0.2)   -- a living consumer takes head_lock: journal applied
print("then get:", ok2, tostring(v), "qsize", q:qsize())
if bug then
  print(("queue_dead_getter_journal: BUG reproduced (%s)"):format(so))
  os.exit(1)
end
print("queue_dead_getter_journal: OK")
