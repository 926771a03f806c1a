-- spec/exit_spec.lua: what happens when the main chunk ends or os.exit is
-- called while threads still run (API.md, "Threads": the process waits for
-- every non-daemon thread; daemon threads end with the process).
-- Each case runs a fixture script in its own Lua process ($CONCUR_LUA or lua5.4).
local concur = require "concur"

local support = require "support"
local fixtures, LUA = support.fixtures, support.LUA
local shell_quote, run_fixture = support.shell_quote, support.run_fixture

describe("process exit", function()
  it("waits for a non-daemon thread when the main chunk ends", function()
    local out, code, elapsed = run_fixture("exit_nondaemon.lua", "end")
    assert.are.equal(0, code, out)
    local main_at = out:find("main done", 1, true)
    local worker_at = out:find("worker done", 1, true)
    assert.is_not_nil(main_at, out)
    assert.is_not_nil(worker_at, out)
    assert.is_true(worker_at > main_at, out)
    assert.is_true(elapsed >= 0.25, "exited after " .. elapsed .. " s")
  end)

  it("waits for a non-daemon thread when main calls os.exit(0)", function()
    local out, code, elapsed = run_fixture("exit_nondaemon.lua", "exit0")
    assert.are.equal(0, code, out)
    local main_at = out:find("main done", 1, true)
    local worker_at = out:find("worker done", 1, true)
    assert.is_not_nil(main_at, out)
    assert.is_not_nil(worker_at, out)
    assert.is_true(worker_at > main_at, out)
    assert.is_true(elapsed >= 0.25, "exited after " .. elapsed .. " s")
  end)

  it("keeps os.exit's status after waiting for a non-daemon thread", function()
    local out, code, _, how = run_fixture("exit_nondaemon.lua", "exit3")
    assert.are.equal("exit", how)
    assert.are.equal(3, code, out)
    assert.is_truthy(out:find("worker done", 1, true), out)
  end)

  it("waits for the other non-daemon threads when a thread calls os.exit(3)", function()
    local out, code, elapsed = run_fixture("exit_from_thread.lua")
    assert.are.equal(3, code, out)
    assert.matches("quitting\n", out)
    assert.matches("other done\n", out)
    assert.is_nil(out:find("not reached", 1, true))
    assert.is_true(elapsed < 20, "took " .. elapsed .. " s")
  end)

  it("does not wait for a daemon thread", function()
    local out, code, elapsed = run_fixture("exit_daemon.lua")
    assert.are.equal(0, code, out)
    assert.matches("main done\ttrue\ttrue", out)
    assert.is_nil(out:find("daemon done", 1, true), out)
    assert.is_true(elapsed < 3.5, "exited after " .. elapsed .. " s (the daemon sleeps 5 s)")
  end)

  it("exits 0 after a thread raised, with the report on stderr", function()
    local out, code = run_fixture("exit_thread_error.lua")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("Exception in thread doomed:", 1, true), out)
    assert.is_truthy(out:find("worker failed on purpose", 1, true), out)
    assert.is_truthy(out:find("main done", 1, true), out)
  end)

  it("sends the error report to stderr, not stdout", function()
    local cmd = "LUA_PATH=" .. shell_quote(package.path) ..
      " LUA_CPATH=" .. shell_quote(package.cpath) ..
      " " .. shell_quote(LUA) .. " " .. shell_quote(fixtures .. "exit_thread_error.lua") .. " 2>/dev/null"
    local p = assert(io.popen(cmd))
    local stdout = p:read("a")
    local _, _, code = p:close()
    assert.are.equal(0, code)
    assert.are.equal("main done\n", stdout)
  end)
end)
