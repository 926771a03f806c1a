-- spec/thread_spec.lua: concur.Thread and the module functions of src/thread.c
-- and src/state.c (API.md, "Conventions" and "Threads").
--
-- Threads are ordered with join/result only.  A target that sleeps does so
-- only to stay alive while the main thread looks at it, with wide margins.
local concur = require "concur"

local support = require "support"
local pack, mtype = support.pack, support.mtype   -- cross to threads with the functions that use them
local run_fixture = support.run_fixture

-- From support.lua: go(fn, ...) starts a thread on fn(...) and returns it;
-- err_of(fn, ...) is pcall that returns the error message as a string (and
-- fails if none).
local go, err_of = support.start_thread, support.err_of

describe("concur.Thread", function()
  describe("start and join", function()
    it("join() returns true once the thread has ended", function()
      local t = concur.Thread{target = function() return 1 end}
      t:start()
      assert.is_true(t:join())
      assert.is_false(t:is_alive())
    end)

    it("join(timeout) returns false while the target still runs, then join() true", function()
      local t = go(function() concur.sleep(1.0) end)
      support.assert_join_times_out(t, 0.9)
      assert.is_true(t:join())
      assert.is_false(t:is_alive())
    end)

    it("join(0) on an ended thread returns true", function()
      local t = go(function() end)
      assert.is_true(t:join())
      assert.is_true(t:join(0))
    end)

    it("is_alive is false before start, true while running, false after join", function()
      local t = concur.Thread{target = function() concur.sleep(1.0) end}
      assert.is_false(t:is_alive())
      t:start()
      assert.is_true(t:is_alive())
      assert.is_true(t:join())
      assert.is_false(t:is_alive())
    end)

    it("a thread without a target runs and returns nothing", function()
      local t = concur.Thread{}
      t:start()
      assert.is_true(t:join())
      assert.are.equal(0, select("#", t:result()))
    end)
  end)

  describe("result", function()
    it("returns all values, nils in the middle and at the end included", function()
      local t = go(function() return 1, nil, "three", nil end)
      local r = pack(t:result())
      assert.are.equal(4, r.n)
      assert.are.same({1, nil, "three", nil, n = 4}, r)
    end)

    it("keeps the number subtypes and copies tables", function()
      local t = go(function() return 3, 3.0, {a = {1, 2}, b = "x"} end)
      local i, f, tab = t:result()
      assert.are.equal("integer", mtype(i))
      assert.are.equal(support.INTEGRAL_FLOAT, mtype(f))
      assert.are.same({a = {1, 2}, b = "x"}, tab)
    end)

    it("can be called twice", function()
      local t = go(function() return "v", 2 end)
      assert.are.same({"v", 2}, {t:result()})
      assert.are.same({"v", 2}, {t:result()})
    end)

    it("waits for the thread to end", function()
      local t = go(function() concur.sleep(0.2); return "late" end)
      assert.are.equal("late", t:result())
      assert.is_false(t:is_alive())
    end)

    it("can be read from another thread holding the handle", function()
      local t1 = go(function() return "from t1", 42, nil end)
      local t2 = go(function(h)
        local first = pack(h:result())
        local second = pack(h:result())
        return first.n, first[1], first[2], second[1], second[2]
      end, t1)
      assert.are.same({3, "from t1", 42, "from t1", 42}, {t2:result()})
      -- and still here
      assert.are.same({"from t1", 42}, {t1:result()})
    end)

    it("raises before start", function()
      local t = concur.Thread{target = function() end}
      assert.is_truthy(err_of(t.result, t):find("before it is started", 1, true))
    end)
  end)

  describe("args", function()
    it("passes a list", function()
      local t = go(function(...) return select("#", ...), ... end, 10, "b", true)
      assert.are.same({3, 10, "b", true}, {t:result()})
    end)

    it("honours an n field: inner and trailing nils are kept", function()
      local t = concur.Thread{
        target = function(...) return select("#", ...), ... end,
        args = pack(1, nil, 3, nil),
      }
      t:start()
      local r = pack(t:result())
      assert.are.same({4, 1, nil, 3, nil, n = 5}, r)
    end)

    it("copies tables: changes in the thread stay there", function()
      local data = {count = 1, list = {1, 2}}
      local t = go(function(d) d.count = 99; d.list[3] = 3; return d.count, #d.list end, data)
      assert.are.same({99, 3}, {t:result()})
      assert.are.equal(1, data.count)
      assert.are.equal(2, #data.list)
    end)
  end)

  describe("name", function()
    it("defaults to Thread-N, N growing", function()
      local a = concur.Thread{target = function() end}
      local b = concur.Thread{target = function() end}
      assert.matches("^Thread%-%d+$", a.name)
      assert.matches("^Thread%-%d+$", b.name)
      local na = tonumber(a.name:match("%d+"))
      local nb = tonumber(b.name:match("%d+"))
      assert.is_true(nb > na)
    end)

    it("is taken from the options", function()
      local t = concur.Thread{target = function() return concur.current_thread().name end,
                              name = "worker-7"}
      assert.are.equal("worker-7", t.name)
      t:start()
      assert.are.equal("worker-7", t:result())
    end)

    it("is settable before start and seen inside the thread", function()
      local t = concur.Thread{target = function() return concur.current_thread().name end}
      t.name = "renamed"
      t:start()
      assert.are.equal("renamed", t:result())
      assert.are.equal("renamed", t.name)
    end)

    it("is self.name in run", function()
      local Named = concur.Thread:extend()
      function Named:run() return self.name, concur.current_thread().name end
      local t = Named{name = "named-one"}
      t:start()
      assert.are.same({"named-one", "named-one"}, {t:result()})
    end)
  end)

  describe("daemon", function()
    it("defaults to false in the main thread", function()
      local t = concur.Thread{target = function() end}
      assert.is_false(t.daemon)
    end)

    it("is taken from the options and settable before start", function()
      local t = concur.Thread{target = function() end, daemon = true}
      assert.is_true(t.daemon)
      t.daemon = false
      assert.is_false(t.daemon)
      t.daemon = true
      t:start()
      assert.is_true(t:join())
      assert.is_true(t.daemon)
    end)

    it("defaults to the creating thread's flag: true inside a daemon thread", function()
      local t = concur.Thread{
        target = function()
          local inner = concur.Thread{target = function() end}
          local explicit = concur.Thread{target = function() end, daemon = false}
          return concur.current_thread().daemon, inner.daemon, explicit.daemon
        end,
        daemon = true,
      }
      t:start()
      assert.are.same({true, true, false}, {t:result()})
    end)

    it("is false for a thread created inside a non-daemon thread", function()
      local t = go(function() return concur.Thread{target = function() end}.daemon end)
      assert.is_false(t:result())
    end)

    it("cannot be set once the thread is started", function()
      local t = go(function() concur.sleep(1.0) end)
      local msg = err_of(function() t.daemon = true end)
      assert.is_truthy(msg:find("cannot set daemon status of active thread", 1, true), msg)
      assert.is_false(t.daemon)
      assert.is_true(t:join())
      msg = err_of(function() t.daemon = true end)
      assert.is_truthy(msg:find("cannot set daemon status of active thread", 1, true), msg)
    end)
  end)

  describe("ident and native_id", function()
    it("are nil before start", function()
      local t = concur.Thread{target = function() end}
      assert.is_nil(t.ident)
      assert.is_nil(t.native_id)
    end)

    it("are integers after start; ident is get_ident() inside the thread", function()
      local t = go(function()
        local me = concur.current_thread()
        return concur.get_ident(), me.ident, me.native_id, concur.get_native_id()
      end)
      assert.are.equal("integer", mtype(t.ident))
      assert.are.equal("integer", mtype(t.native_id))
      local inner_ident, inner_self_ident, inner_native, inner_get_native = t:result()
      assert.are.equal(t.ident, inner_ident)
      assert.are.equal(t.ident, inner_self_ident)
      assert.are.equal(t.native_id, inner_native)
      assert.are.equal(t.native_id, inner_get_native)
      assert.are_not.equal(concur.get_native_id(), inner_get_native)
    end)

    it("of the main thread is get_ident() in main", function()
      assert.are.equal(concur.get_ident(), concur.main_thread().ident)
      assert.are.equal("integer", mtype(concur.main_thread().native_id))
    end)
  end)

  describe("misuse", function()
    it("start twice raises", function()
      local t = go(function() end)
      local msg = err_of(t.start, t)
      assert.is_truthy(msg:find("threads can only be started once", 1, true), msg)
      assert.is_true(t:join())
      msg = err_of(t.start, t)
      assert.is_truthy(msg:find("threads can only be started once", 1, true), msg)
    end)

    it("join before start raises instead of blocking", function()
      local t = concur.Thread{target = function() end}
      local msg = err_of(t.join, t)
      assert.is_truthy(msg:find("cannot join thread before it is started", 1, true), msg)
    end)

    it("joining the current thread raises", function()
      local t = go(function()
        local me = concur.current_thread()
        local ok, err = pcall(me.join, me)
        return ok, tostring(err)
      end)
      local ok, err = t:result()
      assert.is_false(ok)
      assert.is_truthy(err:find("cannot join current thread", 1, true), err)
    end)

    it("a negative timeout is an argument error", function()
      local t = go(function() end)
      local msg = err_of(t.join, t, -1)
      assert.matches("bad argument", msg)
      assert.matches("timeout", msg)
      assert.is_true(t:join())
    end)

    it("a target that is not callable is an error naming target", function()
      local msg = err_of(concur.Thread, {target = 5})
      assert.matches("target", msg)
    end)

    it("an unknown option is an error naming it, at the caller's line", function()
      local msg = err_of(function()
        local t = concur.Thread{bogus = 1}   -- not a tail call: keeps this line in the message
        return t
      end)
      assert.is_truthy(msg:find("unknown option 'bogus'", 1, true), msg)
      assert.matches("thread_spec%.lua:%d+:", msg)
    end)

    it("a non-table argument is an error", function()
      local msg = err_of(concur.Thread, "x")
      assert.matches("bad argument", msg)
    end)

    it("a non-boolean daemon is an error", function()
      local msg = err_of(concur.Thread, {target = function() end, daemon = "yes"})
      assert.matches("daemon", msg)
    end)

    it("a non-table args is an error", function()
      local msg = err_of(concur.Thread, {target = function() end, args = 5})
      assert.matches("args", msg)
    end)
  end)

  describe("errors in the thread", function()
    it("are printed as 'Exception in thread NAME:' with a traceback, and re-raised by result()",
      function()
        local out, code = run_fixture("thread_error.lua")
        assert.are.equal(0, code, out)
        assert.is_truthy(out:find("Exception in thread failing-worker:", 1, true), out)
        assert.is_truthy(out:find("stack traceback", 1, true), out)
        assert.is_truthy(out:find("kaboom-1234", 1, true), out)
        -- result() re-raised it, with the original text
        local line = out:match("RESULT\t([^\n]*)")
        assert.is_not_nil(line, out)
        assert.matches("^false\t.*kaboom%-1234", line)
        -- and a second result() raises again
        assert.matches("AGAIN\tfalse\t[^\n]*kaboom%-1234", out)
        -- join() itself just reports that the thread ended
        assert.matches("JOIN\ttrue", out)
      end)

    it("re-raise a non-string error value by the transfer rules (subclass run)", function()
      local out, code = run_fixture("thread_error.lua")
      assert.are.equal(0, code, out)
      assert.is_truthy(out:find("Exception in thread failing-subclass:", 1, true), out)
      assert.matches("TABLE\tfalse\ttable\t7", out)
    end)
  end)

  describe("subclassing", function()
    local MyThread = concur.Thread:extend()
    function MyThread:init(a, b)
      self.a = a
      self.b = b
      self.name = "my-" .. tostring(a)
    end
    function MyThread:helper() return "helper:" .. self.a .. ":" .. self.b end
    function MyThread:run()
      return self.a, self.b, self:helper(), self:getName(), self.name,
        rawequal(concur.current_thread(), self)
    end

    it("runs run() in the new thread with the fields, methods and result", function()
      local t = MyThread("x", "y")
      assert.are.equal("x", t.a)
      assert.are.equal("my-x", t.name)
      t:start()
      assert.are.same({"x", "y", "helper:x:y", "my-x", "my-x", true}, {t:result()})
    end)

    it("runs in another OS thread", function()
      local Ident = concur.Thread:extend()
      function Ident:run() return concur.get_ident() end
      local t = Ident()
      t:start()
      local ident = t:result()
      assert.are.equal(t.ident, ident)
      assert.are_not.equal(concur.get_ident(), ident)
    end)

    it("runs on a copy: fields changed in the thread stay there", function()
      local Changer = concur.Thread:extend()
      function Changer:init(v) self.value = v; self.list = {1} end
      function Changer:run()
        self.value = "changed"
        self.list[2] = 2
        self.added = true
        return self.value, #self.list
      end
      local t = Changer("original")
      t:start()
      assert.are.same({"changed", 2}, {t:result()})
      assert.are.equal("original", t.value)
      assert.are.equal(1, #t.list)
      assert.is_nil(t.added)
    end)

    it("without init accepts the options table", function()
      local Plain = concur.Thread:extend()
      function Plain:run() return self.name, self.daemon, self.extra end
      local t = Plain{name = "x", daemon = true}
      assert.are.equal("x", t.name)
      assert.is_true(t.daemon)
      t.extra = "field set after construction"
      t:start()
      assert.are.same({"x", true, "field set after construction"}, {t:result()})
    end)

    it("without run still runs a target", function()
      local NoRun = concur.Thread:extend()
      function NoRun:twice(v) return v * 2 end
      local t = NoRun{target = function(v) return v + 1 end, args = {41}}
      assert.are.equal(10, t:twice(5))
      t:start()
      assert.are.equal(42, t:result())
    end)

    it("a sub-subclass inherits init and methods and can override run", function()
      local Sub = MyThread:extend()
      function Sub:run()
        return "sub", self:helper(), self.a
      end
      local t = Sub(1, 2)
      assert.are.equal("my-1", t.name)
      t:start()
      assert.are.same({"sub", "helper:1:2", 1}, {t:result()})
    end)
  end)

  describe("camelCase aliases", function()
    it("getName and setName", function()
      local t = concur.Thread{target = function() return concur.current_thread():getName() end}
      t:setName("camel")
      assert.are.equal("camel", t:getName())
      assert.are.equal("camel", t.name)
      t:start()
      assert.are.equal("camel", t:result())
    end)

    it("isDaemon and setDaemon", function()
      local t = concur.Thread{target = function() end}
      assert.is_false(t:isDaemon())
      t:setDaemon(true)
      assert.is_true(t:isDaemon())
      assert.is_true(t.daemon)
      t:start()
      assert.is_true(t:join())
      assert.has_error(function() t:setDaemon(false) end)
    end)

    -- Were findings F6, F7 (docs/badinput.md): the messages named the
    -- __newindex metamethod ("bad argument #3 to 'newindex'") and, for the
    -- methods, a line inside concur.lua.
    it("setName and setDaemon check their argument, and raise at the caller's line", function()
      local t = concur.Thread{target = function() end}
      local msg = err_of(function() t:setName({}) end)
      assert.matches("^[^\n]*thread_spec%.lua:%d+: bad argument #1 to 'setName' %(string expected, got table%)", msg)
      msg = err_of(function() t:setDaemon(1) end)
      assert.matches("^[^\n]*thread_spec%.lua:%d+: bad argument #1 to 'setDaemon' %(boolean expected, got number%)", msg)
      msg = err_of(function() concur.main_thread():setDaemon(true) end)
      assert.matches("^[^\n]*thread_spec%.lua:%d+: cannot set daemon status of active thread", msg)
      msg = err_of(function() t.name = {} end)
      assert.matches("thread_spec%.lua:%d+: name must be a string, got table", msg)
      msg = err_of(function() t.daemon = 1 end)
      assert.matches("thread_spec%.lua:%d+: daemon must be a boolean, got number", msg)
      msg = err_of(function() t.getName(5) end)
      assert.matches("thread_spec%.lua:%d+: bad argument #1 to 'getName' %(concur.Thread expected, got number%)", msg)
    end)

    it("isAlive", function()
      local t = concur.Thread{target = function() end}
      assert.is_false(t:isAlive())
      t:start()
      t:join()
      assert.is_false(t:isAlive())
    end)

    it("currentThread and activeCount", function()
      assert.is_true(rawequal(concur.main_thread(), concur.currentThread()))
      assert.are.equal(concur.active_count(), concur.activeCount())
    end)
  end)
end)

describe("module functions", function()
  describe("current_thread and main_thread", function()
    it("current_thread() in main is main_thread(), named MainThread", function()
      assert.is_true(rawequal(concur.main_thread(), concur.current_thread()))
      assert.are.equal("MainThread", concur.main_thread().name)
      assert.is_true(concur.main_thread():is_alive())
      assert.is_false(concur.main_thread().daemon)
    end)

    it("current_thread() inside a thread is its own handle, not main", function()
      local t = go(function()
        local me = concur.current_thread()
        return rawequal(me, concur.main_thread()), me.name, concur.main_thread().name,
          rawequal(me, concur.current_thread())
      end)
      assert.are.same({false, t.name, "MainThread", true}, {t:result()})
    end)

    it("the main thread cannot be started, nor joined by itself", function()
      local main = concur.main_thread()
      assert.matches("threads can only be started once", err_of(function() main:start() end))
      assert.matches("cannot join current thread", err_of(function() main:join() end))
      assert.matches("cannot join current thread", err_of(function() main:join(0) end))
    end)
  end)

  describe("joining the main thread", function()
    it("from a thread: join(timeout) returns false while the main thread runs", function()
      -- main is blocked in result() below, so it is surely still running
      local t = go(function(m)
        local t0 = concur.time()
        local joined = m:join(0.2)
        return joined, concur.time() - t0, m:is_alive()
      end, concur.main_thread())
      local joined, waited, alive = t:result()
      assert.is_false(joined)
      assert.is_true(waited >= 0.15, "waited " .. waited .. " s")
      assert.is_true(alive)
    end)

    it("from a thread: the main thread has no result", function()
      local t = go(function(m) return pcall(m.result, m, 0) end, concur.main_thread())
      local ok, err = t:result()
      assert.is_false(ok)
      assert.matches("cannot wait for the result of the main thread", err)
    end)

    -- CPython's ThreadJoinOnShutdown: the main thread ends when the exit
    -- rules begin, before they wait for the non-daemon threads.
    for _, mode in ipairs({"end", "exit3"}) do
      it("returns once the main chunk has ended, and the exit waits for the joiner (" .. mode .. ")",
        function()
          local out, code = run_fixture("thread_join_main.lua", mode)
          assert.are.equal(mode == "end" and 0 or 3, code, out)
          support.assert_in_order(out, "end of main\n", "end of thread\ttrue\tfalse\n")
        end)
    end
  end)

  describe("get_ident", function()
    it("is an integer, the same on each call", function()
      assert.are.equal("integer", mtype(concur.get_ident()))
      assert.are.equal(concur.get_ident(), concur.get_ident())
    end)

    it("is distinct across threads that run at once", function()
      local threads = {}
      for i = 1, 4 do
        threads[i] = go(function() concur.sleep(1.0); return concur.get_ident() end)
      end
      -- all four are alive together here (each sleeps 1 s)
      for _, t in ipairs(threads) do assert.is_true(t:is_alive()) end
      local seen = {[concur.get_ident()] = "main"}
      for i, t in ipairs(threads) do
        local ident = t:result()
        assert.is_nil(seen[ident], "ident reused while alive")
        seen[ident] = i
        assert.are.equal(t.ident, ident)
      end
    end)
  end)

  describe("active_count and enumerate", function()
    it("count the main thread and the running threads", function()
      local base = concur.active_count()
      assert.is_true(base >= 1)
      local threads = {}
      for i = 1, 3 do
        threads[i] = go(function() concur.sleep(1.5) end)
      end
      assert.are.equal(base + 3, concur.active_count())
      local list = concur.enumerate()
      assert.are.equal(base + 3, #list)
      local function contains(h)
        for _, x in ipairs(list) do if rawequal(x, h) then return true end end
        return false
      end
      assert.is_true(contains(concur.main_thread()))
      for _, t in ipairs(threads) do assert.is_true(contains(t)) end
      for _, t in ipairs(threads) do assert.is_true(t:join()) end
      assert.are.equal(base, concur.active_count())
      list = concur.enumerate()
      assert.are.equal(base, #list)
      for _, t in ipairs(threads) do assert.is_false(contains(t)) end
    end)

    it("do not count a thread that is not started", function()
      local base = concur.active_count()
      local t = concur.Thread{target = function() end}
      assert.are.equal(base, concur.active_count())
      for _, x in ipairs(concur.enumerate()) do assert.is_false(rawequal(x, t)) end
    end)
  end)

  describe("sleep and time", function()
    it("sleep(0.05) takes at least 0.04 s", function()
      local t0 = concur.time()
      concur.sleep(0.05)
      local dt = concur.time() - t0
      assert.is_true(dt >= 0.04, "slept " .. dt .. " s")
      assert.is_true(dt < 2, "slept " .. dt .. " s")
    end)

    it("sleep(0) returns", function()
      concur.sleep(0)
      assert.is_true(true)
    end)

    it("a negative sleep is an argument error", function()
      local msg = err_of(function() concur.sleep(-1) end)
      assert.matches("bad argument #1 to 'sleep'", msg)
      assert.has_error(function() concur.sleep("soon") end)
    end)

    it("time() is a monotonic float that increases", function()
      local a = concur.time()
      assert.are.equal("number", type(a))
      local prev = a
      for _ = 1, 1000 do
        local now = concur.time()
        assert.is_true(now >= prev)
        prev = now
      end
      concur.sleep(0.01)
      assert.is_true(concur.time() > a)
    end)
  end)

  describe("cpu_count and getpid", function()
    it("cpu_count() is an integer >= 1", function()
      local n = concur.cpu_count()
      assert.are.equal("integer", mtype(n))
      assert.is_true(n >= 1)
    end)

    it("getpid() is an integer, the same in every thread of the process", function()
      local pid = concur.getpid()
      assert.are.equal("integer", mtype(pid))
      assert.is_true(pid > 0)
      local t = go(function() return concur.getpid() end)
      assert.are.equal(pid, t:result())
    end)
  end)
end)

describe("threads and their states", function()
  it("a thread started from a thread works and its result comes back", function()
    local t = go(function(x)
      local inner = concur.Thread{target = function(y) return y * 2, "inner" end, args = {x}}
      inner:start()
      local v, tag = inner:result()
      return v + 1, tag, inner:is_alive()
    end, 20)
    assert.are.same({41, "inner", false}, {t:result()})
  end)

  it("a Thread handle passed to another thread is joined and read there", function()
    local t1 = concur.Thread{target = function() return "v1", 2, {k = "v"} end}
    t1:start()
    local t2 = go(function(h)
      local joined = h:join()
      return joined, h:is_alive(), h.name, h:result()
    end, t1)
    assert.are.same({true, false, t1.name, "v1", 2, {k = "v"}}, {t2:result()})
  end)

  it("a handle that comes back from a thread is the same value", function()
    local t1 = go(function() return 1 end)
    local t2 = go(function(h) return h end, t1)
    assert.is_true(rawequal(t1, (t2:result())))
    t1:join()
  end)

  it("has the creator's package.path and package.cpath", function()
    local t = go(function() return package.path, package.cpath end)
    local path, cpath = t:result()
    assert.are.equal(package.path, path)
    assert.are.equal(package.cpath, cpath)
  end)

  it("does not see the creator's globals", function()
    _G.concur_spec_global = 42
    local ok, res = pcall(function()
      local t = go(function() return concur_spec_global, type(concur_spec_global) end)  -- luacheck: ignore
      return {t:result()}
    end)
    _G.concur_spec_global = nil
    assert.is_true(ok, tostring(res))
    assert.are.same({nil, "nil"}, res)
  end)

  it("an _ENV upvalue becomes the thread's globals, whatever table it was", function()
    -- A chunk with its own environment (as busted, sandboxes and modules
    -- with _ENV give): the target's _ENV is not the creator's globals table.
    local env = setmetatable({marker = "creator's env"}, {__index = _G})
    local target = support.load("return function() return marker, type(concur), select('#', 1, 2) end",
                        "=env_chunk", "t", env)()
    local t = concur.Thread{target = target}
    t:start()
    assert.are.same({nil, "table", 2}, {t:result()})
  end)

  it("has concur as a global and through require", function()
    local t = go(function()
      local g = rawget(_G, "concur")
      local r = require "concur"
      return type(g), rawequal(g, r), type(r.Thread), r.current_thread().name
    end)
    local tg, same, tthread, name = t:result()
    assert.are.equal("table", tg)
    assert.is_true(same)
    assert.are.equal("table", tthread)
    assert.are.equal(t.name, name)
  end)

  it("result(timeout) raises concur.TimeoutError while the thread runs, then returns its results", function()
    local go = concur.Event()
    local t = concur.Thread{target = function(e) e:wait(); return 42, "x" end, args = {go}}
    t:start()
    local took, ok, err = support.timed(t.result, t, 0.1)
    assert.is_false(ok)
    assert.is_true(rawequal(err, concur.TimeoutError) or err == concur.TimeoutError, tostring(err))
    support.assert_about(0.1, took)
    assert.is_true(t:is_alive())
    go:set()
    assert.are.same({42, "x"}, {t:result(10)})
    assert.are.same({42, "x"}, {t:result(0)})   -- done: at once, however short
  end)

  it("result(timeout) of a thread that failed raises its error, not TimeoutError", function()
    local t = concur.Thread{target = function() error("boom", 0) end}
    t:start()
    assert.are.equal("boom", support.raised(t.result, t, 10))
  end)

  it("has the standard libraries", function()
    local t = go(function()
      return string.format("%03d", 7), math.floor(2.5), table.concat({"a", "b"}),
        type(io.write), type(os.time), type(coroutine.create), type(utf8) == "table"
    end)
    -- utf8 where the runtime has it (5.3, 5.4).
    assert.are.same({"007", 2, "ab", "function", "function", "function", utf8 ~= nil}, {t:result()})
  end)

  it("the target's upvalues are copied in", function()
    local prefix, count = "up", 3
    local t = go(function() return prefix .. count end)
    assert.are.equal("up3", t:result())
  end)
end)

describe("a thread's package paths", function()
  it("are the creator's before the thread's values are decoded", function()
    local saved = package.path
    package.path = support.fixtures .. "pathmods/?.lua;" .. saved
    local ok, m = pcall(require, "concur_pathmod")
    package.path = saved
    assert.is_true(ok, m)
    -- the target's upvalue `m` is a module: the thread requires it by name
    local t = concur.Thread{target = function() return m.answer() end}
    package.path = support.fixtures .. "pathmods/?.lua;" .. saved
    local started, err = pcall(t.start, t)
    package.path = saved
    package.loaded.concur_pathmod = nil
    assert.is_true(started, err)
    assert.are.equal(42, t:result())
  end)

  it("stay the thread's own when the creator's are not strings", function()
    local out, code = run_fixture("nil_path.lua")
    assert.are.equal(0, code, out)
    assert.are.equal("string\tstring\ttrue\n", out)
  end)
end)

describe("a Thread handle received from another thread", function()
  it("cannot be started there, with a clear error", function()
    local t = concur.Thread{target = function() return "ran" end}
    local other = concur.Thread{target = function(h)
      local ok, err = pcall(h.start, h)
      return ok, err
    end, args = {t}}
    other:start()
    local ok, err = other:result()
    assert.is_false(ok)
    assert.matches("can only be started from the Lua state that created it", err)
    t:start()                         -- the creator still can
    assert.are.equal("ran", t:result())
  end)
end)

describe("print in threads", function()
  it("writes whole lines, never mixed with other threads' lines", function()
    local out, code = run_fixture("print_lines.lua")
    assert.are.equal(0, code, out:sub(1, 2000))
    local lines, bad = 0, {}
    for line in out:gmatch("([^\n]*)\n") do
      lines = lines + 1
      local c = line:sub(1, 1)
      if #line ~= 200 or line ~= string.rep(c, 200) or not c:match("^[A-H]$") then
        bad[#bad + 1] = line
      end
    end
    assert.are.equal(0, #bad, "mixed lines, first: " .. tostring(bad[1]))
    assert.are.equal(1600, lines)
    -- nothing after the last newline
    assert.are.equal("\n", out:sub(-1))
  end)
end)
