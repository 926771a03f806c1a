-- `luarocks make` installs a module that loads with only the tree's paths.
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local has_luarocks = sh("command -v luarocks >/dev/null")
local skip = os.getenv("CONCUR_SANITIZER") ~= nil or not has_luarocks

describe("luarocks make", function()
  if skip then
    pending("luarocks missing, or a sanitizer run (the installed module is not instrumented)")
    return
  end

  it("installs concur into a tree where lua5.4 finds it with that tree's paths only", function()
    local tmp = assert(io.popen("mktemp -d")):read("l")
    local ok, out = sh(("cp -r src lua concur-scm-1.rockspec %s/ && cd %s && "
      .. "luarocks --lua-version 5.4 make --tree %s/T"):format(tmp, tmp, tmp))
    assert.is_true(ok, out)
    local script = [[local c = require "concur"
      local t = c.Thread{target = function(x) return x * 2, c.version end, args = {21}}
      t:start()
      print(t:result())
      print(package.searchpath("concur.core", package.cpath))]]
    local f = assert(io.open(tmp .. "/check.lua", "w"))
    f:write(script)
    f:close()
    ok, out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. "sh -c 'eval \"$(luarocks --lua-version 5.4 path --tree %s/T)\" && lua5.4 check.lua'")
      :format(tmp, tmp))
    sh("rm -rf " .. tmp)
    assert.is_true(ok, out)
    assert.matches("^42\t%d+%.%d+%.%d+\n", out)
    assert.matches("/T/lib/lua/5%.4/concur/core%.so", out)
  end)
end)
