-- redis.Pool and concur-worker against a redis-server this file starts on a
-- free loopback port (support.redis_server), workers started as separate
-- processes (bin/concur-worker), killed by pid (process group) in teardown.
local support = require "support"
local concur = require "concur"
local redis = require "concur.redis"

local LUA = support.LUA

-- The server: appendonly, so a restart keeps what was committed.
local function start_server() return support.redis_server({appendonly = true}) end

local srv
local workers = {}
local names = 0

local function new_name()
  names = names + 1
  return ("spec%d_%d"):format(concur.getpid(), names)
end

-- A concur-worker in a process group of its own; its pid (= its group).
-- What it prints goes to NAME.log in the server's directory (left there when
-- a spec hangs and teardown never runs: read it to see why).
local function start_worker(name, nproc, extra)
  local cmd = ("setsid %s bin/concur-worker --url %s --name %s --processes %d --heartbeat 1 %s "
    .. ">>%s/%s.log 2>&1 & echo $!"):format(LUA, srv.url, name, nproc or 1, extra or "", srv.dir, name)
  local f = assert(io.popen(cmd))
  local pid = tonumber(f:read("*l"))
  f:close()
  assert.is_number(pid)
  workers[#workers + 1] = pid
  return pid
end

local function kill_group(pid, sig)
  -- (dash's kill takes no "--": the group as -PID right after the signal)
  os.execute(("kill -%s -%d 2>/dev/null; kill -%s %d 2>/dev/null"):format(sig, pid, sig, pid))
end

setup(function() srv = start_server() end)
teardown(function()
  for _, pid in ipairs(workers) do kill_group(pid, "KILL") end
  if srv then srv.stop() end
end)

describe("redis.Pool", function()
  local pool, name
  before_each(function()
    name = new_name()
    start_worker(name, 2)
    pool = redis.Pool{url = srv.url, name = name}
  end)
  after_each(function() pool:terminate() end)

  it("runs apply, apply_async, map, starmap, imap, imap_unordered and submit", function()
    local a, b = pool:apply(function(x, y) return x + y, "s" end, {1, 2})
    assert.equal(3, a)
    assert.equal("s", b)
    local r = pool:apply_async(function(x) return x * 2 end, {21})
    assert.equal(42, r:get(30))
    assert.is_true(r:ready())
    assert.is_true(r:successful())
    local list = {}
    for i = 1, 25 do list[i] = i end
    local squares = pool:map(function(x) return x * x end, list, 3)
    for i = 1, 25 do assert.equal(i * i, squares[i]) end
    assert.same({"ab", "cd"}, pool:starmap(function(x, y) return x .. y end, {{"a", "b"}, {"c", "d"}}))
    local seen = {}
    for v, i in pool:imap(function(x) return x + 100 end, {1, 2, 3, 4}) do seen[#seen + 1] = {v, i} end
    assert.same({{101, 1}, {102, 2}, {103, 3}, {104, 4}}, seen)
    local got = {}
    for v, i in pool:imap_unordered(function(x) return -x end, {1, 2, 3, 4}) do got[i] = v end
    assert.same({-1, -2, -3, -4}, got)
    local f = pool:submit(function(...) return select("#", ...), ... end, 1, nil, 3)
    local n, x, y, z = f:result(30)
    assert.equal(3, n)
    assert.equal(1, x)
    assert.is_nil(y)
    assert.equal(3, z)
    assert.is_true(f:done())
    assert.is_nil(f:exception())
    local seen_f
    local f2 = pool:submit(function() return "later" end)
    f2:add_done_callback(function(ff) seen_f = ff end)
    assert.equal("later", f2:result(30))
    assert.equal(f2, seen_f)
    local now_f
    f2:add_done_callback(function(ff) now_f = ff end)   -- done: runs at once
    assert.equal(f2, now_f)
    local it = pool:imap(function() return nil end, {1})
    local okn, en = pcall(it)
    assert.is_false(okn)
    support.assert_has(en, "imap: the result for item 1 is nil")
    local rm = pool:map_async(function(x) return x end, {})
    assert.same({}, rm:get(1))
  end)

  it("runs callbacks in the caller", function()
    local got, errs = {}, {}
    local r1 = pool:apply_async(function(x) return x end, {5}, function(v) got[#got + 1] = v end)
    local r2 = pool:apply_async(function() error("bad") end, nil, nil, function(e) errs[#errs + 1] = e end)
    r1:wait(30)
    r2:wait(30)
    assert.same({5}, got)
    assert.equal(1, #errs)
    support.assert_has(errs[1], "bad")
  end)

  it("gives a task's error as the local Pool does", function()
    local ok, err = pcall(pool.apply, pool, function() error("boom") end)
    assert.is_false(ok)
    assert.is_truthy(err:find(":%d+: boom\n%[in pool worker ForkPoolWorker%-%d+, pid %d+%]"))
    local f = pool:submit(function() error({code = 7}) end)
    local e = f:exception(30)
    assert.equal(7, e.code)
    assert.has_error(function() f:result() end)
    local r = pool:map_async(function(x) if x == 3 then error("three") end return x end, {1, 2, 3, 4}, 1)
    assert.is_false(r:wait(30) and r:successful())
    local ok2, err2 = pcall(r.get, r)
    assert.is_false(ok2)
    support.assert_has(err2, "three")
    -- imap: the error comes in its turn, the others still arrive
    local vals, errs = {}, 0
    local it = pool:imap(function(x) if x == 2 then error("two") end return x end, {1, 2, 3}, 1)
    for _ = 1, 3 do
      local okk, v = pcall(it)
      if okk then vals[#vals + 1] = v else errs = errs + 1 end
    end
    assert.same({1, 3}, vals)
    assert.equal(1, errs)
  end)

  it("sends a function with upvalues", function()
    local k, tbl = 10, {offset = 5}
    local function f(x) return x * k + tbl.offset end
    assert.same({15, 25, 35}, pool:map(f, {1, 2, 3}))
  end)

  it("refuses concur objects at the call, naming the path", function()
    local q = concur.Queue()
    local ok, err = pcall(pool.apply_async, pool, function() end, {1, {q = q}})
    assert.is_false(ok)
    support.assert_has(err, "apply_async: the task cannot be sent: ")
    support.assert_has(err, "Queue")
    support.assert_has(err, "(the arguments[2].q)")
    local ok2, err2 = pcall(pool.map, pool, function() return q end, {1})
    assert.is_false(ok2)
    support.assert_has(err2, "map: the task cannot be sent: ")
    support.assert_has(err2, "concur.Queue to another machine (fn<upvalue q>)")
    -- a map's item by its index in the list, not in its chunk
    local _, err3 = pcall(pool.map, pool, print, {1, 2, {q = q}}, 1)
    support.assert_has(err3, "(the list[3].q)")
    local _, err4 = pcall(pool.submit, pool, print, 1, coroutine.create(function() end))
    support.assert_has(err4, "submit: the task cannot be sent: bad value in the arguments[2] (coroutine)")
  end)

  it("never reuses a task id: a push that raised but landed does not answer the next call", function()
    local real = pool._push
    -- The LPUSH lands, then its reply is "lost".
    pool._push = function(self, records) real(self, records); error("connection lost (simulated)", 0) end
    assert.has_error(function() pool:apply_async(function() return "old" end) end,
      "connection lost (simulated)")
    assert.has_error(function() pool:map(function() return "old" end, {1, 2}) end,
      "connection lost (simulated)")
    pool._push = nil   -- the class's own again
    assert.equal("new", pool:apply(function() return "new" end))
    assert.same({"new1", "new2"}, pool:map(function(x) return "new" .. x end, {1, 2}))
  end)

  it("maps in one chunk when chunksize is near math.maxinteger (no wrap of the chunk loop)", function()
    local huge = math.maxinteger or 2 ^ 53
    local out = pool:map(function(x) return x * 2 end, {1, 2, 3}, huge)
    assert.same({2, 4, 6}, out)
  end)

  it("checks its arguments", function()
    assert.has_error(function() redis.Pool{url = srv.url} end,
      "bad argument #1 to 'Pool' (name: expected a non-empty string, got nil)")
    assert.has_error(function() redis.Pool{url = srv.url, name = "x", bogus = 1} end,
      "bad argument #1 to 'Pool' (unknown option 'bogus')")
    assert.has_error(function() pool:apply_async(42) end,
      "bad argument #1 to 'apply_async' (callable expected, got number)")
    assert.has_error(function() pool:apply_async(print, 42) end,
      "bad argument #2 to 'apply_async' (table of arguments expected, got number)")
    assert.has_error(function() pool:map(print, {1}, 0) end,
      "bad argument #3 to 'map' (chunksize must be a positive integer, got 0)")
    assert.has_error(function() pool:starmap(print, {1}) end,
      "bad argument #2 to 'starmap' (list of argument lists expected, item 1 is a number)")
    local r = pool:apply_async(function() return 1 end)
    assert.has_error(function() r:get(-1) end,
      "bad argument #1 to 'get' (timeout must be a non-negative number, got -1)")
    local ok, e = pcall(redis.Pool, {url = "redis://127.0.0.1:1/0", name = "x"})
    assert.is_false(ok)
    support.assert_has(e, "concur.redis: ")
  end)

  it("close, join and terminate", function()
    local rs = {}
    for i = 1, 10 do rs[i] = pool:apply_async(function(x) return x end, {i}) end
    pool:close()
    assert.has_error(function() pool:apply_async(print) end, "apply_async: pool is closed")
    assert.has_error(function() pool:submit(print) end,
      "submit: cannot schedule new futures after shutdown (pool is closed)")
    pool:join()
    for i = 1, 10 do assert.is_true(rs[i]:ready()); assert.equal(i, rs[i]:get()) end
    local p2 = redis.Pool{url = srv.url, name = name}
    assert.has_error(function() p2:join() end, "pool is still running: close or terminate it first")
    local r = p2:apply_async(function() require("concur").sleep(0.5) return 1 end)
    p2:terminate()
    assert.has_error(function() r:get() end, "the pool was terminated before the task finished")
  end)

  it("times out get", function()
    local r = pool:apply_async(function() require("concur").sleep(2) return 1 end)
    local ok, e = pcall(r.get, r, 0.05)
    assert.is_false(ok)
    assert.equal(concur.TimeoutError, e)
    assert.equal(1, r:get(30))
  end)
end)

describe("redis.Pool with workers dying", function()
  it("loses nothing when a worker is SIGKILLed mid-map: every result, once, in order", function()
    local name = new_name()
    local w1 = start_worker(name, 1)
    start_worker(name, 1)
    local pool = redis.Pool{url = srv.url, name = name}
    local list = {}
    for i = 1, 200 do list[i] = i end
    local out, k = {}, 0
    for v, i in pool:imap(function(x) require("concur").sleep(0.01) return x * 3 end, list) do
      k = k + 1
      assert.equal(k, i)
      out[i] = v
      if k == 20 then kill_group(w1, "KILL") end
    end
    assert.equal(200, k)
    assert.is_true(support.eventually(function() return support.pid_gone(w1) end, 10))
    for i = 1, 200 do assert.equal(3 * i, out[i]) end
    -- the pool still serves with the one worker left
    assert.same({2, 4}, pool:map(function(x) return 2 * x end, {1, 2}))
    pool:terminate()
  end)

  it("fails a task that kills its worker every time after max_tries", function()
    local name = new_name()
    start_worker(name, 1)
    local pool = redis.Pool{url = srv.url, name = name, max_tries = 2}
    local r = pool:apply_async(function() os.exit(3) end)
    local ok, err = pcall(r.get, r, 60)
    assert.is_false(ok)
    support.assert_has(err, "task failed: its worker died 2 times")
    assert.equal(5, pool:apply(function(x) return x end, {5}))   -- the worker lives on
    pool:terminate()
  end)

  it("fails a task whose worker was killed, found by the client alone (max_tries = 1)", function()
    local name = new_name()
    local w = start_worker(name, 1)
    local pool = redis.Pool{url = srv.url, name = name, max_tries = 1}
    local started = pool:apply_async(function() return require("concur").getpid() end)
    started:get(60)   -- the worker is up
    local r = pool:apply_async(function() require("concur").sleep(30) end)
    local conn = require("concur.redis.core").connect(srv.url)
    assert.is_true(support.eventually(function()   -- the worker holds it
      local keys = conn:call("KEYS", "concur:p:{" .. name .. "}:running:*")
      return keys[1] ~= nil and conn:call("LLEN", keys[1]) > 0
    end, 30))
    conn:close()
    kill_group(w, "KILL")
    local ok, err = pcall(r.get, r, 60)
    assert.is_false(ok)
    support.assert_has(err, "task failed: its worker died once (last: its worker ")
    support.assert_has(err, "stopped sending heartbeats)")
    pool:terminate()
  end)

  it("finishes a map across a server restart", function()
    local name = new_name()
    start_worker(name, 2)
    local pool = redis.Pool{url = srv.url, name = name}
    local list = {}
    for i = 1, 60 do list[i] = i end
    local out, k = {}, 0
    for v, i in pool:imap(function(x) require("concur").sleep(0.02) return x + 1 end, list) do
      k = k + 1
      out[i] = v
      if k == 10 then srv.restart() end
    end
    assert.equal(60, k)
    for i = 1, 60 do assert.equal(i + 1, out[i]) end
    pool:terminate()
  end)
end)

describe("redis.Pool secrets", function()
  it("fails a task whose function was signed with another secret", function()
    local name = new_name()
    start_worker(name, 1, "--secret worker-secret")
    local pool = redis.Pool{url = srv.url, name = name, secret = "client-secret"}
    local r = pool:apply_async(function() return 1 end)
    local ok, err = pcall(r.get, r, 60)
    assert.is_false(ok)
    support.assert_has(err, "the task's result could not be received: ")
    support.assert_has(err, "secret")
    local good = redis.Pool{url = srv.url, name = name, secret = "worker-secret"}
    assert.equal(2, good:apply(function(x) return x + 1 end, {1}))
    good:terminate()
    pool:terminate()
  end)
end)
