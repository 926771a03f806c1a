--- concur.redis: Queue and Pool past one machine, on a Redis server
--- (API.md, "More than one machine"; README, "More than one machine").
--
-- A second rock, concur-redis (concur-redis-scm-1.rockspec): the C part,
-- concur.redis.core, is a small hiredis binding (src/redis/redis.c); the
-- policy is Lua: concur.redis.queue (redis.Queue) and concur.redis.pool
-- (redis.Pool, and the loop the concur-worker script runs).  Values cross
-- as concur's transfer encoding made self-contained (core.encode): the same
-- rules as between processes, except that concur objects cannot leave their
-- machine.
local concur = require "concur"

local redis = {
  Empty = concur.Empty, Full = concur.Full, ShutDown = concur.ShutDown,
  TimeoutError = concur.TimeoutError,
}

-- Loaded on first use, so a script using only the Queue never loads the Pool.
local lazy = {
  Queue = "concur.redis.queue", Pool = "concur.redis.pool",
  worker_main = "concur.redis.pool",
}

return setmetatable(redis, {
  __index = function(t, key)
    local module = lazy[key]
    if module == nil then return nil end
    local m = require(module)
    rawset(t, key, m[key])
    return m[key]
  end,
})
