-- `luarocks make` installs a module that loads with only the tree's paths.
local support = require "support"

local function sh(cmd)
  local out, code = support.shell(cmd .. " 2>&1")
  return code == 0, out, code
end

local has_luarocks = sh("command -v luarocks >/dev/null")
local skip = os.getenv("CONCUR_SANITIZER") ~= nil or not has_luarocks

describe("luarocks make", function()
  if skip then
    pending("luarocks missing, or a sanitizer run (the installed module is not instrumented)")
    return
  end

  -- This runtime's version as LuaRocks names it (LuaJIT counts as 5.1) and
  -- its interpreter.
  local version = _VERSION:match("%d+%.%d+")
  local lua = support.LUA

  it("installs concur into a tree where " .. lua .. " finds it with that tree's paths only", function()
    local tmp = assert(io.popen("mktemp -d")):read("*l")
    local ok, out = sh(("cp -r src lua vendor concur-scm-1.rockspec %s/ && cd %s && "
      .. "luarocks --lua-version %s make --tree %s/T"):format(tmp, tmp, version, tmp))
    assert.is_true(ok, out)
    local script = [[
      local searchpath = package.searchpath or function(name, path)   -- 5.2+
        for pattern in path:gmatch("[^;]+") do
          local file = pattern:gsub("%?", (name:gsub("%.", "/")))
          local f = io.open(file)
          if f then f:close(); return file end
        end
      end
      local c = require "concur"
      local t = c.Thread{target = function(x) return x * 2, c.version end, args = {21}}
      t:start()
      print(t:result())
      print(searchpath("concur.core", package.cpath))]]
    local f = assert(io.open(tmp .. "/check.lua", "w"))
    f:write(script)
    f:close()
    local v_ = version:gsub("%.", "_")
    ok, out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_%s -u LUA_CPATH_%s "
      .. "sh -c 'eval \"$(luarocks --lua-version %s path --tree %s/T)\" && %s check.lua'")
      :format(tmp, v_, v_, version, tmp, lua))
    sh("rm -rf " .. tmp)
    assert.is_true(ok, out)
    assert.matches("^42\t%d+%.%d+%.%d+\n", out)
    assert.matches("/T/lib/lua/" .. version:gsub("%.", "%%.") .. "/concur/core%.so", out)
  end)

  it("installs concur-redis beside it: concur.redis loads and concur-worker is a script in bin", function()
    local tmp = assert(io.popen("mktemp -d")):read("*l")
    local ok, out = sh(("cp -r src lua bin vendor concur-scm-1.rockspec concur-redis-scm-1.rockspec %s/ && cd %s && "
      .. "luarocks --lua-version %s make --tree %s/T concur-scm-1.rockspec && "
      .. "luarocks --lua-version %s make --tree %s/T concur-redis-scm-1.rockspec")
      :format(tmp, tmp, version, tmp, version, tmp))
    assert.is_true(ok, out)
    local f = assert(io.open(tmp .. "/check.lua", "w"))
    f:write([[
      local redis = require "concur.redis"
      print(type(redis.Queue), type(redis.Pool), require("concur.redis.core").version)]])
    f:close()
    local v_ = version:gsub("%.", "_")
    ok, out = sh(("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_%s -u LUA_CPATH_%s "
      .. "sh -c 'eval \"$(luarocks --lua-version %s path --tree %s/T)\" && %s check.lua && "
      .. "test -x T/bin/concur-worker && T/bin/concur-worker --help; echo rc=$?'")
      :format(tmp, v_, v_, version, tmp, lua))
    sh("rm -rf " .. tmp)
    assert.is_true(ok, out)
    assert.matches("^table\ttable\t%d+%.%d+%.%d+\n", out)
    assert.matches("concur%-worker", out)
  end)
end)
