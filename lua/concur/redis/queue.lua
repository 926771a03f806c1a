--- concur.redis.queue: redis.Queue, the Queue interface across machines.
--
-- redis.Queue{url=, name=, maxsize=, secret=, timeout=, lease=}: put, get,
-- put_nowait, get_nowait, qsize, empty, full, task_done, join, shutdown and
-- close, with the local Queue's arguments, checks, errors and error values
-- (concur.Empty, concur.Full, concur.ShutDown), for any processes on any
-- machines that reach the server.
--
-- Keys (all under the hash tag {NAME}, so a cluster keeps them together):
--   concur:q:{NAME}:items        list: put LPUSHes, get takes from the right
--   concur:q:{NAME}:unfinished   counter: put INCRs, task_done DECRs, join
--                                waits for 0
--   concur:q:{NAME}:shutdown     set once shutdown() was called
--   concur:q:{NAME}:maxsize      the maxsize, stored at the first opening
--   concur:q:{NAME}:ids          counter giving consumer ids
--   concur:q:{NAME}:consumers    set of the consumer ids that took items
--   concur:q:{NAME}:taken:CID    a consumer's processing list (0 or 1 item)
--   concur:q:{NAME}:alive:CID    the consumer's lease (PX ttl)
--   concur:q:{NAME}:undecodable  items a get could not decode, kept
--
-- Delivery is at least once (Redis' reliable-queue pattern): get moves the
-- item atomically from items into the consumer's taken list (LMOVE, or
-- BLMOVE when blocking; one pipelined round trip with the DEL of the item
-- taken before, and, every lease/3, the lease's renewal); the item stays there until
-- the consumer's next get, task_done or close, which drop it (it was handed
-- over).  A consumer killed meanwhile stops refreshing its lease; any other
-- consumer's get, every few seconds (lease/3, at most 5 s), runs one script
-- that moves the taken items of every consumer whose lease expired back to
-- the front of items (the next get has them) and forgets the consumer.  So a
-- consumer whose work on one item takes longer than the lease (default 30 s,
-- option `lease`) has that item given to another consumer too: choose the
-- lease above the longest task.  A clean end drops the taken item: close(),
-- the collector, or os.exit(code, true) on 5.2+ (which closes the state); a plain
-- os.exit() or a kill leaves it to be given again after the lease.
--
-- maxsize: stored at the first opening (SET NX); a later opening without
-- maxsize takes the stored one; one with another maxsize is an error (two
-- processes would disagree about when the queue is full).  put runs one
-- script that checks the shutdown flag and LLEN against the stored maxsize
-- and pushes, atomically, so concurrent producers never exceed it; a
-- blocked put polls with a backoff up to 50 ms.  A blocked get loops on
-- BLMOVE with blocks of at most 1 s, so a shutdown (and the recovery of dead
-- consumers) is noticed within a second.  join polls the counter with a
-- backoff up to 50 ms.  qsize, empty and full read LLEN: approximate, as
-- Python says.
--
-- shutdown() sets a flag that stays: the name is shut down for every
-- process from then on (delete the keys concur:q:{NAME}:* to start over).
--
-- Items are core.encode(item, secret) bytes: the transfer rules, functions
-- as bytecode with upvalues (their MAC keyed by `secret`, default
-- $CONCUR_REDIS_SECRET or a built-in key), concur objects refused at put
-- (nothing is pushed).  An item that does not decode at get (another Lua
-- runtime, another secret) is moved to the undecodable list, not lost, and
-- get raises the decoder's error.
--
-- A Queue holds a connection (a userdata), so it cannot cross to a thread or
-- process by value: open redis.Queue{...} again there with the same name
-- (cheap: a connection and one GET).  A forked child may use its parent's
-- Queue: the connection reconnects there, and the child is another
-- consumer (the consumer id includes the pid, recomputed after a fork).
local concur = require "concur"
local core = require "concur.core"
local rc = require "concur.redis.core"

local layer = getmetatable(concur).layer
local raise, raise_value, check_options = layer.raise, layer.raise_value, layer.check_options
local pack, unpack = layer.pack, layer.unpack
local getpid, now, sleep = concur.getpid, concur.time, concur.sleep
local TIMEOUT_MAX, HUGE = concur.TIMEOUT_MAX, math.huge

local SLICE = 1.0          -- longest BLMOVE block, seconds
local POLL_MAX = 0.05      -- longest poll step of a blocked put and of join

