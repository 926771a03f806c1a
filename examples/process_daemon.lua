-- A daemon process and a non-daemon one.  At exit the script joins the
-- non-daemon child, but terminates the daemon child (SIGTERM) instead of
-- waiting: the daemon's "Exiting" line never appears.
local concur = require "concur"

local function daemon()
  local me = concur.current_process()
  print("Starting: " .. me.name, me.pid)
  concur.sleep(2)
  print("Exiting : " .. me.name, me.pid)   -- never printed
end

local function non_daemon()
  local me = concur.current_process()
  print("Starting: " .. me.name, me.pid)
  print("Exiting : " .. me.name, me.pid)
end

local d = concur.Process{name = "daemon", target = daemon, daemon = true}
local n = concur.Process{name = "non-daemon", target = non_daemon}
print("d.daemon = " .. tostring(d.daemon) .. ", n.daemon = " .. tostring(n.daemon))

d:start()
concur.sleep(0.1)
n:start()
concur.sleep(0.1)
print("main done; d:is_alive() ->", d:is_alive())
