-- spec/cancel_spec.lua: t:cancel() and concur.cancelled() (API.md, "Stopping
-- work"; src/intr.c, "Cancels").  A cancel raises concur.CancelledError in a
-- running thread: at once in a blocking concur call (which then has taken
-- nothing) or a sleep, soon in plain Lua code; it is an error like any
-- other for pcall and <close>, and result() raises it.
--
-- Ordering: a thread says it is about to block (an Event) and the main thread
-- cancels it; the cancel may come before the thread is asleep, which changes
-- nothing in what must happen (the wait raises at once either way).  The
-- short sleep before some cancels only makes it likely that the wait is the
-- one woken; times are checked with wide bounds.
local concur = require "concur"

local support = require "support"
local pack, unpack = support.pack, support.unpack

-- LuaJIT's compiled loops never look at hooks (LuaJIT's FAQ, "Ctrl-C"): a
-- busy loop there stops only where it runs in the interpreter.
local JIT_LOOP = rawget(_G, "jit") and "LuaJIT: a JIT-compiled loop does not run hooks (README)"
  -- ThreadSanitizer delivers a signal only at the thread's next intercepted
  -- call, which a pure Lua loop never makes.
  or os.getenv("CONCUR_SANITIZER") == "thread" and "ThreadSanitizer holds signals back from a pure Lua loop"
  or nil
local pending_on = function(why) return why and pending or it end
local TSAN_LOOP = os.getenv("CONCUR_SANITIZER") == "thread"
  and "ThreadSanitizer holds signals back from a pure Lua loop" or nil

-- Starts a thread on body(...) under pcall; it sets `ready` just before body
-- runs.  Its result: pcall's results, then whether it saw concur.cancelled().
local function start(body, ...)
  local ready = concur.Event()
  local t = concur.Thread{target = function(ready, ...)
    -- (ready set inside the pcall: the cancel may come right after it.)
    local r = pack(pcall(function(...) ready:set() return body(...) end, ...))
    return concur.cancelled(), r.n, unpack(r, 1, r.n)
  end, args = pack(ready, ...), daemon = true}
  t:start()
  ready:wait()
  return t
end

-- Cancels t (after `settle` seconds, for it to block), waits for it, and
-- returns the seconds from the cancel to its end and what body's pcall gave.
local function cancel_and_wait(t, settle)
  if settle then concur.sleep(settle) end
  local t0 = concur.time()
  assert.is_true(t:cancel())
  assert.is_true(t:join(10), "the thread did not end")
  local took = concur.time() - t0
  local r = pack(t:result())
  assert.is_true(r[1], "concur.cancelled() was false in the cancelled thread")
  return took, unpack(r, 3, 2 + r[2])
end

-- Well under the waits' last-resort slice (1 s); wider under a sanitizer,
-- where signal handlers run late.
local PROMPT = os.getenv("CONCUR_SANITIZER") and 5 or 0.8

-- The body raised concur.CancelledError within a fraction of a second.
local function assert_cancelled(took, ok, err)
  assert.is_false(ok, "the body was not stopped")
  assert.is_true(err == concur.CancelledError, "raised " .. tostring(err))
  assert.is_true(took < PROMPT, ("took %.3f s"):format(took))
end

