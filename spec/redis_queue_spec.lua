-- redis.Queue (lua/concur/redis/queue.lua): the Queue interface on a Redis
-- server this file starts on a free loopback port.
local concur = require "concur"
local support = require "support"
local redis = require "concur.redis"

-- One server for the file (support.redis_server), with appendonly for the
-- restart test.
local server, URL
lazy_setup(function()
  server = support.redis_server{appendonly = true}
  URL = server.url
end)
lazy_teardown(function() server.stop() end)

local n = 0
local function fresh(opts)
  n = n + 1
  opts = opts or {}
  opts.url = URL
  opts.name = opts.name or ("spec" .. n .. "-" .. concur.getpid())
  return redis.Queue(opts)
end

local function raised(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok)
  return e
end

-- Runs a Lua script in a separately started interpreter (not a fork): a
-- popen'ed handle on its stdout.
local function spawn(src)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(src)
  f:close()
  local q = support.shell_quote
  return assert(io.popen(("URL=%s LUA_PATH=%s LUA_CPATH=%s timeout -k 5 60 %s %s 2>&1; rm -f %s")
    :format(q(URL), q(package.path), q(package.cpath), q(support.LUA), q(file), q(file))))
end

describe("redis.Queue", function()
  it("keeps FIFO order", function()
    local q = fresh()
    for i = 1, 50 do q:put(i) end
    assert.equal(50, q:qsize())
    for i = 1, 50 do assert.equal(i, q:get()) end
    assert.is_true(q:empty())
    q:close()
  end)

  it("raises concur.Empty and concur.Full for nowait and timeouts", function()
    local q = fresh{maxsize = 1}
    assert.equal(concur.Empty, raised(q.get_nowait, q))
    assert.equal(concur.Empty, raised(q.get, q, false))
    local took, ok, e = support.timed(q.get, q, true, 0.3)
    assert.is_false(ok)
    assert.equal(concur.Empty, e)
    assert.is_true(took >= 0.25 and took < 5)
    q:put("a")
    assert.is_true(q:full())
    assert.equal(concur.Full, raised(q.put_nowait, q, "b"))
    assert.equal(concur.Full, raised(q.put, q, "b", true, 0.2))
    assert.equal(concur.Full, raised(q.put, q, "b", false))
    assert.equal("a", q:get_nowait())
    assert.equal(concur.Empty, raised(q.get_nowait, q))
    q:close()
  end)

  it("blocks a put on a full queue until a get makes room", function()
    local q = fresh{maxsize = 1}
    q:put("a")
    local result = concur.Queue()
    local t = concur.Thread{target = function(url, nm, res)
      local mine = require("concur.redis").Queue{url = url, name = nm}
      res:put("putting")
      mine:put("b", true, 20)
      res:put("put")
      mine:close()
    end, args = {URL, q.name, result}}
    t:start()
    assert.equal("putting", result:get(true, 10))
    assert.equal(concur.Empty, select(2, pcall(result.get, result, true, 0.2)))
    assert.equal("a", q:get())
    assert.equal("put", result:get(true, 10))
    assert.equal("b", q:get(true, 10))
    t:join()
    q:close()
  end)

  it("stores the maxsize at the first opening", function()
    local q = fresh{maxsize = 3}
    local again = redis.Queue{url = URL, name = q.name}
    assert.equal(3, again.maxsize)
    assert.matches("differs from the maxsize 3",
      raised(redis.Queue, {url = URL, name = q.name, maxsize = 4}))
    q:close(); again:close()
  end)

  it("never exceeds maxsize with several producers (threads, each its own Queue)", function()
    local q = fresh{maxsize = 3}
    local name = q.name
    local threads = {}
    for t = 1, 3 do
      threads[t] = concur.Thread{target = function(url, nm, k)
        local r = require("concur.redis")
        local mine = r.Queue{url = url, name = nm}
        for i = 1, 20 do mine:put(k * 100 + i) end
        mine:close()
      end, args = {URL, name, t}}
      threads[t]:start()
    end
    local seen = {}
    for _ = 1, 60 do
      assert.is_true(q:qsize() <= 3)
      local v = q:get(true, 30)
      seen[#seen + 1] = v
    end
    for t = 1, 3 do threads[t]:join() end
    assert.equal(60, #seen)
    assert.equal(0, q:qsize())
    q:close()
  end)

  it("carries nested tables and functions with upvalues", function()
    local q = fresh()
    q:put({a = {b = {1, 2, {c = "d"}}}, [5] = true})
    local v = q:get()
    assert.same({a = {b = {1, 2, {c = "d"}}}, [5] = true}, v)
    local k = 41
    local ok = pcall(q.put, q, function(x) return x + k end)
    if ok then assert.equal(42, q:get()(1)) end
    q:close()
  end)

  it("runs a function put by one process in another", function()
    local q = fresh()
    local k = 10
    q:put(function(x) return x * k end)
    local p = spawn(([[
      local q = require("concur.redis").Queue{url = os.getenv("URL"), name = %q}
      print("result", q:get(true, 20)(4.5))
      q:close()
    ]]):format(q.name))
    local out = p:read("*a")
    p:close()
    assert.matches("result\t45", out)
    q:close()
  end)

  it("refuses concur objects at put and pushes nothing", function()
    local q = fresh()
    local e = raised(q.put, q, {lock = concur.Lock()})
    assert.matches("^bad argument #1 to 'put' %(cannot send a", e)
    assert.matches("concur.Lock to another machine %(item.lock%)", e)
    assert.equal("bad argument #1 to 'put' (bad value at item.a[1] (coroutine))",
      raised(q.put, q, {a = {coroutine.create(function() end)}}))
    assert.equal(0, q:qsize())
    q:close()
  end)

  it("keeps an item it cannot decode (another secret) and says so", function()
    local q = fresh{secret = "one"}
    local k = 1
    if not pcall(q.put, q, function() return k end) then
      q:close()
      return pending("core.encode cannot encode functions here")
    end
    local other = redis.Queue{url = URL, name = q.name, secret = "two"}
    local e = raised(other.get, other)
    assert.matches("cannot decode an item of queue", e)
    assert.matches("undecodable", e)
    assert.equal(1, other.conn:call("LLEN", other.k_undecodable))
    other:close(); q:close()
  end)

  it("checks its arguments", function()
    local q = fresh()
    assert.matches("bad argument #2 to 'put' %(boolean expected, got number%)", raised(q.put, q, 1, 2))
    assert.matches("bad argument #3 to 'put' %(timeout must be a non%-negative number%)",
      raised(q.put, q, 1, true, -1))
    assert.matches("bad argument #2 to 'get' %(number expected, got table%)", raised(q.get, q, true, {}))
    assert.matches("bad argument #4 to 'put' %(no value expected%)", raised(q.put, q, 1, true, 1, 1))
    assert.matches("bad argument #1 to 'get_nowait' %(no value expected%)", raised(q.get_nowait, q, 1))
    assert.matches("bad argument #1 to 'Queue' %(name", raised(redis.Queue, {url = URL}))
    assert.matches("unknown option 'nope'", raised(redis.Queue, {url = URL, name = "x", nope = 1}))
    assert.matches("bad argument #1 to 'Queue' %(table of options expected", raised(redis.Queue, "x"))
    assert.matches("concur.redis.Queue expected", raised(q.get, {}))
    assert.matches("^concur.redis: ", raised(redis.Queue, {url = "redis://127.0.0.1:1/0", name = "x"}))
    q:close()
  end)

  it("counts task_done and join across separately started processes", function()
    local q = fresh()
    for i = 1, 10 do q:put(i) end
    local p = spawn(([[
      local q = require("concur.redis").Queue{url = os.getenv("URL"), name = %q}
      local sum = 0
      for _ = 1, 10 do sum = sum + q:get(true, 20); q:task_done() end
      print("sum", sum)
      q:close()
    ]]):format(q.name))
    q:join()
    assert.matches("sum\t55", p:read("*a"))
    p:close()
    assert.equal("task_done() called too many times", raised(q.task_done, q))
    q:close()
  end)

  it("serves a forked child through its parent's Queue (another consumer there)", function()
    local q = fresh()
    q:put("parent's"); q:put("child's")
    assert.equal("parent's", q:get())
    local parent_cid = q.cid
    local p = concur.Process{target = function()
      local v = q:get(true, 10)
      q:task_done()
      os.exit(v == "child's" and q.cid ~= parent_cid and 0 or 3, true)
    end}
    p:start()
    p:join()
    assert.equal(0, p.exitcode)
    -- the parent's connection still works, and its taken item is still its
    -- own (the child's get dropped only the child's)
    assert.equal(1, q.conn:call("LLEN", q.k_taken))
    q:task_done()
    assert.equal(0, q.conn:call("LLEN", q.k_taken))
    q:join()
    q:close()
  end)

  it("passes items from a producer process to a consumer process", function()
    local q = fresh()
    local consumer = spawn(([[
      local q = require("concur.redis").Queue{url = os.getenv("URL"), name = %q}
      local got = {}
      while true do
        local v = q:get(true, 30)
        if v == "end" then break end
        got[#got + 1] = v.id .. v.name
      end
      print("got", table.concat(got, ","))
      q:close()
    ]]):format(q.name))
    local producer = spawn(([[
      local q = require("concur.redis").Queue{url = os.getenv("URL"), name = %q}
      for i = 1, 5 do q:put({id = i, name = "x"}) end
      q:put("end")
      print("put done")
      q:close()
    ]]):format(q.name))
    assert.matches("put done", producer:read("*a"))
    producer:close()
    assert.matches("got\t1x,2x,3x,4x,5x", consumer:read("*a"))
    consumer:close()
    q:close()
  end)

  it("gives a SIGKILLed consumer's item to another consumer", function()
    local q = fresh{lease = 0.5}
    q:put("precious")
    local p = spawn(([[
      local concur = require "concur"
      local q = require("concur.redis").Queue{url = os.getenv("URL"), name = %q, lease = 0.5}
      local v = q:get(true, 20)
      print(concur.getpid(), v)
      io.stdout:flush()
      concur.sleep(60)
    ]]):format(q.name))
    local line = p:read("*l")
    local pid, v = line:match("^(%d+)\t(.*)$")
    assert.equal("precious", v)
    assert.equal(concur.Empty, raised(q.get_nowait, q))
    assert.is_true(support.execute("kill -9 " .. pid))
    p:close()
    assert.equal("precious", q:get(true, 20))
    q:close()
  end)

  it("does not give again an item taken by a consumer that closed cleanly", function()
    local q = fresh{lease = 0.2}
    q:put("once")
    local other = redis.Queue{url = URL, name = q.name, lease = 0.2}
    assert.equal("once", other:get())
    other:close()
    assert.equal(concur.Empty, raised(q.get, q, true, 1))
    q:close()
  end)

  it("drops its taken item when collected (a clean end)", function()
    local q = fresh()
    q:put("x")
    local other = redis.Queue{url = URL, name = q.name}
    assert.equal("x", other:get())
    local key = other.k_taken
    assert.equal(1, q.conn:call("EXISTS", key))
    other = nil   -- luacheck: ignore
    assert.is_true(support.eventually(function()
      collectgarbage(); collectgarbage()
      return q.conn:call("EXISTS", key) == 0
    end, 10))
    q:close()
  end)

  it("shuts down as the local Queue does", function()
    local q = fresh()
    q:put(1); q:put(2)
    q:shutdown()
    assert.equal(concur.ShutDown, raised(q.put, q, 3))
    assert.equal(1, q:get())
    assert.equal(2, q:get())
    assert.equal(concur.ShutDown, raised(q.get, q))
    assert.equal(concur.ShutDown, raised(q.get_nowait, q))
    local q2 = fresh()
    for i = 1, 3 do q2:put(i) end
    q2:shutdown(true)
    assert.equal(0, q2:qsize())
    q2:join()   -- the emptied items count as done
    assert.equal(concur.ShutDown, raised(q2.get, q2))
    q:close(); q2:close()
  end)

  it("wakes a blocked get on shutdown", function()
    local q = fresh()
    local result = concur.Queue()
    local t = concur.Thread{target = function(url, nm, res)
      local c = require "concur"
      local mine = require("concur.redis").Queue{url = url, name = nm}
      res:put("blocking")
      local ok, e = pcall(mine.get, mine)
      mine:close()
      res:put(not ok and e == c.ShutDown)
    end, args = {URL, q.name, result}}
    t:start()
    assert.equal("blocking", result:get(true, 10))
    local t0 = concur.time()
    q:shutdown()
    assert.is_true(result:get(true, 10))
    assert.is_true(concur.time() - t0 < 5)   -- noticed within a block (1 s), with room for a loaded machine
    t:join()
    q:close()
  end)

  it("keeps items across a server restart with appendonly", function()
    local q = fresh()
    local name = q.name
    for i = 1, 3 do q:put({i = i}) end
    server.kill9()
    -- with the server down, calls raise clear errors
    assert.matches("^concur.redis: ", raised(q.put, q, 4))
    assert.matches("^concur.redis: ", raised(redis.Queue, {url = URL, name = name}))
    server.restart()
    -- the open Queue reconnects; a new one sees the same items
    assert.equal(3, q:qsize())
    local q2 = redis.Queue{url = URL, name = name}
    for i = 1, 3 do assert.equal(i, q2:get(true, 5).i) end
    q2:close(); q:close()
  end)
end)
