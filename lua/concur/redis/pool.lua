--- concur.redis.pool: redis.Pool (the client) and worker_main (the loop the
--- concur-worker script runs).  API.md, "More than one machine".
--
-- Keys (P = "concur:p:{NAME}:"; the hash tag keeps one pool's keys on one
-- cluster slot, though the scripts below name keys they build themselves, so
-- a cluster is not supported yet):
--   P.."tasks"           list of task records; clients LPUSH, workers take
--                        from the right (FIFO) with (B)LMOVE into
--   P.."running:"..WID   the worker's processing list (reliable-queue pattern)
--   P.."hb:"..WID        the worker's heartbeat: SET PX ttl, refreshed every
--                        ttl/3 while the worker lives
--   P.."workers"         set of worker ids (to scan for dead ones)
--   P.."results:"..CID   list of result entries for client CID (expires a
--                        day after the last entry pushed)
--   P.."taken:"..CID     the entries the client read last (moved there by the
--                        read itself): reread after a lost connection
--   P.."cid"             counter giving each client its id
--
-- A task record is a plain header then the encoded body:
--   "TRIES MAXTRIES CID TID " .. core.encode({kind, fn, payload}, secret)
-- kind "call" (payload: the argument list), "map" or "star" (a chunk).  The
-- header is plain so that the recovery script (Lua inside Redis, EVAL) can
-- count a death and route a failure to its client without decoding.
-- A result entry is "R TID " .. core.encode({ok, value}) (value: the packed
-- results of a call, the results of a chunk, or the error), or
-- "D TID TRIES LASTERROR" when the task's workers died TRIES times.
--
-- Recovery (RECOVER below, one EVAL so it is atomic): every worker in the set
-- whose heartbeat key is gone has its running records moved back to the
-- tasks list (taken next) with TRIES+1, or, at MAXTRIES, turned into a "D"
-- entry for its client; then it leaves the set.  Workers run it every few
-- seconds, and so does a client while it waits, so the tasks of a dead
-- worker come back even when no other worker is alive.  A local pool
-- process that dies while running a task (os.exit in the task) counts as a
-- death too (REQUEUE, one record).
--
-- The worker (worker_main) runs a local concur.Pool of N processes and takes
-- up to N * prefetch (default 8) tasks at once.  A task's body goes to a
-- local process as a string, decoded, run and its result encoded there
-- (run_task), so the main loop only moves strings.  Each turn of the loop is
-- one round trip: a MULTI/EXEC that pushes the finished tasks' entries and
-- LREMs their records from the running list, then an LMOVE per free place;
-- then it waits for half the tasks it holds (at most 0.05 s).  When it holds
-- none it blocks in BLMOVE (0.5 s slices).  After a lost connection it adopts
-- the records in its running list that it does not hold (an LMOVE whose
-- reply was lost).  A task may run twice (a worker thought
-- dead that was only slow); the client settles a tid once and ignores later
-- entries, so each result is delivered once.
--
-- The client reads its results list in its own calls (get, wait, ready, map,
-- join: POP, a script moving a batch to its taken list, or BLMOVE when it
-- must wait, in slices of WAIT_SLICE),
-- as the local Pool collects results inside its calls.  A lost connection
-- (server restart) is retried for up to RETRY_FOR seconds, in the client and
-- forever in the worker.
local concur = require "concur"
local core = require "concur.core"
local rc = require "concur.redis.core"
local layer = getmetatable(concur).layer

local raise, raise_value, check_options = layer.raise, layer.raise_value, layer.check_options
local tointeger, idiv = layer.tointeger, layer.idiv
local pack, unpack = layer.pack, layer.unpack
local callable = layer.callable
local now, sleep = core.time, core.sleep

local WAIT_SLICE = 0.5      -- a blocking read's slice (s)
local SCAN_EVERY = 2        -- a client's recovery scan while it waits (s)
local RETRY_FOR = 60        -- a client retries a lost connection this long (s)
local DEFAULT_HEARTBEAT = 10
local RESULTS_TTL = 86400    -- a results list untouched this long (s) goes
local PREFETCH = 8         -- a worker's tasks taken per local process (default)

local function default_url()
  return os.getenv("CONCUR_REDIS_URL") or "redis://127.0.0.1:6379/0"
end

local function prefix_of(name) return "concur:p:{" .. name .. "}:" end

local RECOVER = [[
local P, lim = ARGV[1], tonumber(ARGV[2])
local ws = redis.call('SMEMBERS', P .. 'workers')
local n = 0
for _, w in ipairs(ws) do
  if redis.call('EXISTS', P .. 'hb:' .. w) == 0 then
    local run = P .. 'running:' .. w
    while true do
      local rec = redis.call('RPOP', run)
      if not rec then break end
      local tries, max, cid, tid, rest = string.match(rec, '^(%d+) (%d+) (%S+) (%d+) (.*)$')
      if tries then
        tries = tonumber(tries) + 1
        if tries >= tonumber(max) then
          redis.call('RPUSH', P .. 'results:' .. cid,
            'D ' .. tid .. ' ' .. tries .. ' its worker ' .. w .. ' stopped sending heartbeats')
        else
          redis.call('RPUSH', P .. 'tasks', tries .. ' ' .. max .. ' ' .. cid .. ' ' .. tid .. ' ' .. rest)
        end
        n = n + 1
      end
    end
    redis.call('SREM', P .. 'workers', w)
  end
end
return n
]]

