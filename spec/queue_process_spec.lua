-- spec/queue_process_spec.lua: concur.Queue of src/queue.c between processes
-- (API.md, "Queues and pipes" and "Processes"): a queue made before a fork
-- is the same queue in parent and child, a queue made in a child can be sent
-- to its parent, items of every size cross both ways, a process killed in
-- the middle of a put or a get never leaves the queue locked or loses a
-- committed item, and many producers and consumers lose or duplicate nothing.
-- The single-process API is queue_spec.lua's business.
--
-- A child forked here runs on a copy of busted's state: it reports by its
-- exit code (0: all it checked held; 2 and up: which check failed; 1: an
-- uncaught error, with its traceback on stderr) or through another Queue,
-- never by asserting.  Order comes from Events, Queues and joins; a state the
-- parent must see before it acts (a queue filling up) is polled with
-- concur.sleep(0.001) between looks.  Every wait in a child has a timeout,
-- and after_each kills and joins whatever a failed test left running, so a
-- failure never hangs the suite.
local concur = require "concur"
local support = require "support"
local mtype = support.mtype   -- cross to threads with the functions that use them

-- None of these children starts a thread, and no thread is running when one
-- is forked, so every test runs under both sanitizers as it is.

-- Processes started by the current test; after_each ends the leftovers.
local started = support.tracker()
after_each(started.cleanup)

-- From support.lua: go(fn, ...) starts a process on fn(...) (fn's integer
-- result is its exit code), finish(p, timeout) joins it and returns its exit
-- code, eventually(pred, timeout) polls pred; big_string(n, seed),
-- big_table(n, tag) and check_big(t, n, tag) make and check big items.
local go, finish, eventually = started.process, support.finish, support.eventually
local big_string, big_table, check_big = support.big_string, support.big_table, support.check_big

-- The items both directions send, and the check of each one got: returns
-- nil when it holds, else the index of the first that does not.
local function sample_items(lock)
  local cyc = {name = "cyc"}
  cyc.self = cyc
  local k = 6
  return {
    n = 9,
    nil,
    2.0,
    "a\0b",
    cyc,
    function(x) return x * k end,
    {lock = lock, err = concur.Full},
    big_string(1024 * 1024, 5),
    big_table(10000, "t"),
    {lock, big_string(20000, 6)},
  }
end

local function check_sample(got, lock)
  local checks = {
    function(v) return v == nil end,
    function(v) return mtype(v) == support.INTEGRAL_FLOAT and v == 2.0 end,
    function(v) return v == "a\0b" end,
    function(v) return type(v) == "table" and rawequal(v, v.self) and v.name == "cyc" end,
    function(v) return type(v) == "function" and v(7) == 42 end,
    function(v) return rawequal(v.lock, lock) and rawequal(v.err, concur.Full) end,
    function(v) return v == big_string(1024 * 1024, 5) end,
    function(v) return check_big(v, 10000, "t") end,
    function(v) return rawequal(v[1], lock) and v[2] == big_string(20000, 6) end,
  }
  for i, check in ipairs(checks) do
    local ok, res = pcall(check, got[i])
    if not (ok and res) then return i end
  end
  return nil
end

-- In a child: a Thread object made at the top of a heap grown well past
-- what any other process of the family has mapped there.  Garbage collected
-- first and then no more, and Threads made first, so that the last one
-- cannot take the place of one freed here (whose old bytes the other
-- process would still have).
local function thread_at_heap_top()
  collectgarbage()
  collectgarbage()
  collectgarbage("stop")
  local grow = {}
  for i = 1, 200000 do grow[i] = {i} end
  for i = 1, 2000 do grow[i] = concur.Thread{target = print} end
  _G.QUEUE_SPEC_GROWN = grow
  return concur.Thread{target = print}
end

-- Bytes in use in the shared arena, garbage collected first, and how far
-- above its start it may end.
local in_use = support.shm_in_use