describe("t:cancel()", function()
  describe("wakes a thread blocked in", function()
    it("q:get(), and the queue keeps what it had", function()
      local q = concur.Queue()
      local t = start(function(q) return q:get() end, q)
      assert_cancelled(cancel_and_wait(t, 0.05))
      q:put("after")
      assert.are.equal("after", q:get_nowait())
      assert.is_true(q:empty())
    end)

    it("q:put() on a full queue, which then puts nothing", function()
      local q = concur.Queue(1)
      q:put("first")
      local t = start(function(q) q:put("second") end, q)
      assert_cancelled(cancel_and_wait(t, 0.05))
      assert.are.equal(1, q:qsize())
      assert.are.equal("first", q:get_nowait())
    end)

    it("lock:acquire(), and the lock stays its holder's", function()
      local l = concur.Lock()
      l:acquire()
      local t = start(function(l) l:acquire() end, l)
      assert_cancelled(cancel_and_wait(t, 0.05))
      assert.is_true(l:locked())
      l:release()
      assert.is_true(l:acquire(false))   -- free: the cancelled acquire took nothing
      l:release()
    end)

    it("event:wait()", function()
      local e = concur.Event()
      local t = start(function(e) return e:wait() end, e)
      assert_cancelled(cancel_and_wait(t, 0.05))
      assert.is_false(e:is_set())
    end)

    it("semaphore:acquire(), which then takes nothing", function()
      local s = concur.Semaphore(0)
      local t = start(function(s) return s:acquire() end, s)
      assert_cancelled(cancel_and_wait(t, 0.05))
      s:release()
      assert.is_true(s:acquire(false))
      assert.is_false(s:acquire(false))
    end)

    it("concur.sleep(30)", function()
      local t = start(function() concur.sleep(30) end)
      assert_cancelled(cancel_and_wait(t, 0.05))
    end)

    it("the join of another thread, which goes on", function()
      local go = concur.Event()
      local other = concur.Thread{target = function(go) go:wait() return "other" end,
                                  args = {go}, daemon = true}
      other:start()
      local t = start(function(other) return other:join() end, other)
      assert_cancelled(cancel_and_wait(t, 0.05))
      assert.is_true(other:is_alive())
      go:set()
      assert.are.equal("other", other:result(10))
    end)

    it("a pipe's recv(), which then takes nothing", function()
      local a, b = concur.Pipe()
      local t = start(function(a) return a:recv() end, a)
      assert_cancelled(cancel_and_wait(t, 0.05))
      b:send("kept")
      assert.are.equal("kept", a:recv())
      a:close()
      b:close()
    end)
  end)

  describe("stops plain Lua code", function()
    pending_on(JIT_LOOP)("in `while true do end`", function()
      assert_cancelled(cancel_and_wait(start(function() while true do end end)))
    end)

    pending_on(JIT_LOOP)("in a loop that calls string functions", function()
      local t = start(function()
        local n = 0
        while true do
          n = n + #string.format("%d", n % 97) + #("ab"):rep(3) + (("xyz"):find("z"))
        end
      end)
      assert_cancelled(cancel_and_wait(t))
    end)

    pending_on(TSAN_LOOP)("in a loop with the JIT off, or one that calls a C function, on every runtime", function()
      local t1 = start(function()
        if rawget(_G, "jit") then jit.off() end
        local n = 0
        while true do n = n + 1 end
      end)
      assert_cancelled(cancel_and_wait(t1))
      local t2 = start(function()
        local n = 0
        while not concur.cancelled() do n = n + #tostring(n) end
        return n
      end)
      local took, ok, err = cancel_and_wait(t2)
      assert.is_true(took < PROMPT)
      -- Either the hook raised, or the loop saw the request first.
      assert.is_true(err == concur.CancelledError or (ok and type(err) == "number"))
    end)
  end)

  describe("as an error", function()
    it("runs pcall's and xpcall's handlers, then result() raises concur.CancelledError", function()
      local ready, log = concur.Event(), concur.Queue()
      local t = concur.Thread{target = function(ready, log)
        local ok, e = xpcall(function()
          ready:set()
          concur.sleep(30)
        end, function(e)
          log:put(e == concur.CancelledError and "handler" or tostring(e))
          return e
        end)
        log:put(ok and "returned" or "after xpcall")
        error(e, 0)   -- passed on: the thread ends with it
      end, args = {ready, log}, daemon = true}
      t:start()
      ready:wait()
      assert.is_true(t:cancel())
      assert.is_true(t:join(10))
      assert.are.equal("handler", log:get_nowait())
      assert.are.equal("after xpcall", log:get_nowait())
      local err = support.raised(t.result, t)
      assert.is_true(err == concur.CancelledError)
      assert.are.equal("concur.CancelledError", tostring(err):match("concur%.%a+"))
      assert.is_false(t:is_alive())
    end)

    it("runs <close> variables", function()
      if not support.has_close then return pending(support.NEEDS_CLOSE) end
      local log, ready = concur.Queue(), concur.Event()
      local t = support.lua54([[
        local log, ready = ...
        return concur.Thread{target = function(log, ready)
          local _ <close> = setmetatable({}, {__close = function(_, e)
            log:put(e == concur.CancelledError and "closed by the cancel" or tostring(e))
          end})
          ready:set()
          concur.sleep(30)
        end, args = {log, ready}, daemon = true}
      ]], log, ready)
      t:start()
      ready:wait()
      assert.is_true(t:cancel())
      assert.is_true(t:join(10))
      assert.are.equal("closed by the cancel", log:get_nowait())
      assert.is_true(support.raised(t.result, t) == concur.CancelledError)
    end)

    it("may be caught: the thread goes on and returns its value", function()
      local ready = concur.Event()
      local t = concur.Thread{target = function(ready)
        local ok, e = pcall(function()
          ready:set()
          concur.sleep(30)
        end)
        assert(not ok and e == concur.CancelledError, tostring(e))
        -- Raised once: the next waits are ordinary ones.
        local q = concur.Queue()
        q:put(1)
        concur.sleep(0.01)
        return "went on", q:get(), concur.cancelled()
      end, args = {ready}, daemon = true}
      t:start()
      ready:wait()
      assert.is_true(t:cancel())
      assert.are.same({"went on", 1, true}, {t:result(10)})
    end)

    it("is not reported as an uncaught error (as Python's SystemExit)", function()
      local out = support.run_fixture("cancel_report.lua")
      assert.are.equal("done\n", out)
    end)
  end)

  describe("returns false and does nothing", function()
    it("for a thread not started, one that has ended, the main thread", function()
      local t = concur.Thread{target = function() return "ran" end}
      assert.is_false(t:cancel())
      t:start()
      assert.are.equal("ran", t:result())
      assert.is_false(t:cancel())
      assert.is_false(concur.main_thread():cancel())
      -- A thread started after a cancel of it was refused is not cancelled.
      local u = concur.Thread{target = function() return concur.cancelled() end}
      assert.is_false(u:cancel())
      u:start()
      assert.is_false(u:result())
    end)
  end)

  it("a thread that cancels itself raises at its next instruction", function()
    local t = concur.Thread{target = function()
      local me = concur.current_thread()
      local ok, e = pcall(function()
        local r = me:cancel()
        return "not reached", r
      end)
      return ok, e == concur.CancelledError, concur.cancelled()
    end}
    t:start()
    assert.are.same({false, true, true}, {t:result()})
  end)
end)

