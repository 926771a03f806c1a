-- Shared state: four worker processes fill one Dict, bump one Value and
-- write their own slot of an Array, with no server and no queue.
local concur = require "concur"

local words = {"apple", "pear", "plum", "apple", "fig", "plum", "apple", "pear"}
local counts = concur.Dict()              -- word -> how many times seen
local seen = concur.Value(0)              -- words seen by all workers
local per_worker = concur.Array("int", 4) -- words seen by each worker

local workers = {}
for w = 1, 4 do
  workers[w] = concur.Process{target = function()
    for i = w, #words, 4 do                -- worker w takes every 4th word
      counts:update(words[i], function(n) return (n or 0) + 1 end)
      seen:add(1)
      per_worker:add(w, 1)
    end
  end}
  workers[w]:start()
end
for _, p in ipairs(workers) do p:join() end

local keys = counts:keys()
table.sort(keys)
for _, k in ipairs(keys) do print(k, counts[k]) end
print("seen", seen.value, "per worker", table.concat(per_worker:totable(), " "))
print(#counts .. " distinct words", tostring(counts))
