-- Shared by the specs: running Lua scripts in a subprocess, and the helpers
-- several specs use (errors, threads, processes, polling, big items).
local concur = require "concur"
local core = require "concur.core"
-- busted's assert (the global `assert` here is Lua's own).
local luassert = require "luassert"

local support = {}

-- The 5.3 library names the specs use, on 5.1, 5.2 and LuaJIT --------------
-- Installed in this (the main) state's globals only after concur has loaded,
-- so concur's own fallbacks (lua/concur.lua, "Runtimes") are what runs; a
-- function a spec sends to a thread finds only the thread runtime's library.
-- Numbers there have no integer subtype: math.type says "integer" for an
-- integral value in +-2^53 (the integers a double holds exactly, which is
-- what concur's Lua layer takes for an integer there), as 5.3 would for the
-- same literal.
-- (Decided by the numbers themselves: busted's libraries may have added a
-- math.type of their own.)
support.has_integers = tostring(1.0) == "1.0"
if not support.has_integers then
  local floor = math.floor
  math.maxinteger = 2 ^ 53
  math.mininteger = -2 ^ 53
  function math.type(x)
    if type(x) ~= "number" then return nil end
    return (x == floor(x) and x >= -2 ^ 53 and x <= 2 ^ 53) and "integer" or "float"
  end
  function math.tointeger(x)
    return math.type(x) == "integer" and x or nil
  end
  table.pack = table.pack or function(...) return {n = select("#", ...), ...} end
  -- A function of its own, not the global `unpack` itself: a C function
  -- crosses to a thread by the name it has here, and a thread's state has
  -- no table.unpack (the name lookup could find either name).
  local unpack51 = unpack
  table.unpack = table.unpack or function(...) return unpack51(...) end
  table.move = table.move or function(a1, f, e, t, a2)
    a2 = a2 or a1
    if e >= f then
      if t > f then
        for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
      else
        for i = 0, e - f do a2[t + i] = a1[f + i] end
      end
    end
    return a2
  end
end

-- What a spec's functions use where they may run on a thread (a thread's
-- state has only its runtime's own library): upvalues cross with them.
support.pack = table.pack
support.unpack = table.unpack
support.mtype = math.type
-- Why a test of shared upvalues is pending on Lua 5.1 (not LuaJIT): it
-- cannot tell or join them (README, "Runtimes").
support.NO_UPVALUE_JOIN = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
  and "Lua 5.1 cannot join shared upvalues" or nil

-- What math.type says of an integral float such as 2.0: "float" where
-- numbers have subtypes (5.3, 5.4), "integer" where they do not.
support.INTEGRAL_FLOAT = support.has_integers and "float" or "integer"

-- An object whose collection calls fn (a table's __gc from 5.2 on; 5.1 and
-- LuaJIT run __gc only for userdata: newproxy).
function support.on_collect(fn)
  if newproxy then
    local u = newproxy(true)
    getmetatable(u).__gc = function() fn() end
    return u
  end
  return setmetatable({}, {__gc = function() fn() end})
end

-- load(chunk, name, mode, env) of 5.2+ on every runtime (5.1's load takes
-- only a function: loadstring, then setfenv).
function support.load(chunk, name, mode, env)
  if _VERSION ~= "Lua 5.1" then
    -- (An env given as nil would be the chunk's _ENV: only when given.)
    if env == nil then return load(chunk, name, mode) end
    return load(chunk, name, mode, env)
  end
  local f, err = loadstring(chunk, name)
  if f and env then setfenv(f, env) end
  return f, err
end

-- A value as text that tells apart what Lua does: strings quoted, numbers
-- exactly (with -0's sign), booleans and nil by name.  (5.1's %q takes
-- strings only.)
function support.repr(v)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "number" then
    if v ~= v then return "nan" end
    if v == 0 then return 1 / v < 0 and "-0" or "0" end
    return (support.has_integers and math.type(v) == "integer") and tostring(v) or ("%.17g"):format(v)
  end
  return tostring(v)
end

-- Little-endian bytes of the non-negative integer v, n of them (string.pack's
-- "<In", on every runtime).
function support.le(v, n)
  local b = {}
  for i = 1, n do
    b[i] = string.char(v % 256)
    v = math.floor(v / 256)
  end
  return table.concat(b)
end

-- Spelled to work on every runtime (5.1, LuaJIT: no table.pack, unpack a
-- global, numbers all floats; os.execute returns a status number).
local pack = table.pack or function(...) return {n = select("#", ...), ...} end
local unpack = table.unpack or unpack
local function is_integer(x)
  if math.type then return math.type(x) == "integer" end
  return type(x) == "number" and x % 1 == 0
end
local function execute_ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- Running sh commands the same way on every runtime: 5.1 and LuaJIT give no
-- exit status from a popen'ed file's close (and os.execute returns a raw
-- wait status), so the shell prints it after the command's own output.
local STATUS = "\n<<concur-spec-exit-status:"

-- Runs the sh command cmd (its redirections are its own) and returns its
-- output, its exit status (128+N when a signal N ended it, as sh says) and
-- "exit": what 5.4's `p:close()` gives for a command run through sh.
function support.shell(cmd)
  local p = assert(io.popen("{ " .. cmd .. "\n}; printf '" .. STATUS .. "%d\\n' $?"))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.*)" .. STATUS:gsub("%p", "%%%0") .. "(%d+)\n$")
  luassert.is_not_nil(code, "no exit status after the output of " .. cmd)
  return body, tonumber(code), "exit"
end

-- Whether the sh command cmd exits with status 0 (os.execute on every runtime).
support.execute = execute_ok

-- The spec directory and its fixtures, whatever the working directory.
support.spec_dir = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
support.fixtures = support.spec_dir .. "fixtures/"

-- Lua 5.4 syntax, in specs that must load on every runtime ------------------

-- Whether this Lua has to-be-closed variables (`local x <close> = v`): 5.4.
support.has_close = (loadstring or load)("local _ <close> = nil") ~= nil

-- Why a test of <close> is pending where there is none; such a test begins
--   if not support.has_close then return pending(support.NEEDS_CLOSE) end
support.NEEDS_CLOSE = "needs Lua 5.4: <close>"

-- Globals of the chunks lua54 runs: _G's, with busted's assert, and concur.
local lua54_env = setmetatable({assert = luassert, concur = concur}, {__index = _G})

-- Runs src, code in Lua 5.4 syntax that the spec file cannot hold itself (it
-- would not load on older runtimes), with the arguments ... (what it needs of
-- the spec's locals); returns its results.  Only where has_close.  Written as
-- `support.lua54([[` with the code from the next line on, its error
-- positions are the spec file's own lines.
function support.lua54(src, ...)
  local caller = debug.getinfo(2, "Sl")
  local at = ("\n"):rep(math.max(caller.currentline, 0))
  local chunk = assert(load(at .. src, caller.source, "t", lua54_env))
  return chunk(...)
end

-- The interpreter the spec runner uses (an instrumented one under `make check`).
support.LUA = os.getenv("CONCUR_LUA") or "lua5.4"

-- s quoted for sh.
function support.shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The sh command that runs fixtures/NAME with the arguments ... under that
-- interpreter and this process's module paths.
function support.fixture_command(name, ...)
  local q = support.shell_quote
  -- A hang (the bugs these specs catch) becomes a failure after 60 s (180 s
  -- under a sanitizer, which runs a thousand forks several times slower).
  local limit = os.getenv("CONCUR_SANITIZER") and 180 or 60
  local cmd = {"LUA_PATH=" .. q(package.path), "LUA_CPATH=" .. q(package.cpath),
               "timeout -k 5 " .. limit, q(support.LUA), q(support.fixtures .. name)}
  for _, a in ipairs({...}) do cmd[#cmd + 1] = q(a) end
  return table.concat(cmd, " ")
end

-- Runs fixtures/NAME (fixture_command).  Returns stdout and stderr together,
-- the exit status, the seconds it took, and how it ended ("exit" or
-- "signal").
function support.run_fixture(name, ...)
  local t0 = concur.time()
  local out, code, how = support.shell(support.fixture_command(name, ...) .. " 2>&1")
  return out, code, concur.time() - t0, how
end

-- Runs fixtures/NAME (fixture_command), its stderr thrown away; returns its
-- stdout and exit status.
function support.fixture_stdout(name, ...)
  local out, code = support.shell(support.fixture_command(name, ...) .. " 2>/dev/null")
  return out, code
end

-- Whether process `pid` (not a child of this one) has ended: no such
-- process, or a zombie its new parent has not reaped yet.
function support.pid_gone(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then
    local stat = f:read("*a") or ""
    f:close()
    local state = stat:match("^%d+ %b() (%a)")
    return state == nil or state == "Z" or state == "X"
  end
  if io.open("/proc/self/stat") then return true end   -- a /proc without it
  return not execute_ok(("kill -0 %d 2>/dev/null"):format(pid))
end

-- pcall that returns the error message as a string (and fails if none).
function support.err_of(fn, ...)
  local ok, err = pcall(fn, ...)
  luassert.is_false(ok, "expected an error")
  return tostring(err)
end

-- pcall that returns the raw error value (concur.Empty, a table, ...) (and
-- fails if none).
function support.raised(fn, ...)
  local ok, err = pcall(fn, ...)
  luassert.is_false(ok, "expected an error")
  return err
end

-- Asserts that `s` contains `sub` (plain), with both in the message.
function support.assert_has(s, sub)
  luassert.is_truthy(tostring(s):find(sub, 1, true),
    ("expected %q in %q"):format(sub, tostring(s)))
end

-- Asserts that `s` contains `first` and, after it, `second` (both plain).
function support.assert_in_order(s, first, second)
  local first_at = s:find(first, 1, true)
  local second_at = s:find(second, 1, true)
  luassert.is_not_nil(first_at, ("expected %q in %q"):format(first, s))
  luassert.is_not_nil(second_at, ("expected %q in %q"):format(second, s))
  luassert.is_true(first_at < second_at, ("expected %q before %q in %q"):format(first, second, s))
end

-- Seconds fn(...) takes, then pcall's results (ok first).
function support.timed(fn, ...)
  local t0 = concur.time()
  local r = pack(pcall(fn, ...))
  return concur.time() - t0, unpack(r, 1, r.n)
end

-- Asserts that a wait that should take about `want` seconds took `took`:
-- wide bounds only.
function support.assert_about(want, took)
  luassert.is_true(took >= want * 0.8, ("returned after %.4f s, wanted %.3f s"):format(took, want))
  luassert.is_true(took < want + 2, ("returned after %.4f s, wanted %.3f s"):format(took, want))
end

-- Polls pred every millisecond until it holds; returns true, or false after
-- `timeout` seconds (10 by default).
function support.eventually(pred, timeout)
  local t0 = concur.time()
  while not pred() do
    if concur.time() - t0 > (timeout or 10) then return false end
    concur.sleep(0.001)
  end
  return true
end

-- Starts a thread on fn(...) and returns it (nothing ends it for the test).
local function start_thread(fn, ...)
  local t = concur.Thread{target = fn, args = pack(...)}
  t:start()
  return t
end
support.start_thread = start_thread

-- Starts n threads on fn(i, ...) and returns the list of them.
function support.start_threads(n, fn, ...)
  local ts = {}
  for i = 1, n do ts[i] = start_thread(fn, i, ...) end
  return ts
end

-- Kills process p if it still runs and joins it; raises nothing.
local function stop(p)
  pcall(function()
    if p:is_alive() then p:kill() end
    p:join()
  end)
end
support.stop = stop

-- Joins process p (a hang becomes a failure after `timeout` seconds, 20 by
-- default) and returns its exit code.
function support.finish(p, timeout)
  luassert.is_true(p:join(timeout or 20), "child " .. tostring(p.pid) .. " did not end")
  return p.exitcode
end

-- Whether pid stays runnable (state R in /proc/<pid>/stat) over five looks
-- 0.1 s apart.  Under ThreadSanitizer a child forked while another thread of
-- the parent was inside the sanitizer's stack depot (GCC 12's runtime does
-- not lock it around fork) spins for ever on that lock, one thread, no
-- concur frame: seen 2026-12-07.  A child stuck in concur would sleep.
function support.spinning(pid)
  for _ = 1, 5 do
    local f = io.open("/proc/" .. pid .. "/stat")
    if f == nil then return false end
    local stat = f:read("*a")
    f:close()
    if stat:match("^%d+ %b() (%a)") ~= "R" then return false end
    concur.sleep(0.1)
  end
  return true
end

-- Kills process p, joins it and asserts that the SIGKILL ended it (exit
-- code -9).  With `settle`, first asserts that p still runs `settle` seconds
-- on (it is blocked where the test put it, not ended).
function support.kill(p, settle)
  if settle then
    luassert.is_false(p:join(settle), "child " .. tostring(p.pid) .. " ended before it was killed")
  end
  p:kill()
  luassert.are.equal(-9, support.finish(p))
end

-- Whether pid is one of this process's live children.
function support.is_child(pid)
  for _, p in ipairs(concur.active_children()) do
    if p.pid == pid then return true end
  end
  return false
end

-- Whether a process with this pid exists (kill -0; a zombie counts).
function support.pid_exists(pid)
  return execute_ok(("kill -0 %d 2>/dev/null"):format(pid))
end

-- Asserts that the processes `pids` (a list or a table's values) have ended
-- and been reaped: none is a child any more, nor exists even as a zombie.
function support.assert_reaped(pids)
  for _, pid in pairs(pids) do
    luassert.is_false(support.is_child(pid), "process " .. pid .. " is still a child")
    luassert.is_false(support.pid_exists(pid), "process " .. pid .. " still exists")
  end
end

-- Asserts that x (a Thread or a Process that still runs) is running: its
-- join(0.05) returns false after about 0.05 s (and before `before` seconds),
-- and it is alive.
function support.assert_join_times_out(x, before)
  local t0 = concur.time()
  luassert.is_false(x:join(0.05))
  local waited = concur.time() - t0
  luassert.is_true(waited >= 0.03, "join(0.05) returned after " .. waited .. " s")
  luassert.is_true(waited < before, "join(0.05) returned after " .. waited .. " s")
  luassert.is_true(x:is_alive())
end

-- What a spec starts, so that after_each can end the leftovers of a failed
-- test.  Returns a table of functions:
--   process(fn, ...): starts a Process on fn(...) and returns it; fn's
--     integer result is the exit code (os.exit(n) works too).
--   thread(fn, ...): starts a Thread on fn(...) and returns it.
--   holder(obj, times): starts a Process that acquires obj (a Lock, RLock,
--     Condition or Semaphore; `times` times, once by default) and then
--     blocks until it is killed; returns it once it holds obj.
--   acquirer(obj): starts a Process that acquires obj (5 s at most) and
--     releases it; returns its exit code (0: it could, 2: it could not).
--   cleanup(): kills and joins the processes, then joins the threads (10 s
--     each at most), and forgets them all; for after_each.
function support.tracker()
  local procs, threads = {}, {}
  local self = {}
  function self.process(fn, ...)
    local p = concur.Process{target = function(...)
      local code = fn(...)
      if is_integer(code) then os.exit(code) end
    end, args = pack(...)}
    procs[#procs + 1] = p
    p:start()
    return p
  end
  function self.thread(fn, ...)
    local t = concur.Thread{target = fn, args = pack(...)}
    threads[#threads + 1] = t
    t:start()
    return t
  end
  function self.holder(obj, times)
    local held = concur.Event()
    local p = self.process(function()
      for _ = 1, times or 1 do
        if not obj:acquire(true, 5) then return 2 end
      end
      held:set()
      concur.Event():wait(30)      -- stays until killed
      return 3
    end)
    luassert.is_true(held:wait(10), "the holder did not take it")
    return p
  end
  function self.acquirer(obj)
    return support.finish(self.process(function()
      if not obj:acquire(true, 5) then return 2 end
      obj:release()
      return 0
    end))
  end
  function self.cleanup()
    for _, p in ipairs(procs) do stop(p) end
    for _, t in ipairs(threads) do pcall(t.join, t, 10) end
    procs, threads = {}, {}
  end
  return self
end

-- A string of n bytes that says which it is (not all one byte): its head
-- names seed and n.
function support.big_string(n, seed)
  local head = ("<%d:%d>"):format(seed, n)
  if n <= #head then return head:sub(1, n) end
  local unit = "0123456789abcdef" .. string.char(seed % 256)
  return head .. unit:rep(math.floor((n - #head) / #unit) + 1):sub(1, n - #head)
end

-- A table of n entries, each a small table, tagged `tag`; checked by check_big.
function support.big_table(n, tag)
  local t = {tag = tag}
  for i = 1, n do t[i] = {i, tostring(i)} end
  return t
end

-- Whether t is big_table(n, tag) as it was made.
function support.check_big(t, n, tag)
  if type(t) ~= "table" or t.tag ~= tag or #t ~= n then return false end
  for i = 1, n do
    if t[i][1] ~= i or t[i][2] ~= tostring(i) then return false end
  end
  return true
end

-- Bytes in use in the shared arena, garbage collected first.
function support.shm_in_use()
  collectgarbage()
  collectgarbage()
  return core.shm_in_use()
end

-- How far shm_in_use may end above where it started.
support.SHM_SLACK = 64 * 1024

-- Asserts that the bytes in use in the shared arena (garbage collected
-- first) are back within SHM_SLACK of `start`.
function support.assert_shm_back(start)
  local grown = support.shm_in_use() - start
  luassert.is_true(grown < support.SHM_SLACK, "the arena grew by " .. grown .. " bytes")
end

-- Redis servers of the specs' own ---------------------------------------------

-- A random number for ports: from /dev/urandom, not math.random (the specs'
-- own sequence stays theirs).
local function urandom_int(lo, hi)
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4) or tostring(os.time() + concur.getpid())
  if f then f:close() end
  local n = 0
  for i = 1, #b do n = (n * 256 + b:byte(i)) % 2147483647 end
  return lo + n % (hi - lo + 1)
end

local function file_text(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a") or ""
  f:close()
  return s
end

-- Whether a server at url answers PING (with concur.redis.core).
local function redis_answers(url)
  local ok, rc = pcall(require, "concur.redis.core")
  if not ok then error("concur.redis.core does not load: " .. tostring(rc), 0) end
  local ok2, conn = pcall(rc.connect, url, 1)
  if not ok2 then return false end
  local ok3, pong = pcall(conn.call, conn, "PING")
  conn:close()
  return ok3 and pong == "PONG"
end

-- Starts a redis-server of this spec's own on 127.0.0.1 at a free random
-- high port, in a fresh temporary folder, and returns it once PING answers:
--   {port =, url =, dir =, pid =, socket = (its unix socket), password =,
--    stop = function () (ends it, removes the folder; again: nothing),
--    restart = function () (same port and folder: data kept with appendonly),
--    kill9 = function () (SIGKILL, the folder kept for restart),
--    log = function () (its log so far)}.
-- opts: appendonly (true: --appendonly yes), password (--requirepass).
-- One server per spec file: lazy_setup / lazy_teardown.
function support.redis_server(opts)
  opts = opts or {}
  if not execute_ok("command -v redis-server >/dev/null 2>&1") then
    error("redis-server is not installed: apt-get install redis-server (or `make deps`)", 2)
  end
  local q = support.shell_quote
  local mk = io.popen("mktemp -d /tmp/concur-redis.XXXXXX")
  local dir = mk:read("*l")
  mk:close()
  assert(dir and dir ~= "", "mktemp -d failed")
  local server = {dir = dir, socket = dir .. "/redis.sock", password = opts.password}
  local function url_of(port)
    local cred = opts.password and (":" .. opts.password .. "@") or ""
    return ("redis://%s127.0.0.1:%d/0"):format(cred, port)
  end
  -- Starts redis-server on `port`; the pid, or nil and why.
  local function start(port)
    local args = {"redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
                  "--protected-mode", "yes", "--daemonize", "no", "--dir", dir,
                  "--save", "", "--appendonly", opts.appendonly and "yes" or "no",
                  "--unixsocket", server.socket, "--unixsocketperm", "700",
                  "--logfile", "", "--databases", "16"}
    if opts.password then
      args[#args + 1] = "--requirepass"
      args[#args + 1] = opts.password
    end
    for i, a in ipairs(args) do args[i] = q(a) end
    local log = dir .. "/redis.log"
    local p = io.popen(table.concat(args, " ") .. " </dev/null >>" .. q(log) .. " 2>&1 & echo $!")
    local pid = tonumber(p:read("*l"))
    p:close()
    assert(pid, "could not start redis-server")
    local url = url_of(port)
    local t0 = concur.time()
    while concur.time() - t0 < 10 do
      if redis_answers(url) then return pid end
      if support.pid_gone(pid) then
        return nil, file_text(log)
      end
      concur.sleep(0.02)
    end
    execute_ok("kill -9 " .. pid .. " 2>/dev/null")
    return nil, "no PING answer within 10 s: " .. file_text(log)
  end
  local why
  for _ = 1, 20 do
    local port = urandom_int(20000, 59999)
    local pid
    pid, why = start(port)
    if pid then
      server.port, server.pid, server.url = port, pid, url_of(port)
      break
    end
    if not why:find("in use", 1, true) then break end   -- only a taken port is retried
  end
  if not server.pid then
    execute_ok("rm -rf " .. q(dir))
    error("could not start redis-server: " .. tostring(why), 2)
  end
  -- Gone, and its sockets closed: a zombie leader can show while the
  -- server's other threads (which share its sockets) still end.
  local function wait_gone(pid)
    luassert.is_true(support.eventually(function ()
      if not support.pid_gone(pid) then return false end
      local threads = tonumber(file_text("/proc/" .. pid .. "/status"):match("Threads:%s*(%d+)"))
      return threads == nil or threads <= 1
    end, 20), "redis-server " .. pid .. " did not end")
  end
  local function halt(sig)
    if server.pid then
      execute_ok(("kill -%s %d 2>/dev/null"):format(sig, server.pid))
      wait_gone(server.pid)
      server.pid = nil
    end
  end
  function server.log() return file_text(dir .. "/redis.log") end
  function server.kill9() halt("KILL") end
  function server.restart()
    halt("TERM")
    local pid, err = start(server.port)
    if not pid then error("could not restart redis-server: " .. tostring(err), 2) end
    server.pid = pid
  end
  function server.stop()
    halt("TERM")
    if server.dir then
      execute_ok("rm -rf " .. q(server.dir))
      server.dir = nil
    end
  end
  return server
end

return support
