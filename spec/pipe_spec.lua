-- spec/pipe_spec.lua: concur.Pipe and its connections (src/pipe.c; API.md,
-- "Queues and pipes"): frames of values and of bytes, poll, close, end of
-- stream and broken pipe, between threads of a process and between processes
-- forked after the pipe was made.
--
-- Threads report by returning values and never assert; processes report by
-- their exit code (0: all they checked held; 2 and up: which check failed; 1:
-- an uncaught error) and never assert.  Order comes from Events, joins and
-- the messages themselves.  Where one side must know that another is blocked
-- inside a call (recv, send, poll) it polls that thread's state in /proc
-- (sleeping, and not on a futex) with concur.sleep(0.001) between looks.
-- Every wait has a timeout, and after_each kills and joins what a failed test
-- left running, so a failure never hangs the suite.
--
-- Sanitizers (`make check`): no child process here starts a thread, and no
-- thread runs while a process is forked: every test joins its threads before
-- it ends, and the tests that mix both start their thread after the fork.
local concur = require "concur"
local support = require "support"
local unpack, mtype = support.unpack, support.mtype   -- cross to threads with the functions that use them

-- Processes and threads started by the current test; after_each ends them.
local started = support.tracker()
after_each(started.cleanup)

-- From support.lua: fork(fn, ...) starts a process on fn(...) (fn's integer
-- result is its exit code), spawn(fn, ...) a thread; finish(p, timeout)
-- joins a process and returns its exit code; err_of(fn, ...) is pcall that
-- returns the error message (and fails if none); assert_has(s, sub) asserts
-- that s contains sub; eventually(pred, timeout) polls pred.
local fork, spawn, finish = started.process, started.thread, support.finish
local err_of, assert_has, eventually = support.err_of, support.assert_has, support.eventually

-- Whether OS thread `tid` of process `pid` sleeps in a system call other
-- than a futex wait: blocked in recv, send or poll for the callers here (each
-- makes no other blocking call once it has signalled that it is about to).
local function blocked_in_io(pid, tid)
  local f = io.open(("/proc/%d/task/%d/stat"):format(pid, tid))
  if not f then return false end
  local stat = f:read("*a")
  f:close()
  if stat:match("^.*%) (%a)") ~= "S" then return false end
  local w = io.open(("/proc/%d/task/%d/wchan"):format(pid, tid))
  local wchan = w and w:read("*a") or ""
  if w then w:close() end
  return not wchan:find("futex", 1, true)
end

-- Polls until OS thread `tid` of process `pid` is blocked in io
-- (blocked_in_io); true, or false after 10 s.  For the thread or child that
-- waits for that (its Lua state gets a copy of this function).
local function until_blocked(pid, tid)
  local t0 = concur.time()
  while not blocked_in_io(pid, tid) do
    if concur.time() - t0 > 10 then return false end
    concur.sleep(0.001)
  end
  return true
end

-- Starts a thread that sends "wake" on connection c once this thread is
-- blocked in io; its result is "sent", or "main never blocked" (nothing
-- sent) after 10 s.
local function wake_when_blocked(c)
  return spawn(function(conn, pid, tid)
    if not until_blocked(pid, tid) then return "main never blocked" end
    conn:send("wake")
    return "sent"
  end, c, concur.getpid(), concur.current_thread().native_id)
end

