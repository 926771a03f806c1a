-- spec/interrupt_spec.lua: Ctrl-C (SIGINT) in the main thread (API.md,
-- "Stopping work"; core.c, "Ctrl-C").  A blocking concur call either
-- completes and returns its result, or raises an error starting
-- "interrupted" and leaves nothing taken, never both; it raises promptly,
-- then the exit rules run; a second Ctrl-C ends the process at once.
-- Every case runs in its own Lua process ($CONCUR_LUA or lua5.4): lua.c's
-- handler takes one SIGINT per process.
local concur = require "concur"

local support = require "support"

-- Under the sanitizers the specs run tools/lua_runner.c, a stand-in for lua
-- that has no lua.c SIGINT handler (the hook this spec relies on), and
-- ThreadSanitizer defers signal handlers to the next intercepted call: these
-- specs run with the real interpreter only (make test).
if os.getenv("CONCUR_SANITIZER") then
  it = pending   -- luacheck: ignore
end
local fixtures, LUA, q = support.fixtures, support.LUA, support.shell_quote

-- Runs interrupt_main.lua KIND in the background, sends it SIGINT once it is
-- ready (and a second one once it has reported the first, with `twice`),
-- and returns its output, its exit status, the seconds from the first
-- SIGINT to its end, and how it ended ("exit" or "signal").
local function interrupt_main(kind, linger, twice)
  local ready = os.tmpname()
  os.remove(ready)
  local out = os.tmpname()
  local script = table.concat({
    "LUA_PATH=" .. q(package.path) .. " LUA_CPATH=" .. q(package.cpath)
      .. " " .. q(LUA) .. " " .. q(fixtures .. "interrupt_main.lua") .. " "
      .. q(kind) .. " " .. q(ready) .. " " .. q(tostring(linger or 1))
      .. " >" .. q(out) .. " 2>&1 & pid=$!",
    "( sleep 60; kill -KILL $pid ) >/dev/null 2>&1 & dog=$!",   -- a hang fails, late
    "n=0; while [ ! -s " .. q(ready) .. " ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n+1)); done",
    "sleep 0.1",   -- into the wait (an earlier interrupt is raised all the same)
    "t0=$(date +%s%N); kill -INT $pid",
    twice and ("n=0; while ! grep -q interrupted " .. q(out)
      .. " && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done; kill -INT $pid") or ":",
    "wait $pid; rc=$?; t1=$(date +%s%N); kill $dog 2>/dev/null",
    "echo \"@@ $rc $(( (t1 - t0) / 1000000 ))\"",
  }, "\n")
  local p = assert(io.popen(script))
  local res = p:read("*a")
  p:close()
  local f = io.open(out)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(out)
  os.remove(ready)
  local rc, ms = res:match("@@ (%d+) (%d+)")
  rc = tonumber(rc)
  local how = rc and rc > 128 and "signal" or "exit"
  if rc and rc > 128 then rc = rc - 128 end
  return text, rc, (tonumber(ms) or 1e9) / 1000, how
end

describe("Ctrl-C in the main thread", function()
  for _, kind in ipairs{"get", "put", "qjoin", "acquire", "sem", "wait", "cond", "barrier",
                        "join", "result", "sleep", "pjoin", "pool", "recv", "poll", "send"} do
    it("raises 'interrupted' promptly from a blocked " .. kind .. ", then runs the exit rules",
       function()
      local out, rc, took, how = interrupt_main(kind)
      assert.are.equal("exit", how, out)
      assert.are.equal(1, rc, out)
      assert.matches(": interrupted!", out, 1, true)
      assert.is_nil(out:find("not reached", 1, true), out)
      -- The exit rules waited for the non-daemon thread (it sleeps 0.5 s).
      assert.is_truthy(out:find("worker done", 1, true), out)
      assert.is_true(took < 5, kind .. ": ended " .. took .. " s after SIGINT")
    end)
  end

  it("ends at once on a second Ctrl-C while the exit rules wait", function()
    local out, rc, took, how = interrupt_main("get", 30, true)
    assert.are.equal("signal", how, out)
    assert.are.equal(2, rc, out)   -- SIGINT's default action
    assert.matches(": interrupted!", out, 1, true)
    assert.is_nil(out:find("worker done", 1, true), out)
    assert.is_true(took < 10, "ended " .. took .. " s after the first SIGINT")
  end)
end)

describe("Ctrl-C races", function()
  -- Each round: a child process blocked in the wait, a thread of its own
  -- making the wait succeed, SIGINT at a varying moment; the child checks
  -- the no-loss rule (fixtures/interrupt_races.lua).
  local rounds = {get = 50, put = 30, lock = 50, sem = 30, event = 15, cond = 20, join = 10,
                  recv = 40, send = 20}
  for _, kind in ipairs{"get", "put", "lock", "sem", "event", "cond", "join", "recv", "send"} do
    it("loses nothing when SIGINT meets a " .. kind .. " that succeeds (" .. rounds[kind]
       .. " rounds)", function()
      local out, code = support.run_fixture("interrupt_races.lua", kind, tostring(rounds[kind]))
      assert.are.equal(0, code, out)
      local n = 0
      for line in out:gmatch("[^\n]+") do
        assert.matches("^ok %a+\t0$", line)
        n = n + 1
      end
      assert.are.equal(rounds[kind], n, out)
    end)
  end

  it("interrupts a child process blocked in concur.sleep at the first SIGINT", function()
    local p = concur.Process{target = function() concur.sleep(30) end}
    local t0 = concur.time()
    p:start()
    -- Into its sleep (an earlier SIGINT is raised all the same).
    concur.sleep(0.2)
    os.execute("kill -INT " .. p.pid)
    assert.is_true(p:join(10), "the child did not end")
    assert.are.equal(1, p.exitcode)   -- an error in run, not the signal
    assert.is_true(concur.time() - t0 < 10)
  end)
end)
