-- Out-of-memory: every allocation an operation makes fails in turn (the
-- interposed allocator tools/failmalloc.c, preloaded into a subprocess that
-- runs fixtures/oom_sweep.lua).  Each operation must succeed or raise a Lua
-- error, and leave no block of the C heap or the shared arena behind.
-- `make oom` runs the sweep over every operation; this spec a quick subset.
local support = require "support"

local so = "./" .. (os.getenv("CONCUR_BUILD") or "build") .. "/failmalloc.so"   -- this runtime's
local f = io.open(so)
local have_so = f ~= nil
if f then f:close() end
-- The sanitizers bring their own allocator: the interposer cannot go in.
local plain = os.getenv("CONCUR_SANITIZER") == nil
local it_plain = (plain and have_so) and it or pending

describe("out of memory", function()
  local function sweep(ops)
    local q = support.shell_quote
    local cmd = table.concat({
      "LUA_PATH=" .. q(package.path), "LUA_CPATH=" .. q(package.cpath),
      "LD_PRELOAD=" .. q(so), "OOM_ONCE=1", "timeout -k 5 300", q(support.LUA),
      q(support.fixtures .. "oom_sweep.lua"), q(ops),
    }, " ")
    local p = assert(io.popen(cmd .. " 2>/dev/null"))
    local out = p:read("*a")
    p:close()
    local fails, failed_ops = {}, {}
    for line in out:gmatch("FAIL [^\n]*") do
      fails[#fails + 1] = line
      local op = line:match("^FAIL (%S+) n=")
      if op then failed_ops[op] = true end
    end
    return out, out:match("oom: [^\n]*"), fails, failed_ops
  end

  -- Known and open (issue 16): on Lua 5.3 and 5.2 only, the Queue operation
  -- under a persistent failure from its 10th-12th allocation on leaves arena
  -- blocks behind (5.3: one queue's 33 KB per run; 5.2: 4 KB); the C heap is
  -- clean, and 5.4 and LuaJIT pass.  Pending there.
  local ops = {"transfer", "Queue", "Pipe", "Thread-queue", "Process"}
  local known_53 = _VERSION == "Lua 5.3" or _VERSION == "Lua 5.2"
  local known_51 = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
  if known_53 then
    table.remove(ops, 2)
    pending(_VERSION .. ": Queue under persistent allocation failure leaks arena blocks (open)")
  end
  -- Stock Lua 5.1's own library does not come through the sweep's injected
  -- failures: out of memory in luaopen_io (createstdfile) leaves a stdout
  -- handle that closes fd 1 when its state is freed, and a table
  -- constructor cut short by out of memory has crashed a later lua_objlen
  -- on that table.  Not concur's to mend (neither shows on 5.2+ or LuaJIT):
  -- `make oom LUA=lua5.1 OOM_OPS=Queue` runs one operation by hand.
  if known_51 then
    pending("stock Lua 5.1: liblua itself does not survive injected allocation failures")
    return
  end

  it_plain("every allocation of queue, pipe, transfer, thread and process operations may fail: a Lua error, no leak", function()
    local out, verdict, fails, failed_ops = sweep(table.concat(ops, "|"))
    assert.is_not_nil(verdict, out:sub(-2000))
    -- The sweep reached allocations to fail (it did test something).
    local points = tonumber(verdict:match("(%d+) allocation points"))
    assert.is_true(points > 50, verdict)
    -- A thread's worker rebuilds its state after join returns, so a count
    -- taken while the machine is loaded can catch it halfway: an operation
    -- that failed is swept once more on its own.  A real leak fails again.
    for op in pairs(failed_ops) do
      local _, again, fails2 = sweep(op)
      assert.is_not_nil(again)
      assert.are.equal("oom: PASS", again:match("^oom: %u+"),
                       table.concat(fails, "\n") .. "\nagain:\n" .. table.concat(fails2, "\n"))
    end
    if not next(failed_ops) then
      assert.are.equal("oom: PASS", verdict:match("^oom: %u+"), table.concat(fails, "\n"))
    end
  end)
end)
