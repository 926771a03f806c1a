--- concur.pool: Pool (worker processes) and ThreadPool (worker threads).
--
-- Part of the Lua layer (lua/concur.lua), in a module of its own: concur
-- loads it the first time concur.Pool or concur.ThreadPool is read, and it
-- puts both there.  It is compiled into the C library beside concur.lua
-- (src/concur_lua.h), so thread states and embedding hosts find it without
-- a package.path.  Errors are raised at the user's line by concur's own
-- helpers (raise, in concur.lua), which count this file's functions as the
-- layer's.
--
-- Values a thread may receive by reference (Pool, AsyncResult) are listed in
-- this module's __concur_names: they cross states by name, as the receiver's
-- own copy of this module's value (src/transfer.c).
local core = require "concur.core"
local concur = require "concur"
local layer = getmetatable(concur).layer

local raise, core_call, check_options = layer.raise, layer.core_call, layer.check_options
local raise_value = layer.raise_value
local no_more_args = layer.no_more_args
local bad_self, typename, callable = layer.bad_self, layer.typename, layer.callable
local tointeger, idiv, tmove = layer.tointeger, layer.idiv, layer.tmove
local Thread, Process = concur.Thread, concur.Process

local names = {}
local pool_module = {__concur_names = names}

local function register(value, key)
  names[key] = value
end

-- Pools ----------------------------------------------------------------------
-- Pool (worker processes) and ThreadPool (worker threads) share all of this.
-- One task Queue that every worker reads, one result Queue that only the owner
-- reads, and a Slots array in which each worker writes the task it is running.
--
--   task    {tid, kind, fn, payload, nil, claim, page}   kind "call": payload
--           is the argument list; "map"/"star": payload is a chunk of items
--           (with n); nil stops a worker.  tid is the task's position in the
--           task queue (1, 2, ...).  A function without upvalues (but _ENV)
--           goes as a number, its id: the owner dumps it once into the pool's
--           `codes` Dict (id -> bytecode) before the first task that names it,
--           and each worker loads it from there once (a dump and a load per
--           task would cost a microsecond each way, and its bytes a copy).
--   result  {tid, true, values..., n = k}  for "call": table.pack(tid, results)
--           {tid, true, results}          for a chunk: its results, with n
--           {tid, false, {error, traceback}}
--           tid 0: a task could not be received.
--
-- Python collects results in a handler thread.  We cannot run the owner's Lua
-- code anywhere but in the owner, so results are collected, and callbacks run,
-- inside the owner's pool and result calls (README, "Pools").  A blocking call
-- waits on the result queue in slices of POOL_SLICE seconds, and between
-- slices looks for dead workers: the task in a dead worker's slot fails with
-- an error saying so, and a new worker takes the dead one's place.  A worker
-- killed between taking a task and writing its slot leaves a task nobody
-- holds; after a death, a task taken from the queue, in no slot and without a
-- result at two checks in a row is failed the same way (Pool:_census).

local POOL_SLICE = 0.1
local gc_proxy = _VERSION == "Lua 5.1" and rawget(_G, "newproxy") or nil
local CLAIM_PAGE = 1024   -- claims per Slots page (Futures, below)
local RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"
local pack, unpack, xpcall_args = layer.pack, layer.unpack, layer.xpcall
local getpid, now = core.getpid, core.time
local Empty = concur.Empty

-- The error Ctrl-C raises in the main thread (intr.c): never
-- taken for a failure of the call it came through, always passed on.
local function interrupted(e)
  return type(e) == "string" and e:sub(1, 11) == "interrupted"
end
local no_args = {n = 0}

-- An error value's string for a report, never raising: its __tostring may
-- fail, and a report must not replace the error it reports.
local function describe(v)
  local ok, s = pcall(tostring, v)
  return ok and s or ("(error object is a %s value)"):format(type(v))
end
local worker_count = 0

