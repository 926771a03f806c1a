-- Out-of-memory: every allocation an operation makes fails in turn (the
-- interposed allocator tools/failmalloc.c, preloaded into a subprocess that
-- runs fixtures/oom_sweep.lua).  Each operation must succeed or raise a Lua
-- error, and leave no block of the C heap or the shared arena behind.
-- `make oom` runs the sweep over every operation; this spec a quick subset.
local support = require "support"

local so = "./build/failmalloc.so"
local f = io.open(so)
local have_so = f ~= nil
if f then f:close() end
-- The sanitizers bring their own allocator: the interposer cannot go in.
local plain = os.getenv("CONCUR_SANITIZER") == nil
local it_plain = (plain and have_so) and it or pending

describe("out of memory", function()
  it_plain("every allocation of queue, pipe, transfer, thread and process operations may fail: a Lua error, no leak", function()
    local q = support.shell_quote
    local cmd = table.concat({
      "LUA_PATH=" .. q(package.path), "LUA_CPATH=" .. q(package.cpath),
      "LD_PRELOAD=" .. q(so), "OOM_ONCE=1", "timeout -k 5 300", q(support.LUA),
      q(support.fixtures .. "oom_sweep.lua"), q("transfer|Queue|Pipe|Thread-queue|Process"),
    }, " ")
    local p = assert(io.popen(cmd .. " 2>/dev/null"))
    local out = p:read("a")
    p:close()
    local verdict = out:match("oom: [^\n]*")
    assert.is_not_nil(verdict, out:sub(-2000))
    local fails = {}
    for line in out:gmatch("FAIL [^\n]*") do fails[#fails + 1] = line end
    assert.are.equal("oom: PASS", verdict:match("^oom: %u+"), table.concat(fails, "\n"))
    -- The sweep reached allocations to fail (it did test something).
    local points = tonumber(verdict:match("(%d+) allocation points"))
    assert.is_true(points > 100, verdict)
  end)
end)
