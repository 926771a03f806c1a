-- spec/exit_spec.lua: what happens when the main chunk ends or os.exit is
-- called while threads still run (API.md, "Threads": the process waits for
-- every non-daemon thread; daemon threads end with the process).
-- Each case runs a fixture script in its own Lua process ($CONCUR_LUA or lua5.4).
local concur = require "concur"

local support = require "support"
local unpack = support.unpack   -- cross to threads with the functions that use them
local run_fixture = support.run_fixture
local TSAN = os.getenv("CONCUR_SANITIZER") == "thread"

describe("process exit", function()
  for _, case in ipairs({{"end", "the main chunk ends"}, {"exit0", "main calls os.exit(0)"}}) do
    local mode, when = unpack(case)
    it("waits for a non-daemon thread when " .. when, function()
      local out, code, elapsed = run_fixture("exit_nondaemon.lua", mode)
      assert.are.equal(0, code, out)
      support.assert_in_order(out, "main done", "worker done")
      assert.is_true(elapsed >= 0.25, "exited after " .. elapsed .. " s")
    end)
  end

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
    assert.matches("main joined\tfalse\n", out)
    assert.is_true(elapsed < 20, "took " .. elapsed .. " s")
  end)

  describe("os.exit(5) in a thread, with a non-daemon thread and a daemon process alive,", function()
    local pid_gone, eventually = support.pid_gone, support.eventually
    -- The status is 5, the other thread was waited for, the daemon stopped.
    local function check(mode)
      local out, code, elapsed, how = run_fixture("exit_thread_status.lua", mode)
      local daemon = tonumber(out:match("daemon (%d+)"))
      assert.is_not_nil(daemon, out)
      local gone = eventually(function() return pid_gone(daemon) end, 5)
      if not gone then os.execute("kill -9 " .. daemon) end
      assert.are.equal("exit", how, out)
      assert.are.equal(5, code, out)
      assert.matches("quitting\n", out)
      assert.matches("other done\n", out)
      assert.is_true(gone, "the daemon process " .. daemon .. " was left running")
      assert.is_true(elapsed < 30, "took " .. elapsed .. " s")
      return out
    end

    it("ends with 5 when the main chunk ends after it", function()
      check("after")
    end)

    it("ends with 5 when the main chunk ended before it", function()
      check("before")
    end)

    it("counts the thread as ended: a thread joining it goes on", function()
      local out = check("join")
      assert.matches("joined\tfalse\t[^\n]*ended the process with os.exit", out)
    end)

    it("ends a child process with 5 when its run returns at once", function()
      local out, code = run_fixture("exit_thread_status.lua", "child")
      assert.are.equal(0, code, out)
      assert.matches("exitcode 5\n", out)
      assert.matches("other done\n", out)
      local daemon = tonumber(out:match("daemon (%d+)"))
      assert.is_not_nil(daemon, out)
      assert.is_true(pid_gone(daemon), "the daemon process " .. daemon .. " was left running")
    end)
  end)

  describe("a parent killed by a signal", function()
    local pid_gone, eventually = support.pid_gone, support.eventually
    -- Runs exit_parent_killed.lua, kills it with `sig` once its children
    -- run, and returns their pids by kind (worker, busy, daemon, nondaemon).
    local function kill_parent(sig)
      local p = assert(io.popen(support.fixture_command("exit_parent_killed.lua") .. " 2>&1"))
      local pids, parent, out = {worker = {}, busy = {}, daemon = {}, tdaemon = {}, nondaemon = {}}, nil, {}
      for line in p:lines() do
        out[#out + 1] = line
        local what, pid = line:match("^(%a+)\t(%d+)$")
        if what == "ready" then
          parent = tonumber(pid)
          break
        end
        if what and pids[what] then table.insert(pids[what], tonumber(pid)) end
      end
      if parent then os.execute("kill -" .. sig .. " " .. parent) end
      p:close()
      local all = {}
      for _, list in pairs(pids) do
        for _, pid in ipairs(list) do all[#all + 1] = pid end
      end
      local function cleanup()
        for _, pid in ipairs(all) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
      end
      assert.is_not_nil(parent, table.concat(out, "\n"))
      assert.are.equal(2, #pids.worker, table.concat(out, "\n"))
      assert.are.equal(1, #pids.busy, table.concat(out, "\n"))
      assert.are.equal(1, #pids.daemon, table.concat(out, "\n"))
      assert.are.equal(1, #pids.tdaemon, table.concat(out, "\n"))
      assert.are.equal(1, #pids.nondaemon, table.concat(out, "\n"))
      return pids, cleanup
    end

    for _, sig in ipairs({"TERM", "KILL"}) do
      it("(SIG" .. sig .. ") ends its pool workers and daemon children; a non-daemon one lives on", function()
        local pids, cleanup = kill_parent(sig)
        local ok, err = pcall(function()
          local left = {}
          local gone = eventually(function()
            left = {}
            -- ThreadSanitizer runs a signal handler only when the thread
            -- next calls a function it intercepts: a child forked from a
            -- thread, asleep on a futex, never runs the one that ends it.
            for _, kind in ipairs(TSAN and {"worker", "daemon"} or {"worker", "daemon", "tdaemon"}) do
              for _, pid in ipairs(pids[kind]) do
                if not pid_gone(pid) then left[#left + 1] = kind .. " " .. pid end
              end
            end
            return #left == 0
          end, 5)
          assert.is_true(gone, "still running 5 s after the parent's death: " .. table.concat(left, ", "))
          -- Python's behaviour: a non-daemon child is not stopped.
          assert.is_false(pid_gone(pids.nondaemon[1]), "the non-daemon child ended too")
        end)
        cleanup()
        assert(ok, err)
      end)
    end
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
    local stdout, code = support.fixture_stdout("exit_thread_error.lua")
    assert.are.equal(0, code)
    assert.are.equal("main done\n", stdout)
  end)
end)
