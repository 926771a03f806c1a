-- spec/sync_spec.lua: the synchronization objects of src/sync.c and the Timer
-- of lua/concur.lua (API.md, "Conventions" and "Synchronization"), used from
-- one state and between threads.  Processes are process_spec.lua's.
--
-- Threads are ordered with the library's own objects (Events, Semaphores,
-- joins), never with a sleep.  Where the main thread must know that others
-- are blocked it polls a state the object shows (a Condition's "waiters=k",
-- a Barrier's n_waiting) with a short sleep in the loop.  Threads report by
-- returning values; they never assert.  Timings are checked with wide bounds.
local concur = require "concur"
local core = require "concur.core"

local support = require "support"
local pack, unpack = support.pack, support.unpack   -- cross to threads with the functions that use them

-- From support.lua: err_of(fn, ...) is pcall that returns the error message
-- as a string (and fails if none); assert_has(s, sub) asserts that s
-- contains sub (plain); go(fn, ...) starts a thread on fn(...), go_n(n, fn,
-- ...) n threads on fn(i, ...); assert_about(want, took) checks a wait that
-- should take about `want` seconds, with wide bounds.
local err_of, assert_has = support.err_of, support.assert_has
local go, go_n = support.start_thread, support.start_threads
local assert_about = support.assert_about

-- The first result of each thread, in order.
local function results(ts)
  local r = {}
  for i, t in ipairs(ts) do r[i] = t:result() end
  return r
end

-- How many values of list equal v.
local function count(list, v)
  local n = 0
  for _, x in ipairs(list) do if x == v then n = n + 1 end end
  return n
end

-- Polls pred() (a state, not an order) until true; fails after 10 s.
local function wait_until(pred, what)
  local deadline = concur.time() + 10
  while not pred() do
    assert(concur.time() < deadline, "timed out waiting for " .. what)
    concur.sleep(0.001)
  end
end

-- Starts a thread that acquires obj (a Lock, RLock or Condition) and holds
-- it; returns once it does, with a function that lets the thread release obj
-- and returns the thread (whose result is obj:locked() after its release).
local function held_by_thread(obj)
  local held, go_on = concur.Event(), concur.Event()
  local t = go(function(o, h, g)
    o:acquire()
    h:set()
    g:wait()
    o:release()
    return o:locked()
  end, obj, held, go_on)
  assert.is_true(held:wait(10))
  return function()
    go_on:set()
    return t
  end
end

-- Once k threads wait on Condition c (a state, polled), calls act(c) with c's
-- lock held.
local function when_waiting(c, k, act)
  wait_until(function()
    c:acquire()
    local waiting = tostring(c):find("waiters=" .. k .. ">", 1, true) ~= nil
    if waiting then act(c) end
    c:release()
    return waiting
  end, k .. " waiters")
end

-- Starts k threads that each wait on Condition c for up to `timeout` seconds
-- and return whether the wait returned true with the lock held again.
local function waiting_threads(c, k, timeout)
  return go_n(k, function(_, cond, to)
    cond:acquire()
    local got = cond:wait(to)
    local mine = cond:locked()
    cond:release()
    return got and mine
  end, c, timeout)
end

-- Two threads wait at Barrier b (3 parties); act(b) makes both raise
-- BrokenBarrierError.
local function waiters_break(b, act)
  local ts = go_n(2, function(_, bar)
    local ok, e = pcall(bar.wait, bar)
    return ok, e
  end, b)
  wait_until(function() return b.n_waiting == 2 end, "2 threads at the barrier")
  act(b)
  for _, t in ipairs(ts) do
    local ok, e = t:result()
    assert.is_false(ok)
    assert.are.equal(concur.BrokenBarrierError, e)
  end
end

-- Seconds fn(...) takes, then its results (not pcall'd, unlike
-- support.timed).
local function timed(fn, ...)
  local t0 = concur.time()
  local r = pack(fn(...))
  return concur.time() - t0, unpack(r, 1, r.n)
end

-- Runs a Lua chunk in a fresh interpreter (the spec runner's one) with this
-- process's module paths; returns its output, exit code and how it ended.
local function run_chunk(code)
  local q = support.shell_quote
  local cmd = table.concat({"LUA_PATH=" .. q(package.path), "LUA_CPATH=" .. q(package.cpath),
                            "timeout -k 5 60", q(support.LUA), "-e", q(code)}, " ")
  local out, code_, how = support.shell(cmd .. " 2>&1")
  return out, code_, how
end

-- ---------------------------------------------------------------------------
-- Lock and RLock: what only one of them does is in lock_only and rlock_only;
-- what both do runs on each, in the describe block of its type below.

-- A Lock is not reentrant, and it is no thread's own.
local function lock_only()
  it("acquire(false) returns false on a held lock, true on a free one", function()
    local lock = concur.Lock()
    assert.is_true(lock:acquire(false))
    assert.is_false(lock:acquire(false))
    assert.is_true(lock:locked())
    lock:release()
    assert.is_true(lock:acquire(false))
    lock:release()
  end)

  it("is not reentrant: acquire(true, 0) by the holder returns false", function()
    local lock = concur.Lock()
    lock:acquire()
    local took, got = timed(lock.acquire, lock, true, 0)
    assert.is_false(got)
    assert.is_true(took < 1)
    lock:release()
    assert.is_true(lock:acquire(true, 0))
    lock:release()
  end)

  it("acquire(true, 0.05) on a held lock times out with false after about 0.05 s", function()
    local lock = concur.Lock()
    lock:acquire()
    local took, got = timed(lock.acquire, lock, true, 0.05)
    assert.is_false(got)
    assert_about(0.05, took)
    assert.is_true(lock:locked())
    lock:release()
  end)

  it("acquire(nil, timeout) blocks with that timeout", function()
    local lock = concur.Lock()
    lock:acquire()
    local took, got = timed(lock.acquire, lock, nil, 0.05)
    assert.is_false(got)
    assert_about(0.05, took)
    lock:release()
    assert.is_true(lock:acquire(nil, 0.05))
    lock:release()
  end)

  it("guard() makes the holder's own acquire(false) fail until the end of the block", function()
    if not support.has_close then return pending(support.NEEDS_CLOSE) end
    local lock = concur.Lock()
    support.lua54([[
      local lock = ...
      do
        local _ <close> = lock:guard()
        assert.is_false(lock:acquire(false))
      end
    ]], lock)
    assert.is_true(lock:acquire(false))
    lock:release()
  end)

  describe("between threads", function()
    it("may be released by another thread than the one that acquired it", function()
      local lock = concur.Lock()
      lock:acquire()
      local t = go(function(l)
        l:release()
        return l:locked()
      end, lock)
      assert.is_false(t:result())
      assert.is_false(lock:locked())
      assert.is_true(lock:acquire(false))
      lock:release()
    end)

    it("a thread may acquire it and leave it held for the main thread to release", function()
      local lock = concur.Lock()
      local t = go(function(l) return l:acquire(false) end, lock)
      assert.is_true(t:result())
      assert.is_true(lock:locked())
      assert.is_false(lock:acquire(false))
      lock:release()
      assert.is_false(lock:locked())
    end)
  end)
end

-- tostring of an RLock, as Python's repr: its owner (the holder's
-- concur.get_ident(); default this thread's) and depth, or unlocked.
local function rlock_str(count, owner)
  if count == 0 then return "<concur.RLock unlocked owner=0 count=0>" end
  return ("<concur.RLock locked owner=%d count=%d>"):format(owner or concur.get_ident(), count)
end

-- An RLock is reentrant and belongs to the thread that holds it.
local function rlock_only()
  it("is acquired recursively by its owner; tostring shows owner and count, as Python's repr", function()
    local r = concur.RLock()
    assert.are.equal("<concur.RLock unlocked owner=0 count=0>", tostring(r))
    assert.is_true(r:acquire())
    assert.is_true(r:acquire())
    assert.is_true(r:acquire(false))
    assert.are.equal(rlock_str(3), tostring(r))
    assert.is_truthy(tostring(r):find("owner=" .. ("%d"):format(concur.get_ident()), 1, true))
    assert.is_true(r:locked())
    r:release()
    assert.are.equal(rlock_str(2), tostring(r))
    r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
    assert.are.equal(rlock_str(0), tostring(r))
  end)

  describe("between threads", function()
    it("another thread cannot acquire it while it is held", function()
      local r = concur.RLock()
      r:acquire()
      r:acquire()
      local t = go(function(l)
        return l:acquire(false), l:acquire(true, 0.02), l:locked()
      end, r)
      assert.are.same({false, false, true}, {t:result()})
      assert.are.equal(rlock_str(2), tostring(r))
      r:release()
      r:release()
    end)

    it("release by a thread that is not the owner raises and changes nothing", function()
      local r = concur.RLock()
      r:acquire()
      r:acquire()
      local t = go(function(l)
        local ok, e = pcall(l.release, l)
        return ok, tostring(e)
      end, r)
      local ok, e = t:result()
      assert.is_false(ok)
      assert_has(e, "cannot release un-acquired lock")
      assert.are.equal(rlock_str(2), tostring(r))
      r:release()
      r:release()
      assert.is_false(r:locked())
    end)

    it("a waiting thread gets it once the owner has released every level", function()
      local r = concur.RLock()
      local tried = concur.Event()
      r:acquire()
      r:acquire()
      local t = go(function(l, e)
        e:set()
        local got = l:acquire()
        l:acquire()
        local s = tostring(l)
        l:release()
        l:release()
        return got, s, concur.get_ident()
      end, r, tried)
      assert.is_true(tried:wait(10))
      r:release()
      assert.is_false(t:join(0.05))   -- one level still held
      r:release()
      local got, s, ident = t:result()
      assert.is_true(got)
      assert.are_not.equal(concur.get_ident(), ident)
      assert.are.equal(rlock_str(2, ident), s)   -- the thread's own ident
      assert.are.equal(rlock_str(0), tostring(r))
      assert.is_false(r:locked())
    end)

    it("a thread that takes it becomes its owner; the main thread then cannot release it", function()
      local r = concur.RLock()
      local let_go = held_by_thread(r)
      assert_has(err_of(function() r:release() end), "cannot release un-acquired lock")
      assert.is_false(r:acquire(false))
      assert.is_false(let_go():result())
    end)
  end)

  it("with() nests on the same RLock and returns fn's results", function()
    local r = concur.RLock()
    local a, b = r:with(function()
      return r:with(function() return tostring(r), "inner" end)
    end)
    assert.are.equal(rlock_str(2), a)
    assert.are.equal("inner", b)
    assert.is_false(r:locked())
    assert_has(err_of(r.with, r, function() error("rlock boom") end), "rlock boom")
    assert.is_false(r:locked())
  end)

  it("guard() nests: held until the end of the outer block, also on error", function()
    if not support.has_close then return pending(support.NEEDS_CLOSE) end
    local r = concur.RLock()
    support.lua54([[
      local r, want = ...
      do
        local _ <close> = r:guard()
        local _2 <close> = r:guard()
        assert.are.equal(want, tostring(r))
      end
      assert.is_false(r:locked())
      local ok = pcall(function()
        local _ <close> = r:guard()
        error("x")
      end)
      assert.is_false(ok)
    ]], r, rlock_str(2))
    assert.is_false(r:locked())
  end)
end

local LOCK_TYPES = {
  {name = "Lock", new = concur.Lock, other = concur.RLock, own = lock_only,
   unheld = "release unlocked lock", locked = "<concur.Lock locked>", unlocked = "<concur.Lock unlocked>"},
  {name = "RLock", new = concur.RLock, other = concur.Lock, own = rlock_only,
   unheld = "cannot release un-acquired lock", locked = rlock_str(1), unlocked = rlock_str(0)},
}

for _, kind in ipairs(LOCK_TYPES) do
  local new, name = kind.new, kind.name
  describe("concur." .. name, function()
    kind.own()

    it("starts unlocked; acquire() takes it, release() frees it", function()
      local lock = new()
      assert.is_false(lock:locked())
      assert.is_true(lock:acquire())
      assert.is_true(lock:locked())
      assert.is_nil(lock:release())
      assert.is_false(lock:locked())
      assert.is_true(lock:acquire(true))
      lock:release()
    end)

    it("acquire(false, timeout) raises: a timeout needs a blocking call", function()
      local lock = new()
      local e = err_of(function() local _ = lock:acquire(false, 1) end)
      assert_has(e, "bad argument #2 to 'acquire'")
      assert_has(e, "can't specify a timeout for a non-blocking call")
      assert.is_false(lock:locked())
    end)

    it("a negative or NaN timeout is a bad argument", function()
      local lock = new()
      lock:acquire()
      for _, bad in ipairs({-1, -0.5, 0 / 0, "soon"}) do
        assert_has(err_of(function() local _ = lock:acquire(true, bad) end),
          "bad argument #2 to 'acquire'")
      end
      lock:release()
      assert.is_false(lock:locked())
    end)

    it("a non-boolean blocking flag is a bad argument", function()
      local lock = new()
      local e = err_of(function() local _ = lock:acquire(1) end)
      assert_has(e, "bad argument #1 to 'acquire' (boolean expected")
      assert_has(err_of(function() local _ = lock:acquire(0) end), "boolean expected")
      assert_has(err_of(function() local _ = lock:acquire("yes") end), "boolean expected")
      assert.is_false(lock:locked())
    end)

    it("release() when not held raises '" .. kind.unheld .. "'", function()
      local lock = new()
      assert_has(err_of(function() lock:release() end), kind.unheld)
      lock:acquire()
      lock:release()
      assert_has(err_of(function() lock:release() end), kind.unheld)
    end)

    it("tostring shows locked or unlocked", function()
      local lock = new()
      local unlocked = kind.unlocked
      assert.are.equal(unlocked, tostring(lock))
      lock:acquire()
      assert.are.equal(kind.locked, tostring(lock))
      lock:release()
      assert.are.equal(unlocked, tostring(lock))
    end)

    it("methods called on something else raise 'concur." .. name .. " expected'", function()
      local lock = new()
      -- A successful call first, so that this process survives the crash of a
      -- first call with a bad self (shown in its own test below).
      lock:acquire(); lock:release()
      local want = "concur." .. name .. " expected"
      assert_has(err_of(function() local _ = lock.acquire(5) end),
        "bad argument #1 to 'acquire' (" .. want)
      assert_has(err_of(function() local _ = lock.acquire(concur.Event()) end), want)
      assert_has(err_of(function() local _ = lock.acquire(kind.other()) end), want)
      assert_has(err_of(function() lock.release({}) end), want)
      assert_has(err_of(function() lock.release(7) end), want)
      assert_has(err_of(function() lock.release(concur.Semaphore()) end), want)
      assert_has(err_of(function() local _ = lock.locked("x") end), want)
      assert_has(err_of(function() local _ = lock.locked(concur.Event()) end), want)
      assert_has(err_of(function() local _ = lock.acquire() end), want)
      assert.is_false(lock:locked())
    end)

    it("a bad self raises even as the first call of a fresh process", function()
      -- Each method whose type check caches the last good handle, called first
      -- with a non-userdata self: must raise, not crash.
      local bad = {}
      for _, method in ipairs({"acquire", "release"}) do
        local call = ("concur.%s().%s(5)"):format(name, method)
        local out, code = run_chunk(([[
          local concur = require "concur"
          local ok, e = pcall(function() return %s end)
          io.write(tostring(ok), " ", tostring(e), "\n")
          os.exit(0)
        ]]):format(call))
        if code ~= 0 or not out:find("false", 1, true) or not out:find("expected", 1, true) then
          bad[#bad + 1] = ("%s: exit %s, output %q"):format(call, tostring(code), out:sub(1, 200))
        end
      end
      assert.are.same({}, bad)
    end)

    describe("between threads", function()
      it("a held lock makes another thread's acquire(false) fail and acquire() wait", function()
        local lock = new()
        local tried = concur.Event()
        lock:acquire()
        local t = go(function(l, e)
          local first = l:acquire(false)
          local timed_out = l:acquire(true, 0.02)
          e:set()
          local second = l:acquire()
          l:release()
          return first, timed_out, second
        end, lock, tried)
        assert.is_true(tried:wait(10))
        assert.is_false(t:join(0.05))   -- still blocked: the lock is ours
        lock:release()
        assert.are.same({false, false, true}, {t:result()})
        assert.is_false(lock:locked())
      end)

      it("release() in another thread of a free lock raises there", function()
        local lock = new()
        local t = go(function(l)
          local ok, e = pcall(l.release, l)
          return ok, tostring(e)
        end, lock)
        local ok, e = t:result()
        assert.is_false(ok)
        assert_has(e, kind.unheld)
      end)
    end)

    describe("with", function()
      it("holds the lock while fn runs and returns all its results", function()
        local lock = new()
        local r = pack(lock:with(function(a, b)
          return lock:locked(), a, nil, b, nil
        end, "x", 2))
        assert.are.same({true, "x", nil, 2, nil, n = 5}, r)
        assert.is_false(lock:locked())
      end)

      it("passes the arguments after fn, nils included", function()
        local lock = new()
        local n, a, b, c = lock:with(function(...) return select("#", ...), ... end, nil, 2, nil)
        assert.are.same({3, nil, 2, nil}, {n, a, b, c})
      end)

      it("releases when fn raises, and the error propagates unchanged", function()
        local lock = new()
        local err = {"my error"}
        local ok, e = pcall(lock.with, lock, function() error(err) end)
        assert.is_false(ok)
        assert.are.equal(err, e)
        assert.is_false(lock:locked())
        local e2 = err_of(lock.with, lock, function() error("boom") end)
        assert_has(e2, "boom")
        assert.is_false(lock:locked())
      end)

      it("waits for a lock another thread holds", function()
        local lock = new()
        local let_go = held_by_thread(lock)
        assert.is_false(lock:acquire(false))
        local t = let_go()
        assert.are.equal("inside", lock:with(function() return "inside" end))
        assert.is_true(t:join())
        assert.is_false(lock:locked())
      end)

      it("works across a coroutine yield inside fn", function()
        -- A C function can call a function that yields from 5.3 on (lua_pcallk).
        if _VERSION < "Lua 5.3" then return pending("needs Lua 5.3+: yield across a C call") end
        local lock = new()
        local co = coroutine.wrap(function()
          return lock:with(function(x)
            local y = coroutine.yield("paused")
            return x + y
          end, 1)
        end)
        assert.are.equal("paused", co())
        assert.is_true(lock:locked())
        assert.are.equal(3, co(2))
        assert.is_false(lock:locked())
      end)

      it("requires a function", function()
        local lock = new()
        assert_has(err_of(function() lock:with(5) end), "bad argument")
        assert.is_false(lock:locked())
      end)
    end)

    describe("guard", function()
      it("holds the lock until the end of the block", function()
        if not support.has_close then return pending(support.NEEDS_CLOSE) end
        local lock = new()
        support.lua54([[
          local lock, go = ...
          do
            local _ <close> = lock:guard()
            assert.is_true(lock:locked())
            assert.is_false(go(function(l) return l:acquire(false) end, lock):result())
          end
        ]], lock, go)
        assert.is_false(lock:locked())
      end)

      it("releases when the block raises", function()
        if not support.has_close then return pending(support.NEEDS_CLOSE) end
        local lock = new()
        local ok, e = pcall(support.lua54([[
          local lock = ...
          return function()
            local _ <close> = lock:guard()
            error("inside guard")
          end
        ]], lock))
        assert.is_false(ok)
        assert_has(e, "inside guard")
        assert.is_false(lock:locked())
      end)

      it("releases at a return from the block", function()
        if not support.has_close then return pending(support.NEEDS_CLOSE) end
        local lock = new()
        local f = support.lua54([[
          local lock = ...
          return function()
            local _ <close> = lock:guard()
            return lock:locked()
          end
        ]], lock)
        assert.is_true(f())
        assert.is_false(lock:locked())
      end)

      it("keeps threads out of the block", function()
        if not support.has_close then return pending(support.NEEDS_CLOSE) end
        local lock = new()
        local t = support.lua54([[
          local lock, go = ...
          local t
          do
            local _ <close> = lock:guard()
            t = go(function(l)
              local first = l:acquire(false)
              local _ <close> = l:guard()
              return first, l:locked()
            end, lock)
            assert.is_false(t:join(0.05))
          end
          return t
        ]], lock, go)
        assert.are.same({false, true}, {t:result()})
        assert.is_false(lock:locked())
      end)
    end)
  end)
end

-- ---------------------------------------------------------------------------
describe("constructors", function()
  -- As Python's TypeError for Lock(1): an argument too many is a bad
  -- argument, not silently ignored.
  local cases = {
    {"Lock", 0}, {"RLock", 0}, {"Event", 0}, {"Semaphore", 1}, {"BoundedSemaphore", 1},
    {"Condition", 1},
  }
  for _, c in ipairs(cases) do
    local name, most = c[1], c[2]
    it(("%s takes at most %d argument%s; one more is a bad argument"):format(name, most, most == 1 and "" or "s"),
      function()
        local args = {}
        for i = 1, most do args[i] = nil end
        args[most + 1] = 1
        local err = support.err_of(concur[name], support.unpack(args, 1, most + 1))
        support.assert_has(err, ("bad argument #%d to '%s' (no value expected)"):format(most + 1, name))
        assert.is_not_nil(concur[name]())   -- and none at all is fine
      end)
  end
end)

describe("concur.Condition", function()
  it("uses a new RLock by default", function()
    local c = concur.Condition()
    assert.are.equal("<concur.Condition " .. rlock_str(0) .. " waiters=0>", tostring(c))
    assert.is_false(c:locked())
    assert.is_true(c:acquire())
    assert.is_true(c:acquire())   -- recursive
    assert.is_true(c:locked())
    assert.are.equal("<concur.Condition " .. rlock_str(2) .. " waiters=0>", tostring(c))
    c:release()
    c:release()
    assert.is_false(c:locked())
    assert_has(err_of(function() c:release() end), "cannot release un-acquired lock")
  end)

  it("uses the Lock it is given", function()
    local lock = concur.Lock()
    local c = concur.Condition(lock)
    assert.is_true(c:acquire())
    assert.is_true(lock:locked())
    assert.is_false(c:acquire(false))   -- a Lock is not reentrant
    assert.is_false(lock:acquire(false))
    assert.are.equal("<concur.Condition <concur.Lock locked> waiters=0>", tostring(c))
    c:release()
    assert.is_false(lock:locked())
    lock:acquire()
    assert.is_true(c:locked())
    lock:release()
    assert_has(err_of(function() c:release() end), "release unlocked lock")
  end)

  it("uses the RLock it is given", function()
    local r = concur.RLock()
    local c = concur.Condition(r)
    r:acquire()
    c:acquire()
    assert.are.equal(rlock_str(2), tostring(r))
    r:release()
    c:release()
    assert.is_false(r:locked())
  end)

  it("two Conditions on one Lock share it", function()
    local lock = concur.Lock()
    local c1, c2 = concur.Condition(lock), concur.Condition(lock)
    c1:acquire()
    assert.is_true(c2:locked())
    assert.is_false(c2:acquire(false))
    c2:release()
    assert.is_false(c1:locked())
  end)

  it("Condition(x) with x not a Lock or RLock is a bad argument #1", function()
    for _, bad in ipairs({5, "lock", {}, true}) do
      assert_has(err_of(concur.Condition, bad), "bad argument #1")
    end
    assert_has(err_of(concur.Condition, concur.Event()), "bad argument #1")
    assert_has(err_of(concur.Condition, concur.Semaphore()), "bad argument #1")
    assert_has(err_of(concur.Condition, concur.Condition()), "bad argument #1")
  end)

  it("wait, notify and notify_all without holding the lock raise", function()
    local c = concur.Condition()
    assert_has(err_of(function() local _ = c:wait(0.01) end), "cannot wait on un-acquired lock")
    assert_has(err_of(function() local _ = c:wait() end), "cannot wait on un-acquired lock")
    assert_has(err_of(function() c:notify() end), "cannot notify on un-acquired lock")
    assert_has(err_of(function() c:notify(2) end), "cannot notify on un-acquired lock")
    assert_has(err_of(function() c:notify_all() end), "cannot notify on un-acquired lock")
    assert_has(err_of(function() c:notifyAll() end), "cannot notify on un-acquired lock")
    assert_has(err_of(function() local _ = c:wait_for(function() return false end, 0.01) end),
      "cannot wait on un-acquired lock")
    local lc = concur.Condition(concur.Lock())
    assert_has(err_of(function() local _ = lc:wait(0.01) end), "cannot wait on un-acquired lock")
    assert_has(err_of(function() lc:notify() end), "cannot notify on un-acquired lock")
  end)

  it("an RLock Condition held by another thread is not ours to wait or notify on", function()
    local c = concur.Condition()
    local let_go = held_by_thread(c)
    assert_has(err_of(function() local _ = c:wait(0.01) end), "cannot wait on un-acquired lock")
    assert_has(err_of(function() c:notify() end), "cannot notify on un-acquired lock")
    assert.is_false(let_go():result())
  end)

  it("notify with nobody waiting does nothing", function()
    local c = concur.Condition()
    c:acquire()
    c:notify()
    c:notify(5)
    c:notify_all()
    c:release()
    assert.are.equal("<concur.Condition " .. rlock_str(0) .. " waiters=0>", tostring(c))
  end)

  it("wait(timeout) returns false after about the timeout, the lock held again", function()
    for _, c in ipairs({concur.Condition(), concur.Condition(concur.Lock())}) do
      c:acquire()
      local took, got = timed(c.wait, c, 0.05)
      assert.is_false(got)
      assert_about(0.05, took)
      assert.is_true(c:locked())
      assert_has(tostring(c), "waiters=0>")
      c:release()
      assert.is_false(c:locked())
    end
  end)

  it("wait with a bad timeout is a bad argument", function()
    local c = concur.Condition()
    c:acquire()
    assert_has(err_of(function() local _ = c:wait(-1) end), "bad argument #1 to 'wait'")
    assert_has(err_of(function() local _ = c:wait("x") end), "bad argument #1 to 'wait'")
    assert.is_true(c:locked())
    c:release()
  end)

  it("methods called on something else raise 'concur.Condition expected'", function()
    local c = concur.Condition()
    assert_has(err_of(function() local _ = c.wait(concur.Lock()) end), "concur.Condition expected")
    assert_has(err_of(function() c.notify(1) end), "concur.Condition expected")
    assert_has(err_of(function() local _ = c.acquire(concur.RLock()) end), "concur.Condition expected")
  end)

  describe("between threads", function()
    it("wait releases the lock; a notify from another thread wakes it with true", function()
      local c = concur.Condition(concur.Lock())
      c:acquire()
      local t = go(function(cond)
        cond:acquire()   -- only possible while the main thread waits
        cond:notify()
        cond:release()
        return true
      end, c)
      assert.is_true(c:wait(10))
      assert.is_true(c:locked())
      c:release()
      assert.is_true(t:result())
    end)

    it("notify(n) wakes exactly n of k waiters", function()
      local k, n = 5, 2
      local c = concur.Condition()
      local ts = waiting_threads(c, k, 1.0)   -- the others time out
      when_waiting(c, k, function() c:notify(n) end)
      local r = results(ts)
      assert.are.equal(n, count(r, true))
      assert.are.equal(k - n, count(r, false))
      assert_has(tostring(c), "waiters=0>")
    end)

    it("notify() wakes exactly one", function()
      local k = 3
      local c = concur.Condition(concur.Lock())
      local ts = waiting_threads(c, k, 1.0)
      local after
      when_waiting(c, k, function()
        c:notify()
        after = tostring(c)
      end)
      assert_has(after, "waiters=" .. (k - 1) .. ">")   -- taken off the list at once
      local r = results(ts)
      assert.are.equal(1, count(r, true))
      assert.are.equal(k - 1, count(r, false))
    end)

    it("notify(n) with n above the number of waiters wakes them all", function()
      local k = 3
      local c = concur.Condition()
      local ts = waiting_threads(c, k, 10)
      when_waiting(c, k, function() c:notify(k + 10) end)
      assert.are.same({true, true, true}, results(ts))
    end)

    for _, name in ipairs({"notify_all", "notifyAll"}) do
      it(name .. " wakes every waiter", function()
        local k = 6
        local c = concur.Condition()
        local ts = waiting_threads(c, k, 10)
        when_waiting(c, k, function() c[name](c) end)
        local r = results(ts)
        assert.are.equal(k, count(r, true))
      end)
    end

    it("wait on an RLock held three times releases it fully and restores the count", function()
      local r = concur.RLock()
      local c = concur.Condition(r)
      r:acquire()
      c:acquire()
      r:acquire()
      assert.are.equal(rlock_str(3), tostring(r))
      local t = go(function(cond, l)
        cond:acquire()                  -- possible only once the wait released all 3
        local seen = tostring(l)
        cond:notify()
        cond:release()
        return seen, concur.get_ident()
      end, c, r)
      assert.is_true(c:wait(10))
      local seen, ident = t:result()
      assert.are.equal(rlock_str(1, ident), seen)
      assert.are.equal(rlock_str(3), tostring(r))   -- the owner back, with its count
      assert.is_true(r:locked())
      r:release()
      r:release()
      assert.is_true(r:locked())
      r:release()
      assert.is_false(r:locked())
      assert_has(err_of(function() r:release() end), "cannot release un-acquired lock")
    end)

    it("a wait that timed out on an RLock held twice restores the count too", function()
      local c = concur.Condition()
      c:acquire()
      c:acquire()
      assert.is_false(c:wait(0.02))
      assert_has(tostring(c), "count=2")
      c:release()
      c:release()
      assert.is_false(c:locked())
    end)

    it("a producer and a consumer hand over items one at a time", function()
      local c = concur.Condition()
      local full = concur.Event()   -- the one-slot buffer's state
      local got = concur.Semaphore(0)
      local N = 50
      local consumer = go(function(cond, f, g, n)
        local taken = 0
        for _ = 1, n do
          cond:acquire()
          cond:wait_for(function() return f:is_set() end)
          f:clear()
          taken = taken + 1
          g:release()
          cond:notify_all()
          cond:release()
        end
        return taken
      end, c, full, got, N)
      for _ = 1, N do
        c:acquire()
        c:wait_for(function() return not full:is_set() end)
        full:set()
        c:notify_all()
        c:release()
      end
      assert.are.equal(N, consumer:result())
      assert.are.equal(N, got:get_value())
      assert.is_false(full:is_set())
    end)
  end)

  describe("wait_for", function()
    it("returns pred's true value at once, without waiting", function()
      local c = concur.Condition()
      c:acquire()
      local took, v = timed(c.wait_for, c, function() return "ready" end)
      assert.are.equal("ready", v)
      assert.is_true(took < 1)
      c:release()
    end)

    it("returns pred's last falsy value when the timeout runs out", function()
      local c = concur.Condition()
      c:acquire()
      local took, v = timed(c.wait_for, c, function() return false end, 0.05)
      assert.is_false(v)
      assert_about(0.05, took)
      local took2, v2 = timed(c.wait_for, c, function() return nil end, 0.05)
      assert.is_nil(v2)
      assert_about(0.05, took2)
      assert.is_true(c:locked())
      c:release()
    end)

    it("returns pred's value once another thread makes it true and notifies", function()
      local c = concur.Condition()
      local flag = concur.Event()
      local calls = 0
      c:acquire()
      local t = go(function(cond, f)
        cond:acquire()
        f:set()
        cond:notify_all()
        cond:release()
      end, c, flag)
      local v = c:wait_for(function()
        calls = calls + 1
        return flag:is_set() and "done"
      end, 10)
      assert.are.equal("done", v)
      assert.is_true(calls >= 2)
      assert.is_true(c:locked())
      c:release()
      assert.is_true(t:join())
    end)

    it("rechecks pred after a notify that leaves it false", function()
      local c = concur.Condition()
      local stage = concur.Semaphore(0)   -- its value is the state pred reads
      c:acquire()
      local t = go(function(cond, s)
        for _ = 1, 3 do
          cond:acquire()
          s:release()
          cond:notify()
          cond:release()
        end
      end, c, stage)
      local v = c:wait_for(function() return stage:get_value() >= 3 and stage:get_value() end, 10)
      assert.are.equal(3, v)
      c:release()
      assert.is_true(t:join())
    end)

    it("checks its timeout", function()
      local c = concur.Condition()
      c:acquire()
      assert_has(err_of(function() local _ = c:wait_for(function() end, -1) end), "bad argument")
      c:release()
    end)

    it("a predicate that cannot be called is a bad argument #1", function()
      local c = concur.Condition()
      c:acquire()
      assert_has(err_of(function() local _ = c:wait_for(5, 0.01) end),
        "bad argument #1 to 'wait_for'")
      assert_has(err_of(function() local _ = c:wait_for(nil, 0.01) end),
        "bad argument #1 to 'wait_for'")
      assert.is_true(c:locked())
      c:release()
    end)

    it("takes a callable table as the predicate", function()
      local c = concur.Condition()
      c:acquire()
      local pred = setmetatable({}, {__call = function() return "called" end})
      assert.are.equal("called", c:wait_for(pred, 1))
      c:release()
    end)
  end)

  it("with() holds the condition's lock and releases it, also on error", function()
    local c = concur.Condition()
    local locked, waited = c:with(function() return c:locked(), c:wait(0.01) end)
    assert.is_true(locked)
    assert.is_false(waited)
    assert.is_false(c:locked())
    assert_has(err_of(c.with, c, function() error("cond boom") end), "cond boom")
    assert.is_false(c:locked())
  end)

  it("guard() holds the condition's lock until the end of the block", function()
    if not support.has_close then return pending(support.NEEDS_CLOSE) end
    local c = concur.Condition(concur.Lock())
    support.lua54([[
      local c = ...
      do
        local _ <close> = c:guard()
        assert.is_true(c:locked())
        c:notify()
      end
      assert.is_false(c:locked())
      pcall(function()
        local _ <close> = c:guard()
        error("x")
      end)
    ]], c)
    assert.is_false(c:locked())
  end)
end)

-- ---------------------------------------------------------------------------
describe("concur.Semaphore", function()
  it("defaults to 1", function()
    local s = concur.Semaphore()
    assert.are.equal(1, s:get_value())
    assert.are.equal("<concur.Semaphore value=1>", tostring(s))
    assert.is_true(s:acquire())
    assert.are.equal(0, s:get_value())
    assert.is_false(s:acquire(false))
    s:release()
    assert.are.equal(1, s:get_value())
  end)

  it("counts down from its value and up by release(n)", function()
    local s = concur.Semaphore(3)
    assert.is_true(s:acquire())
    assert.is_true(s:acquire(true))
    assert.is_true(s:acquire(false))
    assert.is_false(s:acquire(false))
    assert.are.equal("<concur.Semaphore value=0>", tostring(s))
    s:release(5)
    assert.are.equal(5, s:get_value())
    s:release()
    assert.are.equal("<concur.Semaphore value=6>", tostring(s))
  end)

  it("Semaphore(0) starts empty", function()
    local s = concur.Semaphore(0)
    assert.are.equal(0, s:get_value())
    assert.is_false(s:acquire(false))
    assert.is_false(s:acquire(true, 0))
  end)

  it("a negative or non-integer value is a bad argument #1", function()
    assert_has(err_of(concur.Semaphore, -1), "bad argument #1")
    assert_has(err_of(concur.Semaphore, 1.5), "bad argument #1")
    assert_has(err_of(concur.Semaphore, "many"), "bad argument #1")
    assert_has(err_of(concur.BoundedSemaphore, -3), "bad argument #1")
  end)

  it("acquire(true, 0.05) on an empty semaphore returns false after about 0.05 s", function()
    local s = concur.Semaphore(0)
    local took, got = timed(s.acquire, s, true, 0.05)
    assert.is_false(got)
    assert_about(0.05, took)
    assert.are.equal(0, s:get_value())
  end)

  it("checks acquire's arguments as Lock does", function()
    local s = concur.Semaphore(1)
    assert_has(err_of(function() local _ = s:acquire(false, 1) end),
      "can't specify a timeout for a non-blocking call")
    assert_has(err_of(function() local _ = s:acquire(true, -1) end), "bad argument #2 to 'acquire'")
    assert_has(err_of(function() local _ = s:acquire(true, 0 / 0) end), "bad argument #2 to 'acquire'")
    assert_has(err_of(function() local _ = s:acquire(1) end),
      "bad argument #1 to 'acquire' (boolean expected")
    assert.are.equal(1, s:get_value())
  end)

  it("release(n) with n < 1 raises 'n must be one or more'", function()
    local s = concur.Semaphore(0)
    assert_has(err_of(function() s:release(0) end), "n must be one or more")
    assert_has(err_of(function() s:release(-2) end), "n must be one or more")
    assert_has(err_of(function() s:release("x") end), "bad argument #1 to 'release'")
    assert.are.equal(0, s:get_value())
  end)

  it("methods called on something else raise 'concur.Semaphore expected'", function()
    local s = concur.Semaphore()
    assert_has(err_of(function() local _ = s.acquire(concur.Lock()) end), "concur.Semaphore expected")
    assert_has(err_of(function() s.release(3) end), "concur.Semaphore expected")
    assert_has(err_of(function() local _ = s.get_value(concur.BoundedSemaphore()) end),
      "concur.Semaphore expected")
  end)

  describe("between threads", function()
    it("a release in one thread wakes an acquire blocked in another", function()
      local s = concur.Semaphore(0)
      local ready = concur.Event()
      local t = go(function(sem, r)
        r:set()
        return sem:acquire(true, 10)
      end, s, ready)
      assert.is_true(ready:wait(10))
      assert.is_false(t:join(0.05))
      s:release()
      assert.is_true(t:result())
      assert.are.equal(0, s:get_value())
    end)

    it("release(n) lets exactly n of the blocked threads through", function()
      local k = 4
      local s, ready, done = concur.Semaphore(0), concur.Semaphore(0), concur.Semaphore(0)
      local ts = go_n(k, function(_, sem, r, d)
        r:release()
        local got = sem:acquire(true, 10)
        d:release()
        return got
      end, s, ready, done)
      for _ = 1, k do assert.is_true(ready:acquire(true, 10)) end
      s:release(2)
      assert.is_true(done:acquire(true, 10))
      assert.is_true(done:acquire(true, 10))
      assert.is_false(done:acquire(true, 0.1))
      assert.are.equal(0, s:get_value())
      s:release(2)
      assert.are.same({true, true, true, true}, results(ts))
      assert.are.equal(0, s:get_value())
    end)

    it("bounds how many threads are inside at once", function()
      local k, limit = 8, 3
      local s = concur.Semaphore(limit)
      local inside = concur.Semaphore(0)    -- how many are in
      local worst = concur.Semaphore(0)     -- counts entries that saw too many
      local ts = go_n(k, function(_, sem, ins, w, lim)
        for _ = 1, 200 do
          sem:acquire()
          ins:release()
          if ins:get_value() > lim then w:release() end
          ins:acquire()
          sem:release()
        end
        return true
      end, s, inside, worst, limit)
      assert.are.equal(k, count(results(ts), true))
      assert.are.equal(0, worst:get_value())
      assert.are.equal(limit, s:get_value())
    end)
  end)

  it("with() takes one unit while fn runs, also giving it back on error", function()
    local s = concur.Semaphore(2)
    assert.are.equal(1, s:with(function() return s:get_value() end))
    assert.are.equal(2, s:get_value())
    assert_has(err_of(s.with, s, function() error("sem boom") end), "sem boom")
    assert.are.equal(2, s:get_value())
  end)

  it("guard() takes one unit until the end of the block", function()
    if not support.has_close then return pending(support.NEEDS_CLOSE) end
    local s = concur.Semaphore(1)
    support.lua54([[
      local s = ...
      do
        local _ <close> = s:guard()
        assert.are.equal(0, s:get_value())
      end
    ]], s)
    assert.are.equal(1, s:get_value())
  end)
end)

describe("concur.BoundedSemaphore", function()
  it("defaults to 1 and cannot be released above its initial value", function()
    local b = concur.BoundedSemaphore()
    assert.are.equal("<concur.BoundedSemaphore value=1/1>", tostring(b))
    assert_has(err_of(function() b:release() end), "Semaphore released too many times")
    assert.are.equal(1, b:get_value())
    assert.is_true(b:acquire())
    assert.are.equal("<concur.BoundedSemaphore value=0/1>", tostring(b))
    b:release()
    assert.are.equal(1, b:get_value())
  end)

  it("release(n) raises when n would go over, and changes nothing", function()
    local b = concur.BoundedSemaphore(3)
    b:acquire()
    b:acquire()
    assert.are.equal("<concur.BoundedSemaphore value=1/3>", tostring(b))
    assert_has(err_of(function() b:release(3) end), "Semaphore released too many times")
    assert.are.equal(1, b:get_value())
    b:release(2)
    assert.are.equal("<concur.BoundedSemaphore value=3/3>", tostring(b))
    assert_has(err_of(function() b:release() end), "Semaphore released too many times")
    assert_has(err_of(function() b:release(0) end), "n must be one or more")
  end)

  it("BoundedSemaphore(0) can never be released", function()
    local b = concur.BoundedSemaphore(0)
    assert.is_false(b:acquire(false))
    assert_has(err_of(function() b:release() end), "Semaphore released too many times")
  end)

  it("acquires, times out and works with with/guard like a Semaphore", function()
    local b = concur.BoundedSemaphore(1)
    assert.is_true(b:acquire(true, 0.05))
    local took, got = timed(b.acquire, b, true, 0.05)
    assert.is_false(got)
    assert_about(0.05, took)
    b:release()
    assert.are.equal(0, b:with(function() return b:get_value() end))
    if not support.has_close then return pending(support.NEEDS_CLOSE) end
    support.lua54([[
      local b = ...
      do
        local _ <close> = b:guard()
        assert.are.equal(0, b:get_value())
      end
    ]], b)
    assert.are.equal(1, b:get_value())
  end)

  it("its methods do not take a plain Semaphore", function()
    local b = concur.BoundedSemaphore()
    assert_has(err_of(function() local _ = b.acquire(concur.Semaphore()) end),
      "concur.BoundedSemaphore expected")
  end)

  it("over-release from another thread raises there", function()
    local b = concur.BoundedSemaphore(2)
    b:acquire()
    local t = go(function(sem)
      sem:release()
      local ok, e = pcall(sem.release, sem)
      return ok, tostring(e)
    end, b)
    local ok, e = t:result()
    assert.is_false(ok)
    assert_has(e, "Semaphore released too many times")
    assert.are.equal(2, b:get_value())
  end)
end)

-- ---------------------------------------------------------------------------
describe("concur.Event", function()
  it("starts unset; set, clear, is_set and isSet", function()
    local e = concur.Event()
    assert.is_false(e:is_set())
    assert.is_false(e:isSet())
    assert.are.equal("<concur.Event unset>", tostring(e))
    assert.is_nil(e:set())
    assert.is_true(e:is_set())
    assert.is_true(e:isSet())
    assert.are.equal("<concur.Event set>", tostring(e))
    e:set()
    assert.is_true(e:is_set())
    assert.is_nil(e:clear())
    assert.is_false(e:is_set())
    assert.are.equal("<concur.Event unset>", tostring(e))
    e:clear()
    assert.is_false(e:is_set())
  end)

  it("wait returns true at once when set", function()
    local e = concur.Event()
    e:set()
    local took, got = timed(e.wait, e)
    assert.is_true(got)
    assert.is_true(took < 1)
    assert.is_true(e:wait(0))
    assert.is_true(e:wait(5))
  end)

  it("wait(timeout) on an unset event returns false after about the timeout", function()
    local e = concur.Event()
    local took, got = timed(e.wait, e, 0.05)
    assert.is_false(got)
    assert_about(0.05, took)
    local took0, got0 = timed(e.wait, e, 0)
    assert.is_false(got0)
    assert.is_true(took0 < 1)
  end)

  it("wait with a bad timeout is a bad argument", function()
    local e = concur.Event()
    assert_has(err_of(function() local _ = e:wait(-0.1) end), "bad argument #1 to 'wait'")
    assert_has(err_of(function() local _ = e:wait(0 / 0) end), "bad argument #1 to 'wait'")
    assert_has(err_of(function() local _ = e:wait({}) end), "bad argument #1 to 'wait'")
  end)

  it("has no with or guard", function()
    local e = concur.Event()
    assert.is_nil(e.with)
    assert.is_nil(e.guard)
  end)

  it("methods called on something else raise 'concur.Event expected'", function()
    local e = concur.Event()
    assert_has(err_of(function() e.set(concur.Lock()) end), "concur.Event expected")
    assert_has(err_of(function() local _ = e.wait(1) end), "concur.Event expected")
    assert_has(err_of(function() local _ = e.is_set(nil) end), "concur.Event expected")
  end)

  describe("between threads", function()
    it("a set in another thread wakes wait() with true", function()
      local e = concur.Event()
      local t = go(function(ev) ev:set() end, e)
      assert.is_true(e:wait(10))
      assert.is_true(t:join())
    end)

    it("a set wakes all of 10 waiting threads", function()
      local e = concur.Event()
      local ready = concur.Semaphore(0)
      local ts = go_n(10, function(_, ev, r)
        r:release()
        return ev:wait(10)
      end, e, ready)
      for _ = 1, 10 do assert.is_true(ready:acquire(true, 10)) end
      assert.is_false(ts[1]:join(0.05))   -- waiting, not returned
      e:set()
      local r = results(ts)
      assert.are.equal(10, count(r, true))
    end)

    it("a thread sees clear(): its wait times out", function()
      local e = concur.Event()
      e:set()
      e:clear()
      local t = go(function(ev) return ev:is_set(), ev:wait(0.02) end, e)
      assert.are.same({false, false}, {t:result()})
    end)
  end)
end)

-- ---------------------------------------------------------------------------
describe("concur.Barrier", function()
  it("Barrier(parties) has parties, n_waiting, broken and a tostring", function()
    local b = concur.Barrier(3)
    assert.are.equal(3, b.parties)
    assert.are.equal(0, b.n_waiting)
    assert.is_false(b.broken)
    assert.are.equal("<concur.Barrier waiters=0/3>", tostring(b))
  end)

  it("takes an action and a default timeout", function()
    local b = concur.Barrier(2, function() end, 1.5)
    assert.are.equal(2, b.parties)
    assert.is_false(b.broken)
    local b2 = concur.Barrier(4, nil, 0.5)
    assert.are.equal(4, b2.parties)
  end)

  it("bad arguments raise", function()
    assert_has(err_of(concur.Barrier, 0), "bad argument #1")
    assert_has(err_of(concur.Barrier, -2), "bad argument #1")
    assert_has(err_of(concur.Barrier, "three"), "bad argument #1")
    assert_has(err_of(concur.Barrier), "bad argument #1")
    assert_has(err_of(concur.Barrier, 2, 5), "bad argument #2")
    assert_has(err_of(concur.Barrier, 2, nil, -1), "bad argument #3")
    local b = concur.Barrier(2, nil)
    assert_has(err_of(function() local _ = b:wait(-1) end), "bad argument #1 to 'wait'")
    assert.is_false(b.broken)
  end)

  it("BrokenBarrierError is a unique value named by tostring", function()
    assert.are.equal("concur.BrokenBarrierError", tostring(concur.BrokenBarrierError))
    assert.are_not.equal(concur.BrokenBarrierError, concur.Empty)
  end)

  it("methods called on something else raise 'concur.Barrier expected'", function()
    local b = concur.Barrier(2, nil)
    assert_has(err_of(function() local _ = b.wait(concur.Lock()) end), "concur.Barrier expected")
    assert_has(err_of(function() b.abort(1) end), "concur.Barrier expected")
    assert_has(err_of(function() b.reset({}) end), "concur.Barrier expected")
  end)

  it("a one-party barrier returns 0 at once and runs its action every time", function()
    local runs = concur.Semaphore(0)
    local b = concur.Barrier(1, function() runs:release() end)
    assert.are.equal(0, b:wait())
    assert.are.equal(0, b:wait(1))
    assert.are.equal(2, runs:get_value())
  end)

  describe("between threads", function()
    it("wait returns the distinct indices 0..parties-1", function()
      local n = 5
      local b = concur.Barrier(n)
      local ts = go_n(n, function(_, bar) return bar:wait() end, b)
      local r = results(ts)
      table.sort(r)
      assert.are.same({0, 1, 2, 3, 4}, r)
      assert.are.equal(0, b.n_waiting)
      assert.is_false(b.broken)
    end)

    it("n_waiting and tostring count the threads waiting", function()
      local b = concur.Barrier(3)
      local ts = go_n(2, function(_, bar) return bar:wait() end, b)
      wait_until(function() return b.n_waiting == 2 end, "2 threads at the barrier")
      assert.are.equal("<concur.Barrier waiters=2/3>", tostring(b))
      assert.is_false(ts[1]:join(0.02))
      local mine = b:wait()
      local r = results(ts)
      r[3] = mine
      table.sort(r)
      assert.are.same({0, 1, 2}, r)
      assert.are.equal(0, b.n_waiting)
    end)

    it("is reusable across rounds; the action runs once per round", function()
      local parties, rounds = 3, 5
      local runs = concur.Semaphore(0)
      local b = concur.Barrier(parties, function() runs:release() end)
      local ts = go_n(parties, function(_, bar, n)
        local got = {}
        for i = 1, n do got[i] = bar:wait() end
        return got
      end, b, rounds)
      local per = results(ts)
      for round = 1, rounds do
        local idx = {}
        for p = 1, parties do idx[p] = per[p][round] end
        table.sort(idx)
        assert.are.same({0, 1, 2}, idx)
      end
      assert.are.equal(rounds, runs:get_value())
      assert.is_false(b.broken)
    end)

    it("runs the action before any party leaves the round", function()
      local runs = concur.Semaphore(0)
      local b = concur.Barrier(3, function() runs:release() end)
      local ts = go_n(3, function(_, bar, r)
        bar:wait()
        return r:get_value()
      end, b, runs)
      assert.are.same({1, 1, 1}, results(ts))
    end)

    it("abort() makes the waiters raise BrokenBarrierError, and later waits too", function()
      local b = concur.Barrier(3)
      waiters_break(b, b.abort)
      assert.is_true(b.broken)
      assert.are.equal(0, b.n_waiting)
      assert.are.equal("<concur.Barrier broken parties=3>", tostring(b))
      local ok, e = pcall(b.wait, b, 1)
      assert.is_false(ok)
      assert.are.equal(concur.BrokenBarrierError, e)
    end)

    it("reset() after abort() makes it usable again", function()
      local b = concur.Barrier(2)
      b:abort()
      assert.is_true(b.broken)
      b:reset()
      assert.is_false(b.broken)
      assert.are.equal("<concur.Barrier waiters=0/2>", tostring(b))
      local t = go(function(bar) return bar:wait() end, b)
      local mine = b:wait(10)
      local r = {mine, t:result()}
      table.sort(r)
      assert.are.same({0, 1}, r)
    end)

    it("a wait that times out breaks the barrier and raises BrokenBarrierError", function()
      local b = concur.Barrier(2)
      local took, ok, e = timed(pcall, b.wait, b, 0.05)
      assert.is_false(ok)
      assert.are.equal(concur.BrokenBarrierError, e)
      assert_about(0.05, took)
      assert.is_true(b.broken)
      -- later waits raise at once, until reset
      local took2, ok2, e2 = timed(pcall, b.wait, b, 5)
      assert.is_false(ok2)
      assert.are.equal(concur.BrokenBarrierError, e2)
      assert.is_true(took2 < 1)
      b:reset()
      assert.is_false(b.broken)
      local t = go(function(bar) return bar:wait() end, b)
      local r = {b:wait(10), t:result()}
      table.sort(r)
      assert.are.same({0, 1}, r)
    end)

    it("the constructor's timeout applies to wait() without one", function()
      local b = concur.Barrier(2, nil, 0.05)
      local took, ok, e = timed(pcall, b.wait, b)
      assert.is_false(ok)
      assert.are.equal(concur.BrokenBarrierError, e)
      assert_about(0.05, took)
      assert.is_true(b.broken)
    end)

    it("a party timing out breaks the barrier for the others waiting", function()
      local b = concur.Barrier(3)
      local t = go(function(bar)
        local ok, e = pcall(bar.wait, bar)
        return ok, e
      end, b)
      wait_until(function() return b.n_waiting == 1 end, "1 thread at the barrier")
      local ok, e = pcall(b.wait, b, 0.05)
      assert.is_false(ok)
      assert.are.equal(concur.BrokenBarrierError, e)
      local tok, te = t:result()
      assert.is_false(tok)
      assert.are.equal(concur.BrokenBarrierError, te)
      assert.is_true(b.broken)
    end)

    it("reset() while threads wait makes them raise; the barrier then works", function()
      local b = concur.Barrier(3)
      waiters_break(b, b.reset)
      assert.is_false(b.broken)
      assert.are.equal(0, b.n_waiting)
      local ts2 = go_n(2, function(_, bar) return bar:wait() end, b)
      local r = {b:wait(10)}
      for _, v in ipairs(results(ts2)) do r[#r + 1] = v end
      table.sort(r)
      assert.are.same({0, 1, 2}, r)
    end)

    it("reset() right after a round completes does not break that round", function()
      -- Python's reset leaves a draining round alone: every party of a round
      -- that completed returns its index, however late it wakes.
      local P, rounds = 6, 100
      local b = concur.Barrier(P)
      local broken = 0
      for _ = 1, rounds do
        local ts = go_n(P - 1, function(_, bar)
          local ok = pcall(bar.wait, bar, 10)
          return ok
        end, b)
        assert.is_number(b:wait(10))
        b:reset()
        broken = broken + count(results(ts), false)
      end
      assert.are.equal(0, broken)
    end)

    it("an action that raises: its thread gets the error, the others BrokenBarrierError", function()
      local b = concur.Barrier(3, function() error("action failed") end)
      local ts = go_n(3, function(_, bar)
        local ok, e = pcall(bar.wait, bar)
        return ok, e == concur.BrokenBarrierError and e or tostring(e)
      end, b)
      local broken, action = 0, 0
      for _, t in ipairs(ts) do
        local ok, e = t:result()
        assert.is_false(ok)
        if e == concur.BrokenBarrierError then
          broken = broken + 1
        elseif tostring(e):find("action failed", 1, true) then
          action = action + 1
        end
      end
      assert.are.equal(2, broken)
      assert.are.equal(1, action)
      assert.is_true(b.broken)
    end)

    it("the action sees the concur objects of its upvalues by reference", function()
      local seen = concur.Event()
      local b = concur.Barrier(2, function() seen:set() end)
      local t = go(function(bar) return bar:wait() end, b)
      b:wait(10)
      t:join()
      assert.is_true(seen:is_set())
    end)
  end)
end)

-- ---------------------------------------------------------------------------
describe("concur.Timer", function()
  it("is a Thread with start, join, cancel and is_alive", function()
    local tm = concur.Timer(0, function() end)
    assert.are.equal(concur.Thread.start, tm.start)
    assert.are.equal(concur.Thread.join, tm.join)
    assert.are.equal(concur.Thread.is_alive, tm.is_alive)
    assert.are.equal("function", type(tm.cancel))
    assert.are.equal(concur.Timer.cancel, tm.cancel)
    assert.is_string(tm.name)
    assert.is_false(tm:is_alive())
    tm:start()
    assert.is_true(tm:join(10))
    assert.is_false(tm:is_alive())
  end)

  it("runs fn(args...) after the interval", function()
    local fired = concur.Event()
    local got = concur.Semaphore(0)
    local tm = concur.Timer(0.05, function(e, s, a, b)
      if a == "x" and b == 42 then s:release() end
      e:set()
    end, {fired, got, "x", 42})
    local t0 = concur.time()
    tm:start()
    assert.is_true(fired:wait(10))
    assert_about(0.05, concur.time() - t0)
    assert.is_true(tm:join(10))
    assert.are.equal(1, got:get_value())
  end)

  it("passes nils in args when n says so", function()
    local got = concur.Semaphore(0)
    local tm = concur.Timer(0, function(s, a, b, c)
      if a == nil and b == 2 and c == nil then s:release() end
    end, pack(got, nil, 2, nil))
    tm:start()
    assert.is_true(tm:join(10))
    assert.are.equal(1, got:get_value())
  end)

  it("calls fn with its upvalues and without args", function()
    local fired = concur.Event()
    local tm = concur.Timer(0, function() fired:set() end)
    tm:start()
    assert.is_true(tm:join(10))
    assert.is_true(fired:is_set())
  end)

  it("accepts a callable table", function()
    local fired = concur.Event()
    local fn = setmetatable({}, {__call = function(_, e) e:set() end})
    local tm = concur.Timer(0, fn, {fired})
    tm:start()
    assert.is_true(tm:join(10))
    assert.is_true(fired:is_set())
  end)

  it("cancel() before it fires: fn never runs, and the thread ends soon", function()
    local fired = concur.Event()
    local tm = concur.Timer(30, function(e) e:set() end, {fired})
    tm:start()
    tm:cancel()
    local took, joined = timed(tm.join, tm, 10)
    assert.is_true(joined)
    assert.is_true(took < 5)
    assert.is_false(fired:is_set())
  end)

  it("cancel() before start: fn never runs", function()
    local fired = concur.Event()
    local tm = concur.Timer(0, function(e) e:set() end, {fired})
    tm:cancel()
    tm:start()
    assert.is_true(tm:join(10))
    assert.is_false(fired:is_set())
  end)

  it("cancel() after it fired does nothing", function()
    local fired = concur.Event()
    local tm = concur.Timer(0, function(e) e:set() end, {fired})
    tm:start()
    assert.is_true(tm:join(10))
    tm:cancel()
    assert.is_true(fired:is_set())
  end)

  it("bad arguments raise", function()
    assert_has(err_of(concur.Timer, -1, function() end), "bad argument #1 to 'Timer'")
    assert_has(err_of(concur.Timer, 0 / 0, function() end), "bad argument #1 to 'Timer'")
    assert_has(err_of(concur.Timer, "1", function() end), "bad argument #1 to 'Timer'")
    assert_has(err_of(concur.Timer, 1, 5), "bad argument #2 to 'Timer'")
    assert_has(err_of(concur.Timer, 1, nil), "bad argument #2 to 'Timer'")
    assert_has(err_of(concur.Timer, 1, {}), "bad argument #2 to 'Timer'")
    assert_has(err_of(concur.Timer, 1, function() end, "args"), "bad argument #3 to 'Timer'")
  end)
end)

-- ---------------------------------------------------------------------------
describe("timeouts", function()
  it("concur.TIMEOUT_MAX is Python's threading.TIMEOUT_MAX on Linux (INT64_MAX ns, whole seconds)", function()
    assert.are.equal("number", type(concur.TIMEOUT_MAX))
    assert.are.equal(9223372036, concur.TIMEOUT_MAX)
    assert.are.equal(concur.TIMEOUT_MAX, core.TIMEOUT_MAX)   -- one value, from C
  end)

  -- Every wait's timeout argument (its number as a method call's error
  -- counts it), with the other arguments it needs; each returns at once
  -- (nothing to wait for) when the timeout is accepted.
  local function waits()
    local l, r, s, e, c = concur.Lock(), concur.RLock(), concur.Semaphore(1), concur.Event(), concur.Condition()
    local q, a, b = concur.Queue(), concur.Pipe()
    e:set()
    q:put(1)
    b:send(1)
    local t = go(function() end)
    t:join()
    return {
      {"Lock:acquire", 2, function(to) return l:acquire(true, to) and l:release() end},
      {"RLock:acquire", 2, function(to) return r:acquire(true, to) and r:release() end},
      {"Semaphore:acquire", 2, function(to) return s:acquire(true, to) and s:release() end},
      {"Event:wait", 1, function(to) return e:wait(to) end},
      {"Condition:wait_for", 2, function(to) return c:with(function() return c:wait_for(function() return true end, to) end) end},
      {"Barrier", 3, function(to) return concur.Barrier(1, nil, to):wait() end},
      {"Barrier:wait", 1, function(to) return concur.Barrier(1):wait(to) end},
      {"Thread:join", 1, function(to) return t:join(to) end},
      {"Thread:result", 1, function(to) return t:result(to) end},
      {"Queue:get", 2, function(to) q:put(1); return q:get(true, to) end},
      {"Connection:poll", 1, function(to) return a:poll(to) end},
    }
  end

  it("a finite timeout above concur.TIMEOUT_MAX is a bad argument of every wait (Python's OverflowError)", function()
    for _, w in ipairs(waits()) do
      for _, to in ipairs({concur.TIMEOUT_MAX * 2, 1e300, 2^63}) do
        local err = err_of(w[3], to)
        assert.is_string(err, w[1] .. " accepted " .. tostring(to))
        -- #n as a method call counts it (LuaJIT may count self: n + 1)
        assert.is_truthy(err:find(("bad argument #%d"):format(w[2]), 1, true)
          or jit and err:find(("bad argument #%d"):format(w[2] + 1), 1, true), err)
        support.assert_has(err, "timeout must be at most concur.TIMEOUT_MAX")
      end
      local ok, e = pcall(w[3], concur.TIMEOUT_MAX)   -- the largest is fine
      assert.is_true(ok, w[1] .. ": " .. tostring(e))
      ok, e = pcall(w[3], math.huge)                  -- and math.huge: forever
      assert.is_true(ok, w[1] .. ": " .. tostring(e))
      -- Negative ones as before: a bad argument.
      support.assert_has(err_of(w[3], -1), "timeout must be a non-negative number")
    end
  end)

  it("math.huge is no timeout for a non-blocking acquire either (as nil is not)", function()
    local l, s = concur.Lock(), concur.Semaphore(1)
    support.assert_has(err_of(l.acquire, l, false, math.huge), "can't specify a timeout for a non-blocking call")
    support.assert_has(err_of(s.acquire, s, false, math.huge), "can't specify a timeout for a non-blocking call")
    assert.is_true(l:acquire(false, nil))
  end)

  it("concur.sleep and Timer refuse a length above concur.TIMEOUT_MAX", function()
    support.assert_has(err_of(concur.sleep, concur.TIMEOUT_MAX * 2), "bad argument #1")
    support.assert_has(err_of(concur.sleep, math.huge), "at most concur.TIMEOUT_MAX")   -- as Python's
    support.assert_has(err_of(concur.Timer, 1e300, function() end), "bad argument #1 to 'Timer'")
    -- math.huge: a Timer that only cancel ends.
    local tm = concur.Timer(math.huge, function() error("ran") end)
    tm:start()
    assert.is_false(tm:join(0.05))
    tm:cancel()
    assert.is_true(tm:join(10))
  end)

  for _, to in ipairs({1e9, concur.TIMEOUT_MAX, math.huge}) do
    it("a timeout of " .. tostring(to) .. " s waits like none, until woken", function()
      local l, s, e, c = concur.Lock(), concur.Semaphore(0), concur.Event(), concur.Condition()
      local stage = concur.Semaphore(0)
      l:acquire()
      local t = go(function(lock, sem, ev, cond, st, timeout)
        local r1 = lock:acquire(true, timeout)
        st:release()
        local r2 = sem:acquire(true, timeout)
        st:release()
        local r3 = ev:wait(timeout)
        cond:acquire()
        local r4 = cond:wait(timeout)
        cond:release()
        return r1, r2, r3, r4
      end, l, s, e, c, stage, to)
      assert.is_false(t:join(0.05))
      assert.are.equal(0, stage:get_value())
      l:release()
      assert.is_true(stage:acquire(true, 10))
      assert.is_false(t:join(0.02))
      s:release()
      assert.is_true(stage:acquire(true, 10))
      e:set()
      when_waiting(c, 1, function() c:notify() end)
      assert.are.same({true, true, true, true}, {t:result()})
    end)
  end
end)

-- ---------------------------------------------------------------------------
describe("sync objects cross threads by reference", function()
  local makers = {
    Lock = function() return concur.Lock() end,
    RLock = function() return concur.RLock() end,
    Condition = function() return concur.Condition() end,
    Semaphore = function() return concur.Semaphore(2) end,
    BoundedSemaphore = function() return concur.BoundedSemaphore(2) end,
    Event = function() return concur.Event() end,
    Barrier = function() return concur.Barrier(2) end,
  }
  for _, name in ipairs({"Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore",
                         "Event", "Barrier"}) do
    it(name .. ": one object passed twice is == in the thread, and comes back ==", function()
      local obj = makers[name]()
      local t = go(function(a, b, nested)
        return a == b, rawequal(a, nested.x), a, {back = b}
      end, obj, obj, {x = obj})
      local same, same_nested, back, tab = t:result()
      assert.is_true(same)
      assert.is_true(same_nested)
      assert.is_true(rawequal(obj, back))
      assert.is_true(rawequal(obj, tab.back))
      assert.are.equal(tostring(obj), tostring(back))
    end)
  end

  it("a change made in the thread is seen here: one object, not a copy", function()
    local lock, sem, ev = concur.Lock(), concur.Semaphore(0), concur.Event()
    local t = go(function(l, s, e)
      l:acquire()
      s:release(3)
      e:set()
    end, lock, sem, ev)
    assert.is_true(t:join())
    assert.is_true(lock:locked())
    assert.are.equal(3, sem:get_value())
    assert.is_true(ev:is_set())
    lock:release()
  end)

  it("an object made in a thread outlives it and works here", function()
    local t = go(function()
      local l = concur.Lock()
      l:acquire()
      local c = concur.Condition()
      return l, c, concur.Event()
    end)
    local l, c, e = t:result()
    assert.is_true(t:join())
    collectgarbage()
    collectgarbage()
    assert.are.equal("<concur.Lock locked>", tostring(l))
    l:release()
    assert.is_false(l:locked())
    c:acquire()
    assert.is_false(c:wait(0.01))
    c:release()
    e:set()
    assert.is_true(e:wait(0))
  end)

  it("a Condition's lock passed beside it is the same lock in the thread", function()
    local lock = concur.Lock()
    local c = concur.Condition(lock)
    local t = go(function(cond, l)
      cond:acquire()
      local held = l:locked()
      cond:release()
      return held, l:locked()
    end, c, lock)
    assert.are.same({true, false}, {t:result()})
  end)
end)

-- ---------------------------------------------------------------------------
describe("stress", function()
  -- nthreads threads enter a critical section `iters` times each; inside, a
  -- BoundedSemaphore(1) token must be free (mutual exclusion) and a
  -- Semaphore(0) counts the entries.
  local function hammer(lock, depth, nthreads, iters)
    local token = concur.BoundedSemaphore(1)
    local counter = concur.Semaphore(0)
    local start = concur.Event()
    local ts = go_n(nthreads, function(_, l, d, tok, cnt, st, n)
      st:wait()
      local clashes = 0
      for _ = 1, n do
        for _ = 1, d do l:acquire() end
        if tok:acquire(false) then
          cnt:release()
          tok:release()
        else
          clashes = clashes + 1
        end
        for _ = 1, d do l:release() end
      end
      return clashes
    end, lock, depth, token, counter, start, iters)
    start:set()
    local clashes = 0
    for _, t in ipairs(ts) do
      local ok, c = pcall(t.result, t)
      assert.is_true(ok, tostring(c))
      clashes = clashes + c
    end
    return clashes, counter:get_value(), token:get_value()
  end

  for _, case in ipairs({{"one Lock", concur.Lock, 1},
                         {"one RLock acquired twice", concur.RLock, 2}}) do
    local what, new, depth = unpack(case)
    it("8 threads x 10 000 critical sections on " .. what, function()
      local lock = new()
      local clashes, entries, token = hammer(lock, depth, 8, 10000)
      assert.are.equal(0, clashes)
      assert.are.equal(80000, entries)
      assert.are.equal(1, token)
      assert.is_false(lock:locked())
    end)
  end

  it("8 threads x 10 000 critical sections on a Semaphore(1)", function()
    local s = concur.Semaphore(1)
    local clashes, entries = hammer(s, 1, 8, 10000)
    assert.are.equal(0, clashes)
    assert.are.equal(80000, entries)
    assert.are.equal(1, s:get_value())
  end)

  it("two threads alternate 2 000 times on a Condition without a lost wake-up", function()
    local N = 2000
    local c = concur.Condition()
    local turn = concur.Semaphore(0)   -- its value counts the turns taken
    local ts = go_n(2, function(me, cond, tr, n)
      local late = 0
      for _ = 1, n do
        cond:acquire()
        while tr:get_value() % 2 ~= me - 1 do
          if not cond:wait(5) then late = late + 1 end
        end
        tr:release()
        cond:notify()
        cond:release()
      end
      return late
    end, c, turn, N)
    assert.are.same({0, 0}, results(ts))
    assert.are.equal(2 * N, turn:get_value())
  end)

  it("two threads ping-pong 5 000 times on two Semaphores", function()
    local N = 5000
    local ping, pong = concur.Semaphore(0), concur.Semaphore(0)
    local t = go(function(a, b, n)
      local missed = 0
      for _ = 1, n do
        if not a:acquire(true, 5) then missed = missed + 1 end
        b:release()
      end
      return missed
    end, ping, pong, N)
    local missed = 0
    for _ = 1, N do
      ping:release()
      if not pong:acquire(true, 5) then missed = missed + 1 end
    end
    assert.are.equal(0, missed)
    assert.are.equal(0, t:result())
  end)

  it("two threads ping-pong 2 000 times on two Events", function()
    local N = 2000
    local ping, pong = concur.Event(), concur.Event()
    local t = go(function(a, b, n)
      local missed = 0
      for _ = 1, n do
        if not a:wait(5) then missed = missed + 1 end
        a:clear()
        b:set()
      end
      return missed
    end, ping, pong, N)
    local missed = 0
    for _ = 1, N do
      ping:set()
      if not pong:wait(5) then missed = missed + 1 end
      pong:clear()
    end
    assert.are.equal(0, missed)
    assert.are.equal(0, t:result())
  end)

  it("4 threads x 500 rounds of a Barrier with an action", function()
    local parties, rounds = 4, 500
    local runs = concur.Semaphore(0)
    local b = concur.Barrier(parties, function() runs:release() end)
    local ts = go_n(parties, function(_, bar, n)
      local got = {}
      for i = 1, n do got[i] = bar:wait(10) end
      return got
    end, b, rounds)
    local per = results(ts)
    local bad = 0
    for round = 1, rounds do
      local seen = {}
      for p = 1, parties do seen[per[p][round]] = true end
      for i = 0, parties - 1 do if not seen[i] then bad = bad + 1 end end
    end
    assert.are.equal(0, bad)
    assert.are.equal(rounds, runs:get_value())
    assert.is_false(b.broken)
  end)

  it("8 threads x 2 000 sections through a Condition's with()", function()
    local c = concur.Condition()
    local token, counter = concur.BoundedSemaphore(1), concur.Semaphore(0)
    local ts = go_n(8, function(_, cond, tok, cnt)
      local clashes = 0
      local function section()
        if tok:acquire(false) then cnt:release(); tok:release() else clashes = clashes + 1 end
      end
      for _ = 1, 2000 do cond:with(section) end
      return clashes
    end, c, token, counter)
    assert.are.same({0, 0, 0, 0, 0, 0, 0, 0}, results(ts))
    assert.are.equal(16000, counter:get_value())
    assert.is_false(c:locked())
  end)
end)

-- ---------------------------------------------------------------------------
describe("shared memory of dropped objects", function()
  it("is given back when 10 000 objects of each kind are collected", function()
    collectgarbage()
    collectgarbage()
    local before = core.shm_in_use()
    local keep = {}
    for i = 1, 10000 do
      keep[i] = {concur.Lock(), concur.Event(), concur.RLock(), concur.Semaphore(),
                 concur.BoundedSemaphore(2), concur.Condition(), concur.Condition(concur.Lock()),
                 concur.Barrier(2, function() end)}
    end
    local peak = core.shm_in_use()
    assert.is_true(peak > before + 10000 * 8 * 8, "the objects do not show in shm_in_use")
    keep = nil
    collectgarbage()
    collectgarbage()
    local after = core.shm_in_use()
    assert.is_true(after - before < 64 * 1024,
      ("%d bytes still in use of %d at the peak"):format(after - before, peak - before))
  end)

  it("is given back for objects made and dropped in a loop", function()
    collectgarbage()
    collectgarbage()
    local before = core.shm_in_use()
    for _ = 1, 10000 do
      local l, e = concur.Lock(), concur.Event()
      l:acquire(); l:release(); e:set()
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(core.shm_in_use() - before < 64 * 1024)
  end)

  it("is given back for objects that went through a thread", function()
    collectgarbage()
    collectgarbage()
    local before = core.shm_in_use()
    local objs = {}
    for i = 1, 200 do objs[i] = concur.Condition() end
    local t = go(function(list)
      local made = {}
      for i = 1, #list do made[i] = concur.Lock() end
      return #list, made
    end, objs)
    local n, made = t:result()
    assert.are.equal(200, n)
    assert.are.equal(200, #made)
    t = nil
    objs, made = nil, nil
    collectgarbage()
    collectgarbage()
    assert.is_true(core.shm_in_use() - before < 64 * 1024)
  end)
end)

describe("regressions", function()
  it("a Barrier's action may be a callable table, as Python takes any callable", function()
    local sem = concur.Semaphore(0)
    local act = setmetatable({s = sem}, {__call = function(self) self.s:release() end})
    local b = concur.Barrier(2, act)
    local t = concur.Thread{target = function(bar) return bar:wait(10) end, args = {b}}
    t:start()
    local mine = b:wait(10)
    local theirs = t:result()
    assert.are.same({0, 1}, mine < theirs and {mine, theirs} or {theirs, mine})
    assert.are.equal(1, sem:get_value())
    assert.matches("callable expected, got number", select(2, pcall(concur.Barrier, 2, 5)))
  end)

  it("Semaphore:release(n) with a huge n raises and leaves the value alone", function()
    local s = concur.Semaphore(1)
    assert.is_false(pcall(s.release, s, math.maxinteger))
    assert.are.equal(1, s:get_value())
    local b = concur.BoundedSemaphore(3)
    b:acquire()
    local ok, err = pcall(b.release, b, math.maxinteger - 1)
    assert.is_false(ok)
    assert.matches("released too many times", tostring(err))
    assert.are.equal(2, b:get_value())
  end)
  -- A set was once two steps (flag, then count): a wait could see the flag of
  -- one round and return at once in the next, and a ping-pong lost a round.
  it("Event:wait never returns before its set, in 3 pairs x 20 000 ping-pong rounds", function()
    -- Three pairs on two cores: a setter preempted mid-set is likelier.
    local function side(a, b, tok, rounds, lead)
      local bad = 0
      for _ = 1, rounds do
        if lead then
          tok:release()
          a:set()
          if not b:wait(10) then bad = bad + 1 end
          b:clear()
        else
          if not a:wait(10) then bad = bad + 1 end
          a:clear()
          if not tok:acquire(false) then bad = bad + 1 end   -- woke before the set
          b:set()
        end
      end
      return bad
    end
    local n, threads = 20000, {}
    for i = 1, 3 do
      local ping, pong, token = concur.Event(), concur.Event(), concur.Semaphore(0)
      for _, lead in ipairs({true, false}) do
        local t = concur.Thread{target = side, args = {ping, pong, token, n, lead}}
        t:start()
        threads[#threads + 1] = t
      end
    end
    for _, t in ipairs(threads) do
      assert.is_true(t:join(60))
      assert.are.equal(0, t:result())
    end
  end)
end)