local REQUEUE = [[
local P, run, rec, why = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('LREM', run, 1, rec) == 0 then return 0 end
local tries, max, cid, tid, rest = string.match(rec, '^(%d+) (%d+) (%S+) (%d+) (.*)$')
tries = tonumber(tries) + 1
if tries >= tonumber(max) then
  redis.call('RPUSH', P .. 'results:' .. cid, 'D ' .. tid .. ' ' .. tries .. ' ' .. why)
else
  redis.call('RPUSH', P .. 'tasks', tries .. ' ' .. max .. ' ' .. cid .. ' ' .. tid .. ' ' .. rest)
end
return 1
]]

-- A client's read: drops the batch it took before (handled by now), moves
-- up to ARGV[1] entries from its results list to its taken list, returns them.
local POP_MAX = 256
local POP = [[
redis.call('DEL', KEYS[2])
local t = redis.call('LPOP', KEYS[1], ARGV[1])
if t then
  redis.call('RPUSH', KEYS[2], unpack(t))
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return t
]]

local function transient(e)
  return type(e) == "string" and (e:find("^concur%.redis: connection lost")
    or e:find("^concur%.redis: cannot connect") or e:find("^concur%.redis: timeout")
    or e:find("LOADING")) ~= nil
end

local function interrupted(e)
  return type(e) == "string" and e:sub(1, 11) == "interrupted"
end

-- conn:call(...), retrying a lost connection until `until_t` (nil: forever).
local function call_retry(conn, until_t, ...)
  while true do
    local ok, r = pcall(conn.call, conn, ...)
    if ok then return r end
    if not transient(r) or (until_t and now() > until_t) then error(r, 0) end
    sleep(0.2)
  end
end

local function describe(v)
  local ok, s = pcall(tostring, v)
  return ok and s or ("(error object is a %s value)"):format(type(v))
end

-- Results ----------------------------------------------------------------------

local AsyncResult = {}
AsyncResult.__index = AsyncResult
AsyncResult.__concur_untransferable = "concur.redis.AsyncResult"

local function check_timeout(t, n, fname)
  if t == nil or t == math.huge then return nil end
  if type(t) ~= "number" or t ~= t or t < 0 then
    raise(("bad argument #%d to '%s' (timeout must be a non-negative number, got %s)")
      :format(n, fname, type(t) == "number" and tostring(t) or type(t)), 3)
  end
  return t
end

local function bad_self(self, cls, fname)
  if type(self) ~= "table" or getmetatable(self) ~= cls then
    raise(("bad argument #1 to '%s' (%s expected, got %s; use r:%s(...), not r.%s(...))")
      :format(fname, cls == AsyncResult and "concur.redis.AsyncResult" or "concur.redis.Future",
        type(self), fname, fname), 3)
  end
end

local function is_ready(r) return r._ready end

function AsyncResult:ready()
  bad_self(self, AsyncResult, "ready")
  if not self._ready then self._pool:_poll() end
  return self._ready
end

function AsyncResult:successful()
  bad_self(self, AsyncResult, "successful")
  if not self:ready() then raise("result is not ready", 2) end
  return self._ok
end

function AsyncResult:wait(timeout)
  bad_self(self, AsyncResult, "wait")
  timeout = check_timeout(timeout, 1, "wait")
  if not self._ready then self._pool:_collect(is_ready, self, timeout) end
  return self._ready
end

function AsyncResult:get(timeout)
  bad_self(self, AsyncResult, "get")
  timeout = check_timeout(timeout, 1, "get")
  if not self._ready then
    self._pool:_collect(is_ready, self, timeout)
    if not self._ready then raise_value(concur.TimeoutError) end
  end
  local v = self._value
  if not self._ok then error(v, 0) end
  if self._kind == "call" then return unpack(v, 1, v.n) end
  return v
end

function AsyncResult:__tostring()
  return ("<concur.redis.AsyncResult %s>"):format(not self._ready and "pending"
    or self._ok and "ready" or "failed")
end

local function run_callback(cb, ...)
  local ok, err = pcall(cb, ...)
  if not ok then io.stderr:write("Exception in pool callback:\n", describe(err), "\n") end
end

local function result_finish(r, ok, value)
  r._ok, r._value, r._ready = ok, value, true
  if ok then
    if r._callback ~= nil then
      if r._kind == "call" then run_callback(r._callback, unpack(value, 1, value.n))
      else run_callback(r._callback, value) end
    end
  elseif r._error_callback ~= nil then
    run_callback(r._error_callback, value)
  end
