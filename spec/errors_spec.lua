-- spec/errors_spec.lua: where the errors of the Lua layer (lua/concur.lua)
-- point, and which value a failed thread's or task's result raises.
--
-- A mistake made through the public API is reported at the line of the
-- user's call, as a C function's luaL_error reports it: never at a line of
-- concur.lua (nor of its compiled-in copy, "concur:"), whatever the depth of
-- the call inside the layer (a check in a helper, Thread.init called from a
-- subclass's init, the Pool's owner check reached from a result's get, an
-- error of the C core called by the layer).  Error values (concur.Empty,
-- TimeoutError, a task's error object) are raised unchanged.
--
-- Each case below is a function written on one line that makes one wrong
-- call: the error must begin with this file's name and that line.
local concur = require "concur"
local support = require "support"
local mtype = support.mtype   -- cross to threads with the functions that use them

local assert_has = support.assert_has

-- The line fn is written on (each case is a one-line function).
local function line_of(fn)
  return debug.getinfo(fn, "S").linedefined
end

-- Asserts that msg is reported at line `line` of the file named `file`
-- (a Lua pattern), with nothing of the library's positions in it, and that
-- it contains `want` (plain) if given.
local function assert_at(msg, file, line, want)
  assert.is_string(msg, "expected a message, got a " .. type(msg))
  local first = msg:match("^[^\n]*")
  assert.is_truthy(first:find("^[^:]*" .. file .. ":" .. line .. ": "),
    ("expected the error at %s:%d, got %q"):format(file, line, first))
  assert.is_nil(msg:find("concur%.lua"), "a position inside concur.lua: " .. msg)
  assert.is_nil(first:find("concur:%d+:"), "a position inside the compiled-in layer: " .. msg)
  if want then assert_has(first, want) end
end

-- Calls the one-line function fn, which must raise at its own line.
local function at_line(fn, want)
  local ok, e = pcall(fn)
  assert.is_false(ok, "expected an error (" .. tostring(want) .. ")")
  assert_at(e, "errors_spec%.lua", line_of(fn), want)
end

local function noop() end

-- A pool result that stays pending until ev is set.
local function pending_result(pool, ev)
  return pool:apply_async(function(e) e:wait() end, {ev})
end

-- Lets pool's pending task end (Event ev), ends the pool, and asserts that
-- each of the n cases in `out` ({message, line}) was refused as another's
-- pool, the error at the case's own line.
local function assert_refused_at_callers(out, n, pool, ev)
  ev:set()
  pool:close()
  pool:join()
  assert.equal(n, #out)
  for _, c in ipairs(out) do
    assert_at(c[1], "errors_spec%.lua", c[2], "this pool belongs to another thread or process")
  end
end

describe("errors raised by the Lua layer", function()
  it("point at the caller's line: Queue, JoinableQueue, Pipe", function()
    at_line(function() local _ = concur.Queue{bad = 1} end, "unknown option 'bad'")
    at_line(function() local _ = concur.Queue("x") end, "bad argument #1 to 'Queue'")
    at_line(function() local _ = concur.Queue(1.5) end, "no integer representation")
    at_line(function() local _ = concur.Queue(2^40) end, "maxsize too large")
    at_line(function() local _ = concur.Queue{maxsize = "x"} end, "option 'maxsize'")
    at_line(function() local _ = concur:Queue(5) end, "got the concur module")
    at_line(function() local _ = concur.JoinableQueue{max = 1} end, "to 'JoinableQueue'")
    at_line(function() local _ = concur.Pipe{duplex = 1} end, "option 'duplex'")
    at_line(function() local _ = concur.Pipe(1) end, "bad argument #1 to 'Pipe'")
    at_line(function() local _ = concur.Pipe{bad = true} end, "unknown option 'bad'")
  end)

  it("point at the caller's line: Thread, Process, extend, error values", function()
    at_line(function() local _ = concur.Thread{bad = 1} end, "unknown option 'bad'")
    at_line(function() local _ = concur.Thread(5) end, "table of options expected")
    at_line(function() local _ = concur.Thread{target = 5} end, "target must be callable")
    at_line(function() local _ = concur.Process{name = {}} end, "name must be a string")
    at_line(function() local _ = concur.Process{daemon = 1} end, "daemon must be a boolean")
    at_line(function() local _ = concur.Thread.extend(5) end, "to 'extend'")
    at_line(function() concur.Empty.name = "x" end, "read-only")
    local t = concur.Thread{target = noop}
    at_line(function() local _ = concur.Thread.getName(5) end, "to 'getName'")
    at_line(function() t:setName({}) end, "to 'setName'")
    at_line(function() t:setDaemon(1) end, "to 'setDaemon'")
    at_line(function() local _ = concur.Thread.isDaemon(5) end, "to 'isDaemon'")
    at_line(function() concur.Thread.run(5) end, "to 'run'")
    at_line(function() concur.Process.run(5) end, "to 'run'")
    t:start()
    at_line(function() t:setDaemon(true) end, "cannot set daemon status of active thread")
    t:join()
  end)

  it("point at the caller's line from a subclass's init", function()
    -- The layer's checks run one call deeper than from Thread{...}.
    local T = concur.Thread:extend()
    function T:init(opts) concur.Thread.init(self, opts) end
    local ok, e = pcall(T, {bad = 1})
    assert.is_false(ok)
    assert_at(e, "errors_spec%.lua", line_of(T.init), "unknown option 'bad'")
    local P = concur.Process:extend()
    function P:init(opts) concur.Process.init(self, opts) end
    ok, e = pcall(P, {target = 5})
    assert.is_false(ok)
    assert_at(e, "errors_spec%.lua", line_of(P.init), "target must be callable")
    local TT = concur.Timer:extend()
    function TT:init(i, f) concur.Timer.init(self, i, f) end
    ok, e = pcall(TT, -1, noop)
    assert.is_false(ok)
    assert_at(e, "errors_spec%.lua", line_of(TT.init), "bad argument #1 to 'Timer'")
    -- A subclass without an init of its own: the line that makes it.
    local U = concur.Thread:extend()
    at_line(function() local _ = U{daemon = 1} end, "daemon must be a boolean")
    local UT = concur.Timer:extend()
    at_line(function() local _ = UT(1, 5) end, "bad argument #2 to 'Timer'")
  end)

  it("point at the caller's line: Timer", function()
    at_line(function() local _ = concur.Timer(-1, noop) end, "bad argument #1 to 'Timer'")
    at_line(function() local _ = concur.Timer(0 / 0, noop) end, "bad argument #1 to 'Timer'")
    at_line(function() local _ = concur.Timer(1, 5) end, "bad argument #2 to 'Timer'")
    at_line(function() local _ = concur.Timer(1, noop, 5) end, "bad argument #3 to 'Timer'")
    local plain = concur.Thread{target = noop}
    at_line(function() concur.Timer.cancel(plain) end, "to 'cancel' (concur.Timer expected")
    at_line(function() concur.Timer.cancel(5) end, "to 'cancel'")
    at_line(function() concur.Timer.run(5) end, "to 'run'")
  end)

  it("point at the caller's line: Pool and ThreadPool construction", function()
    at_line(function() local _ = concur.ThreadPool(0) end, "number of workers")
    at_line(function() local _ = concur.Pool(1.5) end, "number of workers")
    at_line(function() local _ = concur.ThreadPool{bad = 1} end, "unknown option 'bad'")
    at_line(function() local _ = concur.ThreadPool(1, 5) end, "bad argument #2 to 'ThreadPool'")
    at_line(function() local _ = concur.ThreadPool(1, noop, 5) end, "bad argument #3 to 'ThreadPool'")
    local co = coroutine.create(noop)
    at_line(function() local _ = concur.ThreadPool(1, noop, {co}) end, "cannot be sent")
  end)

  it("an argument too many is a bad argument, at the caller's line (as Python's TypeError)", function()
    local function nope(n, name) return ("bad argument #%d to '%s' (no value expected)"):format(n, name) end
    at_line(function() local _ = concur.Barrier(2, nil, nil, 1) end, nope(4, "Barrier"))
    at_line(function() local _ = concur.Barrier(2, noop, 5, false) end, nope(4, "Barrier"))
    at_line(function() local _ = concur.Pipe(true, 1) end, nope(2, "Pipe"))
    at_line(function() local _ = concur.Pipe(nil, 1) end, nope(2, "Pipe"))
    at_line(function() local _ = concur.Pipe({duplex = false}, 1) end, nope(2, "Pipe"))
    at_line(function() local _ = concur.Thread({}, 1) end, nope(2, "Thread"))
    at_line(function() local _ = concur.Thread(nil, nil) end, nope(2, "Thread"))
    at_line(function() local _ = concur.Process({target = noop}, "x") end, nope(2, "Process"))
    at_line(function() local _ = concur.Timer(1, noop, {}, 1) end, nope(4, "Timer"))
    at_line(function() local _ = concur.Timer(1, noop, nil, nil) end, nope(4, "Timer"))
    at_line(function() local _ = concur.ThreadPool(1, nil, nil, 1) end, nope(4, "ThreadPool"))
    at_line(function() local _ = concur.Pool(1, noop, {}, 1) end, nope(4, "Pool"))
    at_line(function() local _ = concur.ThreadPool({threads = 1}, 2) end, nope(2, "ThreadPool"))
    at_line(function() local _ = concur.Pool({processes = 1}, nil) end, nope(2, "Pool"))
    local T = concur.Thread:extend()   -- a subclass without an init of its own: the same
    at_line(function() local _ = T({}, 1) end, nope(2, "Thread"))
    -- As many as they take is fine.
    assert.are.equal(2, concur.Barrier(2, noop, 5).parties)
    local a, b = concur.Pipe({duplex = false})
    a:close()
    b:close()
    assert.is_truthy(tostring(concur.Timer(1, noop, {})):find("Thread", 1, true))
    assert.is_truthy(tostring(concur.Thread{target = noop}):find("Thread", 1, true))
    local pool = concur.ThreadPool(1, noop, {})
    pool:close()
    pool:join()
  end)

  it("an unknown option is a bad argument of every constructor taking a table", function()
    local function unknown(name) return ("bad argument #1 to '%s' (unknown option 'xyz')"):format(name) end
    at_line(function() local _ = concur.Pipe{xyz = 1} end, unknown("Pipe"))
    at_line(function() local _ = concur.Thread{xyz = 1} end, unknown("Thread"))
    at_line(function() local _ = concur.Process{xyz = 1} end, unknown("Process"))
    at_line(function() local _ = concur.Pool{xyz = 1} end, unknown("Pool"))
    at_line(function() local _ = concur.ThreadPool{processes = 1, xyz = 1} end, unknown("ThreadPool"))
    -- Barrier and Timer take no table: one is a bad argument #1 too.
    at_line(function() local _ = concur.Barrier{parties = 2} end, "bad argument #1 to 'Barrier'")
    at_line(function() local _ = concur.Timer{interval = 1} end, "bad argument #1 to 'Timer'")
  end)

  it("point at the caller's line: Pool methods and results", function()
    local pool = concur.ThreadPool(1)
    local co = coroutine.create(noop)
    at_line(function() local _ = pool:apply_async(5) end, "bad argument #1 to 'apply_async'")
    at_line(function() local _ = pool:apply_async(noop, 5) end, "bad argument #2 to 'apply_async'")
    at_line(function() local _ = pool:apply_async(noop, nil, 5) end, "bad argument #3 to 'apply_async'")
    at_line(function() local _ = pool:apply(5) end, "bad argument #1 to 'apply'")
    at_line(function() local _ = pool:apply(noop, 5) end, "bad argument #2 to 'apply'")
    at_line(function() local _ = pool:apply(noop, {co}) end, "the task cannot be sent")
    at_line(function() local _ = pool:map(5, {}) end, "bad argument #1 to 'map'")
    at_line(function() local _ = pool:map(noop, 5) end, "bad argument #2 to 'map'")
    at_line(function() local _ = pool:map(noop, {1}, 0) end, "chunksize")
    at_line(function() local _ = pool:map(noop, {co}) end, "the task cannot be sent")
    at_line(function() local _ = pool:map_async(noop, {}, nil, 5) end, "bad argument #4 to 'map_async'")
    at_line(function() local _ = pool:starmap(noop, {1}) end, "list of argument lists expected")
    at_line(function() local _ = pool:starmap_async(noop, {}, nil, nil, 5) end, "bad argument #5")
    at_line(function() local _ = pool:imap(noop, 5) end, "bad argument #2 to 'imap'")
    at_line(function() local _ = pool:imap_unordered(noop, {}, -1) end, "chunksize")
    at_line(function() local _ = concur.Pool.apply(5, noop) end, "concur.Pool expected")
    at_line(function() concur.Pool.close(5) end, "to 'close'")
    at_line(function() pool:join() end, "pool is still running")
    local ev = concur.Event()
    local r = pending_result(pool, ev)
    at_line(function() local _ = r:successful() end, "result is not ready")
    at_line(function() local _ = r:get(-1) end, "bad argument #1 to 'get'")
    at_line(function() local _ = r:wait("x") end, "bad argument #1 to 'wait'")
    at_line(function() local _ = r.get(5) end, "concur.AsyncResult expected")
    -- An error value is raised as itself, with no position.
    local ok, e = pcall(r.get, r, 0)
    assert.is_false(ok)
    assert.equal(concur.TimeoutError, e)
    ev:set()
    r:get()
    pool:close()
    at_line(function() local _ = pool:apply(noop) end, "apply: pool is closed")
    at_line(function() local _ = pool:map(noop, {1}) end, "map: pool is closed")
    at_line(function() local _ = pool:imap(noop, {1}) end, "imap: pool is closed")
    pool:join()
    pool:terminate()
    at_line(function() local _ = pool:apply_async(noop) end, "apply_async: pool is terminated")
  end)

  -- A pool or its result cannot reach another thread: the transfer refuses
  -- it (the forked child below has a copy of everything instead).
  it("refuse a pool or its result at the transfer to another thread", function()
    local pool = concur.ThreadPool(1)
    local ev = concur.Event()
    local r = pending_result(pool, ev)
    local ran = concur.Event()
    for _, args in ipairs({{pool}, {r}, {1, {p = pool}}}) do
      local t = concur.Thread{target = function() ran:set() end, args = args}
      local ok, e = pcall(t.start, t)
      assert.is_false(ok)
      assert_has(e, args[1] == r and "bad value at args[1] (concur.AsyncResult)"
        or args[1] == pool and "bad value at args[1] (concur.ThreadPool)"
        or "bad value at args[2].p (concur.ThreadPool)")
      assert.is_false(t:is_alive())
    end
    assert.is_false(ran:is_set())
    ev:set()
    assert.is_nil(r:get(10))
    pool:close()
    pool:join()
  end)

  it("point at the caller's line when a pool or its result is used in a forked child", function()
    local pool = concur.ThreadPool(1)
    local ev = concur.Event()
    local r = pending_result(pool, ev)
    local q = concur.Queue()
    local p = concur.Process{target = function()
      local function case(f)
        local ok, e = pcall(f)
        q:put({ok and "(no error)" or tostring(e), debug.getinfo(f, "S").linedefined})
      end
      case(function() local _ = r:get(0) end)
      case(function() local _ = r:wait(0) end)
      case(function() local _ = pool:apply(print) end)
      case(function() local _ = pool:imap(print, {1}) end)
      case(function() pool:close() end)
      q:put(false)
    end}
    p:start()
    local out = {}
    while true do
      local c = q:get(true, 20)
      if not c then break end
      out[#out + 1] = c
    end
    assert.equal(0, support.finish(p))
    assert_refused_at_callers(out, 5, pool, ev)
  end)

  it("point at the caller's line when the C core refuses (full arena, no descriptors)", function()
    local cmd = "ulimit -n 64; CONCUR_ARENA_MB=1 " ..
      support.fixture_command("errors_resources.lua") .. " 2>&1"
    local out = support.shell(cmd)
    local seen = {}
    for name, line, msg in out:gmatch("case\t([^\t]+)\t(%d+)\t([^\n]*)") do
      seen[#seen + 1] = name
      assert_at(msg, "errors_resources%.lua", tonumber(line))
      assert.is_truthy(msg:find("arena is full") or msg:find("cannot make a Pipe"), msg)
    end
    assert.same({"Queue", "JoinableQueue", "Timer", "ThreadPool", "Pipe"},
      seen, out)
  end)
end)

describe("a raised error value", function()
  -- One-line functions: the value must carry this file and that line.
  local function raised_at(fn)
    local ok, e = pcall(fn)
    assert.is_false(ok, "expected an error value")
    assert.equal("table", type(e), tostring(e))
    return e, "errors_spec.lua:" .. line_of(fn) .. ": "
  end

  it("is == its value, names it, and tostring gives the caller's line", function()
    local q, full = concur.Queue(), concur.Queue(1)
    full:put(1)
    local b = concur.Barrier(2)
    b:abort()
    local t = concur.Thread{target = function(ev) ev:wait(10) end, args = {concur.Event()}}
    local cases = {
      {"Empty", function() local _ = q:get_nowait() end},
      {"Empty", function() local _ = q:get(true, 0.01) end},
      {"Full", function() full:put_nowait(2) end},
      {"BrokenBarrierError", function() local _ = b:wait() end},
      {"TimeoutError", function() local _ = t:result(0.01) end},
    }
    t:start()
    for _, c in ipairs(cases) do
      local name, fn = c[1], c[2]
      local e, where = raised_at(fn)
      assert.is_true(e == concur[name], name)
      assert.equal(concur[name], e)
      assert.is_false(rawequal(e, concur[name]), "a raise makes an object of its own")
      assert.equal(name, e.name)
      assert_has(tostring(e), where .. "concur." .. name)
      assert.is_truthy(tostring(e):find("concur%." .. name .. "$"), tostring(e))
      for _, other in ipairs({"Empty", "Full", "TimeoutError", "BrokenBarrierError"}) do
        if other ~= name then assert.is_false(e == concur[other], name .. " == " .. other) end
      end
      assert.is_false(e == {}, "== a plain table")
      assert.is_false(e == setmetatable({}, getmetatable(e) and {}), "== another table")
      assert.is_false(e == concur.Sentinel(name))
      assert.is_true(e == select(2, pcall(fn)), "two raises of one value")
      local ok, err = pcall(function() e.name = "x" end)
      assert.is_false(ok)
      assert_has(err, "read-only")
      assert.equal(name, e.name)
    end
    t.args[1]:set()
    t:join()
  end)

  it("has no position when pcall calls the method itself, as luaL_error", function()
    local q = concur.Queue()
    local ok, e = pcall(q.get_nowait, q)
    assert.is_false(ok)
    assert.is_true(e == concur.Empty)
    assert.equal("concur.Empty", tostring(e))
  end)

  it("is raised at the user's line by AsyncResult:get", function()
    local pool = concur.ThreadPool(1)
    local ev = concur.Event()
    local r = pending_result(pool, ev)
    local e, where = raised_at(function() local _ = r:get(0.01) end)
    assert.is_true(e == concur.TimeoutError)
    assert.equal(where .. "concur.TimeoutError", tostring(e):match("[^/]*$"))
    ev:set()
    r:get(10)
    pool:close()
    pool:join()
  end)

  it("comes back from a thread == the value, with the thread's line", function()
    local target = function()
      local q = require("concur").Queue()
      local v = q:get(true, 0.01)   -- two lines below the function's
      return v
    end
    local t = concur.Thread{target = target}
    t:start()
    local ok, e = pcall(t.result, t)
    assert.is_false(ok)
    assert.is_true(e == concur.Empty, tostring(e))
    assert.equal("Empty", e.name)
    assert_has(tostring(e), "errors_spec.lua:" .. line_of(target) + 2 .. ": concur.Empty")
    -- And in a thread, the value the owner sent is the thread's own.
    local t2 = concur.Thread{target = function(sent)
      local c = require "concur"
      local q = c.Queue()
      local ok2, e2 = pcall(function() local v = q:get_nowait(); return v end)
      return rawequal(sent, c.Empty), not ok2 and e2 == c.Empty, sent == e2, e2
    end, args = {concur.Empty}}
    t2:start()
    local same, eq, eq2, back = t2:result()
    assert.is_true(same)
    assert.is_true(eq)
    assert.is_true(eq2)
    assert.is_true(back == concur.Empty)
  end)

  it("crosses to and from a process == the value", function()
    local q, back_q = concur.Queue(), concur.Queue()
    local p = concur.Process{target = function()
      local ok, e = pcall(function() local v = back_q:get(true, 0.01); return v end)
      q:put({ok, e, e == concur.Empty, tostring(e)})
      local got = back_q:get(true, 10)
      q:put({got == concur.Full, got.name, tostring(got)})
    end}
    p:start()
    local r = q:get(true, 20)
    assert.is_false(r[1])
    assert.is_true(r[3])
    assert.is_true(r[2] == concur.Empty)
    assert.equal(r[4], tostring(r[2]))
    assert_has(r[4], "errors_spec.lua:")
    local full = concur.Queue(1)
    full:put(1)
    local _, e = pcall(function() full:put(2, false) end)
    back_q:put(e)
    local back = q:get(true, 20)
    assert.equal(0, support.finish(p))
    assert.is_true(back[1])
    assert.equal("Full", back[2])
    assert.equal(tostring(e), back[3])
  end)

  -- lua.c of 5.2 to 5.4 prints tostring of the error object (5.4 and 5.3
  -- without a traceback), luajit adds one; 5.1's lua.c prints "(error
  -- object is not a string)" for any table (README, "Runtimes").
  it("shows where it was raised when nobody catches it", function()
    local lines = {queue = 8, barrier = 12, result = 16}
    local names = {queue = "Empty", barrier = "BrokenBarrierError", result = "Empty"}
    for what, line in pairs(lines) do
      local out, code = support.run_fixture("errors_uncaught.lua", what)
      assert.are_not.equal(0, code, out)
      if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then
        assert_has(out, "(error object is not a string)")
      else
        assert_has(out, "errors_uncaught.lua:" .. line .. ": concur." .. names[what])
      end
      if rawget(_G, "jit") then assert_has(out, "stack traceback:") end
    end
  end)
end)

describe("a failed thread's result", function()
  -- Runs a thread that raises v at level 0; what result() raises.
  local function raised_by_result(v)
    local t = concur.Thread{target = function(x) error(x, 0) end, args = {v}}
    t:start()
    t:join()
    local ok, e = pcall(t.result, t)
    assert.is_false(ok)
    return e
  end

  it("is the error object itself when its __tostring fails", function()
    local e = raised_by_result(setmetatable({code = 7}, {__tostring = function() error("boom") end}))
    assert.equal("table", type(e))
    assert.equal(7, e.code)
    assert.equal("function", type(getmetatable(e).__tostring))
  end)

  it("is a plain table, a number or false exactly as raised", function()
    local e = raised_by_result({code = 7})
    assert.equal("table", type(e))
    assert.equal(7, e.code)
    e = raised_by_result(42)
    assert.equal("integer", mtype(e))
    assert.equal(42, e)
    e = raised_by_result(2.5)
    assert.equal("float", mtype(e))
    assert.equal(2.5, e)
    assert.equal(false, raised_by_result(false))
    assert.equal("plain", raised_by_result("plain"))
  end)

  it("is the error object in a pool task's get, whatever its error_callback does", function()
    for _, make in ipairs({concur.ThreadPool, concur.Pool}) do
      local pool = make(1)
      local bad = function() error(setmetatable({code = 7}, {__tostring = function() error("boom") end})) end
      local ok, e = pcall(pool.apply, pool, bad)
      assert.is_false(ok)
      assert.equal(7, type(e) == "table" and e.code)
      -- An error_callback that raises it again: reported, and get still
      -- raises the task's error.
      local r = pool:apply_async(bad, nil, nil, function(x) error(x, 0) end)
      ok, e = pcall(r.get, r)
      assert.is_false(ok)
      assert.equal(7, type(e) == "table" and e.code)
      ok, e = pcall(pool.apply, pool, function() error(42, 0) end)
      assert.is_false(ok)
      assert.equal(42, e)
      pool:close()
      pool:join()
    end
  end)

  it("is reported even when the error object's __tostring fails", function()
    local out, code = support.run_fixture("errors_report.lua")
    assert.equal(0, code, out)
    assert_has(out, "Exception in thread reporter:\n(error object is a table value; its __tostring failed:")
    assert_has(out, "result: table 7")
    assert_has(out, "result: integer 42")
    assert_has(out, "Process reporter-p:\n(error object is a table value; its __tostring failed:")
    assert_has(out, "exitcode: 1")
  end)
end)