--- The loop every pool worker runs.  It crosses to worker threads as bytecode,
--- so it uses nothing but its arguments and the globals.
local function pool_worker(tq, rq, slots, wid, name, initializer, initargs, claims, codes)
  -- What Lua 5.1 and LuaJIT lack (as in concur.lua, "Runtimes").
  local unpack = table.unpack or unpack
  local pack = table.pack or function(...) return {n = select("#", ...), ...} end
  local xpcall = xpcall
  if _VERSION == "Lua 5.1" and not jit then   -- 5.1's xpcall passes no arguments
    local xpcall0 = xpcall
    xpcall = function(f, h, ...)
      local args = pack(...)
      return xpcall0(function() return f(unpack(args, 1, args.n)) end, h)
    end
  end
  local function load_binary(code)
    if loadstring then return loadstring(code, "=?") end
    return load(code, "=?", "b")
  end
  local slice = require("concur.core").slice
  local where = ("[in pool worker %s, pid %d]\n"):format(name, require("concur").getpid())
  -- An error value's string for a report: its __tostring may fail.
  local function describe(v)
    local ok, s = pcall(tostring, v)
    return ok and s or ("(error object is a %s value)"):format(type(v))
  end
  -- The error and the worker's traceback, cut at the worker's own frames.
  local function on_error(e)
    -- (5.1 and LuaJIT give no traceback for a nil message.)
    local tb = (debug.traceback("", 2) or ""):gsub("^\n", "")
    local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
    if cut then tb = tb:sub(1, cut - 1) end
    return {e, where .. tb}
  end
  -- The results replace the items in their own table.
  local function run_chunk(fn, items, star)
    if star then
      for i = 1, items.n do
        local a = items[i]
        items[i] = fn(unpack(a, 1, a.n or #a))
      end
    else
      for i = 1, items.n do items[i] = fn(items[i]) end
    end
    return slice(items, 1, items.n)   -- sent without a walk over the table
  end
  local loaded, nloaded = {}, 0   -- function id -> the function, loaded once
  local function task_fn(fn)
    if type(fn) ~= "number" then return fn end
    local f = loaded[fn]
    if f == nil then
      if nloaded >= 256 then loaded, nloaded = {}, 0 end
      f = assert(load_binary(codes[fn]))
      loaded[fn], nloaded = f, nloaded + 1
    end
    return f
  end
  local init_error
  if initializer ~= nil then
    -- A copy by the transfer rules, in a forked worker too: its _ENV is
    -- then the worker's globals, the one the tasks see.
    local _
    _, initializer, initargs = require("concur.core").transfer(initializer, initargs)
    local ok, err = xpcall(initializer, on_error, unpack(initargs, 1, initargs.n or #initargs))
    if not ok then
      init_error = err
      err[1] = "pool initializer failed: " .. describe(err[1])
      io.stderr:write(("Exception in pool initializer (%s):\n%s\n%s\n")
        :format(name, tostring(err[1]), err[2]))
    end
  end
  -- A result message: tid, ok, then the results or the error record, as
  -- the values of one item (rq:_putv).  One that cannot be sent fails the
  -- task with an error that says why.
  local putv = rq._putv
  local function send(tid, ok, ...)
    local sent, err = putv(rq, tid, ok, ...)
    if sent then return end
    err = tostring(err):gsub("^bad (%a+) at item%[(%d+)%]", function(what, k)
      return ("bad %s in result[%d]"):format(what, tonumber(k) - 2)
    end)
    if not ok then   -- an error value that cannot cross goes as its string
      local rec = ...
      if putv(rq, tid, false, {describe(rec[1]), rec[2]}) then return end
    end
    sent, err = putv(rq, tid, false,
      {("the task's %s could not be sent back: %s"):format(ok and "results" or "error", err)})
    if not sent then error(err, 0) end
  end
  local function call(tid, fn, ...)
    if init_error then return send(tid, false, init_error) end
    return send(tid, xpcall(task_fn(fn), on_error, ...))
  end
  -- (The unpack is in the protected call: a bad args.n fails the task.)
  local function call_list(tid, fn, args)
    if init_error then return send(tid, false, init_error) end
    local f = task_fn(fn)
    return send(tid, xpcall(function() return f(unpack(args, 1, args.n or #args)) end, on_error))
  end
  -- One message from the task queue (pcall of _getv), run: false at the
  -- end.  A task message (Pool:_submit): tid, kind, fn or its id, then the
  -- kind's values: the arguments ("call"), a table of them ("callt": many),
  -- the claim's slot and page first ("future", "futuret"), a chunk (the
  -- rest).  A "call" is sent from here (call's work inline: one vararg pass
  -- fewer on the commonest task).
  local slots_set = slots and slots.set
  local function step(got, tid, kind, fn, ...)
    if not got then
      if interrupted(tid) then
        error(tid, 0)    -- Ctrl-C in a worker process: it ends, as in Python
      elseif tid == require("concur").CancelledError then
        return false     -- a ThreadPool's terminate cancelled this worker
      end
      -- The message could not be decoded here: say so; the owner finds the task.
      putv(rq, 0, false, {"a task could not be received by pool worker " .. name .. ": "
        .. tostring(tid)})
      return true
    elseif tid == nil then
      return false       -- the owner's nil: close or terminate
    end
    if slots then slots_set(slots, wid, tid) end
    if kind == "call" then
      if init_error then
        send(tid, false, init_error)
      else
        send(tid, xpcall(task_fn(fn), on_error, ...))
      end
    elseif kind == "callt" then
      call_list(tid, fn, ...)
    elseif kind == "future" or kind == "futuret" then
      local slot, page = ...
      if not (page or claims):cas(slot, tid, -tid) then
        send(tid, true)   -- cancelled: the owner dropped the task, ignores this
      elseif kind == "future" then
        call(tid, fn, select(3, ...))
      else
        call_list(tid, fn, (select(3, ...)))
      end
    elseif init_error then
      send(tid, false, init_error)
    else
      send(tid, xpcall(run_chunk, on_error, task_fn(fn), (...), kind == "star"))
    end
    if slots then slots_set(slots, wid, 0) end
    return true
  end
  local getv = tq._getv
  while step(pcall(getv, tq)) do end
end

-- The error a failed task's get raises: a string error with the worker's
-- traceback after it, any other value as itself.
local function task_error(rec)
  local e, tb = rec[1], rec[2]
  if type(e) == "string" and tb then return e .. "\n" .. tb end
  return e
end

local function check_callable(v, n, fname, what, optional, level)
  if (v ~= nil or not optional) and not callable(v) then
    raise(("bad argument #%d to '%s' (%s expected, got %s)")
      :format(n, fname, what, type(v)), level + 1)
  end
end

-- A timeout argument, as the C core's (concur_opt_timeout): nil or math.huge
-- is forever (returned as nil), a negative, NaN or finite one above
-- concur.TIMEOUT_MAX a bad argument.
local TIMEOUT_MAX = concur.TIMEOUT_MAX
local function check_timeout(t, n, fname)
  if t == nil or t == math.huge then return nil end
  if type(t) ~= "number" or t ~= t or t < 0 then
    raise(("bad argument #%d to '%s' (timeout must be a non-negative number, got %s)")
      :format(n, fname, type(t) == "number" and tostring(t) or type(t)), 3)
  end
  if t > TIMEOUT_MAX then
    raise(("bad argument #%d to '%s' (timeout must be at most concur.TIMEOUT_MAX "
      .. "(or math.huge: forever), got %s)"):format(n, fname, tostring(t)), 3)
  end
  return t
end

-- Results ---------------------------------------------------------------------

--- What apply_async and map_async return (Python's AsyncResult).
local AsyncResult = {}
AsyncResult.__index = AsyncResult
register(AsyncResult, "AsyncResult")
-- A result is its pool's: the transfer refuses it, as it refuses the pool
-- (src/transfer.c, encode_refused).
AsyncResult.__concur_untransferable = "concur.AsyncResult"

local function is_ready(r) return r._ready end

-- Its methods check self: one metatable comparison.
local function bad_result(self, fname) bad_self(self, "concur.AsyncResult", fname, 3) end

function AsyncResult:ready()
  if getmetatable(self) ~= AsyncResult then bad_result(self, "ready") end
  if not self._ready then self._pool:_poll() end
  return self._ready
end

function AsyncResult:successful()
  if getmetatable(self) ~= AsyncResult then bad_result(self, "successful") end
  if not self:ready() then raise("result is not ready", 2) end
  return self._ok
end

--- Waits until the result is ready or timeout seconds pass; true if ready.
function AsyncResult:wait(timeout)
  if getmetatable(self) ~= AsyncResult then bad_result(self, "wait") end
  timeout = check_timeout(timeout, 1, "wait")
  if not self._ready then self._pool:_collect(is_ready, self, timeout) end
  return self._ready
end

--- The task's results, or raises its error, or concur.TimeoutError.
function AsyncResult:get(timeout)
  if getmetatable(self) ~= AsyncResult then bad_result(self, "get") end
  if timeout ~= nil then timeout = check_timeout(timeout, 1, "get") end
  if not self._ready then
    self._pool:_collect(is_ready, self, timeout)
    if not self._ready then raise_value(concur.TimeoutError) end
  end
  local v = self._value
  if not self._ok then error(v, 0) end
  if self._packed then return unpack(v, 1, v.n) end
  return v
end

function AsyncResult:__tostring()
  return ("<concur.AsyncResult %s>"):format(not self._ready and "pending"
    or self._ok and "ready" or "failed")
end

-- Runs a callback in the owner; an error there is reported, as one in a
-- thread is, and changes nothing else.
local function run_callback(cb, ...)
  local ok, err = xpcall_args(cb, debug.traceback, ...)
  if not ok then
    io.stderr:write("Exception in pool callback:\n", describe(err), "\n")
  end
end

-- Tells the waits of concur.wait and as_completed (Waiting, below) that r,
-- a Future or an AsyncResult, is done: each waiter is a list of arrivals.
local function notify_waiters(r)
  local waiters = r._waiters
  r._waiters = nil
  for w in pairs(waiters) do w[#w + 1] = r end
end

-- Keeps a task's values in r (a result or a future): one as itself, any
-- other number packed (r._packed), so that the commonest case needs no table.
local function keep_values(r, ...)
  if select("#", ...) == 1 then
    r._value = ...
  else
    r._value, r._packed = pack(...), true
  end
end

-- Marks r done with its values (ok: the task's results, a map's list) or an
-- error, then runs its callback.
local function result_finish(r, ok, ...)
  keep_values(r, ...)
  r._ok, r._ready = ok, true
  if ok then
    local cb = r._callback
    if cb ~= nil then run_callback(cb, ...) end
  elseif r._error_callback ~= nil then
    run_callback(r._error_callback, r._value)
  end
end

-- Pool ------------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool
register(Pool, "Pool")
-- A pool cannot leave the state that made it: its workers, queues and
-- results are the owner's.  The transfer refuses it (a Thread's args or
-- upvalues, a queue, a pipe) with the error it gives for a coroutine, this
-- in the place of the type; a pool's own field says which kind it is.
Pool.__concur_untransferable = "concur.Pool"

-- The pools this state made.  A copy of one (sent to another thread, or back)
-- is not in here, and a forked child has another pid: neither may use it.
local originals = setmetatable({}, {__mode = "k"})

local pool_options = {processes = true, threads = true, initializer = true, initargs = true}

-- nargs: how many arguments the constructor was given.
local function pool_new(cls, threads, fname, nargs, n, initializer, initargs)
  no_more_args(fname, type(n) == "table" and 1 or 3, nargs, 3)
  if type(n) == "table" then
    check_options(n, pool_options, fname, 3)
    local opts = n
    n, initializer, initargs = opts.processes, opts.initializer, opts.initargs
    if n == nil then n = opts.threads end   -- not `or`: false is an error, not the default
  end
  if n == nil then n = core.cpu_count() end
  local size = type(n) == "number" and tointeger(n) or nil
  if size == nil or size < 1 or size > 4096 then
    raise(("bad argument #1 to '%s' (number of workers must be an integer from 1 to 4096, got %s)")
      :format(fname, type(n) == "number" and tostring(n) or type(n)), 3)
  end
  check_callable(initializer, 2, fname, "callable", true, 3)
  if initargs ~= nil and type(initargs) ~= "table" then
    raise(("bad argument #3 to '%s' (table expected, got %s)"):format(fname, type(initargs)), 3)
  end
  if initializer ~= nil then   -- each worker gets a copy, by the transfer rules
    local ok, err = pcall(core.transfer, initializer, initargs)
    if not ok then
      raise(("bad argument #2 to '%s' (the initializer or its arguments cannot be sent: %s)")
        :format(fname, tostring(err)), 3)
    end
  end
  local self = setmetatable({
    _threads = threads, _size = size, _state = RUN,
    _initializer = initializer, _initargs = initargs or no_args,
    _tq = core_call(core.Queue), _rq = core_call(core.Queue), _slots = core_call(core.Slots, n),
    _codes = core_call(core.Dict), _sent = {},
    _workers = {}, _ended = {},
    _pending = {}, _start = {}, _npending = 0, _nput = 0,
    _deaths = 0, _suspects = false, _next_check = 0,
    _pid = getpid(),
    __concur_untransferable = threads and "concur.ThreadPool" or "concur.Pool",
  }, {__index = cls})
  -- The queues' methods of the hot paths, kept in the pool: a queue's
  -- methods are found by a C __index, a call each time.
  local tq = self._tq
  self._putv, self._getv, self._takev, self._qsize = tq._putv, tq._getv, tq._takev, tq.qsize
  originals[self] = true
  for wid = 1, self._size do
    local ok, err = pcall(self._start_worker, self, wid)
    if not ok then
      self:terminate()
      raise(("%s: cannot start a worker: %s"):format(fname, tostring(err)), 3)
    end
  end
  -- Lua 5.1 and LuaJIT call no __gc of a table: a proxy userdata of the
  -- pool's own carries it (a cycle through its finalizer, collected with
  -- the pool).  The transfer refuses a pool before it looks at its fields.
  if gc_proxy then
    local proxy = gc_proxy(true)
    getmetatable(proxy).__gc = function() Pool.__gc(self) end
    self._gc_proxy = proxy
  end
  -- The class (and its __gc) last: finalizers run in the reverse order of
  -- marking, so a dropped pool's runs before its workers' handles are gone.
  return setmetatable(self, cls)
end

function Pool:_start_worker(wid)
  worker_count = worker_count + 1
  local name = (self._threads and "ThreadPoolWorker-%d" or "ForkPoolWorker-%d"):format(worker_count)
  if self._claims == nil then   -- the first page of the futures' claims (Futures, below)
    self._claims, self._claim_free, self._claim_top = {core_call(core.Slots, CLAIM_PAGE)}, {}, 0
  end
  local opts = {target = pool_worker, daemon = true, name = name,
    args = {self._tq, self._rq, self._slots, wid, name, self._initializer, self._initargs,
      self._claims[1], self._codes}}
  local w = self._threads and Thread(opts) or Process(opts)
  core_call(w.start, w)
  self._workers[wid] = w
end

function Pool:__tostring()
  return ("<concur.%s state=%s pool_size=%d>")
    :format(self._threads and "ThreadPool" or "Pool", self._state, self._size)
end

-- True in the state and process that made the pool (see originals).
local function owned(pool)
  return originals[pool] and getpid() == pool._pid
end

function Pool:_check_owner(level)
  if not owned(self) then
    raise("this pool belongs to another thread or process", (level or 2) + 1)
  end
end

function Pool:_check_running(fname, level)
  level = level or 3
  self:_check_owner(level)
  if self._state ~= RUN then
    raise(("%s: pool is %s"):format(fname,
      self._state == CLOSE and "closed" or "terminated"), level)
  end
end

-- Function ids for the task messages (see the top of this section): fn ->
-- its id, or false when it has upvalues or is not a Lua function.
local fn_ids = setmetatable({}, {__mode = "k"})
local fn_codes = setmetatable({}, {__mode = "k"})
local last_fn_id = 0

local function fn_id(fn)
  local id = fn_ids[fn]
  if id == nil then
    id = false
    if type(fn) == "function" then
      local up1 = debug.getupvalue(fn, 1)
      if (up1 == nil or up1 == "_ENV") and debug.getupvalue(fn, 2) == nil then
        local ok, code = pcall(string.dump, fn)
        if ok then
          last_fn_id = last_fn_id + 1
          id, fn_codes[fn] = last_fn_id, code
        end
      end
    end
    fn_ids[fn] = id
  end
  return id
end

-- How many arguments a task carries as values of its message; more go as
-- their table (kinds "callt", "futuret").
local FLAT_ARGS = 16

-- The arguments' count when they go as values of the message, else nil.
local function flat_count(args)
  local n = args.n
  if n == nil then n = #args end
  if type(n) == "number" and n >= 0 and n <= FLAT_ARGS and n % 1 == 0 then return n end
end

-- A refused value's place in a task message (item[k]: its k-th value) in the
-- words of the caller: fn, the arguments[i], the list.
local function task_place(err, kind, first)
  return (tostring(err):gsub("^bad (%a+) at item%[(%d+)%]", function(what, k)
    k = tonumber(k)
    local place
    if k == 3 then
      place = "fn"
    elseif kind == "call" or kind == "future" then
      place = ("the arguments[%d]"):format(k - first + 1)
    elseif kind == "callt" or kind == "futuret" then
      place = "the arguments"
    else
      place = "the list"
    end
    return ("bad %s in %s"):format(what, place)
  end))
end

-- The message for a task that cannot be sent (err from q:_putv).
local function unsendable(fname, err, kind, first)
  return ("%s: the task cannot be sent: %s"):format(fname, task_place(err, kind, first))
end

-- Puts a task: its tid, or nil and the message (nothing is put) naming
-- fname's argument, for the caller to raise at its caller's line.  The
-- message's values (one item, q:_putv): tid, kind, fn or its id, then the
-- arguments (payload unpacked, or as a table when there are many), or the
-- chunk.  A future's task carries its claim first: the slot, and the page
-- past the first (else false).
function Pool:_submit(fname, kind, fn, payload, claim, page)
  local tid = self._nput + 1
  local id = fn_ids[fn]
  if id == nil then id = fn_id(fn) end
  if id and not self._sent[id] then   -- the bytecode goes once, to every worker
    self._codes[id] = fn_codes[fn]
    self._sent[id] = true
  end
  local f, tq, ok, err, first = id or fn, self._tq
  if kind == "call" then
    local n = flat_count(payload)
    if n then
      first, ok, err = 4, self._putv(tq, tid, "call", f, unpack(payload, 1, n))
    else
      kind, ok, err = "callt", self._putv(tq, tid, "callt", f, payload)
    end
  elseif kind == "future" then
    local n = flat_count(payload)
    if n then
      first, ok, err = 6, self._putv(tq, tid, "future", f, claim, page or false, unpack(payload, 1, n))
    else
      kind, ok, err = "futuret", self._putv(tq, tid, "futuret", f, claim, page or false, payload)
    end
  else
    ok, err = self._putv(tq, tid, kind, f, payload)
  end
  if not ok then return nil, unsendable(fname, err, kind, first) end
  self._nput = tid
  return tid
end

-- Settles the task tid: ok with its results (a chunk's: one list), or
-- failed with the error.  A task settled already (terminate, a death) is
-- left alone.
local function settle(pool, tid, ok, ...)
  local pending = pool._pending
  local r = pending[tid]
  if r == nil then return end
  pending[tid] = nil
  pool._npending = pool._npending - 1
  local kind = r._kind
  if kind == "call" then
    -- (a ready one is left as it is; pool_take settles the commonest itself)
    if not r._ready then result_finish(r, ok, ...) end
  elseif kind == "future" then
    return r:_finish(ok, ...)
  else
    local start = pool._start[tid]
    pool._start[tid] = nil
    r:_chunk(start, ok, (...))
  end
  if r._waiters ~= nil and r._ready then notify_waiters(r) end
end

-- A task or a result that went missing (reason): the census finds the task.
function Pool:_lost(reason)
  self._lost_reason = reason
  self._deaths = self._deaths + 1
end

-- What a pcall of the result queue's _getv or _takev gave: a message (its
-- values: tid, ok, then the results or the error record), false or Empty
-- when there was none, an interrupt, or a message that cannot be decoded
-- here.  Whether there was a message.
local function pool_take(pool, got, tid, ok, ...)
  if got then
    if ok then
      local r = pool._pending[tid]
      if r ~= nil and r._kind == "call" and r._callback == nil and r._waiters == nil
        and not r._ready and select("#", ...) == 1 then   -- the commonest: settle's work
        pool._pending[tid] = nil
        pool._npending = pool._npending - 1
        r._value, r._ok, r._ready = ..., true, true
        return true
      end
      settle(pool, tid, true, ...)
    elseif tid == 0 then   -- a worker could not receive a task
      pool:_lost((...)[1])
    elseif tid then
      settle(pool, tid, false, task_error((...)))
    else
      return false   -- _takev: empty
    end
    return true
  end
  if tid == Empty then return false end
  if interrupted(tid) then error(tid, 0) end
  -- a result that cannot be decoded here: the census finds its task
  pool:_lost("its result could not be received: " .. tostring(tid))
  return true
end

-- Fails the task tid with err (a death, terminate).
function Pool:_fail(tid, err)
  settle(self, tid, false, err)
end

-- Handles every message already in the result queue; never blocks.
function Pool:_poll()
  local rq, qsize = self._rq, self._qsize
  if qsize(rq) == 0 then return end
  if not originals[self] or getpid() ~= self._pid then self:_check_owner() end
  local takev = self._takev
  while pool_take(self, pcall(takev, rq)) do end
end

--- Collects results until pred(arg) holds or timeout seconds pass; false on
--- timeout.  Looks after the workers every POOL_SLICE seconds meanwhile.
function Pool:_collect(pred, arg, timeout)
  self:_check_owner()
  self:_poll()
  if pred(arg) then return true end
  local deadline = timeout and now() + timeout
  local rq = self._rq
  while true do
    local t = now()
    if t >= self._next_check then
      self._next_check = t + POOL_SLICE
      self:_maintain()
      if pred(arg) then return true end
    end
    local wait = self._next_check - t
    if deadline then
      local left = deadline - t
      if left <= 0 then return false end
      if left < wait then wait = left end
    end
    pool_take(self, pcall(self._getv, rq, true, wait > 0 and wait or 0))
    if pred(arg) then return true end
  end
end

-- Replaces dead workers, failing the task each was running.
function Pool:_maintain()
  if self._state == TERMINATE then return end
  local slots = self._slots
  for wid = 1, self._size do
    local w = self._workers[wid]
    if w and not w:is_alive() then
      local tid = slots:get(wid)
      local normal
      if self._threads then
        normal = tid == 0 and self._state == CLOSE and pcall(w.result, w)
      else
        normal = tid == 0 and self._state == CLOSE and w.exitcode == 0
      end
      self._ended[#self._ended + 1] = w
      self._workers[wid] = false
      if not normal then
        self:_worker_died(wid, w, tid)
      end
    end
  end
  if self._deaths > 0 and self._npending > 0 then self:_census() end
end

function Pool:_worker_died(wid, w, tid)
  self._deaths = self._deaths + 1
  self._slots:set(wid, 0)
  self:_poll()   -- a result the worker sent before it died counts
  if tid ~= 0 and self._pending[tid] then
    local how
    if self._threads then
      local _, err = pcall(w.result, w)
      how = "ended: " .. describe(err)
    else
      local code = w.exitcode
      how = code and code < 0 and ("was killed by signal %d"):format(-code)
        or ("exited with code %s"):format(tostring(code))
    end
    self:_fail(tid, ("pool worker %s (pid %s) %s while running this task")
      :format(w.name, tostring(w.pid or getpid()), how))
  end
  if self._state == RUN or self._npending > 0 then
    self:_start_worker(wid)
    if self._state == CLOSE then self._nput = self._nput + 1; self._tq:put(nil) end
  end
end

-- After a death: a task taken from the queue that no worker holds and that
-- has no result at two checks in a row was lost with its worker.
function Pool:_census()
  local taken = self._nput - self._tq:qsize()   -- tids up to this were taken
  local held = {}
  local slots = self._slots
  for wid = 1, self._size do
    local tid = slots:get(wid)
    if tid ~= 0 then held[tid] = true end
  end
  self:_poll()
  local prev, suspects = self._suspects, {}
  local lost = {}
  for tid in pairs(self._pending) do
    if tid <= taken and not held[tid] then
      suspects[tid] = true
      if prev and prev[tid] then lost[#lost + 1] = tid end
    end
  end
  self._suspects = suspects
  for _, tid in ipairs(lost) do
    self:_fail(tid, "the task was lost: " .. (self._lost_reason or "a pool worker died"))
  end
end

-- Submitting -------------------------------------------------------------------

local function new_result(pool, kind, callback, error_callback)
  return setmetatable({_pool = pool, _kind = kind, _ready = false, _ok = false,
    _callback = callback, _error_callback = error_callback}, AsyncResult)
end

-- Pool methods check self first: a pool's metatable is Pool.
local function bad_pool(self, fname) bad_self(self, "concur.Pool", fname, 3) end

-- Puts the task fn(args...) of apply or apply_async (fname), whose checks
-- are done; its result.  Called by them directly: an error goes to level 3,
-- their caller's line.
local function put_call(self, fname, fn, args, callback, error_callback)
  local tid, err, n
  local id = fn_ids[fn]
  if args and id ~= nil and (id == false or self._sent[id]) then
    n = args.n
    if n == nil then n = #args end
    if type(n) ~= "number" or n < 0 or n > 4 or n % 1 ~= 0 then n = nil end
  end
  if n then
    -- the commonest task (a function seen before, a few arguments):
    -- _submit's work inline (0.05-0.08 us of 0.8 per apply_async here)
    tid = self._nput + 1
    local ok
    ok, err = self._putv(self._tq, tid, "call", id or fn, unpack(args, 1, n))
    if not ok then raise(unsendable(fname, err, "call", 4), 3) end
    self._nput = tid
  else
    tid, err = self:_submit(fname, "call", fn, args or no_args)
    if tid == nil then raise(err, 3) end
  end
  local r
  if callback == nil and error_callback == nil then   -- a smaller table
    r = setmetatable({_pool = self, _kind = "call", _ready = false}, AsyncResult)
  else
    r = setmetatable({_pool = self, _kind = "call", _ready = false,
      _callback = callback, _error_callback = error_callback}, AsyncResult)
  end
  self._pending[tid] = r
  self._npending = self._npending + 1
  if self._qsize(self._rq) > 0 then self:_poll() end
  return r
end

--- apply_async(fn, [args], [callback], [error_callback]) -> AsyncResult
-- (The hot path of small tasks: checks are inlined where they cost a call.
-- originals[v] is nil for anything but a pool this state made, and reading
-- it never raises: one lookup answers "a pool of ours" before any field of
-- self is read.)
function Pool:apply_async(fn, args, callback, error_callback)
  if not originals[self] or self._state ~= RUN or getpid() ~= self._pid then
    if getmetatable(self) ~= Pool then bad_pool(self, "apply_async") end
    self:_check_running("apply_async")
  end
  if type(fn) ~= "function" then check_callable(fn, 1, "apply_async", "callable", false, 2) end
  if args ~= nil and type(args) ~= "table" then
    raise(("bad argument #2 to 'apply_async' (table of arguments expected, got %s)")
      :format(type(args)), 2)
  end
  if callback ~= nil or error_callback ~= nil then
    check_callable(callback, 3, "apply_async", "callable", true, 2)
    check_callable(error_callback, 4, "apply_async", "callable", true, 2)
  end
  return (put_call(self, "apply_async", fn, args, callback, error_callback))
end

--- apply(fn, [args]) -> fn's results
function Pool:apply(fn, args)
  if getmetatable(self) ~= Pool then bad_pool(self, "apply") end
  self:_check_running("apply")
  check_callable(fn, 1, "apply", "callable", false, 2)
  if args ~= nil and type(args) ~= "table" then
    raise(("bad argument #2 to 'apply' (table of arguments expected, got %s)"):format(type(args)), 2)
  end
  return put_call(self, "apply", fn, args):get()
end

-- A map's chunk arrived (ok) or failed.
function AsyncResult:_chunk(start, ok, value)
  local mode = self._kind
  if mode == "map" then
    if self._ready then return end
    if not ok then return result_finish(self, false, value) end
    tmove(value, 1, value.n, start, self._value)
    self._left = self._left - 1
    if self._left == 0 then result_finish(self, true, self._value) end
    return
  end
  self._left = self._left - 1
  if self._left == 0 then self._ready = true end
  if mode == "imap" then
    if ok then
      tmove(value, 1, value.n, start, self._value)
      self._arrived[start] = true
    else
      self._arrived[start] = {value}
    end
  else   -- imap_unordered: values in the order they come
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

local function check_chunksize(cs, n, fname)
  if cs ~= nil and not (type(cs) == "number" and tointeger(cs) and cs >= 1) then
    raise(("bad argument #%d to '%s' (chunksize must be a positive integer, got %s)")
      :format(n, fname, type(cs) == "number" and tostring(cs) or type(cs)), 4)
  end
end

-- Puts fn over list in chunks; the result, whose kind is mode.  Called by
-- the public methods directly (never as a tail call): level 3 is their
-- caller's line.
function Pool:_map(fname, mode, kind, fn, list, chunksize, callback, error_callback)
  self:_check_running(fname, 4)
  check_callable(fn, 1, fname, "callable", false, 3)
  if type(list) ~= "table" then
    raise(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(list)), 3)
  end
  check_chunksize(chunksize, 3, fname)
  local n = tointeger(list.n) or #list
  if n < 0 then n = 0 end
  if n > 0x7fffffff then   -- a chunk is cut with core.slice, at most this long
    raise(("bad argument #2 to '%s' (%s)"):format(fname,
      tointeger(list.n) and "list.n is too large" or "list is too long"), 3)
  end
  if kind == "star" then   -- checked here: a worker would fail on each item
    for i = 1, n do
      local args = list[i]
      if type(args) ~= "table" then
        raise(("bad argument #2 to '%s' (list of argument lists expected, item %d is a %s)")
          :format(fname, i, typename(args)), 3)
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
  local r = new_result(self, mode, callback, error_callback)
  -- A map's list is presized: filled chunk by chunk, a growing table would
  -- rehash on the way (a third of the owner's time for 100 000 trivial tasks).
  -- (Up to 2^24 items: a list.n of a billion asks for no 16 GB at once.)
  r._value = mode ~= "imap_unordered" and core.newtable(math.min(n, 0x1000000)) or {}
  r._len, r._chunksize = n, chunksize
  r._left = n == 0 and 0 or idiv(n - 1, chunksize) + 1   -- n + chunksize - 1 may overflow
  if mode == "imap" then r._arrived = {}
  elseif mode == "imap_unordered" then
    r._fifo, r._index, r._failed = {first = 1, last = 0}, {}, {}
  end
  if n == 0 then
    if mode == "map" then result_finish(r, true, r._value) else r._ready = true end
    return r
  end
  local pending, starts = self._pending, self._start
  local tids = {}
  -- Stepping by at most n: a start past n + chunksize could wrap (5.3).
  for start = 1, n, math.min(chunksize, n) do
    local stop = n - start < chunksize and n or start + chunksize - 1
    local chunk = core.slice(list, start, stop)   -- sent as a table of its own
    local tid, err = self:_submit(fname, kind, fn, chunk)
    if tid == nil then   -- withdraw what went: their results are dropped
      for _, t in ipairs(tids) do
        pending[t], starts[t] = nil, nil
        self._npending = self._npending - 1
      end
      r._ready, r._value = true, err
      raise(err, 3)
    end
    tids[#tids + 1] = tid
    pending[tid], starts[tid] = r, start
    self._npending = self._npending + 1
  end
  self:_poll()
  return r
end

-- map_async and starmap_async (kind "map", "star"): an AsyncResult.
local function map_async_method(fname, kind)
  return function(self, fn, list, chunksize, callback, error_callback)
    if getmetatable(self) ~= Pool then bad_pool(self, fname) end
    check_callable(callback, 4, fname, "callable", true, 2)
    check_callable(error_callback, 5, fname, "callable", true, 2)
    local r = self:_map(fname, "map", kind, fn, list, chunksize, callback, error_callback)
    return r
  end
end

-- map and starmap: the list of results, in order.
local function map_method(fname, kind)
  return function(self, fn, list, chunksize)
    if getmetatable(self) ~= Pool then bad_pool(self, fname) end
    return self:_map(fname, "map", kind, fn, list, chunksize):get()
  end
end

--- map_async(fn, list, [chunksize], [callback], [error_callback]) -> AsyncResult
Pool.map_async = map_async_method("map_async", "map")
--- map(fn, list, [chunksize]) -> list of fn(item), in order
Pool.map = map_method("map", "map")
--- starmap_async(fn, list of argument lists, [chunksize], [callback], [error_callback])
Pool.starmap_async = map_async_method("starmap_async", "star")
--- starmap(fn, list of argument lists, [chunksize]) -> list of fn(args...)
Pool.starmap = map_method("starmap", "star")

-- A nil result would end the caller's generic for silently (Lua ends the
-- loop at a nil first value), leaving the later results unseen: it is an
-- error instead, at the caller's line, raised when its turn comes as a
-- task's error is (the iterator goes on with the next item if called again).
local function nil_result(fname, i)
  raise(("%s: the result for item %d is nil, which would end the for loop early "
    .. "(return false or a table instead; map keeps nils)"):format(fname, i), 3)
end

--- imap(fn, list, [chunksize]): an iterator over fn(item), in order, giving
--- each value and its index; a task's error is raised when its turn comes,
--- and so is a nil result (see nil_result).
function Pool:imap(fn, list, chunksize)
  if getmetatable(self) ~= Pool then bad_pool(self, "imap") end
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
      i = math.min(chunk_start + cs - 1, r._len)   -- the chunk's other items go with it
      error(a[1], 0)
    end
    local v = values[i]
    if v == nil then nil_result("imap", i) end
    return v, i
  end
end

--- imap_unordered(fn, list, [chunksize]): an iterator over fn(item) in the
--- order the results come, giving each value and its index in list.
function Pool:imap_unordered(fn, list, chunksize)
  if getmetatable(self) ~= Pool then bad_pool(self, "imap_unordered") end
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

-- Futures ----------------------------------------------------------------------
-- pool:submit(fn, ...) returns a Future (concurrent.futures.Future).  Its task
-- is a "call" whose kind is "future": the worker claims it before running it,
-- so that f:cancel() either wins (the task never runs) or fails (it runs).
-- The claim is a slot of the pool's claim pages (Slots of CLAIM_PAGE words):
-- the owner writes the task's tid there before the put; the worker swaps tid
-- for -tid (running), cancel swaps it for 0; the swap that finds tid wins.
-- A claim is given back when its future is done, and may be taken by the
-- next future at once: a swap compares with the tid, and tids are never
-- reused, so a stale task cannot take a new future's claim.  The first page
-- goes to each worker when it starts; a task whose claim is on a later page
-- (more than CLAIM_PAGE futures outstanding) carries that page with it.
--
-- A future is settled by settle like an apply_async result (a dead
-- worker, terminate: the same errors); its done callbacks then run in the
-- owner, in the pool call that collected the result.
--
-- For concur.select: f:_watch() is the pool's result Queue, whose being
-- non-empty means "pump me", and f:_pump() collects what is in it (and looks
-- after the workers when POOL_SLICE has passed), never blocking; f._ready
-- then tells.  A worker's death puts nothing in that queue: a waiter pumps at
-- least every POOL_SLICE seconds while a future is pending.  AsyncResult has
-- the same two methods.

local PENDING, RUNNING, FINISHED, CANCELLED = "pending", "running", "finished", "cancelled"

local Future = {}
Future.__index = Future
register(Future, "Future")
Future.__concur_untransferable = "concur.Future"

local function bad_future(self, fname) bad_self(self, "concur.Future", fname, 3) end

-- A claim: its number g (1, 2, ...), which names page and slot.
local function claim_take(pool)
  local free = pool._claim_free
  local n = #free
  if n > 0 then
    local g = free[n]
    free[n] = nil
    return g
  end
  local g = pool._claim_top + 1
  pool._claim_top = g
  local page = idiv(g - 1, CLAIM_PAGE) + 1
  if pool._claims[page] == nil then pool._claims[page] = core_call(core.Slots, CLAIM_PAGE) end
  return g
end

-- Runs a done future's callbacks and tells its waiters.
local function future_done(f)
  if f._waiters ~= nil then notify_waiters(f) end
  local cbs = f._callbacks
  if cbs ~= nil then
    f._callbacks = nil
    for i = 1, #cbs do run_callback(cbs[i], f) end
  end
end

-- Settled by the pool: ok with the task's results, or failed with the error.
function Future:_finish(ok, ...)
  if self._ready then return end
  keep_values(self, ...)
  self._ok, self._ready, self._state = ok, true, FINISHED
  local free = self._pool._claim_free
  free[#free + 1] = self._claim
  future_done(self)
end

--- submit(fn, ...) -> a Future of fn(...)
function Pool:submit(fn, ...)
  if not originals[self] or self._state ~= RUN or getpid() ~= self._pid then
    if getmetatable(self) ~= Pool then bad_pool(self, "submit") end
    self:_check_owner()
    if self._state ~= RUN then
      raise(("submit: cannot schedule new futures after shutdown (pool is %s)")
        :format(self._state == CLOSE and "closed" or "terminated"), 2)
    end
  end
  if type(fn) ~= "function" then check_callable(fn, 1, "submit", "callable", false, 2) end
  local g = claim_take(self)
  local page, slot = idiv(g - 1, CLAIM_PAGE) + 1, (g - 1) % CLAIM_PAGE + 1
  local claims = self._claims[page]
  local tid = self._nput + 1
  claims:set(slot, tid)   -- before the put: a worker may take the task at once
  local _, err = self:_submit("submit", "future", fn, pack(...), slot, page > 1 and claims or nil)
  if err ~= nil then
    claims:set(slot, 0)
    local free = self._claim_free
    free[#free + 1] = g
    raise(err, 2)
  end
  local f = setmetatable({_pool = self, _kind = "future", _ready = false, _ok = false,
    _state = PENDING, _tid = tid, _claim = g, _cpage = claims, _cslot = slot}, Future)
  self._pending[tid] = f
  self._npending = self._npending + 1
  if self._qsize(self._rq) > 0 then self:_poll() end
  return f
end

--- Cancels the future if it has not started: true if it is (or was) cancelled.
function Future:cancel()
  if getmetatable(self) ~= Future then bad_future(self, "cancel") end
  if self._state == CANCELLED then return true end
  if self._ready then return false end
  local pool, tid = self._pool, self._tid
  pool:_check_owner()
  if not self._cpage:cas(self._cslot, tid, 0) then return false end   -- a worker has it
  if pool._pending[tid] == self then
    pool._pending[tid] = nil
    pool._npending = pool._npending - 1
  end
  self._ready, self._state = true, CANCELLED
  local free = pool._claim_free
  free[#free + 1] = self._claim
  future_done(self)
  return true
end

--- Whether the future is done (finished or cancelled); never waits.
function Future:done()
  if getmetatable(self) ~= Future then bad_future(self, "done") end
  if not self._ready then self._pool:_poll() end
  return self._ready
end

--- Whether a worker runs the task now.
function Future:running()
  if getmetatable(self) ~= Future then bad_future(self, "running") end
  if not self._ready then self._pool:_poll() end
  return not self._ready and self._cpage:get(self._cslot) == -self._tid
end

function Future:cancelled()
  if getmetatable(self) ~= Future then bad_future(self, "cancelled") end
  return self._state == CANCELLED
end

-- Waits (result, exception) until f is done or timeout passes.
local function future_wait(f, timeout, fname)
  if timeout ~= nil then check_timeout(timeout, 1, fname) end
  if not f._ready then
    f._pool:_collect(is_ready, f, timeout)
    if not f._ready then raise_value(concur.TimeoutError) end
  end
  if f._state == CANCELLED then raise_value(concur.CancelledError) end
end

--- fn's results; raises fn's error, concur.CancelledError or concur.TimeoutError.
function Future:result(timeout)
  if getmetatable(self) ~= Future then bad_future(self, "result") end
  future_wait(self, timeout, "result")
  local v = self._value
  if not self._ok then error(v, 0) end
  if self._packed then return unpack(v, 1, v.n) end
  return v
end

--- fn's error, or nil if it returned; raises as result does but for fn's error.
function Future:exception(timeout)
  if getmetatable(self) ~= Future then bad_future(self, "exception") end
  future_wait(self, timeout, "exception")
  if self._ok then return nil end
  return self._value
end

--- fn(f) runs in the owner once f is done (now if it is).
function Future:add_done_callback(fn)
  if getmetatable(self) ~= Future then bad_future(self, "add_done_callback") end
  check_callable(fn, 1, "add_done_callback", "callable", false, 2)
  if not self._ready then self._pool:_poll() end
  if self._ready then
    run_callback(fn, self)
  else
    local cbs = self._callbacks
    if cbs == nil then cbs = {}; self._callbacks = cbs end
    cbs[#cbs + 1] = fn
  end
end

function Future:__tostring()
  local state = self._state
  if state == PENDING then
    if self._ready then
      state = FINISHED
    elseif self._cpage:get(self._cslot) == -self._tid then
      state = RUNNING
    end
  end
  if state ~= FINISHED then return ("<concur.Future %s>"):format(state) end
  if not self._ok then return ("<concur.Future finished raised %s>"):format(typename(self._value)) end
  local v = self._value
  if not self._packed then
    return ("<concur.Future finished returned %s>"):format(typename(v))
  end
  return ("<concur.Future finished returned %s>"):format(v.n == 0 and "nothing"
    or ("%d values"):format(v.n))
end

-- For concur.select (see the top of this section).
local function pool_pump(pool)
  pool:_poll()
  if pool._npending > 0 and now() >= pool._next_check then
    pool._next_check = now() + POOL_SLICE
    pool:_maintain()
  end
end
function Future:_watch() return self._pool._rq end
function Future:_pump() if not self._ready then pool_pump(self._pool) end end
function AsyncResult:_watch() return self._pool._rq end
function AsyncResult:_pump() if not self._ready then pool_pump(self._pool) end end

--- shutdown([wait], [cancel_futures]): close; cancel the futures not started
--- if asked; then join if wait (default true).  Executor.shutdown.
function Pool:shutdown(wait, cancel_futures)
  if getmetatable(self) ~= Pool then bad_pool(self, "shutdown") end
  self:_check_owner()
  if cancel_futures then
    local fs = {}
    for _, r in pairs(self._pending) do
      if getmetatable(r) == Future then fs[#fs + 1] = r end
    end
    table.sort(fs, function(a, b) return a._tid < b._tid end)
    for _, f in ipairs(fs) do f:cancel() end
  end
  -- A ThreadPool told not to wait and to cancel: its running tasks are
  -- cancelled too (terminate cancels its threads), so it stops even when a
  -- task never ends.
  if cancel_futures and wait == false and self._threads then
    self:terminate()
    return
  end
  if self._state == RUN then self:close() end
  if wait == nil or wait then self:join() end
end

-- Ending -----------------------------------------------------------------------

--- No more tasks; the workers end when the queued ones are done.
function Pool:close()
  if getmetatable(self) ~= Pool then bad_pool(self, "close") end
  self:_check_owner()
  if self._state ~= RUN then return end
  self._state = CLOSE
  local tq = self._tq
  for _ = 1, self._size do
    self._nput = self._nput + 1
    core_call(tq.put, tq, nil)
  end
end

local function all_done(pool) return pool._npending == 0 end

--- Waits for every task's result (running their callbacks) and every worker.
function Pool:join()
  if getmetatable(self) ~= Pool then bad_pool(self, "join") end
  self:_check_owner()
  if self._state == RUN then raise("pool is still running: close or terminate it first", 2) end
  self:_collect(all_done, self)
  for wid = 1, self._size do
    local w = self._workers[wid]
    while w do   -- a worker that dies now is replaced while tasks remain
      if w:join(POOL_SLICE) then
        self:_maintain()
        break
      end
      self:_maintain()
      w = self._workers[wid]
    end
  end
  for _, w in ipairs(self._ended) do w:join() end
  self._ended = {}
end

--- Stops the workers now; results not yet in fail with an error saying so.
function Pool:terminate()
  if getmetatable(self) ~= Pool then bad_pool(self, "terminate") end
  self:_check_owner()
  if self._state == TERMINATE then return end
  self._state = TERMINATE
  local tq, workers = self._tq, self._workers
  -- Take the queued work away and tell every worker to stop.  Threads are
  -- cancelled (CancelledError in a running task; an idle one leaves);
  -- idle processes leave at once on their own, which gives back their
  -- share of the pool's queues (a killed process cannot: its references
  -- stay counted in the shared arena).
  while tq:qsize() > 0 do pcall(tq.get_nowait, tq) end
  for _ = 1, self._size do pcall(tq.put, tq, nil) end
  if self._threads then   -- a task that never ends is stopped by a cancel
    for wid = 1, self._size do
      local w = workers[wid]
      if w then pcall(w.cancel, w) end
    end
  else   -- busy processes are stopped after a short grace
    local grace_end = core.time() + 0.05
    for wid = 1, self._size do
      local w = workers[wid]
      if w and not w:join(math.max(0, grace_end - core.time())) then pcall(w.terminate, w) end
    end
  end
  local tids = {}
  for tid in pairs(self._pending) do tids[#tids + 1] = tid end
  table.sort(tids)
  for _, tid in ipairs(tids) do self:_fail(tid, "the pool was terminated before the task finished") end
  for wid = 1, self._size do
    local w = workers[wid]
    if w then
      if not self._threads and not w:join(1) then pcall(w.kill, w) end
      w:join()
    end
  end
  for _, w in ipairs(self._ended) do w:join() end
  self._ended = {}
end

Pool.__close = Pool.terminate

-- A pool dropped without close or terminate: its workers are told to stop
-- (not waited for: a collector must not block).
function Pool:__gc()
  if self._state == TERMINATE or not owned(self) then return end
  self._state = TERMINATE
  for wid = 1, self._size do
    local w = self._workers[wid]
    if w then
      if self._threads then
        pcall(self._tq.put, self._tq, nil)
      else   -- a replacement worker's handle may be finalized already
        local ok, alive = pcall(w.is_alive, w)
        if ok and alive then pcall(w.terminate, w) end
      end
    end
  end
end

--- Pool([processes], [initializer], [initargs]): worker processes.
pool_module.Pool = setmetatable({}, {__index = Pool, __call = function(_, ...)
  local p = pool_new(Pool, false, "Pool", select("#", ...), ...)
  return p
end})

--- ThreadPool([threads], [initializer], [initargs]): worker threads.
pool_module.ThreadPool = setmetatable({}, {__index = Pool, __call = function(_, ...)
  local p = pool_new(Pool, true, "ThreadPool", select("#", ...), ...)
  return p
end})

-- The constructors cross by name too (else a copy would take the class,
-- pool_new and its upvalues: every pool this state made).
register(pool_module.Pool, "concur.Pool")
register(pool_module.ThreadPool, "concur.ThreadPool")

-- Executors --------------------------------------------------------------------
-- concurrent.futures' ThreadPoolExecutor and ProcessPoolExecutor: a ThreadPool
-- or a Pool under Python's names, with submit, an iterator map and shutdown.

local Executor = {}
Executor.__index = Executor
register(Executor, "Executor")
Executor.__concur_untransferable = "concur.Executor"

local executor_options = {max_workers = true, initializer = true, initargs = true}

local function executor_new(threads, fname, opts)
  local n, initializer, initargs = opts, nil, nil
  if type(opts) == "table" then
    check_options(opts, executor_options, fname, 3)
    n, initializer, initargs = opts.max_workers, opts.initializer, opts.initargs
  end
  if n == nil and threads then n = math.min(32, core.cpu_count() + 4) end   -- Python's default
  local pool = pool_new(Pool, threads, fname, 1, n, initializer, initargs)
  return setmetatable({_pool = pool, _threads = threads,
    __concur_untransferable = "concur." .. fname}, Executor)
end

local function bad_executor(self, fname) bad_self(self, "concur.Executor", fname, 3) end

--- submit(fn, ...) -> a Future
function Executor:submit(fn, ...)
  if getmetatable(self) ~= Executor then bad_executor(self, "submit") end
  local f = self._pool:submit(fn, ...)
  return f
end

--- map(fn, list, [timeout]): an iterator over fn(item), in order, giving each
--- value and its index.  The timeout counts from this call: an item not done
--- in time raises concur.TimeoutError; an item's error is raised in its turn.
--- Then (and at the end of a loop) the futures not started are cancelled.
function Executor:map(fn, list, timeout)
  if getmetatable(self) ~= Executor then bad_executor(self, "map") end
  check_callable(fn, 1, "map", "callable", false, 2)
  if type(list) ~= "table" then
    raise(("bad argument #2 to 'map' (table expected, got %s)"):format(type(list)), 2)
  end
  check_timeout(timeout, 3, "map")
  local deadline = timeout and now() + timeout
  local n = tointeger(list.n) or #list
  local pool, fs = self._pool, {}
  for i = 1, n do fs[i] = pool:submit(fn, list[i]) end
  local i = 0
  local function cancel_rest()
    for k = i + 1, n do fs[k]:cancel() end
  end
  return function()
    if i >= n then return nil end
    i = i + 1
    local f = fs[i]
    fs[i] = false
    local ok, v = pcall(f.result, f, deadline and math.max(0, deadline - now()))
    if not ok then
      cancel_rest()
      error(v, 0)
    end
    return v, i
  end
end

--- shutdown([wait], [cancel_futures]): see Pool:shutdown.
function Executor:shutdown(wait, cancel_futures)
  if getmetatable(self) ~= Executor then bad_executor(self, "shutdown") end
  self._pool:shutdown(wait, cancel_futures)
end

-- `local ex <close> = ...`: shutdown(true) at the end of the block.
function Executor:__close()
  self._pool:shutdown(true)
end

function Executor:__tostring()
  local p = self._pool
  return ("<concur.%s max_workers=%d state=%s>"):format(
    self._threads and "ThreadPoolExecutor" or "ProcessPoolExecutor", p._size, p._state)
end

--- ThreadPoolExecutor{max_workers = n, initializer = f, initargs = {...}}
pool_module.ThreadPoolExecutor = function(...)
  no_more_args("ThreadPoolExecutor", 1, select("#", ...), 2)
  local ex = executor_new(true, "ThreadPoolExecutor", (...))
  return ex
end
--- ProcessPoolExecutor{max_workers = n, initializer = f, initargs = {...}}
pool_module.ProcessPoolExecutor = function(...)
  no_more_args("ProcessPoolExecutor", 1, select("#", ...), 2)
  local ex = executor_new(false, "ProcessPoolExecutor", (...))
  return ex
end
register(pool_module.ThreadPoolExecutor, "concur.ThreadPoolExecutor")
register(pool_module.ProcessPoolExecutor, "concur.ProcessPoolExecutor")

-- Waiting on many things --------------------------------------------------------
-- concur.wait and concur.as_completed over Futures, AsyncResults, Threads and
-- Processes, mixed.  A waiter is a list of arrivals: the pool members
-- (Futures, AsyncResults) put themselves in it when they are settled
-- (notify_waiters, called from settle and Future:cancel), so a wait
-- over many futures costs one step per arrival, not a scan.  Threads and
-- processes are asked (is_alive) at each step.
--
-- A step blocks on one thing: when every member not done is a pool member of
-- one pool, on that pool's result collection (Pool:_collect) for the whole
-- time left, so it returns as soon as a result comes in.  Otherwise it
-- blocks in turn on each pool (its collection) and each thread or process
-- (its join) for WAIT_SLICE seconds at most, and looks at all of them
-- between: a member is then seen done within about WAIT_SLICE seconds.

local WAIT_SLICE = 0.005
local FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED =
  "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"

-- "f" (Future), "r" (AsyncResult), "t" (Thread) or "p" (Process); nil else.
local function member_kind(v)
  local mt = getmetatable(v)
  if mt == Future then return "f" elseif mt == AsyncResult then return "r" end
  if type(v) == "userdata" then
    local name = typename(v)
    if name == "concur.Thread" then return "t" elseif name == "concur.Process" then return "p" end
  end
end

-- The members of fs, each once, in order, and their kinds.
local function members_of(fs, fname)
  if type(fs) ~= "table" or getmetatable(fs) ~= nil then
    raise(("bad argument #1 to '%s' (list of futures expected, got %s)"):format(fname, typename(fs)), 3)
  end
  local list, kinds = {}, {}
  for i = 1, tointeger(fs.n) or #fs do
    local v = fs[i]
    local kind = member_kind(v)
    if kind == nil then
      raise(("bad argument #1 to '%s' (fs[%d]: Future, AsyncResult, Thread or Process expected, got %s)")
        :format(fname, i, typename(v)), 3)
    end
    if kinds[v] == nil then
      kinds[v] = kind
      list[#list + 1] = v
    end
  end
  return list, kinds
end

-- Whether a thread or process has started and ended.
local function runnable_done(v, kind)
  if kind == "t" then return v.ident ~= nil and not v:is_alive() end
  return v.pid ~= nil and not v:is_alive()
end

-- Whether the member v, done, failed: a future or result whose task raised,
-- a thread whose target raised, a process whose exit code is not 0.
local function member_failed(v, kind)
  if kind == "f" then return v._state == FINISHED and not v._ok
  elseif kind == "r" then return not v._ok
  elseif kind == "t" then return not pcall(v.result, v)
  end
  return v.exitcode ~= 0
end

local Waiter = {}
Waiter.__index = Waiter

-- A waiter over list: members done now arrive first, in list's order.
local function waiter_new(list, kinds)
  local w = setmetatable({taken = 0, kinds = kinds, runnables = {}, pools = {}, npools = 0, counted = {},
    left = #list}, Waiter)
  local waiting = {}
  for _, v in ipairs(list) do
    local kind = kinds[v]
    if kind == "f" or kind == "r" then
      if not v._ready then v._pool:_poll() end
      if v._ready then
        w[#w + 1] = v
      else
        waiting[#waiting + 1] = v
      end
    elseif runnable_done(v, kind) then
      w[#w + 1] = v
    else
      w.runnables[#w.runnables + 1] = v
    end
  end
  -- Registered after the look: a member settled by a poll above arrives once.
  for _, v in ipairs(waiting) do
    if v._ready then
      w[#w + 1] = v
    else
      local ws = v._waiters
      if ws == nil then ws = {}; v._waiters = ws end
      ws[w], w.counted[v] = true, true
      local pool = v._pool
      if w.pools[pool] == nil then w.npools = w.npools + 1 end
      w.pools[pool] = (w.pools[pool] or 0) + 1
    end
  end
  w.turn = 0
  return w
end

local function has_arrival(w) return w[w.taken + 1] ~= nil end

-- Moves the ended threads and processes to the arrivals.
function Waiter:_look()
  local rs = self.runnables
  for i = #rs, 1, -1 do
    local v = rs[i]
    if runnable_done(v, self.kinds[v]) then
      table.remove(rs, i)
      self[#self + 1] = v
    end
  end
end

-- The next arrival, waiting up to `left` seconds (nil: without limit) for
-- one; nil when none came in time.
function Waiter:next(left)
  local deadline = left and now() + left
  while true do
    for pool in pairs(self.pools) do pool:_poll() end
    self:_look()
    local k = self.taken + 1
    local v = self[k]
    if v ~= nil then
      self.taken, self[k] = k, false
      self.left = self.left - 1
      if self.counted[v] then
        self.counted[v] = nil
        local pool = v._pool
        local c = self.pools[pool] - 1
        if c == 0 then self.pools[pool], self.npools = nil, self.npools - 1
        else self.pools[pool] = c end
      end
      return v
    end
    if self.left == 0 then return nil end
    local t = deadline and deadline - now()
    if t and t <= 0 then return nil end
    local rs = self.runnables
    if #rs == 0 and self.npools == 1 then
      next(self.pools):_collect(has_arrival, self, t)
    else
      local n = self.npools + #rs
      self.turn = self.turn % n + 1
      local slice = t and t < WAIT_SLICE and t or WAIT_SLICE
      if self.turn <= #rs then
        local r = rs[self.turn]
        if r.ident == nil and r.pid == nil then core.sleep(slice)   -- not started
        else r:join(slice) end
      else
        local i = #rs
        for pool in pairs(self.pools) do
          i = i + 1
          if i == self.turn then pool:_collect(has_arrival, self, slice) break end
        end
      end
    end
  end
end

local function check_wait_timeout(t, fname)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    raise(("bad argument #2 to '%s' (timeout must be a non-negative number, got %s)")
      :format(fname, type(t) == "number" and tostring(t) or type(t)), 3)
  end
end

-- Unregisters w from the members not done.
local function withdraw(w, list)
  for _, v in ipairs(list) do
    local ws = v._waiters
    if ws ~= nil then
      ws[w] = nil
      if next(ws) == nil then v._waiters = nil end
    end
  end
end

--- wait(fs, [timeout], [return_when]) -> done, not_done (lists, in fs's order)
local function wait(fs, timeout, return_when)
  local list, kinds = members_of(fs, "wait")
  check_wait_timeout(timeout, "wait")
  if return_when == nil then return_when = ALL_COMPLETED end
  if return_when ~= FIRST_COMPLETED and return_when ~= FIRST_EXCEPTION
    and return_when ~= ALL_COMPLETED then
    raise(("bad argument #3 to 'wait' (concur.FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED expected, got %s)")
      :format(type(return_when) == "string" and ("'%s'"):format(return_when) or typename(return_when)), 2)
  end
  local w = waiter_new(list, kinds)
  local done, ndone = {}, 0
  local deadline = timeout and now() + timeout
  -- Counts v done: true when that ends the wait (FIRST_EXCEPTION).
  local function take(v)
    done[v], ndone = true, ndone + 1
    return return_when == FIRST_EXCEPTION and member_failed(v, kinds[v])
  end
  local ok, err = pcall(function()
    while true do
      local v = w:next(0)   -- what is done already counts, without waiting
      while v ~= nil do
        if take(v) then return end
        v = w:next(0)
      end
      if ndone == #list or return_when == FIRST_COMPLETED and ndone > 0 then return end
      local left = deadline and deadline - now()
      if left and left <= 0 then return end
      v = w:next(left)
      if v == nil or take(v) then return end
    end
  end)
  withdraw(w, list)
  if not ok then error(err, 0) end
  local d, nd = {}, {}
  for _, v in ipairs(list) do
    if done[v] then d[#d + 1] = v else nd[#nd + 1] = v end
  end
  return d, nd
end

--- as_completed(fs, [timeout]): an iterator over the members of fs as they
--- are done (those done already first); concur.TimeoutError when the
--- timeout (counted from this call) runs out with some not done.
local function as_completed(fs, timeout)
  local list, kinds = members_of(fs, "as_completed")
  check_wait_timeout(timeout, "as_completed")
  local deadline = timeout and now() + timeout
  local w = waiter_new(list, kinds)
  return function()
    if w.left == 0 then return nil end
    local ok, v = pcall(w.next, w, deadline and math.max(0, deadline - now()))
    if not ok then
      withdraw(w, list)
      error(v, 0)
    end
    if v == nil then
      withdraw(w, list)
      raise_value(concur.TimeoutError)
    end
    return v
  end
end

pool_module.Future = Future
pool_module.wait, pool_module.as_completed = wait, as_completed
concur.ThreadPoolExecutor = pool_module.ThreadPoolExecutor
concur.ProcessPoolExecutor = pool_module.ProcessPoolExecutor
concur.Future, concur.wait, concur.as_completed = Future, wait, as_completed

pool_module.AsyncResult = AsyncResult
concur.Pool, concur.ThreadPool = pool_module.Pool, pool_module.ThreadPool

return pool_module