end

-- A chunk of a map arrived (ok) or failed.
function AsyncResult:_chunk(start, ok, value)
  local mode = self._kind
  if mode == "map" then
    if self._ready then return end
    if not ok then return result_finish(self, false, value) end
    for i = 1, value.n do self._value[start + i - 1] = value[i] end
    self._left = self._left - 1
    if self._left == 0 then result_finish(self, true, self._value) end
    return
  end
  self._left = self._left - 1
  if self._left == 0 then self._ready = true end
  if mode == "imap" then
    if ok then
      for i = 1, value.n do self._value[start + i - 1] = value[i] end
      self._arrived[start] = true
    else
      self._arrived[start] = {value}
    end
  else
    local q, at = self._fifo, self._index
    if ok then
      for i = 1, value.n do
        local k = q.last + 1
        q.last, q[k], at[k] = k, value[i], start + i - 1
      end
    else
      q.last = q.last + 1; q[q.last] = {value}
      self._failed[q.last] = true
    end
  end
end

-- Futures: submit's result (result, done, exception, add_done_callback).
local Future = {}
Future.__index = Future
Future.__concur_untransferable = "concur.redis.Future"

function Future:done()
  bad_self(self, Future, "done")
  if not self._ready then self._pool:_poll() end
  return self._ready
end

local function future_wait(f, timeout, fname)
  timeout = check_timeout(timeout, 1, fname)
  if not f._ready then
    f._pool:_collect(is_ready, f, timeout)
    if not f._ready then raise_value(concur.TimeoutError) end
  end
end

function Future:result(timeout)
  bad_self(self, Future, "result")
  future_wait(self, timeout, "result")
  local v = self._value
  if not self._ok then error(v, 0) end
  return unpack(v, 1, v.n)
end

function Future:exception(timeout)
  bad_self(self, Future, "exception")
  future_wait(self, timeout, "exception")
  if self._ok then return nil end
  return self._value
end

function Future:add_done_callback(fn)
  bad_self(self, Future, "add_done_callback")
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    raise(("bad argument #1 to 'add_done_callback' (callable expected, got %s)"):format(type(fn)), 2)
  end
  if not self._ready then self._pool:_poll() end
  if self._ready then run_callback(fn, self)
  else self._callbacks[#self._callbacks + 1] = fn end
end

function Future:cancelled() return false end
function Future:running() return false end
function Future:cancel() return false end   -- a task once pushed is not withdrawn

function Future:__tostring()
  if not self._ready then return "<concur.redis.Future pending>" end
  return self._ok and "<concur.redis.Future finished returned>"
    or "<concur.redis.Future finished raised>"
end

function Future:_finish(ok, value)
  self._ok, self._value, self._ready = ok, value, true
  local cbs = self._callbacks
  self._callbacks = {}
  for i = 1, #cbs do run_callback(cbs[i], self) end
end

-- Pool (the client) --------------------------------------------------------------

local Pool = {}
Pool.__index = Pool
Pool.__concur_untransferable = "concur.redis.Pool"

local RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"
local pool_options = {url = true, name = true, secret = true, max_tries = true,
  heartbeat = true, timeout = true}

local function new_pool(_, opts, ...)
  if select("#", ...) > 0 then
    raise("bad argument #2 to 'Pool' (no value expected: one options table)", 2)
  end
  check_options(opts, pool_options, "Pool", 2)
  local name, url, secret = opts.name, opts.url or default_url(), opts.secret
  if type(name) ~= "string" or name == "" then
    raise(("bad argument #1 to 'Pool' (name: expected a non-empty string, got %s)"):format(type(name)), 2)
  end
  if type(url) ~= "string" then
    raise(("bad argument #1 to 'Pool' (url: expected a string, got %s)"):format(type(url)), 2)
  end
  if secret == nil then secret = os.getenv("CONCUR_REDIS_SECRET") end
  if secret ~= nil and type(secret) ~= "string" then
    raise(("bad argument #1 to 'Pool' (secret: expected a string, got %s)"):format(type(secret)), 2)
  end
  local max_tries = opts.max_tries or 3
  if type(max_tries) ~= "number" or not tointeger(max_tries) or max_tries < 1 then
    raise(("bad argument #1 to 'Pool' (max_tries: expected a positive integer, got %s)")
      :format(describe(max_tries)), 2)
  end
  local timeout = opts.timeout or 5
  local ok, conn = pcall(rc.connect, url, timeout)
  if not ok then raise(describe(conn), 2) end
  local P = prefix_of(name)
  local cid
  ok, cid = pcall(conn.call, conn, "INCR", P .. "cid")
  if not ok then raise(describe(cid), 2) end
  cid = ("%d"):format(cid)
  local self = setmetatable({
    _conn = conn, _name = name, _url = url, _secret = secret, _P = P, _cid = cid,
    _results = P .. "results:" .. cid, _taken = P .. "taken:" .. cid, _tasks = P .. "tasks",
    _lost = false,
    _max_tries = tointeger(max_tries), _timeout = timeout,
    _state = RUN, _pending = {}, _start = {}, _npending = 0, _nput = 0,
    _next_scan = 0,
    -- map's default chunksize counts on 4 worker processes (it cannot know
    -- how many will serve): about 16 chunks per map.
    _size = 4,
  }, Pool)
  return self
