-- Scale: many threads at once, many objects made and collected, a very long
-- queue.  Prints what it measured and ends with "scale: PASS ..." or
-- "scale: FAIL ...".
--
--   lua5.4 stress/scale.lua [threads] [objects] [queue-items]
--   (defaults 1000, 10000, 10000000; `make scale` runs it)
local concur = require "concur"
local core = require "concur.core"

local NTHREADS = tonumber(arg[1]) or 1000
local NOBJECTS = tonumber(arg[2]) or 10000
local NITEMS = tonumber(arg[3]) or 10000000

local failures = {}
local function check(ok, what)
  if not ok then failures[#failures + 1] = what end
  return ok
end

-- /proc/self/status fields, in KiB.
local function status(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s+(%d+)")) or 0
end

local function gc()
  for _ = 1, 3 do collectgarbage("collect") end
end

-- 1. Threads alive at once ------------------------------------------------------

-- Starts n threads that all wait on one Event, measures, releases them.
local function threads_at_once(n)
  local go, ready = concur.Event(), concur.Semaphore(0)
  local rss0, vm0 = status("VmRSS"), status("VmSize")
  local t0 = concur.time()
  local ts = {}
  for i = 1, n do
    ts[i] = concur.Thread{target = function(go, ready, i)
      ready:release()
      go:wait()
      return i
    end, args = {go, ready, i}}
    ts[i]:start()
  end
  for _ = 1, n do assert(ready:acquire(true, 60), "a thread did not start") end
  local started = concur.time() - t0
  local alive = concur.active_count() - 1
  local rss, vm = status("VmRSS") - rss0, status("VmSize") - vm0
  go:set()
  local sum = 0
  for i = 1, n do
    ts[i]:join()
    sum = sum + ts[i]:result()
  end
  check(sum == n * (n + 1) // 2, "a thread's result was lost")
  check(alive >= n, ("only %d of %d threads were alive at once"):format(alive, n))
  return alive, rss / n, vm / n, started
end

-- Each count runs in a fresh child, so that one batch's stacks (cached by
-- the C library after the threads end) do not blur the next one's figures.
local function in_child(stack)
  local q = concur.Queue()
  local p = concur.Process{target = function(q, n, stack)
    if stack then concur.stack_size(stack) end
    q:put({threads_at_once(n)})
  end, args = {q, NTHREADS, stack}}
  p:start()
  local r = q:get(true, 300)
  p:join()
  check(p.exitcode == 0, "the thread count's child failed")
  return table.unpack(r)
end

for _, stack in ipairs({false, 1024 * 1024}) do
  local alive, rss_each, vm_each, took = in_child(stack)
  print(("threads:  %d alive at once, started in %.2f s; per thread %.0f KiB resident, %.0f KiB address space (%s)")
    :format(alive, took, rss_each, vm_each, stack and "stack_size 1 MiB" or "default stack"))
end

-- 2. Objects made and collected without growth -------------------------------------

local kinds = {
  Lock = function() return concur.Lock() end,
  RLock = function() return concur.RLock() end,
  Condition = function() return concur.Condition() end,
  Semaphore = function() return concur.Semaphore(3) end,
  Event = function() return concur.Event() end,
  Barrier = function() return concur.Barrier(2) end,
  Queue = function() local q = concur.Queue(); q:put({1, "x"}); return q end,
  Pipe = function() local a, b = concur.Pipe(); a:send("x"); return {a, b} end,
  Thread = function() return concur.Thread{target = print} end,
}
local kind_names = {}
for k in pairs(kinds) do kind_names[#kind_names + 1] = k end
table.sort(kind_names)

local function churn(n)
  for _, k in ipairs(kind_names) do
    local make = kinds[k]
    local keep = {}
    for i = 1, n do
      keep[i % 100 + 1] = make()   -- at most 100 alive at once
    end
  end
  gc()
end

-- Warm up first: each size class of the arena's free lists, the identity
-- map and the C library's heap grow to the peak the collector's pacing
-- leaves alive, then stay there.
for _ = 1, 3 do churn(NOBJECTS) end
local shm1, top1 = core.shm_in_use()
local rss1, lua1 = status("VmRSS"), collectgarbage("count")
local t0 = concur.time()
for _ = 1, 3 do churn(NOBJECTS) end
local churn_s = concur.time() - t0
local shm2, top2 = core.shm_in_use()
local rss2, lua2 = status("VmRSS"), collectgarbage("count")
print(("objects:  3 x %d of each of %d kinds made and collected in %.1f s (%.0f k objects/s): arena in use %+d bytes, arena touched %+d KiB, Lua heap %+.0f KiB, resident %+d KiB")
  :format(NOBJECTS, #kind_names, churn_s, 3 * NOBJECTS * #kind_names / churn_s / 1e3,
          shm2 - shm1, (top2 - top1) // 1024, lua2 - lua1, rss2 - rss1))
check(shm2 <= shm1, ("the shared arena's blocks grew by %d bytes"):format(shm2 - shm1))
check(top2 - top1 <= 1024 * 1024, ("the shared arena's touched part grew by %d KiB"):format((top2 - top1) // 1024))
check(lua2 - lua1 < 512, ("the Lua heap grew by %.0f KiB"):format(lua2 - lua1))
check(rss2 - rss1 < 4096, ("resident memory grew by %d KiB"):format(rss2 - rss1))

-- 3. A queue with many items ---------------------------------------------------------

do
  local q = concur.Queue()
  local shm0 = (core.shm_in_use())
  local t1 = concur.time()
  for i = 1, NITEMS do q:put(i) end
  local put_s = concur.time() - t1
  local held = q:qsize()
  local peak = (core.shm_in_use()) - shm0
  local t2 = concur.time()
  local sum, in_order = 0, true
  for i = 1, NITEMS do
    local v = q:get()
    if v ~= i then in_order = false end
    sum = sum + v
  end
  local get_s = concur.time() - t2
  local left = (core.shm_in_use()) - shm0
  print(("queue:    %d items put in %.1f s (%.1f M/s), %d held at once in %.0f MiB of the arena (%.1f bytes each), got in %.1f s (%.1f M/s); %d bytes left after")
    :format(NITEMS, put_s, NITEMS / put_s / 1e6, held, peak / 2^20, peak / NITEMS, get_s,
            NITEMS / get_s / 1e6, left))
  check(held == NITEMS, ("qsize said %d, not %d"):format(held, NITEMS))
  check(in_order and sum == NITEMS * (NITEMS + 1) // 2, "items came back wrong or out of order")
  check(q:empty() and left <= 64 * 1024, ("the queue kept %d bytes after it was emptied"):format(left))
end

for _, f in ipairs(failures) do print("FAIL " .. f) end
print(("scale: %s (%d threads at once, %d objects of each kind x 3, %d queue items)")
  :format(#failures == 0 and "PASS" or "FAIL", NTHREADS, NOBJECTS, NITEMS))
os.exit(#failures == 0 and 0 or 1)
