-- spec/futures_spec.lua: concur.Future (pool:submit), pool:shutdown, the
-- executors (ThreadPoolExecutor, ProcessPoolExecutor), concur.wait and
-- concur.as_completed, of lua/concur/pool.lua, "Futures" (API.md, "Futures,
-- and waiting on many things").  The cases follow CPython's
-- Lib/test/test_concurrent_futures: cancel before start and while running,
-- a cancelled future's result, done callbacks (order, at once, errors),
-- exception(), result timeouts, map's order and timeout, shutdown with wait
-- and cancel_futures, wait with each return_when, as_completed with a
-- timeout; and what concur adds: Threads, Processes and AsyncResults mixed
-- in one wait, a worker process killed while it runs a future.
--
-- Every scenario runs for both pools.  Tasks that must stay running wait on
-- an Event from hold(), which after_each sets; after_each also terminates
-- every pool a test made.  Order comes from Events, Queues and the futures'
-- own waits, never from a sleep.
local concur = require "concur"
local support = require "support"

local err_of, raised, assert_has = support.err_of, support.raised, support.assert_has
local timed = support.timed
local unpack = table.unpack or unpack

-- Runs the Lua source `src` in a subprocess; returns stdout and stderr together.
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

-- f, once it is done (result or error).
local function settled(f)
  pcall(f.result, f, 10)
  return f
end

-- The items of an iterator (for a generic for), as a list.
local function collect(iter)
  local t = {}
  for v in iter do t[#t + 1] = v end
  return t
end

for _, kind in ipairs({"Pool", "ThreadPool"}) do
describe(kind, function()
  local P = concur[kind]
  local procs = kind == "Pool"
  local Executor = procs and concur.ProcessPoolExecutor or concur.ThreadPoolExecutor
  local exname = procs and "ProcessPoolExecutor" or "ThreadPoolExecutor"

  local pools, holds = {}, {}

  after_each(function()
    for _, e in ipairs(holds) do e:set() end
    for _, p in ipairs(pools) do pcall(p.terminate, p) end
    pools, holds = {}, {}
  end)

  local function new(...)
    local pool = P(...)
    pools[#pools + 1] = pool
    return pool
  end

  local function new_executor(opts)
    local ex = Executor(opts)
    pools[#pools + 1] = ex._pool
    return ex
  end

  -- An Event that tasks wait on; after_each sets it.
  local function hold()
    local e = concur.Event()
    holds[#holds + 1] = e
    return e
  end

  -- A future that runs until ev is set, and has started when this returns.
  local function busy(pool, ev)
    local started = concur.Event()
    local f = pool:submit(function(s, e) s:set(); e:wait(30); return "released" end, started, ev)
    assert.is_true(started:wait(10))
    return f
  end

  ---------------------------------------------------------------------------
  describe("submit", function()
    it("returns a Future whose result is all of fn's results", function()
      local pool = new(2)
      local f = pool:submit(function(a, b) return a + b, a * b, nil end, 2, 3)
      assert.same({5, 6, nil}, {f:result(10)})
      assert.equal(3, select("#", f:result()))
      assert.is_true(f:done())
      assert.is_false(f:running())
      assert.is_false(f:cancelled())
      assert.is_nil(f:exception())
      assert.equal("<concur.Future finished returned 3 values>", tostring(f))
      assert.equal("<concur.Future finished returned string>",
        tostring(settled(pool:submit(function() return "x" end))))
    end)

    it("takes no arguments, and functions with upvalues", function()
      local pool = new(1)
      local k = 7
      assert.equal(7, pool:submit(function() return k end):result(10))
      assert.equal(0, select("#", pool:submit(function() end):result(10)))
      assert.equal("<concur.Future finished returned nothing>",
        tostring(settled(pool:submit(function() end))))
    end)

    it("says pending, running, finished or cancelled", function()
      local pool, ev = new(1), hold()
      local f = busy(pool, ev)
      local g = pool:submit(function() return 1 end)
      local h = pool:submit(function() return 1 end)
      assert.equal("<concur.Future running>", tostring(f))
      assert.is_true(f:running())
      assert.equal("<concur.Future pending>", tostring(g))
      assert.is_false(g:running())
      assert.is_true(h:cancel())
      assert.equal("<concur.Future cancelled>", tostring(h))
      ev:set()
      assert.equal("released", f:result(10))
      assert.equal("<concur.Future finished returned string>", tostring(f))
      g:result(10)
      assert.equal("<concur.Future finished raised string>",
        tostring(settled(pool:submit(error, "x"))))
    end)

    it("raises fn's error: a string with the worker's traceback, another value as it is", function()
      local pool = new(1)
      local f = pool:submit(function() error("task boom") end)
      local e = err_of(f.result, f, 10)
      assert_has(e, "task boom")
      assert_has(e, "[in pool worker")
      assert.equal(e, tostring(f:exception()))
      local g = pool:submit(function() error(concur.Empty) end)
      assert.is_true(raised(g.result, g, 10) == concur.Empty)
      assert.is_true(g:exception() == concur.Empty)
      assert.is_true(g:done())
    end)

    it("raises concur.TimeoutError from result and exception past the timeout", function()
      local pool, ev = new(1), hold()
      local f = busy(pool, ev)
      local took, ok, e = timed(f.result, f, 0.2)
      assert.is_false(ok)
      assert.is_true(e == concur.TimeoutError, tostring(e))
      support.assert_about(0.2, took)
      assert.is_true(raised(f.result, f, 0) == concur.TimeoutError)
      assert.is_true(raised(f.exception, f, 0.05) == concur.TimeoutError)
      ev:set()
      assert.equal("released", f:result(10))
    end)

    it("checks its arguments", function()
      local pool = new(1)
      assert_has(err_of(pool.submit, pool), "bad argument #1 to 'submit' (callable expected, got nil)")
      assert_has(err_of(pool.submit, pool, 5), "bad argument #1 to 'submit' (callable expected, got number)")
      assert_has(err_of(pool.submit, {}, print), "bad argument #1 to 'submit' (concur.Pool expected")
      assert_has(err_of(pool.submit, pool, print, coroutine.create(function() end)),
        "submit: the task cannot be sent: bad value in the arguments[1] (coroutine)")
      -- more than 16 arguments go as a table (Pool:_submit): the same words
      local many = {n = 20}
      many[20] = coroutine.create(function() end)
      assert_has(err_of(pool.submit, pool, print, unpack(many, 1, 20)),
        "submit: the task cannot be sent: bad value in the arguments[20] (coroutine)")
      many[20] = "last"
      local count = function(...) return select("#", ...), (select(20, ...)) end
      assert.same({20, "last"}, {pool:submit(count, unpack(many, 1, 20)):result(10)})
      local f = pool:submit(function() return 1 end)
      assert_has(err_of(f.result, f, -1), "bad argument #1 to 'result' (timeout must be a non-negative number")
      assert_has(err_of(f.exception, f, "x"), "bad argument #1 to 'exception'")
      assert_has(err_of(f.add_done_callback, f, 5),
        "bad argument #1 to 'add_done_callback' (callable expected, got number)")
      assert_has(err_of(f.done, {}), "bad argument #1 to 'done' (concur.Future expected, got table)")
      assert_has(err_of(f.cancel, pool), "bad argument #1 to 'cancel' (concur.Future expected")
      -- a failed submit left the pool as it was
      assert.equal(1, f:result(10))
      assert.equal(2, pool:submit(function() return 2 end):result(10))
    end)

    it("cannot send a Future to another thread", function()
      local f = new(1):submit(function() return 1 end)
      assert_has(err_of(concur.Queue().put, concur.Queue(), f), "concur.Future")
      f:result(10)
    end)
  end)

  ---------------------------------------------------------------------------
  describe("cancel", function()
    it("cancels a future that has not started: it never runs", function()
      local pool, ev = new(1), hold()
      local ran = concur.Queue()
      local f = busy(pool, ev)
      local g = pool:submit(function(q) q:put("g ran") end, ran)
      local h = pool:submit(function(q) q:put("h ran"); return "h" end, ran)
      assert.is_true(g:cancel())
      assert.is_true(g:cancel())   -- Python: true again
      assert.is_true(g:cancelled())
      assert.is_true(g:done())
      assert.is_false(g:running())
      assert.is_true(raised(g.result, g) == concur.CancelledError)
      assert.is_true(raised(g.result, g, 0) == concur.CancelledError)
      assert.is_true(raised(g.exception, g) == concur.CancelledError)
      assert.equal("concur.CancelledError", tostring(concur.CancelledError))
      ev:set()
      assert.equal("h", h:result(10))
      assert.equal("released", f:result(10))
      pool:close()
      pool:join()
      assert.equal("h ran", ran:get_nowait())
      assert.is_true(raised(ran.get_nowait, ran) == concur.Empty)
    end)

    it("does not cancel a running future, nor a finished one", function()
      local pool, ev = new(1), hold()
      local f = busy(pool, ev)
      assert.is_false(f:cancel())
      assert.is_false(f:cancelled())
      assert.is_true(f:running())
      ev:set()
      assert.equal("released", f:result(10))
      assert.is_false(f:cancel())
      assert.is_false(f:cancelled())
      local g = pool:submit(error, "x")
      assert.is_not_nil(g:exception(10))
      assert.is_false(g:cancel())
    end)

    it("cancels futures past the first thousand (a claim page of their own)", function()
      local pool, ev = new(1), hold()
      local ran = concur.Queue()
      local f = busy(pool, ev)
      local fs = {}
      for i = 1, 1100 do fs[i] = pool:submit(function(q, i) q:put(i); return i end, ran, i) end
      for i = 1000, 1100, 2 do assert.is_true(fs[i]:cancel()) end
      ev:set()
      f:result(10)
      local n = 0
      for i = 1, 1100 do
        if i >= 1000 and i % 2 == 0 then
          assert.is_true(fs[i]:cancelled())
        else
          assert.equal(i, fs[i]:result(10))
          n = n + 1
        end
      end
      pool:close()
      pool:join()
      assert.equal(n, ran:qsize())
      -- the freed claims serve new futures
      local pool2 = new(1)
      for i = 1, 3 do assert.equal(i, pool2:submit(function(i) return i end, i):result(10)) end
    end)
  end)

  ---------------------------------------------------------------------------
  describe("add_done_callback", function()
    it("runs the callbacks in the owner, in order, once the future is done", function()
      local pool, ev = new(1), hold()
      local f = busy(pool, ev)
      local calls, me = {}, concur.get_ident()
      for i = 1, 3 do
        f:add_done_callback(function(x)
          calls[#calls + 1] = {i, x == f, concur.get_ident() == me, x:done()}
        end)
      end
      assert.same({}, calls)
      ev:set()
      assert.equal("released", f:result(10))
      assert.same({{1, true, true, true}, {2, true, true, true}, {3, true, true, true}}, calls)
    end)

    it("runs a callback at once on a done or cancelled future", function()
      local pool, ev = new(1), hold()
      local f = pool:submit(function() return 1 end)
      f:result(10)
      local got
      f:add_done_callback(function(x) got = x end)
      assert.equal(f, got)
      busy(pool, ev)
      local g = pool:submit(function() return 2 end)
      local seen = {}
      g:add_done_callback(function(x) seen[#seen + 1] = x:cancelled() end)
      assert.same({}, seen)
      assert.is_true(g:cancel())
      assert.same({true}, seen)
      g:add_done_callback(function(x) seen[#seen + 1] = "late" end)
      assert.same({true, "late"}, seen)
    end)

    it("reports a callback's error and goes on", function()
      local out, code = run_lua(([[
        local concur = require "concur"
        local pool = concur.%s(1)
        local f = pool:submit(function() return 1 end)
        f:add_done_callback(function() error("callback boom") end)
        f:add_done_callback(function(x) print("second", x:result()) end)
        print("result", f:result(10))
        f:add_done_callback(function() error("late boom") end)
        print("after", pool:submit(function() return 2 end):result(10))
        pool:shutdown()
        print("shut down")
      ]]):format(kind))
      assert.equal(0, code, out)
      assert_has(out, "Exception in pool callback")
      assert_has(out, "callback boom")
      assert_has(out, "late boom")
      assert_has(out, "second\t1\n")
      assert_has(out, "result\t1\n")
      assert_has(out, "after\t2\n")
      assert_has(out, "shut down")
    end)
  end)

  ---------------------------------------------------------------------------
  describe("shutdown", function()
    it("waits for every future by default, then refuses new ones", function()
      local pool = new(2)
      local fs = {}
      for i = 1, 6 do fs[i] = pool:submit(function(i) concur.sleep(0.01); return i end, i) end
      pool:shutdown()
      for i = 1, 6 do
        assert.is_true(fs[i]:done())
        assert.equal(i, fs[i]:result(0))
      end
      assert.equal(("<concur.%s state=CLOSE pool_size=2>"):format(kind), tostring(pool))
      assert_has(err_of(pool.submit, pool, print),
        "submit: cannot schedule new futures after shutdown (pool is closed)")
      pool:shutdown()   -- again: nothing to do
    end)

    it("returns at once with wait = false; the futures still finish", function()
      local pool, ev = new(1), hold()
      local f = busy(pool, ev)
      local g = pool:submit(function() return "g" end)
      local took = timed(pool.shutdown, pool, false)
      assert.is_true(took < 1)
      assert.is_false(g:done())
      ev:set()
      assert.equal("released", f:result(10))
      assert.equal("g", g:result(10))
      pool:join()
    end)

    it("cancels the futures not started with cancel_futures", function()
      local pool, ev = new(1), hold()
      local ran = concur.Queue()
      local f = busy(pool, ev)
      local gs = {}
      for i = 1, 3 do gs[i] = pool:submit(function(q) q:put(1) end, ran) end
      pool:shutdown(false, true)
      for i = 1, 3 do assert.is_true(gs[i]:cancelled()) end
      assert.is_false(f:cancelled())
      ev:set()
      pool:join()
      if P == concur.ThreadPool then
        -- Not waiting, cancelling: a ThreadPool cancels its running task too
        -- (issue 18; Python lets it run); a process pool's runs on.
        assert.is_false(pcall(f.result, f, 5))
      else
        assert.equal("released", f:result(0))
      end
      assert.equal(0, ran:qsize())
    end)

    it("fails the pending futures of a terminated pool", function()
      local pool, ev = new(1), hold()
      busy(pool, ev)
      local g = pool:submit(function() return 1 end)
      ev:set()
      pool:terminate()
      if not g:done() or g:exception() then
        assert_has(tostring(g:exception()), "terminated")
      end
      assert_has(err_of(pool.submit, pool, print), "pool is terminated")
    end)
  end)

  ---------------------------------------------------------------------------
  describe(exname, function()
    it("submits, maps in order and shuts down", function()
      local ex = new_executor({max_workers = 2})
      assert.equal(("<concur.%s max_workers=2 state=RUN>"):format(exname), tostring(ex))
      assert.equal(9, ex:submit(function(x) return x * x end, 3):result(10))
      local got, idx = {}, {}
      for v, i in ex:map(function(x) concur.sleep(0.001 * (10 - x)); return x * 10 end,
        {1, 2, 3, 4, 5, 6, 7, 8, 9}) do
        got[#got + 1], idx[#idx + 1] = v, i
      end
      assert.same({10, 20, 30, 40, 50, 60, 70, 80, 90}, got)
      assert.same({1, 2, 3, 4, 5, 6, 7, 8, 9}, idx)
      ex:shutdown()
      assert_has(err_of(ex.submit, ex, print), "cannot schedule new futures after shutdown")
    end)

    it("takes a number, nothing, an initializer; checks its options", function()
      local ex = new_executor(1)
      assert.equal(("<concur.%s max_workers=1 state=RUN>"):format(exname), tostring(ex))
      local q = concur.Queue()
      local ex2 = new_executor({max_workers = 1, initializer = function(q, x) q:put(x) end,
        initargs = {q, "init"}})
      assert.equal("init", q:get(true, 10))
      ex2:shutdown()
      local want = procs and concur.cpu_count() or math.min(32, concur.cpu_count() + 4)
      assert_has(tostring(new_executor()), ("max_workers=%d"):format(want))
      assert_has(err_of(Executor, {max_workers = 0}),
        ("bad argument #1 to '%s' (number of workers must be"):format(exname))
      assert_has(err_of(Executor, {workers = 2}),
        ("bad argument #1 to '%s' (unknown option 'workers')"):format(exname))
      assert_has(err_of(ex.map, ex, print, 5), "bad argument #2 to 'map' (table expected, got number)")
      assert_has(err_of(ex.map, ex, print, {}, -1), "bad argument #3 to 'map'")
      assert_has(err_of(ex.submit, {}, print), "concur.Executor expected")
    end)

    it("raises an item's error from map in its turn", function()
      local ex = new_executor({max_workers = 2})
      local it = ex:map(function(x) if x == 2 then error("item two") end return x end, {1, 2, 3})
      assert.equal(1, it())
      assert_has(err_of(it), "item two")
    end)

    it("raises concur.TimeoutError from map when an item is late; its timeout counts from the call", function()
      local ex, ev = new_executor({max_workers = 2}), hold()
      local it = ex:map(function(x)
        if x == 2 then ev:wait(30) end
        return x
      end, {1, 2, 3, 4, 5, 6}, 0.3)
      assert.equal(1, it())
      local took, ok, e = timed(it)
      assert.is_false(ok)
      assert.is_true(e == concur.TimeoutError, tostring(e))
      assert.is_true(took < 2, ("timed out after %.3f s"):format(took))
      ev:set()
      ex:shutdown()
    end)

    it("shuts down with wait at the end of a <close> block", function()
      if not support.has_close then return pending(support.NEEDS_CLOSE) end
      local ex, f = support.lua54([[
        local Executor, pools, concur = ...
        local ref, f
        do
          local ex <close> = Executor{max_workers = 2}
          pools[#pools + 1] = ex._pool
          ref = ex
          f = ex:submit(function() concur.sleep(0.05); return "done" end)
        end
        return ref, f
      ]], Executor, pools, concur)
      assert.is_true(f:done())
      assert.equal("done", f:result(0))
      assert_has(tostring(ex), "state=CLOSE")
    end)
  end)

  ---------------------------------------------------------------------------
  describe("concur.wait", function()
    it("waits for all by default: done in the order given, duplicates once", function()
      local pool = new(2)
      local fs = {}
      for i = 1, 4 do fs[i] = pool:submit(function(i) concur.sleep(0.01 * i); return i end, i) end
      local done, not_done = concur.wait({fs[3], fs[1], fs[2], fs[4], fs[1]})
      assert.same({fs[3], fs[1], fs[2], fs[4]}, done)
      assert.same({}, not_done)
      assert.same({{}, {}}, {concur.wait({})})
    end)

    it("returns at the first done with FIRST_COMPLETED", function()
      local pool, ev = new(2), hold()
      local slow = busy(pool, ev)
      local fast = pool:submit(function() return 1 end)
      local done, not_done = concur.wait({slow, fast}, 10, concur.FIRST_COMPLETED)
      assert.same({fast}, done)
      assert.same({slow}, not_done)
      assert.equal("FIRST_COMPLETED", concur.FIRST_COMPLETED)
      -- one done already: at once
      local took, ok, d = timed(concur.wait, {slow, fast}, nil, concur.FIRST_COMPLETED)
      assert.is_true(ok)
      assert.same({fast}, d)
      assert.is_true(took < 1)
    end)

    it("returns at the first failure with FIRST_EXCEPTION, or when all are done", function()
      local pool, ev = new(2), hold()
      local slow = busy(pool, ev)
      local ok = pool:submit(function() return 1 end)
      ok:result(10)
      local bad = pool:submit(function() error("bad") end)
      local done, not_done = concur.wait({slow, ok, bad}, 10, concur.FIRST_EXCEPTION)
      assert.same({ok, bad}, done)
      assert.same({slow}, not_done)
      ev:set()
      done, not_done = concur.wait({slow, ok}, 10, concur.FIRST_EXCEPTION)
      assert.same({slow, ok}, done)
      assert.same({}, not_done)
    end)

    it("does not count a cancelled future as a failure", function()
      local pool, ev = new(1), hold()
      local slow = busy(pool, ev)
      local c = pool:submit(function() return 1 end)
      assert.is_true(c:cancel())
      local took, _, done, not_done = timed(concur.wait, {slow, c}, 0.2, concur.FIRST_EXCEPTION)
      assert.same({c}, done)
      assert.same({slow}, not_done)
      support.assert_about(0.2, took)
    end)

    it("returns what is done when the timeout runs out", function()
      local pool, ev = new(2), hold()
      local slow = busy(pool, ev)
      local fast = pool:submit(function() return 1 end)
      local took, _, done, not_done = timed(concur.wait, {slow, fast}, 0.2)
      assert.same({fast}, done)
      assert.same({slow}, not_done)
      support.assert_about(0.2, took)
      _, _, done, not_done = timed(concur.wait, {slow, fast}, 0)
      assert.same({fast}, done)
      assert.same({slow}, not_done)
    end)

    it("takes Futures, AsyncResults, Threads and Processes mixed", function()
      local pool, ev = new(2), hold()
      local f = pool:submit(function() return 1 end)
      local r = pool:apply_async(function() return 2 end)
      local t = concur.Thread{target = function(e) e:wait(30) end, args = {ev}}
      t:start()
      local p = concur.Process{target = function() end}
      p:start()
      local done, not_done = concur.wait({f, r, t, p}, 0.3)
      assert.same({f, r, p}, done)
      assert.same({t}, not_done)
      ev:set()
      done, not_done = concur.wait({f, r, t, p}, 10)
      assert.same({f, r, t, p}, done)
      assert.same({}, not_done)
      -- the thread is seen ended within the wait's slices
      local ev2 = hold()
      local t2 = concur.Thread{target = function(e) e:wait(30) end, args = {ev2}}
      t2:start()
      local slow = busy(pool, hold())
      local waiter = concur.Thread{target = function(e) concur.sleep(0.05); e:set() end, args = {ev2}}
      waiter:start()
      local took, _, d = timed(concur.wait, {slow, t2}, 10, concur.FIRST_COMPLETED)
      assert.same({t2}, d)
      assert.is_true(took < 2)
      waiter:join()
    end)

    it("counts a thread whose target raised, an AsyncResult that failed and a process that exited non-zero as failures", function()
      local pool, ev = new(1), hold()
      local slow = busy(pool, ev)
      local t = concur.Thread{target = function() error("thread boom") end}
      concur.set_excepthook(function() end)
      t:start()
      t:join()
      concur.set_excepthook(nil)
      assert.same({t}, (concur.wait({slow, t}, 10, concur.FIRST_EXCEPTION)))
      local p = concur.Process{target = function() os.exit(3) end}
      p:start()
      assert.same({p}, (concur.wait({slow, p}, 10, concur.FIRST_EXCEPTION)))
      local pool2 = new(1)
      local r = pool2:apply_async(function() error("r boom") end)
      assert.same({r}, (concur.wait({slow, r}, 10, concur.FIRST_EXCEPTION)))
      local ok = concur.Thread{target = function() end}
      ok:start()
      ok:join()
      local took, _, d = timed(concur.wait, {slow, ok}, 0.1, concur.FIRST_EXCEPTION)
      assert.same({ok}, d)
      support.assert_about(0.1, took)
    end)

    it("checks its arguments", function()
      local f = new(1):submit(function() return 1 end)
      assert.equal("bad argument #1 to 'wait' (fs[3]: Future, AsyncResult, Thread or Process expected, got number)",
        err_of(concur.wait, {f, f, 5}):gsub("^.-:%d+: ", ""))
      assert_has(err_of(concur.wait, {f, concur.Queue()}),
        "(fs[2]: Future, AsyncResult, Thread or Process expected, got concur.Queue)")
      assert_has(err_of(concur.wait, 5), "bad argument #1 to 'wait' (list of futures expected, got number)")
      assert_has(err_of(concur.wait, {f}, -1), "bad argument #2 to 'wait' (timeout must be")
      assert_has(err_of(concur.wait, {f}, nil, "SOME"),
        "bad argument #3 to 'wait' (concur.FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED expected, got 'SOME')")
      assert_has(err_of(concur.as_completed, {f, {}}),
        "bad argument #1 to 'as_completed' (fs[2]: Future, AsyncResult, Thread or Process expected, got table)")
      f:result(10)
    end)
  end)

  ---------------------------------------------------------------------------
  describe("concur.as_completed", function()
    it("gives the done ones first, then each as it completes, each once", function()
      local pool, ev = new(2), hold()
      local a = pool:submit(function() return "a" end)
      a:result(10)
      local slow = busy(pool, ev)
      local b = pool:submit(function() return "b" end)
      local order = {}
      for f in concur.as_completed({slow, b, a, b}, 10) do
        order[#order + 1] = f
        if f == b then ev:set() end
      end
      assert.equal(3, #order)
      assert.is_true(order[1] == a and order[2] == b or order[1] == b and order[2] == a)
      assert.equal(slow, order[3])
      -- all done already: in the order given
      assert.same({b, slow, a}, collect(concur.as_completed({b, slow, a})))
    end)

    it("raises concur.TimeoutError when some are not done in time", function()
      local pool, ev = new(2), hold()
      local slow = busy(pool, ev)
      local fast = pool:submit(function() return 1 end)
      local got = {}
      local took, ok, e = timed(function()
        for f in concur.as_completed({slow, fast}, 0.2) do got[#got + 1] = f end
      end)
      assert.is_false(ok)
      assert.is_true(e == concur.TimeoutError, tostring(e))
      assert.same({fast}, got)
      support.assert_about(0.2, took)
      ev:set()
      assert.same({slow}, collect(concur.as_completed({slow}, 10)))
    end)

    it("takes Threads, Processes and AsyncResults with the futures", function()
      local pool, ev = new(2), hold()
      local t = concur.Thread{target = function(e) e:wait(30) end, args = {ev}}
      t:start()
      local p = concur.Process{target = function() end}
      p:start()
      local r = pool:map_async(function(x) return x end, {1, 2})
      local f = pool:submit(function() return 1 end)
      local seen = {}
      for x in concur.as_completed({t, p, r, f}, 10) do
        seen[#seen + 1] = x
        if #seen == 3 then ev:set() end
      end
      assert.equal(4, #seen)
      assert.equal(t, seen[4])
    end)
  end)

  ---------------------------------------------------------------------------
  if procs then
    describe("a worker killed with SIGKILL", function()
      it("fails its future with the signal in the message; the others succeed", function()
        local ex, ev = new_executor({max_workers = 2}), hold()
        local q = concur.Queue()
        local victim = ex:submit(function(q, e) q:put(concur.getpid()); e:wait(30); return "survived" end, q, ev)
        local others = {}
        for i = 1, 6 do others[i] = ex:submit(function(i) return i * 2 end, i) end
        local pid = q:get(true, 10)
        assert.is_true(support.execute("kill -9 " .. pid))
        local e = victim:exception(10)
        assert_has(e, ("pid %d) was killed by signal 9 while running this task"):format(pid))
        assert_has(err_of(victim.result, victim), "was killed by signal 9")
        for i = 1, 6 do assert.equal(i * 2, others[i]:result(10)) end
        assert.equal(7, ex:submit(function() return 7 end):result(10))
        local done = concur.wait({victim, others[1]}, 10, concur.FIRST_EXCEPTION)
        assert.equal(victim, done[1])
        ex:shutdown()
      end)
    end)
  end
end)
end