local Queue = {}
Queue.__index = Queue
local queues = setmetatable({}, {__mode = "k"})   -- the Queue objects

-- Scripts ---------------------------------------------------------------------
-- Run with EVALSHA, falling back to EVAL on NOSCRIPT (a restarted server).

local function script(body)
  return {body = body, sha = core.sha1 and core.sha1(body) or nil}
end

-- KEYS: items, unfinished, shutdown; ARGV: item, maxsize (the stored one,
-- which never changes).  Returns 1 pushed, 0 full, -1 shut down.
local PUT = script [[
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local max = tonumber(ARGV[2])
if max > 0 and redis.call('LLEN', KEYS[1]) >= max then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return 1
]]

-- KEYS: items, consumers; ARGV: prefix ("concur:q:{NAME}:").
-- Gives the taken items of every consumer whose lease expired back to the
-- front (the right end) of items; returns how many.
local RECOVER = script [[
local n = 0
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[1] .. 'alive:' .. cid) == 0 then
    local taken = ARGV[1] .. 'taken:' .. cid
    while redis.call('LMOVE', taken, KEYS[1], 'LEFT', 'RIGHT') do n = n + 1 end
    redis.call('SREM', KEYS[2], cid)
  end
end
return n
]]

-- KEYS: unfinished, taken. Returns -1 when nothing is unfinished.
local TASK_DONE = script [[
redis.call('DEL', KEYS[2])
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n <= 0 then return -1 end
return redis.call('DECR', KEYS[1])
]]

