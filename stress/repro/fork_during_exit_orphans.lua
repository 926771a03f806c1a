-- Reproducer: Process:start is not refused once the exit rules have begun.
--
-- A daemon thread that starts processes while the main thread runs the exit
-- rules (os.exit, or the end of the main chunk):
--   * holds the exit up for as long as it forks: proc_exit_rules() (src/
--     process.c) SIGTERMs and reaps "any daemon child still listed" until none
--     is, and new ones keep being listed -- with an endless forking loop the
--     process never ends and children pile up (thousands within seconds);
--   * can leave orphans: a child forked after that loop's last look is never
--     terminated and runs on after its parent is gone (seen once in
--     stress/stress.lua's shutdown, where a driver thread was still forking).
-- Starting a *thread* at that point raises "cannot start a thread at
-- interpreter shutdown"; starting a process does not.
--
--   LUA_PATH='./lua/?.lua;;' LUA_CPATH='./build/?.so;;' lua5.4 stress/repro/fork_during_exit_orphans.lua
--
-- Bounded here: the daemon thread starts at most 300 children back to back;
-- each exits by itself after 1 s; the outer script kills any left (by pid).
-- Expected: Process:start raises in the daemon thread once the exit rules
-- have begun, and the inner process ends right after os.exit.  Seen: never
-- refused; all 300 start, a third of them or more after os.exit, which waits
-- for the thread to finish forking (remove the bound and it never ends).
-- Suggested fix (verified: fork_during_exit_orphans.diff): a
-- `pr.shutting_down` flag set under pr.lock when proc_exit_rules() begins;
-- pr_start() then raises "cannot start a process at interpreter shutdown" (as
-- th_start does with rt.shutting_down); starts already past that check are
-- counted (pr.starting) and waited for before the exit loops, so those loops
-- see every child there will be.
local concur = require "concur"

if os.getenv("MODE") == "inner" then
  local dir = os.getenv("PIDDIR")
  local t = concur.Thread{daemon = true, args = {dir}, target = function(d)
    local concur = require "concur"
    for _ = 1, 300 do
      local ok = pcall(function()
        local p = concur.Process{daemon = true, args = {d}, target = function(dd)
          local f = io.open(dd .. "/" .. concur.getpid(), "w")
          f:write(string.format("%.6f", concur.time())); f:close()
          concur.sleep(1)
        end}
        p:start()
      end)
      if not ok then   -- refused at shutdown: what should happen
        io.open(d .. "/refused", "w"):close()
        return
      end
    end
  end}
  t:start()
  concur.sleep(0.1)
  local f = io.open(dir .. "/exit", "w")
  f:write(string.format("%.6f", concur.time())); f:close()
  os.exit(0)   -- the exit rules run while the daemon thread forks
end

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir " .. dir)
local t0 = concur.time()
os.execute(("MODE=inner PIDDIR=%s %s %s"):format(dir, arg[-1], arg[0]))
local took = concur.time() - t0
local function read(path) local f = io.open(path); local s = f:read("a"); f:close(); return tonumber(s) end
local exit_at = read(dir .. "/exit")
local refused = os.remove(dir .. "/refused") ~= nil
local after, orphans, total = 0, 0, 0
for name in io.popen("ls " .. dir):lines() do
  local pid = math.tointeger(tonumber(name))
  if pid then
    total = total + 1
    if read(dir .. "/" .. name) > exit_at then after = after + 1 end
    if os.execute("kill -0 " .. pid .. " 2>/dev/null") then
      orphans = orphans + 1
      os.execute("kill -KILL " .. pid)
    end
  end
  os.remove(dir .. "/" .. name)
end
os.execute("rmdir " .. dir)
local bug = not refused or orphans > 0
print(("inner process took %.2f s to exit; %d children started, %d of them after os.exit was called;\n"
  .. "Process:start refused during the exit: %s; %d children left running%s"):format(
  took, total, after, refused and "yes" or "NO", orphans, bug and "  BUG" or ""))
os.exit(bug and 1 or 0)
