-- spec/shared_spec.lua: shared state (API.md, "Shared state"): concur.Value
-- and concur.Array (src/shared.c) and concur.Dict (src/dict.c), alone, then
-- between threads and processes, then the arena they give back.
--
-- A child process reports by its exit code (0: all it checked held; 2 and
-- up: which check failed), never by asserting.  Order comes from Events and
-- joins; every wait has a timeout, and after_each ends what a failed test
-- left running.
local concur = require "concur"
local core = require "concur.core"
local support = require "support"

local err_of, assert_has, raised = support.err_of, support.assert_has, support.raised
local mtype = math.type
local INT = support.has_integers
-- Where pairs() honours a userdata's __pairs (5.2 on; not 5.1 nor LuaJIT).
local HAS_PAIRS = _VERSION ~= "Lua 5.1"

local started = support.tracker()
after_each(started.cleanup)
local go, finish = started.process, support.finish

-- Whether lock (a Lock or RLock) is held, seen from another thread: a
-- thread's acquire(false) fails.
local function held_elsewhere(lock)
  local t = concur.Thread{target = function(l)
    if l:acquire(false) then l:release(); return false end
    return true
  end, args = {lock}}
  t:start()
  return (t:result())
end

-- ---------------------------------------------------------------------------
describe("concur.Value", function()
  it("keeps the kind it was made with: integer, float, boolean", function()
    local i, f, b = concur.Value(5), concur.Value(0.5), concur.Value(true)
    assert.are.equal(5, i.value)
    assert.are.equal("integer", mtype(i.value))
    assert.are.equal(0.5, f.value)
    assert.are.equal("float", mtype(f.value))
    assert.are.equal(true, b.value)
    assert.are.equal(false, concur.Value(false).value)
    if INT then
      assert.are.equal("float", mtype(concur.Value(2.0).value))
    end
  end)

  it("takes Python's typecodes and kind names, with 0 / 0.0 / false when init is missing", function()
    for _, tc in ipairs({"i", "l", "q", "h", "I", "L", "Q", "H", "B", "int"}) do
      local v = concur.Value(tc)
      assert.are.equal(0, v.value, tc)
      assert.are.equal("integer", mtype(v.value), tc)
      assert.are.equal(7, concur.Value(tc, 7).value, tc)
    end
    for _, tc in ipairs({"d", "f", "float"}) do
      assert.are.equal(0, concur.Value(tc).value, tc)
      assert.are.equal(support.INTEGRAL_FLOAT, mtype(concur.Value(tc).value), tc)
      assert.are.equal(support.INTEGRAL_FLOAT, mtype(concur.Value(tc, 3).value), tc)
      assert.are.equal(0.25, concur.Value(tc, 0.25).value, tc)
    end
    for _, tc in ipairs({"b", "?", "bool", "boolean"}) do
      assert.are.equal(false, concur.Value(tc).value, tc)
      assert.are.equal(true, concur.Value(tc, true).value, tc)
    end
    -- "b" with a number is Python's signed char: an integer Value.
    local sc = concur.Value("b", 5)
    assert.are.equal(5, sc.value)
    assert.are.equal(6, sc:add(1))
    -- An integral float is accepted by an integer Value (luaL_checkinteger's rule).
    assert.are.equal("integer", mtype(concur.Value("i", 2.0).value))
  end)

  it("refuses an unknown typecode, a wrong first argument and a second one after a plain init", function()
    assert_has(err_of(concur.Value, "x"), "bad argument #1 to 'Value' (unknown typecode 'x')")
    assert_has(err_of(concur.Value, "c"), "bad argument #1 to 'Value'")
    assert_has(err_of(concur.Value, "byte"), "bad argument #1 to 'Value'")
    assert_has(err_of(concur.Value, {}), "bad argument #1 to 'Value' (number, boolean or typecode expected, got table)")
    assert_has(err_of(concur.Value), "bad argument #1 to 'Value'")
    assert_has(err_of(concur.Value, 5, 6), "bad argument #2 to 'Value'")
    assert_has(err_of(concur.Value, "i", 1.5), "bad argument #2 to 'Value' (number has no integer representation)")
    assert_has(err_of(concur.Value, "i", "3"), "bad argument #2 to 'Value' (integer expected, got string)")
    assert_has(err_of(concur.Value, "d", true), "bad argument #2 to 'Value' (number expected, got boolean)")
    assert_has(err_of(concur.Value, "?", 1), "bad argument #2 to 'Value' (boolean expected, got number)")
    assert_has(err_of(concur.Value, "i", 0, "x"), "bad argument #3 to 'Value' (lock:")
    assert_has(err_of(concur.Value, "i", 0, concur.Event()), "bad argument #3 to 'Value'")
    assert_has(err_of(concur.Value, "i", 0, nil, 1), "bad argument #4 to 'Value' (no value expected)")
  end)

  it("loads and stores .value, checked against its kind", function()
    local v = concur.Value(1)
    v.value = 7
    assert.are.equal(7, v.value)
    v.value = 8.0
    assert.are.equal(8, v.value)
    assert.are.equal("integer", mtype(v.value))
    assert_has(err_of(function() v.value = 1.5 end), "bad argument #3 to 'value' (number has no integer representation)")
    assert_has(err_of(function() v.value = "3" end), "bad argument #3 to 'value' (integer expected, got string)")
    assert_has(err_of(function() v.value = nil end), "bad argument #3 to 'value'")
    assert.are.equal(8, v.value)
    local f = concur.Value(0.5)
    f.value = 2
    assert.are.equal(2, f.value)
    assert.are.equal(support.INTEGRAL_FLOAT, mtype(f.value))
    assert_has(err_of(function() f.value = true end), "bad argument #3 to 'value' (number expected, got boolean)")
    local b = concur.Value(false)
    b.value = true
    assert.is_true(b.value)
    assert_has(err_of(function() b.value = 1 end), "bad argument #3 to 'value' (boolean expected, got number)")
    assert.is_true(b.value)
  end)

  it("reads other keys as nil and refuses to set them", function()
    local v = concur.Value(1)
    assert.is_nil(v.foo)
    assert.is_nil(v[1])
    assert_has(err_of(function() v.foo = 1 end), "concur.Value has no attribute 'foo' to set")
  end)

  it("adds atomically and returns the new value", function()
    local v = concur.Value(10)
    assert.are.equal(13, v:add(3))
    assert.are.equal(11, v:add(-2))
    assert.are.equal(11, v.value)
    assert.are.equal("integer", mtype(v:add(0)))
    local f = concur.Value(0.5)
    assert.are.equal(0.75, f:add(0.25))
    assert.are.equal(1.75, f:add(1))
    assert.are.equal(1.75, f.value)
    assert_has(err_of(v.add, v, 1.5), "bad argument #1 to 'add' (number has no integer representation)")
    assert_has(err_of(function() v:add(1.5) end), "bad argument #1 to 'add'")
    assert_has(err_of(function() v:add("1") end), "bad argument #1 to 'add' (integer expected, got string)")
    assert_has(err_of(function() v:add() end), "bad argument #1 to 'add'")
    assert_has(err_of(function() v:add(1, 2) end), "bad argument #2 to 'add' (no value expected)")
    assert_has(err_of(function() concur.Value(true):add(1) end), "cannot add to a boolean")
    assert.are.equal(11, v.value)
  end)

  it("wraps an integer add at math.maxinteger, as Lua's integers", function()
    if not INT then return pending("no integer subtype on " .. _VERSION) end
    local v = concur.Value(math.maxinteger)
    assert.are.equal(math.mininteger, v:add(1))
    assert.are.equal(math.maxinteger, v:add(-1))
    v.value = math.mininteger
    assert.are.equal(math.maxinteger, v:add(-1))
  end)

  it("compares and swaps: true when it held the expected value", function()
    local v = concur.Value(1)
    assert.is_true(v:cas(1, 2))
    assert.are.equal(2, v.value)
    assert.is_false(v:cas(1, 3))
    assert.are.equal(2, v.value)
    local f = concur.Value(0.5)
    assert.is_true(f:cas(0.5, 1.5))
    assert.is_false(f:cas(0.5, 9))
    assert.are.equal(1.5, f.value)
    -- Floats compare by their bits, 0.0 and -0.0 being equal: a NaN read
    -- from the Value matches it, so a read-then-cas loop always ends.
    local z = concur.Value("d", 0)
    assert.is_true(z:cas(-0.0, 1))
    assert.are.equal(1, z.value)
    local nan = concur.Value("d", 0 / 0)
    local seen = nan.value
    assert.is_true(nan:cas(seen, 1))
    assert.are.equal(1, nan.value)
    assert.is_false(nan:cas(seen, 2))
    local b = concur.Value(false)
    assert.is_true(b:cas(false, true))
    assert.is_false(b:cas(false, true))
    assert.is_true(b.value)
    assert_has(err_of(function() v:cas(1.5, 2) end), "bad argument #1 to 'cas'")
    assert_has(err_of(function() v:cas(2, "x") end), "bad argument #2 to 'cas'")
    assert_has(err_of(function() b:cas(true, 1) end), "bad argument #2 to 'cas'")
    assert_has(err_of(function() v:cas(2, 3, 4) end), "bad argument #3 to 'cas' (no value expected)")
    assert.are.equal(2, v.value)
  end)

  it("has an RLock of its own, the same handle each time", function()
    local v = concur.Value(0)
    local l = v:get_lock()
    assert.is_true(rawequal(l, v:get_lock()))
    assert_has(tostring(l), "RLock")
    assert.is_true(l:acquire())
    assert.is_true(l:acquire())   -- re-entrant
    assert.is_true(held_elsewhere(l))
    l:release()
    l:release()
    assert.is_false(held_elsewhere(l))
    assert.are_not.equal(l, concur.Value(0):get_lock())
  end)

  it("uses the Lock or RLock it is given, and none with lock = false", function()
    local lock = concur.Lock()
    local v = concur.Value("i", 0, lock)
    assert.are.equal(lock, v:get_lock())
    local rl = concur.RLock()
    assert.are.equal(rl, concur.Value("d", 1, rl):get_lock())
    assert_has(tostring(concur.Value("i", 0, true):get_lock()), "RLock")
    local none = concur.Value("i", 0, false)
    assert_has(err_of(none.get_lock, none), "this Value has no lock (made with lock = false)")
    assert_has(err_of(none.with, none, function() end), "this Value has no lock")
    assert.are.equal(1, none:add(1))
  end)

  it("with(fn, ...) returns fn's results, holding the lock", function()
    local v = concur.Value(1)
    local r = support.pack(v:with(function(a, b)
      assert.is_true(held_elsewhere(v:get_lock()))
      return a + b, "x", nil
    end, 2, 3))
    assert.are.same({5, "x", n = 3}, r)
    assert.is_false(held_elsewhere(v:get_lock()))
    assert_has(err_of(function() v:with(5) end), "bad argument #1 to 'with' (function expected")
  end)

  it("with(fn) releases the lock when fn raises, and passes on the same error value", function()
    local v = concur.Value(1)
    local boom = {}
    assert.are.equal(boom, raised(v.with, v, function() error(boom) end))
    assert.is_false(held_elsewhere(v:get_lock()))
  end)

  it("shows its value in tostring", function()
    assert.are.equal("concur.Value(5)", tostring(concur.Value(5)))
    assert.are.equal("concur.Value(0.5)", tostring(concur.Value(0.5)))
    assert.are.equal("concur.Value(true)", tostring(concur.Value(true)))
    assert.are.equal("concur.Value(false)", tostring(concur.Value("?")))
  end)
end)

-- ---------------------------------------------------------------------------
describe("concur.Array", function()
  it("makes each kind from a size, zeroed", function()
    local i, f, b = concur.Array("int", 3), concur.Array("float", 2), concur.Array("byte", 4)
    assert.are.same({0, 0, 0}, i:totable())
    assert.are.equal("integer", mtype(i[1]))
    assert.are.same({0, 0}, f:totable())
    assert.are.equal(support.INTEGRAL_FLOAT, mtype(f[2]))
    assert.are.same({0, 0, 0, 0}, b:totable())
    assert.are.equal(0, #concur.Array("int", 0))
    assert.are.same({}, concur.Array("float", 0):totable())
  end)

  it("takes Python's typecodes", function()
    for _, tc in ipairs({"b", "h", "i", "l", "q", "H", "I", "L", "Q"}) do
      assert.are.equal("concur.Array(int, 2)", tostring(concur.Array(tc, 2)), tc)
    end
    for _, tc in ipairs({"B", "c"}) do
      assert.are.equal("concur.Array(byte, 2)", tostring(concur.Array(tc, 2)), tc)
    end
    for _, tc in ipairs({"f", "d"}) do
      assert.are.equal("concur.Array(float, 2)", tostring(concur.Array(tc, 2)), tc)
    end
    -- "b" is a signed char's integer: no byte bounds.
    local sb = concur.Array("b", {300, -5})
    assert.are.same({300, -5}, sb:totable())
  end)

  it("makes each kind from a list, and a byte Array from a string", function()
    local i = concur.Array("int", {1, 2, 3})
    assert.are.same({1, 2, 3}, i:totable())
    local f = concur.Array("float", {1, 2.5})
    assert.are.same({1, 2.5}, f:totable())
    assert.are.equal(support.INTEGRAL_FLOAT, mtype(f[1]))
    local b = concur.Array("byte", "ab\0\255")
    assert.are.same({97, 98, 0, 255}, b:totable())
    assert.are.same({0, 255}, concur.Array("B", {0, 255}):totable())
    assert.are.equal(0, #concur.Array("byte", ""))
  end)

  it("refuses a bad kind, size, list element or lock, naming the argument", function()
    assert_has(err_of(concur.Array, "nope", 1), "bad argument #1 to 'Array' (unknown kind 'nope'")
    assert_has(err_of(concur.Array, "bool", 1), "bad argument #1 to 'Array'")
    assert_has(err_of(concur.Array, "?", 1), "bad argument #1 to 'Array'")
    assert_has(err_of(concur.Array, 5, 1), "bad argument #1 to 'Array' (kind expected")
    assert_has(err_of(concur.Array, "int", -1), "bad argument #2 to 'Array' (size out of range)")
    assert_has(err_of(concur.Array, "int", 1.5), "bad argument #2 to 'Array' (size out of range)")
    assert_has(err_of(concur.Array, "int"), "bad argument #2 to 'Array' (size or list expected, got no value)")
    assert_has(err_of(concur.Array, "int", "abc"), "bad argument #2 to 'Array' (size or list expected, got string)")
    assert_has(err_of(concur.Array, "int", {1, 2, "x"}),
      "bad argument #2 to 'Array' (element 3: integer expected, got string)")
    assert_has(err_of(concur.Array, "int", {1, 1.5}), "bad argument #2 to 'Array' (element 2: number has no integer representation)")
    assert_has(err_of(concur.Array, "byte", {1, 256}), "bad argument #2 to 'Array' (element 2: byte out of range (0..255))")
    assert_has(err_of(concur.Array, "byte", {-1}), "bad argument #2 to 'Array' (element 1: byte out of range")
    assert_has(err_of(concur.Array, "float", {{}}), "bad argument #2 to 'Array' (element 1: number expected, got table)")
    assert_has(err_of(concur.Array, "int", 1, "x"), "bad argument #3 to 'Array' (lock:")
    assert_has(err_of(concur.Array, "int", 1, nil, 1), "bad argument #4 to 'Array' (no value expected)")
  end)

  it("reads and writes a[i], 1-based, and #a is its length", function()
    local a = concur.Array("int", 3)
    a[1], a[3] = 10, -7
    assert.are.same({10, 0, -7}, a:totable())
    assert.are.equal(10, a[1])
    assert.are.equal(3, #a)
    a[2] = 4.0
    assert.are.equal("integer", mtype(a[2]))
    local f = concur.Array("float", 2)
    f[2] = 0.125
    assert.are.equal(0.125, f[2])
    local b = concur.Array("byte", 2)
    b[1] = 255
    assert.are.equal(255, b[1])
  end)

  it("checks bounds and values: bad arguments, the Array unchanged", function()
    local a = concur.Array("int", {1, 2, 3})
    assert_has(err_of(function() return a[0] end), "bad argument #2 to 'index' (index 0 out of range (1..3))")
    assert_has(err_of(function() return a[4] end), "(index 4 out of range (1..3))")
    assert_has(err_of(function() return a[-1] end), "out of range")
    assert_has(err_of(function() return a[1.5] end), "bad argument #2 to 'index' (index has no integer representation)")
    assert_has(err_of(function() a[0] = 1 end), "bad argument #2 to 'newindex' (index 0 out of range (1..3))")
    assert_has(err_of(function() a[#a + 1] = 1 end), "out of range (1..3)")
    assert_has(err_of(function() a[1.5] = 1 end), "bad argument #2 to 'newindex' (index has no integer representation)")
    assert_has(err_of(function() a.x = 1 end), "bad argument #2 to 'newindex' (index: integer expected, got string)")
    assert_has(err_of(function() a[1] = {} end), "bad argument #3 to 'newindex' (integer expected, got table)")
    assert_has(err_of(function() a[1] = 1.5 end), "bad argument #3 to 'newindex' (number has no integer representation)")
    assert_has(err_of(function() a[1] = "2" end), "bad argument #3 to 'newindex' (integer expected, got string)")
    local b = concur.Array("byte", 1)
    assert_has(err_of(function() b[1] = 256 end), "bad argument #3 to 'newindex' (byte out of range (0..255))")
    assert_has(err_of(function() b[1] = -1 end), "byte out of range")
    assert_has(err_of(function() concur.Array("float", 1)[1] = true end), "bad argument #3 to 'newindex' (number expected, got boolean)")
    assert.are.same({1, 2, 3}, a:totable())
    assert.are.equal(0, b[1])
    -- A string key is a method or nil, never an element.
    assert.is_nil(a.x)
    assert.is_nil(a["1"])
    assert.are.equal("function", type(a.add))
  end)

  it("adds atomically to an element and returns the new value", function()
    local a = concur.Array("int", {5, 6})
    assert.are.equal(8, a:add(2, 2))
    assert.are.equal(4, a:add(1, -1))
    assert.are.same({4, 8}, a:totable())
    local f = concur.Array("float", 1)
    assert.are.equal(0.5, f:add(1, 0.5))
    assert.are.equal(2, f:add(1, 1.5))
    local b = concur.Array("byte", {250, 3})
    assert.are.equal(4, b:add(1, 10))      -- wraps mod 256
    assert.are.equal(255, b:add(2, -4))
    assert.are.equal(1, b:add(2, 258))
    assert.are.same({4, 1}, b:totable())
    assert_has(err_of(function() a:add(0, 1) end), "bad argument #1 to 'add' (index 0 out of range (1..2))")
    assert_has(err_of(function() a:add(3, 1) end), "bad argument #1 to 'add' (index 3 out of range")
    assert_has(err_of(function() a:add("1", 1) end), "bad argument #1 to 'add' (index: integer expected, got string)")
    assert_has(err_of(function() a:add(1, 1.5) end), "bad argument #2 to 'add' (number has no integer representation)")
    assert_has(err_of(function() b:add(1, 0.5) end), "bad argument #2 to 'add'")
    assert_has(err_of(function() f:add(1, "x") end), "bad argument #2 to 'add' (number expected, got string)")
    assert_has(err_of(function() a:add(1, 1, 1) end), "bad argument #3 to 'add' (no value expected)")
    assert.are.same({4, 8}, a:totable())
  end)

  it("wraps an int element's add at math.maxinteger", function()
    if not INT then return pending("no integer subtype on " .. _VERSION) end
    local a = concur.Array("int", {math.maxinteger, math.mininteger})
    assert.are.equal(math.mininteger, a:add(1, 1))
    assert.are.equal(math.maxinteger, a:add(2, -1))
  end)

  it("has an RLock of its own, a given one, or none; with(fn, ...) holds it", function()
    local a = concur.Array("int", 2)
    local l = a:get_lock()
    assert.is_true(rawequal(l, a:get_lock()))
    assert_has(tostring(l), "RLock")
    assert.are.same({"ok", 3}, {a:with(function(x)
      assert.is_true(held_elsewhere(l))
      return "ok", x
    end, 3)})
    assert.is_false(held_elsewhere(l))
    local boom = {}
    assert.are.equal(boom, raised(a.with, a, function() error(boom) end))
    assert.is_false(held_elsewhere(l))
    local lock = concur.Lock()
    assert.are.equal(lock, concur.Array("float", 1, lock):get_lock())
    local none = concur.Array("byte", 1, false)
    assert_has(err_of(none.get_lock, none), "this Array has no lock (made with lock = false)")
  end)

  it("shows its kind and length in tostring", function()
    assert.are.equal("concur.Array(int, 10)", tostring(concur.Array("int", 10)))
    assert.are.equal("concur.Array(float, 0)", tostring(concur.Array("d", {})))
    assert.are.equal("concur.Array(byte, 3)", tostring(concur.Array("byte", "abc")))
  end)
end)

-- ---------------------------------------------------------------------------
describe("concur.Dict", function()
  it("keeps keys of every kind; a float with an integer value is that integer", function()
    local d = concur.Dict()
    d.s, d[1], d[2.5], d[true], d[false], d[-3] = "s", "one", "two and a half", "T", "F", "m3"
    d[2] = "two"
    assert.are.equal("two", d[2.0])
    d[2.0] = "TWO"
    assert.are.equal("TWO", d[2])
    d[0] = "zero"
    assert.are.equal("zero", d[-0.0])
    assert.are.equal(8, #d)
    assert.are.same({s = "s", [1] = "one", [2.5] = "two and a half", [true] = "T", [false] = "F",
      [-3] = "m3", [2] = "TWO", [0] = "zero"}, d:totable())
    for _, k in ipairs(d:keys()) do
      if type(k) == "number" and k ~= 2.5 then assert.are.equal("integer", mtype(k)) end
    end
    assert.is_nil(d[3])
    assert.is_nil(d.nothing)
    -- Created from a table.
    local e = concur.Dict{a = 1, [5] = {x = true}, [1.0] = "i"}
    assert.are.same({a = 1, [5] = {x = true}, [1] = "i"}, e:totable())
    assert.are.equal(0, #concur.Dict())
    assert.are.equal(0, #concur.Dict(nil))
  end)

  it("copies tables in and out", function()
    local d = concur.Dict()
    local t = {a = {1, 2}, s = "x"}
    d.t = t
    t.a[1] = 99
    assert.are.same({a = {1, 2}, s = "x"}, d.t)
    local r = d.t
    r.a[1] = 5
    assert.are.same({1, 2}, d.t.a)
    assert.are_not.equal(d.t, d.t)
  end)

  it("keeps strings, numbers, booleans and functions", function()
    local d = concur.Dict()
    d.s, d.n, d.f, d.b, d.z = ("x"):rep(5000), 0.25, 7, false, 0
    d.fn = function(x) return x * 2 end
    assert.are.equal(("x"):rep(5000), d.s)
    assert.are.equal(0.25, d.n)
    assert.are.equal("integer", mtype(d.f))
    assert.is_false(d.b)
    assert.are.equal(0, d.z)
    assert.are.equal(6, d.fn(3))
    assert.are.equal(6, #d)
  end)

  it("keeps concur objects by reference: the same object, == the original", function()
    local q, l, v, a = concur.Queue(), concur.Lock(), concur.Value(1), concur.Array("int", 1)
    local d = concur.Dict{q = q}
    d.l, d.v, d.a, d.inner = l, v, a, {q = q}
    assert.are.equal(q, d.q)
    assert.are.equal(l, d.l)
    assert.are.equal(v, d.v)
    assert.are.equal(a, d.a)
    assert.are.equal(q, d.inner.q)
    d.q:put("via d")
    assert.are.equal("via d", q:get(true, 1))
    d.v:add(4)
    assert.are.equal(5, v.value)
    local inner = concur.Dict{x = 1}
    d.d = inner
    d.d.y = 2
    assert.are.same({x = 1, y = 2}, inner:totable())
  end)

  it("deletes a key set to nil, and #d counts keys", function()
    local d = concur.Dict{a = 1, b = 2, c = 3}
    assert.are.equal(3, #d)
    d.b = nil
    assert.are.equal(2, #d)
    assert.is_nil(d.b)
    d.zz = nil   -- not there: nothing happens
    assert.are.equal(2, #d)
    assert.are.same({a = 1, c = 3}, d:totable())
  end)

  it("iterates with pairs(d) over a snapshot", function()
    if not HAS_PAIRS then return pending(_VERSION .. " (LuaJIT too) ignores __pairs on userdata: pairs(d:totable())") end
    local d = concur.Dict{a = 1, b = 2, [3] = "c"}
    local seen = {}
    for k, v in pairs(d) do
      seen[k] = v
      d[k] = nil   -- changing d meanwhile does not disturb the walk
      d.added = true
    end
    assert.are.same({a = 1, b = 2, [3] = "c"}, seen)
  end)

  it("iterates with pairs(d:totable()) on every runtime", function()
    local d = concur.Dict{a = 1, b = {2}, [3] = "c"}
    local seen = {}
    for k, v in pairs(d:totable()) do seen[k] = v end
    assert.are.same({a = 1, b = {2}, [3] = "c"}, seen)
  end)

  it("has get, pop and setdefault with defaults, as Python's dict (no KeyError)", function()
    local d = concur.Dict{a = 1}
    assert.are.equal(1, d:get("a"))
    assert.is_nil(d:get("x"))
    assert.are.equal("dflt", d:get("x", "dflt"))
    assert.are.equal(1, d:pop("a", "dflt"))
    assert.is_nil(d:get("a"))
    assert.are.equal(0, #d)
    assert.is_nil(d:pop("a"))
    assert.are.equal("dflt", d:pop("a", "dflt"))
    assert.are.equal(5, d:setdefault("s", 5))
    assert.are.equal(5, d:setdefault("s", 6))
    assert.are.equal(5, d.s)
    assert.is_nil(d:setdefault("n", nil))
    assert.is_nil(d:get("n"))
    assert.are.same({1, 2}, d:setdefault("t", {1, 2}))
    assert.are.same({1, 2}, d:setdefault("t", {3}))
    d:clear()
    assert.are.equal(0, #d)
    assert.are.same({}, d:totable())
    d.again = 1
    assert.are.same({again = 1}, d:totable())
  end)

  it("lists keys, values and items, and gives a plain table", function()
    local d = concur.Dict{a = 1, b = 2, c = 3}
    local keys, values, items = d:keys(), d:values(), d:items()
    table.sort(keys)
    table.sort(values)
    table.sort(items, function(x, y) return x[1] < y[1] end)
    assert.are.same({"a", "b", "c"}, keys)
    assert.are.same({1, 2, 3}, values)
    assert.are.same({{"a", 1}, {"b", 2}, {"c", 3}}, items)
    local t = d:totable()
    assert.is_nil(getmetatable(t))
    assert.are.same({a = 1, b = 2, c = 3}, t)
    assert.are.same({}, concur.Dict():keys())
    assert.are.same({}, concur.Dict():items())
  end)

  it("reads a method's name as the method; d:get reads the key; d[k] = v always stores", function()
    local d = concur.Dict()
    d.get, d.update, d.keys = "stored get", 1, {2}
    assert.are.equal("function", type(d.get))
    assert.are.equal("stored get", d:get("get"))
    assert.are.equal(1, d:get("update"))
    assert.are.same({2}, d:get("keys"))
    assert.are.equal(3, #d)
    assert.are.same({get = "stored get", update = 1, keys = {2}}, d:totable())
    assert.are.equal("stored get", d:pop("get"))
    assert.are.equal(2, #d)
  end)

  it("update(k, fn) stores and returns fn's result; nil deletes", function()
    local d = concur.Dict{n = 1}
    assert.are.equal(2, d:update("n", function(x) return x + 1 end))
    assert.are.equal(2, d.n)
    assert.are.equal(1, d:update("new", function(x) return (x or 0) + 1 end))
    assert.are.equal(1, d.new)
    assert.is_nil(d:update("n", function() return nil end))
    assert.is_nil(d.n)
    assert.are.equal(1, #d)
    -- fn gets a copy of a table value; its result is copied in.
    d.t = {1}
    local r = d:update("t", function(t) t[#t + 1] = 2; return t end)
    assert.are.same({1, 2}, r)
    assert.are.same({1, 2}, d.t)
  end)

  it("update(k, fn) where fn raises: d unchanged, the same error value re-raised, the lock free", function()
    local d = concur.Dict{n = 1}
    local boom = {why = "boom"}
    assert.are.equal(boom, raised(d.update, d, "n", function() error(boom) end))
    assert.are.equal(1, d.n)
    assert.are.equal(1, #d)
    assert_has(err_of(d.update, d, "n", function() error("plain", 0) end), "plain")
    -- Another thread can update now (the update lock was given back).
    local t = concur.Thread{target = function(dd)
      return dd:update("n", function(x) return x + 10 end)
    end, args = {d}}
    t:start()
    assert.are.same({11}, {t:result()})
  end)

  it("update(k, fn) may update the same Dict inside fn (re-entrant)", function()
    local d = concur.Dict{a = 1, b = 10}
    local r = d:update("a", function(x)
      local inner = d:update("b", function(y)
        return d:update("c", function() return y + 1 end)
      end)
      return x + inner
    end)
    assert.are.equal(12, r)
    assert.are.same({a = 12, b = 11, c = 11}, d:totable())
  end)

  it("update(table) sets every pair, as Python's dict.update", function()
    local d = concur.Dict{a = 1, b = 2}
    assert.is_nil(d:update({b = 20, c = {3}, [4] = true}))
    assert.are.same({a = 1, b = 20, c = {3}, [4] = true}, d:totable())
  end)

  it("refuses bad keys, values and argument counts, naming the argument", function()
    local d = concur.Dict{k = 1}
    local KEY = "(key: string, number or boolean expected, got "
    assert_has(err_of(function() d[{}] = 1 end), "bad argument #2 to 'newindex' " .. KEY .. "table)")
    assert_has(err_of(function() d[print] = 1 end), KEY .. "function)")
    assert_has(err_of(function() return d[{}] end), "bad argument #2 to 'index' " .. KEY .. "table)")
    assert_has(err_of(function() return d[0 / 0] end), "(key is NaN)")
    assert_has(err_of(function() d[0 / 0] = 1 end), "(key is NaN)")
    assert_has(err_of(function() d:get() end), "bad argument #1 to 'get' " .. KEY .. "nil)")
    assert_has(err_of(function() d:get({}) end), "bad argument #1 to 'get' " .. KEY .. "table)")
    assert_has(err_of(function() d:get("k", 1, 2) end), "bad argument #3 to 'get' (no value expected)")
    assert_has(err_of(function() d:pop(nil) end), "bad argument #1 to 'pop' " .. KEY .. "nil)")
    assert_has(err_of(function() d:pop("k", 1, 2) end), "bad argument #3 to 'pop' (no value expected)")
    assert_has(err_of(function() d:setdefault(print, 1) end), "bad argument #1 to 'setdefault' " .. KEY .. "function)")
    assert_has(err_of(function() d:setdefault("x", coroutine.create(function() end)) end), "bad argument #2 to 'setdefault'")
    assert_has(err_of(function() d:update({}, print) end), "bad argument #1 to 'update' " .. KEY .. "table)")
    assert_has(err_of(function() d:update("k") end), "bad argument #2 to 'update' (function expected, got no value)")
    assert_has(err_of(function() d:update("k", 5) end), "bad argument #2 to 'update' (function expected, got number)")
    assert_has(err_of(function() d:update("k", print, 1) end), "bad argument #3 to 'update' (no value expected)")
    assert_has(err_of(function() d:update({[{}] = 1}) end), "bad argument #1 to 'update' " .. KEY .. "table)")
    assert_has(err_of(function() d:update({x = coroutine.create(function() end)}) end), "bad argument #1 to 'update'")
    for _, m in ipairs({"clear", "keys", "values", "items", "totable"}) do
      assert_has(err_of(function() d[m](d, 1) end), "bad argument #1 to '" .. m .. "' (no value expected)")
    end
    -- Values the transfer refuses, and process-local objects.
    assert_has(err_of(function() d.x = coroutine.create(function() end) end), "bad argument #3 to 'newindex'")
    assert_has(err_of(function() d.x = io.stdout end), "bad argument #3 to 'newindex'")
    local t = concur.Thread{target = function() end}
    assert_has(err_of(function() d.x = t end),
      "bad argument #3 to 'newindex' (value: a Thread, Process or Pipe connection belongs to its process")
    assert_has(err_of(function() d.x = {inner = concur.current_thread()} end), "cannot be kept in a Dict")
    local a, b = concur.Pipe()
    assert_has(err_of(function() d.x = a end), "cannot be kept in a Dict")
    a:close()
    b:close()
    -- A result of update's fn that cannot be kept: d unchanged.
    assert_has(err_of(function() d:update("k", function() return t end) end), "cannot be kept in a Dict")
    -- The constructor.
    assert_has(err_of(concur.Dict, 5), "bad argument #1 to 'Dict' (table expected, got number)")
    assert_has(err_of(concur.Dict, {[{}] = 1}), "bad argument #1 to 'Dict' " .. KEY .. "table)")
    assert_has(err_of(concur.Dict, {x = t}), "bad argument #1 to 'Dict'")
    assert_has(err_of(concur.Dict, {}, 1), "bad argument #2 to 'Dict' (no value expected)")
    assert.are.same({k = 1}, d:totable())
  end)

  it("shows its number of keys in tostring", function()
    assert.are.equal("concur.Dict(0 keys)", tostring(concur.Dict()))
    assert.are.equal("concur.Dict(1 key)", tostring(concur.Dict{a = 1}))
    assert.are.equal("concur.Dict(3 keys)", tostring(concur.Dict{1, 2, 3}))
  end)

  it("grows to 100 000 keys and shrinks back, every value right and #d right at each stage", function()
    local d = concur.Dict()
    local N = 100000
    for i = 1, N do
      d[i] = i * 3
      if i % 25000 == 0 then assert.are.equal(i, #d) end
    end
    for i = 1, N, 1000 do d["s" .. i] = {i} end
    assert.are.equal(N + N / 1000, #d)
    local bad = 0
    for i = 1, N do
      if d[i] ~= i * 3 then bad = bad + 1 end
    end
    assert.are.equal(0, bad)
    assert.are.equal(N + N / 1000, #d:keys())
    for i = 1, N, 1000 do assert.are.same({i}, d:pop("s" .. i)) end
    for i = 1, N do
      if i % 2 == 0 then d[i] = nil end
    end
    assert.are.equal(N / 2, #d)
    for i = 1, N do
      local want = i % 2 == 1 and i * 3 or nil
      if d[i] ~= want then bad = bad + 1 end
    end
    assert.are.equal(0, bad)
    for i = 1, N, 2 do
      assert.are.equal(i * 3, d:pop(i))
      if i % 20001 == 0 then assert.are.equal(N / 2 - (i + 1) / 2, #d) end
    end
    assert.are.equal(0, #d)
    assert.are.same({}, d:totable())
    d.after = 1
    assert.are.same({after = 1}, d:totable())
  end)

  it("setdefault returns v, not a copy buffer, when a large value it met vanishes meanwhile", function()
    -- A thread puts a value over 512 bytes under "k" and takes it out, again
    -- and again; setdefault sees it (and makes room for a copy) or not.
    local d = concur.Dict()
    local stop = concur.Event()
    local t = concur.Thread{target = function(dd, ev)
      local big = ("b"):rep(4000)
      local n = 0
      while not ev:is_set() do
        dd.k = big
        dd.k = nil
        n = n + 1
      end
      return n
    end, args = {d, stop}}
    t:start()
    local wrong
    for _ = 1, 20000 do
      local r = d:setdefault("k", "small")
      if r ~= "small" and r ~= ("b"):rep(4000) then wrong = type(r) break end
      d:pop("k")
    end
    stop:set()
    t:join()
    assert.is_nil(wrong)
  end)
end)

-- ---------------------------------------------------------------------------
describe("shared state between threads", function()
  it("passes by reference as Thread arguments and through a Queue", function()
    local v, a, d = concur.Value(1), concur.Array("int", 2), concur.Dict{x = 1}
    local q = concur.Queue()
    local t = concur.Thread{target = function(v1, a1, d1, qq)
      v1.value = 10
      a1[2] = 20
      d1.x = 30
      local v2, a2, d2 = qq:get(true, 5), qq:get(true, 5), qq:get(true, 5)
      return v1 == v2, a1 == a2, d1 == d2, v2:add(1)
    end, args = {v, a, d, q}}
    t:start()
    q:put(v)
    q:put(a)
    q:put(d)
    assert.are.same({true, true, true, 11}, {t:result()})
    assert.are.equal(11, v.value)
    assert.are.same({0, 20}, a:totable())
    assert.are.equal(30, d.x)
  end)

  it("passes by reference as values in a Dict", function()
    local v, a, inner = concur.Value(0), concur.Array("float", 1), concur.Dict()
    local d = concur.Dict{v = v, a = a, inner = inner, q = concur.Queue(), l = concur.Lock()}
    local t = concur.Thread{target = function(dd)
      dd.v:add(5)
      dd.a:add(1, 0.5)
      dd.inner.from = "thread"
      dd.q:put("hi")
      return dd.l:acquire(false)
    end, args = {d}}
    t:start()
    assert.are.same({true}, {t:result()})
    assert.are.equal(5, v.value)
    assert.are.equal(0.5, a[1])
    assert.are.equal("thread", inner.from)
    assert.are.equal("hi", d.q:get(true, 1))
    assert.is_false(d.l:acquire(false))   -- the thread took the same Lock
  end)

  it("loses no add or update from 4 threads", function()
    local N = 5000
    local v, a, d = concur.Value(0), concur.Array("int", 3), concur.Dict()
    local f = concur.Value("d", 0)
    local ts = support.start_threads(4, function(_, vv, aa, dd, ff, n)
      for i = 1, n do
        vv:add(1)
        aa:add(i % 3 + 1, 1)
        ff:add(0.5)
        dd:update("k", function(x) return (x or 0) + 1 end)
      end
    end, v, a, d, f, N)
    for _, t in ipairs(ts) do assert.is_true(t:join(60)) end
    assert.are.equal(4 * N, v.value)
    local sum = 0
    for _, x in ipairs(a:totable()) do sum = sum + x end
    assert.are.equal(4 * N, sum)
    assert.are.equal(4 * N, d.k)
    assert.are.equal(2 * N, f.value)
  end)

  it("v:with makes a compound update atomic, cas an optimistic one", function()
    local v, w = concur.Value(0), concur.Value(0)
    local ts = support.start_threads(4, function(_, vv, ww)
      for _ = 1, 1000 do
        vv:with(function() vv.value = vv.value + 1 end)
        repeat local old = ww.value until ww:cas(old, old + 1)
      end
    end, v, w)
    for _, t in ipairs(ts) do assert.is_true(t:join(60)) end
    assert.are.equal(4000, v.value)
    assert.are.equal(4000, w.value)
  end)

  it("d:update from two threads of one process excludes the other (ordered by Events)", function()
    local d = concur.Dict{k = 0}
    local inside, go_on = concur.Event(), concur.Event()
    local t = concur.Thread{target = function(dd, ins, gon)
      return dd:update("k", function(x)
        ins:set()
        gon:wait(10)
        return x + 1
      end)
    end, args = {d, inside, go_on}}
    t:start()
    assert.is_true(inside:wait(10))
    local t2 = concur.Thread{target = function(dd)
      return dd:update("k", function(x) return x * 10 end)
    end, args = {d}}
    t2:start()
    assert.is_false(t2:join(0.1))   -- waits for the first update
    d.k = 5                          -- a plain store does not wait for the update lock
    go_on:set()
    assert.are.same({1}, {t:result()})
    assert.are.same({10}, {t2:result()})
    assert.are.equal(10, d.k)
  end)
end)

-- ---------------------------------------------------------------------------
describe("shared state between processes", function()
  it("passes by reference as Process arguments, through a Queue and in a Dict", function()
    local v, a, d = concur.Value(1), concur.Array("byte", 2), concur.Dict()
    local q, inner = concur.Queue(), concur.Dict()
    d.inner, d.v = inner, v
    local p = go(function(v1, a1, d1, qq)
      v1.value = 7
      a1[1] = 200
      d1.x = "child"
      d1.inner.y = "child"
      d1.v:add(1)
      local v2, a2, d2 = qq:get(true, 5), qq:get(true, 5), qq:get(true, 5)
      if not (v2 == v1 and a2 == a1 and d2 == d1) then return 2 end
      v2:add(100)
      a2:add(2, 1)
      d2:update("z", function() return true end)
      return 0
    end, v, a, d, q)
    q:put(v)
    q:put(a)
    q:put(d)
    assert.are.equal(0, finish(p))
    assert.are.equal(108, v.value)
    assert.are.same({200, 1}, a:totable())
    assert.are.equal("child", d.x)
    assert.is_true(d.z)
    assert.are.equal("child", inner.y)
  end)

  it("loses no add or update from 4 processes", function()
    local N = 2000
    local v, a, d = concur.Value(0), concur.Array("int", 2), concur.Dict()
    local ps = {}
    for w = 1, 4 do
      ps[w] = go(function()
        for i = 1, N do
          v:add(1)
          a:add(i % 2 + 1, 1)
          d:update("k", function(x) return (x or 0) + 1 end)
        end
        return 0
      end)
    end
    for _, p in ipairs(ps) do assert.are.equal(0, finish(p, 60)) end
    assert.are.equal(4 * N, v.value)
    assert.are.same({2 * N, 2 * N}, a:totable())
    assert.are.equal(4 * N, d.k)
  end)

  it("keeps every key that processes write at the same time", function()
    local d = concur.Dict()
    local go_ev = concur.Event()
    local ps = {}
    local N = 1500
    for w = 1, 4 do
      ps[w] = go(function()
        if not go_ev:wait(10) then return 2 end
        for i = 1, N do d[w .. ":" .. i] = {w, i} end
        for i = 1, N, 2 do d[w .. ":" .. i] = nil end
        return 0
      end)
    end
    go_ev:set()
    for _, p in ipairs(ps) do assert.are.equal(0, finish(p, 60)) end
    assert.are.equal(4 * N / 2, #d)
    local bad = 0
    for w = 1, 4 do
      for i = 1, N do
        local got = d[w .. ":" .. i]
        if i % 2 == 1 then
          if got ~= nil then bad = bad + 1 end
        elseif type(got) ~= "table" or got[1] ~= w or got[2] ~= i then
          bad = bad + 1
        end
      end
    end
    assert.are.equal(0, bad)
  end)

  it("d:update holds its lock while another process waits for it", function()
    local d = concur.Dict{k = 1}
    local inside, go_on, second_tried = concur.Event(), concur.Event(), concur.Event()
    local p1 = go(function()
      d:update("k", function(x)
        inside:set()
        if not go_on:wait(10) then os.exit(2) end
        return x + 1
      end)
      return 0
    end)
    assert.is_true(inside:wait(10))
    local p2 = go(function()
      second_tried:set()
      local r = d:update("k", function(x) return x * 10 end)
      return r == 20 and 0 or 3
    end)
    assert.is_true(second_tried:wait(10))
    assert.is_false(p2:join(0.2))        -- blocked on the update lock
    assert.are.equal(1, d.k)             -- the first update has not stored yet
    assert.are.equal(1, d:get("k"))      -- reads do not wait for it
    go_on:set()
    assert.are.equal(0, finish(p1))
    assert.are.equal(0, finish(p2))
    assert.are.equal(20, d.k)
  end)

  it("a Lock kept in a Dict is the same Lock in a child", function()
    local d = concur.Dict{l = concur.Lock()}
    assert.is_true(d.l:acquire())
    local p = go(function()
      local l = d.l
      if l:acquire(false) then return 2 end   -- held by the parent
      return 0
    end)
    assert.are.equal(0, finish(p))
    d.l:release()
  end)
end)

-- ---------------------------------------------------------------------------
describe("shared state's memory", function()
  it("a Dict of 10 000 entries gives its arena back once it and its handles are collected", function()
    local before = support.shm_in_use()
    local d = concur.Dict()
    for i = 1, 10000 do d[i] = {i, ("v"):rep(20)} end
    local other = d   -- a second handle: the same object
    local via_queue = concur.Queue()
    via_queue:put(d)
    local third = via_queue:get()
    assert.is_true(third == d)
    local peak = support.shm_in_use()
    assert.is_true(peak > before + 10000 * 32, "the entries do not show in shm_in_use")
    d = nil
    assert.is_true(support.shm_in_use() > before + 10000 * 32, "freed while handles remain")
    other, third, via_queue = nil, nil, nil
    support.assert_shm_back(before)
  end)

  it("a Dict keeps a Queue alive after the Queue's own handle is dropped", function()
    local before = support.shm_in_use()
    local d = concur.Dict()
    do
      local q = concur.Queue()
      q:put("kept")
      d.q = q
    end
    collectgarbage()
    collectgarbage()
    local q = d.q
    assert.are.equal("kept", q:get(true, 1))
    q:put("again")
    q = nil
    d.q = nil                 -- the last reference
    d = nil
    support.assert_shm_back(before)
  end)

  it("Values and Arrays made and dropped in a loop give their arena back", function()
    local before = support.shm_in_use()
    for i = 1, 5000 do
      local v, a = concur.Value(i), concur.Array("float", 16)
      v:add(1)
      a[1] = i
    end
    support.assert_shm_back(before)
  end)
end)