-- KEYS: items, unfinished, shutdown; ARGV: immediate (0/1).
local SHUTDOWN = script [[
redis.call('SET', KEYS[3], '1')
if ARGV[1] == '1' then
  local n = redis.call('LLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
  local u = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if n > u then n = u end
  if n > 0 then redis.call('DECRBY', KEYS[2], n) end
end
return 1
]]

-- Calls ---------------------------------------------------------------------

local function strip(e)
  -- a message from a C function may carry no position; one from Lua code
  -- of this layer might: keep the text only
  return (type(e) == "string" and e:gsub("^[^:\n]*:%d+: ", "")) or e
end

-- conn:call, its error raised at the user's line.
local function call(self, ...)
  local r = pack(pcall(self.conn.call, self.conn, ...))
  if not r[1] then
    if type(r[2]) == "string" then raise(strip(r[2]), 2) end
    error(r[2], 0)
  end
  return unpack(r, 2, r.n)
end

local function eval(self, s, nkeys, ...)
  if s.sha then
    local ok, r = pcall(self.conn.call, self.conn, "EVALSHA", s.sha, nkeys, ...)
    if ok then return r end
    if type(r) ~= "string" or not r:find("NOSCRIPT", 1, true) then
      if type(r) == "string" then raise(strip(r), 2) end
      error(r, 0)
    end
  end
  local ok, r = pcall(self.conn.call, self.conn, "EVAL", s.body, nkeys, ...)
  if not ok then
    if type(r) == "string" then raise(strip(r), 2) end
    error(r, 0)
  end
  if not s.sha then
    -- learn the sha once: SCRIPT LOAD answers it
    local ok2, sha = pcall(self.conn.call, self.conn, "SCRIPT", "LOAD", s.body)
    if ok2 and type(sha) == "string" then s.sha = sha end
  end
  return r
end

-- Arguments -------------------------------------------------------------------

local function check_self(self, fname)
  if not queues[self] then
    layer.bad_self(self, "concur.redis.Queue", fname, 3)
  end
end

local function argerror(n, fname, msg)
  raise(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function check_block(v, n, fname)
  if v == nil then return true end
  if type(v) ~= "boolean" then
    argerror(n, fname, "boolean expected, got " .. layer.typename(v))
  end
  return v
end

local function check_timeout(v, n, fname)
  if v == nil then return -1 end
  if type(v) ~= "number" then
    local x = type(v) == "string" and tonumber(v)
    if not x then argerror(n, fname, "number expected, got " .. layer.typename(v)) end
    v = x
  end
  if not (v >= 0) then argerror(n, fname, "timeout must be a non-negative number") end
  if v == HUGE then return -1 end
  if v > TIMEOUT_MAX then
    argerror(n, fname, "timeout must be at most concur.TIMEOUT_MAX (or math.huge: forever)")
  end
  return v
end

local function no_more(n, most, fname)
  if n > most then argerror(most + 1, fname, "no value expected") end
end

-- The consumer id: a number from the server's counter, and the pid; a new
-- one after a fork (the child is another consumer).
local function consumer(self)
  local pid = getpid()
  if self.pid ~= pid then
    self.pid = pid
    self.cid = tostring(call(self, "INCR", self.prefix .. "ids")) .. "-" .. tostring(pid)
    self.k_taken = self.prefix .. "taken:" .. self.cid
    self.k_alive = self.prefix .. "alive:" .. self.cid
    self.next_recover = 0
    self.next_renew = 0
  end
  return self.cid
end

-- Constructor -------------------------------------------------------------------

local OPTIONS = {url = true, name = true, maxsize = true, secret = true, timeout = true,
  lease = true}

local closer_mt = {__gc = function(p) local q = p[1]; if q then pcall(q.close, q) end end}

local function new_closer(q)
  -- a finalizer that closes q (drops its taken item): a table with __gc on
  -- 5.2+, a proxy userdata on 5.1 and LuaJIT
  if newproxy then
    local p = newproxy(true)
    getmetatable(p).__gc = function() pcall(q.close, q) end
    return p
  end
  return setmetatable({q}, closer_mt)
end

local function new(opts, ...)
  local fname = "Queue"
  check_options(opts, OPTIONS, fname, 2)
  if select("#", ...) > 0 then argerror(2, fname, "no value expected") end
  local name = opts.name
  if type(name) ~= "string" or name == "" then
    argerror(1, fname, "name: expected a non-empty string, got " .. layer.typename(name))
  end
  local url = opts.url
  if url == nil then url = os.getenv("CONCUR_REDIS_URL") or "redis://127.0.0.1:6379/0" end
  if type(url) ~= "string" then argerror(1, fname, "url: expected a string, got " .. type(url)) end
  local maxsize = opts.maxsize
  if maxsize ~= nil then
    if type(maxsize) ~= "number" then
      argerror(1, fname, "option 'maxsize': integer expected, got " .. layer.typename(maxsize))
    end
    if maxsize ~= math.floor(maxsize) or maxsize ~= maxsize then
      argerror(1, fname, "option 'maxsize': number has no integer representation")
    end
    if maxsize > 2147483647 then argerror(1, fname, "maxsize too large") end
    if maxsize < 0 then maxsize = 0 end
  end
  local secret = opts.secret
  if secret == nil then secret = os.getenv("CONCUR_REDIS_SECRET") end
  if secret ~= nil and type(secret) ~= "string" then
    argerror(1, fname, "secret: expected a string, got " .. layer.typename(secret))
  end
  local timeout = opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0)) then
    argerror(1, fname, "timeout: expected a positive number")
  end
  local lease = opts.lease or 30
  if type(lease) ~= "number" or not (lease >= 0.05) then
    argerror(1, fname, "lease: expected a number of seconds >= 0.05")
  end
  local ok, conn = pcall(rc.connect, url, timeout or 5)
  if not ok then raise(strip(conn), 2) end
  -- the socket timeout stays above the longest BLMOVE block
  local sock = timeout or 10
  if sock < SLICE + 5 then sock = SLICE + 5 end
  conn:set_timeout(sock)
  local prefix = "concur:q:{" .. name .. "}:"
  local self = setmetatable({
    conn = conn, name = name, url = url, secret = secret, prefix = prefix,
    lease_ms = math.floor(lease * 1000 + 0.5),
    recover_every = math.min(lease / 3, 5),
    renew_every = lease / 3,
    -- a blocked get renews its lease between blocks: a block is at most
    -- half the lease, so a live consumer's lease never runs out
    slice = math.min(SLICE, lease / 2),
    k_items = prefix .. "items", k_unfinished = prefix .. "unfinished",
    k_shutdown = prefix .. "shutdown", k_maxsize = prefix .. "maxsize",
    k_consumers = prefix .. "consumers", k_undecodable = prefix .. "undecodable",
  }, Queue)
  queues[self] = true
  -- the maxsize: the stored one; the first opening stores its own
  local r = pack(pcall(function()
    local stored = conn:call("SET", self.k_maxsize, maxsize or 0, "NX", "GET")
    return stored
  end))
  local stored
  if r[1] then
    stored = r[2]
  else
    -- SET ... NX GET needs Redis 7.0; fall back on SETNX + GET
    local ok2, e = pcall(conn.call, conn, "SETNX", self.k_maxsize, maxsize or 0)
    if not ok2 then conn:close(); raise(strip(e), 2) end
    stored = e == 1 and nil or conn:call("GET", self.k_maxsize)
  end
  stored = tonumber(stored)
  if stored == nil then
    self.maxsize = maxsize or 0
  elseif maxsize ~= nil and stored ~= maxsize then
    conn:close()
    argerror(1, fname, ("maxsize %d differs from the maxsize %d the queue '%s' was made with")
      :format(maxsize, stored, name))
  else
    self.maxsize = stored
  end
  self.closer = new_closer(self)
  return self
