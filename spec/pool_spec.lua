-- spec/pool_spec.lua: concur.Pool (worker processes) and concur.ThreadPool
-- (worker threads) of lua/concur.lua, "Pools" (API.md, "Pools"): the
-- constructors and their checks, initializers, apply and its results,
-- task errors, callbacks in the owner, map, starmap, imap and imap_unordered,
-- close, join and terminate, and (processes only) workers that die.
--
-- Every scenario runs for both pools.  A task runs in another Lua state: it
-- sees the test's locals only as copied upvalues, and reports through its
-- return values or through concur objects (Queues, Events, Barriers), which
-- cross by reference.  Order comes from those objects and from the pools' own
-- waits, never from a sleep; concur.sleep appears only inside a task, to make
-- it long while the test waits on something else.  A task that blocks waits on
-- an Event from hold(), which after_each sets, and every pool a test makes is
-- terminated by after_each, so a failure leaves no worker behind.  Waits
-- that a fault could make endless (a death not seen) have timeouts.  What
-- workers print on stderr (a failed initializer, an
-- error in a callback) is checked in a Lua subprocess.
--
-- Tests marked "Was a bug" reproduce faults found while the pool was written.
local concur = require "concur"
local support = require "support"
local pack, unpack, mtype = support.pack, support.unpack, support.mtype   -- cross to threads with the functions that use them

-- From support.lua: err_of(fn, ...) and raised(fn, ...) are pcall that
-- returns the error message as a string, or the raw error value
-- (concur.Empty, a table, ...), and fail if none; assert_has(s, sub) asserts
-- that s contains sub (plain); timed(fn, ...) gives the seconds fn(...)
-- takes, then pcall's results.
local err_of, raised, assert_has = support.err_of, support.raised, support.assert_has
local timed = support.timed

-- Asserts that `s` does not contain `sub` (plain), with both in the message.
local function assert_lacks(s, sub)
  assert.is_falsy(tostring(s):find(sub, 1, true),
    ("did not expect %q in %q"):format(sub, tostring(s)))
end

