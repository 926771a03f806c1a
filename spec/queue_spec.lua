-- spec/queue_spec.lua: concur.Queue of src/queue.c (API.md, "Queues and
-- pipes", and the transfer rules its items follow), used from one state and
-- between threads.  Processes are queue_process_spec.lua's.
--
-- Threads are ordered with the library's own objects (Events, Queues, joins),
-- never with a sleep.  Where the main thread must know that a thread is
-- blocked it checks that the thread has not ended after a short join(timeout)
-- (a state, not an order).  Threads report by returning values; they never
-- assert.  Timings are checked with wide bounds.
local concur = require "concur"
local core = require "concur.core"
local support = require "support"
local pack, mtype = support.pack, support.mtype   -- cross to threads with the functions that use them

-- From support.lua: err_of(fn, ...) and raised(fn, ...) are pcall that
-- returns the error message as a string, or the raw error value
-- (concur.Empty, concur.Full, ...), and fail if none; assert_has(s, sub)
-- asserts that s contains sub (plain).
local err_of, raised, assert_has = support.err_of, support.raised, support.assert_has

-- go(fn, ...) starts a thread on fn(...), go_n(n, fn, ...) n threads on
-- fn(i, ...); timed(fn, ...) gives the seconds fn(...) takes, then its pcall
-- results; assert_about(want, took) checks a wait with wide bounds.
local go, go_n = support.start_thread, support.start_threads
local timed, assert_about = support.timed, support.assert_about

-- big_table(n, tag), checked by check_big(t, n, tag), and big_string(n, seed)
-- (not all one byte) make big items that say which they are.
local big_table, check_big, big_string = support.big_table, support.check_big, support.big_string

-- Bytes in use in the shared arena, garbage collected first, and how far
-- above its start it may end.
local in_use, SLACK = support.shm_in_use, support.SHM_SLACK

-- A module table the main state has and no other state can load.
local function fake_module(name)
  package.loaded[name] = package.loaded[name] or {}
  return package.loaded[name]
end

-- ---------------------------------------------------------------------------
describe("concur.Queue", function()
  describe("construction", function()
    it("Queue(), Queue(nil), Queue(0) and Queue{} are unbounded", function()
      for _, q in ipairs({concur.Queue(), concur.Queue(nil), concur.Queue(0), concur.Queue{},
                          concur.Queue{maxsize = 0}}) do
        assert.are.equal("<concur.Queue size=0>", tostring(q))
        for i = 1, 1000 do q:put(i, false) end
        assert.is_false(q:full())
        assert.are.equal(1000, q:qsize())
        assert.are.equal("<concur.Queue size=1000>", tostring(q))
      end
    end)

    it("a negative maxsize is unbounded, as in Python", function()
      for _, q in ipairs({concur.Queue(-1), concur.Queue(-100), concur.Queue{maxsize = -5}}) do
        assert.are.equal("<concur.Queue size=0>", tostring(q))
        for i = 1, 100 do q:put_nowait(i) end
        assert.is_false(q:full())
        assert.are.equal(100, q:qsize())
      end
    end)

    it("Queue(n) and Queue{maxsize = n} are bounded to n", function()
      for _, q in ipairs({concur.Queue(3), concur.Queue{maxsize = 3}, concur.Queue(3.0)}) do
        assert.are.equal("<concur.Queue size=0 maxsize=3>", tostring(q))
        for i = 1, 3 do q:put(i, false) end
        assert.is_true(q:full())
        assert.are.equal(concur.Full, raised(q.put, q, 4, false))
        assert.are.equal("<concur.Queue size=3 maxsize=3>", tostring(q))
      end
    end)

    it("a non-integer maxsize is a bad argument", function()
      assert_has(err_of(function() return concur.Queue(1.5) end), "bad argument #1 to 'Queue'")
      assert_has(err_of(function() return concur.Queue("x") end), "bad argument #1 to 'Queue'")
      assert_has(err_of(function() return concur.Queue(true) end), "bad argument #1 to 'Queue'")
      assert_has(err_of(function() return concur.Queue{maxsize = 1.5} end),
        "bad argument #1 to 'Queue'")
      assert_has(err_of(function() return concur.Queue{maxsize = "2"} end),
        "bad argument #1 to 'Queue'")
      assert_has(err_of(function() return concur.Queue(0 / 0) end), "bad argument #1 to 'Queue'")
    end)

    it("Queue{maxsize = 3.0} is Queue(3.0): a float with an integer value counts", function()
      -- Found by this spec (fixed): the table form refused 3.0.
      local ok, q = pcall(concur.Queue, {maxsize = 3.0})
      assert.is_true(ok, tostring(q))
      assert.are.equal(tostring(concur.Queue(3.0)), tostring(q))
    end)

    it("a maxsize it cannot hold is refused, never cut down", function()
      local ok, q = pcall(concur.Queue, 2 ^ 40)
      if ok then
        assert.are.equal("<concur.Queue size=0 maxsize=1099511627776>", tostring(q))
      else
        assert_has(q, "bad argument #1")
      end
    end)

    it("JoinableQueue is the same constructor", function()
      assert.are.equal(concur.Queue, concur.JoinableQueue)
      local q = concur.JoinableQueue(2)
      q:put("a")
      assert.are.equal("a", q:get())
      q:task_done()
      q:join()
    end)

    it("each call makes a new queue", function()
      local a, b = concur.Queue(), concur.Queue()
      assert.are_not.equal(a, b)
      a:put(1)
      assert.is_true(b:empty())
      assert.are.equal(1, a:qsize())
    end)

    it("methods called on something else raise 'concur.Queue expected'", function()
      local q = concur.Queue()
      q:put(1); q:get()
      for _, name in ipairs({"put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full",
                             "task_done", "join"}) do
        assert_has(err_of(q[name], 5, 1), "concur.Queue expected")
        assert_has(err_of(q[name], {}, 1), "concur.Queue expected")
        assert_has(err_of(q[name], concur.Lock(), 1), "concur.Queue expected")
      end
      assert.is_true(q:empty())
    end)
  end)

  -- -------------------------------------------------------------------------
  describe("put and get in one state", function()
    it("gives items back first in, first out", function()
      local q = concur.Queue()
      for i = 1, 1000 do q:put(i) end
      assert.are.equal(1000, q:qsize())
      for i = 1, 1000 do assert.are.equal(i, q:get()) end
      assert.is_true(q:empty())
    end)

    it("interleaved puts and gets keep the order", function()
      local q = concur.Queue()
      local nextput, nextget = 1, 1
      for round = 1, 300 do
        for _ = 1, round % 7 + 1 do q:put(nextput); nextput = nextput + 1 end
        for _ = 1, round % 5 + 1 do
          if q:empty() then break end
          assert.are.equal(nextget, q:get())
          nextget = nextget + 1
        end
      end
      while not q:empty() do
        assert.are.equal(nextget, q:get_nowait())
        nextget = nextget + 1
      end
      assert.are.equal(nextput, nextget)
    end)

    it("put returns nothing; get returns exactly the one item", function()
      local q = concur.Queue()
      assert.are.equal(0, select("#", q:put("x")))
      assert.are.equal(1, select("#", q:get()))
      assert.are.equal(0, select("#", q:put_nowait("y")))
      assert.are.equal(1, select("#", q:get_nowait()))
    end)

    it("put_nowait and get_nowait are put and get that do not block", function()
      local q = concur.Queue(2)
      q:put_nowait("a")
      q:put_nowait("b")
      assert.are.equal(concur.Full, raised(q.put_nowait, q, "c"))
      assert.are.equal("a", q:get_nowait())
      assert.are.equal("b", q:get_nowait())
      assert.are.equal(concur.Empty, raised(q.get_nowait, q))
    end)

    it("nil is an item: put(nil) counts and get returns it", function()
      local q = concur.Queue(3)
      q:put(nil)
      q:put_nowait(nil)
      q:put(false)
      assert.are.equal(3, q:qsize())
      assert.is_true(q:full())
      local r = pack(q:get())
      assert.are.equal(1, r.n)
      assert.is_nil(r[1])
      r = pack(q:get_nowait())
      assert.are.equal(1, r.n)
      assert.is_nil(r[1])
      assert.is_false(q:get())
      assert.is_true(q:empty())
    end)

    it("put() with no item is a bad argument and puts nothing", function()
      local q = concur.Queue()
      assert_has(err_of(function() q:put() end), "bad argument #1 to 'put'")
      assert.are.equal(0, q:qsize())
      assert_has(err_of(function() q.put(q) end), "value expected")
      assert.are.equal(0, q:qsize())
    end)

    it("put_nowait() with no item is a bad argument and puts nothing", function()
      local q = concur.Queue()
      -- Found by this spec (fixed): put_nowait() put a nil.
      local ok, e = pcall(function() q:put_nowait() end)
      assert.is_false(ok, "put_nowait() with no item raised nothing")
      assert_has(e, "bad argument #1 to 'put_nowait'")
      assert_has(e, "value expected")
      assert.are.equal(0, q:qsize())
    end)

    -- A raise makes an error object of its own (== the value, tostring
    -- with the caller's position: none here, pcall calls get itself).
    it("get on an empty queue raises concur.Empty", function()
      local q = concur.Queue()
      local e = raised(q.get, q, false)
      assert.is_true(e == concur.Empty)
      assert.are.equal("concur.Empty", tostring(e))
      assert.is_true(raised(q.get_nowait, q) == concur.Empty)
      assert.is_true(raised(q.get, q, true, 0) == concur.Empty)
      assert.are_not.equal(concur.Empty, concur.Full)
      assert.is_true(q:empty())
    end)

    it("put on a full queue raises concur.Full", function()
      local q = concur.Queue(1)
      q:put("kept")
      local e = raised(q.put, q, "x", false)
      assert.is_true(e == concur.Full)
      assert.are.equal("concur.Full", tostring(e))
      assert.is_true(raised(q.put_nowait, q, "x") == concur.Full)
      assert.is_true(raised(q.put, q, "x", true, 0) == concur.Full)
      assert.is_true(raised(q.put, q, "x", nil, 0) == concur.Full)
      assert.are.equal(1, q:qsize())
      assert.are.equal("kept", q:get())
      assert.is_true(q:empty())
    end)

    it("get(true, 0.05) on an empty queue raises Empty after about 0.05 s", function()
      local q = concur.Queue()
      local took, ok, e = timed(q.get, q, true, 0.05)
      assert.is_false(ok)
      assert.are.equal(concur.Empty, e)
      assert_about(0.05, took)
      took, ok, e = timed(q.get, q, nil, 0.05)   -- block nil is true
      assert.is_false(ok)
      assert.are.equal(concur.Empty, e)
      assert_about(0.05, took)
    end)

    it("put(x, true, 0.05) on a full queue raises Full after about 0.05 s", function()
      local q = concur.Queue(2)
      q:put(1); q:put(2)
      local took, ok, e = timed(q.put, q, 3, true, 0.05)
      assert.is_false(ok)
      assert.are.equal(concur.Full, e)
      assert_about(0.05, took)
      took, ok, e = timed(q.put, q, 3, nil, 0.05)
      assert.is_false(ok)
      assert.are.equal(concur.Full, e)
      assert_about(0.05, took)
      assert.are.equal(2, q:qsize())
      assert.are.equal(1, q:get())
      assert.are.equal(2, q:get())
    end)

    it("a timeout with block = false is ignored (Python), and answers at once", function()
      local q = concur.Queue(1)
      local took, ok, e = timed(q.get, q, false, 5)
      assert.is_false(ok)
      assert.are.equal(concur.Empty, e)
      assert.is_true(took < 1, "get(false, 5) took " .. took .. " s")
      q:put("a")
      took, ok, e = timed(q.put, q, "b", false, 5)
      assert.is_false(ok)
      assert.are.equal(concur.Full, e)
      assert.is_true(took < 1, "put(x, false, 5) took " .. took .. " s")
      assert.are.equal("a", q:get(false, 5))
      q:put("c", false, 5)
      assert.are.equal("c", q:get())
    end)

    it("an item there is got at once, whatever the timeout", function()
      local q = concur.Queue(1)
      q:put(1, true, 0)
      assert.are.equal(1, q:get(true, 0))
      q:put(2, true, 100)
      local took, ok, v = timed(q.get, q, true, 100)
      assert.is_true(ok)
      assert.are.equal(2, v)
      assert.is_true(took < 1)
    end)

    it("a non-boolean block flag is a bad argument", function()
      local q = concur.Queue()
      assert_has(err_of(function() q:get(1) end),
        "bad argument #1 to 'get' (boolean expected, got number)")
      assert_has(err_of(function() q:get("yes") end), "boolean expected, got string")
      assert_has(err_of(function() q:put("x", 1) end),
        "bad argument #2 to 'put' (boolean expected, got number)")
      assert_has(err_of(function() q:put("x", {}) end), "boolean expected, got table")
      assert.are.equal(0, q:qsize())
    end)

    it("a negative, NaN or non-number timeout is a bad argument, blocking or not", function()
      local q = concur.Queue(1)
      for _, block in ipairs({true, false}) do
        for _, bad in ipairs({-1, -0.001, 0 / 0, "soon", {}}) do
          assert_has(err_of(function() q:get(block, bad) end), "bad argument #2 to 'get'")
        end
      end
      q:put("kept")
      for _, block in ipairs({true, false}) do
        for _, bad in ipairs({-1, 0 / 0, "soon"}) do
          assert_has(err_of(function() q:put("x", block, bad) end), "bad argument #3 to 'put'")
        end
      end
      -- Checked before anything is taken or put.
      assert.are.equal(1, q:qsize())
      assert.are.equal("kept", q:get())
      assert_has(err_of(function() q:put("y", false, -1) end), "bad argument #3 to 'put'")
      assert.is_true(q:empty())
    end)

    it("qsize, empty and full follow a bounded queue", function()
      local q = concur.Queue(3)
      local function state() return {q:qsize(), q:empty(), q:full()} end
      assert.are.same({0, true, false}, state())
      q:put("a")
      assert.are.same({1, false, false}, state())
      q:put("b")
      assert.are.same({2, false, false}, state())
      q:put("c")
      assert.are.same({3, false, true}, state())
      assert.are.equal(concur.Full, raised(q.put_nowait, q, "d"))
      assert.are.same({3, false, true}, state())
      q:get()
      assert.are.same({2, false, false}, state())
      q:put("d")
      assert.are.same({3, false, true}, state())
      assert.are.same({"b", "c", "d"}, {q:get(), q:get(), q:get()})
      assert.are.same({0, true, false}, state())
      assert.are.equal(concur.Empty, raised(q.get_nowait, q))
      assert.are.same({0, true, false}, state())
    end)

    it("qsize and empty follow an unbounded queue; full is always false", function()
      local q = concur.Queue()
      assert.are.same({0, true, false}, {q:qsize(), q:empty(), q:full()})
      for i = 1, 5000 do q:put(i) end
      assert.are.same({5000, false, false}, {q:qsize(), q:empty(), q:full()})
      for _ = 1, 4999 do q:get() end
      assert.are.same({1, false, false}, {q:qsize(), q:empty(), q:full()})
      q:get()
      assert.are.same({0, true, false}, {q:qsize(), q:empty(), q:full()})
    end)

    it("tostring shows the size and the bound", function()
      local q = concur.Queue(5)
      assert.are.equal("<concur.Queue size=0 maxsize=5>", tostring(q))
      q:put(1); q:put(2)
      assert.are.equal("<concur.Queue size=2 maxsize=5>", tostring(q))
      local u = concur.Queue()
      u:put(nil)
      assert.are.equal("<concur.Queue size=1>", tostring(u))
    end)
  end)

  -- -------------------------------------------------------------------------
  describe("items", function()
    it("nil, booleans, numbers and strings come back equal, subtypes kept", function()
      local q = concur.Queue()
      local items = {true, false, 0, -1, math.maxinteger, math.mininteger, 0.0, -0.0, 1.5,
                     3.0, 1 / 0, -1 / 0, "", "a\0b", "\255\254", string.rep("z", 100)}
      for _, v in ipairs(items) do q:put(v) end
      q:put(0 / 0)
      for _, v in ipairs(items) do
        local got = q:get()
        assert.are.equal(mtype(v), mtype(got))
        assert.are.equal(support.repr(v), support.repr(got))
      end
      local nan = q:get()
      assert.is_true(nan ~= nan)
      assert.are.equal("float", mtype(nan))
    end)

    it("tables are deep copies: later changes to the original do not show", function()
      local q = concur.Queue()
      local t = {1, 2, {x = "y"}, k = {deep = {deeper = "v"}}}
      q:put(t)
      t[1] = "changed"; t[3].x = "changed"; t.k.deep.deeper = "changed"
      local got = q:get()
      assert.are_not.equal(t, got)
      assert.are.same({1, 2, {x = "y"}, k = {deep = {deeper = "v"}}}, got)
    end)

    it("tables keep their cycles, shared references and metatables", function()
      local q = concur.Queue()
      local shared = {"s"}
      local t = {a = shared, b = shared}
      t.self = t
      local mt = {__index = function(_, k) return "meta " .. k end}
      q:put(setmetatable(t, mt))
      local got = q:get()
      assert.is_true(rawequal(got, got.self))
      assert.is_true(rawequal(got.a, got.b))
      assert.are.same({"s"}, got.a)
      assert.are_not.equal(shared, got.a)
      assert.are.equal("meta zz", got.zz)
      assert.are_not.equal(mt, getmetatable(got))
    end)

    it("functions come with their upvalues", function()
      local q = concur.Queue()
      local n, label = 10, "n="
      local function show(k) return label .. (n + k) end
      q:put(show)
      n = 99
      local f = q:get()
      assert.are.equal("n=15", f(5))
      q:put({cb = function(a, b) return a * b end})
      assert.are.equal(42, q:get().cb(6, 7))
    end)

    it("concur objects cross by reference: the same Lua value in one state", function()
      local q = concur.Queue()
      local lock, ev, other = concur.Lock(), concur.Event(), concur.Queue(3)
      q:put(lock)
      q:put({e = ev, list = {other, other}})
      q:put(q)
      assert.is_true(rawequal(lock, q:get()))
      local t = q:get()
      assert.is_true(rawequal(ev, t.e))
      assert.is_true(rawequal(other, t.list[1]))
      assert.is_true(rawequal(other, t.list[2]))
      assert.is_true(rawequal(q, q:get()))
      -- Objects, not copies.
      lock:acquire()
      q:put(lock)
      assert.is_true(q:get():locked())
      lock:release()
      q:put(other)
      q:get():put("through the copy")
      assert.are.equal("through the copy", other:get())
    end)

    it("concur's error values and a Thread handle cross as themselves", function()
      local q = concur.Queue()
      local t = concur.Thread{target = function() end}
      q:put(concur.Empty)
      q:put({concur.Full, t, concur.current_thread()})
      assert.is_true(rawequal(concur.Empty, q:get()))
      local got = q:get()
      assert.is_true(rawequal(concur.Full, got[1]))
      assert.is_true(rawequal(t, got[2]))
      assert.is_true(rawequal(concur.current_thread(), got[3]))
    end)

    it("a coroutine in an item raises naming where it sits, and nothing is put", function()
      local q = concur.Queue(2)
      local co = coroutine.create(function() end)
      local e = err_of(function() q:put({x = co}) end)
      assert_has(e, "item.x")
      assert_has(e, "coroutine")
      assert.are.equal(0, q:qsize())
      assert_has(err_of(function() q:put(co) end), "coroutine")
      assert_has(err_of(function() q:put_nowait({1, {2, co}}) end), "item[2][2]")
      assert_has(err_of(function() q:put({concur.Lock(), co}, true, 1) end), "item[2]")
      -- A large item: failed the same way.
      local big = big_table(10000, "big")
      big.cb = co
      assert_has(err_of(function() q:put(big) end), "item.cb")
      assert.are.equal(0, q:qsize())
      assert.is_true(q:empty())
      assert.are.equal(concur.Empty, raised(q.get_nowait, q))
      -- Nothing was counted for task_done either.
      assert_has(err_of(q.task_done, q), "task_done() called too many times")
      -- And the queue is fine.
      q:put("ok")
      assert.are.equal("ok", q:get())
    end)

    it("a 1 MiB string and a table of 10 000 entries come back whole", function()
      local q = concur.Queue()
      local s = big_string(1024 * 1024, 7)
      q:put(s)
      q:put(big_table(10000, "t"))
      q:put("small after")
      assert.are.equal(3, q:qsize())
      assert.are.equal(s, q:get())
      assert.is_true(check_big(q:get(), 10000, "t"))
      assert.are.equal("small after", q:get())
    end)

    it("a large item keeps its concur objects by reference and its shared parts", function()
      local q = concur.Queue()
      local lock = concur.Lock()
      local t = big_table(10000, "l")
      t.lock = lock
      t.again = t[5]
      q:put(t)
      local got = q:get()
      assert.is_true(check_big(got, 10000, "l"))
      assert.is_true(rawequal(lock, got.lock))
      assert.is_true(rawequal(got[5], got.again))
    end)

    it("an item holding hundreds of objects keeps each one by reference", function()
      local q = concur.Queue()
      for _, n in ipairs({500, 1100}) do   -- the object pointers alone: about 4 KB, then 9 KB
        local objs = {}
        for i = 1, n do objs[i] = i % 2 == 0 and concur.Lock() or concur.Event() end
        q:put(objs)
        q:put({objs[1], objs[n]})
        local got, pair = q:get(), q:get()
        assert.are.equal(n, #got)
        local same = 0
        for i = 1, n do if rawequal(objs[i], got[i]) then same = same + 1 end end
        assert.are.equal(n, same)
        assert.is_true(rawequal(objs[1], pair[1]))
        assert.is_true(rawequal(objs[n], pair[2]))
      end
    end)

    it("items of every size around the limits keep their order and bytes", function()
      local q = concur.Queue()
      local sizes = {}
      for _, edge in ipairs({1024, 4096, 8192, 16384, 32768}) do
        for d = -40, 40, 4 do sizes[#sizes + 1] = edge + d end
      end
      for i = 0, 300 do sizes[#sizes + 1] = (i * 7919) % 20000 end
      local lock = concur.Lock()
      for i, n in ipairs(sizes) do q:put({i, big_string(n, i), i % 3 == 0 and lock or nil}) end
      assert.are.equal(#sizes, q:qsize())
      for i, n in ipairs(sizes) do
        local got = q:get()
        assert.are.equal(i, got[1])
        assert.is_true(got[2] == big_string(n, i), "item " .. i .. " of " .. n .. " bytes differs")
        if i % 3 == 0 then assert.is_true(rawequal(lock, got[3])) else assert.is_nil(got[3]) end
      end
      assert.is_true(q:empty())
    end)

    it("many items in a row, put and got in waves, come back in order", function()
      local q = concur.Queue()
      local put, got = 0, 0
      for wave = 1, 20 do
        for _ = 1, 500 + wave * 37 do
          put = put + 1
          q:put(put % 13 == 0 and {put, big_string(9000, put)} or {put, ("x"):rep(put % 200)})
        end
        for _ = 1, 400 + wave * 30 do
          got = got + 1
          local item = q:get()
          assert.are.equal(got, item[1])
        end
      end
      while got < put do
        got = got + 1
        assert.are.equal(got, q:get()[1])
      end
      assert.is_true(q:empty())
    end)
  end)

  -- -------------------------------------------------------------------------
  describe("between threads", function()
    it("a get blocked on an empty queue is released by a put", function()
      local q, started = concur.Queue(), concur.Event()
      local t = go(function(qq, s)
        s:set()
        return qq:get()
      end, q, started)
      assert.is_true(started:wait(10))
      assert.is_false(t:join(0.05))   -- still blocked: nothing to get
      q:put("hello")
      assert.are.equal("hello", t:result())
      assert.is_true(q:empty())
    end)

    it("the main thread blocked in get is released by a thread's put", function()
      local q, go_on = concur.Queue(), concur.Event()
      local t = go(function(qq, g)
        if not g:wait(10) then return false end
        qq:put({from = "thread"})
        return true
      end, q, go_on)
      go_on:set()
      assert.are.same({from = "thread"}, q:get(true, 10))
      assert.is_true(t:result())
    end)

    it("a put blocked on a full queue is released by a get", function()
      local q, started = concur.Queue(1), concur.Event()
      q:put("first")
      local t = go(function(qq, s)
        s:set()
        qq:put("second")
        return qq:qsize()
      end, q, started)
      assert.is_true(started:wait(10))
      assert.is_false(t:join(0.05))   -- still blocked: the queue is full
      assert.are.equal(1, q:qsize())
      assert.are.equal("first", q:get())
      assert.are.equal(1, t:result())
      assert.are.equal("second", q:get())
    end)

    it("the main thread blocked in put is released by a thread's get", function()
      local q, go_on = concur.Queue(2), concur.Event()
      q:put(1); q:put(2)
      local t = go(function(qq, g)
        if not g:wait(10) then return nil end
        return qq:get()
      end, q, go_on)
      go_on:set()
      q:put(3, true, 10)
      assert.are.equal(1, t:result())
      assert.are.same({2, 3}, {q:get(), q:get()})
    end)

    it("a put with a timeout succeeds when room is made in time", function()
      local q, started = concur.Queue(1), concur.Event()
      q:put("a")
      local t = go(function(qq, s)
        s:set()
        local ok, e = pcall(qq.put, qq, "b", true, 10)
        return ok, tostring(e)
      end, q, started)
      assert.is_true(started:wait(10))
      assert.are.equal("a", q:get())
      assert.is_true((t:result()))
      assert.are.equal("b", q:get(true, 10))
    end)

    it("a get with a timeout in a thread raises Empty there after about that time", function()
      local q = concur.Queue()
      local t = go(function(qq)
        local t0 = concur.time()
        local ok, e = pcall(qq.get, qq, true, 0.05)
        return ok, e == concur.Empty, concur.time() - t0
      end, q)
      local ok, is_empty, took = t:result()
      assert.is_false(ok)
      assert.is_true(is_empty)
      assert_about(0.05, took)
    end)

    it("get with a huge or infinite timeout waits for the put", function()
      local q, go_on = concur.Queue(1), concur.Event()
      local t = go(function(qq, g)
        if not g:wait(10) then return false end
        qq:put("one")
        qq:put("two")
        return true
      end, q, go_on)
      go_on:set()
      assert.are.equal("one", q:get(true, math.huge))
      assert.are.equal("two", q:get(true, concur.TIMEOUT_MAX))
      assert.is_true(t:result())
      q:put("x", true, math.huge)
      assert.are.equal(concur.Full, raised(q.put, q, "y", false, math.huge))
    end)

    it("5 getters blocked on an empty queue each get one of 5 puts", function()
      local q, ready = concur.Queue(), concur.Semaphore(0)
      local ts = go_n(5, function(_, qq, r)
        r:release()
        return qq:get(true, 20)
      end, q, ready)
      for _ = 1, 5 do assert.is_true(ready:acquire(true, 10)) end
      for i = 1, 5 do q:put(i) end
      local got = {}
      for i, t in ipairs(ts) do got[i] = t:result() end
      table.sort(got)
      assert.are.same({1, 2, 3, 4, 5}, got)
      assert.is_true(q:empty())
    end)

    it("5 putters blocked on a full Queue(1) each get their item in", function()
      local q, ready = concur.Queue(1), concur.Semaphore(0)
      q:put(0)
      local ts = go_n(5, function(i, qq, r)
        r:release()
        qq:put(i, true, 20)
        return true
      end, q, ready)
      for _ = 1, 5 do assert.is_true(ready:acquire(true, 10)) end
      local got = {}
      for i = 1, 6 do got[i] = q:get(true, 20) end
      for _, t in ipairs(ts) do assert.is_true(t:result()) end
      table.sort(got)
      assert.are.same({0, 1, 2, 3, 4, 5}, got)
      assert.is_true(q:empty())
    end)

    it("items of every kind cross to a thread and back", function()
      local q, back = concur.Queue(), concur.Queue()
      local lock, ev = concur.Lock(), concur.Event()
      local k = 3
      local t = go(function(qq, bb)
        for _ = 1, 7 do bb:put(qq:get(true, 10)) end
        local ev_in = qq:get(true, 10)
        ev_in:set()
        return true
      end, q, back)
      local cyc = {name = "c"}
      cyc.me = cyc
      q:put(nil)
      q:put(2.0)
      q:put("a\0b")
      q:put(cyc)
      q:put(function(x) return x * k end)
      q:put({lock, concur.Empty})
      q:put(big_string(1024 * 1024, 3))
      q:put(ev)
      assert.is_true(t:result())
      assert.is_true(ev:is_set())
      assert.is_nil(back:get())
      local f = back:get()
      assert.are.equal(support.INTEGRAL_FLOAT, mtype(f))
      assert.are.equal(2.0, f)
      assert.are.equal("a\0b", back:get())
      local c = back:get()
      assert.is_true(rawequal(c, c.me))
      assert.are.equal(21, back:get()(7))
      local pair = back:get()
      assert.is_true(rawequal(lock, pair[1]))
      assert.is_true(rawequal(concur.Empty, pair[2]))
      assert.is_true(back:get() == big_string(1024 * 1024, 3))
      assert.is_true(back:empty())
    end)

    it("a thread produces large items (1 MiB strings, 10 000-entry tables) for the main thread", function()
      local q = concur.Queue(2)
      local t = go(function(qq)
        for i = 1, 4 do
          local s = ("%08d"):format(i)
          qq:put(s:rep(128 * 1024))
          local tab = {}
          for j = 1, 10000 do tab[j] = {i, j} end
          qq:put(tab)
        end
        return true
      end, q)
      for i = 1, 4 do
        local s = q:get(true, 10)
        assert.are.equal(1024 * 1024, #s)
        assert.is_true(s == ("%08d"):format(i):rep(128 * 1024))
        local tab = q:get(true, 10)
        assert.are.equal(10000, #tab)
        assert.are.same({i, 1}, tab[1])
        assert.are.same({i, 10000}, tab[10000])
      end
      assert.is_true(t:result())
    end)

    it("a queue, a lock and an event got by a thread are the main thread's objects", function()
      local q, reply, lock = concur.Queue(), concur.Queue(), concur.Lock()
      local t = go(function(qq)
        local item = qq:get(true, 10)
        local held = item.lock:acquire(false)   -- the main thread holds it
        item.reply:put("via the reply queue")
        item.done:set()
        return held
      end, q)
      lock:acquire()
      local done = concur.Event()
      q:put({lock = lock, reply = reply, done = done})
      assert.is_true(done:wait(10))
      assert.is_false(t:result())
      lock:release()
      assert.are.equal("via the reply queue", reply:get(true, 10))
    end)

    it("a Thread handle in an item is got in another thread of the same process", function()
      local q = concur.Queue()
      local me = concur.current_thread()
      local t = go(function(qq, main)
        local item = qq:get(true, 10)
        return rawequal(item.main, main), rawequal(item.self, concur.current_thread()),
          item.self.name
      end, q, me)
      q:put({main = me, self = t})
      local same_main, same_self, name = t:result()
      assert.is_true(same_main)
      assert.is_true(same_self)
      assert.are.equal(t.name, name)
    end)

    it("an item a consumer cannot decode raises there, clearly, and the next item comes", function()
      finally(function() package.loaded["fake.queue_mod"] = nil end)
      local M = fake_module("fake.queue_mod")
      local q = concur.Queue(4)
      q:put({f = function() return M end})
      q:put("next")
      local big = big_table(10000, "x")
      big.m = M
      q:put(big)
      q:put("after big")
      local t = go(function(qq)
        local r = {}
        for _ = 1, 2 do
          local ok, e = pcall(qq.get, qq, true, 10)
          r[#r + 1] = ok
          r[#r + 1] = tostring(e)
          r[#r + 1] = qq:get(true, 10)
        end
        r[#r + 1] = qq:qsize()
        return r
      end, q)
      local r = t:result()
      assert.is_false(r[1])
      assert_has(r[2], "fake.queue_mod")
      assert.are.equal("next", r[3])
      assert.is_false(r[4])
      assert_has(r[5], "fake.queue_mod")
      assert.are.equal("after big", r[6])
      assert.are.equal(0, r[7])
      -- And the queue works on.
      q:put("still")
      assert.are.equal("still", q:get())
    end)

    it("one producer thread's items arrive in its order", function()
      local q = concur.Queue(16)
      local t = go(function(qq)
        for i = 1, 10000 do qq:put(i) end
        qq:put(nil)
        return true
      end, q)
      local n = 0
      while true do
        local v = q:get(true, 10)
        if v == nil then break end
        n = n + 1
        if v ~= n then assert.are.equal(n, v) end
      end
      assert.are.equal(10000, n)
      assert.is_true(t:result())
    end)

    local function stress(maxsize)
      local P, C, N = 4, 4, 20000
      local q = concur.Queue(maxsize)
      local consumers = go_n(C, function(_, qq)
        local got = {}
        while true do
          local item = qq:get(true, 30)
          if item == nil then break end
          got[#got + 1] = item[1] * 1000000 + item[2]
        end
        return got
      end, q)
      local producers = go_n(P, function(p, qq, n)
        for i = 1, n do qq:put({p, i}) end
        return true
      end, q, N)
      for _, t in ipairs(producers) do assert.is_true(t:result()) end
      for _ = 1, C do q:put(nil) end
      local seen, dup, total, disorder = {}, 0, 0, {}
      for c, t in ipairs(consumers) do
        local last = {}
        for _, code in ipairs(t:result()) do
          local p, i = math.floor(code / 1000000), code % 1000000
          if seen[code] then dup = dup + 1 end
          seen[code] = true
          total = total + 1
          if last[p] and i <= last[p] and #disorder < 5 then
            disorder[#disorder + 1] = ("consumer %d got %d:%d after %d:%d"):format(c, p, i, p, last[p])
          end
          last[p] = i
        end
      end
      local missing = 0
      for p = 1, P do
        for i = 1, N do if not seen[p * 1000000 + i] then missing = missing + 1 end end
      end
      assert.are.same({dup = 0, missing = 0, total = P * N, disorder = {}},
        {dup = dup, missing = missing, total = total, disorder = disorder})
      assert.is_true(q:empty())
    end

    -- Items of sizes from 0 to 12 000 bytes (both paths, records crossing
    -- segments), puts and gets with tiny timeouts that keep expiring while
    -- items come and go: none is lost, duplicated or damaged.
    local function timeouts_race(maxsize)
      local P, C, N = 3, 3, 3000
      local q = concur.Queue(maxsize)
      local ev = concur.Event()
      ev:set()
      local consumers = go_n(C, function(_, qq, bs)
        local got, bad = {}, 0
        while true do
          local ok, it = pcall(qq.get, qq, true, 0.0005)
          if not ok then
            if not (it == concur.Empty) then return nil, tostring(it) end
          else
            if it == nil then break end
            if it[3] ~= bs(it[4], it[1] * 100000 + it[2]) then bad = bad + 1 end
            if it[5] and not it[5]:is_set() then bad = bad + 1 end
            got[#got + 1] = it[1] * 100000 + it[2]
          end
        end
        return got, bad
      end, q, big_string)
      local producers = go_n(P, function(p, qq, n, bs, e)
        for i = 1, n do
          local size = (i * 7919 + p * 104729) % 12000
          local item = {p, i, bs(size, p * 100000 + i), size, i % 11 == 0 and e or nil}
          while true do
            local ok, err = pcall(qq.put, qq, item, true, 0.0005)
            if ok then break end
            if not (err == concur.Full) then return tostring(err) end
          end
        end
        return true
      end, q, N, big_string, ev)
      for _, t in ipairs(producers) do assert.is_true(t:result()) end
      for _ = 1, C do q:put(nil) end
      local seen, total, dup, damaged, disorder = {}, 0, 0, 0, 0
      for _, t in ipairs(consumers) do
        local got, bad = t:result()
        assert.is_table(got, bad)
        damaged = damaged + bad
        local last = {}
        for _, code in ipairs(got) do
          if seen[code] then dup = dup + 1 end
          seen[code] = true
          total = total + 1
          local p, i = math.floor(code / 100000), code % 100000
          if last[p] and i <= last[p] then disorder = disorder + 1 end
          last[p] = i
        end
      end
      assert.are.same({total = P * N, dup = 0, damaged = 0, disorder = 0},
        {total = total, dup = dup, damaged = damaged, disorder = disorder})
      assert.is_true(q:empty())
    end

    it("items of all sizes, with timeouts expiring all along, on an unbounded queue", function()
      timeouts_race(0)
    end)

    it("the same on a Queue(3)", function()
      timeouts_race(3)
    end)

    it("4 producers and 4 consumers, 20 000 items each: every item once, in order per producer",
      function() stress(0) end)

    it("the same on a Queue(8): producers and consumers block both ways", function()
      stress(8)
    end)
  end)

  -- -------------------------------------------------------------------------
  describe("task_done and join", function()
    it("join() on a fresh queue returns at once", function()
      local q = concur.Queue()
      local t = go(function(qq) qq:join(); return true end, q)
      assert.is_true(t:result())
      q:join()
    end)

    it("task_done() more often than items were put raises", function()
      local q = concur.Queue()
      assert_has(err_of(q.task_done, q), "task_done() called too many times")
      q:put("a"); q:put("b")
      q:get(); q:get()
      q:task_done(); q:task_done()
      assert_has(err_of(q.task_done, q), "task_done() called too many times")
      q:join()
      -- Counted over every put ever: one more put allows one more task_done.
      q:put("c")
      q:task_done()
      assert_has(err_of(q.task_done, q), "task_done() called too many times")
      assert.are.equal("c", q:get())   -- task_done does not take the item
      q:join()
    end)

    it("puts that fail (Full, a bad item) count no task", function()
      local q = concur.Queue(1)
      q:put(1)
      pcall(q.put, q, 2, false)
      pcall(q.put_nowait, q, 3)
      pcall(q.put, q, 4, true, 0.01)
      pcall(q.put, q, coroutine.create(function() end))
      q:get()
      q:task_done()
      assert_has(err_of(q.task_done, q), "task_done() called too many times")
      q:join()
    end)

    it("join() returns only after every item put has had its task_done", function()
      local q = concur.Queue()
      for i = 1, 3 do q:put(i) end
      local started = concur.Event()
      local joiner = go(function(qq, s)
        s:set()
        qq:join()
        return qq:qsize()
      end, q, started)
      assert.is_true(started:wait(10))
      assert.is_false(joiner:join(0.05))
      for _ = 1, 3 do q:get() end
      assert.is_false(joiner:join(0.05))   -- got, not done
      q:task_done(); q:task_done()
      assert.is_false(joiner:join(0.05))   -- one left
      q:task_done()
      assert.is_true(joiner:join(10))
      assert.are.equal(0, joiner:result())
    end)

    it("several joiners are all released by the last task_done", function()
      local q, ready = concur.Queue(), concur.Semaphore(0)
      q:put("x")
      local ts = go_n(4, function(_, qq, r)
        r:release()
        qq:join()
        return true
      end, q, ready)
      for _ = 1, 4 do assert.is_true(ready:acquire(true, 10)) end
      assert.is_false(ts[1]:join(0.05))
      q:get()
      q:task_done()
      for _, t in ipairs(ts) do assert.is_true(t:result()) end
    end)

    it("the main thread's join waits for worker threads to finish every task", function()
      local q, results = concur.Queue(), concur.Queue()
      local workers = go_n(3, function(w, qq, res)
        while true do
          local job = qq:get(true, 30)
          if job == nil then qq:task_done(); return true end
          res:put({w, job * job})
          qq:task_done()
        end
      end, q, results)
      for i = 1, 300 do q:put(i) end
      q:join()
      -- Every result is there once join has returned.
      assert.are.equal(300, results:qsize())
      local sum = 0
      for _ = 1, 300 do sum = sum + results:get_nowait()[2] end
      assert.are.equal(300 * 301 * 601 / 6, sum)
      for _ = 1, 3 do q:put(nil) end
      q:join()
      for _, t in ipairs(workers) do assert.is_true(t:result()) end
    end)

    it("task_done from another thread than the one that got the item counts", function()
      local q = concur.Queue()
      q:put("a")
      assert.are.equal("a", q:get())
      local t = go(function(qq) qq:task_done(); return true end, q)
      assert.is_true(t:result())
      q:join()
      local t2 = go(function(qq)
        local ok, e = pcall(qq.task_done, qq)
        return ok, tostring(e)
      end, q)
      local ok, e = t2:result()
      assert.is_false(ok)
      assert_has(e, "task_done() called too many times")
    end)
  end)

  -- -------------------------------------------------------------------------
  describe("shared memory", function()
    it("10 000 puts and gets of small and large items give the arena back", function()
      local q = concur.Queue()
      local start = in_use()
      local big = big_string(12 * 1024, 1)
      for i = 1, 10000 do
        -- Each small item holds an object of its own: 5000 Locks if their references leaked.
        if i % 2 == 0 then q:put({i, big}) else q:put({i, "small", concur.Lock()}) end
        if i % 100 == 0 then
          for _ = 1, 100 do q:get() end
        end
      end
      for _ = 1, 5 do q:put(big_string(1024 * 1024, 2)) end
      for _ = 1, 5 do q:get() end
      assert.is_true(q:empty())
      support.assert_shm_back(start)
    end)

    it("1 000 queues collected with items left inside give the arena back", function()
      local start = in_use()
      local lock = concur.Lock()
      local peak
      do
        local keep = {}
        for i = 1, 1000 do
          local q = concur.Queue(i % 3 == 0 and 10 or 0)
          q:put({i, "small"})
          q:put({lock = lock, ev = concur.Event(), ev2 = concur.Event(), l = concur.Lock()})
          if i % 10 == 0 then q:put(big_string(20000, i)) end
          if i % 50 == 0 then q:put(big_table(10000, "t")) end
          keep[i] = q
        end
        peak = core.shm_in_use()
        assert.is_true(peak - start > 1000 * 1000, "1000 queues took only " .. (peak - start) .. " bytes")
        keep = nil   -- luacheck: ignore
      end
      local grown = in_use() - start
      assert.is_true(grown < SLACK, ("%d bytes still in use of %d at the peak"):format(grown, peak - start))
      assert.is_false(lock:locked())
    end)

    it("items a thread could not decode give their objects back", function()
      finally(function() package.loaded["fake.queue_mod2"] = nil end)
      local M = fake_module("fake.queue_mod2")
      local q = concur.Queue()
      local start = in_use()
      for i = 1, 1000 do
        if i % 50 == 0 then
          local big = big_table(2000, "b")
          big.m, big.lock = M, concur.Lock()
          q:put(big)
        else
          q:put({m = M, lock = concur.Lock(), ev = concur.Event(), s = ("x"):rep(i % 300)})
        end
      end
      local t = go(function(qq)
        local failed = 0
        for _ = 1, 1000 do
          if not pcall(qq.get, qq) then failed = failed + 1 end
        end
        return failed
      end, q)
      assert.are.equal(1000, t:result())
      assert.is_true(q:empty())
      support.assert_shm_back(start)
    end)

    it("puts that fail (Full, a bad item) give back what they had encoded", function()
      local q = concur.Queue(1)
      q:put("filler")
      local start = in_use()
      for i = 1, 1500 do
        pcall(q.put, q, {concur.Lock(), i}, false)
        pcall(q.put_nowait, q, {concur.Event(), big_string(10000, i)})
        pcall(q.put, q, {concur.Lock(), coroutine.create(function() end)})
      end
      assert.are.equal(1, q:qsize())
      support.assert_shm_back(start)
    end)
  end)

  -- q:_putv / q:_getv: the pools' task and result messages (lua/concur/pool.lua),
  -- several values as one item; not part of the API.
  describe("items of several values (the pools' messages)", function()
    it("carry every value, nils included, across a thread", function()
      local q, back = concur.Queue(), concur.Queue()
      assert.is_true(q:_putv(1, nil, "three", {4}, nil))
      local t = go(function(q, back)
        back:_putv(pack(q:_getv()).n, q:_getv())
      end, q, back)
      assert.is_true(q:_putv(false))
      local got = pack(back:_getv(true, 10))
      t:join()
      assert.equal(5, got[1])
      assert.equal(2, got.n)
      assert.is_false(got[2])
      assert.is_false(q:_takev())   -- empty: false, no error
    end)

    it("return a value that cannot be sent, never raise it, and put nothing", function()
      local q = concur.Queue()
      local ok, err = q:_putv(1, {k = coroutine.create(function() end)})
      assert.is_nil(ok)
      assert.equal("bad value at item[2].k (coroutine)", err)
      assert.equal(0, q:qsize())
      assert_has(err_of(q._putv, q), "value expected")
      q:put(nil)   -- one value: a pool worker's stop
      assert.equal(1, pack(q:_getv()).n)
    end)
  end)
end)
