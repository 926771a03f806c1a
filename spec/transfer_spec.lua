-- Moving values between Lua states (API.md, "Moving values between Lua
-- states"; src/transfer.c).  Every row of the transfer table is checked in
-- both directions: main state -> thread through Thread args, and thread ->
-- main state through t:result().  core.transfer (encode, then decode into the
-- same state) covers the format and its errors without threads.
local concur = require "concur"
local core = require "concur.core"
local support = require "support"   -- the 5.3 library names on older runtimes
local pack, mtype = support.pack, support.mtype   -- cross to threads with the functions that use them
local maxint, minint = math.maxinteger, math.mininteger

-- busted runs this file with its own environment table, a sandbox whose
-- __index reaches busted's internals (coroutines and all).  A function
-- written here would carry that sandbox as its _ENV upvalue.  Every function
-- below uses the real globals instead, so that they cross like functions of
-- an ordinary program; the sandbox itself is the subject of one test.
local describe, it, pending, assert = describe, it, pending, assert
local spec_env = _ENV or getfenv(1)
local _ENV = _G
if setfenv then setfenv(1, _G) end   -- 5.1, LuaJIT: the functions made below

-- busted's `finally` exists only while a test runs.
local function finally(fn)
  return spec_env.finally(fn)
end

-- Runs f(...) on a new thread; returns what f returned or raises its error.
local function on_thread(f, ...)
  local t = concur.Thread{target = f, args = pack(...)}
  t:start()
  return t:result()
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- A number's subtype and exact value (sign of zero, NaN and inf included).
local function fingerprint(x)
  return mtype(x) .. " " .. string.format("%q", x)
end

local function chain(depth)
  local root = {}
  local cur = root
  for _ = 2, depth do
    cur.next = {}
    cur = cur.next
  end
  return root
end

local function chain_depth(t)
  local n = 0
  while t do n = n + 1; t = t.next end
  return n
end

local function all_bytes()
  local b = {}
  for i = 0, 255 do b[#b + 1] = string.char(i) end
  return table.concat(b)
end

local MIB = string.rep("ab\0\255", 262144)   -- 1 MiB with NUL and high bytes

describe("transfer of nil, booleans and strings", function()
  it("gives the thread equal values", function()
    local r = pack(on_thread(function(...)
      local a, b, c, s0, s1, s2, s3 = ...
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      return select("#", ...), a == nil, b == true, c == false, s0 == "", s1 == "a\0b",
        s2 == table.concat(bytes), #s3, s3 == string.rep("ab\0\255", 262144)
    end, nil, true, false, "", "a\0b", all_bytes(), MIB))
    assert.are.same({7, true, true, true, true, true, true, 1048576, true, n = 9}, r)
  end)

  it("gives the main state equal values from a thread", function()
    local r = pack(on_thread(function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      return nil, true, false, "", "a\0b", table.concat(bytes), string.rep("ab\0\255", 262144), nil
    end))
    assert.are.equal(8, r.n)
    assert.is_nil(r[1])
    assert.are.equal(true, r[2])
    assert.are.equal(false, r[3])
    assert.are.equal("", r[4])
    assert.are.equal("a\0b", r[5])
    assert.are.equal(all_bytes(), r[6])
    assert.are.equal(1048576, #r[7])
    assert.is_true(r[7] == MIB)
    assert.is_nil(r[8])
  end)

  it("round-trips through core.transfer", function()
    local r = pack(core.transfer(nil, true, false, "a\0b", MIB))
    assert.are.equal(6, r.n)
    assert.are.equal(mtype(r[1]), "integer")
    assert.is_true(r[1] > #MIB)
    assert.is_nil(r[2])
    assert.are.equal(true, r[3])
    assert.are.equal(false, r[4])
    assert.are.equal("a\0b", r[5])
    assert.is_true(r[6] == MIB)
  end)
end)

describe("transfer of numbers", function()
  local function numbers()
    return 1, 1.0, 0, -(1 / math.huge), 0.0, maxint, minint, 0.1, 2^53, -2^63,
      1/0, -1/0, 0/0, 5e-324, -1
  end
  local expected = {}
  for i, x in ipairs({numbers()}) do expected[i] = fingerprint(x) end

  it("gives the thread the same number and subtype", function()
    local r = {on_thread(function(...)
      local out = {}
      for i = 1, select("#", ...) do out[i] = fingerprint((select(i, ...))) end
      return out
    end, numbers())}
    assert.are.same(expected, r[1])
  end)

  it("gives the main state the same number and subtype from a thread", function()
    local r = {on_thread(function()
      return 1, 1.0, 0, -(1 / math.huge), 0.0, maxint, minint, 0.1, 2^53, -2^63,
        1/0, -1/0, 0/0, 5e-324, -1
    end)}
    local got = {}
    for i, x in ipairs(r) do got[i] = fingerprint(x) end
    assert.are.same(expected, got)
    assert.are.equal("integer", mtype(r[1]))
    assert.are.equal(support.INTEGRAL_FLOAT, mtype(r[2]))
    assert.are.equal(-math.huge, 1 / r[4])     -- -0.0 keeps its sign
    assert.are.equal(math.huge, 1 / r[5])
    assert.are.equal(maxint, r[6])
    assert.are.equal(minint, r[7])
    assert.are.equal(math.huge, r[11])
    assert.are.equal(-math.huge, r[12])
    assert.is_true(r[13] ~= r[13])             -- NaN
  end)

  it("round-trips through core.transfer", function()
    local r = {select(2, core.transfer(numbers()))}
    local got = {}
    for i, x in ipairs(r) do got[i] = fingerprint(x) end
    assert.are.same(expected, got)
  end)
end)

describe("transfer of tables", function()
  it("gives the thread a deep copy whose changes stay in the thread", function()
    local v = {list = {1, 2, 3}, inner = {x = 1, deeper = {y = "z"}}}
    local r = on_thread(function(t)
      t.inner.x = 99
      t.list[4] = 4
      t.inner.deeper.y = "changed"
      return t
    end, v)
    assert.are.same({list = {1, 2, 3}, inner = {x = 1, deeper = {y = "z"}}}, v)
    assert.are.same({list = {1, 2, 3, 4}, inner = {x = 99, deeper = {y = "changed"}}}, r)
    assert.is_false(rawequal(v, r))
    assert.is_false(rawequal(v.inner, r.inner))
  end)

  it("keeps shared references on the way to a thread", function()
    local s = {"shared"}
    local v = {a = s, b = s, list = {s, s}}
    local r = {on_thread(function(t, again)
      return rawequal(t.a, t.b), rawequal(t.a, t.list[1]), rawequal(t.list[1], t.list[2]),
        rawequal(t.a, again), t.a[1]
    end, v, s)}
    assert.are.same({true, true, true, true, "shared"}, r)
  end)

  it("keeps shared references on the way back from a thread", function()
    local t, s = on_thread(function()
      local s = {"shared"}
      return {a = s, b = s, list = {s, s}}, s
    end)
    assert.is_true(rawequal(t.a, t.b))
    assert.is_true(rawequal(t.a, t.list[1]))
    assert.is_true(rawequal(t.list[2], s))
    assert.are.equal("shared", s[1])
  end)

  it("keeps cycles on the way to a thread", function()
    local v = {name = "v"}
    v.self = v
    local a, b = {name = "a"}, {name = "b"}
    a.b, b.a = b, a
    local r = {on_thread(function(x, y)
      return rawequal(x.self, x), x.self.self.name, rawequal(y.b.a, y), y.b.name
    end, v, a)}
    assert.are.same({true, "v", true, "b"}, r)
  end)

  it("keeps cycles on the way back from a thread", function()
    local v, a = on_thread(function()
      local v = {name = "v"}
      v.self = v
      local a, b = {name = "a"}, {name = "b"}
      a.b, b.a = b, a
      return v, a
    end)
    assert.is_true(rawequal(v.self, v))
    assert.is_true(rawequal(a.b.a, a))
    assert.are.equal("b", a.b.name)
  end)

  it("makes new tables with the same shape through core.transfer", function()
    local s = {}
    local v = {a = s, b = s}
    v.self = v
    local _, c, s2 = core.transfer(v, s)
    assert.is_false(rawequal(c, v))
    assert.is_true(rawequal(c.self, c))
    assert.is_true(rawequal(c.a, c.b))
    assert.is_true(rawequal(c.a, s2))
    assert.is_false(rawequal(s2, s))
  end)

  it("keeps holes in arrays and sparse integer keys, both ways", function()
    local holes = {1, nil, 3, nil, 5}
    local sparse = {[1] = "a", [3] = "c", [1000] = "k", [-1] = "neg", [0] = "zero"}
    local r = {on_thread(function(h, sp)
      return h[1], h[2], h[3], h[4], h[5], count(h), sp[1], sp[2], sp[3], sp[1000], sp[-1],
        sp[0], count(sp)
    end, holes, sparse)}
    assert.are.same({1, nil, 3, nil, 5, 3, "a", nil, "c", "k", "neg", "zero", 5}, r)

    local h, sp = on_thread(function()
      return {1, nil, 3, nil, 5}, {[1] = "a", [3] = "c", [1000] = "k", [-1] = "neg", [0] = "zero"}
    end)
    assert.are.same({[1] = 1, [3] = 3, [5] = 5}, h)
    assert.are.equal(3, count(h))
    assert.are.same({[1] = "a", [3] = "c", [1000] = "k", [-1] = "neg", [0] = "zero"}, sp)
  end)

  -- A table with every kind of key; `check` runs on either side.
  local function mixed_keys()
    local k, fk = {name = "key"}, function() return "fk" end
    return {
      [true] = "t", [false] = "f", [1.5] = "float", [-0.5] = "negfloat", [math.huge] = "inf",
      [2^53] = "big", [minint] = "min", [0] = "zero", ["a\0b"] = "nul",
      [k] = "table key", keyref = k, [fk] = "function key", fnref = fk, "one", "two",
    }
  end
  local function check_mixed(t)
    local float_keys = 0
    for key in pairs(t) do
      if mtype(key) == "float" then float_keys = float_keys + 1 end
    end
    return t[true] == "t" and t[false] == "f" and t[1.5] == "float" and t[-0.5] == "negfloat"
      and t[math.huge] == "inf" and t[2^53] == "big" and t[minint] == "min"
      and t[0] == "zero" and t["a\0b"] == "nul" and t[t.keyref] == "table key"
      and t.keyref.name == "key" and t[t.fnref] == "function key" and t.fnref() == "fk"
      and t[1] == "one" and t[2] == "two" and count(t) == 15 and float_keys == 3
  end

  it("keeps boolean, float, table and function keys on the way to a thread", function()
    assert.is_true(check_mixed(mixed_keys()))   -- the check itself holds here
    assert.is_true(on_thread(function(t) return check_mixed(t) end, mixed_keys()))
  end)

  it("keeps boolean, float, table and function keys on the way back", function()
    local t = on_thread(function() return mixed_keys() end)
    assert.is_true(check_mixed(t))
    local _, c = core.transfer(mixed_keys())
    assert.is_true(check_mixed(c))
  end)

  -- A class with methods, __tostring, __add and a shared metatable.
  local function make_points()
    local Point = {}
    Point.__index = Point
    function Point.new(x, y) return setmetatable({x = x, y = y}, Point) end
    function Point:len2() return self.x * self.x + self.y * self.y end
    Point.__tostring = function(p) return "(" .. p.x .. ", " .. p.y .. ")" end
    Point.__add = function(p, q) return Point.new(p.x + q.x, p.y + q.y) end
    local proxy = setmetatable({}, {__index = function(_, key) return key .. "!" end})
    local locked = setmetatable({}, {__metatable = "locked", __index = {hidden = 42}})
    return Point.new(1, 2), Point.new(3, 4), proxy, locked
  end
  local function check_points(p, q, proxy, locked)
    return tostring(p), p:len2(), tostring(p + q), rawequal(getmetatable(p), getmetatable(q)),
      proxy.foo, getmetatable(locked), locked.hidden
  end
  local expected = {"(1, 2)", 5, "(4, 6)", true, "foo!", "locked", 42}

  it("copies metatables, with __index and __tostring working, to a thread", function()
    assert.are.same(expected, {check_points(make_points())})
    assert.are.same(expected, {on_thread(function(...) return check_points(...) end,
      make_points())})
  end)

  it("copies metatables back from a thread", function()
    assert.are.same(expected, {check_points(on_thread(function() return make_points() end))})
  end)

  it("crosses as the thread's own object, fields and class included", function()
    local MyThread = concur.Thread:extend()
    function MyThread:init(data) self.data = data end
    function MyThread:run()
      local d = self.data
      return rawequal(d.a, d.b), rawequal(d.self, d), self:describe(), tostring(d.point)
    end
    function MyThread:describe() return "my " .. self.data.a[1] end
    local s = {"shared"}
    local data = {a = s, b = s, point = (make_points())}
    data.self = data
    local t = MyThread(data)
    t:start()
    assert.are.same({true, true, "my shared", "(1, 2)"}, {t:result()})
  end)
end)

describe("transfer of Lua functions", function()
  it("runs a plain function with parameters and varargs on a thread", function()
    local f = function(a, ...) return a .. ":" .. select("#", ...) end
    assert.are.equal("x:3", on_thread(function(g) return g("x", 1, nil, 3) end, f))
  end)

  it("copies a closure's counter to a thread; each side counts on its own", function()
    local n = 10
    local function inc() n = n + 1; return n end
    inc()
    local r = {on_thread(function(g) return g(), g() end, inc)}
    assert.are.same({12, 13}, r)
    assert.are.equal(12, inc())
  end)

  it("brings a closure's counter back from a thread", function()
    local inc = on_thread(function()
      local n = 0
      local function inc() n = n + 1; return n end
      inc(); inc()
      return inc
    end)
    assert.are.equal(3, inc())
    assert.are.equal(4, inc())
  end)

  it("copies nested closures", function()
    local function adder(a) return function(b) return function(c) return a + b + c end end end
    local r = {on_thread(function(add, add12) return add(10)(20)(30), add12(3) end,
      adder, adder(1)(2))}
    assert.are.same({60, 6}, r)
    local back = on_thread(function() return adder(100)(20) end)
    assert.are.equal(123, back(3))
  end)

  it("keeps one upvalue shared by two closures on the way to a thread", function()
    if support.NO_UPVALUE_JOIN then return pending(support.NO_UPVALUE_JOIN) end
    local function pair()
      local n = 0
      return function() n = n + 1 end, function() return n end
    end
    local inc, get = pair()
    inc()
    local r = {on_thread(function(i, g, t)
      i(); i()
      local a = g()
      t.inc()
      return a, t.get(), g()
    end, inc, get, {inc = inc, get = get})}
    -- inc/get and t.inc/t.get are the same two functions: one upvalue for all.
    assert.are.same({3, 4, 4}, r)
    assert.are.equal(1, get())
  end)

  it("keeps one upvalue shared by two closures on the way back", function()
    if support.NO_UPVALUE_JOIN then return pending(support.NO_UPVALUE_JOIN) end
    local inc, get = on_thread(function()
      local n = 0
      return function() n = n + 1 end, function() return n end
    end)
    inc(); inc()
    assert.are.equal(2, get())
  end)

  it("keeps an upvalue table shared by two closures and an argument", function()
    local acc = {}
    local function add(x) acc[#acc + 1] = x end
    local function all() return acc end
    local r = {on_thread(function(a, b, list)
      a("x"); a("y")
      return #b(), rawequal(b(), list), #list
    end, add, all, acc)}
    assert.are.same({2, true, 2}, r)
    assert.are.same({}, acc)
  end)

  it("copies a function whose upvalue table is also sent on its own", function()
    local cfg = {level = 1}
    local function get() return cfg end
    assert.is_true(on_thread(function(g, c) return rawequal(g(), c) end, get, cfg))
  end)

  it("copies recursive and mutually recursive local functions, both ways", function()
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    local is_even, is_odd
    function is_even(n) if n == 0 then return true end return is_odd(n - 1) end
    function is_odd(n) if n == 0 then return false end return is_even(n - 1) end
    local r = {on_thread(function(f, e) return f(10), e(10), e(7) end, fact, is_even)}
    assert.are.same({3628800, true, false}, r)

    local fib = on_thread(function()
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      return fib
    end)
    assert.are.equal(6765, fib(20))
  end)

  it("binds _ENV to the thread's globals", function()
    CONCUR_TRANSFER_MARK = "main"
    finally(function() CONCUR_TRANSFER_MARK = nil; CONCUR_TRANSFER_SET = nil end)
    local function read() return CONCUR_TRANSFER_MARK, string.rep("ab", 2) end
    local function write(v) CONCUR_TRANSFER_SET = v end
    local r = {on_thread(function(f, w)
      CONCUR_TRANSFER_MARK = "thread"
      w(5)
      local a, b = f()
      return a, b, CONCUR_TRANSFER_SET
    end, read, write)}
    assert.are.same({"thread", "abab", 5}, r)
    assert.are.equal("main", CONCUR_TRANSFER_MARK)
    assert.is_nil(CONCUR_TRANSFER_SET)
  end)

  it("binds _ENV to the main state's globals on the way back", function()
    CONCUR_TRANSFER_MARK = "main"
    finally(function() CONCUR_TRANSFER_MARK = nil end)
    local f = on_thread(function()
      CONCUR_TRANSFER_MARK = "thread"
      return function() return CONCUR_TRANSFER_MARK, string.upper("x") end
    end)
    assert.are.same({"main", "X"}, {f()})
  end)

  it("binds the _ENV of a function written in a busted spec (a sandbox) to the thread's globals",
    function()
      -- Every function in a spec file has busted's sandbox as its _ENV.
      local f = support.load("return function(n) return string.rep('x', n), CONCUR_TRANSFER_MARK end",
        "=spec", "t", spec_env)()
      local r = {on_thread(function(g) CONCUR_TRANSFER_MARK = "thread"; return g(3) end, f)}
      assert.are.same({"xxx", "thread"}, r)
    end)

  it("copies a C function upvalue by name", function()
    local fmt = string.format
    local function show(x) return fmt("<%d>", x) end
    local r = {on_thread(function(f)
      return f(5), rawequal(select(2, debug.getupvalue(f, 1)), string.format)
    end, show)}
    assert.are.same({"<5>", true}, r)
  end)
end)

describe("transfer of C functions and module tables", function()
  local function cfuncs()
    return {string.format, math.floor, print, pairs, table.concat, require, io.write, os.time,
      select, concur.sleep, core.transfer}
  end
  local function check_cfuncs(list)
    local own = cfuncs()
    local ok = {}
    for i = 1, #own do ok[i] = rawequal(list[i], own[i]) end
    return ok, #list
  end
  local all_true = {true, true, true, true, true, true, true, true, true, true, true}

  it("gives the thread its own C functions, looked up by name", function()
    local ok, n = on_thread(function(list) return check_cfuncs(list) end, cfuncs())
    assert.are.equal(11, n)
    assert.are.same(all_true, ok)
    assert.are.same({"3.50", 2}, {on_thread(function(fmt, floor)
      return fmt("%.2f", 3.5), floor(2.7)
    end, string.format, math.floor)})
  end)

  it("gives the main state its own C functions from a thread", function()
    local list = on_thread(function() return cfuncs() end)
    local ok, n = check_cfuncs(list)
    assert.are.equal(11, n)
    assert.are.same(all_true, ok)
  end)

  local module_names = {"string", "math", "table", "io", "os", "coroutine", "_G",
    "concur", "concur.core", "fixtures.transfer_mod", utf8 and "utf8"}   -- utf8: 5.3+

  it("gives the thread its own module tables, loading them if needed", function()
    local mods = {}
    for _, name in ipairs(module_names) do mods[name] = require(name) end
    local r = {on_thread(function(m)
      local ok = {}
      for name, mod in pairs(m) do ok[name] = rawequal(mod, require(name)) end
      return ok, rawequal(m._G, _G), rawequal(m.concur, concur), m["fixtures.transfer_mod"].greet("you")
    end, mods)}
    local expected = {}
    for _, name in ipairs(module_names) do expected[name] = true end
    assert.are.same({expected, true, true, "hello you"}, r)
  end)

  it("gives the main state its own module tables from a thread", function()
    local mods = on_thread(function()
      local m = {}
      for _, name in ipairs(module_names) do m[name] = require(name) end
      return m
    end)
    for _, name in ipairs(module_names) do
      assert.is_true(rawequal(require(name), mods[name]), name)
    end
  end)

  it("loads in the main state a user module that a thread returns", function()
    assert.is_nil(package.loaded["fixtures.transfer_lazy"])
    finally(function() package.loaded["fixtures.transfer_lazy"] = nil end)
    local lazy = on_thread(function() return require "fixtures.transfer_lazy" end)
    assert.is_not_nil(package.loaded["fixtures.transfer_lazy"])
    assert.is_true(rawequal(package.loaded["fixtures.transfer_lazy"], lazy))
    assert.are.equal(8, lazy.twice(4))
  end)

  it("sends a module a thread has just required by name (core.transfer in the thread)", function()
    local r = {on_thread(function()
      local m = require "fixtures.transfer_lazy"
      local _, c = core.transfer(m)
      return rawequal(c, m)
    end)}
    assert.are.same({true}, r)
  end)

  it("sends a module required after earlier transfers by name", function()
    core.transfer({}, string.format)
    finally(function() package.loaded["fixtures.transfer_late"] = nil end)
    local late = require "fixtures.transfer_late"
    local _, c = core.transfer(late)
    assert.is_true(rawequal(late, c))
    assert.is_true(on_thread(function(m)
      return rawequal(m, package.loaded["fixtures.transfer_late"])
    end, late))
  end)

  -- Known limitation (docs/DESIGN.md): the name cache follows new entries of
  -- package.loaded (its __newindex), not an existing entry assigned a new table.
  pending("sends the new table of a module whose package.loaded entry was replaced by name", function()
    local name = "fixtures.transfer_swapped"
    finally(function() package.loaded[name] = nil end)
    package.loaded[name] = {"first"}
    core.transfer(package.loaded[name], string.format)   -- the first one is known
    local second = {"second"}
    package.loaded[name] = second
    assert.is_true(rawequal(require(name), second))
    local _, c = core.transfer(second)
    assert.is_true(rawequal(c, second))
  end)

  it("sends the values a module lists in __concur_names by name", function()
    local named = require "fixtures.transfer_named"
    local r = {on_thread(function(v)
      local m = require "fixtures.transfer_named"
      return rawequal(v, m.get_secret()), v.kind
    end, named.get_secret())}
    assert.are.same({true, "secret"}, r)
    local _, back = core.transfer(named.get_secret())
    assert.is_true(rawequal(back, named.get_secret()))
  end)

  it("sends concur's registered values (the Thread class) by name", function()
    local r = {on_thread(function(cls, c) return rawequal(cls, concur.Thread), rawequal(c, concur) end,
      concur.Thread, concur)}
    assert.are.same({true, true}, r)
  end)
end)

describe("transfer of concur objects", function()
  it("gives the thread one Lua value for one object", function()
    local t1 = concur.Thread{target = function() return 42 end}
    local r = {on_thread(function(a, b, tbl)
      return rawequal(a, b), rawequal(a, tbl.h), a == b
    end, t1, t1, {h = t1})}
    assert.are.same({true, true, true}, r)
  end)

  it("gives the main state back its own handle of a thread", function()
    local t = concur.Thread{target = function() return concur.current_thread() end}
    t:start()
    local h = t:result()
    assert.is_true(rawequal(h, t))
    local _, c = core.transfer(t)
    assert.is_true(rawequal(c, t))
  end)

  it("lets a thread join and read another thread it received", function()
    local t1 = concur.Thread{target = function() return "from t1" end}
    t1:start()
    local r = {on_thread(function(h)
      local joined = h:join()
      return joined, h:result(), h:is_alive()
    end, t1)}
    assert.are.same({true, "from t1", false}, r)
  end)

  it("brings a handle of a thread started by a thread back to the main state", function()
    local h = on_thread(function()
      local inner = concur.Thread{target = function(x) return x .. "!" end, args = {"inner"}}
      inner:start()
      return inner
    end)
    assert.is_true(h:join())
    assert.are.equal("inner!", h:result())
  end)

  it("carries concur's error values as the receiver's own", function()
    local names = {"Empty", "Full", "TimeoutError", "BrokenBarrierError"}
    for _, name in ipairs(names) do
      assert.is_not_nil(concur[name], "concur." .. name)
    end
    local r = {on_thread(function(errs)
      local ok = {}
      for name, v in pairs(errs) do ok[name] = rawequal(v, concur[name]) end
      return ok
    end, {Empty = concur.Empty, Full = concur.Full, TimeoutError = concur.TimeoutError,
      BrokenBarrierError = concur.BrokenBarrierError})}
    assert.are.same({{Empty = true, Full = true, TimeoutError = true, BrokenBarrierError = true}}, r)
    local back = on_thread(function() return {concur.Empty, concur.Full} end)
    assert.is_true(rawequal(back[1], concur.Empty))
    assert.is_true(rawequal(back[2], concur.Full))
  end)
end)

describe("concur.Sentinel", function()
  it("is one value per name: ==, rawequal, a table key; tostring and name", function()
    local STOP = concur.Sentinel("STOP")
    assert.is_true(rawequal(STOP, concur.Sentinel("STOP")))
    assert.is_false(STOP == concur.Sentinel("GO"))
    assert.is_false(STOP == concur.Empty)
    assert.is_false(concur.Empty == STOP)
    assert.is_false(STOP == {})
    assert.equal("concur.Sentinel(STOP)", tostring(STOP))
    assert.equal("STOP", STOP.name)
    local t = {[STOP] = 1}
    assert.equal(1, t[concur.Sentinel("STOP")])
    local odd = concur.Sentinel("a\0b c")
    assert.equal("a\0b c", odd.name)
    assert.is_false(odd == concur.Sentinel("a"))
  end)

  it("is read-only", function()
    local STOP = concur.Sentinel("STOP")
    local ok, e = pcall(function() STOP.x = 1 end)
    assert.is_false(ok)
    assert.matches("transfer_spec%.lua:%d+: concur sentinels are read%-only", e)
    ok, e = pcall(function() STOP.name = "GO" end)
    assert.is_false(ok)
    assert.equal("STOP", STOP.name)
    assert.is_nil(next(STOP))
    assert.equal("string", type(getmetatable(STOP)))
  end)

  it("wants a non-empty string", function()
    for _, case in ipairs({{nil, "got nil"}, {"", "got empty string"}, {5, "got number"},
        {{}, "got table"}}) do
      local ok, e = pcall(function() local s = concur.Sentinel(case[1]); return s end)
      assert.is_false(ok)
      assert.matches("transfer_spec%.lua:%d+: bad argument #1 to 'Sentinel' %(non%-empty string expected, ", e)
      support.assert_has(e, case[2] .. ")")
    end
    local ok, e = pcall(function() local s = concur.Sentinel(); return s end)
    assert.is_false(ok)
    support.assert_has(e, "(non-empty string expected, got no value)")
  end)

  it("arrives in a thread as that thread's own, made there on first sight", function()
    local STOP, odd = concur.Sentinel("STOP"), concur.Sentinel("a\0b")
    local r = pack(on_thread(function(s, t, o)
      local c = require "concur"
      local here = c.Sentinel("STOP")
      return rawequal(s, here), s == here, t[here], rawequal(o, c.Sentinel("a\0b")),
        tostring(s), c.Sentinel("FROM_THREAD"), {[here] = "back"}
    end, STOP, {[STOP] = "key"}, odd))
    assert.same({true, true, "key", true, "concur.Sentinel(STOP)"}, {r[1], r[2], r[3], r[4], r[5]})
    assert.is_true(rawequal(r[6], concur.Sentinel("FROM_THREAD")))
    assert.equal("back", r[7][STOP])
  end)

  it("ends a pipeline consumer through a queue", function()
    local STOP = concur.Sentinel("STOP")
    local q = concur.Queue()
    local t = concur.Thread{target = function(qq)
      local stop = require("concur").Sentinel("STOP")
      local sum = 0
      while true do
        local item = qq:get()
        if item == stop then return sum end
        sum = sum + item
      end
    end, args = {q}}
    t:start()
    for i = 1, 10 do q:put(i) end
    q:put(STOP)
    assert.equal(55, t:result())
  end)

  it("crosses to and from a process as the receiver's own", function()
    local q, back = concur.Queue(), concur.Queue()
    local p = concur.Process{target = function()
      local c = require "concur"
      local item = q:get(true, 10)
      back:put({rawequal(item, c.Sentinel("PSTOP")), c.Sentinel("FROM_CHILD")})
    end}
    p:start()
    q:put(concur.Sentinel("PSTOP"))
    local r = back:get(true, 20)
    assert.equal(0, support.finish(p))
    assert.is_true(r[1])
    assert.is_true(rawequal(r[2], concur.Sentinel("FROM_CHILD")))
  end)
end)

describe("transfer of untransferable values", function()
  it("raises in the sender with the path, and starts nothing", function()
    local t = concur.Thread{target = function(a, b) return a, b.x end,
      args = {1, {cb = coroutine.create(function() end)}}}
    local ok, err = pcall(t.start, t)
    assert.is_false(ok)
    assert.matches("bad value at args%[2%]%.cb %(coroutine%)", err)
    assert.is_false(t:is_alive())
    local jok, jerr = pcall(t.join, t)
    assert.is_false(jok)
    assert.matches("cannot join thread before it is started", jerr)
    -- The failed start left the thread startable.
    t.args = {1, {x = "fine"}}
    t:start()
    assert.are.same({1, "fine"}, {t:result()})
  end)

  it("names a bad key", function()
    local t = concur.Thread{target = print, args = {{[coroutine.create(function() end)] = 1}}}
    local ok, err = pcall(t.start, t)
    assert.is_false(ok)
    assert.matches("bad key at args%[1%] %(coroutine%)", err)
    assert.is_false(t:is_alive())
    local ok2, err2 = pcall(core.transfer, "fine", {[coroutine.create(function() end)] = 1})
    assert.is_false(ok2)
    assert.matches("bad key at args%[2%] %(coroutine%)", err2)
  end)

  it("names the type of each untransferable value", function()
    local x = 0
    local function f() return x end
    local cases = {
      {coroutine.create(function() end), "bad value at args%[1%] %(coroutine%)"},
      {io.stdout, "bad value at args%[1%] %(userdata"},
      {string.gmatch("a", "a"), "bad value at args%[1%] %(C function not found in any loaded module%)"},
      {coroutine.wrap(function() end),
        "bad value at args%[1%] %(C function not found in any loaded module%)"},
    }
    -- A light userdata, where Lua code can get one (debug.upvalueid: 5.2+).
    if debug.upvalueid then
      cases[#cases + 1] = {debug.upvalueid(f, 1), "bad value at args%[1%] %(light userdata%)"}
    end
    for _, case in ipairs(cases) do
      local ok, err = pcall(core.transfer, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err)
    end
    local t = concur.Thread{target = print, args = {"a", "b", io.stdout}}
    local ok, err = pcall(t.start, t)
    assert.is_false(ok)
    assert.matches("bad value at args%[3%] %(userdata", err)
    assert.is_false(t:is_alive())
  end)

  it("names upvalues, metatables and odd keys in the path", function()
    local co = coroutine.create(function() end)
    local function f() return co end
    local cases = {
      {{f}, "bad value at args%[1%]%[1%]<upvalue co> %(coroutine%)"},
      {setmetatable({}, {__index = co}), "bad value at args%[1%]<metatable>%.__index %(coroutine%)"},
      {{["my key"] = co}, "bad value at args%[1%]%[\"my key\"%] %(coroutine%)"},
      {{[true] = co}, "bad value at args%[1%]%[true%] %(coroutine%)"},
      {{[1.5] = co}, "bad value at args%[1%]%[1%.5%] %(coroutine%)"},
      {{a = {b = {co}}}, "bad value at args%[1%]%.a%.b%[1%] %(coroutine%)"},
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(core.transfer, case[1])
      assert.is_false(ok)
      assert.matches(case[2], err)
    end
    local t = concur.Thread{target = f}
    local ok, err = pcall(t.start, t)
    assert.is_false(ok)
    assert.matches("bad value at target<upvalue co> %(coroutine%)", err)
    assert.is_false(t:is_alive())
  end)

  it("raises from t:result() when a thread returns an untransferable value", function()
    local t = concur.Thread{target = function() return 1, {co = coroutine.create(function() end)} end}
    t:start()
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.matches("bad value at %S*%[2%]%.co %(coroutine%)", err)
  end)
end)

describe("transfer failures in the receiver", function()
  it("raises from t:result() naming a module the thread cannot load", function()
    package.loaded["fake.mod"] = {}
    finally(function() package.loaded["fake.mod"] = nil end)
    local t = concur.Thread{target = function(m) return m end, args = {package.loaded["fake.mod"]}}
    t:start()
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.matches("fake%.mod", tostring(err))
  end)

  it("says why the module could not be loaded", function()
    package.loaded["fake.mod2"] = {}
    finally(function() package.loaded["fake.mod2"] = nil end)
    local t = concur.Thread{target = function(m) return m end, args = {package.loaded["fake.mod2"]}}
    t:start()
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.matches("module 'fake%.mod2' not found", tostring(err))
    assert.is_nil(tostring(err):find("(null)", 1, true))
  end)
end)

describe("transfer limits and large data", function()
  it("moves a 500-level chain both ways", function()
    local depth, back = on_thread(function(c)
      return chain_depth(c), chain(500)
    end, chain(500))
    assert.are.equal(500, depth)
    assert.are.equal(500, chain_depth(back))
    local _, c = core.transfer(chain(500))
    assert.are.equal(500, chain_depth(c))
  end)

  it("refuses a chain nested too deeply, in either direction", function()
    local ok, err = pcall(core.transfer, chain(1500))
    assert.is_false(ok)
    assert.matches("nested too deeply", err)

    local t = concur.Thread{target = chain_depth, args = {chain(1500)}}
    ok, err = pcall(t.start, t)
    assert.is_false(ok)
    assert.matches("nested too deeply", err)
    assert.is_false(t:is_alive())

    local t2 = concur.Thread{target = function() return chain(1500) end}
    t2:start()
    ok, err = pcall(t2.result, t2)
    assert.is_false(ok)
    assert.matches("nested too deeply", tostring(err))
  end)

  it("moves a list of 100000 small tables to a thread and back", function()
    local list = {}
    for i = 1, 100000 do list[i] = {id = i, name = "x"} end
    local n, back = on_thread(function(l)
      for i = 1, #l do
        if l[i].id ~= i or l[i].name ~= "x" then return -i end
      end
      return #l, l
    end, list)
    assert.are.equal(100000, n)
    assert.are.equal(100000, #back)
    for _, i in ipairs({1, 2, 50000, 99999, 100000}) do
      assert.are.same({id = i, name = "x"}, back[i])
    end
  end)
end)

describe("transfer of argument lists with nils", function()
  it("keeps inner and trailing nils of args with an n field", function()
    local t = concur.Thread{target = function(...) return select("#", ...), ... end,
      args = pack(nil, 2, nil, nil)}
    t:start()
    local r = pack(t:result())
    assert.are.same({4, nil, 2, nil, nil, n = 5}, r)
    local t0 = concur.Thread{target = function(...) return select("#", ...) end, args = pack()}
    t0:start()
    assert.are.equal(0, t0:result())
  end)

  it("keeps inner and trailing nils of a thread's results", function()
    local r = pack(on_thread(function() return nil, 2, nil, nil end))
    assert.are.equal(4, r.n)
    assert.are.equal(2, r[2])
  end)
end)

-- Found by the fuzzer (fuzz/crashes/README.md): these crashed.
describe("transfer of values the fuzzer built", function()
  local core = require "concur.core"

  it("a slice whose list holds the slice itself raises, it does not crash", function()
    local t = {}
    local s = core.slice(t, 1, 1)
    t[1] = s
    local ok, err = pcall(core.transfer, s)
    assert.is_false(ok)
    assert.matches("nested too deeply", err)
    local a, b = {}, {}
    local sa, sb = core.slice(a, 1, 1), core.slice(b, 1, 1)
    a[1], b[1] = sb, sa
    assert.is_false((pcall(core.transfer, sa)))
  end)

  it("slices nested less than the depth limit still arrive", function()
    local inner = core.slice({10, 20, 30}, 2, 3)
    local _, back = core.transfer(core.slice({inner, 5}, 1, 2))
    assert.are.same({{20, 30, n = 2}, 5, n = 2}, back)
  end)

  -- 5.1, 5.2 and LuaJIT index tables with an int in C: past 2^31 the index
  -- wrapped and a slice copied list[-1] and list[0] (src/compat.h).
  it("a slice past index 2^31 copies its own items", function()
    for _, first in ipairs{2147483647, 4294967295, 2 ^ 53 - 1} do
      local list = {[first] = "a", [first + 1] = "b", [-1] = "wrong", [0] = "wrong",
                    [1] = "wrong"}
      local _, back = core.transfer(core.slice(list, first, first + 1))
      assert.are.same({"a", "b", n = 2}, back)
    end
  end)
end)