describe("concur.cancelled()", function()
  it("is false in the main thread and in a thread nobody cancelled", function()
    assert.is_false(concur.cancelled())
    local t = concur.Thread{target = function() return concur.cancelled() end}
    t:start()
    assert.is_false(t:result())
  end)
end)

-- The rule of every blocking call: a cancel that races the call's success
-- either leaves it raising with nothing taken or lets it complete (the
-- CancelledError then comes right after, its result assigned).  A lost item
-- fails a round.
describe("a cancel racing a blocking call", function()
  local ROUNDS = 150

  -- Spins about `s` seconds (no sleep: the race needs sub-millisecond gaps).
  local function spin(s)
    local t0 = concur.time()
    while concur.time() - t0 < s do end
  end

  -- The local `x` of the frame running `body` (from a message handler).
  local function local_of(body, name)
    for level = 3, 8 do
      local info = debug.getinfo(level, "f")
      if info == nil then break end
      if info.func == body then
        for i = 1, 50 do
          local n, v = debug.getlocal(level, i)
          if n == nil then break end
          if n == name then return true, v end
        end
      end
    end
    return false
  end

  it("q:get() never loses an item: it is returned or still queued", function()
    math.randomseed(7)
    for round = 1, ROUNDS do
      local q, ready = concur.Queue(), concur.Event()
      local t = concur.Thread{target = function(q, ready)
        local got, x = false, nil
        local body
        body = function()
          ready:set()
          local v = q:get()   -- the call under test
          x = v
          concur.sleep(30)
        end
        local ok, e = xpcall(body, function(e)
          local found, v = local_of(body, "v")
          if found then got, x = true, v end
          return e
        end)
        return e == concur.CancelledError, got or x ~= nil, x
      end, args = {q, ready}, daemon = true}
      t:start()
      ready:wait()
      local gap = math.random() * 0.0001
      if math.random(2) == 1 then
        q:put(round); spin(gap); t:cancel()
      else
        t:cancel(); spin(gap); q:put(round)
      end
      assert.is_true(t:join(10), "round " .. round .. ": the thread did not end")
      local cancelled, got, x = t:result()
      assert.is_true(cancelled, "round " .. round)
      if got then
        assert.are.equal(round, x, "round " .. round .. ": returned the wrong item")
        assert.are.equal(0, q:qsize(), "round " .. round .. ": returned and still queued")
      else
        assert.are.equal(1, q:qsize(), "round " .. round .. ": LOST (not returned, not queued)")
        assert.are.equal(round, q:get_nowait())
      end
    end
  end)

  it("q:put() on a full queue either puts the item (and returns) or puts nothing", function()
    math.randomseed(11)
    for round = 1, ROUNDS do
      local q, ready = concur.Queue(1), concur.Event()
      q:put("filler")
      local t = concur.Thread{target = function(q, ready, round)
        local put_line
        local body
        body = function()
          ready:set()
          put_line = debug.getinfo(1, "l").currentline + 1
          q:put(round)   -- the call under test
          concur.sleep(30)
        end
        local done = false
        local ok, e = xpcall(body, function(e)
          local info = debug.getinfo(2, "fl")
          -- Raised in sleep, or in body past the put's line: put returned.
          done = info.func == concur.sleep or
                 (info.func == body and put_line ~= nil and info.currentline > put_line)
          return e
        end)
        return e == concur.CancelledError, done
      end, args = {q, ready, round}, daemon = true}
      t:start()
      ready:wait()
      local gap = math.random() * 0.0001
      local took
      if math.random(2) == 1 then
        took = q:get(); spin(gap); t:cancel()
      else
        t:cancel(); spin(gap); took = q:get()
      end
      assert.are.equal("filler", took)
      assert.is_true(t:join(10), "round " .. round .. ": the thread did not end")
      local cancelled, done = t:result()
      assert.is_true(cancelled, "round " .. round)
      local queued = {}
      while not q:empty() do queued[#queued + 1] = q:get_nowait() end
      if done then
        assert.are.same({round}, queued, "round " .. round .. ": put returned, item not queued")
      else
        assert.are.same({}, queued, "round " .. round .. ": put raised, item queued")
      end
    end
  end)
end)

describe("ThreadPool:terminate()", function()
  pending_on(TSAN_LOOP)("stops a task that never ends", function()
    -- In a thread of its own: without cancels, terminate would wait forever.
    local t = concur.Thread{target = function()
      local pool = concur.ThreadPool(2)
      local started = concur.Event()
      local r = pool:apply_async(function(started)
        started:set()
        if rawget(_G, "jit") then jit.off() end   -- a loop LuaJIT runs hooks in
        while true do end
      end, {started})
      local r2 = pool:apply_async(function() concur.sleep(60) end)
      started:wait()
      local t0 = concur.time()
      pool:terminate()
      local took = concur.time() - t0
      local ok = pcall(r.get, r, 0)
      local ok2 = pcall(r2.get, r2, 0)
      return took, ok, ok2
    end, daemon = true}
    t:start()
    assert.is_true(t:join(20), "terminate did not return")
    local took, ok, ok2 = t:result()
    assert.is_true(took < 5, ("terminate took %.3f s"):format(took))
    assert.is_false(ok)
    assert.is_false(ok2)
  end)
end)

describe("ThreadPool:shutdown(false, true)", function()
  pending_on(TSAN_LOOP)("cancels a running task that never ends, and the pool stops", function()
    local t = concur.Thread{target = function()
      local pool = concur.ThreadPool(1)
      local started = concur.Event()
      local f = pool:submit(function(started)
        started:set()
        if rawget(_G, "jit") then jit.off() end
        while true do end
      end, started)
      local waiting = pool:submit(function() return 1 end)
      started:wait()
      pool:shutdown(false, true)
      pool:join()
      return waiting:cancelled(), pcall(f.result, f, 5)
    end, daemon = true}
    t:start()
    assert.is_true(t:join(10), "shutdown(false, true) did not stop the pool")
    local cancelled, ok = t:result()
    assert.is_true(cancelled)
    assert.is_false(ok)
  end)
end)

