-- spec/select_spec.lua: concur.select over every kind of object, the thing
-- that makes it ready in another thread or process, timeouts, duplicates,
-- closed objects and bad members.  Order comes from Events, queues and
-- joins; "not ready" is only asserted through a select with a short timeout.
local concur = require "concur"
local support = require "support"

local started = support.tracker()
after_each(function() started.cleanup() end)
local go, finish = started.process, support.finish
local err_of, assert_has = support.err_of, support.assert_has

-- Whether list holds exactly the values of want (in that order).
local function same(want, list)
  if #want ~= #list then return false end
  for i = 1, #want do if not rawequal(want[i], list[i]) then return false end end
  return true
end

describe("concur.select", function()
  it("returns an empty list when nothing is ready by the timeout", function()
    local q, e = concur.Queue(), concur.Event()
    local t0 = concur.time()
    local r = concur.select({q, e}, 0.05)
    assert.are.same({}, r)
    assert.is_true(concur.time() - t0 >= 0.04)
    assert.are.same({}, concur.select({q, e}, 0))
    assert.are.same({}, concur.select({}, 0))
  end)

  it("returns the ready objects, in the order given, each once", function()
    local q1, q2, e = concur.Queue(), concur.LifoQueue(), concur.Event()
    q2:put(1)
    e:set()
    local r = concur.select({q1, e, q2, e, q2}, 1)
    assert.is_true(same({e, q2}, r))
  end)

  for _, kind in ipairs{"Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"} do
    it("wakes for an item put in a " .. kind .. " by another process", function()
      local qs = {}
      for i = 1, 8 do qs[i] = concur[kind]() end
      local go_on = concur.Event()
      local p = go(function() go_on:wait(10); qs[6]:put(5); return 0 end)
      go_on:set()
      local r = concur.select(qs, 10)
      assert.is_true(same({qs[6]}, r))
      assert.are.equal(5, qs[6]:get_nowait())
      assert.are.equal(0, finish(p))
    end)
  end

  it("wakes for an item put by another thread, and for a shutdown", function()
    local q, other = concur.Queue(), concur.Queue()
    local t = concur.Thread{target = function() q:put("x") end}
    t:start()
    assert.is_true(same({q}, concur.select({other, q}, 10)))
    t:join()
    q:get()
    local s = concur.Thread{target = function() other:shutdown() end}
    s:start()
    assert.is_true(same({other}, concur.select({q, other}, 10)))
    s:join()
  end)

  it("wakes for an Event set in another process", function()
    local e, q = concur.Event(), concur.Queue()
    local p = go(function() e:set(); return 0 end)
    assert.is_true(same({e}, concur.select({q, e}, 10)))
    assert.are.equal(0, finish(p))
  end)

  it("wakes when a Thread ends", function()
    local go_on = concur.Event()
    local t = concur.Thread{target = function() go_on:wait(10) end}
    t:start()
    assert.are.same({}, concur.select({t}, 0.05))
    go_on:set()
    assert.is_true(same({t}, concur.select({t}, 10)))
    t:join()
    assert.is_true(same({t}, concur.select({t}, 0)))
  end)

  it("wakes when a Process ends, killed or not", function()
    local go_on = concur.Event()
    local p = concur.Process{target = function() go_on:wait(30) end}
    p:start()
    local k = concur.Process{target = function() go_on:wait(30) end}
    k:start()
    assert.are.same({}, concur.select({p, k}, 0.05))
    k:kill()
    assert.is_true(same({k}, concur.select({p, k}, 10)))
    go_on:set()
    local r = concur.select({p}, 10)
    assert.is_true(same({p}, r))
    p:join(); k:join()
    assert.is_true(same({p, k}, concur.select({p, k}, 0)))
  end)

  it("wakes for a message on a Pipe from another process, and for a closed end", function()
    local a, b = concur.Pipe()
    local q = concur.Queue()
    local p = go(function() b:send({"hi"}); return 0 end)
    assert.is_true(same({a}, concur.select({q, a}, 10)))
    assert.are.same({"hi"}, a:recv())
    assert.are.equal(0, finish(p))
    assert.are.same({}, concur.select({a}, 0.05))
    b:close()
    assert.is_true(same({a}, concur.select({a}, 10)))   -- end of stream: recv raises at once
    a:close()
    assert.is_true(same({a}, concur.select({a}, 0)))    -- closed here: ready too
  end)

  it("waits on queues, pipes and processes at once", function()
    local a, b = concur.Pipe()
    local q, go_on = concur.Queue(), concur.Event()
    local p = go(function() go_on:wait(10); q:put(1); return 0 end)
    local waiter = concur.Process{target = function() go_on:wait(30) end}
    waiter:start()
    go_on:set()
    local r = concur.select({a, waiter, q}, 10)
    assert.is_true(#r >= 1)
    local got_q = false
    for _, o in ipairs(r) do if o == q then got_q = true end end
    if not got_q then
      assert.is_true(same({q}, concur.select({a, q}, 10)))
    end
    assert.are.equal(0, finish(p))
    waiter:join()
    b:close(); a:close()
  end)

  it("raises a bad argument naming the member for anything else", function()
    assert_has(err_of(function() concur.select({concur.Queue(), 3}) end),
      "bad argument #1 to 'select' (objects[2]: Queue, Pipe connection, Event")
    assert_has(err_of(function() concur.select({concur.Lock()}) end), "objects[1]")
    assert_has(err_of(function() concur.select({{}}) end), "objects[1]")
    assert_has(err_of(function() concur.select(concur.Queue()) end), "bad argument #1 to 'select' (table expected")
    assert_has(err_of(function() concur.select({}, -1) end), "bad argument #2 to 'select'")
    assert_has(err_of(function() concur.select({}, "x") end), "bad argument #2 to 'select'")
  end)

  it("gives back its counts: puts after a select wake nobody", function()
    local q = concur.Queue()
    assert.are.same({}, concur.select({q}, 0.01))
    local before = support.shm_in_use()
    for i = 1, 1000 do q:put(i) end
    for _ = 1, 1000 do q:get() end
    assert.is_true(support.shm_in_use() <= before + 65536)
  end)

  it("works from a thread too, with the producer in a process", function()
    local q = concur.Queue()
    local t = concur.Thread{target = function() return #concur.select({q}, 60) end}
    t:start()
    local p = go(function() q:put(1); return 0 end)
    assert.are.equal(1, t:result())
    assert.are.equal(0, finish(p))
  end)

  for _, P in ipairs{"ThreadPool", "Pool"} do
    it("wakes for a Future and an AsyncResult of a " .. P .. " when their task is done", function()
      local pool = concur[P](2)
      local go_on = concur.Event()
      local q = concur.Queue()
      local slow = pool:submit(function(e) e:wait(10); return "slow" end, go_on)
      local quick = pool:apply_async(function() return "quick" end)
      assert.is_true(same({quick}, concur.select({q, slow, quick}, 10)))
      assert.are.same({}, concur.select({q, slow}, 0.05))
      go_on:set()
      assert.is_true(same({slow}, concur.select({q, slow}, 10)))
      assert.are.equal("slow", slow:result())
      pool:terminate()
    end)
  end
end)
