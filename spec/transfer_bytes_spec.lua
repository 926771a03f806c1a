-- core.encode / core.decode: a value as self-contained bytes for another
-- machine (src/transfer.c, "bytes for another machine"; redis_api.md).
-- The transfer encoding with a header (magic, runtime, flags) and a keyed
-- MAC; concur objects are refused; functions cross as bytecode + upvalues.
local concur = require "concur"
local core = require "concur.core"
local support = require "support"
local mod = require "fixtures.bytes_mod"

local function rt(v, secret)
  return core.decode(core.encode(v, secret), secret)
end

local function err_of(fn, ...)
  return support.err_of(fn, ...)
end

-- A file of this spec's own, removed when the test ends.
local function temp_file(s)
  local path = os.tmpname()
  if s then
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
  end
  finally(function () os.remove(path) end)
  return path
end

describe("core.encode / core.decode", function ()
  describe("round trips", function ()
    it("scalars", function ()
      assert.is_nil(rt(nil))
      assert.is_true(rt(true))
      assert.is_false(rt(false))
      assert.equal(0, rt(0))
      assert.equal(-12345678, rt(-12345678))
      assert.equal(2 ^ 53, rt(2 ^ 53))
      if support.has_integers then
        assert.equal(math.maxinteger, rt(math.maxinteger))
        assert.equal(math.mininteger, rt(math.mininteger))
        assert.equal("integer", math.type(rt(7)))
        assert.equal("float", math.type(rt(7.0)))
      end
      assert.equal(1.5, rt(1.5))
      assert.equal(math.huge, rt(math.huge))
      assert.equal(-math.huge, rt(-math.huge))
      local nan = rt(0 / 0)
      assert.is_true(nan ~= nan)
      assert.equal(-math.huge, 1 / rt(-(1 / math.huge)))   -- -0.0 keeps its sign
    end)

    it("strings, NULs and all bytes included", function ()
      local all = {}
      for b = 0, 255 do all[#all + 1] = string.char(b) end
      all = table.concat(all)
      assert.equal("", rt(""))
      assert.equal("a\0b\0", rt("a\0b\0"))
      assert.equal(all, rt(all))
      local big = support.big_string(1000003, 7)
      assert.equal(big, rt(big))
    end)

    it("nested, shared and cyclic tables", function ()
      local shared = {1, 2}
      local t = {a = {b = {c = {"deep"}}}, s1 = shared, s2 = shared, [1.5] = "float key",
                 [true] = "bool key", list = {10, 20, nil, 40, n = 4}}
      t.self = t
      local v = rt(t)
      assert.equal("deep", v.a.b.c[1])
      assert.is_true(rawequal(v.s1, v.s2))
      assert.is_true(rawequal(v.self, v))
      assert.equal("float key", v[1.5])
      assert.equal("bool key", v[true])
      assert.equal(40, v.list[4])
      assert.is_nil(v.list[3])
      assert.equal(4, v.list.n)
      -- a cycle through a table key
      local k = {}
      k[k] = k
      local w = rt(k)
      assert.is_true(rawequal(w[w], w))
    end)

    it("metatables: a module's by name, a plain one by value", function ()
      local p = rt(setmetatable({x = 3, y = -4}, mod.Point))
      assert.is_true(rawequal(getmetatable(p), mod.Point))
      assert.equal(7, p:norm1())
      local mt = {__index = function (_, key) return key .. "!" end}
      local q = rt(setmetatable({}, mt))
      assert.is_false(rawequal(getmetatable(q), mt))
      assert.equal("hi!", q.hi)
    end)

    it("functions with upvalues, shared upvalues and module functions", function ()
      local k, calls = 10, 0
      local function add(x) return x + k end
      local function count() calls = calls + 1; return calls end
      local function peek() return calls end
      local v = rt({add = add, count = count, peek = peek, twice = mod.twice, fmt = string.format,
                    sleep = concur.sleep})
      assert.equal(15, v.add(5))
      assert.equal(1, v.count())
      assert.equal(2, v.count())
      if not support.NO_UPVALUE_JOIN then assert.equal(2, v.peek()) end
      assert.equal(0, calls)           -- the copies have their own
      assert.is_true(rawequal(v.twice, mod.twice))
      assert.is_true(rawequal(v.fmt, string.format))
      assert.is_true(rawequal(v.sleep, concur.sleep))
      local rec
      rec = function (n) return n <= 1 and 1 or n * rec(n - 1) end
      assert.equal(120, rt(rec)(5))
    end)

    it("with a secret, the same secret decodes", function ()
      local v = rt({s = "x", f = function (a) return a * 3 end}, "s3cret")
      assert.equal("x", v.s)
      assert.equal(9, v.f(3))
      assert.equal("", rt("", ""))   -- an empty secret is a secret too
    end)

    it("the bytes start with the header: CNR1, the runtime, flags 0", function ()
      local s = core.encode(1)
      assert.equal("CNR1", s:sub(1, 4))
      local want = rawget(_G, "jit") and 0x4a or tonumber(_VERSION:match("5%.(%d)")) + 0x50
      assert.equal(want, s:byte(5))
      assert.equal(0, s:byte(6))
    end)
  end)

  describe("refusals", function ()
    it("a concur object, naming where it sits", function ()
      local q = concur.Queue()
      assert.equal("cannot send a concur.Queue to another machine (args[2].q)",
                   err_of(core.encode, {1, {q = q}}, nil, "args"))
      assert.equal("cannot send a concur.Lock to another machine (value)",
                   err_of(core.encode, concur.Lock()))
      local e = err_of(core.encode, {x = {concur.Event()}})
      assert.equal("cannot send a concur.Event to another machine (value.x[1])", e)
      local k = err_of(core.encode, {[concur.Lock()] = true}, "sec")
      assert.matches("cannot send a concur.Lock to another machine", k, 1, true)
      local u = err_of(core.encode, {f = function () return q end})
      assert.matches("concur.Queue to another machine (value.f<upvalue q>)", u, 1, true)
    end)

    it("what cannot cross at all, as between processes", function ()
      assert.matches("bad value at value.co (coroutine)",
                     err_of(core.encode, {co = coroutine.create(function () end)}), 1, true)
      assert.matches("bad value at value (userdata)", err_of(core.encode, io.stdout), 1, true)
    end)

    it("bad arguments", function ()
      assert.matches("bad argument #1 to '[^']*' %(value expected%)", err_of(core.encode))
      assert.matches("bad argument #2 to '[^']*' %(string expected, got table%)",
                     err_of(core.encode, 1, {}))
      assert.matches("bad argument #1 to '[^']*' %(string expected, got no value%)",
                     err_of(core.decode))
      assert.matches("bad argument #2 to '[^']*' %(string expected, got boolean%)",
                     err_of(core.decode, core.encode(1), true))
    end)

    it("the wrong secret, or none where there was one", function ()
      local s = core.encode({1, 2, f = print}, "right")
      local msg = "cannot decode: the bytes are damaged or were encoded with another secret"
      assert.equal(msg, err_of(core.decode, s, "wrong"))
      assert.equal(msg, err_of(core.decode, s))
      assert.equal(msg, err_of(core.decode, core.encode("plain"), "right"))
    end)

    it("another runtime's bytes, by name", function ()
      local s = core.encode(1)
      local mine = s:byte(5)
      local other = mine == 0x4a and 0x54 or 0x4a
      local here = mine == 0x4a and "LuaJIT" or "Lua 5." .. (mine - 0x50)
      local there = other == 0x4a and "LuaJIT" or "Lua 5.4"
      local e = err_of(core.decode, s:sub(1, 4) .. string.char(other) .. s:sub(6))
      assert.equal("cannot decode: encoded by " .. there .. ", this is " .. here, e)
      assert.matches("unknown format flags", err_of(core.decode, s:sub(1, 5) .. "\1" .. s:sub(7)))
      assert.matches("bad magic", err_of(core.decode, "XNR1" .. s:sub(5)))
      assert.matches("too short", err_of(core.decode, ""))
      assert.matches("too short", err_of(core.decode, "CNR1"))
    end)

    it("every prefix of the bytes is an error, not a crash", function ()
      local v = {s = "a\0b", n = {1.5, -2, {true}}, f = function (x) return x end, p = setmetatable({}, mod.Point)}
      for _, secret in ipairs({false, "k"}) do
        local s = core.encode(v, secret or nil)
        for n = 0, #s - 1 do
          local ok, e = pcall(core.decode, s:sub(1, n), secret or nil)
          assert.is_false(ok)
          assert.matches("^cannot decode: ", e)
        end
        assert.equal("a\0b", core.decode(s, secret or nil).s)
      end
    end)

    it("flipped bytes and appended junk are errors, not crashes", function ()
      local v = {s = "text", list = {1, 2, 3}, f = function (x) return x + 1 end}
      local s = core.encode(v, "key")
      local seed = 12345
      local function rand(n)   -- a small LCG: the same flips on every runtime
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n
      end
      for _ = 1, 2000 do
        local at = rand(#s) + 1
        local bit = 2 ^ rand(8)
        local b = s:byte(at)
        local nb = (b % (2 * bit) >= bit) and b - bit or b + bit
        local bad = s:sub(1, at - 1) .. string.char(nb) .. s:sub(at + 1)
        local ok, e = pcall(core.decode, bad, "key")
        assert.is_false(ok)
        assert.matches("^cannot decode: ", e)
      end
      assert.is_false(pcall(core.decode, s .. "\0", "key"))
      assert.equal(2, core.decode(s, "key").f(1))
    end)
  end)

  describe("in a separately started process", function ()
    local function peer(mode, path, secret)
      return support.shell(support.fixture_command("bytes_peer.lua", mode, path, secret) .. " 2>&1")
    end

    local function value()
      local k = 100
      local c = {}
      c.cycle = c
      return {s = "a\0b", i = 42, list = {"x", "y", "z"}, cycle = c, add = function (x) return x + k end,
              p = setmetatable({x = -1, y = 2}, mod.Point), twice = mod.twice, fmt = string.format}
    end

    it("decodes our bytes (another process family: another random key)", function ()
      local out, code = peer("decode", temp_file(core.encode(value(), "shared")), "shared")
      assert.equal(0, code, out)
      assert.equal("true\t42\tz\ttrue\t101\ttrue\t3\ttrue\t007\n", out)
    end)

    it("decodes bytes made without a secret with none", function ()
      local out, code = peer("decode", temp_file(core.encode(value())))
      assert.equal(0, code, out)
      assert.matches("^true\t42", out)
    end)

    it("refuses them under another secret", function ()
      local out, code = peer("decode", temp_file(core.encode(value(), "shared")), "other")
      assert.equal(3, code, out)
      assert.matches("encoded with another secret", out, 1, true)
    end)

    it("and we decode its bytes", function ()
      local path = temp_file()
      local out, code = peer("encode", path, "k2")
      assert.equal(0, code, out)
      local f = assert(io.open(path, "rb"))
      local s = f:read("*a")
      f:close()
      local v = core.decode(s, "k2")
      assert.equal("x\0y", v.s)
      assert.equal(2.5, v.n)
      assert.equal(7, v.add(2))
      assert.is_true(rawequal(getmetatable(v.p), mod.Point))
      assert.equal(3, v.p:norm1())
      assert.is_true(rawequal(v.twice, mod.twice))
      assert.has_error(function () core.decode(s, "k3") end)
    end)
  end)
end)
