-- Reproducer: a Barrier party that is already waiting never notices that the
-- process running the barrier's action was killed.  It sleeps until its own
-- timeout, and for ever without one.
--
--   LUA_PATH='./lua/?.lua;;' LUA_CPATH='./build/?.so;;' lua5.4 stress/repro-faults/barrier_action_killed.lua
--
-- Expected (DESIGN.md, "Death inside a critical section": "A Barrier's action
-- runner is recorded (action_pid); waiters sleep in slices during the action
-- and break the barrier if it died"): the waiting party's wait raises
-- BrokenBarrierError within about 0.1 s of the kill.
-- Seen: it raises only when its own timeout runs out (here 5 s); with no
-- timeout it waits for ever (the second case is given up after 10 s).
local concur = require "concur"
local core = require "concur.core"

local function case(timeout)
  local inside, who = concur.Event(), core.Slots(1)
  local b = concur.Barrier(2, function()
    local c = require "concur"
    who:set(1, c.getpid())
    inside:set()
    c.Event():wait(60)          -- the action runs until killed
  end)
  local function party()
    local ok, err = pcall(b.wait, b, timeout)
    os.exit(ok and 2 or err == concur.BrokenBarrierError and 0 or 3)
  end
  local ps = {concur.Process{target = party}, concur.Process{target = party}}
  ps[1]:start(); ps[2]:start()
  assert(inside:wait(10), "the action did not start")
  local runner, other = ps[1], ps[2]
  if ps[2].pid == who:get(1) then runner, other = ps[2], ps[1] end
  runner:kill()
  runner:join()
  local t0 = concur.time()
  local ended = other:join(10)
  local took = concur.time() - t0
  if not ended then other:kill(); other:join() end
  print(("wait(%s): the other party %s after %.2f s (exit code %s)"):format(tostring(timeout),
    ended and "ended" or "was STILL WAITING", took, tostring(other.exitcode)))
  return ended and took < 1
end

local ok1 = case(5)
local ok2 = case(nil)
print((ok1 and ok2) and "barrier_action_killed: OK" or "barrier_action_killed: BUG reproduced")
os.exit((ok1 and ok2) and 0 or 1)
