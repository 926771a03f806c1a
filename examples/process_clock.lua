-- A Process subclass: init stores the interval, run prints the time a few
-- times, once every interval.  The parent starts it and waits for it.
local concur = require "concur"

local ClockProcess = concur.Process:extend()

function ClockProcess:init(interval)
  self.interval = interval
end

function ClockProcess:run()
  for _ = 1, 3 do
    print("The time is " .. os.date("%H:%M:%S"))
    concur.sleep(self.interval)
  end
end

local p = ClockProcess(0.5)
p:start()
print(p.name .. " started, pid " .. p.pid)
p:join()
print(p.name .. " ended, exit code " .. p.exitcode)