end

-- Methods -----------------------------------------------------------------------

local function encode_item(self, item, fname)
  local ok, s = pcall(core.encode, item, self.secret, "item")   -- the path: item, item.x, item[2]
  if not ok then
    if type(s) == "string" then
      s = strip(s)
      if not s:find("^bad argument") then s = ("bad argument #1 to '%s' (%s)"):format(fname, s) end
      raise(s, 3)
    end
    error(s, 0)
  end
  return s
end

local function do_put(self, item, block, timeout, fname)
  local bytes = encode_item(self, item, fname)
  local deadline, step = nil, 0.001
  while true do
    local r = eval(self, PUT, 3, self.k_items, self.k_unfinished, self.k_shutdown, bytes,
      self.maxsize)
    if r == 1 then return end
    if r == -1 then raise_value(concur.ShutDown) end
    if not block then raise_value(concur.Full) end
    if timeout >= 0 then
      local t = now()
      if deadline == nil then deadline = t + timeout end
      if t >= deadline then raise_value(concur.Full) end
      local left = deadline - t
      sleep(step < left and step or left)
    else
      sleep(step)
    end
    step = step * 2
    if step > POLL_MAX then step = POLL_MAX end
  end
end

function Queue:put(item, block, timeout, ...)
  check_self(self, "put")
  no_more(select("#", ...) + 3, 3, "put")
  block = check_block(block, 2, "put")
  timeout = check_timeout(timeout, 3, "put")
  return do_put(self, item, block, timeout, "put")
end

function Queue:put_nowait(item, ...)
  check_self(self, "put_nowait")
  no_more(select("#", ...) + 1, 1, "put_nowait")
  return do_put(self, item, false, 0, "put_nowait")
end

local function recover(self)
  local t = now()
  if t < self.next_recover then return end
  self.next_recover = t + self.recover_every
  eval(self, RECOVER, 2, self.k_items, self.k_consumers, self.prefix)
end

local function decode_item(self, bytes)
  local ok, v = pcall(core.decode, bytes, self.secret)
  if ok then return v end
  -- keep the item: move it from the taken list to the undecodable one
  pcall(self.conn.call, self.conn, "LMOVE", self.k_taken, self.k_undecodable, "LEFT", "RIGHT")
  raise(("concur.redis: cannot decode an item of queue '%s' (kept in %s): %s")
    :format(self.name, self.k_undecodable, tostring(strip(v))), 3)
end

