-- The Lua layer compiled into the C library (src/concur_lua.h) is the one in
-- lua/concur.lua: LuaRocks builds from the committed header.
describe("compiled-in Lua layer", function()
  it("matches lua/concur.lua", function()
    local p = assert(io.popen("lua5.4 tools/embed.lua lua/concur.lua"))
    local fresh = p:read("*a")
    p:close()
    local f = assert(io.open("src/concur_lua.h", "rb"))
    local committed = f:read("*a")
    f:close()
    assert.is_true(fresh == committed, "src/concur_lua.h is stale: run make")
  end)

  it("is what thread states load as concur", function()
    local concur = require "concur"
    local t = concur.Thread{target = function()
      local c = require "concur"
      return c.version, type(c.Thread), rawequal(c, concur), package.loaded.concur == c
    end}
    t:start()
    local version, thread_type, same, loaded = t:result()
    assert.are.equal(concur.version, version)
    assert.are.equal("table", thread_type)
    assert.is_true(same)      -- the upvalue `concur` resolved to the thread's own module
    assert.is_true(loaded)
  end)
end)
