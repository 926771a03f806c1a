-- Shared by the specs that run Lua scripts in a subprocess.
local concur = require "concur"

local support = {}

-- The spec directory and its fixtures, whatever the working directory.
support.spec_dir = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
support.fixtures = support.spec_dir .. "fixtures/"

-- The interpreter the spec runner uses (an instrumented one under `make check`).
support.LUA = os.getenv("CONCUR_LUA") or "lua5.4"

function support.shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs fixtures/NAME with that interpreter and this process's module paths.
-- Returns stdout and stderr together, the exit status, the seconds it took,
-- and how it ended ("exit" or "signal").
function support.run_fixture(name, ...)
  local q = support.shell_quote
  -- A hang (the bugs these specs catch) becomes a failure after 60 s.
  local cmd = {"LUA_PATH=" .. q(package.path), "LUA_CPATH=" .. q(package.cpath),
               "timeout -k 5 60", q(support.LUA), q(support.fixtures .. name)}
  for _, a in ipairs({...}) do cmd[#cmd + 1] = q(a) end
  local t0 = concur.time()
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>&1"))
  local out = p:read("a")
  local _, how, code = p:close()
  return out, code, concur.time() - t0, how
end

return support
