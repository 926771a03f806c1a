-- concur.redis.core: connections to a Redis server (src/redis/redis.c;
-- redis_api.md).  Each describe block runs a redis-server of its own
-- (support.redis_server) on 127.0.0.1.
local concur = require "concur"
local support = require "support"
local rc = require "concur.redis.core"

local err_of = support.err_of

-- A port nothing listens on: one a server of ours had, now stopped.
local function dead_port()
  local s = support.redis_server()
  local port = s.port
  s.stop()
  return port
end

describe("concur.redis.core", function ()
  local server, conn

  lazy_setup(function ()
    server = support.redis_server()
    conn = rc.connect(server.url)
  end)

  lazy_teardown(function ()
    if conn then conn:close() end
    if server then server.stop() end
  end)

  it("has the hiredis version", function ()
    assert.matches("^%d+%.%d+%.%d+$", rc.version)
  end)

  describe("call", function ()
    it("gives status and bulk replies as strings, integers as integers, nil as nil", function ()
      assert.equal("OK", conn:call("SET", "call:k", "v"))
      assert.equal("v", conn:call("GET", "call:k"))
      assert.is_nil(conn:call("GET", "call:none"))
      assert.equal(1, conn:call("DEL", "call:k"))
      assert.equal(7, conn:call("INCRBY", "call:n", 7))
      if support.has_integers then
        assert.equal("integer", math.type(conn:call("INCR", "call:n")))
      end
      assert.equal("PONG", conn:call("PING"))
    end)

    it("sends numbers, integral ones as integers", function ()
      conn:call("SET", "num:a", 3.0)
      assert.equal("3", conn:call("GET", "num:a"))
      conn:call("SET", "num:b", 2.5)
      assert.equal(2.5, tonumber(conn:call("GET", "num:b")))
      conn:call("SET", "num:c", -2 ^ 40)
      assert.equal("-1099511627776", conn:call("GET", "num:c"))
      assert.equal(4, conn:call("INCRBY", "num:a", 1))
    end)

    it("moves binary strings with NULs and big values whole", function ()
      local all = {}
      for b = 0, 255 do all[#all + 1] = string.char(b) end
      all = table.concat(all) .. "\0\r\n\0"
      conn:call("SET", "bin", all)
      assert.equal(all, conn:call("GET", "bin"))
      local big = support.big_string(10 * 1024 * 1024, 3)
      assert.equal("OK", conn:call("SET", "big", big))
      local back = conn:call("GET", "big")
      assert.equal(#big, #back)
      assert.is_true(back == big)
      assert.equal(1, conn:call("DEL", "big"))
    end)

    it("gives arrays as tables with n, nested, with holes and error entries", function ()
      conn:call("DEL", "arr")
      conn:call("RPUSH", "arr", "a", "b", "c")
      local r = conn:call("LRANGE", "arr", 0, -1)
      assert.same({"a", "b", "c", n = 3}, r)
      assert.same({n = 0}, conn:call("LRANGE", "arr:none", 0, -1))
      local e = conn:call("EVAL", [[return {1, {2, {3, "x"}}, "s", redis.status_reply("OK"),
                                            redis.error_reply("ERR inner")}]], 0)
      assert.equal(1, e[1])
      assert.equal("x", e[2][2][2])
      assert.equal(2, e[2][2].n)
      assert.equal("s", e[3])
      assert.equal("OK", e[4])
      assert.same({err = "ERR inner"}, e[5])
      assert.equal(5, e.n)
      local m = conn:call("MGET", "arr:none", "bin")
      assert.equal(2, m.n)
      assert.is_nil(m[1])
      assert.is_string(m[2])
    end)

    it("raises an error reply with the server's text", function ()
      assert.matches("^concur.redis: ERR unknown command 'NOSUCHCMD'",
                     err_of(conn.call, conn, "NOSUCHCMD", "x"))
      conn:call("SET", "str", "x")
      assert.matches("^concur.redis: WRONGTYPE", err_of(conn.call, conn, "LPUSH", "str", 1))
      assert.equal("PONG", conn:call("PING"))   -- the stream is still in step
    end)

    it("checks its arguments before sending anything", function ()
      assert.matches("bad argument #2 to '[^']*' %(command name expected%)", err_of(conn.call, conn))
      assert.matches("bad argument #3 to '[^']*' %(string or number expected, got table%)",
                     err_of(conn.call, conn, "SET", {}, "x"))
      assert.matches("bad argument #4 to '[^']*' %(string or number expected, got nil%)",
                     err_of(conn.call, conn, "SET", "k", nil))
      assert.matches("string or number expected, got boolean", err_of(conn.call, conn, "ECHO", true))
      assert.equal("still", conn:call("ECHO", "still"))
    end)
  end)

  describe("pipeline", function ()
    it("gives the replies in order, error replies as {err = ...}", function ()
      local r = conn:pipeline{{"DEL", "pl"}, {"RPUSH", "pl", 1, 2, 3}, {"LRANGE", "pl", 0, -1},
                              {"GET", "pl:none"}, {"INCR", "pl"}, {"PING"}}
      assert.equal(6, r.n)
      assert.equal(3, r[2])
      assert.same({"1", "2", "3", n = 3}, r[3])
      assert.is_nil(r[4])
      assert.matches("^WRONGTYPE", r[5].err)
      assert.equal("PONG", r[6])
    end)

    it("a long one", function ()
      local cmds = {}
      for i = 1, 5000 do cmds[i] = {"ECHO", "e" .. i} end
      local r = conn:pipeline(cmds)
      assert.equal(5000, r.n)
      for i = 1, 5000 do assert.equal("e" .. i, r[i]) end
    end)

    it("an empty one", function ()
      assert.same({n = 0}, conn:pipeline{})
    end)

    it("refuses a bad command before sending any of them", function ()
      conn:call("DEL", "pl:x")
      assert.matches("command 2: expected a table, got string",
                     err_of(conn.pipeline, conn, {{"INCR", "pl:x"}, "INCR"}))
      assert.matches("command 2, argument 2: string or number expected, got table",
                     err_of(conn.pipeline, conn, {{"INCR", "pl:x"}, {"GET", {}}}))
      assert.matches("command 1: empty", err_of(conn.pipeline, conn, {{}}))
      assert.matches("bad argument #2 to '[^']*' %(table expected", err_of(conn.pipeline, conn, "x"))
      assert.is_nil(conn:call("GET", "pl:x"))   -- nothing went out
      assert.equal("in step", conn:call("ECHO", "in step"))
    end)
  end)

  describe("connect", function ()
    it("names the address it connects to", function ()
      assert.equal("concur.redis.conn 127.0.0.1:" .. server.port .. "/0", tostring(conn))
    end)

    it("selects the url's database", function ()
      local c3 = rc.connect("redis://127.0.0.1:" .. server.port .. "/3")
      finally(function () c3:close() end)
      c3:call("SET", "db:k", "three")
      conn:call("DEL", "db:k")
      assert.is_nil(conn:call("GET", "db:k"))
      assert.equal("three", c3:call("GET", "db:k"))
      assert.matches("/3$", tostring(c3))
    end)

    it("over the unix socket", function ()
      local u = rc.connect("unix://" .. server.socket .. "?db=3")
      finally(function () u:close() end)
      assert.equal("PONG", u:call("PING"))
      assert.equal("three", u:call("GET", "db:k"))
    end)

    it("refuses bad urls, naming them", function ()
      for _, url in ipairs({"x", "http://127.0.0.1", "redis://", "redis://h:port", "redis://h:0",
                            "redis://h:70000", "redis://h/db", "redis://user@h", "unix://",
                            "unix:///s?db=x", "redis://%zz:p@h"}) do
        local e = err_of(rc.connect, url)
        assert.matches("^concur.redis: bad url '", e)
        assert.matches(url, e, 1, true)
      end
      assert.matches("bad argument #1 to '[^']*' %(string expected", err_of(rc.connect))
      assert.matches("bad argument #2", err_of(rc.connect, server.url, -1))
    end)

    it("says when the connection is refused", function ()
      local port = dead_port()
      assert.equal("concur.redis: cannot connect to 127.0.0.1:" .. port .. ": Connection refused",
                   err_of(rc.connect, "redis://127.0.0.1:" .. port))
    end)
  end)

  describe("timeouts", function ()
    it("a blocking command past the timeout raises, and the conn goes on", function ()
      local c = rc.connect(server.url)
      finally(function () c:close() end)
      c:set_timeout(0.3)
      local t0 = concur.time()
      local e = err_of(c.call, c, "BLPOP", "to:none", 5)
      local took = concur.time() - t0
      assert.matches("^concur.redis: timeout", e)
      assert.is_true(took >= 0.25 and took < 4, "took " .. took)
      -- the late BLPOP reply must not be taken for the next command's
      c:call("RPUSH", "to:none", "late")
      assert.equal("PONG", c:call("PING"))
      assert.same({"to:none", "late", n = 2}, c:call("BLPOP", "to:none", 0.1))
      c:set_timeout(nil)
      assert.same({"to:none", "x", n = 2},
                  (c:call("RPUSH", "to:none", "x") and c:call("BLPOP", "to:none", 1)))
      assert.matches("bad argument #2", err_of(c.set_timeout, c, -1))
    end)
  end)

  describe("close", function ()
    it("a closed conn raises on use; close again is fine", function ()
      local c = rc.connect(server.url)
      c:close()
      assert.equal("concur.redis: connection closed", err_of(c.call, c, "PING"))
      assert.equal("concur.redis: connection closed", err_of(c.pipeline, c, {{"PING"}}))
      assert.matches("closed", tostring(c))
      c:close()
    end)

    it("<close> closes it", function ()
      if not support.has_close then return pending(support.NEEDS_CLOSE) end
      local c = support.lua54([[
        local rc, url = ...
        local c <close> = rc.connect(url)
        assert.equal("PONG", c:call("PING"))
        return c
      ]], rc, server.url)
      assert.equal("concur.redis: connection closed", err_of(c.call, c, "PING"))
    end)

    it("unreachable conns are collected", function ()
      local count = function ()
        local clients = conn:call("CLIENT", "LIST")
        local n = 0
        for _ in clients:gmatch("id=") do n = n + 1 end
        return n
      end
      local before = count()
      for _ = 1, 20 do rc.connect(server.url):call("PING") end
      collectgarbage()
      collectgarbage()
      assert.is_true(support.eventually(function () return count() <= before end),
                     "clients left: " .. count() .. " (before: " .. before .. ")")
    end)
  end)

  describe("processes", function ()
    it("a forked child uses the parent's conn over a connection of its own", function ()
      conn:call("SET", "fork:n", 0)
      local id = conn:call("CLIENT", "ID")
      local q = concur.Queue()
      local p = concur.Process{target = function ()
        for _ = 1, 200 do conn:call("INCR", "fork:n") end
        q:put(conn:call("CLIENT", "ID"))
      end}
      p:start()
      for i = 1, 200 do assert.equal("p" .. i, conn:call("ECHO", "p" .. i)) end
      assert.is_true(p:join(30))
      assert.equal(0, p.exitcode)
      assert.equal("200", conn:call("GET", "fork:n"))
      assert.are_not.equal(id, q:get(true, 5))
      assert.equal(id, conn:call("CLIENT", "ID"))   -- the parent's connection is the same one
    end)
  end)
end)

describe("concur.redis.core with a password", function ()
  local server

  lazy_setup(function ()
    server = support.redis_server{password = "pa:ss@word"}
  end)

  lazy_teardown(function ()
    if server then server.stop() end
  end)

  it("AUTHs with the url's password (%-escaped) and user", function ()
    local base = "127.0.0.1:" .. server.port
    local c = rc.connect("redis://:pa%3Ass%40word@" .. base .. "/2")
    assert.equal("PONG", c:call("PING"))
    c:close()
    local d = rc.connect("redis://default:pa%3Ass%40word@" .. base)
    assert.equal("PONG", d:call("PING"))
    d:close()
  end)

  it("a wrong or missing password fails, naming the address", function ()
    local base = "127.0.0.1:" .. server.port
    assert.matches("^concur.redis: AUTH failed at " .. base .. ": WRONGPASS",
                   err_of(rc.connect, "redis://:nope@" .. base))
    local c = rc.connect("redis://" .. base)   -- connects; commands are refused
    assert.matches("^concur.redis: NOAUTH", err_of(c.call, c, "GET", "x"))
    c:close()
  end)
end)

describe("concur.redis.core across a server restart", function ()
  local server

  lazy_setup(function ()
    server = support.redis_server{appendonly = true}
  end)

  lazy_teardown(function ()
    if server then server.stop() end
  end)

  it("the next call after a restart connects again (AUTH and SELECT too)", function ()
    local c = rc.connect(server.url:gsub("/0$", "/5"))
    finally(function () c:close() end)
    c:call("SET", "kept", "yes")
    server.kill9()
    local e = err_of(c.call, c, "GET", "kept")
    assert.matches("^concur.redis: ", e)
    server.restart()
    assert.equal("yes", c:call("GET", "kept"))   -- db 5 again, data from the AOF
    server.restart()                              -- a clean restart while idle
    assert.equal("yes", c:call("GET", "kept"))
  end)

  it("a connection lost mid-command raises 'connection lost'", function ()
    local c = rc.connect(server.url)
    finally(function () c:close() end)
    local id = c:call("CLIENT", "ID")
    -- c blocks; killer kills c's connection on the server side
    local t = concur.Thread{target = function (url, cid)
      local cc = require "concur"
      local k = require("concur.redis.core").connect(url)
      local deadline = cc.time() + 10
      while cc.time() < deadline do
        -- once c waits in BLPOP (its CLIENT LIST entry says cmd=blpop)
        if k:call("CLIENT", "LIST"):find("id=" .. cid .. " [^\n]*cmd=blpop") then
          k:call("CLIENT", "KILL", "ID", cid)
          break
        end
        cc.sleep(0.01)
      end
      k:close()
    end, args = {server.url, id}}
    t:start()
    local e = err_of(c.call, c, "BLPOP", "never", 20)
    t:join()
    assert.matches("^concur.redis: connection lost", e)
    assert.equal("PONG", c:call("PING"))
  end)
end)
