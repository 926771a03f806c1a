-- spec/fault_spec.lua: processes killed (SIGKILL) at chosen moments, in the
-- places the other specs do not reach: a Condition's holder and a notified
-- waiter, waiters blocked in Lock/Semaphore/Event waits, several waiters
-- behind a killed holder, a Barrier's action runner, a producer blocked with
-- a large item, and Pool workers killed together or with callbacks pending
-- (README, "A process that dies holding a lock", "Queues and pipes", "Pools").
-- The randomized version of all this is stress/faults.lua.
--
-- As in sync_process_spec.lua: a child reports by its exit code (0: every
-- check held; 2 and up: which one failed), never by asserting.  Order comes
-- from Events, Semaphores, lock acquires and joins; `p:join(0.2)` returning
-- false is only an assertion that p is still blocked.  Every wait has a
-- timeout, and after_each kills and joins what a failed test left running.
local concur = require "concur"
local core = require "concur.core"
local support = require "support"

-- Processes and pools started by the current test; after_each ends them.
local started = support.tracker()
local pools = {}

after_each(function()
  started.cleanup()
  for _, pool in ipairs(pools) do pcall(pool.terminate, pool) end
  pools = {}
end)

-- From support.lua: go(fn, ...) starts a process on fn(...) (fn's integer
-- result is its exit code), holder(obj) one that holds obj until killed,
-- acquirer(obj) one that takes and gives back obj and gives its exit code
-- (0 when it could); finish(p, timeout) joins a process and returns its exit
-- code.
local go, holder, acquirer = started.process, started.holder, started.acquirer
local finish = support.finish

-- Kills p, which must still be running (blocked) 0.2 s on, and reaps it.
local function kill(p)
  support.kill(p, 0.2)
end

-- Asserts that Condition c serves the processes still: a new child waits on
-- it, and the parent's notify wakes it.
local function assert_notify_wakes_a_child(c)
  local waiting = concur.Event()
  local q = go(function()
    if not c:acquire(true, 5) then return 2 end
    waiting:set()                -- still held: the parent gets it once we wait
    local notified = c:wait(10)
    c:release()
    return notified and 0 or 4
  end)
  assert.is_true(waiting:wait(10))
  assert.is_true(c:acquire(true, 5))
  c:notify()
  c:release()
  assert.are.equal(0, finish(q))
end

-- Seconds fn(...) takes, and its first result.
local function timed(fn, ...)
  local t0 = concur.time()
  local v = fn(...)
  return concur.time() - t0, v
end

