-- spec/process_spec.lua: concur.Process and the module functions of
-- src/process.c (API.md, "Processes", and the exit rules under "Threads").
--
-- A child forked here runs on a copy of busted's state: it reports by its
-- exit code (os.exit) or by writing to a temp file the parent reads after
-- join, never by asserting.  Children print nothing here; what they print is
-- checked through fixtures run in a subprocess.  Order comes from join; a
-- child sleeps only to stay alive while the parent looks at it, with wide
-- margins.
local concur = require "concur"

local support = require "support"
local pack, unpack, mtype = support.pack, support.unpack, support.mtype   -- cross to threads with the functions that use them
local run_fixture, shell_quote = support.run_fixture, support.shell_quote

-- ThreadSanitizer cannot follow a thread started in a child forked from a
-- multi-threaded process (its registry keeps the parent's threads: "dup
-- thread with used id"); busted's process has threads by then, so such
-- children are tried in fixtures, which fork before starting any thread.
local TSAN = os.getenv("CONCUR_SANITIZER") == "thread"
-- AddressSanitizer's allocator is not locked around fork: a child forked
-- while other threads allocate can inherit one of its locks held and hang in
-- malloc.  The test that forks on purpose while threads are busy is pending there.
local ASAN = os.getenv("CONCUR_SANITIZER") == "address"
local it_unless_asan = ASAN and pending or it

-- Under ThreadSanitizer a child forked while the parent's threads are busy
-- can hang in the sanitizer itself (support.spinning).
local spinning = support.spinning

-- From support.lua: err_of(fn, ...) is pcall returning the error message.
local err_of = support.err_of

-- Starts a process on fn(...) and returns it.
local function go(fn, ...)
  local p = concur.Process{target = fn, args = pack(...)}
  p:start()
  return p
end

-- Runs fn in a child that writes what fn returns (strings or numbers, one per
-- line) to a temp file; returns the process (joined) and the lines.
local function child_report(fn, opts)
  local path = os.tmpname()
  opts = opts or {}
  opts.args = {path, fn}
  opts.target = function(file, f)
    local out = io.open(file, "w")
    for _, v in ipairs({f()}) do out:write(tostring(v), "\n") end
    out:close()
  end
  local p = concur.Process(opts)
  p:start()
  assert.is_true(p:join())
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  os.remove(path)
  return p, lines
end

-- Runs fixtures/NAME like run_fixture, then has the shell print "parent
-- exited N" once that Lua process itself has ended: a child that outlives it
-- keeps the output pipe open, so only this line shows when the parent ended.
local function run_then_mark(name, ...)
  local t0 = concur.time()
  local pipe = assert(io.popen("(" .. support.fixture_command(name, ...) .. ' 2>&1; echo "parent exited $?")'))
  local out = pipe:read("*a")
  pipe:close()
  return out, tonumber(out:match("parent exited (%d+)")), concur.time() - t0
end

-- Whether a process with this pid exists (zombies included).
local function exists(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

-- The state letter of process pid from /proc (nil if it is gone).
local function proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  return line and line:match("^%d+ %(.*%) (%a)")
end

local function count(s, sub)
  local n, at = 0, 1
  while true do
    local i = s:find(sub, at, true)
    if not i then return n end
    n, at = n + 1, i + #sub
  end
end

local function listed(list, p)
  for _, q in ipairs(list) do
    if rawequal(q, p) then return true end
  end
  return false
end

describe("concur.Process", function()
  describe("start and join", function()
    it("get_native_id() in a child is the child's own (its pid, for its one thread)", function()
      local q = concur.Queue()
      local p = concur.Process{target = function() q:put({concur.getpid(), concur.get_native_id()}) end}
      p:start()
      assert.is_true(p:join(10))
      local got = q:get(true, 5)
      assert.are.equal(p.pid, got[1])
      assert.are.equal(p.pid, got[2])
      assert.are_not.equal(concur.get_native_id(), got[2])
    end)

    it("reseeds math.random in each child, as Python reseeds random", function()
      local q = concur.Queue()
      -- A wide range (5.1's math.random takes an int).
      local range = support.has_integers and math.tointeger(2 ^ 50) or 2 ^ 31 - 1
      local function draw() q:put(math.random(range)) end
      local a, b = concur.Process{target = draw}, concur.Process{target = draw}
      a:start(); b:start()
      assert.is_true(a:join(10)); assert.is_true(b:join(10))
      local x, y = q:get(true, 5), q:get(true, 5)
      assert.are_not.equal(x, y)
      assert.are_not.equal(math.random(range), x)
    end)

    it("join() returns true once the child has ended", function()
      local p = concur.Process{target = function() end}
      p:start()
      assert.is_true(p:join())
      assert.is_false(p:is_alive())
      assert.are.equal(0, p.exitcode)
    end)

    it("join(timeout) returns false while the child still runs, then join() true", function()
      local p = go(function() concur.sleep(0.5) end)
      support.assert_join_times_out(p, 0.45)
      assert.is_nil(p.exitcode)
      assert.is_true(p:join())
      assert.is_false(p:is_alive())
      assert.are.equal(0, p.exitcode)
      assert.is_true(p:join(0))
      assert.is_true(p:join())
    end)

    it("is_alive is false before start, true while running, false after join", function()
      local p = concur.Process{target = function() concur.sleep(5) end}
      assert.is_false(p:is_alive())
      p:start()
      assert.is_true(p:is_alive())
      p:terminate()
      assert.is_true(p:join())
      assert.is_false(p:is_alive())
    end)

    it("passes args, nils included when n is given", function()
      local p = go(function(a, b, c, d)
        os.exit((a == 1 and b == nil and c == "x" and d == nil) and 42 or 1)
      end, 1, nil, "x", nil)
      p:join()
      assert.are.equal(42, p.exitcode)
    end)

    it("sees the parent's state as it was at start", function()
      local box = {value = 5}
      local p = concur.Process{target = function() os.exit(box.value) end}
      box.value = 9
      p:start()
      box.value = 13   -- after the fork: not the child's
      p:join()
      assert.are.equal(9, p.exitcode)
    end)

    it("a process without a target exits with 0", function()
      local p = concur.Process{}
      p:start()
      assert.is_true(p:join())
      assert.are.equal(0, p.exitcode)
    end)
  end)

  describe("pid, name and daemon", function()
    it("pid is nil before start and the child's pid after", function()
      local p = concur.Process{target = function() end}
      assert.is_nil(p.pid)
      p:start()
      assert.are.equal("integer", mtype(p.pid))
      assert.is_true(p.pid > 0)
      assert.are_not.equal(concur.getpid(), p.pid)
      p:join()
      assert.are.equal("integer", mtype(p.pid))
    end)

    it("pid equals current_process().pid and getpid() inside the child", function()
      local p, lines = child_report(function()
        return concur.current_process().pid, concur.getpid()
      end)
      assert.are.same({tostring(p.pid), tostring(p.pid)}, lines)
    end)

    it("names default to Process-N, counting up", function()
      local a = concur.Process{target = function() end}
      local b = concur.Process{target = function() end}
      local na = tonumber(a.name:match("^Process%-(%d+)$"))
      local nb = tonumber(b.name:match("^Process%-(%d+)$"))
      assert.is_not_nil(na, a.name)
      assert.is_not_nil(nb, b.name)
      assert.are.equal(na + 1, nb)
    end)

    it("takes name from the options and lets it be set", function()
      local p = concur.Process{name = "worker-7", target = function() end}
      assert.are.equal("worker-7", p.name)
      p.name = "renamed"
      assert.are.equal("renamed", p.name)
      assert.are.equal("renamed", p:getName())
    end)

    it("daemon defaults to false and can be set before start", function()
      local p = concur.Process{target = function() end}
      assert.is_false(p.daemon)
      p.daemon = true
      assert.is_true(p.daemon)
      local q = concur.Process{target = function() end, daemon = true}
      assert.is_true(q.daemon)
      assert.is_true(q:isDaemon())
    end)

    it("setting daemon after start raises", function()
      local p = concur.Process{target = function() end}
      p:start()
      local msg = err_of(function() p.daemon = true end)
      assert.is_truthy(msg:find("already started", 1, true), msg)
      p:join()
      assert.is_false(p.daemon)
      err_of(function() p.daemon = false end)
    end)

    it("pid and exitcode are read-only", function()
      local p = concur.Process{target = function() end}
      err_of(function() p.pid = 3 end)
      err_of(function() p.exitcode = 3 end)
    end)

    it("rejects bad options", function()
      assert.is_truthy(err_of(concur.Process, {target = 5}):find("target", 1, true))
      assert.is_truthy(err_of(concur.Process, {daemon = "yes"}):find("daemon", 1, true))
      assert.is_truthy(err_of(concur.Process, {bogus = 1}):find("bogus", 1, true))
    end)
  end)

  describe("exitcode", function()
    it("is nil before start and while running", function()
      local p = concur.Process{target = function() concur.sleep(5) end}
      assert.is_nil(p.exitcode)
      p:start()
      assert.is_nil(p.exitcode)
      p:kill()
      p:join()
      assert.are.equal(-9, p.exitcode)
    end)

    it("is 0 after a normal end", function()
      local p = go(function() return 7 end)
      p:join()
      assert.are.equal(0, p.exitcode)
      assert.are.equal("integer", mtype(p.exitcode))
    end)

    it("is n after os.exit(n)", function()
      for _, n in ipairs({0, 3, 77, 255}) do
        local p = go(function(k) os.exit(k); os.exit(200) end, n)
        p:join()
        assert.are.equal(n, p.exitcode)
      end
    end)

    it("is 0 after os.exit(true) or os.exit(), 1 after os.exit(false)", function()
      local t = go(function() os.exit(true) end)
      local f = go(function() os.exit(false) end)
      local none = go(function() os.exit() end)
      t:join(); f:join(); none:join()
      assert.are.equal(0, t.exitcode)
      assert.are.equal(1, f.exitcode)
      assert.are.equal(0, none.exitcode)
    end)

    it("is 1 after an uncaught error, reported on stderr with a traceback", function()
      local out, code = run_fixture("process_error.lua")
      assert.are.equal(0, code, out)
      assert.is_truthy(out:find("exitcode 1\n", 1, true), out)
      assert.is_truthy(out:find("table exitcode 1\n", 1, true), out)
      assert.is_truthy(out:find("Process doomed:\n", 1, true), out)
      assert.is_truthy(out:find("boom-4321", 1, true), out)
      assert.is_truthy(out:find("stack traceback:", 1, true), out)
      -- (5.1 and LuaJIT say "in function 'inner'".)
      assert.is_truthy(out:find("in local 'inner'", 1, true) or out:find("in function 'inner'", 1, true), out)
      assert.is_truthy(out:find("Process doomed-table:\n", 1, true), out)
      assert.is_truthy(out:find("main done", 1, true), out)
    end)

    it("sends the error report to stderr, not stdout", function()
      local stdout, code = support.fixture_stdout("process_error.lua")
      assert.are.equal(0, code)
      assert.are.equal("exitcode 1\ntable exitcode 1\nmain done\n", stdout)
    end)

    for _, case in ipairs({{"terminate", -15}, {"kill", -9}}) do
      local method, code = unpack(case)
      it("is " .. code .. " after " .. method .. "()", function()
        local p = go(function() concur.sleep(5) end)
        local t0 = concur.time()
        p[method](p)
        assert.is_true(p:join())
        assert.is_true(concur.time() - t0 < 3, method .. " took " .. (concur.time() - t0) .. " s")
        assert.are.equal(code, p.exitcode)
      end)
    end

    it("is -N when the child dies of signal N from elsewhere", function()
      -- SIGUSR1 (10) sent by a shell the child starts: its default action ends it.
      local p = go(function()
        os.execute("kill -USR1 " .. concur.getpid())
        concur.sleep(5)
        os.exit(0)
      end)
      assert.is_true(p:join())
      assert.are.equal(-10, p.exitcode)
    end)
  end)

  describe("misuse", function()
    it("terminate and kill of an ended process do nothing", function()
      local p = go(function() os.exit(4) end)
      p:join()
      p:terminate()
      p:kill()
      assert.are.equal(4, p.exitcode)
      assert.is_false(p:is_alive())
    end)

    it("terminate and kill of a process that ended unjoined do nothing", function()
      local p = go(function() end)
      -- wait until it is a zombie, without reaping it
      local deadline = concur.time() + 10
      while proc_state(p.pid) ~= "Z" and concur.time() < deadline do concur.sleep(0.005) end
      assert.are.equal("Z", proc_state(p.pid))
      p:terminate()
      p:kill()
      assert.is_true(p:join())
      assert.are.equal(0, p.exitcode)
    end)

    it("terminate and kill of an unstarted process raise", function()
      local p = concur.Process{target = function() end}
      assert.is_truthy(err_of(p.terminate, p):find("before it is started", 1, true))
      assert.is_truthy(err_of(p.kill, p):find("before it is started", 1, true))
    end)

    it("start twice raises, while running and after join", function()
      local p = go(function() concur.sleep(5) end)
      assert.is_truthy(err_of(p.start, p):find("processes can only be started once", 1, true))
      p:terminate()
      p:join()
      assert.is_truthy(err_of(p.start, p):find("processes can only be started once", 1, true))
      assert.are.equal(-15, p.exitcode)
    end)

    it("join before start raises", function()
      local p = concur.Process{target = function() end}
      local msg = err_of(p.join, p)
      assert.is_truthy(msg:find("before it is started", 1, true), msg)
    end)

    it("join with a negative timeout is an argument error", function()
      local p = go(function() end)
      local msg = err_of(p.join, p, -1)
      assert.is_truthy(msg:find("bad argument #", 1, true), msg)
      assert.is_true(p:join())
    end)

    it("joining the current process raises", function()
      local msg = err_of(function() return concur.current_process():join() end)
      assert.is_truthy(msg:find("cannot join current process", 1, true), msg)
      -- and in a child, where the current process is the Process itself
      local p = go(function()
        local ok, err = pcall(function() return concur.current_process():join() end)
        os.exit((not ok and tostring(err):find("cannot join current process", 1, true)) and 21 or 1)
      end)
      p:join()
      assert.are.equal(21, p.exitcode)
    end)

    it("a process can only be started from the Lua state that created it", function()
      local p = concur.Process{target = function() end}
      local t = concur.Thread{target = function(h)
        local ok, err = pcall(h.start, h)
        return ok, tostring(err)
      end, args = {p}}
      t:start()
      local ok, msg = t:result()
      assert.is_false(ok)
      assert.is_truthy(msg:find("can only be started from the Lua state that created it", 1, true), msg)
      assert.is_nil(p.pid)
      -- still startable here
      p:start()
      assert.is_true(p:join())
      assert.are.equal(0, p.exitcode)
    end)

    it("a daemon process cannot start children", function()
      local p = concur.Process{daemon = true, target = function()
        local ok, err = pcall(function() concur.Process{target = function() end}:start() end)
        os.exit((not ok and tostring(err):find("daemonic processes are not allowed", 1, true)) and 31 or 1)
      end}
      p:start()
      p:join()
      assert.are.equal(31, p.exitcode)
    end)
  end)

  describe("subclassing", function()
    it("runs the subclass's run on a copy with its fields and methods", function()
      local ClockProcess = concur.Process:extend()
      function ClockProcess:init(interval, base)
        self.interval = interval
        self.base = base
      end
      function ClockProcess:code() return self.base + math.floor(self.interval * 1000) end
      function ClockProcess:run()
        concur.sleep(self.interval)
        os.exit(self:code())
      end
      local p = ClockProcess(0.02, 40)
      assert.matches("^Process%-%d+$", p.name)
      assert.is_false(p.daemon)
      assert.are.equal(0.02, p.interval)
      p:start()
      assert.is_true(p:join())
      assert.are.equal(60, p.exitcode)
    end)

    it("a subclass init may set name and daemon", function()
      local Named = concur.Process:extend()
      function Named:init(name) self.name = name; self.daemon = true; self.code = 12 end
      function Named:run()
        os.exit(concur.current_process().name == "clock-x" and self.code or 1)
      end
      local p = Named("clock-x")
      assert.are.equal("clock-x", p.name)
      assert.is_true(p.daemon)
      p:start()
      p:join()
      assert.are.equal(12, p.exitcode)
    end)

    it("a subclass of a subclass inherits run and uses its own init", function()
      local Base = concur.Process:extend()
      function Base:run() os.exit(self.code) end
      local Sub = Base:extend()
      function Sub:init() self.code = 17 end
      local p = Sub()
      p:start()
      p:join()
      assert.are.equal(17, p.exitcode)
    end)
  end)

  describe("current_process and parent_process", function()
    it("in the parent: MainProcess with this pid, and no parent", function()
      local me = concur.current_process()
      assert.are.equal("MainProcess", me.name)
      assert.are.equal(concur.getpid(), me.pid)
      assert.is_true(me:is_alive())
      assert.is_nil(concur.parent_process())
    end)

    it("in the child: the Process's name and pid; the parent is MainProcess", function()
      local p, lines = child_report(function()
        local me, parent = concur.current_process(), concur.parent_process()
        return me.name, me.pid, parent.name, parent.pid
      end, {name = "reporter"})
      assert.are.same({"reporter", tostring(p.pid), "MainProcess", tostring(concur.getpid())}, lines)
    end)

    it("in a grandchild: the parent is the child Process", function()
      local _, lines = child_report(function()
        local path = os.tmpname()
        local g = concur.Process{name = "grandchild", target = function()
          local out = io.open(path, "w")
          local me, parent = concur.current_process(), concur.parent_process()
          out:write(me.name, "\n", me.pid, "\n", parent.name, "\n", parent.pid, "\n")
          out:close()
        end}
        g:start()
        g:join()
        local f = io.open(path)
        local text = f:read("*a")
        f:close()
        os.remove(path)
        return concur.getpid(), g.pid, text
      end, {name = "middle"})
      local middle_pid, g_pid = lines[1], lines[2]
      assert.are.same({"grandchild", g_pid, "middle", middle_pid}, {lines[3], lines[4], lines[5], lines[6]})
    end)
  end)

  describe("active_children", function()
    it("lists started live children, the same handles", function()
      local p = concur.Process{target = function() concur.sleep(5) end}
      assert.is_false(listed(concur.active_children(), p))
      p:start()
      local list = concur.active_children()
      assert.is_true(listed(list, p))
      p:terminate()
      p:join()
      assert.is_false(listed(concur.active_children(), p))
    end)

    it("reaps ended children that were never joined", function()
      local long = go(function() concur.sleep(5) end)
      local short = go(function() os.exit(6) end)
      local pid = short.pid
      -- wait until the short one is a zombie (touching neither handle)
      local deadline = concur.time() + 10
      while proc_state(pid) ~= "Z" and concur.time() < deadline do concur.sleep(0.005) end
      assert.are.equal("Z", proc_state(pid))
      local list = concur.active_children()
      assert.is_false(listed(list, short))
      assert.is_true(listed(list, long))
      assert.is_false(exists(pid), "the ended child was not reaped")
      assert.are.equal(6, short.exitcode)
      assert.is_false(short:is_alive())
      assert.is_true(short:join(0))
      long:kill()
      long:join()
      assert.are.equal(-9, long.exitcode)
    end)
  end)

  describe("main_thread and current_thread in a child", function()
    -- The child reports through child_report's file: one line per value.
    it("forked from the main thread: the parent's main thread, alive", function()
      local main = concur.main_thread()
      local _, lines = child_report(function()
        local m = concur.main_thread()
        return rawequal(m, main), rawequal(concur.current_thread(), m), m:is_alive(), m.name
      end)
      assert.are.same({"true", "true", "true", "MainThread"}, lines)
    end)

    it("forked from a thread: that thread; the parent's other threads have ended", function()
      local path = os.tmpname()
      local release = concur.Event()
      local other = concur.Thread{name = "other", target = function() release:wait(30) end}
      other:start()
      local forker = concur.Thread{name = "forker", target = function(file, main, other)
        local c = require "concur"
        local me = c.current_thread()
        local p = c.Process{target = function()
          local m = c.main_thread()
          local lines = {
            rawequal(m, me), rawequal(c.current_thread(), m), m.name, m:is_alive(),
            -- the parent's main and other threads do not exist here
            main:is_alive(), main:join(), main:join(0),
            other:is_alive(), other:join(0),
            select(2, pcall(m.join, m, 0)),
            c.active_count(),
          }
          local out = io.open(file, "w")
          for _, v in ipairs(lines) do out:write(tostring(v), "\n") end
          out:close()
        end}
        p:start()
        return p:join(30), p.exitcode
      end, args = {path, concur.main_thread(), other}}
      forker:start()
      local joined, code = forker:result()
      release:set()
      other:join()
      local lines = {}
      for line in io.lines(path) do lines[#lines + 1] = line end
      os.remove(path)
      assert.is_true(joined)
      assert.are.equal(0, code)
      assert.are.same({"true", "true", "forker", "true", "false", "true", "true", "false", "true"},
        {unpack(lines, 1, 9)})
      assert.matches("cannot join current thread", lines[10])
      assert.are.equal("1", lines[11])
      -- and in the parent nothing changed
      assert.are.equal("MainThread", concur.main_thread().name)
      assert.is_true(concur.main_thread():is_alive())
    end)

    -- A thread started in such a child (TSan: in a fixture, see above).
    it("a thread joining the main thread in a child forked from the main thread waits for its end",
      function()
        local out, code = run_fixture("thread_join_main.lua", "fork_main")
        assert.are.equal(0, code, out)
        support.assert_in_order(out, "end of main\n", "end of thread\ttrue\tfalse\n")
        support.assert_in_order(out, "end of thread\ttrue\tfalse\n", "child joined\ttrue\t0\n")
      end)

    it("a thread joining the parent's main thread in a child forked from a thread returns at once",
      function()
        local out, code = run_fixture("thread_join_main.lua", "fork_thread")
        assert.are.equal(0, code, out)
        support.assert_in_order(out, "end of main\n", "end of thread\ttrue\tfalse\n")
        support.assert_in_order(out, "end of thread\ttrue\tfalse\n", "child joined\ttrue\t0\n")
      end)
  end)

  describe("with threads", function()
    it("a process can start a thread and return its result", function()
      local out, code = run_fixture("process_threads.lua")
      assert.are.equal(0, code, out)
      assert.is_truthy(out:find("process with thread\ttrue\t42\n", 1, true), out)
      assert.is_truthy(out:find("thread with process\ttrue\t23\ttrue\t0\n", 1, true), out)
    end)

    it("a thread can start a process and join it", function()
      local t = concur.Thread{target = function()
        local p = concur.Process{target = function() os.exit(23) end}
        p:start()
        local joined = p:join()
        return joined, p.exitcode, p.pid ~= concur.getpid()
      end}
      t:start()
      assert.are.same({true, 23, true}, {t:result()})
    end)

    it_unless_asan("a child forked while other threads are busy in concur works normally", function()
      -- Threads that start and join threads (concur's own locks, taken all the
      -- time) until a deadline well after the forks below should be done.
      local until_t = concur.time() + 0.5
      local busy = {}
      for i = 1, 4 do
        busy[i] = concur.Thread{target = function(deadline)
          local n = 0
          while concur.time() < deadline do
            local t = concur.Thread{target = function(k) return k + 1 end, args = {n}}
            t:start()
            n = t:result()
            concur.active_count()
          end
          return n
        end, args = {until_t}}
        busy[i]:start()
      end
      local codes, stuck = {}, 0
      for i = 1, 20 do
        local p = go(function(k)
          -- concur's locks, in the child: thread and process tables
          local n = concur.active_count() + #concur.enumerate() + #concur.active_children()
          local g = concur.Process{target = function() os.exit(k) end}
          g:start()
          g:join()
          if n < 2 or g.exitcode ~= k then os.exit(1) end
          if not TSAN then
            local t = concur.Thread{target = function() return k end}
            t:start()
            os.exit(t:result())
          end
          os.exit(k)
        end, i)
        if TSAN and not p:join(60) then
          -- the sanitizer's hang (see spinning, above), not concur's: left out
          assert.is_true(spinning(p.pid), "child " .. i .. " is stuck asleep")
          p:kill()
          p:join()
          stuck = stuck + 1
          codes[i] = i
        else
          p:join()
          codes[i] = p.exitcode
        end
      end
      assert.is_true(stuck <= 3, stuck .. " children stuck in the sanitizer")
      for i = 1, 4 do assert.is_true(busy[i]:result() > 0) end
      local want = {}
      for i = 1, 20 do want[i] = i end
      assert.are.same(want, codes)
    end)
  end)

  describe("output", function()
    it("buffered output is printed once when stdout is a pipe", function()
      local out, code = run_fixture("process_output_once.lua")
      assert.are.equal(0, code, out)
      assert.are.equal(1, count(out, "before\n"), out)
      assert.are.equal(1, count(out, "child\n"), out)
      assert.are.equal("before\nchild\nafter 0\n", out)
    end)

    it("buffered output is printed once when stdout is a file", function()
      local path = os.tmpname()
      local cmd = support.fixture_command("process_output_once.lua") ..
        " >" .. shell_quote(path) .. " 2>&1"
      local ok = support.execute(cmd)
      local f = assert(io.open(path))
      local out = f:read("*a")
      f:close()
      os.remove(path)
      assert.is_true(ok, out)
      assert.are.equal(1, count(out, "before\n"), out)
      assert.are.equal(1, count(out, "child\n"), out)
      assert.are.equal("before\nchild\nafter 0\n", out)
    end)
  end)

  describe("exit rules", function()
    for _, how in ipairs({"end", "exit0"}) do
      it("waits for a non-daemon child before the parent exits (" .. how .. ")", function()
        local out, code, elapsed = run_then_mark("process_exit_nondaemon.lua", how)
        assert.are.equal(0, code, out)
        local main_at = out:find("main done\tfalse\ttrue", 1, true)
        local child_at = out:find("child done", 1, true)
        local exit_at = out:find("parent exited", 1, true)
        assert.is_not_nil(main_at, out)
        assert.is_not_nil(child_at, out)
        assert.is_true(main_at < child_at and child_at < exit_at, out)
        assert.is_true(elapsed >= 0.25, "exited after " .. elapsed .. " s")
      end)
    end

    for _, how in ipairs({"end", "exit0"}) do
      it("terminates a daemon child instead of waiting (" .. how .. ")", function()
        local out, code, elapsed = run_fixture("process_exit_daemon.lua", how)
        assert.are.equal(0, code, out)
        assert.is_truthy(out:find("main done\ttrue\ttrue", 1, true), out)
        assert.is_nil(out:find("daemon done", 1, true), out)
        assert.is_true(elapsed < 3.5, "exited after " .. elapsed .. " s (the daemon sleeps 5 s)")
        local pid = tonumber(out:match("daemon pid (%d+)"))
        assert.is_not_nil(pid, out)
        assert.is_false(exists(pid), "daemon child " .. pid .. " still exists")
        assert.is_false(support.execute("kill -0 " .. pid .. " 2>/dev/null"))
      end)
    end

    it("a child waits for the non-daemon thread it started", function()
      local out, code, elapsed = run_fixture("process_child_thread.lua")
      assert.are.equal(0, code, out)
      support.assert_in_order(out, "child thread done\n", "exitcode 0\n")
      assert.is_truthy(out:find("joined\ttrue", 1, true), out)
      assert.is_true(elapsed >= 0.25, "exited after " .. elapsed .. " s")
    end)

    it("a child joins its non-daemon children and terminates its daemon ones", function()
      local out, code, elapsed = run_fixture("process_grandchild.lua")
      assert.are.equal(0, code, out)
      support.assert_in_order(out, "grandchild done\n", "exitcode 0\n")
      assert.is_nil(out:find("daemon grandchild done", 1, true), out)
      assert.is_true(elapsed < 3.5, "exited after " .. elapsed .. " s (the daemon sleeps 5 s)")
      local pid = tonumber(out:match("daemon grandchild pid (%d+)"))
      assert.is_not_nil(pid, out)
      assert.is_false(exists(pid), "daemon grandchild " .. pid .. " still exists")
    end)
  end)

  describe("a daemon child and its parent's death", function()
    -- The child asks to be told (PR_SET_PDEATHSIG) when the *thread* that
    -- forked it ends; it must end only when the parent process does.  A
    -- worker leaves when MAX_IDLE_WORKERS (8) are parked already: 9 threads
    -- fill the idle stack, then the forking thread ends and its worker leaves.
    local function ntasks()
      local p = assert(io.popen("ls /proc/" .. concur.getpid() .. "/task"))
      local n = 0
      for _ in p:lines() do n = n + 1 end
      p:close()
      return n
    end

    it("lives on when the thread that started it ends and its worker leaves", function()
      if not io.open("/proc/self/task") then return end
      local ping, pong = concur.Queue(), concur.Queue()
      local hold, forked, go_on = concur.Event(), concur.Event(), concur.Event()
      local holders = {}
      for i = 1, 9 do
        holders[i] = concur.Thread{target = function() hold:wait() end}
        holders[i]:start()
      end
      local forker = concur.Thread{target = function()
        local d = concur.Process{daemon = true, target = function()
          for x in function() return ping:get() end do pong:put(x) end
        end}
        d:start()
        forked:set()
        go_on:wait()
        return d
      end}
      forker:start()
      forked:wait()
      local before = ntasks()
      hold:set()
      for _, t in ipairs(holders) do t:join() end
      -- One holder's worker leaves, the last to finish: the other 8 are parked.
      assert.is_true(support.eventually(function() return ntasks() <= before - 1 end, 10))
      go_on:set()
      local d = forker:result()
      assert.is_true(support.eventually(function() return ntasks() <= before - 2 end, 10),
        "the forking thread's worker did not leave")
      ping:put("still there?")
      assert.are.equal("still there?", pong:get(true, 10))
      assert.is_true(d:is_alive())
      ping:put(nil)
      assert.are.equal(0, support.finish(d))
    end)
  end)

  describe("resources", function()
    it("1000 processes started and joined leave no zombie and no fd behind", function()
      local out, code = run_fixture("process_many.lua", "1000")
      assert.are.equal(0, code, out)
      local before, after = out:match("fds (%d+) (%d+)")
      assert.is_not_nil(before, out)
      assert.are.equal(before, after, out)
      assert.is_truthy(out:find("zombies 0\n", 1, true), out)
      assert.is_truthy(out:find("bad 0\n", 1, true), out)
      assert.is_truthy(out:find("children 0\n", 1, true), out)
    end)
  end)
end)
