-- Daemon threads: the process does not wait for them.  The daemon sleeps
-- longer than the program lives, so its last line never appears; join with a
-- timeout returns false while it is still alive.
local concur = require "concur"

local function daemon()
  local me = concur.current_thread()
  print(me.name .. " starting")
  concur.sleep(2)
  print(me.name .. " exiting")        -- never printed
end

local function non_daemon()
  local me = concur.current_thread()
  print(me.name .. " starting")
  print(me.name .. " exiting")
end

local d = concur.Thread{name = "daemon", target = daemon, daemon = true}
local t = concur.Thread{name = "non-daemon", target = non_daemon}

d:start()
t:start()

print("d:join(0.1) ->", d:join(0.1))
print("d:is_alive() ->", d:is_alive())
t:join()
print("main done; the daemon thread is dropped at exit")
