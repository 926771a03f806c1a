-- spec/embed_spec.lua: the embedding interface (src/concur.h, API.md
-- "Embedding") through the example host, examples/embed/host: its setup hook
-- gives every thread the host's library, and its reporter prints thread
-- errors to stdout with a "[host] " prefix.
local support = require "support"
local spec_dir = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local root = spec_dir .. "../"
-- The host of this build (the Makefile's HOST: another runtime's is beside
-- its module).
local host = root .. (os.getenv("CONCUR_HOST") or "examples/embed/host")
local fixtures = spec_dir .. "fixtures/"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function host_built()
  local f = io.open(host, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Runs the host on a script with an empty LUA_PATH/LUA_CPATH: the host must
-- need neither (concur is linked in, its Lua layer compiled in).
-- Returns stdout, stderr (in a temporary file) and the exit status.
local function run_host(script)
  local errfile = os.tmpname()
  local cmd = "LUA_PATH=';;' LUA_CPATH=';;' " .. shell_quote(host) .. " " ..
    shell_quote(script) .. " 2>" .. shell_quote(errfile)
  local out, code = support.shell(cmd)
  local f = io.open(errfile, "rb")
  local err = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(errfile)
  return out, err, code
end

describe("embedding host", function()
  if not host_built() then
    it("examples/embed/host", function()
      pending("examples/embed/host is not built: run `make` first")
    end)
    return
  end

  local out, err, code
  setup(function()
    out, err, code = run_host(fixtures .. "embed_script.lua")
  end)

  it("runs the script to the end and exits 0", function()
    assert.are.equal(0, code, out .. err)
    assert.matches("MAIN\thello from the host, main\tMainThread", out)
  end)

  it("gives every thread the host's library through the setup hook", function()
    for i, who in ipairs({"ann", "bob", "cy"}) do
      local line = ("GREET\t%d\thello from the host, %s\tembed%%-host\ttable\tgreeter%%-%s\ttrue")
        :format(i, who, who)
      assert.matches(line, out)
    end
  end)

  it("gives a thread started from a thread the host's library and concur", function()
    assert.matches("NESTED\thello from the host, inner\n", out)
  end)

  it("sends a thread's error report to the host's reporter", function()
    assert.is_truthy(out:find("[host] Exception in thread embed-failure:", 1, true), out)
    assert.is_truthy(out:find("host thread failed on purpose", 1, true), out)
    assert.is_truthy(out:find("stack traceback", 1, true), out)
    -- and not to stderr
    assert.is_nil(err:find("Exception in thread", 1, true), err)
  end)

  it("still re-raises the error in result()", function()
    assert.matches("FAILED\tfalse\t[^\n]*host thread failed on purpose", out)
  end)
end)
