-- A shared counter, first without a lock (updates get lost), then with a
-- concur.Lock (exact), across threads and then across processes; last, an
-- RLock taken again by a function that already holds it.
--
-- Threads and processes share no Lua variables, so the counter lives in a
-- file: each increment reads the number and writes the next one over it.
-- That read-modify-write is the race the lock closes.
local concur = require "concur"

local path = os.tmpname()

-- Fixed width, written in place: a reader never sees a half-written file.
local function write_counter(n, f)
  f = f or assert(io.open(path, "w"))
  f:write(("%10d"):format(n))
  f:close()
end

local function increment(times, lock)
  for _ = 1, times do
    if lock then lock:acquire() end
    local f = assert(io.open(path, "r+"))
    local n = f:read("*n")
    f:seek("set")
    write_counter(n + 1, f)
    if lock then lock:release() end
  end
end

local function run(Runner, lock, label)
  write_counter(0)
  local workers = {}
  for i = 1, 4 do
    workers[i] = Runner{target = increment, args = {250, lock}}
    workers[i]:start()
  end
  for _, w in ipairs(workers) do w:join() end
  local f = assert(io.open(path))
  local n = f:read("*n")
  f:close()
  print(("%-28s counter = %4d (expected 1000)%s"):format(label, n,
    n == 1000 and "" or ", updates were lost"))
  return n
end

run(concur.Thread, nil, "4 threads, no lock:")
assert(run(concur.Thread, concur.Lock(), "4 threads, with a Lock:") == 1000)
run(concur.Process, nil, "4 processes, no lock:")
assert(run(concur.Process, concur.Lock(), "4 processes, with a Lock:") == 1000)

-- RLock: the holder may take it again; only as many releases free it.
local rlock = concur.RLock()
local balance = 100

local function withdraw(amount)
  rlock:with(function()
    balance = balance - amount
    print(("withdrew %3d  %s"):format(amount, tostring(rlock)))
  end)
end

local function pay_fee_and_withdraw(amount)
  rlock:with(function()          -- held here ...
    withdraw(1)                  -- ... and taken again inside: no deadlock
    withdraw(amount)
  end)
end

pay_fee_and_withdraw(10)
print("balance:", balance, rlock)
os.remove(path)