-- One look: drops the item taken before, renews the lease when due (every
-- lease/3: SET PX and SADD in the same round trip), takes one item.  A
-- pipeline of plain commands, not a script: the common get is one round
-- trip with no script to run.  Returns the item's bytes, or nil.
local function take(self, cid)
  local t = now()
  local cmds
  if t >= self.next_renew then
    self.next_renew = t + self.renew_every
    cmds = {{"DEL", self.k_taken}, {"SET", self.k_alive, "1", "PX", self.lease_ms},
      {"SADD", self.k_consumers, cid}, {"LMOVE", self.k_items, self.k_taken, "RIGHT", "LEFT"}}
  else
    cmds = {{"DEL", self.k_taken}, {"LMOVE", self.k_items, self.k_taken, "RIGHT", "LEFT"}}
  end
  local ok, r = pcall(self.conn.pipeline, self.conn, cmds)
  if not ok then
    self.next_renew = 0
    if type(r) == "string" then raise(strip(r), 3) end
    error(r, 0)
  end
  for i = 1, #cmds do
    local x = r[i]
    if type(x) == "table" and x.err then
      self.next_renew = 0
      raise("concur.redis: " .. tostring(x.err):gsub("^concur%.redis: ", ""), 3)
    end
  end
  return r[#cmds]
end

local function do_get(self, block, timeout)
  if self.closed then raise("concur.redis: the queue is closed", 3) end
  local cid = consumer(self)
  local deadline
  while true do
    recover(self)
    local v = take(self, cid)
    if v ~= nil then return decode_item(self, v) end
    if call(self, "EXISTS", self.k_shutdown) == 1 then
      -- shut down: no put succeeds from now on, so one more empty look
      -- means empty (an item put before the shutdown is still given)
      v = take(self, cid)
      if v ~= nil then return decode_item(self, v) end
      raise_value(concur.ShutDown)
    end
    if not block then raise_value(concur.Empty) end
    local wait = self.slice
    if timeout >= 0 then
      local t = now()
      if deadline == nil then deadline = t + timeout end
      local left = deadline - t
      if left <= 0 then raise_value(concur.Empty) end
      if left < wait then wait = left end
    end
    -- BLMOVE's timeout: seconds as a decimal (Redis >= 6); at least 1 ms.
    -- The lease was renewed at most lease/3 ago and the block is at most
    -- lease/2, so it does not run out meanwhile.
    if wait < 0.001 then wait = 0.001 end
    if now() + wait >= self.next_renew then self.next_renew = 0 end
    v = call(self, "BLMOVE", self.k_items, self.k_taken, "RIGHT", "LEFT", ("%.3f"):format(wait))
    if v ~= nil then return decode_item(self, v) end
  end
end

function Queue:get(block, timeout, ...)
  check_self(self, "get")
  no_more(select("#", ...) + 2, 2, "get")
  block = check_block(block, 1, "get")
  timeout = check_timeout(timeout, 2, "get")
  return do_get(self, block, timeout)
end

function Queue:get_nowait(...)
  check_self(self, "get_nowait")
  no_more(select("#", ...), 0, "get_nowait")
  return do_get(self, false, 0)
end

function Queue:task_done(...)
  check_self(self, "task_done")
  no_more(select("#", ...), 0, "task_done")
  local taken = self.pid == getpid() and self.k_taken or (self.prefix .. "taken:-")
  local r = eval(self, TASK_DONE, 2, self.k_unfinished, taken)
  if r == -1 then raise("task_done() called too many times", 2) end
end

function Queue:join(...)
  check_self(self, "join")
  no_more(select("#", ...), 0, "join")
  local step = 0.001
  while true do
    local n = tonumber(call(self, "GET", self.k_unfinished) or 0) or 0
    if n <= 0 then return end
    sleep(step)
    step = step * 2
    if step > POLL_MAX then step = POLL_MAX end
  end
end

function Queue:qsize(...)
  check_self(self, "qsize")
  no_more(select("#", ...), 0, "qsize")
  return call(self, "LLEN", self.k_items)
end

function Queue:empty(...)
  check_self(self, "empty")
  no_more(select("#", ...), 0, "empty")
  return call(self, "LLEN", self.k_items) == 0
end

function Queue:full(...)
  check_self(self, "full")
  no_more(select("#", ...), 0, "full")
  return self.maxsize > 0 and call(self, "LLEN", self.k_items) >= self.maxsize
end

function Queue:shutdown(immediate, ...)
  check_self(self, "shutdown")
  no_more(select("#", ...) + 1, 1, "shutdown")
  if immediate ~= nil and type(immediate) ~= "boolean" then
    argerror(1, "shutdown", "boolean expected, got " .. layer.typename(immediate))
  end
  eval(self, SHUTDOWN, 3, self.k_items, self.k_unfinished, self.k_shutdown,
    immediate and "1" or "0")
end

--- q:close(): a clean end: drops the item this consumer took (it was handed
--- over), its lease and its place among the consumers, and the connection.
--- Called by the collector too.  Idempotent.
function Queue:close(...)
  check_self(self, "close")
  if self.closed then return end
  self.closed = true
  if self.pid == getpid() and self.cid then
    pcall(self.conn.pipeline, self.conn, {
      {"DEL", self.k_taken}, {"DEL", self.k_alive}, {"SREM", self.k_consumers, self.cid}})
  end
  if self.pid == nil or self.pid == getpid() then pcall(self.conn.close, self.conn) end
end

Queue.__close = function(self) self:close() end
Queue.__tostring = function(self)
  return ("concur.redis.Queue %s %s"):format(self.name, self.url)
end
Queue.__name = "concur.redis.Queue"

local function is_queue(v) return queues[v] == true end

return {Queue = setmetatable({}, {
  __call = function(_, ...) return new(...) end,
  __index = {is_queue = is_queue},
}), is_queue = is_queue}
