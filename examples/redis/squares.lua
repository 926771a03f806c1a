-- A script whose pool's workers may run on any machine that reaches the
-- Redis server: start one or more with
--   concur-worker --url redis://127.0.0.1:6379/0 --name squares --processes 2
-- then run this script (README, "More than one machine").
local concur = require "concur"
local redis = require "concur.redis"

local url = os.getenv("CONCUR_REDIS_URL") or "redis://127.0.0.1:6379/0"
local pool = redis.Pool{url = url, name = "squares"}

local offset = 1000   -- an upvalue: it travels with the function
print(table.concat(pool:map(function(x) return x * x + offset end, {1, 2, 3, 4, 5}), " "))

local r = pool:apply_async(function(a, b) return a + b, concur.getpid() end, {20, 22})
local sum, pid = r:get(10)
print("sum", sum, "computed in another process:", pid ~= concur.getpid())

-- A queue between any processes on any machines: items are tables, strings,
-- numbers, functions (with their upvalues).
local q = redis.Queue{url = url, name = "squares-log"}
q:put({done = 5, by = "squares.lua"})
local item = q:get(true, 5)
print("queue gave", item.done, item.by)
q:task_done()

pool:close()
pool:join()
