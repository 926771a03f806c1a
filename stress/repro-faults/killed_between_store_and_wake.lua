-- Reproducer: a process killed between the store that publishes a change and
-- the futex wake that should follow leaves the sleepers asleep, for ever if
-- they wait without a timeout, although the change is there to see:
--
--   Event.set          (src/sync.c event_set: the CAS sets the flag, then
--                       `if (nwaiters > 0) fx_wake`)          -> e:wait() never returns
--   Semaphore.release  (src/sync.c sem_release: the CAS adds the unit, then
--                       `if (nwaiters > 0) fx_wake`)          -> s:acquire() never returns
--
-- Their waiters call fx_wait(word, seen, d, 0): slice 0, so no wake-up until
-- the deadline.  Lock waiters (PWORD_SLICE_MS), Condition waiters
-- (LOCK_SLICE_MS) and Queue waiters (QUEUE_SLICE_MS) sleep in slices and
-- get over the same kind of death.  (Barrier's barrier_changed, a seq bump
-- then a wake, has the same gap for its FILLING sleepers, and so does a
-- barrier runner's B_ACTION: see barrier_action_killed.lua.)
--
-- The kill must land between two instructions, so the child is stopped with
-- gdb on the wake's line and killed there.  Needs gdb and the -g build.
--
--   LUA_PATH='./lua/?.lua;;' LUA_CPATH='./build/?.so;;' lua5.4 stress/repro-faults/killed_between_store_and_wake.lua
--
-- Expected: the waiter returns at once (the flag is set, the unit is there).
-- Seen:     "waiter still asleep after 3 s, though is_set() = true"
--           "waiter still asleep after 3 s, though get_value() = 1"
-- Fix idea: sleep in slices there too (fx_wait(..., SLICE_MS)); the loops
-- already look again after every return.
local concur = require "concur"

local function src_line(pattern, nth)
  local n = 0
  local i = 0
  for line in io.lines("src/sync.c") do
    i = i + 1
    if line:find(pattern, 1, true) then
      n = n + 1
      if n == nth then return i end
    end
  end
  error("no line with " .. pattern)
end

-- Runs act() in a child that gdb stops at src/sync.c:line and kills there.
local function killed_at(line, act)
  local go_on = concur.Event()
  local child = concur.Process{target = function()
    go_on:wait(30)
    act()
    os.exit(0)
  end}
  child:start()
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("set pagination off\nset breakpoint pending on\nbreak sync.c:%d\ncontinue\nkill\nquit\n"):format(line))
  f:close()
  local gdb = io.popen(("gdb -q -batch -p %d -x %s 2>&1"):format(child.pid, script))
  for _ = 1, 200 do
    local st = io.open("/proc/" .. child.pid .. "/status"):read("*a")
    if tonumber(st:match("TracerPid:%s*(%d+)")) ~= 0 then break end
    concur.sleep(0.05)
  end
  concur.sleep(1)                 -- gdb sets its breakpoint and continues
  go_on:set()
  local out = gdb:read("*a")
  gdb:close()
  os.remove(script)
  assert(child:join(10))
  return child.exitcode == -9, out:match("Breakpoint 1[%.%d]*, [^\n]*") or out
end

local bugs = 0

local function case(name, line, waiter_fn, act, state)
  local ready = concur.Event()
  local waiter = concur.Process{target = function()
    ready:set()
    waiter_fn()                   -- no timeout
    os.exit(0)
  end}
  waiter:start()
  assert(ready:wait(10))
  concur.sleep(0.3)               -- the waiter is asleep on its futex by now
  local killed, where = killed_at(line, act)
  if not killed then
    print(name .. ": the child was not killed at the breakpoint: no reproduction", where)
    waiter:kill(); waiter:join()
    return
  end
  local woke = waiter:join(3)
  if woke then
    print(("%s: OK, the waiter woke (%s)"):format(name, state()))
  else
    bugs = bugs + 1
    print(("%s: waiter still asleep after 3 s, though %s   [%s]"):format(name, state(), where))
    waiter:kill(); waiter:join()
  end
end

local e = concur.Event()
case("Event.set", src_line("if (atomic_load(&e->nwaiters) > 0)", 1),
  function() e:wait() end, function() e:set() end,
  function() return "is_set() = " .. tostring(e:is_set()) end)

local s = concur.Semaphore(0)
case("Semaphore.release", src_line("if (atomic_load(&s->nwaiters) > 0)", 1),
  function() s:acquire() end, function() s:release() end,
  function() return "get_value() = " .. s:get_value() end)

print(bugs > 0 and ("killed_between_store_and_wake: BUG reproduced (%d of 2)"):format(bugs)
  or "killed_between_store_and_wake: OK")
os.exit(bugs > 0 and 1 or 0)
