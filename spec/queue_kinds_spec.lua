-- spec/queue_kinds_spec.lua: LifoQueue, PriorityQueue, SimpleQueue, the
-- maxsize attribute and shutdown (Python 3.13's queue), between threads and
-- processes, and processes killed (SIGKILL) in the middle of their calls.
-- Order comes from Events, joins and the queues themselves; every wait has a
-- timeout, and after_each ends what a failed test left running.
local concur = require "concur"
local support = require "support"

local started = support.tracker()
after_each(function() started.cleanup() end)
local go, finish, eventually = started.process, support.finish, support.eventually
local TSAN = os.getenv("CONCUR_SANITIZER") == "thread"
local err_of, assert_has = support.err_of, support.assert_has

-- Every item q holds, got without blocking.
local function drain(q)
  local got = {}
  while true do
    local ok, v = pcall(q.get_nowait, q)
    if not ok then
      assert.are.equal(concur.Empty, v)
      return got
    end
    got[#got + 1] = v
  end
end

local function firsts(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = type(v) == "table" and v[1] or v end
  return out
end

describe("concur.LifoQueue", function()
  it("gives the last item put first, and has Queue's interface", function()
    local q = concur.LifoQueue()
    for i = 1, 5 do q:put(i) end
    assert.are.equal(5, q:qsize())
    assert.are.same({5, 4, 3, 2, 1}, drain(q))
    assert.is_true(q:empty())
    q:put("a"); q:put({"b"})
    assert.are.same({"b"}, q:get())
    assert.are.equal("a", q:get_nowait())
    assert.are.equal(concur.Empty, select(2, pcall(q.get, q, true, 0.01)))
    for _ = 1, 2 do q:task_done() end
    for _ = 1, 5 do q:task_done() end
    q:join()
    assert.has_error(function() q:task_done() end)
  end)

  it("is bounded by maxsize: full, Full, a blocked put goes on when an item is taken", function()
    local q = concur.LifoQueue(2)
    assert.are.equal(2, q.maxsize)
    q:put(1); q:put(2)
    assert.is_true(q:full())
    assert.are.equal(concur.Full, select(2, pcall(q.put_nowait, q, 3)))
    local t = concur.Thread{target = function() q:put(3, true, 10); return "put" end}
    t:start()
    assert.are.equal(2, q:get(true, 5))
    assert.are.equal("put", t:result())
    assert.are.same({3, 1}, drain(q))
    assert.are.equal("<concur.LifoQueue size=0 maxsize=2>", tostring(q))
  end)

  it("keeps large items and concur objects intact", function()
    local q, lock = concur.LifoQueue(), concur.Lock()
    local big = support.big_string(100000, 7)
    q:put(big); q:put({lock = lock})
    assert.are.equal(lock, q:get().lock)
    assert.are.equal(big, q:get())
  end)
end)

describe("concur.PriorityQueue", function()
  it("gives the lowest priority first: numbers, strings, tables by their [1]", function()
    local q = concur.PriorityQueue()
    for _, v in ipairs{5, 3, 9, 1, 3.5, -2, 7, 0} do q:put(v) end
    assert.are.same({-2, 0, 1, 3, 3.5, 5, 7, 9}, drain(q))
    for _, v in ipairs{"pear", "apple", "fig", "", "applf"} do q:put(v) end
    assert.are.same({"", "apple", "applf", "fig", "pear"}, drain(q))
    q:put({2, "two"}); q:put({1, "one"}); q:put({3, "three"}); q:put(1.5)
    assert.are.same({{1, "one"}, 1.5, {2, "two"}, {3, "three"}}, drain(q))
  end)

  it("gives equal priorities in the order they were put", function()
    local q = concur.PriorityQueue()
    for i = 1, 50 do q:put({i % 3, i}) end
    local got = drain(q)
    local last = {}
    for k, v in ipairs(got) do
      if k > 1 then assert.is_true(got[k - 1][1] <= v[1]) end
      if last[v[1]] then assert.is_true(last[v[1]] < v[2], "equal priorities out of order") end
      last[v[1]] = v[2]
    end
    assert.are.equal(50, #got)
  end)

  it("compares integers and floats exactly, as Lua's < does", function()
    if not support.has_integers then
      pending("no integer subtype on this runtime")
      return
    end
    local q = concur.PriorityQueue()
    local big = math.tointeger(2 ^ 53)
    q:put(big + 1); q:put(2.0 ^ 53); q:put(big - 1); q:put(math.maxinteger); q:put(math.huge)
    q:put(-math.huge); q:put(math.mininteger)
    local got = drain(q)
    assert.are.equal(-math.huge, got[1])
    assert.are.equal(math.mininteger, got[2])
    assert.are.equal(big - 1, got[3])
    assert.are.equal(2.0 ^ 53, got[4])
    assert.are.equal(big + 1, got[5])
    assert.are.equal(math.maxinteger, got[6])
    assert.are.equal(math.huge, got[7])
  end)

  it("sorts 20 000 items put in a shuffled order", function()
    local q, n = concur.PriorityQueue(), 20000
    local order = {}
    for i = 1, n do order[i] = i end
    local seed = 12345
    for i = n, 2, -1 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      local j = seed % i + 1
      order[i], order[j] = order[j], order[i]
    end
    for i = 1, n do q:put(order[i]) end
    for i = 1, n do assert.are.equal(i, q:get_nowait()) end
    assert.is_true(q:empty())
  end)

  it("refuses a bad item at put with a bad argument, and stores nothing", function()
    local q = concur.PriorityQueue()
    q:put(1)
    assert_has(err_of(function() q:put({}) end), "bad argument #1 to 'put'")
    assert_has(err_of(function() q:put({"x"}) end), "bad argument #1 to 'put'")
    assert_has(err_of(function() q:put("x") end), "does not compare")
    assert_has(err_of(function() q:put(true) end), "number, string or table expected, got boolean")
    assert_has(err_of(function() q:put({{1}}) end), "item[1], the priority")
    assert_has(err_of(function() q:put(0 / 0) end), "NaN")
    assert.are.equal(1, q:qsize())
    assert.are.equal(1, q:get())
    -- Empty again: strings now start a queue of strings.
    q:put("b"); q:put({"a", 1})
    assert.are.same({{"a", 1}, "b"}, drain(q))
  end)

  it("hands items between threads in priority order", function()
    local q, go_on = concur.PriorityQueue(), concur.Event()
    local t = concur.Thread{target = function()
      go_on:wait(10)
      local out = {}
      for _ = 1, 4 do out[#out + 1] = q:get(true, 10) end
      return out
    end}
    t:start()
    for _, v in ipairs{40, 10, 30, 20} do q:put(v) end
    go_on:set()
    assert.are.same({10, 20, 30, 40}, t:result())
  end)
end)

describe("concur.SimpleQueue", function()
  it("is an unbounded FIFO queue without task_done, join or full", function()
    local q = concur.SimpleQueue()
    for i = 1, 3 do q:put(i) end
    q:put_nowait(4)
    assert.are.equal(4, q:qsize())
    assert.are.same({1, 2, 3, 4}, drain(q))
    assert.is_nil(q.task_done)
    assert.is_nil(q.join)
    assert.is_nil(q.full)
    assert.are.equal(0, q.maxsize)
    assert.has_error(function() q.maxsize = 3 end)
    assert.are.equal("<concur.SimpleQueue size=0>", tostring(q))
  end)
end)

describe("the queue kinds' constructors", function()
  it("refuse an argument too many and a bad maxsize, naming the function", function()
    assert_has(err_of(function() return concur.Queue(1, 2) end), "bad argument #2 to 'Queue' (no value expected)")
    assert_has(err_of(function() return concur.LifoQueue(1, 2) end), "bad argument #2 to 'LifoQueue'")
    assert_has(err_of(function() return concur.PriorityQueue(1, 2) end), "bad argument #2 to 'PriorityQueue'")
    assert_has(err_of(function() return concur.SimpleQueue(1) end), "bad argument #1 to 'SimpleQueue' (no value expected)")
    assert_has(err_of(function() return concur.LifoQueue("x") end), "bad argument #1 to 'LifoQueue'")
    assert_has(err_of(function() return concur.PriorityQueue{maxsize = 1.5} end), "option 'maxsize'")
    assert_has(err_of(function() return concur.PriorityQueue{size = 1} end), "unknown option 'size'")
    assert.are.equal(3, concur.PriorityQueue{maxsize = 3}.maxsize)
  end)
end)

describe("q.maxsize", function()
  it("is readable on every kind", function()
    assert.are.equal(0, concur.Queue().maxsize)
    assert.are.equal(7, concur.Queue(7).maxsize)
    assert.are.equal(0, concur.Queue(-3).maxsize)
    assert.are.equal(5, concur.LifoQueue(5).maxsize)
    assert.are.equal(6, concur.PriorityQueue(6).maxsize)
    assert.are.equal(0, concur.SimpleQueue().maxsize)
  end)

  it("set smaller, keeps full() true until enough items are taken", function()
    local q = concur.Queue(10)
    for i = 1, 5 do q:put(i) end
    q.maxsize = 3
    assert.are.equal(3, q.maxsize)
    assert.is_true(q:full())
    assert.are.equal(concur.Full, select(2, pcall(q.put_nowait, q, 6)))
    q:get(); q:get()
    assert.is_true(q:full())
    q:get()
    assert.is_false(q:full())
    q:put(6)
    assert.are.same({4, 5, 6}, drain(q))
  end)

  it("set larger, wakes a putter blocked on the old bound (in another process too)", function()
    local q = concur.Queue(1)
    q:put("a")
    local t = concur.Thread{target = function() q:put("b", true, 10); return true end}
    t:start()
    local p = go(function() q:put("c", true, 10); return 0 end)
    assert.is_false(t:join(0.05))
    assert.is_false(p:join(0.05))
    q.maxsize = 3
    assert.is_true(t:result())
    assert.are.equal(0, finish(p))
    assert.are.equal(3, q:qsize())
    q.maxsize = 0   -- unbounded
    for i = 1, 10 do q:put(i) end
    assert.is_false(q:full())
  end)

  it("refuses a value that is not an integer", function()
    local q = concur.Queue()
    assert_has(err_of(function() q.maxsize = "x" end), "maxsize")
    assert_has(err_of(function() q.maxsize = 1.5 end), "maxsize")
    assert_has(err_of(function() q.other = 1 end), "has no attribute 'other'")
    assert.are.equal(0, q.maxsize)
  end)

  it("set in one process, is seen by another", function()
    local q = concur.Queue(2)
    local p = go(function() q.maxsize = 9; return 0 end)
    assert.are.equal(0, finish(p))
    assert.are.equal(9, q.maxsize)
  end)
end)

local kinds = {
  Queue = function(n) return concur.Queue(n) end,
  LifoQueue = function(n) return concur.LifoQueue(n) end,
  PriorityQueue = function(n) return concur.PriorityQueue(n) end,
  SimpleQueue = function() return concur.SimpleQueue() end,
}

for _, kind in ipairs{"Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"} do
  local make = kinds[kind]
  describe(kind .. ":shutdown", function()
    it("makes put raise ShutDown; get drains what is left, then raises ShutDown", function()
      local q = make()
      q:put(1); q:put(2)
      q:shutdown()
      assert.are.equal(concur.ShutDown, select(2, pcall(q.put, q, 3)))
      assert.are.equal(concur.ShutDown, select(2, pcall(q.put_nowait, q, 3)))
      local got = {q:get(), q:get_nowait()}
      table.sort(got)
      assert.are.same({1, 2}, got)
      assert.are.equal(concur.ShutDown, select(2, pcall(q.get, q)))
      assert.are.equal(concur.ShutDown, select(2, pcall(q.get_nowait, q)))
      assert.are.equal(concur.ShutDown, select(2, pcall(q.get, q, true, 5)))
      assert_has(tostring(q), "shutdown")
      q:shutdown()   -- again: nothing changes
      assert.are.equal(concur.ShutDown, select(2, pcall(q.get, q)))
    end)

    it("wakes getters blocked in other threads and processes, which raise ShutDown", function()
      local q, ready = make(), concur.Semaphore(0)
      -- The child first, while no thread of this test runs (see below).
      local p = go(function()
        ready:release()
        local ok, e = pcall(q.get, q)
        return (not ok and e == concur.ShutDown) and 0 or 3
      end)
      local t = concur.Thread{target = function()
        ready:release()
        local ok, e = pcall(q.get, q, true, 30)
        return not ok and e == concur.ShutDown
      end}
      t:start()
      local first = ready:acquire(true, 10)
      local second = first and ready:acquire(true, 10)
      if not second and TSAN and support.spinning(p.pid) then
        -- ThreadSanitizer's own hang in the forked child (support.spinning),
        -- not concur's: nothing to test here this time.
        q:shutdown()
        t:join()
        p:kill()
        p:join()
        return
      end
      assert.is_true(first)
      assert.is_true(second)
      assert.is_false(t:join(0.05))
      q:shutdown()
      assert.is_true(t:result())
      assert.are.equal(0, finish(p, 10))
    end)

    it("immediate: empties the queue now, and get raises at once", function()
      local q = make()
      for i = 1, 5 do q:put({i, support.big_string(i * 5000, i)}) end
      local before = support.shm_in_use()
      q:shutdown(true)
      assert.are.equal(0, q:qsize())
      assert.is_true(support.shm_in_use() < before)
      assert.are.equal(concur.ShutDown, select(2, pcall(q.get, q)))
      assert.are.equal(concur.ShutDown, select(2, pcall(q.put, q, 1)))
    end)

    it("comes from another process", function()
      local q = make()
      q:put("left")
      local p = go(function() q:shutdown(); return 0 end)
      assert.are.equal(0, finish(p))
      assert.are.equal(concur.ShutDown, select(2, pcall(q.put, q, 1)))
      assert.are.equal("left", q:get())
      assert.are.equal(concur.ShutDown, select(2, pcall(q.get, q)))
    end)

    it("refuses a bad argument", function()
      local q = make()
      assert_has(err_of(function() q:shutdown(1) end), "bad argument #1 to 'shutdown'")
      assert_has(err_of(function() q:shutdown(true, 2) end), "bad argument #2 to 'shutdown'")
    end)
  end)
end

for _, kind in ipairs{"Queue", "LifoQueue", "PriorityQueue"} do
  local make = kinds[kind]
  describe(kind .. ":shutdown with maxsize and join", function()
    it("wakes putters blocked on a full queue, which raise ShutDown", function()
      local q, ready = make(1), concur.Event()
      q:put(1)
      local t = concur.Thread{target = function()
        ready:set()
        local ok, e = pcall(q.put, q, 2, true, 30)
        return not ok and e == concur.ShutDown
      end}
      t:start()
      assert.is_true(ready:wait(10))
      assert.is_false(t:join(0.05))
      q:shutdown()
      assert.is_true(t:result())
      assert.are.equal(1, q:get())
    end)

    it("immediate: the removed items count as done, so join returns", function()
      local q = make()
      for i = 1, 4 do q:put(i) end
      q:get(); q:task_done()
      local t = concur.Thread{target = function() q:join(); return "joined" end}
      t:start()
      q:shutdown(true)
      assert.are.equal("joined", t:result())
      q:join()
    end)

    it("immediate leaves a task got but not done unfinished", function()
      local q = make()
      q:put(1); q:put(2)
      q:get()
      q:shutdown(true)
      local t = concur.Thread{target = function() q:join(); return "joined" end}
      t:start()
      assert.is_false(t:join(0.1))
      q:task_done()
      assert.are.equal("joined", t:result())
    end)
  end)
end

describe("every queue kind between processes", function()
  for _, kind in ipairs{"LifoQueue", "PriorityQueue", "SimpleQueue"} do
    it(kind .. ": a child puts, the parent gets, and back", function()
      local q, back, all_in = kinds[kind](), kinds[kind](), concur.Event()
      local p = go(function()
        for _, v in ipairs{3, 1, 2} do q:put(v) end
        all_in:set()
        local got = {}
        for _ = 1, 3 do got[#got + 1] = back:get(true, 10) end
        return (got[1] + got[2] + got[3] == 60) and 0 or 3
      end)
      assert.is_true(all_in:wait(10))
      local got = {}
      for _ = 1, 3 do got[#got + 1] = q:get(true, 10) end
      local want = {LifoQueue = {2, 1, 3}, PriorityQueue = {1, 2, 3}, SimpleQueue = {3, 1, 2}}
      assert.are.same(want[kind], got)
      for _, v in ipairs{10, 20, 30} do back:put(v) end
      assert.are.equal(0, finish(p, 10))
    end)
  end
end)

describe("a process killed in the middle of an ordered queue's call", function()
  -- A child puts 1, 2, 3, ... until killed.  Whatever the moment, the parent
  -- then finds exactly 1..k (k at least what it had seen), and the queue
  -- goes on keeping its order.
  for _, kind in ipairs{"LifoQueue", "PriorityQueue"} do
    it(kind .. ": a producer killed in a tight loop loses no committed item", function()
      local q = kinds[kind]()
      for round = 1, 6 do
        local p = go(function()
          local i = 0
          while true do
            i = i + 1
            q:put(i % 5 == 0 and {i, support.big_string(9000, i)} or i)
          end
        end)
        local want = 300 + round * 200
        assert.is_true(eventually(function() return q:qsize() >= want end, 20))
        p:kill()
        assert.are.equal(-9, finish(p))
        q:put(0)   -- takes the lock: finishes a put the killed one left journaled
        local got = firsts(drain(q))
        local n = #got - 1
        assert.is_true(n >= want, ("round %d: only %d items after the kill"):format(round, n))
        if kind == "PriorityQueue" then
          for i = 0, n do assert.are.equal(i, got[i + 1]) end
        else
          assert.are.equal(0, got[1])
          for i = 1, n do assert.are.equal(n - i + 1, got[i + 1]) end
        end
      end
    end)

    it(kind .. ": a consumer killed in a tight loop leaves an ordered remainder", function()
      local q, N = kinds[kind](), 6000
      for round = 1, 4 do
        for i = 1, N do q:put(i % 7 == 0 and {i, support.big_string(9000, i)} or i) end
        local p = go(function()
          while true do q:get(true, 10) end
        end)
        assert.is_true(eventually(function() return q:qsize() <= N - 1000 * round end, 20))
        p:kill()
        assert.are.equal(-9, finish(p))
        q:put(kind == "PriorityQueue" and N + 1 or 0)
        local left = firsts(drain(q))
        -- Sorted and without repeats (a heap left broken would not be).
        for i = 2, #left do
          if kind == "PriorityQueue" then
            assert.is_true(left[i - 1] < left[i], "out of order after the kill")
          elseif i > 2 then
            assert.is_true(left[i - 1] > left[i], "out of order after the kill")
          end
        end
        assert.is_true(#left <= N - 1000 * round + 1)
      end
    end)
  end

  it("a process killed while blocked in a PriorityQueue get: the queue serves the others", function()
    local q, ready = concur.PriorityQueue(), concur.Event()
    local victim = go(function() ready:set(); q:get(); return 2 end)
    assert.is_true(ready:wait(10))
    assert.is_false(victim:join(0.1))
    victim:kill()
    assert.are.equal(-9, finish(victim))
    q:put(2); q:put(1)
    assert.are.same({1, 2}, drain(q))
  end)
end)

-- Was a bug (fixed; the test stays): a LifoQueue or PriorityQueue collected
-- with items in it also walked the FIFO record area it never writes, as many
-- records as it had items; memory reused from a Queue freed just before still
-- held that Queue's records, and the walk freed the old Queue's large item a
-- second time (abort in shm_free, or a crash).  Seen as an abort after
-- fault_spec's os.exit case when select_spec's LifoQueue was collected.
describe("an ordered queue collected with items in it", function()
  for _, kind in ipairs{"LifoQueue", "PriorityQueue"} do
    it("(" .. kind .. ") frees its own items only", function()
      local before = support.shm_in_use()
      for _ = 1, 20 do
        do
          local q = concur.Queue()
          q:put(string.rep("x", 100000))   -- a blob, pointed at by a record
          q:put(string.rep("y", 100000))
        end
        collectgarbage(); collectgarbage()   -- freed: its blocks go back to the arena
        do
          local o = concur[kind]()
          for i = 1, 3 do o:put(i) end   -- counted in nput, no records
        end
        collectgarbage(); collectgarbage()
      end
      assert.is_true(support.shm_in_use() - before < 65536)
    end)
  end
end)
