-- Run by examples/embed/host: every thread has the host's own library.
local concur = require "concur"
local threads = {}
for i, who in ipairs({"alice", "bob", "carol"}) do
  threads[i] = concur.Thread{target = function(name) return host.greet(name) end, args = {who}}
  threads[i]:start()
end
for _, t in ipairs(threads) do print(t:result()) end
local bad = concur.Thread{name = "failing", target = function() error("this error is reported by the host") end}
bad:start()
bad:join()