describe("a process killed", function()
  describe("in a Condition", function()
    it("holding a Condition over a Lock: the next acquire takes it, wait and notify go on", function()
      local c = concur.Condition(concur.Lock())
      local p = holder(c)
      assert.is_false(c:acquire(false))
      kill(p)
      local took, ok = timed(c.acquire, c, true, 5)
      assert.is_true(ok)
      assert.is_true(took < 1, "took " .. took .. " s")
      c:release()
      -- A new child waits, the parent notifies.
      assert_notify_wakes_a_child(c)
      assert.is_false(c:locked())
    end)

    it("after notify, before it had the lock back: the notifier keeps the lock, no waiter is left", function()
      local c, waiting = concur.Condition(), concur.Event()
      local p = go(function()
        if not c:acquire(true, 5) then return 2 end
        waiting:set()
        c:wait(30)                   -- notified, then blocked on the parent's lock
        c:release()
        return 3
      end)
      assert.is_true(waiting:wait(10))
      assert.is_true(c:acquire(true, 5))   -- the child is on the list, the lock released
      c:notify()
      kill(p)
      assert.is_true(c:locked())
      assert.is_truthy(tostring(c):find("count=1>", 1, true), tostring(c))
      assert.is_truthy(tostring(c):find(" waiters=0>", 1, true), tostring(c))
      c:release()
      assert.is_false(c:locked())
      -- The Condition serves the next waiter.
      assert_notify_wakes_a_child(c)
    end)
  end)

  describe("while blocked", function()
    it("in Lock.acquire: the release goes to the living waiter at once", function()
      local lock, ready = concur.Lock(), concur.Semaphore(0)
      lock:acquire()
      local dead = go(function()
        ready:release()
        lock:acquire(true, 30)
        return 3
      end)
      assert.is_true(ready:acquire(true, 10))
      kill(dead)
      local live = go(function()
        ready:release()
        if not lock:acquire(true, 10) then return 2 end
        lock:release()
        return 0
      end)
      assert.is_true(ready:acquire(true, 10))
      assert.is_false(live:join(0.2))
      local took, code = timed(function()
        lock:release()
        return finish(live)
      end)
      assert.are.equal(0, code)
      assert.is_true(took < 1, "the living waiter took " .. took .. " s")
      assert.is_false(lock:locked())
    end)

    it("in Semaphore.acquire: it takes no unit, the release goes to the living waiter", function()
      local sem, ready = concur.Semaphore(0), concur.Event()
      local dead = go(function()
        ready:set()
        sem:acquire(true, 30)
        return 3
      end)
      assert.is_true(ready:wait(10))
      kill(dead)
      ready:clear()
      local live = go(function()
        ready:set()
        return sem:acquire(true, 10) and 0 or 2
      end)
      assert.is_true(ready:wait(10))
      assert.is_false(live:join(0.2))
      sem:release()
      assert.are.equal(0, finish(live))
      assert.is_false(sem:acquire(false))  -- the one unit went to the living
      sem:release(2)
      assert.is_true(sem:acquire(false))
      assert.is_true(sem:acquire(false))
      assert.is_false(sem:acquire(false))
    end)

    it("in Event.wait: set still wakes every living waiter", function()
      local e, ready = concur.Event(), concur.Semaphore(0)
      local dead = go(function()
        ready:release()
        e:wait(30)
        return 3
      end)
      assert.is_true(ready:acquire(true, 10))
      kill(dead)
      local live = {}
      for i = 1, 2 do
        live[i] = go(function()
          ready:release()
          return e:wait(10) and 0 or 2
        end)
      end
      assert.is_true(ready:acquire(true, 10))
      assert.is_true(ready:acquire(true, 10))
      e:set()
      assert.are.equal(0, finish(live[1]))
      assert.are.equal(0, finish(live[2]))
    end)
  end)

  describe("holding a lock", function()
    it("while three processes wait: each gets the Lock in turn, never two at once", function()
      local lock, ready = concur.Lock(), concur.Semaphore(0)
      local slots = core.Slots(2)       -- 1: who is inside, 2: how many went through
      local p = holder(lock)
      local waiters = {}
      for i = 1, 3 do
        waiters[i] = go(function()
          ready:release()
          if not lock:acquire(true, 10) then return 2 end
          local me = concur.getpid()
          if slots:get(1) ~= 0 then return 3 end
          slots:set(1, me)
          for _ = 1, 20000 do if slots:get(1) ~= me then return 4 end end
          slots:set(1, 0)
          slots:set(2, slots:get(2) + 1)
          lock:release()
          return 0
        end)
      end
      for _ = 1, 3 do assert.is_true(ready:acquire(true, 10)) end
      kill(p)
      for i = 1, 3 do assert.are.equal(0, finish(waiters[i])) end
      assert.are.equal(3, slots:get(2))
      assert.is_false(lock:locked())
    end)

    it("a Semaphore unit taken by a killed holder is not given back; the rest work", function()
      -- README: "Semaphore values taken by a dead process are not given back."
      local sem = concur.Semaphore(2)
      kill(holder(sem))
      assert.is_true(sem:acquire(true, 5))
      assert.is_false(sem:acquire(true, 0.05))
      sem:release()
      assert.are.equal(0, acquirer(sem))
    end)
  end)

  describe("in a Barrier", function()
    -- Fails before the fix: the waiting party sleeps until its own timeout
    -- (for ever without one); see stress/repro-faults/barrier_action_killed.lua.
    it("running the action: the other party's wait raises BrokenBarrierError within a second", function()
      local inside, who = concur.Event(), core.Slots(1)   -- the runner's pid
      local b = concur.Barrier(2, function()
        local c = require "concur"
        who:set(1, c.getpid())
        inside:set()
        c.Event():wait(30)
      end)
      local function party()
        local ok, err = pcall(b.wait, b, 5)
        if ok then return 2 end
        return err == concur.BrokenBarrierError and 0 or 3
      end
      local ps = {go(party), go(party)}
      assert.is_true(inside:wait(10))
      local runner, other = ps[1], ps[2]
      if ps[2].pid == who:get(1) then runner, other = ps[2], ps[1] end
      assert.are.equal(who:get(1), runner.pid)
      kill(runner)
      local took, code = timed(finish, other)
      assert.are.equal(0, code)
      assert.is_true(took < 1, "the other party waited " .. took .. " s")
      -- The dead runner stays counted (README): the barrier stays broken.
      assert.is_true(b.broken)
      local ok, err = pcall(b.wait, b, 0.1)
      assert.is_false(ok)
      assert.are.equal(concur.BrokenBarrierError, err)
    end)
  end)

  describe("in Queue.put", function()
    it("blocked with a 100 KiB item on a full queue: nothing of it arrives, large items after it are intact", function()
      local q, ready = concur.Queue(2), concur.Event()
      q:put("a")
      q:put("b")
      local p = go(function()
        ready:set()
        q:put(string.rep("x", 100000) .. "dead", true, 30)
        return 3
      end)
      assert.is_true(ready:wait(10))
      kill(p)
      assert.are.equal("a", q:get(true, 5))
      assert.are.equal("b", q:get(true, 5))
      local ok, err = pcall(q.get, q, true, 0.2)
      assert.is_false(ok)
      assert.are.equal(concur.Empty, err)
      -- A child puts three large items, the parent gets them whole.
      local sizes = {70000, 200000, 65536}
      local r = go(function()
        for i, n in ipairs(sizes) do q:put(string.rep(string.char(64 + i), n), true, 10) end
        return 0
      end)
      for i, n in ipairs(sizes) do
        assert.are.equal(string.rep(string.char(64 + i), n), q:get(true, 10))
      end
      assert.are.equal(0, finish(r))
      assert.are.equal(0, q:qsize())
    end)
  end)

  -- A getter spins a while before it sleeps, counted in the queue with a
  -- lease it renews (src/queue.c, wake_getter): a putter that sees a live
  -- spinner wakes nobody, the spinner takes the item.  One killed mid-spin
  -- stays counted for ever; once its lease has run out (10 µs) a put must
  -- wake a sleeping getter at once, not at that sleeper's next look (every
  -- second).  Without the lease each put below waited ~0.95 s.
  describe("in Queue.get while it spins for an item", function()
    it("a put afterwards still wakes a sleeping getter at once", function()
      local out, code = support.shell(support.fixture_command("queue_spin_kill.lua") .. " 2>&1")
      assert.are.equal(0, code, out)
      local n = 0
      for s in out:gmatch("woken ([%d.]+)") do
        n = n + 1
        assert.is_true(tonumber(s) < 0.5, "woken " .. s .. " s after the put\n" .. out)
      end
      assert.are.equal(5, n, out)
    end)
  end)

  describe("in a Pool", function()
    it("both workers killed while running tasks: those two fail, every queued task after them succeeds", function()
      local pool = concur.Pool(2)
      pools[#pools + 1] = pool
      local pids, hold = concur.Queue(), concur.Event()
      local rs = {}
      for i = 1, 2 do
        rs[i] = pool:apply_async(function()
          pids:put(require("concur").getpid())
          hold:wait(30)
          return "survived"
        end)
      end
      for i = 3, 20 do rs[i] = pool:apply_async(function(x) return x * x end, {i}) end
      local killed = {}
      for _ = 1, 2 do
        local pid = pids:get(true, 10)
        killed[pid] = true
        assert.is_true(support.execute("kill -9 " .. pid))
      end
      for i = 1, 2 do
        local ok, e = pcall(rs[i].get, rs[i], 10)
        assert.is_false(ok)
        assert.is_true(e ~= concur.TimeoutError, "the death was not seen in 10 s")
        assert.is_truthy(tostring(e):find("was killed by signal 9", 1, true), tostring(e))
      end
      for i = 3, 20 do assert.are.equal(i * i, rs[i]:get(10)) end
      -- Two new workers, both alive.
      local seen = {}
      for _ = 1, 20 do seen[pool:apply(require("concur").getpid)] = true end
      for pid in pairs(seen) do assert.is_nil(killed[pid]) end
      pool:close()
      pool:join()
    end)

    it("a worker killed under apply_async with callbacks: its error_callback runs once, every other callback runs", function()
      local pool = concur.Pool(2)
      pools[#pools + 1] = pool
      local pids, hold = concur.Queue(), concur.Event()
      local oks, errs = {}, {}
      local victim = pool:apply_async(function()
        pids:put(require("concur").getpid())
        hold:wait(30)
        return "survived"
      end, nil, function(v) oks[#oks + 1] = v end, function(e) errs[#errs + 1] = tostring(e) end)
      local rs = {}
      for i = 1, 10 do
        rs[i] = pool:apply_async(function(x) return x + 100 end, {i},
          function(v) oks[#oks + 1] = v end, function(e) errs[#errs + 1] = tostring(e) end)
      end
      local pid = pids:get(true, 10)
      assert.is_true(support.execute("kill -9 " .. pid))
      assert.is_true(victim:wait(10), "the death was not seen in 10 s")
      assert.is_false(victim:successful())
      pool:close()
      pool:join()
      assert.are.equal(1, #errs)
      assert.is_truthy(errs[1]:find(("pid %d) was killed by signal 9"):format(pid), 1, true), errs[1])
      table.sort(oks)
      local want = {}
      for i = 1, 10 do want[i] = i + 100 end
      assert.are.same(want, oks)
    end)
  end)

  -- Its parent, reaping it, gives back the references the child inherited
  -- and still held (the ledger, src/object.c): before, each kill kept every
  -- object the parent could reach at the fork, here a Queue holding 100 KB.
  describe("gives back what it inherited", function()
    for _, how in ipairs{"kill", "terminate", "a crash"} do
      it("when ended by " .. how, function()
        local before = support.shm_in_use()
        for _ = 1, 5 do
          local q, lock, ready = concur.Queue(), concur.Lock(), concur.Event()
          q:put(string.rep("x", 100000))
          -- Not in `started`: its target would keep q alive in the parent.
          -- A daemon, so that a failed test leaves no child behind.
          local p = concur.Process{daemon = true, target = function()
            local _ = {q, lock}   -- held by the child, as its own handles
            ready:set()
            concur.Event():wait(30)
          end}
          p:start()
          assert.is_true(ready:wait(10))
          if how == "kill" then
            p:kill()
          elseif how == "terminate" then
            p:terminate()
          else   -- SIGABRT, as abort() would: sanitizers catch SIGSEGV themselves
            assert.is_true(support.execute("kill -ABRT " .. p.pid))
          end
          assert.is_true(p:join(10))
          assert.is_true(p.exitcode < 0, "exit code " .. tostring(p.exitcode))
        end
        collectgarbage()
        local after = support.shm_in_use()
        -- Each child also made an Event after the fork: that one is kept.
        assert.is_true(after - before < 20000,
          ("in use %d before, %d after 5 killed children"):format(before, after))
      end)
    end

    -- Not a signal, but no exit path either: os.exit in a thread ends the
    -- child without child_leave.  Not under a sanitizer: ThreadSanitizer
    -- cannot follow a thread started in a child of a multi-threaded process
    -- (see process_spec), and LeakSanitizer checks that child's exit (a copy
    -- of busted's process, its other threads gone) and fails it.
    local it_plain = os.getenv("CONCUR_SANITIZER") and pending or it
    it_plain("when one of its threads calls os.exit", function()
      local before = support.shm_in_use()
      for _ = 1, 3 do
        local q = concur.Queue()
        q:put(string.rep("z", 100000))
        local p = concur.Process{daemon = true, target = function()
          local _ = q
          local t = concur.Thread{target = function() os.exit(0) end}
          t:start()
          t:join()
        end}
        p:start()
        assert.is_true(p:join(10))
        assert.are.equal(0, p.exitcode)
      end
      local after = support.shm_in_use()
      assert.is_true(after - before < 20000,
        ("in use %d before, %d after 3 children"):format(before, after))
    end)
  end)
end)

-- Kills at one exact instruction need a debugger: these reproducers stop a
-- child with gdb on the line between the store and the wake (or after a
-- get's journal) and kill it there.  Skipped without gdb or under a sanitizer.
describe("killed at an exact instruction (gdb)", function()
  local has_gdb = support.execute("command -v gdb >/dev/null 2>&1")
  local it_gdb = (has_gdb and os.getenv("CONCUR_SANITIZER") == nil) and it or pending
  local root = support.spec_dir .. "../stress/repro-faults/"
  for _, name in ipairs({"killed_between_store_and_wake", "queue_dead_getter_journal"}) do
    it_gdb(name .. ": the waiters wake and nothing stays wedged", function()
      local q = support.shell_quote
      local p = assert(io.popen(table.concat({"LUA_PATH=" .. q(package.path),
        "LUA_CPATH=" .. q(package.cpath), "timeout -k 5 120", q(support.LUA),
        q(root .. name .. ".lua"), "2>&1"}, " ")))
      local out = p:read("*a")
      p:close()
      assert.truthy(out:find(name .. ": OK", 1, true), out)
    end)
  end
end)
