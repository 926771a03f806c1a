-- The daemon pair again, but the main script joins both processes: join
-- waits for the daemon too, so its "Exiting" line appears this time.
local concur = require "concur"

local function daemon()
  local me = concur.current_process()
  print("Starting: " .. me.name, me.pid)
  concur.sleep(0.5)
  print("Exiting : " .. me.name, me.pid)
end

local function non_daemon()
  local me = concur.current_process()
  print("Starting: " .. me.name, me.pid)
  print("Exiting : " .. me.name, me.pid)
end

local d = concur.Process{name = "daemon", target = daemon, daemon = true}
local n = concur.Process{name = "non-daemon", target = non_daemon}

d:start()
concur.sleep(0.1)
n:start()

d:join()
n:join()
print("d.exitcode =", d.exitcode, "n.exitcode =", n.exitcode)
