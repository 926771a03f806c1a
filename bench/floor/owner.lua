-- bench/floor/owner.lua: the least a thread pool of Lua workers can cost per
-- task on this machine (issue 20's floor; see bench/README.md).
--
-- A "task" here is only what any pool must do for `apply_async(f, {i})`
-- then `get()`, with nothing else: the caller's {i}, one method call, one
-- result object in a pending table, the task's values put into a shared
-- queue (q:_putv, the one copy a thread boundary needs), the result taken
-- back (q:_takev / q:_getv) and settled, one get call.  No argument checks,
-- no census, no function ids, no callbacks, no errors.
--
-- Prints, in µs per task (best of REPS):
--   1. one thread doing the owner's half (submit, then settle + get) and the
--      worker's half in between, timed apart: CPU with no wake-up and no
--      other core;
--   2. the same owner with W worker threads really running (a bare loop of
--      _getv, call, _putv on each): the wall time per task of the floor
--      design, beside concur.ThreadPool(W):apply_async on the same loop.
local concur = require "concur"
local W = tonumber(arg and arg[1]) or 2
local K, REPS = 20000, 8
local clock, now = os.clock, concur.time

local AR = {}
AR.__index = AR
function AR:get()
  local p = self._pool
  while not self._ready do p:settle(p.getv(p.rq)) end
  return self._value
end
local P = {}
P.__index = P
local function pool(tq, rq)
  return setmetatable({n = 0, pending = {}, tq = tq, rq = rq, putv = tq._putv, getv = tq._getv,
    takev = tq._takev, qsize = tq.qsize}, P)
end
function P:apply_async(fn, args)
  local tid = self.n + 1
  self.n = tid
  self.putv(self.tq, tid, "call", 1, args[1])
  local r = setmetatable({_pool = self, _ready = false}, AR)
  self.pending[tid] = r
  if self.qsize(self.rq) > 0 then   -- collect what came back meanwhile
    repeat self:settle(self.takev(self.rq)) until self.qsize(self.rq) == 0
  end
  return r
end
function P:settle(tid, ok, v)
  local r = self.pending[tid]
  self.pending[tid] = nil
  r._value, r._ok, r._ready = v, ok, true
end
local function f(x) return x end

-- 1. One thread, no wake-ups.
local p = pool(concur.Queue(), concur.Queue())
local sub, set, work = math.huge, math.huge, math.huge
for _ = 1, REPS do
  collectgarbage()
  local rs = {}
  local t0 = clock()
  for i = 1, K do rs[i] = p:apply_async(f, {i}) end
  local t1 = clock()
  for _ = 1, K do   -- the worker's share
    local tid, _, _, x = p.getv(p.tq)
    p.putv(p.rq, tid, true, f(x))
  end
  local t2 = clock()
  for i = 1, K do assert(rs[i]:get() == i) end
  local t3 = clock()
  sub, set, work = math.min(sub, t1 - t0), math.min(set, t3 - t2), math.min(work, t2 - t1)
end
print(string.format("one thread: submit %.3f, settle + get %.3f (owner %.3f), worker %.3f us/task",
  sub / K * 1e6, set / K * 1e6, (sub + set) / K * 1e6, work / K * 1e6))

-- 2. With W worker threads.
local function rate(apply_async)
  local b = math.huge
  for _ = 1, REPS do
    collectgarbage()
    local t0 = now()
    local rs = {}
    for i = 1, K do rs[i] = apply_async(f, {i}) end
    for i = 1, K do assert(rs[i]:get() == i) end
    b = math.min(b, now() - t0)
  end
  return b / K * 1e6
end
local tq, rq = concur.Queue(), concur.Queue()
local threads = {}
for w = 1, W do
  threads[w] = concur.Thread{target = function()
    while true do
      local tid, _, _, x = tq:_getv()
      if tid == 0 then return end
      rq:_putv(tid, true, x)
    end
  end}
  threads[w]:start()
end
p = pool(tq, rq)
local bare = rate(function(fn, args) return p:apply_async(fn, args) end)
for _ = 1, W do tq:_putv(0) end
for w = 1, W do threads[w]:join() end
local tp = concur.ThreadPool(W)
local real = rate(function(fn, args) return tp:apply_async(fn, args) end)
tp:terminate()
print(string.format("%d workers: floor %.3f us/task (%.0f k/s), ThreadPool %.3f us/task (%.0f k/s)",
  W, bare, 1e3 / bare, real, 1e3 / real))
