local concur = require "concur"

describe("concur", function()
  it("loads and runs a function on another thread", function()
    local t = concur.Thread{target = function(a, b) return a + b end, args = {2, 3}}
    t:start()
    assert.is_true(t:join())
    assert.are.equal(5, t:result())
  end)
end)
