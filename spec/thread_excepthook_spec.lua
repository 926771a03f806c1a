-- spec/thread_excepthook_spec.lua: concur.set_excepthook, concur.excepthook
-- and concur.__excepthook__ (src/thread.c, lua/concur.lua), Python's
-- threading.excepthook.
--
-- Hooks report through Queues; threads are ordered with Events and joins.
-- What goes to stderr is checked through a fixture.
local concur = require "concur"

local support = require "support"
local run_fixture, err_of = support.run_fixture, support.err_of

describe("concur.set_excepthook", function()
  -- Every test leaves the default hook in busted's state.
  after_each(function() concur.set_excepthook(nil) end)

  -- Starts a thread named `name` whose target raises `value` once `gate`
  -- (an Event, optional) is set.
  local function failing(name, value, gate)
    local t = concur.Thread{name = name, target = function(v, g)
      if g then g:wait(30) end
      error(v, 0)
    end, args = {value, gate}}
    t:start()
    return t
  end

  it("concur.excepthook is concur.__excepthook__ until a hook is set, and nil brings it back", function()
    assert.is_function(concur.__excepthook__)
    assert.is_true(rawequal(concur.excepthook, concur.__excepthook__))
    local hook = function() end
    concur.set_excepthook(hook)
    assert.is_true(rawequal(concur.excepthook, hook))
    concur.set_excepthook(nil)
    assert.is_true(rawequal(concur.excepthook, concur.__excepthook__))
    concur.set_excepthook(hook)
    concur.set_excepthook(concur.__excepthook__)
    assert.is_true(rawequal(concur.excepthook, concur.__excepthook__))
  end)

  it("assigning concur.excepthook sets the hook, as in Python", function()
    local q = concur.Queue()
    concur.excepthook = function(a) q:put(a.exc_value) end
    assert.is_nil(rawget(concur, "excepthook"))
    failing("assigned", "by-assignment"):join()
    assert.are.equal("by-assignment", q:get(false))
  end)

  it("is called in the failing thread with exc_value, traceback and thread", function()
    local q = concur.Queue()
    concur.set_excepthook(function(a)
      local c = require "concur"
      q:put({
        code = type(a.exc_value) == "table" and a.exc_value.code,
        traceback = a.traceback,
        same = rawequal(a.thread, c.current_thread()),
        name = a.thread.name,
        ident = a.thread.ident == c.get_ident(),
        alive = a.thread:is_alive(),
      })
    end)
    local t = failing("hooked", {code = 7})
    assert.is_true(t:join())
    local got = q:get(false)
    assert.are.equal(7, got.code)
    assert.are.equal("hooked", got.name)
    assert.is_true(got.same)
    assert.is_true(got.ident)
    assert.is_true(got.alive)   -- the hook runs before the thread ends
    assert.matches("stack traceback", got.traceback)
  end)

  it("leaves result() as it was: it raises the thread's error, even one the hook changed", function()
    concur.set_excepthook(function(a) a.exc_value.code = 99 end)
    local t = failing("changed", {code = 7})
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.are.equal(7, err.code)
    concur.set_excepthook(function() end)
    t = failing("string", "plain-error")
    ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.are.equal("plain-error", err)
  end)

  it("gets a string traceback when the thread's results cannot cross", function()
    local q = concur.Queue()
    concur.set_excepthook(function(a) q:put({tostring(a.exc_value), a.traceback}) end)
    local t = concur.Thread{target = function() return coroutine.create(function() end) end}
    t:start()
    t:join()
    local got = q:get(false)
    assert.matches("coroutine", got[1])
    assert.matches("coroutine", got[2])
    assert.has_error(function() t:result() end)
  end)

  it("is the hook in force when the thread starts, not when it fails", function()
    local q = concur.Queue()
    local gate = concur.Event()
    concur.set_excepthook(function(a) q:put("A:" .. a.thread.name) end)
    local t1 = failing("t1", "x", gate)
    concur.set_excepthook(function(a) q:put("B:" .. a.thread.name) end)
    local t2 = failing("t2", "x", gate)
    concur.set_excepthook(nil)
    gate:set()
    t1:join()
    t2:join()
    local got = {q:get(false), q:get(false)}
    table.sort(got)
    assert.are.same({"A:t1", "B:t2"}, got)
  end)

  it("crosses to the threads that a thread starts", function()
    local q = concur.Queue()
    concur.set_excepthook(function(a) q:put(a.thread.name) end)
    local outer = concur.Thread{target = function()
      local c = require "concur"
      local inner = c.Thread{name = "inner", target = function() error("inner failed") end}
      inner:start()
      inner:join()
    end}
    outer:start()
    outer:join()
    assert.are.equal("inner", q:get(false))
  end)

  it("set in a thread applies to that thread and those it starts, not to its creator", function()
    local q = concur.Queue()
    local main_hook = function(a) q:put("main:" .. a.thread.name) end
    concur.set_excepthook(main_hook)
    local t = concur.Thread{name = "self-hooked", target = function()
      local c = require "concur"
      c.set_excepthook(function(a) q:put("own:" .. a.thread.name) end)
      local inner = c.Thread{name = "inner", target = function() error("x") end}
      inner:start()
      inner:join()
      error("y")
    end}
    t:start()
    t:join()
    local got = {q:get(false), q:get(false)}
    table.sort(got)
    assert.are.same({"own:inner", "own:self-hooked"}, got)
    assert.is_true(rawequal(concur.excepthook, main_hook))
  end)

  it("accepts a callable table", function()
    local q = concur.Queue()
    concur.set_excepthook(setmetatable({q = q}, {__call = function(self, a)
      self.q:put(a.exc_value)
    end}))
    failing("callable", "via-call"):join()
    assert.are.equal("via-call", q:get(false))
  end)

  it("refuses what is not callable, and a hook that cannot cross to a thread", function()
    assert.matches("bad argument #1 to 'set_excepthook' %(function expected, got number%)",
      err_of(function() concur.set_excepthook(5) end))
    assert.matches("bad argument #1 to 'set_excepthook' %(function expected, got table%)",
      err_of(function() concur.set_excepthook({}) end))
    local co = coroutine.create(function() end)
    assert.matches("bad argument #1 to 'set_excepthook' %(.*coroutine",
      err_of(function() concur.set_excepthook(function() return co end) end))
    assert.is_true(rawequal(concur.excepthook, concur.__excepthook__))
  end)

  it("a hook that can no longer cross makes start() fail with a clear error", function()
    local box = {}
    concur.set_excepthook(function() return box end)
    box.co = coroutine.create(function() end)
    local t = concur.Thread{target = function() end}
    assert.matches("excepthook.*coroutine", err_of(function() t:start() end))
    box.co = nil
    t:start()
    assert.is_true(t:join())
  end)

  it("replaces the report on stderr; its own error, the default report, and nil the default again",
    function()
      local out, code = run_fixture("thread_excepthook.lua")
      assert.are.equal(0, code, out)
      -- a hook replaces the default report
      assert.is_truthy(out:find("HOOK\thooked\terr-hooked\n", 1, true), out)
      assert.is_nil(out:find("Exception in thread hooked:", 1, true), out)
      -- an error in the hook: the thread's error and the hook's, the default way
      support.assert_in_order(out, "Exception in thread badhook:\nerr-badhook\n",
        "Exception in the excepthook of thread badhook:\n")
      assert.is_truthy(out:find("hook-broke", 1, true), out)
      -- a hook may call the default report
      support.assert_in_order(out, "CHAIN\tchained\n", "Exception in thread chained:\nerr-chained\n")
      -- set_excepthook(nil): the default report again
      assert.is_truthy(out:find("Exception in thread default:\nerr-default\n", 1, true), out)
      assert.is_truthy(out:find("done\n", 1, true), out)
    end)

  it("is not used for a Process's target, but by the threads of a child", function()
    local out, code = run_fixture("thread_excepthook.lua")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("Process proc:\nerr-process\n", 1, true), out)
    assert.is_nil(out:find("PROCESS-HOOK\terr-process", 1, true), out)
    assert.is_truthy(out:find("process exitcode\t1\n", 1, true), out)
    assert.is_truthy(out:find("PROCESS-HOOK\terr-child-thread\n", 1, true), out)
  end)
end)
