-- Counts the words of many files at once: pool:map hands the files to worker
-- processes and gives the counts back in the order of the list.
--   lua5.4 examples/pool_wordcount.lua [FILE...]
-- Without files it counts this directory's tutorial examples.
local concur = require "concur"

local function count_words(path)
  local f = assert(io.open(path, "rb"))
  local n = 0
  for _ in f:read("a"):gmatch("%S+") do n = n + 1 end
  f:close()
  return n
end

local files = {...}
if #files == 0 then
  local dir = arg[0]:match("^(.*)/") or "."
  for _, name in ipairs{"threads_join.lua", "lock_counter.lua", "condition_dialogue.lua",
                        "queue_threads.lua", "pool_tasks.lua", "pool_wordcount.lua"} do
    files[#files + 1] = dir .. "/" .. name
  end
end

local pool <close> = concur.Pool(4)   -- terminated at the end of the block
local counts = pool:map(count_words, files)
local total = 0
for i, path in ipairs(files) do
  print(("%6d  %s"):format(counts[i], path))
  total = total + counts[i]
end
print(("%6d  total"):format(total))