-- Gets from q until `stop` comes (raw equality), at most `max` items; returns
-- the list of what came before it and whether `stop` came.
local function drain_until(q, stop, max)
  local got = {}
  for _ = 1, max do
    local v = q:get(true, 10)
    if v == stop then return got, true end
    got[#got + 1] = v
  end
  return got, false
end

-- After a kill: everything q holds, in order.  What is there is got first
-- (a bounded queue may be full), then an end mark is put and got: a put takes
-- the producers' lock, and so commits an item a killed producer had left
-- half-way (journaled) before the mark.
local function drain_after_kill(q)
  local got = {}
  while true do
    local ok, v = pcall(q.get_nowait, q)
    if not ok then
      assert.are.equal(concur.Empty, v)
      break
    end
    got[#got + 1] = v
  end
  q:put("end", true, 5)
  local rest, ended = drain_until(q, "end", 1000000)
  assert.is_true(ended, "no end mark")
  for _, v in ipairs(rest) do got[#got + 1] = v end
  assert.is_true(q:empty())
  return got
end

-- Whether list is exactly from, from+1, ..., to.
local function is_run(list, from, to)
  if #list ~= to - from + 1 then return false end
  for i, v in ipairs(list) do
    if v ~= from + i - 1 then return false end
  end
  return true
end

describe("concur.Queue between processes", function()
  describe("a queue made before the fork", function()
    it("carries items of every kind and size from the parent to a child", function()
      local q, lock = concur.Queue(), concur.Lock()
      local p = go(function()
        local got = {}
        for i = 1, 9 do
          local ok, v = pcall(q.get, q, true, 10)
          if not ok then return 20 + i end
          got[i] = v
        end
        local bad = check_sample(got, lock)
        if bad then return 2 + bad end
        if not q:empty() then return 19 end
        return 0
      end)
      local items = sample_items(lock)
      for i = 1, items.n do q:put(items[i]) end
      assert.are.equal(0, finish(p))
      assert.is_true(q:empty())
    end)

    it("carries items of every kind and size from a child to the parent", function()
      local q, lock = concur.Queue(), concur.Lock()
      local p = go(function()
        local items = sample_items(lock)
        for i = 1, items.n do q:put(items[i]) end
        return 0
      end)
      local got = {}
      for i = 1, 9 do got[i] = q:get(true, 10) end
      assert.is_nil(check_sample(got, lock))
      assert.are.equal(0, finish(p))
      assert.is_true(q:empty())
      -- The lock is the parent's own: the child's item held a reference, not a copy.
      lock:acquire()
      local p2 = go(function()
        q:put(lock)
        return 0
      end)
      assert.are.equal(0, finish(p2))
      assert.is_true(q:get(true, 10):locked())
      lock:release()
    end)

    it("works both ways at once: 300 requests and replies, small and large", function()
      local requests, replies = concur.Queue(4), concur.Queue(4)
      local p = go(function()
        for _ = 1, 300 do
          local ok, r = pcall(requests.get, requests, true, 10)
          if not ok then return 2 end
          if r == nil then return 0 end
          replies:put({r[1] * 2, #r[2]}, true, 10)
        end
        return 3
      end)
      for i = 1, 299 do
        requests:put({i, i % 10 == 0 and big_string(50000, i) or "x"})
        local r = replies:get(true, 10)
        assert.are.same({i * 2, i % 10 == 0 and 50000 or 1}, r)
      end
      requests:put(nil)
      assert.are.equal(0, finish(p))
    end)

    it("a bounded queue blocks both ways between processes, and keeps the order", function()
      local q = concur.Queue(2)
      local p = go(function()
        for i = 1, 2000 do q:put(i, true, 10) end
        -- Now the parent's gets block until these come.
        for i = 1, 5 do q:put(("last %d"):format(i), true, 10) end
        return 0
      end)
      for i = 1, 2000 do
        local v = q:get(true, 10)
        if v ~= i then assert.are.equal(i, v) end
      end
      for i = 1, 5 do assert.are.equal(("last %d"):format(i), q:get(true, 10)) end
      assert.are.equal(0, finish(p))
      assert.is_true(q:empty())
    end)

    it("a child blocked in put on a full queue is released by the parent's get", function()
      local q, tried = concur.Queue(1), concur.Event()
      q:put("first")
      local p = go(function()
        local ok, e = pcall(q.put, q, "x", false)
        if ok or not (e == concur.Full) then return 2 end
        tried:set()
        q:put("second", true, 10)
        return 0
      end)
      assert.is_true(tried:wait(10))
      assert.is_false(p:join(0.05))   -- blocked: the queue is full
      assert.are.equal("first", q:get())
      assert.are.equal(0, finish(p))
      assert.are.equal("second", q:get(true, 10))
    end)

    it("a child blocked in get is released by the parent's put; Empty and Full are the child's own", function()
      local q, b, tried = concur.Queue(), concur.Queue(1), concur.Event()
      local p = go(function()
        local t0 = concur.time()
        local ok, e = pcall(q.get, q, true, 0.05)
        local took = concur.time() - t0
        if ok or not (e == concur.Empty) or tostring(e) ~= "concur.Empty" then return 2 end
        if took < 0.04 or took > 2 then return 3 end
        b:put(1)
        local ok2, e2 = pcall(b.put, b, 2, true, 0.05)
        if ok2 or not (e2 == concur.Full) then return 4 end
        tried:set()
        local v = q:get(true, 10)
        return v == "go" and 0 or 5
      end)
      assert.is_true(tried:wait(10))
      assert.is_false(p:join(0.05))
      q:put("go")
      assert.are.equal(0, finish(p))
      assert.are.equal(1, b:get_nowait())
      assert.is_true(b:empty())
    end)

    it("qsize, empty and full are the same seen from either side", function()
      local q, step, back = concur.Queue(3), concur.Event(), concur.Event()
      q:put("a")
      local p = go(function()
        if q:qsize() ~= 1 or q:empty() or q:full() then return 2 end
        q:put("b"); q:put("c")
        step:set()
        if not back:wait(10) then return 3 end
        if q:qsize() ~= 0 or not q:empty() or q:full() then return 4 end
        return 0
      end)
      assert.is_true(step:wait(10))
      assert.are.same({3, false, true}, {q:qsize(), q:empty(), q:full()})
      assert.are.equal("<concur.Queue size=3 maxsize=3>", tostring(q))
      assert.are.same({"a", "b", "c"}, {q:get(), q:get(), q:get()})
      back:set()
      assert.are.equal(0, finish(p))
    end)

    it("join in the parent waits for a child's task_done calls", function()
      local q, results = concur.Queue(), concur.Queue()
      for i = 1, 50 do q:put(i) end
      local p = go(function()
        for _ = 1, 50 do
          local ok, v = pcall(q.get, q, true, 10)
          if not ok then return 2 end
          results:put(v * 10)
          q:task_done()
        end
        local ok, e = pcall(q.task_done, q)
        if ok or not tostring(e):find("task_done() called too many times", 1, true) then return 3 end
        return 0
      end)
      q:join()
      assert.are.equal(50, results:qsize())   -- every task was done before join returned
      assert.are.equal(0, finish(p))
    end)

    it("join in a child waits for the parent's task_done calls", function()
      local q, joining = concur.Queue(), concur.Event()
      for i = 1, 3 do q:put(i) end
      local p = go(function()
        joining:set()
        q:join()
        return q:qsize() == 0 and 0 or 2
      end)
      assert.is_true(joining:wait(10))
      for _ = 1, 3 do q:get() end
      q:task_done(); q:task_done()
      assert.is_false(p:join(0.05))   -- one task left
      q:task_done()
      assert.are.equal(0, finish(p))
    end)
  end)

  describe("a queue made in a child", function()
    it("sent to the parent through another queue works both ways, and after the child ends", function()
      local qa = concur.Queue()
      local p = go(function()
        local inbox, outbox = concur.Queue(), concur.Queue(2)
        outbox:put("made in the child")
        qa:put({inbox = inbox, outbox = outbox})
        for _ = 1, 3 do
          local ok, v = pcall(inbox.get, inbox, true, 10)
          if not ok then return 2 end
          outbox:put({echo = v}, true, 10)
        end
        inbox:put("left for the parent")
        outbox:put(big_string(100000, 9), true, 10)
        return 0
      end)
      local boxes = qa:get(true, 10)
      assert.are.equal("<concur.Queue size=1 maxsize=2>", tostring(boxes.outbox))
      assert.are.equal("made in the child", boxes.outbox:get(true, 10))
      boxes.inbox:put("small")
      boxes.inbox:put(big_string(20000, 1))
      boxes.inbox:put(nil)
      assert.are.same({echo = "small"}, boxes.outbox:get(true, 10))
      assert.are.same({echo = big_string(20000, 1)}, boxes.outbox:get(true, 10))
      local last = boxes.outbox:get(true, 10)
      assert.are.equal("table", type(last))
      assert.is_nil(last.echo)
      assert.are.equal(0, finish(p))
      -- The child has ended: its queues are the parent's to use.
      assert.are.equal("left for the parent", boxes.inbox:get(true, 10))
      assert.is_true(boxes.outbox:get(true, 10) == big_string(100000, 9))
      boxes.inbox:put("again")
      assert.are.equal("again", boxes.inbox:get())
      -- And another child can use them.
      local p2 = go(function()
        boxes.outbox:put("from the second child")
        local ok, v = pcall(boxes.inbox.get, boxes.inbox, true, 10)
        return (ok and v == "to the second child") and 0 or 2
      end)
      boxes.inbox:put("to the second child")
      assert.are.equal("from the second child", boxes.outbox:get(true, 10))
      assert.are.equal(0, finish(p2))
    end)

    it("is the same Lua value each time it comes back to the parent", function()
      local qa = concur.Queue()
      local p = go(function()
        local mine = concur.Queue()
        qa:put(mine)
        qa:put({again = mine})
        return 0
      end)
      local a = qa:get(true, 10)
      local b = qa:get(true, 10)
      assert.is_true(rawequal(a, b.again))
      assert.are.equal(0, finish(p))
    end)
  end)

  describe("Thread handles in items", function()
    -- The Thread is made in a child, which forks the receiver: a reference
    -- given away to another process is not given back, and in this process
    -- it would show as a leak under AddressSanitizer.
    it("a Thread made before the fork, got in a child, raises there and the queue goes on", function()
      local q = concur.Queue()
      local sender = go(function()
        local th = concur.Thread{target = print}
        q:put({th = th})
        q:put("next")
        q:put({pad = big_string(20000, 2), main = concur.current_thread()})   -- a large item
        q:put("next2")
        local receiver = concur.Process{target = function()
          for i, want in ipairs({"next", "next2"}) do
            local ok, e = pcall(q.get, q, true, 10)
            if ok then os.exit(2 * i) end
            if not tostring(e):find("belongs to the process that sent it", 1, true) then
              os.exit(2 * i + 1)
            end
            local ok2, v = pcall(q.get, q, true, 10)
            if not ok2 or v ~= want then os.exit(10 + i) end
          end
          q:put("receiver done")
          os.exit(q:qsize() == 1 and 0 or 20)
        end}
        receiver:start()
        if not receiver:join(20) then receiver:kill(); return 30 end
        if receiver.exitcode ~= 0 then return 40 + receiver.exitcode end
        local ok, v = pcall(q.get, q, true, 5)
        if not ok or v ~= "receiver done" then return 31 end
        -- In its own process it is got as itself.
        q:put({th = th})
        if not rawequal(th, q:get(true, 5).th) then return 32 end
        return 0
      end)
      assert.are.equal(0, finish(sender))
      assert.is_true(q:empty())
    end)

    -- A child that crashes shows here as an exit code of -11 (SIGSEGV), or
    -- 66 under a sanitizer.  The Thread is made in a child, not here: a
    -- reference this process gave away and never got back would show as a
    -- leak of this process under AddressSanitizer.
    local function thread_to_sibling(large)
      local q, ready = concur.Queue(), concur.Event()
      -- The receiver is forked before the Thread exists: it must not read it.
      local receiver = go(function()
        local ok, e = pcall(q.get, q, true, 10)
        if ok then return 2 end
        if not tostring(e):find("belongs to the process that sent it", 1, true) then return 3 end
        local ok2, v = pcall(q.get, q, true, 10)
        return (ok2 and v == "next") and 0 or 4
      end)
      local sender = go(function()
        local th = thread_at_heap_top()
        q:put(large and {th = th, pad = big_string(20000, 3)} or {th = th})
        q:put("next")
        ready:set()
        return 0
      end)
      assert.is_true(ready:wait(10))
      assert.are.equal(0, finish(sender))
      return finish(receiver)
    end

    it("a Thread made in a child, got by another process, raises there", function()
      -- Regression (failed at 5409c69, fixed by 76cfce4): the receiving
      -- process read the sender's Thread object through a pointer into the
      -- sender's private memory (local_type and release_view in
      -- src/transfer.c) before looking at the pid, and died with SIGSEGV.
      assert.are.equal(0, thread_to_sibling(false))
    end)

    it("a Thread made in a child, got by another process in a large item, raises there", function()
      -- Regression (as above): the same for a large item (sblob), through
      -- transfer_decode_taking -> local_type and sblob_free.
      assert.are.equal(0, thread_to_sibling(true))
    end)

    it("a queue collected in a process with another process's Thread left inside", function()
      local qa, ready = concur.Queue(), concur.Event()
      -- The last holder of qx is `owner`: it collects it with the item inside.
      local owner = go(function()
        local qx = concur.Queue()
        qa:put(qx)
        if not ready:wait(10) then return 2 end
        if qx:qsize() ~= 1 then return 3 end
        qx = nil   -- luacheck: ignore
        collectgarbage()
        collectgarbage()
        return 0
      end)
      local sender = go(function()
        local ok, qx = pcall(qa.get, qa, true, 10)
        if not ok then return 2 end
        qx:put({th = thread_at_heap_top()})
        return 0
      end)
      assert.are.equal(0, finish(sender))
      ready:set()
      -- Regression (failed at 5409c69, fixed by 76cfce4): queue_destroy ->
      -- rec_release (src/queue.c) read objs[i]->type->shared of the sender's
      -- Thread before comparing the pid, and the owner died with SIGSEGV.
      assert.are.equal(0, finish(owner))
    end)
  end)

  describe("a process killed in the middle", function()
    it("while blocked in get: the queue stays usable, and no item goes to the dead", function()
      local q, ready = concur.Queue(), concur.Semaphore(0)
      local victim = go(function()
        ready:release()
        q:get()
        return 2
      end)
      local other = go(function()
        ready:release()
        local ok, v = pcall(q.get, q, true, 20)
        return (ok and v == "for the living") and 0 or 3
      end)
      assert.is_true(ready:acquire(true, 10))
      assert.is_true(ready:acquire(true, 10))
      assert.is_false(victim:join(0.1))
      victim:kill()
      assert.are.equal(-9, finish(victim))
      q:put("for the living")
      assert.are.equal(0, finish(other))
      q:put("x"); q:put("y")
      assert.are.same({"x", "y"}, {q:get(true, 5), q:get(true, 5)})
      assert.is_true(q:empty())
    end)

    it("while blocked in put on a full queue: the queue stays usable, nothing half put", function()
      local q = concur.Queue(4)
      local p = go(function()
        for i = 1, 1000 do q:put(i) end
        return 2
      end)
      assert.is_true(eventually(function() return q:full() end))
      assert.is_false(p:join(0.1))
      p:kill()
      assert.are.equal(-9, finish(p))
      assert.are.same({1, 2, 3, 4}, {q:get(true, 5), q:get(true, 5), q:get(true, 5), q:get(true, 5)})
      assert.is_false(pcall(q.get, q, false))
      q:put("a", true, 5)
      assert.are.equal("a", q:get(true, 5))
    end)

    -- A child puts 1, 2, 3, ... until killed; each round on the same queue.
    -- Whatever the moment of the kill, the parent then gets an unbroken run
    -- 1..k, k at least what it had seen, and the queue works on.
    local function killed_producer(q, large_every, rounds)
      for round = 1, rounds do
        local p = go(function()
          local i = 0
          while true do
            i = i + 1
            if large_every and i % large_every == 0 then
              q:put({i, big_string(9000 + i % 3000, i)})
            else
              q:put(i)
            end
          end
        end)
        local want = 500 + round * 300
        assert.is_true(eventually(function() return q:qsize() >= want end, 20))
        p:kill()
        assert.are.equal(-9, finish(p))
        local got = drain_after_kill(q)
        for i, v in ipairs(got) do
          if type(v) == "table" then
            if v[2] ~= big_string(9000 + v[1] % 3000, v[1]) then
              error(("round %d: large item %d damaged"):format(round, v[1]))
            end
            got[i] = v[1]
          end
        end
        assert.is_true(#got >= want, ("round %d: only %d items after the kill"):format(round, #got))
        assert.is_true(is_run(got, 1, #got), ("round %d: not a run 1..%d"):format(round, #got))
      end
      q:put("still")
      assert.are.equal("still", q:get(true, 5))
    end

    it("while putting small items in a tight loop: every committed item is there, in order", function()
      killed_producer(concur.Queue(), nil, 10)
    end)

    it("while putting small and large items in a tight loop", function()
      killed_producer(concur.Queue(), 3, 8)
    end)

    it("while putting to a bounded queue the parent empties at the same time", function()
      local q = concur.Queue(64)
      for round = 1, 6 do
        local p = go(function()
          local i = 0
          while true do
            i = i + 1
            q:put(i % 5 == 0 and {i, big_string(10000, i)} or i)
          end
        end)
        local got = {}
        while #got < 3000 do
          local v = q:get(true, 10)
          got[#got + 1] = type(v) == "table" and v[1] or v
        end
        p:kill()
        assert.are.equal(-9, finish(p))
        for _, v in ipairs(drain_after_kill(q)) do got[#got + 1] = type(v) == "table" and v[1] or v end
        assert.is_true(is_run(got, 1, #got), ("round %d: not a run 1..%d"):format(round, #got))
      end
    end)

    it("while getting in a tight loop: what is left is an unbroken tail", function()
      local N = 20000
      local q = concur.Queue()
      for round = 1, 5 do
        for i = 1, N do q:put(i % 7 == 0 and {i, big_string(9000, i)} or i) end
        local p = go(function()
          while true do q:get(true, 10) end
        end)
        assert.is_true(eventually(function() return q:qsize() <= N - 3000 * round end, 20))
        p:kill()
        assert.are.equal(-9, finish(p))
        local left = drain_after_kill(q)
        for i, v in ipairs(left) do left[i] = type(v) == "table" and v[1] or v end
        assert.is_true(#left <= N - 3000 * round)
        assert.is_true(is_run(left, N - #left + 1, N),
          ("round %d: the %d left are not the tail"):format(round, #left))
      end
    end)
  end)

  describe("many processes", function()
    it("2 producer and 2 consumer processes on a Queue(64): every item exactly once", function()
      local P, C, N = 2, 2, 6000
      local q, results = concur.Queue(64), concur.Queue()
      local consumers = {}
      for c = 1, C do
        consumers[c] = go(function()
          local got, last, disorder = {}, {}, 0
          while true do
            local ok, item = pcall(q.get, q, true, 20)
            if not ok then return 2 end
            if item == nil then break end
            local p, i = item[1], item[2]
            if last[p] and i <= last[p] then disorder = disorder + 1 end
            last[p] = i
            got[#got + 1] = p * 1000000 + i
          end
          results:put({consumer = c, got = got, disorder = disorder})
          return 0
        end)
      end
      local producers = {}
      for p = 1, P do
        producers[p] = go(function()
          for i = 1, N do
            -- Some large items, so both paths are in the race.
            q:put(i % 97 == 0 and {p, i, big_string(12000, i)} or {p, i}, true, 20)
          end
          return 0
        end)
      end
      for p = 1, P do assert.are.equal(0, finish(producers[p], 60)) end
      for _ = 1, C do q:put(nil) end
      local seen, dup, total, disorder = {}, 0, 0, 0
      for _ = 1, C do
        local r = results:get(true, 60)
        disorder = disorder + r.disorder
        for _, code in ipairs(r.got) do
          if seen[code] then dup = dup + 1 end
          seen[code] = true
          total = total + 1
        end
      end
      for c = 1, C do assert.are.equal(0, finish(consumers[c], 60)) end
      local missing = 0
      for p = 1, P do
        for i = 1, N do if not seen[p * 1000000 + i] then missing = missing + 1 end end
      end
      assert.are.same({dup = 0, missing = 0, total = P * N, disorder = 0},
        {dup = dup, missing = missing, total = total, disorder = disorder})
      assert.is_true(q:empty())
    end)

    it("the arena comes back after children put and got many small and large items", function()
      local q = concur.Queue(16)
      local start = in_use()
      local p = go(function()
        for i = 1, 3000 do
          q:put(i % 3 == 0 and {i, big_string(15000, i)} or {i, concur.Lock()}, true, 20)
        end
        -- Queues made here and left with items: given back when this child ends.
        for i = 1, 50 do
          local mine = concur.Queue()
          mine:put({i, concur.Event()})
          mine:put(big_string(30000, i))
        end
        return 0
      end)
      for i = 1, 3000 do
        local item = q:get(true, 20)
        if item[1] ~= i then assert.are.equal(i, item[1]) end
      end
      assert.are.equal(0, finish(p))
      support.assert_shm_back(start)
    end)
  end)
end)