end

function Pool:__tostring()
  return ("<concur.redis.Pool name=%s state=%s>"):format(self._name, self._state)
end

local function check_pool(self, fname)
  if getmetatable(self) ~= Pool then
    raise(("bad argument #1 to '%s' (concur.redis.Pool expected, got %s; use pool:%s(...))")
      :format(fname, type(self), fname), 3)
  end
end

local function check_running(self, fname)
  if self._state ~= RUN then
    raise(("%s: pool is %s"):format(fname, self._state == CLOSE and "closed" or "terminated"), 3)
  end
end

local function check_callable(v, n, fname, optional)
  if (v ~= nil or not optional) and not callable(v) then
    raise(("bad argument #%d to '%s' (callable expected, got %s)"):format(n, fname, type(v)), 3)
  end
end

-- The record of task tid, or nil and the error naming what cannot be sent.
function Pool:_record(fname, tid, kind, fn, payload, first)
  local ok, body = pcall(core.encode, {kind, fn, payload}, self._secret, "task")
  if not ok then
    -- The path as the caller wrote it: task[2] is fn, task[3] the arguments
    -- (or a map's list), as the local Pool says.
    local what = kind == "call" and "the arguments" or "the list"
    local err = describe(body):gsub("at task%[2%]", "in fn"):gsub("at task%[3%]", "in " .. what)
      :gsub("%(task%[2%]", "(fn"):gsub("%(task%[3%]", "(" .. what)
    if first then   -- a chunk's item i is item first + i - 1 of the list
      err = err:gsub("the list%[(%d+)%]", function(i) return ("the list[%d]"):format(first + i - 1) end)
    end
    return nil, ("%s: the task cannot be sent: %s"):format(fname, err)
  end
  return ("0 %d %s %d "):format(self._max_tries, self._cid, tid) .. body
end

-- LPUSHes the records (in order: the first is taken first).
function Pool:_push(records)
  local cmd = {"LPUSH", self._tasks}
  for i = 1, #records do cmd[#cmd + 1] = records[i] end
  call_retry(self._conn, now() + RETRY_FOR, unpack(cmd, 1, #cmd))
end

function Pool:_settle(tid, ok, value)
  local r = self._pending[tid]
  if r == nil then return end   -- settled already, or forgotten (terminate)
  self._pending[tid] = nil
  self._npending = self._npending - 1
  local kind = r._kind
  if kind == "future" then
    r:_finish(ok, value)
  elseif kind == "call" then
    result_finish(r, ok, value)
  else
    local start = self._start[tid]
    self._start[tid] = nil
    r:_chunk(start, ok, value)
  end
end

function Pool:_on_entry(e)
  local kind, tid, rest = e:match("^(%a) (%d+) (.*)$")
  if kind == nil then return end
  tid = tonumber(tid)
  if self._pending[tid] == nil then return end
  if kind == "D" then
    local tries, why = rest:match("^(%d+) (.*)$")
    tries = tonumber(tries)
    self:_settle(tid, false, ("task failed: its worker died %s (last: %s)")
      :format(tries == 1 and "once" or tries .. " times", why))
    return
  end
  local ok, m = pcall(core.decode, rest, self._secret)
  if not ok then
    self:_settle(tid, false, "the task's result could not be received: " .. describe(m)
      .. " (the pool's secret and its workers' must be the same)")
  else
    self:_settle(tid, m[1], m[2])
  end
end

-- Handles what is in the results list; never blocks (but for a lost connection).
-- The next entries: normally up to POP_MAX moved from the results list to
-- the taken list (POP drops the batch taken before, handled by now); after a
-- lost connection, the taken list as it is (a batch whose reply was lost
-- would else be lost; entries handled twice are ignored by tid).
function Pool:_pop()
  local conn = self._conn
  if self._lost then
    local got = conn:call("LRANGE", self._taken, 0, -1)
    self._lost = false
    return got, true
  end
  return conn:call("EVAL", POP, 2, self._results, self._taken, POP_MAX, RESULTS_TTL), false
end

-- Handles what is in the results list; never blocks (but for a lost connection).
function Pool:_poll()
  if self._npending == 0 then return end
  local until_t = now() + RETRY_FOR
  while true do
    local ok, got, again = pcall(self._pop, self)
    if not ok then
      if not transient(got) or now() > until_t then error(got, 0) end
      self._lost = true
      sleep(0.2)
    else
      local n = got and (got.n or #got) or 0
      for i = 1, n do self:_on_entry(got[i]) end
      if not again and n < POP_MAX then return end
    end
  end
end

function Pool:_scan()
  self._next_scan = now() + SCAN_EVERY
  call_retry(self._conn, now() + RETRY_FOR, "EVAL", RECOVER, 0, self._P, self._max_tries)
end

-- Collects results until pred(arg) or timeout; false on timeout.
function Pool:_collect(pred, arg, timeout)
  self:_poll()
  if pred(arg) then return true end
  local deadline = timeout and now() + timeout
  local conn = self._conn
  local lost_since
  while true do
    local t = now()
    if t >= self._next_scan then
      self:_scan()
      self:_poll()
      if pred(arg) then return true end
    end
    local wait = WAIT_SLICE
    if deadline then
      local left = deadline - t
      if left <= 0 then return false end
      if left < wait then wait = left end
    end
    if wait < 0.01 then wait = 0.01 end
    conn:set_timeout(wait + self._timeout)
    -- Into the taken list too, so that an entry whose reply is lost is not.
    local ok, got = pcall(conn.call, conn, "BLMOVE", self._results, self._taken, "LEFT", "RIGHT",
      ("%.3f"):format(wait))
    conn:set_timeout(self._timeout)
    if ok then
      if got ~= nil then self:_on_entry(got) end
      lost_since = nil
    elseif transient(got) then
      lost_since = lost_since or now()
      if now() - lost_since > RETRY_FOR then error(got, 0) end
      self._lost = true
      sleep(0.2)
    else
      error(got, 0)
    end
    self:_poll()
    if pred(arg) then return true end
  end
end

local function put_call(self, fname, fn, args, r)
  local tid = self._nput + 1
  local rec, err = self:_record(fname, tid, "call", fn, args or {n = 0})
  if rec == nil then raise(err, 3) end
  -- The tid is used up before the push: a push that raises may still have
  -- landed (its reply lost), and a reused tid would take that task's result.
  self._nput = tid
  self:_push({rec})
  self._pending[tid] = r
  self._npending = self._npending + 1
  return r
end

function Pool:apply_async(fn, args, callback, error_callback)
  check_pool(self, "apply_async")
  check_running(self, "apply_async")
  check_callable(fn, 1, "apply_async")
  if args ~= nil and type(args) ~= "table" then
    raise(("bad argument #2 to 'apply_async' (table of arguments expected, got %s)"):format(type(args)), 2)
  end
  check_callable(callback, 3, "apply_async", true)
  check_callable(error_callback, 4, "apply_async", true)
  local r = setmetatable({_pool = self, _kind = "call", _ready = false,
    _callback = callback, _error_callback = error_callback}, AsyncResult)
  return (put_call(self, "apply_async", fn, args, r))
end

function Pool:apply(fn, args)
  check_pool(self, "apply")
  check_running(self, "apply")
  check_callable(fn, 1, "apply")
  if args ~= nil and type(args) ~= "table" then
    raise(("bad argument #2 to 'apply' (table of arguments expected, got %s)"):format(type(args)), 2)
  end
  local r = setmetatable({_pool = self, _kind = "call", _ready = false}, AsyncResult)
  return put_call(self, "apply", fn, args, r):get()
end

function Pool:submit(fn, ...)
  check_pool(self, "submit")
  if self._state ~= RUN then
    raise(("submit: cannot schedule new futures after shutdown (pool is %s)")
      :format(self._state == CLOSE and "closed" or "terminated"), 2)
  end
  check_callable(fn, 1, "submit")
  local f = setmetatable({_pool = self, _kind = "future", _ready = false, _callbacks = {}}, Future)
  return (put_call(self, "submit", fn, pack(...), f))
end

function Pool:_map(fname, mode, kind, fn, list, chunksize, callback, error_callback)
  check_running(self, fname)
  check_callable(fn, 1, fname)
  if type(list) ~= "table" then
    raise(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(list)), 3)
  end
  if chunksize ~= nil and not (type(chunksize) == "number" and tointeger(chunksize) and chunksize >= 1) then
    raise(("bad argument #3 to '%s' (chunksize must be a positive integer, got %s)")
      :format(fname, type(chunksize) == "number" and tostring(chunksize) or type(chunksize)), 3)
  end
  local n = tointeger(list.n) or #list
  if n < 0 then n = 0 end
  if kind == "star" then
    for i = 1, n do
      if type(list[i]) ~= "table" then
        raise(("bad argument #2 to '%s' (list of argument lists expected, item %d is a %s)")
          :format(fname, i, type(list[i])), 3)
      end
    end
  end
  if chunksize == nil then
    if mode == "map" then   -- Python's rule: about four chunks per worker
      chunksize = idiv(n, self._size * 4)
      if n % (self._size * 4) ~= 0 or chunksize == 0 then chunksize = chunksize + 1 end
    else
      chunksize = 1
    end
  end
  chunksize = tointeger(chunksize)
  local r = setmetatable({_pool = self, _kind = mode, _ready = false, _ok = false,
    _callback = callback, _error_callback = error_callback}, AsyncResult)
  r._value, r._len, r._chunksize = {}, n, chunksize
  r._left = n == 0 and 0 or idiv(n - 1, chunksize) + 1
  if mode == "imap" then r._arrived = {}
  elseif mode == "imap_unordered" then r._fifo, r._index, r._failed = {first = 1, last = 0}, {}, {} end
  if n == 0 then
    if mode == "map" then result_finish(r, true, r._value) else r._ready = true end
    return r
  end
  local records, starts = {}, {}
  local tid = self._nput
  -- Stepping by at most n: with a chunksize near math.maxinteger a start
  -- past n + chunksize would wrap (5.3) and the loop never end.
  for start = 1, n, math.min(chunksize, n) do
    local stop = n - start < chunksize and n or start + chunksize - 1
    local chunk = {n = stop - start + 1}
    for i = start, stop do chunk[i - start + 1] = list[i] end
    tid = tid + 1
    local rec, err = self:_record(fname, tid, kind, fn, chunk, start)
    if rec == nil then raise(err, 3) end
    records[#records + 1], starts[tid] = rec, start
  end
  local first = self._nput + 1
  self._nput = tid   -- used up before the push (see put_call)
  self:_push(records)
  for t = first, tid do
    self._pending[t], self._start[t] = r, starts[t]
    self._npending = self._npending + 1
  end
  return r
end

local function map_async_method(fname, kind)
  return function(self, fn, list, chunksize, callback, error_callback)
    check_pool(self, fname)
    check_callable(callback, 4, fname, true)
    check_callable(error_callback, 5, fname, true)
    local r = self:_map(fname, "map", kind, fn, list, chunksize, callback, error_callback)
    return r
  end
end

local function map_method(fname, kind)
  return function(self, fn, list, chunksize)
    check_pool(self, fname)
    local r = self:_map(fname, "map", kind, fn, list, chunksize)
    return r:get()
  end
end

Pool.map_async = map_async_method("map_async", "map")
Pool.map = map_method("map", "map")
Pool.starmap_async = map_async_method("starmap_async", "star")
Pool.starmap = map_method("starmap", "star")

local function nil_result(fname, i)
  raise(("%s: the result for item %d is nil, which would end the for loop early "
    .. "(return false or a table instead; map keeps nils)"):format(fname, i), 3)
end

function Pool:imap(fn, list, chunksize)
  check_pool(self, "imap")
  local r = self:_map("imap", "imap", "map", fn, list, chunksize)
  local pool, arrived, values, cs, i = self, r._arrived, r._value, r._chunksize, 0
  local chunk_start
  local function has_chunk() return arrived[chunk_start] ~= nil end
  return function()
    if i >= r._len then return nil end
    i = i + 1
    chunk_start = idiv(i - 1, cs) * cs + 1
    if arrived[chunk_start] == nil then pool:_collect(has_chunk) end
    local a = arrived[chunk_start]
    if a ~= true then
      i = math.min(chunk_start + cs - 1, r._len)
      error(a[1], 0)
    end
    local v = values[i]
    if v == nil then nil_result("imap", i) end
    return v, i
  end
end

function Pool:imap_unordered(fn, list, chunksize)
  check_pool(self, "imap_unordered")
  local r = self:_map("imap_unordered", "imap_unordered", "map", fn, list, chunksize)
  local pool, q, at, failed, given = self, r._fifo, r._index, r._failed, 0
  local function has_one() return q.first <= q.last end
  return function()
    if given >= r._len then return nil end
    if q.first > q.last then pool:_collect(has_one) end
    local k = q.first
    local v, i = q[k], at[k]
    q[k], at[k], q.first = nil, nil, k + 1
    if failed[k] then
      failed[k] = nil
      given = given + r._chunksize
      error(v[1], 0)
    end
    given = given + 1
    if v == nil then nil_result("imap_unordered", i) end
    return v, i
  end
end

function Pool:close()
  check_pool(self, "close")
  if self._state == RUN then self._state = CLOSE end
end

local function all_done(pool) return pool._npending == 0 end

function Pool:join()
  check_pool(self, "join")
  if self._state == RUN then raise("pool is still running: close or terminate it first", 2) end
  self:_collect(all_done, self)
end

--- Forgets the pending tasks (they fail with an error saying so; results that
--- come later are discarded) and deletes this client's results list.
function Pool:terminate()
  check_pool(self, "terminate")
  if self._state == TERMINATE then return end
  self._state = TERMINATE
  local tids = {}
  for tid in pairs(self._pending) do tids[#tids + 1] = tid end
  table.sort(tids)
  for _, tid in ipairs(tids) do
    self:_settle(tid, false, "the pool was terminated before the task finished")
  end
  pcall(self._conn.call, self._conn, "DEL", self._results, self._taken)
  pcall(self._conn.close, self._conn)
end

Pool.__close = Pool.terminate

-- The worker -------------------------------------------------------------------

local function usage(msg)
  io.stderr:write("concur-worker: ", msg, "\n",
    "usage: concur-worker --url URL --name NAME [--processes N] [--secret S] [--heartbeat SECONDS]"
    .. " [--prefetch N]\n")
  os.exit(2)
end

-- Runs a task in a local pool process: decodes its body there, runs it,
-- and returns its result entry's body, encoded there too, so the worker's
-- main loop only moves strings (and the local pool sends this one function
-- once, not a new closure per task).  A task's error is raised, for the
-- local pool to report it with the worker's traceback, as it does its own.
-- It crosses as bytecode: globals only, no upvalues.
local function run_task(body, secret)
  local core = require "concur.core"
  local unpack = table.unpack or unpack
  local t = core.decode(body, secret)
  local kind, fn, payload = t[1], t[2], t[3]
  local value
  if kind == "call" then
    value = {n = 0}
    local function keep(...)
      value.n = select("#", ...)
      for i = 1, value.n do value[i] = (select(i, ...)) end
    end
    keep(fn(unpack(payload, 1, payload.n or #payload)))
  else
    local n = payload.n
    value = {n = n}
    if kind == "star" then
      for i = 1, n do local a = payload[i]; value[i] = fn(unpack(a, 1, a.n or #a)) end
    else
      for i = 1, n do value[i] = fn(payload[i]) end
    end
  end
  local ok, out = pcall(core.encode, {true, value}, secret)
  if not ok then error("the task's results could not be sent back: " .. tostring(out), 0) end
  return out
end

-- A local pool's error for a task whose process died.
local function death_error(e)
  return type(e) == "string" and (e:find("^pool worker .- while running this task")
    or e:find("^the task was lost")) ~= nil
end

local function worker_main(argv)
  argv = argv or {}
  local o = {}
  local i = 1
  while argv[i] ~= nil do
    local a = argv[i]
    local key, val = a:match("^%-%-([%w_-]+)=(.*)$")
    if key == nil then
      key = a:match("^%-%-([%w_-]+)$")
      if key == nil then usage("unexpected argument '" .. a .. "'") end
      if key == "help" then usage("help") end
      i = i + 1
      val = argv[i]
      if val == nil then usage("--" .. key .. " needs a value") end
    end
    if key ~= "url" and key ~= "name" and key ~= "processes" and key ~= "secret"
      and key ~= "heartbeat" and key ~= "prefetch" then
      usage("unknown option --" .. key)
    end
    o[key] = val
    i = i + 1
  end
  local url = o.url or default_url()
  local name = o.name or usage("--name is required")
  local nproc = tonumber(o.processes or core.cpu_count())
  if not nproc or nproc < 1 then usage("--processes must be a positive integer") end
  nproc = math.floor(nproc)
  local secret = o.secret or os.getenv("CONCUR_REDIS_SECRET")
  local hb = tonumber(o.heartbeat or DEFAULT_HEARTBEAT)
  if not hb or hb <= 0 then usage("--heartbeat must be a positive number of seconds") end
  local ttl_ms = math.floor(hb * 1000)
  local prefetch = tonumber(o.prefetch or PREFETCH)
  if not prefetch or prefetch < 1 then usage("--prefetch must be a positive integer") end
  prefetch = math.floor(prefetch)

  local okc, conn = pcall(rc.connect, url, 5)
  if not okc then
    io.stderr:write("concur-worker: ", describe(conn), "\n")
    return 1
  end
  local P = prefix_of(name)
  local wid = ("%s:%d:%d"):format(io.popen and (function()
    local f = io.popen("hostname 2>/dev/null")
    local h = f and f:read("*l") or "host"
    if f then f:close() end
    return h ~= "" and h or "host"
  end)() or "host", core.getpid(), call_retry(conn, nil, "INCR", P .. "wid"))
  wid = wid:gsub("%s", "_")
  local running = P .. "running:" .. wid
  local tasks = P .. "tasks"
  local pool = concur.Pool(nproc)
  io.stderr:write(("concur-worker %s: pool %s at %s, %d processes\n"):format(wid, name, url, nproc))

  local next_hb, next_scan = 0, 0
  local inflight = {}   -- {rec=, cid=, tid=, r=}
  local cap = nproc * prefetch   -- tasks taken at once: running or queued locally

  local function beat()
    call_retry(conn, nil, "SET", P .. "hb:" .. wid, "1", "PX", ttl_ms)
    call_retry(conn, nil, "SADD", P .. "workers", wid)
    next_hb = now() + hb / 3
  end

  -- Result entries waiting to be pushed: one MULTI/EXEC for all of them
  -- (each entry with its record's LREM), at the end of each turn.
  local outbox = {}
  local function send(job, ok, value)
    local ok_enc, body = pcall(core.encode, {ok, value}, secret)
    if not ok_enc then
      body = core.encode({false, ("the task's %s could not be sent back: %s")
        :format(ok and "results" or "error", describe(body))}, secret)
    end
    outbox[#outbox + 1] = {job, ("R %d "):format(job.tid) .. body}
  end
  local function start(rec)
    local tries, max, cid, tid, body = rec:match("^(%d+) (%d+) (%S+) (%d+) (.*)$")
    if tries == nil then   -- not ours: drop it
      call_retry(conn, nil, "LREM", running, 1, rec)
      return
    end
    local job = {rec = rec, cid = cid, tid = tonumber(tid)}
    local okp, r = pcall(pool.apply_async, pool, run_task, {body, secret})
    if not okp then return send(job, false, describe(r)) end
    job.r = r
    inflight[#inflight + 1] = job
  end

  local function finish(job)
    local r = job.r
    local ok, v = pcall(r.get, r)
    if ok then
      outbox[#outbox + 1] = {job, ("R %d "):format(job.tid) .. v}
    elseif death_error(v) then
      call_retry(conn, nil, "EVAL", REQUEUE, 0, P, running, job.rec, (tostring(v):gsub("\n.*", "")))
    else
      send(job, false, v)
    end
  end

  local stop, adopt, next_adopt = false, false, 0
  while not stop do
    local ok, err = pcall(function()
      local t = now()
      if t >= next_hb then beat() end
      if t >= next_scan then
        next_scan = t + math.max(1, hb / 2)
        call_retry(conn, nil, "EVAL", RECOVER, 0, P, 0)
      end
      -- finished tasks
      local k = 1
      while k <= #inflight do
        local job = inflight[k]
        if job.r:ready() then
          table.remove(inflight, k)
          finish(job)
        else
          k = k + 1
        end
      end
      -- Every record in the running list is held (in inflight or the
      -- outbox) at this point of a turn.  A turn cut short (a lost
      -- connection: an LMOVE whose reply never came; any other error) can
      -- leave one that is not, and the heartbeat would keep the recovery
      -- scan off it for ever: so after an error, and every scan period
      -- anyway, the records not held are started.
      if adopt or t >= next_adopt then
        adopt = false
        next_adopt = t + math.max(1, hb / 2)
        local held = {}
        for _, job in ipairs(inflight) do held[job.rec] = true end
        for _, o in ipairs(outbox) do held[o[1].rec] = true end
        local recs = conn:call("LRANGE", running, 0, -1) or {}
        for j = (recs.n or #recs), 1, -1 do
          if not held[recs[j]] then start(recs[j]) end
        end
      end
      local free = cap - #inflight
      if #inflight == 0 and #outbox == 0 then
        local wait = math.min(0.5, hb / 3)
        conn:set_timeout(wait + 5)
        local rec = conn:call("BLMOVE", tasks, running, "RIGHT", "LEFT", ("%.3f"):format(wait))
        conn:set_timeout(5)
        if rec ~= nil then start(rec) end
      else
        -- One round trip: the finished tasks' entries (one MULTI/EXEC) and,
        -- while there is room, the next tasks.
        local cmds = {}
        if #outbox > 0 then
          cmds[1] = {"MULTI"}
          local cids = {}
          for _, o in ipairs(outbox) do
            cmds[#cmds + 1] = {"RPUSH", P .. "results:" .. o[1].cid, o[2]}
            cmds[#cmds + 1] = {"LREM", running, 1, o[1].rec}
            cids[o[1].cid] = true
          end
          -- A client gone (terminated, or dead) leaves no list forever.
          for cid in pairs(cids) do
            cmds[#cmds + 1] = {"EXPIRE", P .. "results:" .. cid, RESULTS_TTL}
          end
          cmds[#cmds + 1] = {"EXEC"}
        end
        local first = #cmds
        for _ = 1, free do cmds[#cmds + 1] = {"LMOVE", tasks, running, "RIGHT", "LEFT"} end
        local got = conn:pipeline(cmds)
        outbox = {}
        for j = first + 1, #cmds do
          if type(got[j]) == "string" then start(got[j]) end
        end
      end
      -- Waits for half the tasks taken, so that the next round trip carries
      -- several results while the local pool runs the rest.
      if #inflight > 0 then
        inflight[math.min(#inflight, math.max(1, idiv(cap, 2)))].r:wait(0.05)
      end
    end)
    if not ok then
      adopt = true
      if interrupted(err) then stop = true
      elseif transient(err) then sleep(0.2)
      else
        io.stderr:write("concur-worker: ", describe(err), "\n")
        sleep(0.5)
      end
    end
  end
  pcall(pool.terminate, pool)
  pcall(conn.call, conn, "DEL", P .. "hb:" .. wid)   -- the records are recovered by the next scan
  return 0
end

return {Pool = setmetatable({}, {__index = Pool, __call = new_pool}),
  worker_main = worker_main, AsyncResult = AsyncResult, Future = Future}