-- A deterministic string of n bytes; every 4093-byte piece starts with its
-- number, so a lost, repeated or shifted piece shows.
local function big_string(n, seed)
  local parts, total, i = {}, 0, 0
  while total < n do
    i = i + 1
    local head = "[" .. seed .. ":" .. i .. "]"
    parts[i] = head .. string.rep(string.char(65 + (i * 7 + seed) % 26), 4093 - #head)
    total = total + 4093
  end
  return table.concat(parts):sub(1, n)
end

-- Where two strings first differ, for failure messages.
local function first_diff(x, y)
  if x == y then return nil end
  local step = 65536
  for off = 1, math.max(#x, #y), step do
    if x:sub(off, off + step - 1) ~= y:sub(off, off + step - 1) then
      for k = off, off + step - 1 do
        if x:byte(k) ~= y:byte(k) then return k end
      end
    end
  end
  return math.min(#x, #y) + 1
end

-- Receives the messages ("%08d"):format(i):rep(7680), i = 0, 1, ... until
-- end of stream, checking each; returns how many came.
local function recv_numbered(a)
  local got = 0
  while true do
    local ok, m = pcall(a.recv_bytes, a)
    if not ok then assert_has(m, "end of stream"); return got end
    assert.are.equal(("%08d"):format(got):rep(7680), m)
    got = got + 1
  end
end

local function assert_same_string(expected, got, what)
  assert.are.equal("string", type(got), what .. ": got a " .. type(got))
  assert.are.equal(#expected, #got, what .. ": length")
  local d = first_diff(expected, got)
  assert.is_nil(d, what .. ": first difference at byte " .. tostring(d))
end

describe("concur.Pipe", function()
  describe("making one", function()
    it("gives two duplex connections by default", function()
      for _, arg in ipairs({{}, {true}, {nil}}) do
        local a, b = concur.Pipe(unpack(arg, 1, 1))
        for _, c in ipairs({a, b}) do
          assert.are.equal(false, c.closed)
          assert.are.equal(true, c.readable)
          assert.are.equal(true, c.writable)
          assert.are.equal("integer", mtype(c:fileno()))
          assert.is_true(c:fileno() >= 0)
          assert.are.equal("<concur.Connection duplex fd=" .. c:fileno() .. ">", tostring(c))
        end
        assert.are_not.equal(a:fileno(), b:fileno())
        assert.is_false(rawequal(a, b))
        a:send("to b")
        b:send("to a")
        assert.are.equal("to b", b:recv())
        assert.are.equal("to a", a:recv())
        a:close()
        b:close()
      end
    end)

    it("Pipe(false): the first only receives, the second only sends", function()
      local r, w = concur.Pipe(false)
      assert.are.equal(true, r.readable)
      assert.are.equal(false, r.writable)
      assert.are.equal(false, w.readable)
      assert.are.equal(true, w.writable)
      assert.are.equal("<concur.Connection read-only fd=" .. r:fileno() .. ">", tostring(r))
      assert.are.equal("<concur.Connection write-only fd=" .. w:fileno() .. ">", tostring(w))
      -- The shut-down directions do not make the reader look readable.
      assert.is_false(r:poll())
      w:send({1, 2})
      w:send_bytes("raw")
      assert.is_true(r:poll())
      assert.are.same({1, 2}, r:recv())
      assert.are.equal("raw", r:recv_bytes())
      assert.is_false(r:poll())
    end)

    it("Pipe(false): the wrong direction raises and sends or takes nothing", function()
      local r, w = concur.Pipe(false)
      assert_has(err_of(r.send, r, "x"), "connection is read-only")
      assert_has(err_of(r.send, r, {1}), "connection is read-only")
      assert_has(err_of(r.send_bytes, r, "x"), "connection is read-only")
      assert_has(err_of(w.recv, w), "connection is write-only")
      assert_has(err_of(w.recv_bytes, w), "connection is write-only")
      assert_has(err_of(w.poll, w), "connection is write-only")
      assert_has(err_of(w.poll, w, 0.01), "connection is write-only")
      w:send("ok")
      assert.are.equal("ok", r:recv())
      assert.is_false(r:poll())
    end)

    it("duplex must be a boolean", function()
      for _, bad in ipairs({"x", 1, 0, {duplex = "x"}}) do
        local err = err_of(concur.Pipe, bad)
        assert_has(err, "bad argument #1")
        assert_has(err, "boolean expected")
      end
    end)

    it("takes an options table too: Pipe{duplex = false}", function()
      local a, b = concur.Pipe{duplex = false}
      assert.is_true(a.readable)
      assert.is_false(a.writable)
      assert.is_false(b.readable)
      b:send("one way")
      assert.are.equal("one way", a:recv())
      local c, d = concur.Pipe{}
      assert.is_true(c.writable and d.readable)
    end)
  end)

  describe("messages in one process", function()
    it("values follow the transfer rules", function()
      local a, b = concur.Pipe()
      local lock = concur.Lock()
      local cyc = {name = "cyc", list = {}}
      cyc.self = cyc
      cyc.list[1], cyc.list[2] = cyc, cyc.list
      local shared = {1}
      local count = 10
      local function bump(n) count = count + n; return count end
      local values = {
        true, false, 0, 3, 3.0, -7, math.maxinteger, math.mininteger, 1 / 0, -1 / 0, 0.5,
        "", "a\0b\255", {}, {1, 2, {3}}, {x = shared, y = shared}, cyc, bump, lock,
      }
      for _, v in ipairs(values) do a:send(v) end
      a:send(nil)
      a:send(0 / 0)
      local got = {}
      for i = 1, #values do got[i] = b:recv() end
      local n = b:recv()
      local nan = b:recv()
      assert.is_false(b:poll())
      assert.are.equal(true, got[1])
      assert.are.equal(false, got[2])
      for i = 3, 11 do
        assert.are.equal(values[i], got[i])
        assert.are.equal(mtype(values[i]), mtype(got[i]), "value " .. i)
      end
      assert.are.equal("", got[12])
      assert.are.equal("a\0b\255", got[13])
      assert.are.same({}, got[14])
      assert.are.same({1, 2, {3}}, got[15])
      assert.is_false(rawequal(values[15], got[15]))
      assert.is_true(rawequal(got[16].x, got[16].y))
      assert.is_false(rawequal(got[16].x, shared))
      local c = got[17]
      assert.are.equal("cyc", c.name)
      assert.is_true(rawequal(c.self, c))
      assert.is_true(rawequal(c.list[1], c))
      assert.is_true(rawequal(c.list[2], c.list))
      assert.is_false(rawequal(c, cyc))
      -- a function with its upvalue, copied: calling it leaves ours alone
      assert.are.equal(15, got[18](5))
      assert.are.equal(10, count)
      -- a concur object is the same Lua value again in this state
      assert.is_true(rawequal(lock, got[19]))
      assert.is_nil(n)
      assert.are.equal("float", mtype(nan))
      assert.is_true(nan ~= nan)
    end)

    it("send() without a value is an error; send(nil) sends nil", function()
      local a, b = concur.Pipe()
      assert_has(err_of(a.send, a), "bad argument")
      assert.is_false(b:poll())
      a:send(nil)
      assert.is_true(b:poll())
      assert.is_nil(b:recv())
      assert.is_false(b:poll())
    end)

    it("a value the transfer rules refuse is an error in the sender; nothing is sent", function()
      local a, b = concur.Pipe()
      local err = err_of(a.send, a, {ok = 1, co = coroutine.create(function() end)})
      assert_has(err, "coroutine")
      assert.is_false(b:poll())
      a:send("next")
      assert.are.equal("next", b:recv())
    end)

    it("send of a string and send_bytes are read alike by recv and recv_bytes", function()
      local a, b = concur.Pipe()
      a:send("one")
      a:send("two")
      a:send_bytes("three")
      a:send_bytes("four")
      assert.are.equal("one", b:recv())
      assert.are.equal("two", b:recv_bytes())
      assert.are.equal("three", b:recv())
      assert.are.equal("four", b:recv_bytes())
      -- empty ones too
      a:send("")
      a:send_bytes("")
      assert.are.equal("", b:recv_bytes())
      assert.are.equal("", b:recv())
      assert.is_false(b:poll())
    end)

    it("send_bytes(s, offset, size) sends size bytes from byte offset (counted from 0)", function()
      local a, b = concur.Pipe()
      local s = "0123456789"
      a:send_bytes(s, 0)
      a:send_bytes(s, 3)
      a:send_bytes(s, 3, 4)
      a:send_bytes(s, 0, 1)
      a:send_bytes(s, 9, 1)
      a:send_bytes(s, 10)
      a:send_bytes(s, 10, 0)
      a:send_bytes(s, 4, 0)
      a:send_bytes(s, nil, 2)
      assert.are.equal("0123456789", b:recv_bytes())
      assert.are.equal("3456789", b:recv_bytes())
      assert.are.equal("3456", b:recv_bytes())
      assert.are.equal("0", b:recv_bytes())
      assert.are.equal("9", b:recv_bytes())
      assert.are.equal("", b:recv_bytes())
      assert.are.equal("", b:recv_bytes())
      assert.are.equal("", b:recv_bytes())
      assert.are.equal("01", b:recv_bytes())
      assert.is_false(b:poll())
    end)

    it("send_bytes with an offset or size out of range is a bad argument; nothing is sent", function()
      local a, b = concur.Pipe()
      local function bad(argn, ...)
        local err = err_of(a.send_bytes, a, ...)
        assert_has(err, "bad argument #" .. argn)
        return err
      end
      assert_has(bad(3, "abc", -1), "offset")
      assert_has(bad(3, "abc", 4), "offset")
      assert_has(bad(4, "abc", 0, -1), "size")
      assert_has(bad(4, "abc", 0, 4), "size")
      assert_has(bad(4, "abc", 2, 2), "size")
      assert_has(bad(4, "abc", 3, 1), "size")
      bad(3, "abc", 1.5)
      bad(2, {})
      bad(2)
      assert.is_false(b:poll())
    end)

    it("recv_bytes of a value sent with send raises, and the next message is received", function()
      local a, b = concur.Pipe()
      for _, v in ipairs({{1, 2}, 42, true}) do
        a:send(v)
        a:send("after")
        local err = err_of(b.recv_bytes, b)
        assert_has(err, "recv_bytes")
        assert_has(err, "use recv")
        assert.are.equal("after", b:recv_bytes())
      end
      a:send(nil)
      a:send({x = 1})
      local err = err_of(b.recv_bytes, b)
      assert_has(err, "use recv")
      assert.are.same({x = 1}, b:recv())
      assert.is_false(b:poll())
    end)

    it("a message dropped by recv_bytes(maxlength) gives back the objects it held", function()
      -- Found in review: the dropped body's references to shared objects
      -- were never released (a Lock sent that way leaked in the arena).
      local core = require "concur.core"
      local a, b = concur.Pipe()
      collectgarbage(); collectgarbage()
      local start = core.shm_in_use()
      for _ = 1, 50 do
        a:send({concur.Lock(), concur.Event(), "padding"})
        local err = err_of(b.recv_bytes, b, 5)
        assert_has(err, "maxlength")
      end
      a:send("after")
      assert.are.equal("after", b:recv())
      collectgarbage(); collectgarbage()
      assert.are.equal(start, core.shm_in_use())
    end)

    it("recv_bytes(maxlength): a longer message raises and is dropped; the next one is whole", function()
      local a, b = concur.Pipe()
      a:send_bytes("0123456789")
      a:send_bytes("abc")
      local err = err_of(b.recv_bytes, b, 9)
      assert_has(err, "maxlength")
      assert_has(err, "10")
      assert.are.equal("abc", b:recv_bytes(3))        -- exactly maxlength: fine
      a:send("")
      assert.are.equal("", b:recv_bytes(0))
      a:send("x")
      assert_has(err_of(b.recv_bytes, b, 0), "maxlength")
      a:send({"a table", "longer than four bytes"})
      a:send("next")
      assert_has(err_of(b.recv_bytes, b, 4), "maxlength")
      assert.are.equal("next", b:recv_bytes(4))
      assert.is_false(b:poll())
    end)

    it("recv_bytes with a negative or non-integer maxlength is a bad argument; nothing is taken", function()
      local a, b = concur.Pipe()
      a:send("kept")
      assert_has(err_of(b.recv_bytes, b, -1), "bad argument #")
      assert_has(err_of(b.recv_bytes, b, math.mininteger), "bad argument #")
      assert_has(err_of(b.recv_bytes, b, 2.5), "bad argument #")
      assert_has(err_of(b.recv_bytes, b, "x"), "bad argument #")
      assert.is_true(b:poll())
      assert.are.equal("kept", b:recv_bytes())
    end)

    it("a connection dropped and collected closes its end", function()
      local a = concur.Pipe()
      collectgarbage()
      collectgarbage()
      assert.is_true(a:poll(5))
      assert_has(err_of(a.recv, a), "end of stream")
    end)
  end)

  describe("poll", function()
    it("with no timeout answers at once, and does not take the message", function()
      local a, b = concur.Pipe()
      local t0 = concur.time()
      assert.is_false(b:poll())
      assert.is_false(b:poll(0))
      assert.is_true(concur.time() - t0 < 0.5)
      a:send("m")
      assert.is_true(b:poll())
      assert.is_true(b:poll())
      assert.is_true(b:poll(0))
      assert.are.equal("m", b:recv())
      assert.is_false(b:poll())
      -- each direction on its own
      assert.is_false(a:poll())
    end)

    it("poll(timeout) waits about that long for nothing and returns false", function()
      local a, b = concur.Pipe()
      local t0 = concur.time()
      assert.is_false(b:poll(0.05))
      local waited = concur.time() - t0
      assert.is_true(waited >= 0.03, "poll(0.05) returned after " .. waited .. " s")
      assert.is_true(waited < 2, "poll(0.05) returned after " .. waited .. " s")
      a:send(1)
      t0 = concur.time()
      assert.is_true(b:poll(5))
      assert.is_true(concur.time() - t0 < 1)
    end)

    it("poll(timeout) returns true as soon as another thread sends", function()
      local a, b = concur.Pipe()
      local t = wake_when_blocked(a)
      local t0 = concur.time()
      local ready = b:poll(10)
      local waited = concur.time() - t0
      assert.is_true(t:join(10))
      assert.are.equal("sent", t:result())
      assert.is_true(ready)
      assert.is_true(waited < 8, "poll(10) returned after " .. waited .. " s")
      assert.are.equal("wake", b:recv())
    end)

    it("poll(nil) waits until another thread sends", function()
      local a, b = concur.Pipe()
      local t = wake_when_blocked(a)
      local ready = b:poll(nil)
      assert.is_true(t:join(10))
      assert.are.equal("sent", t:result())
      assert.is_true(ready)
      assert.are.equal("wake", b:recv())
    end)

    it("returns true at end of stream, at once whatever the timeout", function()
      local a, b = concur.Pipe()
      a:close()
      local t0 = concur.time()
      assert.is_true(b:poll())
      assert.is_true(b:poll(5))
      assert.is_true(b:poll(nil))
      assert.is_true(concur.time() - t0 < 1)
      assert_has(err_of(b.recv, b), "end of stream")
      local r, w = concur.Pipe(false)
      w:close()
      assert.is_true(r:poll(nil))
      assert_has(err_of(r.recv, r), "end of stream")
    end)

    it("a negative or non-number timeout is an error", function()
      local _, b = concur.Pipe()
      assert_has(err_of(b.poll, b, -1), "bad argument")
      assert_has(err_of(b.poll, b, -0.001), "bad argument")
      assert_has(err_of(b.poll, b, "soon"), "bad argument")
      assert_has(err_of(b.poll, b, {}), "bad argument")
    end)
  end)

  describe("close", function()
    it("twice is fine; after it every method raises", function()
      local a, b = concur.Pipe()
      a:close()
      a:close()
      assert.are.equal(true, a.closed)
      assert.are.equal(true, a.readable)
      assert.are.equal(true, a.writable)
      assert.are.equal("<concur.Connection duplex closed>", tostring(a))
      assert_has(err_of(a.send, a, 1), "connection is closed")
      assert_has(err_of(a.send, a, "s"), "connection is closed")
      assert_has(err_of(a.send, a, {concur.Lock()}), "connection is closed")
      assert_has(err_of(a.send_bytes, a, "s"), "connection is closed")
      assert_has(err_of(a.recv, a), "connection is closed")
      assert_has(err_of(a.recv_bytes, a), "connection is closed")
      assert_has(err_of(a.poll, a), "connection is closed")
      assert_has(err_of(a.poll, a, 0.01), "connection is closed")
      assert_has(err_of(a.fileno, a), "connection is closed")
      assert.are.equal(false, b.closed)
      local r, w = concur.Pipe(false)
      r:close()
      w:close()
      assert.are.equal("<concur.Connection read-only closed>", tostring(r))
      assert.are.equal("<concur.Connection write-only closed>", tostring(w))
    end)

    it("the other end gets what was sent, then end of stream; its sends raise broken pipe", function()
      local a, b = concur.Pipe()
      a:send(1)
      a:send_bytes("two")
      a:close()
      assert.are.equal(1, b:recv())
      assert.are.equal("two", b:recv_bytes())
      local err = err_of(b.recv, b)
      assert_has(err, "end of stream")
      assert_has(err_of(b.recv_bytes, b), "end of stream")
      assert_has(err_of(b.recv, b), "end of stream")   -- again and again
      -- (a SIGPIPE here would end the whole spec run)
      assert_has(err_of(b.send, b, "x"), "broken pipe")
      assert_has(err_of(b.send, b, {1, 2, 3}), "broken pipe")
      assert_has(err_of(b.send_bytes, b, string.rep("x", 1024 * 1024)), "broken pipe")
      assert.are.equal(false, b.closed)
      b:close()
    end)

    it("a connection is a to-be-closed value", function()
      if not support.has_close then return pending(support.NEEDS_CLOSE) end
      local b = support.lua54([[
        local b
        do
          local a <close>, other = concur.Pipe()
          b = other
          a:send("last")
          assert.are.equal(false, a.closed)
        end
        return b
      ]])
      assert.are.equal("last", b:recv())
      assert_has(err_of(b.recv, b), "end of stream")
      -- closed by an error leaving the block too
      local kept
      local ok = pcall(support.lua54([[
        local keep = ...
        return function()
          local c <close> = concur.Pipe()
          keep(c)
          error("boom")
        end
      ]], function(c) kept = c end))
      assert.is_false(ok)
      assert.are.equal(true, kept.closed)
    end)
  end)

  describe("between threads", function()
    it("a connection in a thread's args is the same object", function()
      local a, b = concur.Pipe()
      local t = spawn(function(c, other)
        c:send("from the thread")
        if not c:poll(10) then return "timed out" end
        local back = c:recv()
        c:close()
        return c, other, back, c.closed
      end, a, b)
      assert.are.equal("from the thread", b:recv())
      b:send("back")
      assert.is_true(t:join(10))
      local c, other, back, closed = t:result()
      assert.is_true(rawequal(a, c))
      assert.is_true(rawequal(b, other))
      assert.are.equal("back", back)
      assert.is_true(closed)
      -- the thread's close is ours
      assert.are.equal(true, a.closed)
      assert_has(err_of(a.send, a, 1), "connection is closed")
      assert_has(err_of(b.recv, b), "end of stream")
    end)

    it("a connection through a Queue is the same object and works in the other thread", function()
      local a, b = concur.Pipe()
      local q = concur.Queue()
      q:put(a)
      assert.is_true(rawequal(a, q:get(true, 5)))
      local t = spawn(function(q)
        local c = q:get(true, 10)
        local again = q:get(true, 10)
        c:send({from = "thread", same = rawequal(c, again)})
        return c
      end, q)
      q:put(b)
      q:put(b)
      assert.is_true(a:poll(10))
      assert.are.same({from = "thread", same = true}, a:recv())
      assert.is_true(rawequal(b, t:result()))
    end)

    it("10 000 small messages arrive in order", function()
      local a, b = concur.Pipe()
      local n = 10000
      local t = spawn(function(c, n)
        for i = 1, n do
          if i % 3 == 0 then c:send(i)
          elseif i % 3 == 1 then c:send(i + 0.5)
          else c:send("s" .. i) end
        end
        return true
      end, b, n)
      local bad, first_bad = 0, nil
      for i = 1, n do
        if not a:poll(10) then bad = bad + (n - i + 1); break end
        local v = a:recv()
        local want = i % 3 == 0 and i or i % 3 == 1 and i + 0.5 or "s" .. i
        if v ~= want or mtype(v) ~= mtype(want) then
          bad = bad + 1
          first_bad = first_bad or ("message %d was %s"):format(i, tostring(v))
        end
      end
      assert.is_true(t:join(10))
      assert.is_true(t:result())
      assert.are.equal(0, bad, first_bad)
      assert.is_false(a:poll())
    end)

    it("10 MiB messages both ways", function()
      local n = 10 * 1024 * 1024
      local a, b = concur.Pipe()
      local t = spawn(function(c, n, make)
        c:send_bytes(make(n, 1))
        local back = c:recv()
        return #back, back == make(n, 2)
      end, b, n, big_string)
      local got = a:recv_bytes(n)          -- exactly maxlength
      a:send(big_string(n, 2))
      assert.is_true(t:join(20))
      local len, same = t:result()
      assert_same_string(big_string(n, 1), got, "thread to main")
      assert.are.equal(n, len)
      assert.is_true(same, "main to thread: the string differs")
    end)

    it("recv_bytes(maxlength) drops a long message the sender is still writing", function()
      local a, b = concur.Pipe()
      local long = big_string(3 * 1024 * 1024, 7)
      local t = spawn(function(c, s)
        c:send_bytes(s)
        c:send("after")
        return true
      end, b, long)
      local err = err_of(a.recv_bytes, a, 1000)
      assert_has(err, "maxlength")
      assert_has(err, tostring(#long))
      assert.are.equal("after", a:recv_bytes(1000))
      assert.is_true(t:join(10))
      assert.is_false(a:poll())
    end)

    -- The payload of message i from sender t: its numbers, then bytes of a
    -- size that varies from 0 to 100 KiB.
    local function payload(t, i)
      local size
      if i % 50 == 0 then size = (i * 7919 + t * 104729) % 102400
      else size = (i * 31 + t * 17) % 1500 end
      return t .. ":" .. i .. ":" .. string.rep(string.char(97 + (t * 5 + i) % 26), size)
    end

    it("4 threads sending on one connection at once never mix their messages", function()
      local a, b = concur.Pipe()
      local senders, n = 4, 2000
      local go_on = concur.Event()
      local ts = {}
      for s = 1, senders do
        ts[s] = spawn(function(c, s, n, payload, go_on)
          if not go_on:wait(10) then return "not started" end
          for i = 1, n do
            local p = payload(s, i)
            local m = i % 3
            if m == 0 then c:send(p)
            elseif m == 1 then c:send_bytes("##" .. p .. "##", 2, #p)
            else c:send({s = s, i = i, p = p}) end
          end
          return "done"
        end, b, s, n, payload, go_on)
      end
      go_on:set()
      local last, got, problems = {}, 0, {}
      for s = 1, senders do last[s] = 0 end
      for _ = 1, senders * n do
        if not a:poll(10) then problems[#problems + 1] = "no message for 10 s"; break end
        local v = a:recv()
        local s, i, p
        if type(v) == "table" then
          s, i, p = v.s, v.i, v.p
        else
          p = v
          s, i = v:match("^(%d+):(%d+):")
          s, i = tonumber(s), tonumber(i)
        end
        got = got + 1
        if not s or not last[s] then
          problems[#problems + 1] = "unreadable message: " .. tostring(v):sub(1, 40)
        else
          if i ~= last[s] + 1 then
            problems[#problems + 1] = ("sender %d: message %d after %d"):format(s, i, last[s])
          end
          last[s] = i
          if p ~= payload(s, i) then
            problems[#problems + 1] = ("sender %d message %d corrupted"):format(s, i)
          end
        end
        if #problems > 5 then break end
      end
      for s = 1, senders do
        assert.is_true(ts[s]:join(10))
        assert.are.equal("done", ts[s]:result())
      end
      assert.are.same({}, problems)
      assert.are.equal(senders * n, got)
      for s = 1, senders do assert.are.equal(n, last[s]) end
      assert.is_false(a:poll())
    end)

    it("3 threads receiving on one connection each get whole messages, each message once", function()
      local a, b = concur.Pipe()
      local receivers, n = 3, 3000
      local ts = {}
      for r = 1, receivers do
        ts[r] = spawn(function(c, payload)
          local ids, bad = {}, 0
          while true do
            if not c:poll(10) then return ids, bad, "timed out" end
            local v = c:recv()
            if v == "stop" then break end
            local i = tonumber(v:match("^1:(%d+):"))
            if not i or v ~= payload(1, i) then bad = bad + 1 end
            ids[#ids + 1] = i or -1
          end
          return ids, bad, "ok"
        end, b, payload)
      end
      for i = 1, n do
        if i % 2 == 0 then a:send(payload(1, i)) else a:send_bytes(payload(1, i)) end
      end
      for _ = 1, receivers do a:send("stop") end
      local seen, total = {}, 0
      for r = 1, receivers do
        assert.is_true(ts[r]:join(20))
        local ids, bad, how = ts[r]:result()
        assert.are.equal("ok", how)
        assert.are.equal(0, bad)
        for k, i in ipairs(ids) do
          assert.is_true(k == 1 or i > ids[k - 1], "receiver " .. r .. " out of order")
          seen[i] = (seen[i] or 0) + 1
          total = total + 1
        end
      end
      assert.are.equal(n, total)
      for i = 1, n do assert.are.equal(1, seen[i], "message " .. i) end
    end)

    it("close() while another thread is blocked in recv: that recv still gets the next message", function()
      local a, b = concur.Pipe()
      local entering = concur.Event()
      local t = spawn(function(c, entering)
        entering:set()
        local ok, v = pcall(c.recv, c)        -- blocks
        local ok2, err2 = pcall(c.recv, c)    -- after the close
        return ok, v, ok2, tostring(err2)
      end, a, entering)
      assert.is_true(entering:wait(10))
      assert.is_true(eventually(function() return t.native_id and blocked_in_io(concur.getpid(), t.native_id) end),
        "the thread never blocked in recv")
      local fd = a:fileno()
      a:close()
      assert.are.equal(true, a.closed)
      assert.are.equal("<concur.Connection duplex closed>", tostring(a))
      assert_has(err_of(a.recv, a), "connection is closed")
      assert_has(err_of(a.fileno, a), "connection is closed")
      -- The fd stays open under the running recv: its number is not handed
      -- out again, and the other end sees no end of stream yet.
      local x, y = concur.Pipe()
      assert.are_not.equal(fd, x:fileno())
      assert.are_not.equal(fd, y:fileno())
      x:close()
      y:close()
      assert.is_false(b:poll())
      b:send("release")
      assert.is_true(t:join(10))
      local ok, v, ok2, err2 = t:result()
      assert.is_true(ok, tostring(v))
      assert.are.equal("release", v)
      assert.is_false(ok2)
      assert_has(err2, "connection is closed")
      -- The recv has left: the fd is closed now.
      assert.is_true(b:poll(5))
      assert_has(err_of(b.recv, b), "end of stream")
    end)

    it("close() while another thread is blocked in send: every message sent goes whole", function()
      -- Messages are records: a sender blocks once the socket's buffer is
      -- full of them (each up to 60 KiB here, so still in the record).
      local a, b = concur.Pipe()
      local entering = concur.Event()
      local t = spawn(function(c, entering)
        entering:set()
        local sent = 0
        while true do
          local ok, err = pcall(c.send_bytes, c, ("%08d"):format(sent):rep(7680))
          if not ok then return sent, tostring(err) end
          sent = sent + 1
        end
      end, b, entering)
      assert.is_true(entering:wait(10))
      assert.is_true(eventually(function() return t.native_id and blocked_in_io(concur.getpid(), t.native_id) end),
        "the thread never blocked in send")
      b:close()
      assert.are.equal(true, b.closed)
      assert_has(err_of(b.send, b, 1), "connection is closed")
      local got = recv_numbered(a)
      assert.is_true(t:join(10))
      local sent, err = t:result()
      assert_has(err, "connection is closed")
      assert.are.equal(sent, got)
      assert.is_true(sent > 0)
    end)
  end)

  describe("between processes", function()
    it("a child echoes values back under the transfer rules", function()
      local a, b = concur.Pipe()
      local p = fork(function()
        a:close()
        while true do
          if not b:poll(10) then return 2 end
          local v = b:recv()
          if v == "end" then return 0 end
          b:send(v)
        end
      end)
      b:close()
      local lock = concur.Lock()
      local cyc = {tag = "c"}
      cyc.self = cyc
      local up = {n = 1}
      local function f(k) return up.n + k end
      local sent = {nil, true, false, 7, 7.0, 1 / 0, -1 / 0, 0 / 0, "x\0y", {1, {2}}, cyc, f, lock}
      local got = {}
      for i = 1, 13 do
        a:send(sent[i])
        assert.is_true(a:poll(10))
        got[i] = a:recv()
      end
      a:send("end")
      assert.are.equal(0, finish(p))
      assert.is_nil(got[1])
      assert.are.equal(true, got[2])
      assert.are.equal(false, got[3])
      assert.are.equal("integer", mtype(got[4]))
      assert.are.equal(7, got[4])
      assert.are.equal(support.INTEGRAL_FLOAT, mtype(got[5]))
      assert.are.equal(1 / 0, got[6])
      assert.are.equal(-1 / 0, got[7])
      assert.is_true(got[8] ~= got[8])
      assert.are.equal("x\0y", got[9])
      assert.are.same({1, {2}}, got[10])
      assert.is_true(rawequal(got[11].self, got[11]))
      assert.are.equal("c", got[11].tag)
      assert.are.equal(6, got[12](5))
      assert.is_true(rawequal(lock, got[13]))
    end)

    it("a child's messages, then end of stream once every copy of its end is closed", function()
      local a, b = concur.Pipe()
      local p = fork(function()
        b:send(1)
        b:send_bytes("two")
        b:send({3})
        return 0
      end)
      assert.are.equal(0, finish(p))
      assert.are.equal(1, a:recv())
      assert.are.equal("two", a:recv_bytes())
      assert.are.same({3}, a:recv())
      -- Our own copy of the child's end keeps the pipe open (as in Python).
      assert.is_false(a:poll(0.05))
      b:close()
      assert.is_true(a:poll(5))
      assert_has(err_of(a.recv, a), "end of stream")
      assert_has(err_of(a.recv, a), "end of stream")
    end)

    it("nothing is read ahead: a child forked between two recvs gets the next message", function()
      local a, b = concur.Pipe()
      a:send(1)
      a:send_bytes("two")
      a:send({3})
      assert.are.equal(1, b:recv())
      local p = fork(function()
        if not b:poll(10) then return 2 end
        if b:recv() ~= "two" then return 3 end
        return 0
      end)
      assert.are.equal(0, finish(p))
      -- the child took "two"; ours is the third, once
      assert.are.same({3}, b:recv())
      assert.is_false(b:poll())
    end)

    -- Forked while a thread runs: AddressSanitizer's allocator is not locked
    -- around fork (see process_spec.lua), so this one is pending there.
    local it_unless_asan = os.getenv("CONCUR_SANITIZER") == "address" and pending or it

    it_unless_asan("a child forked while a closed connection is busy in a thread does not keep its fd", function()
      local a, b = concur.Pipe()
      local entering, go_on = concur.Event(), concur.Event()
      local t = spawn(function(c, entering)
        entering:set()
        local ok, v = pcall(c.recv, c)
        return ok, v
      end, a, entering)
      assert.is_true(entering:wait(10))
      assert.is_true(eventually(function() return t.native_id and blocked_in_io(concur.getpid(), t.native_id) end),
        "the thread never blocked in recv")
      a:close()                         -- its fd stays open until the recv leaves
      local p = fork(function()
        if not a.closed then return 2 end
        local ok, err = pcall(a.recv, a)
        if ok or not tostring(err):find("connection is closed", 1, true) then return 3 end
        if not go_on:wait(10) then return 4 end
        return 0
      end)
      b:send("release")
      assert.is_true(t:join(10))
      local ok, v = t:result()
      assert.is_true(ok, tostring(v))
      assert.are.equal("release", v)
      -- The child did not keep a copy of the closed connection's fd: end of
      -- stream while it still lives.
      local eof = b:poll(5)
      local alive = p:is_alive()
      go_on:set()
      assert.are.equal(0, finish(p))
      assert.is_true(alive, "the child ended too early to tell")
      assert.is_true(eof, "no end of stream while the child lived")
      assert_has(err_of(b.recv, b), "end of stream")
    end)

    it("a child closing its inherited copies leaves the parent's open", function()
      local a, b = concur.Pipe()
      local p = fork(function()
        a:close()
        b:close()
        if not a.closed or not b.closed then return 2 end
        return 0
      end)
      assert.are.equal(0, finish(p))
      assert.are.equal(false, a.closed)
      assert.are.equal(false, b.closed)
      a:send("still open")
      assert.are.equal("still open", b:recv())
      b:send_bytes("both ways")
      assert.are.equal("both ways", a:recv_bytes())
    end)

    it("a send to an end whose holders all closed it raises broken pipe in a child, never SIGPIPE", function()
      local a, b = concur.Pipe()
      a:close()                         -- before the fork: no copy stays open
      local p = fork(function()
        local checks = {
          function() return b:send("x") end,
          function() return b:send({1, 2}) end,
          function() return b:send_bytes(string.rep("y", 4 * 1024 * 1024)) end,
        }
        for k, f in ipairs(checks) do
          local ok, err = pcall(f)
          if ok then return 1 + k end
          if not tostring(err):find("broken pipe", 1, true) then return 10 + k end
        end
        return 0
      end)
      assert.are.equal(0, finish(p))    -- -13 would be SIGPIPE
    end)

    it("a reader that exits while the parent is blocked sending: broken pipe", function()
      local a, b = concur.Pipe()
      local sending = concur.Event()
      local pid, tid = concur.getpid(), concur.current_thread().native_id
      local p = fork(function()
        a:close()
        if not sending:wait(10) then return 2 end
        if not until_blocked(pid, tid) then return 3 end
        return 0                        -- ends without reading: closes b
      end)
      b:close()
      sending:set()
      local msg = ("x"):rep(60 * 1024)
      local err = err_of(function() while true do a:send_bytes(msg) end end)
      assert_has(err, "broken pipe")
      assert.are.equal(0, finish(p))
      assert_has(err_of(a.send, a, "again"), "broken pipe")
    end)

    it("a child killed while the parent is blocked in recv: end of stream", function()
      local a, b = concur.Pipe()
      local up = concur.Event()
      local p = fork(function()
        a:close()
        up:set()
        concur.Event():wait(30)         -- stays until killed
        return 3
      end)
      b:close()                         -- the parent's copy of the child's end
      assert.is_true(up:wait(10))
      -- A thread (started after the fork) kills the child once we are blocked.
      local killer = spawn(function(p, pid, tid)
        until_blocked(pid, tid)
        p:kill()
        return true
      end, p, concur.getpid(), concur.current_thread().native_id)
      local t0 = concur.time()
      local err = err_of(a.recv, a)
      local took = concur.time() - t0
      assert.is_true(killer:join(10))
      assert_has(err, "end of stream")
      assert.is_true(took < 10, "recv took " .. took .. " s")
      assert.are.equal(-9, finish(p))
    end)

    it("a child killed while blocked sending: every message it sent arrives whole, then end of stream", function()
      local a, b = concur.Pipe()
      local sending = concur.Event()
      local p = fork(function()
        a:close()
        sending:set()
        local i = 0
        while true do                   -- blocks: the parent does not read
          b:send_bytes(("%08d"):format(i):rep(7680))
          i = i + 1
        end
      end)
      b:close()
      assert.is_true(sending:wait(10))
      assert.is_true(eventually(function() return blocked_in_io(p.pid, p.pid) end),
        "the child never blocked in send")
      p:kill()
      assert.are.equal(-9, finish(p))
      local got = recv_numbered(a)
      assert.is_true(got > 0)
      assert_has(err_of(a.recv, a), "end of stream")
    end)

    it("a 100 MiB string from a child arrives whole", function()
      local n = 100 * 1024 * 1024
      local expected = big_string(n, 9)
      local a, b = concur.Pipe()
      local p = fork(function()
        a:close()
        b:send(expected)
        return 0
      end)
      b:close()
      assert.is_true(a:poll(20))
      local got = a:recv()
      assert.are.equal(0, finish(p))
      assert_same_string(expected, got, "100 MiB from the child")
      got, expected = nil, nil
      collectgarbage()
    end)

    it("large messages reuse the receive buffer, also in a child forked after one", function()
      -- Bodies from 1 MiB go to a mapping kept for the next message (and
      -- wiped in children): each message must still arrive as it was sent,
      -- smaller after larger, in the parent and in a child that inherits
      -- the kept mapping.
      local a, b = concur.Pipe()
      local sizes = {3 * 1024 * 1024, 2 * 1024 * 1024, 3 * 1024 * 1024 - 7, 1024 * 1024}
      local t = spawn(function(conn, list)
        for i, n in ipairs(list) do conn:send(string.rep(string.char(64 + i), n)) end
      end, b, sizes)
      for i, n in ipairs(sizes) do
        local got = a:recv()
        assert.are.equal(n, #got)
        assert.are.equal(string.rep(string.char(64 + i), 8), got:sub(1, 8))
        assert.are.equal(string.rep(string.char(64 + i), 8), got:sub(-8))
      end
      assert.is_true(t:join(10))
      local c, d = concur.Pipe()
      local p = fork(function()
        local got = c:recv()
        if #got ~= 2 * 1024 * 1024 + 5 then return 2 end
        if got ~= string.rep("z", 2 * 1024 * 1024 + 5) then return 3 end
        return 0
      end)
      d:send(string.rep("z", 2 * 1024 * 1024 + 5))
      assert.are.equal(0, finish(p))
    end)

    it("10 000 small messages from a child arrive in order", function()
      local a, b = concur.Pipe()
      local n = 10000
      local p = fork(function()
        a:close()
        for i = 1, n do
          if i % 2 == 0 then b:send(i) else b:send({i = i}) end
        end
        return 0
      end)
      b:close()
      local bad, first_bad = 0, nil
      for i = 1, n do
        if not a:poll(10) then bad = bad + (n - i + 1); break end
        local v = a:recv()
        local got = type(v) == "table" and v.i or v
        if got ~= i then
          bad = bad + 1
          first_bad = first_bad or ("message %d was %s"):format(i, tostring(got))
        end
      end
      assert.are.equal(0, finish(p))
      assert.are.equal(0, bad, first_bad)
      assert_has(err_of(a.recv, a), "end of stream")
    end)

    it("a Lock and an Event made after the fork, sent to a child, work there", function()
      local a, b = concur.Pipe()
      local p = fork(function()
        a:close()
        if not b:poll(10) then return 2 end
        local objs = b:recv()
        if not objs.lock:acquire(true, 5) then return 3 end
        objs.ev:set()
        if not b:poll(10) then return 4 end
        if b:recv() ~= "go" then return 5 end
        objs.lock:release()
        b:send("released")
        return 0
      end)
      b:close()
      local lock, ev = concur.Lock(), concur.Event()
      a:send({lock = lock, ev = ev})
      assert.is_true(ev:wait(10))
      assert.is_true(lock:locked())
      assert.is_false(lock:acquire(false))
      a:send("go")
      assert.is_true(a:poll(10))
      assert.are.equal("released", a:recv())
      assert.is_true(lock:acquire(false))
      lock:release()
      assert.are.equal(0, finish(p))
    end)

    it("a Queue made in a child, sent to the parent, works both ways", function()
      local a, b = concur.Pipe()
      local p = fork(function()
        a:close()
        local q = concur.Queue()
        q:put("from the child")
        b:send({q = q})
        if not b:poll(10) or b:recv() ~= "replied" then return 2 end
        local ok, v = pcall(q.get, q, true, 10)
        if not ok then return 3 end
        if v ~= "from the parent" then return 4 end
        return 0
      end)
      b:close()
      assert.is_true(a:poll(10))
      local q = a:recv().q
      assert.are.equal("from the child", q:get(true, 10))
      q:put("from the parent")
      a:send("replied")
      assert.are.equal(0, finish(p))
      assert.is_true(q:empty())
    end)

    it("a connection through a Queue to another process fails on the get side; the queue goes on", function()
      local a, b = concur.Pipe()
      local q = concur.Queue()
      local p = fork(function()
        local ok, err = pcall(q.get, q, true, 10)
        if ok then return 2 end
        if not tostring(err):find("belongs to the process that sent it", 1, true) then return 3 end
        local ok2, v = pcall(q.get, q, true, 10)
        if not ok2 or v ~= "next" then return 4 end
        return 0
      end)
      q:put(a)                          -- made before the fork
      q:put("next")
      assert.are.equal(0, finish(p))
      -- ours is untouched
      a:send("fine")
      assert.are.equal("fine", b:recv())
    end)

    it("a connection sent through the pipe to another process fails on the recv side", function()
      local a, b = concur.Pipe()
      local x, y = concur.Pipe()          -- made before the fork
      local p = fork(function()
        a:close()
        if not b:poll(10) then return 2 end
        local ok, err = pcall(b.recv, b)
        if ok then return 3 end
        if not tostring(err):find("belongs to the process that sent it", 1, true) then return 4 end
        if not b:poll(10) then return 5 end
        if b:recv() ~= "next" then return 6 end
        return 0
      end)
      b:close()
      a:send({conn = x})
      a:send("next")
      assert.are.equal(0, finish(p))
      x:send("fine")
      assert.are.equal("fine", y:recv())
    end)

    -- Makes a connection in a process forked after `outer` was: small
    -- blocks of its size class are used up first, so that it lands on heap
    -- that process's parent does not have (the bug below then shows as a
    -- crash, not as a read of stale memory that may happen to pass).
    local function connection_on_new_heap()
      local keep = {}
      for i = 1, 60000 do keep[i] = string.rep("x", 140) .. string.format("%010d", i) end
      local x, y = concur.Pipe()
      return x, y, keep
    end

    -- Found by this spec (fixed): the receiver read the sender's pointer to
    -- a process-local object (to name it, and to test whether it was
    -- shared); for a connection made after the fork that pointer is not
    -- mapped in the receiver, which crashed (SIGSEGV, exit code -11 here).
    -- Now shared-ness is decided by the address alone (cobj_owned_here).
    -- The same through a Queue.  For each way, channel() returns send_conn(y)
    -- (sends connection y as that way does), send(v), recv(), and what the
    -- receiver does once the sender has forked.
    local ways = {
      {"the pipe", function()
        local a, b = concur.Pipe()
        return function(y) b:send({conn = y}) end, function(v) b:send(v) end,
          function() return a:recv() end, function() b:close() end
      end},
      {"a Queue", function()
        local q = concur.Queue()
        return function(y) q:put(y) end, function(v) q:put(v) end,
          function() return q:get(true, 10) end, function() end
      end},
    }
    for _, way in ipairs(ways) do
      local via, channel = unpack(way)
      it("a connection made after the fork, through " .. via .. ", is refused without a crash", function()
        local p = fork(function()
          local send_conn, send, recv, forked = channel()
          local g = concur.Process{target = function()
            local _, y = connection_on_new_heap()
            send_conn(y)
            send("next")
            os.exit(0)
          end}
          g:start()
          forked()
          local ok, err = pcall(recv)
          local ok2, v = pcall(recv)
          g:join(10)
          if ok then return 2 end
          if not tostring(err):find("belongs to the process that sent it", 1, true) then return 3 end
          if not ok2 or v ~= "next" then return 4 end
          return 0
        end)
        assert.are.equal(0, finish(p))      -- -11: the SIGSEGV
      end)
    end
  end)

  -- Issue 14: a byte stream out of step (a writer killed in the middle of a
  -- frame, then someone's send_bytes read as headers) made the receiver use
  -- pointers off the wire (cobj_push(0x4141414141414141)) and load bytecode
  -- it was handed.  Now a message is one record, and nothing received is
  -- trusted: core._pipe_send_raw writes records concur's sender did not.
  describe("bytes concur did not write", function()
    local core = require "concur.core"
    local raw = core._pipe_send_raw
    local le = support.le
    local u32 = function(v) return le(v, 4) end
    local ptr = string.rep("A", 8)

    -- A frame header: magic, kind, flags, pad, pid, nobjs, len, mac.
    local function header(kind, flags, nobjs, len, mac)
      return u32(0x32464e43) .. le(kind, 1) .. le(flags, 1) .. "\0\0" .. u32(concur.getpid())
             .. u32(nobjs) .. le(len, 8) .. le(mac or 0, 8)
    end

    local function open_fds()
      local f = io.popen("ls /proc/" .. concur.getpid() .. "/fd")
      local n = select(2, f:read("*a"):gsub("\n", ""))
      f:close()
      return n
    end

    -- Each raw record is refused with a clear error, and the connection
    -- carries the next message as usual.
    local function refused(a, b, ...)
      raw(b, ...)
      local err = err_of(a.recv, a)
      assert_has(err, "malformed message")
      b:send({after = "ok"})
      assert.are.same({after = "ok"}, a:recv())
    end

    it("old-format and foreign headers, short and empty records", function()
      local a, b = concur.Pipe()
      refused(a, b, u32(0x434e5601) .. u32(1) .. u32(1) .. u32(0) .. le(0, 8) .. ptr)
      refused(a, b, "x")
      refused(a, b, string.rep("A", 4096))
      refused(a, b, header(1, 0, 0, 10))                  -- says 10 bytes, has none
      refused(a, b, header(3, 0, 0, 0))                   -- no such kind
      refused(a, b, header(1, 0x80, 0, 0))                -- unknown flag
      refused(a, b, header(2, 0, 1, 0) .. ptr)            -- bytes with an object
    end)

    it("a large value holding objects goes by memfd, its MAC intact", function()
      local a, b = concur.Pipe()
      local lock, q = concur.Lock(), concur.Queue()
      b:send({lock = lock, q = q, pad = ("z"):rep(200 * 1024)})
      local v = a:recv()
      assert.are.equal(lock, v.lock)
      assert.are.equal(q, v.q)
      assert.are.equal(200 * 1024, #v.pad)
      -- And across a fork, where the receiver is another process.
      local p = fork(function()
        local w = a:recv()
        return (w.lock == lock and #w.pad == 300 * 1024) and 0 or 2
      end)
      b:send({lock = lock, pad = ("y"):rep(300 * 1024)})
      assert.are.equal(0, finish(p))
    end)

    it("object pointers off the wire are never used: the MAC is checked first", function()
      local a, b = concur.Pipe()
      local msg = "\1\14\0"                               -- one value: OBJ 0
      for _, mac in ipairs({0, 0x4141414141414141, -1}) do
        refused(a, b, header(1, 0, 1, #msg, mac) .. ptr .. msg)
        refused(a, b, header(1, 2, 1, #msg, mac) .. ptr .. msg)   -- "local" too
      end
      -- The same, with the body in a memfd.
      refused(a, b, header(1, 1, 1, #msg, 7), ptr .. msg)
    end)

    it("bytecode concur's encoder did not write is never loaded", function()
      local a, b = concur.Pipe()
      -- A hand-made value first, to show the framing is right: INT 21.
      raw(b, header(1, 0, 0, 3) .. "\1\3\42")
      assert.are.equal(21, a:recv())
      local code = string.dump(function() return 1 end)
      local msg = "\1\8" .. u32(#code) .. code .. string.rep("\0", 8) .. "\0"
      raw(b, header(1, 0, 0, #msg) .. msg)
      assert_has(err_of(a.recv, a), "malformed")
      b:send("still")
      assert.are.equal("still", a:recv())
    end)

    it("a memfd body that is not sealed, has the wrong size, or comes in numbers", function()
      local a, b = concur.Pipe()
      local before = open_fds()
      refused(a, b, header(2, 1, 0, 5), "hello", false)          -- not sealed
      refused(a, b, header(2, 1, 0, 6), "hello")                 -- size differs
      refused(a, b, header(2, 1, 0, 5), "hello", true, 3)        -- three files
      refused(a, b, header(2, 0, 0, 5) .. "hello", "hello")      -- a file not asked for
      refused(a, b, header(2, 1, 0, 5))                          -- no file
      raw(b, header(2, 1, 0, 5), "hello")                        -- as concur sends it
      assert.are.equal("hello", a:recv())
      assert.are.equal(before, open_fds(), "every descriptor received is closed")
    end)

    it("writers killed while sending never leave a message out of step (the probe's crash)", function()
      local a, b = concur.Pipe()
      local big = ("%08d"):format(7):rep(128 * 1024)               -- 1 MiB: by memfd
      for round = 1, 4 do
        local go = concur.Event()
        local killed = fork(function()
          go:set()
          while true do
            b:send_bytes(big)
            b:send({t = "tbl", big = big})
          end
        end)
        assert.is_true(go:wait(10))
        -- Read a few, then kill it mid-way (in a write, most likely).
        for _ = 1, round do
          local m = a:recv()
          if type(m) == "table" then assert.are.equal(big, m.big) else assert.are.equal(big, m) end
        end
        killed:kill()
        assert.are.equal(-9, finish(killed))
        -- A second writer sends what used to be read as frame headers.
        local hostile = u32(0x434e5601) .. u32(concur.getpid()) .. u32(1) .. u32(0) ..
                        support.le(8, 8) .. ptr .. ptr
        local other = fork(function()
          b:send_bytes(hostile)
          b:send("done")
          return 0
        end)
        assert.are.equal(0, finish(other))
        -- Whatever the killed one had sent is whole; then the other's two.
        while true do
          local m = a:recv()
          if m == "done" then break end
          if type(m) == "table" then
            assert.are.equal(big, m.big)
          elseif m ~= big then
            assert.are.equal(hostile, m)
          end
        end
        assert.is_false(a:poll())
      end
    end)
  end)
end)
