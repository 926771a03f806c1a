-- Reproducer: a forked child that starts a *daemon* thread, joins it (its
-- result is read), and then ends normally, sometimes leaves the shared objects
-- that thread received (here a Lock) referenced for ever: they leak from the
-- shared arena.  Non-daemon threads, and daemon threads in the main process,
-- do not leak.
--
--   LUA_PATH='./lua/?.lua;;' LUA_CPATH='./build/?.so;;' lua5.4 stress/repro/daemon_thread_in_child_leaks.lua
--
-- Expected: "leaked 0 bytes" for both; seen: the daemon case leaks in most
-- rounds (the thread keeps a big table, so closing its state takes a while).
--
-- Why (src/thread.c): task_finish() marks the thread TH_DONE and wakes its
-- joiners under rt.lock, but a daemon thread's worker stays counted in
-- rt.ndaemon_busy until later: worker_main lua_close()s the thread's state
-- (which is what gives back the state's references to shared objects), builds
-- a fresh one, and only then takes rt.lock again for `rt.ndaemon_busy--`.
-- thread_exit_rules() waits only while `rt.nworkers > rt.ndaemon_busy +
-- self_extra`, so a child whose main thread joined the daemon thread and
-- returned runs its exit rules, sees the worker as "busy with a daemon
-- thread", does not wait, and _exits while the worker is still closing (or
-- has not yet started closing) the state: those references are never given
-- back.  (In the main process of a family the same race is harmless: the
-- arena goes away with the family.)
--
-- Fix (verified; stress/repro/daemon_thread_in_child_leaks.diff): do the
-- `rt.ndaemon_busy--` (and broadcast rt.exit_cond) in task_finish(), under the
-- same lock hold that sets TH_DONE, and drop the later decrement; the exit
-- rules then wait for that worker, which closes the state and leaves.
local concur = require "concur"
local core = require "concur.core"

local function inuse()
  collectgarbage(); collectgarbage()
  return core.shm_in_use()
end

local function child(lk, daemon)
  local t = concur.Thread{daemon = daemon, args = {lk}, target = function(l)
    l:acquire(); l:release()
    local junk = {}
    for i = 1, 200000 do junk[i] = {i} end   -- makes lua_close take a while
    KEEP = junk
    return 1
  end}
  t:start()
  assert(t:result() == 1)
  assert(t:join())
end

local fails = 0
for _, daemon in ipairs({false, true}) do
  local before = inuse()
  local rounds = 20
  for _ = 1, rounds do
    local lk = concur.Lock()
    local p = concur.Process{target = child, args = {lk, daemon}}
    p:start()
    p:join()
    assert(p.exitcode == 0, "child failed")
  end
  local leaked = inuse() - before
  print(("%-10s thread in a child, %d rounds: leaked %d bytes%s"):format(
    daemon and "daemon" or "non-daemon", rounds, leaked, leaked > 0 and "  LEAK" or ""))
  if leaked > 0 then fails = fails + 1 end
end
os.exit(fails == 0 and 0 or 1)
