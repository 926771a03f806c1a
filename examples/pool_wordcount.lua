-- Counts the words of many files at once: pool:map hands the files to worker
-- processes and gives the counts back in the order of the list.
--   lua examples/pool_wordcount.lua [FILE...]
-- Without files it counts this directory's tutorial examples.
local concur = require "concur"

local function count_words(path)
  local f = assert(io.open(path, "rb"))
  local n = 0
  for _ in f:read("*a"):gmatch("%S+") do n = n + 1 end
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

-- close: no more tasks will come; join: wait until the workers have left.
-- (On Lua 5.4, `local pool <close> = concur.Pool(4)` terminates the pool at
-- the end of the block instead.)
local pool = concur.Pool(4)
local counts = pool:map(count_words, files)
pool:close()
pool:join()
local total = 0
for i, path in ipairs(files) do
  print(("%6d  %s"):format(counts[i], path))
  total = total + counts[i]
end
print(("%6d  total"):format(total))