-- {1, 2, ..., n}
local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- A sorted copy of the list t[1..n].
local function sorted(t, n)
  local c = table.move(t, 1, n or #t, 1, {})
  table.sort(c)
  return c
end

-- How many distinct values t has, and the set of them.
local function distinct(t)
  local set, n = {}, 0
  for _, v in pairs(t) do
    if not set[v] then set[v], n = true, n + 1 end
  end
  return n, set
end

-- From support.lua: is_child(pid) is whether pid is one of this process's
-- live children.
local is_child = support.is_child

-- Runs the Lua source `src` in a subprocess (the spec runner's interpreter,
-- this process's module paths); returns stdout and stderr together.
local function run_lua(src)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  local q = support.shell_quote
  local cmd = table.concat({"LUA_PATH=" .. q(package.path), "LUA_CPATH=" .. q(package.cpath),
    "timeout -k 5 30", q(support.LUA), q(path)}, " ")
  local out, code = support.shell(cmd .. " 2>&1")
  os.remove(path)
  return out, code
end

-- A function for map whose value is its item's position in its chunk: every
-- task receives its own copy of the function's upvalues, so the count starts
-- again at 1 with each chunk.
local function position_in_chunk()
  local box = {n = 0}
  return function()
    box.n = box.n + 1
    return box.n
  end
end

-- What position_in_chunk gives for n items cut in chunks of cs.
local function positions(n, cs)
  local t = {}
  for i = 1, n do t[i] = (i - 1) % cs + 1 end
  return t
end

-- Python's default chunksize for map: about four chunks per worker.
local function python_chunksize(len, workers)
  return math.floor((len + workers * 4 - 1) / (workers * 4))
end

local function noop() end

for _, kind in ipairs({"Pool", "ThreadPool"}) do
describe(kind, function()
  local P = concur[kind]
  local procs = kind == "Pool"
  local worker_prefix = procs and "ForkPoolWorker-" or "ThreadPoolWorker-"

  -- Which worker a task runs in: its process for Pool, its thread for ThreadPool.
  local whoami = procs and function() return concur.getpid() end
    or function() return concur.get_ident() end

  local pools, holds, threads, children = {}, {}, {}, {}

  after_each(function()
    for _, e in ipairs(holds) do e:set() end
    for _, p in ipairs(pools) do pcall(p.terminate, p) end
    for _, t in ipairs(threads) do pcall(t.join, t) end
    for _, c in ipairs(children) do support.stop(c) end
    pools, holds, threads, children = {}, {}, {}, {}
  end)

  -- A pool that after_each terminates.
  local function new(...)
    local pool = P(...)
    pools[#pools + 1] = pool
    return pool
  end

  -- An Event that tasks wait on; after_each sets it.
  local function hold()
    local e = concur.Event()
    holds[#holds + 1] = e
    return e
  end

  -- The indexes n tasks get from a Barrier of n: {0, ..., n-1} only when the
  -- pool runs n tasks at once (a task alone breaks the barrier after 10 s).
  local function all_at_once(pool, n)
    local b = concur.Barrier(n)
    local r = pool:map_async(function() return b:wait(10) end, range(n), 1)
    return sorted(r:get(20), n)
  end

  -- The workers that ran k one-item tasks.
  local function workers_of(pool, k)
    return pool:map(whoami, range(k), 1)
  end

  -- A pool whose initializer puts each worker's id on a queue; the pool, the
  -- queue and the n ids.
  local function pool_with_ids(n)
    local q = concur.Queue()
    local pool = new(n, function(q) q:put(whoami()) end, {q})
    local ids = {}
    for i = 1, n do ids[i] = q:get(true, 10) end
    return pool, q, ids
  end

  -- The number of threads alive in this process.
  local function threads_alive() return concur.active_count() end

  -- Asserts that the pool's workers have ended and been joined: a Pool's
  -- processes `ids` are reaped (support.assert_reaped), and as many threads
  -- run as `threads_before` when a ThreadPool's workers have ended.
  local function assert_workers_gone(ids, threads_before)
    if procs then
      support.assert_reaped(ids)
    else
      assert.equal(threads_before, threads_alive())
    end
  end

  ---------------------------------------------------------------------------
  describe("construction", function()
    it("defaults to cpu_count() workers", function()
      assert.equal(("<concur.%s state=RUN pool_size=%d>"):format(kind, concur.cpu_count()),
        tostring(new()))
    end)

    it("takes the number of workers positionally or as an option", function()
      assert.equal(("<concur.%s state=RUN pool_size=3>"):format(kind), tostring(new(3)))
      assert.equal(("<concur.%s state=RUN pool_size=2>"):format(kind), tostring(new(2.0)))
      assert.equal(("<concur.%s state=RUN pool_size=2>"):format(kind),
        tostring(new({processes = 2})))
      if not procs then
        assert.equal("<concur.ThreadPool state=RUN pool_size=1>", tostring(new({threads = 1})))
      end
      assert.equal(("<concur.%s state=RUN pool_size=%d>"):format(kind, concur.cpu_count()),
        tostring(new({})))
    end)

    it("runs as many tasks at once as it has workers", function()
      local pool = new(3)
      assert.same({0, 1, 2}, all_at_once(pool, 3))
      local n = distinct(workers_of(pool, 30))
      assert.is_true(n >= 1 and n <= 3, "tasks ran in " .. n .. " workers")
    end)

    it("rejects a number of workers that is not an integer from 1 to 4096", function()
      local want = ("bad argument #1 to '%s' (number of workers must be"):format(kind)
      for _, bad in ipairs({0, -1, 4097, 1.5, "2", true, 0 / 0}) do
        assert_has(err_of(function() local _ = P(bad) end), want)
      end
      assert_has(err_of(function() local _ = P({processes = 0}) end), want)
      assert_has(err_of(function() local _ = P({threads = 1.5}) end), want)
    end)

    -- Was a bug (fixed; the test stays): math.huge passes the integer check (floor(inf) == inf), and the
    -- range error then formats it with %d: "concur.lua:434: bad argument #2
    -- to 'format' (number has no integer representation)".
    it("rejects an infinite or huge number of workers with its own error", function()
      local want = ("bad argument #1 to '%s' (number of workers must be"):format(kind)
      assert_has(err_of(function() local _ = P(math.huge) end), want)
      assert_has(err_of(function() local _ = P(1e300) end), want)
    end)

    it("rejects an initializer that is not callable and initargs that are not a table", function()
      assert_has(err_of(function() local _ = P(1, 42) end),
        ("bad argument #2 to '%s'"):format(kind))
      assert_has(err_of(function() local _ = P(1, nil, "x") end),
        ("bad argument #3 to '%s'"):format(kind))
      assert_has(err_of(function() local _ = P({processes = 1, initializer = {}}) end),
        ("bad argument #2 to '%s'"):format(kind))
      assert_has(err_of(function() local _ = P({processes = 1, initargs = 5}) end),
        ("bad argument #3 to '%s'"):format(kind))
    end)

    it("rejects an unknown option", function()
      local err = err_of(function() local _ = P({processes = 1, maxtasksperchild = 3}) end)
      assert_has(err, ("bad argument #1 to '%s'"):format(kind))
      assert_has(err, "unknown option 'maxtasksperchild'")
    end)

    it("reports a bad argument at the caller's line", function()
      assert_has(err_of(function() local _ = P(0) end), "pool_spec.lua:")
    end)

    it("gives its state in tostring: RUN, CLOSE, TERMINATE", function()
      local a = new(1)
      assert.equal(("<concur.%s state=RUN pool_size=1>"):format(kind), tostring(a))
      a:close()
      assert.equal(("<concur.%s state=CLOSE pool_size=1>"):format(kind), tostring(a))
      a:join()
      assert.equal(("<concur.%s state=CLOSE pool_size=1>"):format(kind), tostring(a))
      a:terminate()
      assert.equal(("<concur.%s state=TERMINATE pool_size=1>"):format(kind), tostring(a))
      local b = new(2)
      b:terminate()
      assert.equal(("<concur.%s state=TERMINATE pool_size=2>"):format(kind), tostring(b))
      b:close()
      assert.equal(("<concur.%s state=TERMINATE pool_size=2>"):format(kind), tostring(b))
    end)
  end)

  ---------------------------------------------------------------------------
  describe("initializer", function()
    it("runs once in each worker, with initargs, before its tasks", function()
      local q = concur.Queue()
      local pool = new(3, function(q, tag) q:put({tag, whoami()}) end, {q, "init"})
      local inited = {}
      for i = 1, 3 do
        local item = q:get(true, 10)
        assert.equal("init", item[1])
        inited[i] = item[2]
      end
      local n, set = distinct(inited)
      assert.equal(3, n)
      if procs then assert.is_nil(set[concur.getpid()]) end
      for _, id in ipairs(workers_of(pool, 30)) do
        assert.is_true(set[id], "a task ran in a worker that was not initialized")
      end
      assert.equal(0, q:qsize())   -- once per worker, not once per task
    end)

    it("takes initializer and initargs in the options table", function()
      local q = concur.Queue()
      local opts = {initializer = function(q, a, b) q:put(a + b) end, initargs = {q, 20, 22}}
      if procs then opts.processes = 2 else opts.threads = 2 end
      new(opts)
      assert.equal(42, q:get(true, 10))
      assert.equal(42, q:get(true, 10))
    end)

    it("sets up worker globals (_G) that the tasks read, in each worker", function()
      local pool = new(2, function(v)
        _G.POOL_SPEC_INIT = v
        _G.POOL_SPEC_WORKER = whoami()
      end, {"ready"})
      local got = pool:map(function()
        return tostring(_G.POOL_SPEC_INIT) .. ":" .. tostring(_G.POOL_SPEC_WORKER == whoami())
      end, range(20), 1)
      for i = 1, 20 do assert.equal("ready:true", got[i]) end
      assert.is_nil(rawget(_G, "POOL_SPEC_INIT"))   -- the owner's globals are not the workers'
    end)

    -- Was a bug (fixed; the test stays): (Pool only, and only where the chunk's _ENV is not _G, as in
    -- busted's spec files): a Pool's initializer reaches the forked worker
    -- as it is, with the spec's _ENV, while its tasks cross a Queue and get
    -- the worker's _G (API.md's transfer rule); so a plain global the
    -- initializer sets is nil in the tasks.  A ThreadPool's initializer
    -- crosses too, and passes.
    it("sets up plain globals that the tasks read", function()
      local pool = new(2, function(v) POOL_SPEC_PLAIN = v end, {"ready"})
      local got = pool:map(function() return tostring(POOL_SPEC_PLAIN) end, range(4), 1)
      assert.same({"ready", "ready", "ready", "ready"}, got)
    end)

    it("fails every task of a worker whose initializer raised, and reports it on stderr", function()
      local out, code = run_lua(([[
        local concur = require "concur"
        local pool = concur.%s(2, function() error("init boom") end)
        local r = pool:apply_async(function() return 1 end)
        local ok, e = pcall(r.get, r, 10)
        print("get:", ok, e == concur.TimeoutError and "TIMEOUT" or tostring(e))
        local r2 = pool:map_async(function(x) return x end, {1, 2, 3, 4}, 1)
        local ok2, e2 = pcall(r2.get, r2, 10)
        print("map:", ok2, e2 == concur.TimeoutError and "TIMEOUT" or tostring(e2))
        pool:close()
        pool:join()
        print("joined")
      ]]):format(kind))
      assert.equal(0, code, out)
      assert_has(out, "Exception in pool initializer (" .. worker_prefix)
      assert_has(out, "get:\tfalse\tpool initializer failed: ")
      assert_has(out, "map:\tfalse\tpool initializer failed: ")
      assert_has(out, "init boom")
      assert_has(out, "[in pool worker " .. worker_prefix)
      assert_lacks(out, "TIMEOUT")
      assert_has(out, "joined")
      local reports = select(2, out:gsub("Exception in pool initializer", ""))
      assert.equal(2, reports, out)   -- one per worker
    end)
  end)

  ---------------------------------------------------------------------------
  describe("apply", function()
    it("returns all of fn's results, nils included", function()
      local pool = new(2)
      local r = pack(pool:apply(function(a, b, c) return c, nil, a, b end,
        pack(1, nil, 3)))
      assert.equal(4, r.n)
      assert.equal(3, r[1])
      assert.is_nil(r[2])
      assert.equal(1, r[3])
      assert.is_nil(r[4])
      assert.equal(0, select("#", pool:apply(noop)))
    end)

    it("passes the arguments, nils included when args has n", function()
      local pool = new(1)
      local count = function(...) return select("#", ...), ... end
      assert.same({n = 3, 2, nil, nil}, pack(pool:apply(count, pack(nil, nil))))
      assert.same({n = 1, 0}, pack(pool:apply(count)))
      assert.same({n = 1, 0}, pack(pool:apply(count, {})))
      assert.same({n = 3, 2, "a", "b"}, pack(pool:apply(count, {"a", "b"})))
    end)

    -- Up to 16 arguments go as values of the task's message, more as their
    -- table (lua/concur/pool.lua, Pool:_submit): both ways give the same.
    it("passes many arguments, nils included, and names a refused one by its place", function()
      local pool = new(1)
      local count = function(...) return select("#", ...), ... end
      for _, n in ipairs({15, 16, 17, 40, 300}) do
        local args = {n = n}
        for i = 1, n, 3 do args[i] = i end
        local got = pack(pool:apply(count, args))
        assert.equal(n + 1, got.n)
        assert.equal(n, got[1])
        for i = 1, n do assert.equal(args[i], got[i + 1], "n " .. n .. ", argument " .. i) end
        args[n] = coroutine.create(noop)
        assert_has(err_of(pool.apply, pool, count, args),
          ("apply: the task cannot be sent: bad value in the arguments[%d] (coroutine)"):format(n))
        args[n] = {k = {coroutine.create(noop)}}
        assert_has(err_of(pool.apply_async, pool, count, args),
          ("apply_async: the task cannot be sent: bad value in the arguments[%d].k[1] (coroutine)"):format(n))
      end
      local weird = {1, 2, n = "x"}   -- not a count: the worker's unpack says so
      assert_has(err_of(pool.apply, pool, count, weird), "unpack")
      assert.same({n = 3, 2, 7, 8}, pack(pool:apply(count, {7, 8})))   -- the pool goes on
      -- A few arguments to a function sent before take put_call's shorter
      -- way: the same answers, the same errors.
      for n = 0, 5 do
        local args = {n = n}
        for i = 1, n - 1 do args[i] = i * 10 end
        local got = pack(pool:apply_async(count, args):get())
        assert.equal(n + 1, got.n)
        for i = 1, n do assert.equal(args[i], got[i + 1], "n " .. n .. ", argument " .. i) end
        if n > 0 then
          args[n] = coroutine.create(noop)
          assert_has(err_of(pool.apply_async, pool, count, args),
            ("apply_async: the task cannot be sent: bad value in the arguments[%d] (coroutine)"):format(n))
        end
      end
      assert.same({n = 1, 0}, pack(pool:apply(count, {1, 2, n = -1})))
      assert.same({n = 3, 2, 7, 8}, pack(pool:apply(count, {7, 8})))
    end)

    it("moves arguments and results by the transfer rules", function()
      local pool = new(1)
      local cyc = {name = "cyc"}
      cyc.self = cyc
      local a, b, c, d, e = pool:apply(function(f, i, s, t)
        return mtype(f), mtype(i), s, rawequal(t.self, t) and t.name, 2.0
      end, {2.0, 3, "a\0b", cyc})
      assert.equal(support.INTEGRAL_FLOAT, a)
      assert.equal("integer", b)
      assert.equal("a\0b", c)
      assert.equal("cyc", d)
      assert.equal(support.INTEGRAL_FLOAT, mtype(e))
      local t = pool:apply(function() local x = {k = {1, 2}}; x.me = x; return x end)
      assert.is_true(rawequal(t, t.me))
      assert.same({1, 2}, t.k)
    end)

    it("runs fn in a worker", function()
      local pool = new(1)
      local pid, ident = pool:apply(function() return concur.getpid(), concur.get_ident() end)
      if procs then
        assert.are_not.equal(concur.getpid(), pid)
      else
        assert.equal(concur.getpid(), pid)
        assert.are_not.equal(concur.get_ident(), ident)
      end
    end)

    it("runs a function made after the pool started, with copies of its upvalues", function()
      local pool = new(2)
      local k = 7
      local t = {a = 1, b = {2}}
      assert.equal(24, pool:apply(function(x) return x * k + t.a + t.b[1] end, {3}))
      assert.equal(100, pool:apply(function() t.a = 100; return t.a end))
      assert.equal(1, t.a)   -- the task changed its own copy
      k = 8
      assert.equal(27, pool:apply(function(x) return x * k + t.a + t.b[1] end, {3}))
    end)

    it("runs many different functions, each its own, and closures with their own upvalues", function()
      local pool = new(2)
      local fs, rs = {}, {}
      for i = 1, 300 do   -- more than a worker keeps loaded
        fs[i] = support.load(("return function(x) return x * 1000 + %d end"):format(i))()
        rs[i] = pool:apply_async(fs[i], {i})
      end
      for i = 1, 300 do assert.equal(i * 1000 + i, rs[i]:get(10)) end
      for i = 1, 20 do
        assert.equal(1001, pool:apply(fs[1], {1}))
        assert.equal(2300, pool:apply(fs[300], {2}))
      end
      local cs = {}
      for i = 1, 300 do cs[i] = pool:apply_async(function() return i end) end
      for i = 1, 300 do assert.equal(i, cs[i]:get(10)) end
      local got = pool:map(function(x) return x + 1 end, range(10))
      assert.same({2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, got)
      assert.same({3, 4}, pool:map(function(x) return x + 2 end, {1, 2}))
    end)

    it("runs a callable table and a library function", function()
      local pool = new(1)
      local tripler = setmetatable({k = 3}, {__call = function(self, x) return self.k * x end})
      assert.equal(15, pool:apply(tripler, {5}))
      assert.same({"A", "B"}, pool:map(string.upper, {"a", "b"}))
      assert.equal("x-y", pool:apply(table.concat, {{"x", "y"}, "-"}))
    end)
  end)

  ---------------------------------------------------------------------------
  describe("apply_async and its result", function()
    it("get gives fn's results; ready and successful say so", function()
      local pool = new(2)
      local r = pool:apply_async(function(x) return x, x * 2, nil end, {21})
      assert.same({n = 3, 21, 42, nil}, pack(r:get(10)))
      assert.is_true(r:ready())
      assert.is_true(r:successful())
      assert.equal("<concur.AsyncResult ready>", tostring(r))
      assert.same({n = 3, 21, 42, nil}, pack(r:get()))   -- again, the same
      assert.is_true(r:wait(0))
    end)

    it("is pending while its task runs", function()
      local pool = new(1)
      local ev = hold()
      local r = pool:apply_async(function() ev:wait(10); return "done" end)
      assert.is_false(r:ready())
      assert_has(err_of(r.successful, r), "result is not ready")
      assert.equal("<concur.AsyncResult pending>", tostring(r))
      assert.is_false(r:wait(0.05))
      ev:set()
      assert.is_true(r:wait(10))
      assert.is_true(r:ready())
      assert.equal("done", r:get(0))
    end)

    it("get raises concur.TimeoutError when its timeout runs out", function()
      local pool = new(1)
      local ev = hold()
      local r = pool:apply_async(function() ev:wait(10); return "late" end)
      local took, ok, e = timed(r.get, r, 0.2)
      assert.is_false(ok)
      assert.is_true(e == concur.TimeoutError, "raised " .. tostring(e))
      assert.is_true(took >= 0.15 and took < 3, ("get(0.2) took %.3f s"):format(took))
      local took0, ok0, e0 = timed(r.get, r, 0)
      assert.is_false(ok0)
      assert.is_true(e0 == concur.TimeoutError)
      assert.is_true(took0 < 1)
      local tookw, okw, waited = timed(r.wait, r, 0)
      assert.is_true(okw)
      assert.is_true(tookw < 1)
      assert.is_false(waited)
      ev:set()
      assert.equal("late", r:get(10))
    end)

    it("rejects a negative, NaN or non-number timeout", function()
      local pool = new(1)
      local ev = hold()
      local r = pool:apply_async(function() ev:wait(10) end)
      for _, bad in ipairs({-1, -0.001, 0 / 0, "1", {}}) do
        assert_has(err_of(r.get, r, bad), "bad argument #1 to 'get'")
        assert_has(err_of(r.wait, r, bad), "bad argument #1 to 'wait'")
      end
      ev:set()
      assert.is_true(r:wait(10))
    end)

    it("takes at most concur.TIMEOUT_MAX; math.huge waits as nil does", function()
      local pool = new(1)
      local ev = hold()
      local r = pool:apply_async(function(e) e:wait(10); return "v" end, {ev})
      for _, big in ipairs({concur.TIMEOUT_MAX * 2, 1e300}) do
        assert_has(err_of(r.get, r, big), "bad argument #1 to 'get' (timeout must be at most concur.TIMEOUT_MAX")
        assert_has(err_of(r.wait, r, big), "bad argument #1 to 'wait' (timeout must be at most concur.TIMEOUT_MAX")
      end
      assert.is_false(r:ready())
      ev:set()
      assert.is_true(r:wait(math.huge))
      assert.equal("v", r:get(math.huge))
      assert.equal("v", r:get(concur.TIMEOUT_MAX))
    end)

    it("fails when its task raises: get raises every time, successful is false", function()
      local pool = new(1)
      local r = pool:apply_async(function() error("boom") end)
      local e1 = err_of(r.get, r, 10)
      assert_has(e1, "boom")
      assert.equal(e1, err_of(r.get, r))
      assert.is_true(r:ready())
      assert.is_false(r:successful())
      assert.equal("<concur.AsyncResult failed>", tostring(r))
    end)

    it("gives each result its own values with many tasks queued", function()
      local pool = new(2)
      local rs = {}
      for i = 1, 40 do rs[i] = pool:apply_async(function(x) return x * x, x end, {i}) end
      for i = 40, 1, -1 do
        local sq, x = rs[i]:get(10)
        assert.equal(i * i, sq)
        assert.equal(i, x)
      end
    end)

    it("rejects a bad fn, args, callback or error_callback", function()
      local pool = new(1)
      assert_has(err_of(pool.apply_async, pool, 42), "bad argument #1 to 'apply_async'")
      assert_has(err_of(pool.apply_async, pool, nil), "bad argument #1 to 'apply_async'")
      assert_has(err_of(pool.apply_async, pool, noop, "x"), "bad argument #2 to 'apply_async'")
      assert_has(err_of(pool.apply_async, pool, noop, nil, 5), "bad argument #3 to 'apply_async'")
      assert_has(err_of(pool.apply_async, pool, noop, nil, nil, "f"),
        "bad argument #4 to 'apply_async'")
      assert.equal(1, pool:apply(function() return 1 end))
    end)

    it("refuses a task that cannot be sent, and leaves nothing pending", function()
      local pool = new(2)
      local co = coroutine.create(noop)
      local e1 = err_of(pool.apply_async, pool, function() return co end)
      assert_has(e1, "cannot be sent")
      assert_has(e1, "coroutine")
      assert_has(err_of(pool.apply_async, pool, noop, {co}), "cannot be sent")
      assert_has(err_of(pool.apply, pool, noop, {1, {co}}), "cannot be sent")
      assert_has(err_of(pool.map, pool, function(x) return x end, {1, 2, co}, 1), "cannot be sent")
      assert.equal(5, pool:apply(function(x) return x end, {5}))
      pool:close()
      local took = timed(pool.join, pool)
      assert.is_true(took < 10)
    end)
  end)

  ---------------------------------------------------------------------------
  describe("task errors", function()
    it("raise the task's message, then the worker's name and pid, then a traceback", function()
      local pool = new(1)
      local wpid = pool:apply(concur.getpid)
      local e = err_of(pool.apply, pool, function() error("boom") end)
      assert.is_truthy(e:match("^[^\n]*pool_spec%.lua:%d+: boom\n"), e)
      local name, pid = e:match("\n%[in pool worker ([%w-]+), pid (%d+)%]\nstack traceback:\n")
      assert.is_truthy(name, e)
      assert.equal(worker_prefix, name:match("^%a+%-"))
      assert.equal(wpid, tonumber(pid))
      if procs then assert.are_not.equal(concur.getpid(), wpid) end
      assert_has(e, "pool_spec.lua")   -- the traceback shows the task's frames
    end)

    it("raise a message of level 0 as it was, with the worker's traceback after it", function()
      local pool = new(1)
      local e = err_of(pool.apply, pool, function() error("plain", 0) end)
      assert.is_truthy(e:match("^plain\n%[in pool worker " .. worker_prefix), e)
    end)

    it("raise a table error as a copy of the table", function()
      local pool = new(1)
      local e = raised(pool.apply, pool, function() error({code = 5, list = {1, 2}}) end)
      assert.equal("table", type(e))
      assert.equal(5, e.code)
      assert.same({1, 2}, e.list)
    end)

    it("raise concur's error values as themselves", function()
      local pool = new(1)
      local q = concur.Queue()
      -- Raised by get: an error object == concur.Empty, with the worker's line.
      local e = raised(pool.apply, pool, function() local v = q:get(true, 0.01); return v end)
      assert.is_true(e == concur.Empty, tostring(e))
      assert.is_truthy(tostring(e):find("pool_spec%.lua:%d+: concur%.Empty$"), tostring(e))
      -- The value itself, raised by the task: the owner's own.
      assert.is_true(rawequal(concur.Full,
        raised(pool.apply, pool, function() error(concur.Full) end)))
      assert.is_true(concur.TimeoutError ==
        raised(pool.apply, pool, function() error(concur.TimeoutError) end))
    end)

    it("raise an error value that cannot be sent back as its string", function()
      local pool = new(1)
      local e = err_of(pool.apply, pool, function() error(coroutine.create(function() end)) end)
      assert.is_truthy(e:match("^thread: "), e)
      assert_has(e, "[in pool worker " .. worker_prefix)
      assert.equal(1, pool:apply(function() return 1 end))
    end)

    it("raise nil for error()", function()
      local pool = new(1)
      local ok, e = pcall(pool.apply, pool, function() error() end)
      assert.is_false(ok)
      assert.is_nil(e)
    end)

    it("leave the workers alive: the same workers run the tasks after them", function()
      local pool = new(2)
      local before = workers_of(pool, 20)
      local rs = {}
      for i = 1, 20 do rs[i] = pool:apply_async(function(x) error("fail " .. x) end, {i}) end
      for i = 1, 20 do assert_has(err_of(rs[i].get, rs[i], 10), "fail " .. i) end
      assert.same({0, 1}, all_at_once(pool, 2))
      local after = workers_of(pool, 40)
      table.move(before, 1, #before, #after + 1, after)
      local n = distinct(after)
      assert.is_true(n <= 2, n .. " workers ran the tasks of a pool of 2")
    end)
  end)

  ---------------------------------------------------------------------------
  describe("results that cannot be sent back", function()
    it("fail the task with an error that says so, and the pool goes on", function()
      local pool = new(1)
      local r = pool:apply_async(function() return 1, coroutine.create(function() end) end)
      local e = r:wait(10) and err_of(r.get, r)
      assert_has(e, "could not be sent back")
      assert_has(e, "coroutine")
      assert.equal(2, pool:apply(function() return 2 end))
      local em = err_of(pool.map, pool, function(x) return coroutine.create(function() end) end, {1, 2})
      assert_has(em, "could not be sent back")
      assert.same({1, 2}, pool:map(function(x) return x end, {1, 2}))
    end)

    -- Was a bug (fixed; the test stays): the message reads "the task's its results could not be sent back:
    -- bad value at item[3][2] (coroutine)" ("%s" gets "its results" after
    -- "the task's").
    it("say so in plain words", function()
      local pool = new(1)
      local e = err_of(pool.apply, pool, function() return coroutine.create(function() end) end)
      assert_lacks(e, "task's its")
      e = err_of(pool.apply, pool, function() return 1, {coroutine.create(function() end)} end)
      assert_has(e, "the task's results could not be sent back: bad value in result[2][1] (coroutine)")
    end)
  end)

  ---------------------------------------------------------------------------
  describe("callbacks", function()
    it("callback receives all of the task's results, before get returns", function()
      local pool = new(1)
      local got
      local r = pool:apply_async(function() return 1, nil, 3 end, nil,
        function(...) got = pack(...) end)
      r:get(10)
      assert.same({n = 3, 1, nil, 3}, got)
    end)

    it("callback has run by the time wait returns true", function()
      local pool = new(1)
      local got
      local r = pool:apply_async(function(x) return x end, {"v"}, function(v) got = v end)
      assert.is_true(r:wait(10))
      assert.equal("v", got)
    end)

    it("callbacks run in the owner's process and thread, on its locals", function()
      local pool = new(2)
      local seen = {}
      local r = pool:apply_async(function() return 1 end, nil, function()
        seen.pid, seen.ident = concur.getpid(), concur.get_ident()
      end)
      local re = pool:apply_async(function() error("x") end, nil, nil, function()
        seen.epid, seen.eident = concur.getpid(), concur.get_ident()
      end)
      r:get(10)
      pcall(re.get, re, 10)
      assert.equal(concur.getpid(), seen.pid)
      assert.equal(concur.get_ident(), seen.ident)
      assert.equal(concur.getpid(), seen.epid)
      assert.equal(concur.get_ident(), seen.eident)
    end)

    it("error_callback receives the task's error; callback is not called", function()
      local pool = new(1)
      local called, got = false, nil
      local r = pool:apply_async(function() error("cb boom") end, nil,
        function() called = true end, function(e) got = e end)
      local e = err_of(r.get, r, 10)
      assert_has(got, "cb boom")
      assert_has(got, "[in pool worker ")
      assert.equal(e, got)
      assert.is_false(called)
      local gt
      local rt = pool:apply_async(function() error({why = "t"}) end, nil, nil,
        function(e2) gt = e2 end)
      assert.is_true(rt:wait(10))
      assert.same({why = "t"}, gt)
    end)

    it("have all run by the time join returns", function()
      local pool = new(2)
      local count, sum, errors = 0, 0, 0
      local rs = {}
      for i = 1, 20 do
        rs[i] = pool:apply_async(function(x)
          concur.sleep(0.002)
          if x % 5 == 0 then error("five") end
          return x
        end, {i}, function(x) count = count + 1; sum = sum + x end,
        function() errors = errors + 1 end)
      end
      pool:close()
      pool:join()
      assert.equal(16, count)
      assert.equal(210 - (5 + 10 + 15 + 20), sum)
      assert.equal(4, errors)
      for i = 1, 20 do assert.is_true(rs[i]:ready(), "result " .. i .. " is not in") end
    end)

    it("map_async's callback receives the whole list", function()
      local pool = new(2)
      local got
      local r = pool:map_async(function(x) return x * 3 end, range(10), nil,
        function(list) got = list end)
      local list = r:get(10)
      assert.same(list, got)
      for i = 1, 10 do assert.equal(i * 3, got[i]) end
    end)

    it("map_async's error_callback receives the error", function()
      local pool = new(2)
      local called, got = false, nil
      local r = pool:map_async(function(x) if x == 4 then error("bad item 4") end return x end,
        range(8), 1, function() called = true end, function(e) got = e end)
      assert.is_true(r:wait(10))
      assert_has(got, "bad item 4")
      assert.is_false(called)
      assert.is_false(r:successful())
    end)

    it("starmap_async's callback receives the whole list", function()
      local pool = new(2)
      local got
      local r = pool:starmap_async(function(a, b) return a * b end, {{2, 3}, {4, 5}}, nil,
        function(list) got = list end)
      assert.same({6, 20}, r:get(10))
      assert.same({6, 20}, got)
    end)

    it("map_async and starmap_async reject a callback that is not callable", function()
      local pool = new(1)
      local id = function(x) return x end
      assert_has(err_of(pool.map_async, pool, id, {1}, nil, 5), "bad argument #4 to 'map_async'")
      assert_has(err_of(pool.map_async, pool, id, {1}, nil, nil, 5),
        "bad argument #5 to 'map_async'")
      assert_has(err_of(pool.starmap_async, pool, id, {{1}}, nil, "f"),
        "bad argument #4 to 'starmap_async'")
    end)

    it("an error in a callback is reported on stderr and breaks nothing", function()
      local out, code = run_lua(([[
        local concur = require "concur"
        local pool = concur.%s(2)
        local r1 = pool:apply_async(function() return 1 end, nil, function() error("callback boom") end)
        local r2 = pool:apply_async(function() return 2 end, nil, function(v) print("cb2", v) end)
        print("r1", r1:get(10))
        print("r2", r2:get(10))
        local r3 = pool:map_async(function(x) return x end, {1, 2}, nil, function() error("map cb boom") end)
        print("r3", #r3:get(10))
        local r4 = pool:apply_async(function() error("task boom") end, nil, nil,
          function() error("error_callback boom") end)
        print("r4", (pcall(r4.get, r4, 10)))
        print("r5", pool:apply(function() return 5 end))
        pool:close()
        pool:join()
        print("joined")
      ]]):format(kind))
      assert.equal(0, code, out)
      assert_has(out, "Exception in pool callback")
      assert_has(out, "callback boom")
      assert_has(out, "map cb boom")
      assert_has(out, "error_callback boom")
      assert_has(out, "r1\t1\n")
      assert_has(out, "cb2\t2\n")
      assert_has(out, "r2\t2\n")
      assert_has(out, "r3\t2\n")
      assert_has(out, "r4\tfalse\n")
      assert_has(out, "r5\t5\n")
      assert_has(out, "joined")
    end)
  end)

  ---------------------------------------------------------------------------
  describe("map", function()
    it("returns fn of each item, in order", function()
      local pool = new(3)
      local got = pool:map(function(x) return x * x end, range(100))
      assert.equal(100, #got)
      for i = 1, 100 do assert.equal(i * i, got[i]) end
      assert.same({"a!", "b!"}, pool:map(function(s) return s .. "!" end, {"a", "b"}))
    end)

    it("honours list.n: fn gets the holes, and nil results stay holes", function()
      local pool = new(2)
      local got = pool:map(function(x) return x == nil and "hole" or x * 2 end,
        {n = 5, 1, nil, 3, nil, 5}, 1)
      assert.same({2, "hole", 6, "hole", 10}, got)
      local holes = pool:map(function(x) if x % 2 == 0 then return x end end, range(6), 2)
      assert.same({nil, 2, nil, 4, nil, 6}, {unpack(holes, 1, 6)})
      assert.is_nil(holes[1])
    end)

    it("honours list.n in chunks of any size, trailing holes included", function()
      local pool = new(2)
      local f = function(x) return x == nil and "hole" or x * 2 end
      for _, cs in ipairs({false, 1, 2, 3, 5, 100}) do
        assert.same({2, "hole", 6, "hole", 10, "hole", "hole"},
          pool:map(f, {n = 7, 1, nil, 3, nil, 5}, cs or nil), "chunksize " .. tostring(cs))
      end
      local got = pool:map(f, {n = 1000}, 64)
      for i = 1, 1000 do assert.equal("hole", got[i]) end
    end)

    it("leaves the list as it was", function()
      local pool = new(2)
      local list = {1, 2, 3, {k = 4}, "five"}
      pool:map(function(x) if type(x) == "table" then x.k = 0 end return 0 end, list, 2)
      assert.same({1, 2, 3, {k = 4}, "five"}, list)
      local got = pool:map(function(x) return type(x) == "table" and x.k or x end, list, 3)
      assert.same({1, 2, 3, 4, "five"}, got)
    end)

    it("refuses a list item that cannot be sent, naming the list", function()
      local pool = new(1)
      local e = err_of(pool.map, pool, function(x) return x end, {1, coroutine.create(noop)})
      assert_has(e, "cannot be sent")
      assert_has(e, "in the list")
      assert.same({1}, pool:map(function(x) return x end, {1}))
    end)

    it("returns {} for an empty list with a chunksize", function()
      local pool = new(2)
      assert.same({}, pool:map(noop, {}, 5))
      assert.same({}, pool:starmap(noop, {}, 1))
      local got
      local r = pool:map_async(noop, {}, 3, function(list) got = list end)
      assert.is_true(r:ready())
      assert.same({}, r:get(0))
      assert.same({}, got)
    end)

    -- Was a bug (fixed; the test stays): with the default chunksize an empty list makes chunksize 0, and
    -- the chunk count (n + chunksize - 1) // chunksize is computed before the
    -- n == 0 case: "concur.lua:800: attempt to divide by zero".
    it("returns {} for an empty list with the default chunksize", function()
      local pool = new(2)
      assert.same({}, pool:map(noop, {}))
      assert.same({}, pool:map(noop, {n = 0, 1, 2}))
      assert.same({}, pool:starmap(noop, {}))
      assert.same({}, pool:map_async(noop, {}):get(0))
    end)

    it("cuts the list in Python's default chunks: ceil(len / (workers * 4))", function()
      local pool = new(2)
      for _, n in ipairs({100, 24, 17, 5, 1}) do
        local cs = python_chunksize(n, 2)
        assert.same(positions(n, cs), pool:map(position_in_chunk(), range(n)),
          ("%d items, chunksize %d"):format(n, cs))
      end
    end)

    it("takes an explicit chunksize", function()
      local pool = new(2)
      assert.same(positions(10, 1), pool:map(position_in_chunk(), range(10), 1))
      assert.same(positions(10, 4), pool:map(position_in_chunk(), range(10), 4))
      assert.same(positions(10, 10), pool:map(position_in_chunk(), range(10), 1000))
      assert.same(positions(10, 3), pool:map(position_in_chunk(), range(10), 3.0))
      for _, cs in ipairs({1, 3, 7, 1000}) do
        local got = pool:map(function(x) return -x end, range(30), cs)
        for i = 1, 30 do assert.equal(-i, got[i]) end
      end
    end)

    it("raises the error of any item, and the pool goes on", function()
      local pool = new(2)
      local e = err_of(pool.map, pool, function(x)
        if x == 7 then error("bad item " .. x) end
        return x
      end, range(20), 3)
      assert_has(e, "bad item 7")
      assert_has(e, "[in pool worker " .. worker_prefix)
      assert.same(range(20), pool:map(function(x) return x end, range(20), 3))
    end)

    it("rejects a chunksize that is not a positive integer", function()
      local pool = new(1)
      local id = function(x) return x end
      for _, bad in ipairs({0, -1, 1.5, "x", 0 / 0, {}}) do
        for _, fname in ipairs({"map", "map_async", "starmap", "starmap_async",
                                "imap", "imap_unordered"}) do
          assert_has(err_of(pool[fname], pool, id, {{1}}, bad),
            ("bad argument #3 to '%s' (chunksize must be a positive integer"):format(fname))
        end
      end
      assert.same({1}, pool:map(id, {1}))
    end)

    -- Was a bug (fixed; the test stays): math.huge (or 1e300) passes check_chunksize, then
    -- math.tointeger gives nil: "concur.lua:751: attempt to perform
    -- arithmetic on a nil value (local 'chunksize')".  Either a result or a
    -- "bad argument #3" would do.
    it("takes or rejects an infinite chunksize, without an internal error", function()
      local pool = new(1)
      for _, cs in ipairs({math.huge, 1e300}) do
        local ok, res = pcall(pool.map, pool, function(x) return x end, {1, 2}, cs)
        if ok then
          assert.same({1, 2}, res)
        else
          assert_has(res, "bad argument #3 to 'map'")
        end
      end
    end)

    -- Was a bug (fixed; the test stays): Pool:_map counted its chunks as
    -- (n + chunksize - 1) // chunksize, which overflows near math.maxinteger
    -- to a negative count: the result was never ready, map and starmap
    -- never returned.  map_async goes first, with a timeout, so that the bug
    -- fails the test instead of hanging it.
    it("takes a chunksize near math.maxinteger: one chunk, every result", function()
      local pool = new(1)
      local id = function(x) return x end
      for _, cs in ipairs({math.maxinteger, math.maxinteger - 1, 2^53}) do
        local r = pool:map_async(id, {1, 2, 3}, cs)
        assert.is_true(r:wait(10), "map_async's result is never ready")
        assert.same({1, 2, 3}, r:get())
        r = pool:starmap_async(id, {{1}, {2}}, cs)
        assert.is_true(r:wait(10), "starmap_async's result is never ready")
        assert.same({1, 2, 3}, pool:map(id, {1, 2, 3}, cs))
        assert.same({1, 2}, pool:starmap(id, {{1}, {2}}, cs))
        local got = {}
        for v in pool:imap(id, {1, 2, 3}, cs) do got[#got + 1] = v end
        assert.same({1, 2, 3}, got)
      end
    end)

    it("rejects a list.n too large to cut in chunks, at the call", function()
      local pool = new(1)
      assert_has(err_of(pool.map_async, pool, noop, {n = 2 ^ 40}),
        "bad argument #2 to 'map_async' (list.n is too large)")
      assert.same({1}, pool:map(function(x) return x end, {1}))
    end)

    it("rejects a fn that is not callable and a list that is not a table", function()
      local pool = new(1)
      assert_has(err_of(pool.map, pool, 42, {1}), "bad argument #1 to 'map'")
      assert_has(err_of(pool.map, pool, noop, "abc"), "bad argument #2 to 'map'")
      assert_has(err_of(pool.map, pool, noop, nil), "bad argument #2 to 'map'")
      assert_has(err_of(pool.imap, pool, noop, 5), "bad argument #2 to 'imap'")
    end)

    it("maps 10 000 items exactly", function()
      local pool = new(3)
      local got = pool:map(function(x) return x * 2 + 1 end, range(10000))
      assert.equal(10000, #got)
      for i = 1, 10000 do
        if got[i] ~= i * 2 + 1 then
          assert.equal(i * 2 + 1, got[i], "item " .. i)
        end
      end
    end)
  end)

  ---------------------------------------------------------------------------
  describe("starmap", function()
    it("calls fn with each argument list, in order", function()
      local pool = new(2)
      assert.same({"ab", "cd", "ef"}, pool:starmap(function(a, b) return a .. b end,
        {{"a", "b"}, {"c", "d"}, {"e", "f"}}))
      local got = pool:starmap(function(a, b) return a * b end,
        (function() local t = {} for i = 1, 50 do t[i] = {i, i + 1} end return t end)(), 4)
      for i = 1, 50 do assert.equal(i * (i + 1), got[i]) end
    end)

    it("keeps the nils of argument lists that have n", function()
      local pool = new(1)
      assert.same({3, 0, 2}, pool:starmap(function(...) return select("#", ...) end,
        {pack(1, nil, nil), pack(), {1, 2}}))
    end)

    it("raises an item's error", function()
      local pool = new(1)
      assert_has(err_of(pool.starmap, pool, function(a) error("star " .. a) end, {{1}}), "star 1")
    end)

    -- Was a bug (fixed; the test stays): an item that is not a list failed
    -- in the worker, with "attempt to index a number value (local 'a')".
    it("rejects an item that is not an argument list, at the call, sending nothing", function()
      local pool = new(1)
      for _, fname in ipairs({"starmap", "starmap_async"}) do
        local e = err_of(pool[fname], pool, noop, {{1}, 2})
        assert_has(e, ("bad argument #2 to '%s' (list of argument lists expected, item 2 is a number)")
          :format(fname))
      end
      assert.same({1}, pool:starmap(function(x) return x end, {{1}}))
    end)

    it("starmap_async gives the list from get", function()
      local pool = new(2)
      local r = pool:starmap_async(function(a, b) return a - b end, {{5, 1}, {7, 2}}, 1)
      assert.same({4, 5}, r:get(10))
      assert.is_true(r:successful())
    end)
  end)

  ---------------------------------------------------------------------------
  describe("imap", function()
    it("yields each value and its index, in order", function()
      local pool = new(3)
      for _, cs in ipairs({false, 1, 7, 100}) do
        local k = 0
        for v, i in pool:imap(function(x) return x * 10 end, range(50), cs or nil) do
          k = k + 1
          assert.equal(k, i)
          assert.equal(k * 10, v)
        end
        assert.equal(50, k)
      end
    end)

    it("gives the holes of a list with n to fn", function()
      local pool = new(1)
      local got = {}
      for v, i in pool:imap(function(x) return x == nil and "hole" or x end, {n = 3, 1, nil, 3}) do
        got[i] = v
      end
      assert.same({1, "hole", 3}, got)
    end)

    it("delivers the items before a failing one, then raises at it", function()
      local pool = new(2)
      local got = {}
      local ok, e = pcall(function()
        for v in pool:imap(function(x)
          if x == 5 then error("imap item 5") end
          return x
        end, range(10), 1) do
          got[#got + 1] = v
        end
      end)
      assert.is_false(ok)
      assert_has(e, "imap item 5")
      assert.same({1, 2, 3, 4}, got)
    end)

    it("goes on after a failing item when iterated by hand", function()
      local pool = new(2)
      local it_ = pool:imap(function(x)
        if x == 5 then error("imap item 5") end
        return x
      end, range(10), 1)
      for k = 1, 10 do
        local ok, v, i = pcall(it_)
        if k == 5 then
          assert.is_false(ok)
          assert_has(v, "imap item 5")
        else
          assert.is_true(ok, tostring(v))
          assert.equal(k, v)
          assert.equal(k, i)
        end
      end
      assert.is_nil(it_())
    end)

    it("raises at a nil result, at the for loop's line, never ending the loop silently", function()
      -- Lua's generic for ends at a nil first value: "2 of 10 results" with
      -- no word.  The nil is an error when its turn comes, as a task's error.
      local pool = new(2)
      local got = {}
      local loop_line
      local ok, e = pcall(function()
        loop_line = debug.getinfo(1, "l").currentline + 1
        for v in pool:imap(function(x) if x == 3 then return nil end return x end, range(10), 1) do
          got[#got + 1] = v
        end
      end)
      assert.is_false(ok)
      assert_has(e, "pool_spec.lua:" .. loop_line .. ": imap: the result for item 3 is nil, "
        .. "which would end the for loop early")
      assert.same({1, 2}, got)
      -- By hand: the nil item raises, the others come, and nil ends it.
      local it_ = pool:imap(function(x) if x % 2 == 0 then return nil end return x end, range(5), 2)
      for k = 1, 5 do
        local ok_, v, i = pcall(it_)
        if k % 2 == 0 then
          assert.is_false(ok_)
          assert_has(v, ("imap: the result for item %d is nil"):format(k))
        else
          assert.is_true(ok_, tostring(v))
          assert.same({k, k}, {v, i})
        end
      end
      assert.is_nil(it_())
      -- false is a value like any other.
      local n = 0
      for v in pool:imap(function() return false end, range(4)) do n = n + 1; assert.is_false(v) end
      assert.equal(4, n)
    end)

    it("keeps a task's first return value only (map too; apply keeps all)", function()
      local pool = new(1)
      for v in pool:imap(function(x) return x, "second" end, {7}) do assert.equal(7, v) end
      assert.same({{7, 8}}, pool:map(function(x) return {x, x + 1} end, {7}))   -- a table for all
      assert.same({7, "second"}, {pool:apply(function(x) return x, "second" end, {7})})
    end)

    it("yields nothing for an empty list", function()
      local pool = new(1)
      for _ in pool:imap(noop, {}) do error("yielded") end
      for _ in pool:imap_unordered(noop, {}) do error("yielded") end
    end)

    it("may be left early, and the pool goes on", function()
      local pool = new(2)
      local k = 0
      for _ in pool:imap(function(x) return x end, range(20), 1) do
        k = k + 1
        if k == 3 then break end
      end
      assert.equal(3, k)
      assert.equal(7, pool:apply(function() return 7 end))
      pool:close()
      pool:join()
    end)

    it("delivers 10 000 items exactly, in order", function()
      local pool = new(3)
      local k = 0
      for v, i in pool:imap(function(x) return x + 0.5 end, range(10000)) do
        k = k + 1
        if i ~= k or v ~= k + 0.5 then assert.equal(k + 0.5, v, "item " .. k) end
      end
      assert.equal(10000, k)
    end)
  end)

  ---------------------------------------------------------------------------
  describe("imap_unordered", function()
    it("yields every value once", function()
      local pool = new(3)
      for _, cs in ipairs({false, 1, 4, 100}) do
        local got = {}
        for v in pool:imap_unordered(function(x) return x * 10 end, range(30), cs or nil) do
          got[#got + 1] = v
        end
        local want = {}
        for i = 1, 30 do want[i] = i * 10 end
        assert.same(want, sorted(got))
      end
    end)

    it("raises for a failing item and delivers every other", function()
      local pool = new(2)
      local it_ = pool:imap_unordered(function(x)
        if x == 5 then error("unordered item 5") end
        return x
      end, range(10), 1)
      local got, errors = {}, {}
      for _ = 1, 20 do
        local ok, v = pcall(it_)
        if not ok then errors[#errors + 1] = v
        elseif v == nil then break
        else got[#got + 1] = v end
      end
      assert.same({1, 2, 3, 4, 6, 7, 8, 9, 10}, sorted(got))
      assert.equal(1, #errors)
      assert_has(errors[1], "unordered item 5")
    end)

    it("raises at a nil result and delivers every other", function()
      local pool = new(2)
      local it_ = pool:imap_unordered(function(x) if x == 4 then return nil end return x end, range(6), 1)
      local got, errors = {}, {}
      for _ = 1, 10 do
        local ok, v = pcall(it_)
        if not ok then errors[#errors + 1] = v
        elseif v == nil then break
        else got[#got + 1] = v end
      end
      assert.same({1, 2, 3, 5, 6}, sorted(got))
      assert.equal(1, #errors)
      assert_has(errors[1], "imap_unordered: the result for item 4 is nil")
    end)

    it("delivers 10 000 items exactly", function()
      local pool = new(3)
      local got = {}
      for v in pool:imap_unordered(function(x) return x * 3 end, range(10000)) do
        got[#got + 1] = v
      end
      assert.equal(10000, #got)
      local s = sorted(got)
      for i = 1, 10000 do
        if s[i] ~= i * 3 then assert.equal(i * 3, s[i], "item " .. i) end
      end
    end)
  end)

  ---------------------------------------------------------------------------
  describe("close and join", function()
    it("close refuses every new task", function()
      local pool = new(1)
      pool:close()
      local id = function(x) return x end
      assert_has(err_of(pool.apply_async, pool, id), "pool is closed")
      assert_has(err_of(pool.apply, pool, id), "pool is closed")
      assert_has(err_of(pool.map, pool, id, {1}), "pool is closed")
      assert_has(err_of(pool.map_async, pool, id, {1}), "pool is closed")
      assert_has(err_of(pool.starmap, pool, id, {{1}}), "pool is closed")
      assert_has(err_of(pool.starmap_async, pool, id, {{1}}), "pool is closed")
      assert_has(err_of(pool.imap, pool, id, {1}), "pool is closed")
      assert_has(err_of(pool.imap_unordered, pool, id, {1}), "pool is closed")
      pool:join()
    end)

    it("join raises while the pool is running", function()
      local pool = new(1)
      assert_has(err_of(pool.join, pool), "pool is still running")
      assert.equal(1, pool:apply(function() return 1 end))
    end)

    it("join waits for every queued task and runs every callback", function()
      local before = threads_alive()
      local pool = new(2)
      local done, rs, ids = 0, {}, {}
      for i = 1, 10 do
        rs[i] = pool:apply_async(function(x)
          concur.sleep(0.02)
          return x, whoami()
        end, {i}, function(x, id) done = done + 1; ids[x] = id end)
      end
      pool:close()
      pool:join()
      assert.equal(10, done)
      for i = 1, 10 do
        assert.is_true(rs[i]:ready(), "result " .. i .. " is not in")
        assert.equal(i, (rs[i]:get(0)))
      end
      -- the workers have ended and been joined
      assert_workers_gone(ids, before)
    end)

    it("runs the tasks queued before close", function()
      local pool = new(1)
      local ev = hold()
      local first = pool:apply_async(function() ev:wait(10); return "first" end)
      local rest = pool:map_async(function(x) return x end, range(10), 1)
      pool:close()
      ev:set()
      pool:join()
      assert.equal("first", first:get(0))
      assert.same(range(10), rest:get(0))
    end)

    it("close and join may be called twice", function()
      local pool = new(2)
      pool:close()
      pool:close()
      pool:join()
      pool:join()
      assert.equal(("<concur.%s state=CLOSE pool_size=2>"):format(kind), tostring(pool))
    end)
  end)

  ---------------------------------------------------------------------------
  describe("terminate", function()
    it("fails the results not yet in with an error that says so", function()
      local pool = new(1)
      local ev, started = hold(), concur.Event()
      local err_cb
      -- Threads cannot be stopped: a ThreadPool's terminate waits for the
      -- running task, so there it ends on its own after a while.
      local running = pool:apply_async(function(long)
        started:set()
        ev:wait(long)
        return "ran"
      end, {procs and 30 or 0.3})
      local queued = pool:apply_async(function() return "queued" end, nil, nil,
        function(e) err_cb = e end)
      local mapped = pool:map_async(function(x) return x end, range(5), 1)
      assert.is_true(started:wait(10))
      local took = timed(pool.terminate, pool)
      assert.is_true(took < 10, ("terminate took %.3f s"):format(took))
      assert_has(err_of(running.get, running, 0), "terminated")
      assert_has(err_of(queued.get, queued, 0), "terminated")
      assert_has(err_of(mapped.get, mapped, 0), "terminated")
      assert_has(err_cb, "terminated")
    end)

    it("refuses new tasks, may be called again, and join then returns", function()
      local pool = new(2)
      pool:terminate()
      pool:terminate()
      assert_has(err_of(pool.apply_async, pool, noop), "pool is terminated")
      assert_has(err_of(pool.map, pool, noop, {1}), "pool is terminated")
      assert_has(err_of(pool.imap_unordered, pool, noop, {1}), "pool is terminated")
      pool:join()
      assert.equal(("<concur.%s state=TERMINATE pool_size=2>"):format(kind), tostring(pool))
    end)

    it("ends the workers", function()
      local before = threads_alive()
      local pool, _, ids = pool_with_ids(2)
      assert.equal(2, pool:apply(function() return 2 end))
      pool:terminate()
      assert_workers_gone(ids, before)
    end)

    it("after close ends the pool too", function()
      local pool = new(2)
      pool:close()
      pool:terminate()
      assert.equal(("<concur.%s state=TERMINATE pool_size=2>"):format(kind), tostring(pool))
      pool:join()
    end)

    it("happens at the end of a <close> block", function()
      if not support.has_close then return pending(support.NEEDS_CLOSE) end
      local before = threads_alive()
      local ref, ids = support.lua54([[
        local P, whoami, pools = ...
        local ref, ids
        do
          local q = concur.Queue()
          local pool <close> = P(2, function(q) q:put(whoami()) end, {q})
          ref = pool
          pools[#pools + 1] = pool
          ids = {q:get(true, 10), q:get(true, 10)}
          assert.same({1, 4, 9}, pool:map(function(x) return x * x end, {1, 2, 3}))
        end
        return ref, ids
      ]], P, whoami, pools)
      assert.equal(("<concur.%s state=TERMINATE pool_size=2>"):format(kind), tostring(ref))
      assert_workers_gone(ids, before)
    end)

    it("happens at the end of a <close> block left by an error", function()
      if not support.has_close then return pending(support.NEEDS_CLOSE) end
      local ref
      local ok, e = pcall(support.lua54([[
        local P, pools, keep = ...
        return function()
          local pool <close> = P(1)
          keep(pool)
          pools[#pools + 1] = pool
          error("leaving")
        end
      ]], P, pools, function(pool) ref = pool end))
      assert.is_false(ok)
      assert_has(e, "leaving")
      assert.equal(("<concur.%s state=TERMINATE pool_size=1>"):format(kind), tostring(ref))
    end)
  end)

  ---------------------------------------------------------------------------
  if procs then
    describe("dead workers", function()
      it("fail the task of a worker that killed itself, and are replaced", function()
        local pool = new(2)
        local q = concur.Queue()
        for _ = 1, 3 do
          local r = pool:apply_async(function()
            q:put(concur.getpid())
            os.execute("kill -9 " .. concur.getpid())
            concur.sleep(30)
          end)
          local took, ok, e = timed(r.get, r, 10)
          local dead = q:get(true, 1)
          assert.is_false(ok)
          assert.is_true(type(e) == "string", "raised " .. tostring(e))
          assert_has(e, "was killed by signal 9")
          assert_has(e, ("pid %d"):format(dead))
          assert_has(e, "while running this task")
          assert.is_true(took < 9, ("the death was seen after %.3f s"):format(took))
          assert.is_false(is_child(dead))
        end
        assert.same({0, 1}, all_at_once(pool, 2))
        local n, set = distinct(workers_of(pool, 30))
        assert.is_true(n <= 2)
        for pid in pairs(set) do assert.is_true(is_child(pid)) end
      end)

      it("fail the task of a worker that called os.exit(3)", function()
        local pool = new(2)
        local r = pool:apply_async(function() os.exit(3) end)
        local ok, e = pcall(r.get, r, 10)
        assert.is_false(ok)
        assert.is_true(e ~= concur.TimeoutError, "the death was not seen in 10 s")
        assert_has(e, "exited with code 3")
        assert.equal(5, pool:apply(function() return 5 end))
        assert.same({0, 1}, all_at_once(pool, 2))
      end)

      it("fail the long task of a worker killed from outside", function()
        local pool = new(2)
        local q, ev = concur.Queue(), hold()
        local r = pool:apply_async(function()
          q:put(concur.getpid())
          ev:wait(30)
          return "survived"
        end)
        local pid = q:get(true, 10)
        assert.is_true(support.execute("kill -9 " .. pid))
        local ok, e = pcall(r.get, r, 10)
        assert.is_false(ok)
        assert.is_true(e ~= concur.TimeoutError, "the death was not seen in 10 s")
        assert_has(e, ("pid %d) was killed by signal 9"):format(pid))
        assert.same({0, 1}, all_at_once(pool, 2))
      end)

      it("lose no task when an idle worker is killed; the new worker is initialized", function()
        local pool, q, ids = pool_with_ids(2)
        assert.is_true(support.execute("kill -9 " .. ids[1]))
        local rs = {}
        for i = 1, 20 do rs[i] = pool:apply_async(function(x) return x * 2 end, {i}) end
        for i = 1, 20 do assert.equal(i * 2, rs[i]:get(10)) end
        assert.same({0, 1}, all_at_once(pool, 2))
        local new_id = q:get(true, 10)
        assert.are_not.equal(ids[1], new_id)
        assert.are_not.equal(ids[2], new_id)
        assert.is_false(is_child(ids[1]))
      end)

      it("fail a map one of whose chunks killed its worker; the pool goes on", function()
        local pool = new(2)
        local r = pool:map_async(function(x)
          if x == 5 then
            os.execute("kill -9 " .. concur.getpid())
            concur.sleep(30)
          end
          return x
        end, range(10), 1)
        local ok, e = pcall(r.get, r, 10)
        assert.is_false(ok)
        assert.is_true(e ~= concur.TimeoutError, "the death was not seen in 10 s")
        assert_has(e, "was killed by signal 9")
        assert.same(range(10), pool:map(function(x) return x end, range(10), 1))
        assert.same({0, 1}, all_at_once(pool, 2))
      end)

      it("after close: join still waits for the queued tasks", function()
        local pool = new(2)
        local dying = pool:apply_async(function() os.exit(3) end)
        local rest = pool:map_async(function(x) return x end, range(10), 1)
        pool:close()
        pool:join()
        assert_has(err_of(dying.get, dying, 0), "exited with code 3")
        assert.same(range(10), rest:get(0))
      end)
    end)
  end

  ---------------------------------------------------------------------------
  describe("owner", function()
    -- A pool, or its result, never reaches another thread: the transfer
    -- refuses it before anything is sent, as it refuses a coroutine, naming
    -- where it sits (a copy in another state once stopped the owner's
    -- workers from its __gc, and took the owner's results).  A forked child
    -- has a copy of everything: the owner checks below refuse its calls.
    it("cannot be sent to another thread: args, upvalue, table, queue, pipe, result", function()
      local pool = new(1)
      local label = "(concur." .. kind .. ")"
      local r = pool:apply_async(function() return "r" end)
      local ran = concur.Event()
      local function refused(opts, want)
        opts.target = opts.target or function() ran:set() end
        local t = concur.Thread(opts)
        local ok, e = pcall(t.start, t)
        assert.is_false(ok, "the thread started")
        assert_has(e, want)
        assert.is_false(t:is_alive())
      end
      refused({args = {pool}}, "bad value at args[1] " .. label)
      refused({args = {1, {list = {pool}}}}, "bad value at args[2].list[1] " .. label)
      refused({args = {r}}, "bad value at args[1] (concur.AsyncResult)")
      refused({target = function() ran:set(); return pool end}, "bad value at target<upvalue pool> " .. label)
      local q = concur.Queue()
      local e = err_of(q.put, q, {p = pool})
      assert_has(e, "bad value at item.p " .. label)
      assert.equal(0, q:qsize(), "something was put")
      local a, b = concur.Pipe()
      assert_has(err_of(a.send, a, pool), label)
      assert.is_false(b:poll(0), "something was sent")
      local t = concur.Thread{target = function() return require("concur").ThreadPool(1) end}
      t:start()
      assert_has(err_of(t.result, t), "(concur.ThreadPool)")
      assert.is_false(ran:is_set())
      -- The class crosses (by name), the pool is still the owner's.
      local c = concur.Thread{target = function(cls) return cls == require("concur")[kind] end,
        args = {concur[kind]}}
      c:start()
      assert.is_true(c:result())
      assert.equal("r", r:get(10))
      assert.equal("owner", pool:apply(function() return "owner" end))
      assert_has(tostring(pool), "state=RUN")
    end)

    if procs then
      -- Was a bug (fixed; the test stays): as from another thread, a forked child's apply_async puts the
      -- task and returns a pending result (the child exits with 2); the
      -- owner's next apply gets the child's result ("from child").
      it("apply_async from a forked child raises and leaves the owner's results alone", function()
        local pool = new(1)
        local ev = hold()
        local blocker = pool:apply_async(function() ev:wait(10); return "blocker" end)
        local c = concur.Process{target = function()
          local ok, err = pcall(pool.apply_async, pool, function() return "from child" end)
          if ok then os.exit(2) end
          if not tostring(err):find("belongs to another thread or process", 1, true) then
            os.exit(3)
          end
          os.exit(0)
        end}
        children[#children + 1] = c
        c:start()
        assert.is_true(c:join(20))
        ev:set()
        assert.equal("blocker", blocker:get(10))
        local owner = pool:apply(function() return "owner" end)
        assert.equal(0, c.exitcode, "exit code 2: apply_async returned; 3: another error")
        assert.equal("owner", owner)
      end)
    end
  end)
end)
end

describe("a pool dropped without terminate", function()
  -- On 5.2+ the pool's own __gc stops it; on 5.1 and LuaJIT (no __gc for a
  -- table) a proxy userdata carries that __gc.
  it("is stopped by the collector: its worker threads end", function()
    local base = concur.active_count()
    do
      local tp = concur.ThreadPool(2)
      assert.are.equal(4, tp:apply(function(x) return x * 2 end, {2}))
      assert.are.equal(base + 2, concur.active_count())
    end
    assert.is_true(support.eventually(function()
      collectgarbage(); collectgarbage()
      return concur.active_count() == base
    end, 10), "the dropped ThreadPool's workers still run")
  end)

  it("is stopped by the collector: its worker processes end", function()
    local base = #concur.active_children()
    do
      local p = concur.Pool(2)
      assert.are.equal(4, p:apply(function(x) return x * 2 end, {2}))
    end
    assert.is_true(support.eventually(function()
      collectgarbage(); collectgarbage()
      return #concur.active_children() == base
    end, 10), "the dropped Pool's workers still run")
  end)
end)
