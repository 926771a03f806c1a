-- fuzz_transfer.lua - the Lua half of fuzz/fuzz_transfer.c, compiled into the
-- fuzzer (build/fuzz/fuzz_transfer_lua.h, made by tools/embed.lua).
--
-- It runs in the fuzzer's one lua_State and gives the C side:
--   build(bytes)          mode B: runs a little program that builds Lua values
--   expect(one_root, n, ...)  what transfer_encode must answer for those values:
--                         "ok", "bad" (a value that cannot cross), "deep" (more
--                         than 1000 levels), "slice-loop" or "slice-deep" (see
--                         below); it walks the values in the encoder's own order
--   compare(n, origs..., copies...)  deep equality that respects sharing
--   strip(...)            removes the metatables of freshly decoded tables, so
--                         that no finalizer a message brought ever runs
--   seed_values(), seed_programs()   what FUZZ_TRANSFER_SEEDS writes
-- Everything here uses raw access only (next, rawget, debug.getmetatable): a
-- decoded value's metamethods never run.
--
-- Written for every runtime (5.1 to 5.4, LuaJIT): no bitwise operators or
-- integer division, and what only some have is taken from the C side
-- (string.unpack, rawlen, the encoder's integer rule) or tested for:
-- integer subtypes (5.3, 5.4), debug.upvalueid and upvaluejoin (not on 5.1,
-- where every upvalue crosses as its own value).
local C = ...    -- from the C side: is_concur, is_integer, rawlen, int64,
                 -- float64, objects, bad

local next, rawget, rawset, rawequal = next, rawget, rawset, rawequal
local rawlen, is_integer = C.rawlen, C.is_integer
local type, select, tostring = type, select, tostring
local load = _VERSION == "Lua 5.1" and loadstring or load     -- a string chunk
local floor = math.floor
local mtype = math.type                     -- nil: no integer subtype
local maxinteger = math.maxinteger or 2 ^ 53
local mininteger = math.mininteger or -2 ^ 53
local pack = table.pack or function(...) return {n = select("#", ...), ...} end
local unpack = table.unpack or unpack
local dgetmetatable, dsetmetatable = debug.getmetatable, debug.setmetatable
local getupvalue, setupvalue = debug.getupvalue, debug.setupvalue
local upvalueid, upvaluejoin, getinfo = debug.upvalueid, debug.upvaluejoin, debug.getinfo
local getuservalue = debug.getuservalue or debug.getfenv    -- 5.1, LuaJIT: the env
local sdump, schar = string.dump, string.char
local G = _G
local is_concur = C.is_concur
local concur = require "concur"
local core = require "concur.core"

local H = {}
local MAX_DEPTH = 1000      -- transfer.c's MAX_DEPTH
local MAX_TABLES = 50000    -- tables one build program may make

-- Bit n (0 = the lowest) of a byte, and the byte's low n bits.
local function bit(x, n) return floor(x / 2 ^ n) % 2 end
local function low(x, n) return x % 2 ^ n end

local function iscfunc(f)
  return getinfo(f, "S").what == "C"
end

-- The closure's own upvalue count.  Every upvalue walk below stops there: a
-- damaged binary chunk can give its function more upvalues than its closure,
-- and debug.getupvalue checks only the function's count
-- (fuzz/crashes/chunk-upvalue-count).
local function nups(f)
  return getinfo(f, "u").nups
end

-- ---- the values transfer.c sends by name ---------------------------------
-- The same rules as names_rebuild: package.loaded's tables and C functions,
-- the C functions under string keys of those tables, and the values modules
-- list in __concur_names.  Nothing changes package.loaded once set up.
local named = {}
for name, mod in next, package.loaded do
  if type(name) == "string" then
    if type(mod) == "table" then
      named[mod] = true
      for k, v in next, mod do
        if type(k) == "string" and type(v) == "function" and iscfunc(v) then named[v] = true end
      end
      local reg = rawget(mod, "__concur_names")
      if type(reg) == "table" then
        for k, v in next, reg do
          if type(k) == "string" then named[v] = true end
        end
      end
    elseif type(mod) == "function" and iscfunc(mod) then
      named[mod] = true
    end
  end
end

-- Slices the generator made: slice -> {list, first, count}.
local slices = setmetatable({}, {__mode = "k"})

-- ---- pools the generator picks from ----------------------------------------
local function keep_named(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if named[v] then out[#out + 1] = v end
  end
  return out
end

local NAMED_POOL = keep_named(
  string, math, table, G, concur, core, rawget(G, "utf8"), rawget(G, "bit"), rawget(G, "jit"),
  string.format, string.rep, string.byte, math.floor, math.max, table.concat, unpack,
  print, require, pairs, select, core.slice, core.Lock, concur.Thread, concur.Process,
  concur.Timer, concur.Empty, concur.Full, rawget(concur, "__concur_names").class_call,
  rawget(concur, "__concur_names").error_mt)

local OBJECTS = C.objects    -- concur objects, made once by the C side
local BAD = C.bad            -- values that cannot cross, made by the C side
BAD[#BAD + 1] = coroutine.create(function() end)
BAD[#BAD + 1] = string.gmatch("abc", ".")   -- a C closure in no module
BAD[#BAD + 1] = io.stdout                   -- a userdata that is not concur's

-- Closure factories: each use loads its chunk afresh, so that the closures
-- get fresh upvalues, _ENV included (a closure defined in this file would
-- share this file's _ENV, and setting it would change the harness's globals).
local TEMPLATES = {
  "local a, b; return function() return a, b end",
  "local n = 0; return function() n = n + 1; return n end",
  "return function(x) return x end",                            -- no upvalue
  "return function(...) return select('#', ...) end",           -- _ENV only
  "local f; f = function(x) if x > 0 then return f(x - 1) end return 0 end; return f",
  "local s = {}; local function get() return s end; local function set(v) s = v end; return get, set",
  "local t; return function() return print, t end",             -- _ENV and t
  "local a, b, c, d, e; return function() return a, b, c, d, e end",
  "local u; return function() return function() return u end end",
  "local x = 'k'; return function(y) return x .. tostring(y), 1.5, math.pi, 42 end",
}

-- (Without integer subtypes maxinteger is 2^53: the last integer a double
-- holds exactly; 2^63 and beyond cross as floats there.)
local SPECIAL_INTS = {
  0, 1, -1, 2, 63, 64, -64, -65, 127, 128, 255, 256, 16383, 16384,
  2147483647, 2147483648, -2147483648, 4294967295, 4294967296,
  9007199254740992, -9007199254740992, maxinteger, mininteger, maxinteger - 1, mininteger + 1,
}
if not mtype then
  SPECIAL_INTS[#SPECIAL_INTS + 1] = 2 ^ 63
  SPECIAL_INTS[#SPECIAL_INTS + 1] = -2 ^ 63
  SPECIAL_INTS[#SPECIAL_INTS + 1] = 2 ^ 63 - 1024     -- the last double below 2^63
  SPECIAL_INTS[#SPECIAL_INTS + 1] = 2 ^ 64
end

local SPECIAL_FLOATS = {
  0.0, -0.0, 1 / 0, -1 / 0, 0 / 0, -(0 / 0), 0.5, -1.5, 3.0, 2.0 ^ 53, 2.0 ^ 63, -2.0 ^ 63,
  1e308, 5e-324, 2.2250738585072014e-308, math.pi, 1e-300, 255.0, -0.0 * 3,
}

local DICT = {
  "", "a", "n", "x", "key", "next", "leaf", "__index", "__name", "__tostring", "__call",
  "_ENV", "\0", "\255\0\1", "1", "1.0", "nan", "string", "concur", "format",
  ("k"):rep(40), ("k"):rep(41), ("long "):rep(60), "\27Lua",
}

-- ---- mode B: the program -------------------------------------------------
-- header byte: bits 0-1 prefix message (0 none, 1 a string, 2 objects, 3 none),
--   bit 2 several roots (2, or 3 with bit 5), else one root (named `v` itself
--   unless bit 5), bit 3 inject a memory error (the next byte says after how
--   many allocations), bit 4 decode through the shared-memory blob too,
--   bit 6 release the blob with sblob_decode_free.
-- Then ops, each a byte (mod #OPS) and its operand bytes, until a 0xff byte
-- or the end; after the 0xff: damage kind, position (2 bytes), value.
-- Missing bytes read as 0.  Picks count back from the newest value (0: top).
local OPS = {
  "NIL", "BOOL", "SMALLINT", "INT64", "SPECIALINT", "FLOAT64", "SPECIALFLOAT",
  "STR", "DICTSTR", "REP", "NEWTABLE", "SET", "APPEND", "SETI", "SETMETA",
  "CLOSURE", "SETUPVAL", "JOIN", "NAMED", "OBJ", "BAD", "SLICE", "CHAIN",
  "ARRAY", "DUP", "BIGARRAY", "KEYS",
}
local OP = {}
for i, name in ipairs(OPS) do OP[name] = i - 1 end
H.OP = OP

-- A table a generated value may use as metatable: no finalizer, not weak.
local function clean_mt(m)
  return rawget(m, "__gc") == nil and rawget(m, "__mode") == nil
end

function H.build(bytes)
  local pos, len = 1, #bytes
  local function byte()
    if pos > len then return 0 end
    local b = bytes:byte(pos)
    pos = pos + 1
    return b
  end
  local function raw(n)
    local s = bytes:sub(pos, pos + n - 1)
    pos = pos + n
    if #s < n then s = s .. ("\0"):rep(n - #s) end
    return s
  end

  local vals, nv, top = {}, 0, 0
  local function push(v)
    top = top % 64 + 1
    vals[top] = v
    if nv < 64 then nv = nv + 1 end
  end
  local function pick(b)
    if nv == 0 then return nil end
    return vals[(top - 1 - b % nv) % 64 + 1]
  end
  local gen, funcs = {}, {}       -- the tables and closures made here
  -- At most MAX_TABLES tables per program: thousands of CHAINs of 2047 levels
  -- made `gen` a hash part bigger than the allocator's MAX_BLOCK, and build
  -- itself ran out of memory (fuzz/crashes/build-many-chains, on 5.2).
  local made = 0
  local function newtable()
    local t = {}
    gen[t] = true
    made = made + 1
    return t
  end

  local info = {}
  local h = byte()
  info.prefix = low(h, 2)
  if bit(h, 2) == 1 then
    info.n = 2 + bit(h, 5)
    info.one_root = 0
  else
    info.n = 1
    info.one_root = bit(h, 5) == 0 and 1 or 0
  end
  info.oom = bit(h, 3)
  info.oomk = info.oom == 1 and byte() or 0
  info.sblob = bit(h, 4)
  info.sblob_free = bit(h, 6)

  local ops = {
    [OP.NIL] = function() push(nil) end,
    [OP.BOOL] = function() push(bit(byte(), 0) == 1) end,
    [OP.SMALLINT] = function() local b = byte(); push(b >= 128 and b - 256 or b) end,
    [OP.INT64] = function() push(C.int64(raw(8))) end,
    [OP.SPECIALINT] = function() push(SPECIAL_INTS[byte() % #SPECIAL_INTS + 1]) end,
    [OP.FLOAT64] = function() push(C.float64(raw(8))) end,
    [OP.SPECIALFLOAT] = function() push(SPECIAL_FLOATS[byte() % #SPECIAL_FLOATS + 1]) end,
    [OP.STR] = function() push(raw(byte())) end,
    [OP.DICTSTR] = function() push(DICT[byte() % #DICT + 1]) end,
    [OP.REP] = function()
      local s = pick(byte())
      if type(s) ~= "string" or #s == 0 then s = "ab\0\255" end
      local n = byte() * 256 + byte()
      if #s * n > 100000 then n = floor(100000 / #s) end
      push(s:rep(n))
    end,
    [OP.NEWTABLE] = function() push(newtable()) end,
    [OP.SET] = function()
      local t, k, v = pick(byte()), pick(byte()), pick(byte())
      if gen[t] and k ~= nil and k == k then rawset(t, k, v) end
    end,
    [OP.APPEND] = function()
      local t, v = pick(byte()), pick(byte())
      if gen[t] then rawset(t, rawlen(t) + 1, v) end
    end,
    [OP.SETI] = function()
      local t, b = pick(byte()), byte()
      local i = b < 200 and b - 100 or SPECIAL_INTS[b % #SPECIAL_INTS + 1]
      local v = pick(byte())
      if gen[t] then rawset(t, i, v) end
    end,
    [OP.SETMETA] = function()
      local t, m = pick(byte()), pick(byte())
      if gen[t] and (m == nil or gen[m] or (type(m) == "table" and named[m] and clean_mt(m))) then
        dsetmetatable(t, m)
      end
    end,
    [OP.CLOSURE] = function()
      local i = byte() % #TEMPLATES + 1
      local a, b = load(TEMPLATES[i], "=template" .. i)()
      funcs[a] = true
      push(a)
      if b then funcs[b] = true; push(b) end
    end,
    [OP.SETUPVAL] = function()
      local f, i, v = pick(byte()), byte(), pick(byte())
      if funcs[f] then
        local n = nups(f)
        if n > 0 then setupvalue(f, i % n + 1, v) end
      end
    end,
    [OP.JOIN] = function()
      local f1, i1, f2, i2 = pick(byte()), byte(), pick(byte()), byte()
      if funcs[f1] and funcs[f2] and upvaluejoin then
        local n1, n2 = nups(f1), nups(f2)
        if n1 > 0 and n2 > 0 then upvaluejoin(f1, i1 % n1 + 1, f2, i2 % n2 + 1) end
      end
    end,
    [OP.NAMED] = function() push(NAMED_POOL[byte() % #NAMED_POOL + 1]) end,
    [OP.OBJ] = function() push(OBJECTS[byte() % #OBJECTS + 1]) end,
    [OP.BAD] = function() push(BAD[byte() % #BAD + 1]) end,
    [OP.SLICE] = function()
      local list, b, c = pick(byte()), byte(), byte()
      if not gen[list] then return end
      -- from 1, around 2^31 (where an int index would wrap), or at the top
      local first = b < 128 and 1 + b % 8 or b < 160 and 2147483644 + b % 8 or maxinteger - b % 8
      local count = c % 9
      if first - 1 > maxinteger - count then count = maxinteger - first + 1 end
      local s = core.slice(list, first, first + (count - 1))   -- no double past 2^53
      slices[s] = {list = list, first = first, count = count}
      push(s)
    end,
    [OP.CHAIN] = function()
      local depth = byte() * 8 + byte() % 8
      if made + depth > MAX_TABLES then depth = math.max(MAX_TABLES - made, 1) end
      local leaf = pick(byte())
      local root = newtable()
      local cur = root
      for _ = 2, depth do
        local nx = newtable()
        rawset(cur, "next", nx)
        cur = nx
      end
      rawset(cur, "leaf", leaf)
      push(root)
    end,
    [OP.ARRAY] = function()
      local n, t = byte() % 17, newtable()
      for i = 1, n do rawset(t, i, pick(i - 1)) end
      push(t)
    end,
    [OP.DUP] = function() push(pick(byte())) end,
    [OP.BIGARRAY] = function()
      local n, kind, t = byte() * 64, byte() % 3, newtable()
      for i = 1, n do
        rawset(t, i, kind == 0 and i or kind == 1 and i + 0.5 or "s" .. i % 50)
      end
      push(t)
    end,
    [OP.KEYS] = function()
      local n, v, t = byte() * 4, pick(byte()), newtable()
      if type(v) == "string" and #v > 256 then v = nil end   -- no message of 100 MB
      for i = 1, n do rawset(t, "k" .. i, v == nil and i or v) end
      push(t)
    end,
  }

  info.trailer = 0
  while pos <= len do
    local b = byte()
    if b == 0xff then
      info.trailer = 1
      break
    end
    ops[b % #OPS]()
  end
  info.dkind, info.dpos, info.dval = byte(), byte() * 256 + byte(), byte()

  -- No generated table may bring a finalizer or weakness (the copies would
  -- have them too, and a weak table changes under the collector's hands).
  for t in next, gen do
    rawset(t, "__gc", nil)
    rawset(t, "__mode", nil)
  end
  local roots = {}
  for i = 1, info.n do roots[i] = pick(info.n - i) end
  return info, unpack(roots, 1, info.n)
end

-- ---- what the encoder must answer -----------------------------------------
-- The encoder's walk, step for step: array items 1..#t, then lua_next over the
-- other keys (short string keys are never values), then the metatable;
-- upvalues in order, _ENV and the globals table as T_GLOBALS, an upvalue seen
-- before as T_UPJOIN.  Named values first, then "seen", then "C function",
-- then the depth limit, as encode_value checks them.
--
-- A slice is copied item by item, with no "seen" and no depth check: a slice
-- whose list holds it (through slices only) recurses without end
-- ("slice-loop", fuzz/crashes/slice-holds-itself); a slice 1000 levels down
-- is "slice-deep", which the encoder may take or refuse (it takes it now; a
-- depth check for slices, the fix suggested, would refuse it).
function H.expect(one_root, n, ...)
  local seen, useen = {}, {}
  local visit
  function visit(v, d, chain)      -- chain: the slices just above, if slices
    local t = type(v)
    if t == "table" or t == "function" then
      if named[v] or seen[v] then return nil end
      seen[v] = true
      if t == "function" and iscfunc(v) then return "bad" end
      if d >= MAX_DEPTH then return "deep" end
      if t == "table" then
        local na = rawlen(v)
        for i = 1, na do
          local r = visit(rawget(v, i), d + 1, nil)
          if r then return r end
        end
        for k, x in next, v do
          if not (na > 0 and is_integer(k) and k >= 1 and k <= na) then
            if not (type(k) == "string" and #k <= 40) then
              local r = visit(k, d + 1, nil)
              if r then return r end
            end
            local r = visit(x, d + 1, nil)
            if r then return r end
          end
        end
        local mt = dgetmetatable(v)
        if mt ~= nil then return visit(mt, d + 1, nil) end
        return nil
      end
      for i = 1, nups(v) do
        local name, x = getupvalue(v, i)
        if name == nil then break end
        if not (name == "_ENV" or rawequal(x, G)) then
          local id = upvalueid and upvalueid(v, i) or {}    -- 5.1: each its own
          if not useen[id] then
            useen[id] = true
            local r = visit(x, d + 1, nil)
            if r then return r end
          end
        end
      end
      return nil
    elseif t == "userdata" then
      if is_concur(v) then return nil end
      local s = slices[v]
      if s == nil then return "bad" end
      if chain and chain[v] then return "slice-loop" end
      if d >= MAX_DEPTH then return "slice-deep" end
      chain = chain or {}
      chain[v] = true
      for k = 0, s.count - 1 do
        local r = visit(rawget(s.list, s.first + k), d + 1, chain)
        if r then return r end
      end
      chain[v] = nil
      return nil
    elseif t == "thread" then
      return "bad"
    end
    return nil
  end
  local d0 = (n == 1 and one_root == 1) and 0 or 1
  for i = 1, n do
    local r = visit((select(i, ...)), d0, nil)
    if r then return r end
  end
  return "ok"
end

-- ---- deep equality --------------------------------------------------------
-- orig -> copy is a bijection on tables and functions (the same sharing and
-- cycles), and on upvalues; named values and concur objects are the very
-- same value; NaN equals NaN, -0.0 is not 0.0 and subtypes must match.
-- Table keys that are tables or functions are matched once everything else
-- has bound what it can; the rest are tried one by one, undoing a failed try.
function H.compare(n, ...)
  local args = pack(...)
  local map, rev, umap, urev = {}, {}, {}, {}
  local log, deferred = {}, {}
  local path, why = {}, nil

  local function set(t, k, v)
    log[#log + 1] = t
    log[#log + 1] = k
    t[k] = v
  end
  local function undo(mark)
    while #log > mark do
      local k = log[#log]
      log[#log] = nil
      local t = log[#log]
      log[#log] = nil
      t[k] = nil
    end
  end
  local function fail(msg)
    why = msg .. " at v" .. table.concat(path)
    return false
  end
  local function seg(s) path[#path + 1] = s end
  local function unseg() path[#path] = nil end
  local function keyname(k)
    if type(k) == "string" then return ("[%q]"):format(k:sub(1, 40)) end
    if type(k) == "number" then return "[" .. tostring(k) .. "]" end
    return "[<" .. type(k) .. ">]"
  end
  local function count(t)
    local c = 0
    for _ in next, t do c = c + 1 end
    return c
  end

  local eq

  local function eq_slice(s, c)
    if type(c) ~= "table" then return fail("slice copied as " .. type(c)) end
    if dgetmetatable(c) ~= nil then return fail("slice copy has a metatable") end
    local cn = rawget(c, "n")
    if not is_integer(cn) or cn ~= s.count then
      return fail("slice n " .. tostring(cn) .. " for " .. s.count)
    end
    local items = 0
    for k = 1, s.count do
      local x = rawget(s.list, s.first + (k - 1))
      if x ~= nil then items = items + 1 end
      seg(keyname(k))
      if not eq(x, rawget(c, k)) then return false end
      unseg()
    end
    if count(c) ~= items + 1 then return fail("slice copy has other keys") end
    return true
  end

  local function eq_table(o, c)
    local mo, mc = dgetmetatable(o), dgetmetatable(c)
    if (mo == nil) ~= (mc == nil) then return fail("metatable present on one side only") end
    if mo ~= nil then
      seg("<metatable>")
      if not eq(mo, mc) then return false end
      unseg()
    end
    local no, pend = 0, nil
    for k, v in next, o do
      no = no + 1
      local tk = type(k)
      if tk == "table" or tk == "function" or (tk == "userdata" and slices[k]) then
        local kc = named[k] and k or map[k]
        if kc ~= nil then
          local cv = rawget(c, kc)
          if cv == nil then return fail("key " .. keyname(k) .. " missing") end
          seg(keyname(k))
          if not eq(v, cv) then return false end
          unseg()
        else
          pend = pend or {}
          pend[#pend + 1] = k
        end
      else
        local cv = rawget(c, k)
        if cv == nil then return fail("key " .. keyname(k) .. " missing") end
        seg(keyname(k))
        if not eq(v, cv) then return false end
        unseg()
      end
    end
    if count(c) ~= no then return fail("key count " .. no .. " vs " .. count(c)) end
    if pend then set(deferred, #deferred + 1, {o, c, pend, table.concat(path)}) end
    return true
  end

  local function eq_func(o, c)
    if iscfunc(o) or iscfunc(c) then return fail("C function copied") end
    if sdump(o) ~= sdump(c) then return fail("bytecode differs") end
    local nuo, nuc = nups(o), nups(c)
    for i = 1, (nuo > nuc and nuo or nuc) do
      local no, vo, nc, vc
      if i <= nuo then no, vo = getupvalue(o, i) end
      if i <= nuc then nc, vc = getupvalue(c, i) end
      if no ~= nc then return fail("upvalue " .. i .. " name") end
      if no == nil then break end
      if no == "_ENV" or rawequal(vo, G) then
        if not rawequal(vc, G) then return fail("upvalue " .. no .. " not the globals") end
      elseif not upvalueid then       -- 5.1: no sharing to compare
        seg("<upvalue " .. no .. ">")
        if not eq(vo, vc) then return false end
        unseg()
      else
        local uo, uc = upvalueid(o, i), upvalueid(c, i)
        local m = umap[uo]
        if m ~= nil then
          if m ~= uc then return fail("upvalue " .. no .. " sharing differs") end
        elseif urev[uc] ~= nil then
          return fail("upvalue " .. no .. " joined to another")
        else
          set(umap, uo, uc)
          set(urev, uc, uo)
        end
        seg("<upvalue " .. no .. ">")
        if not eq(vo, vc) then return false end
        unseg()
      end
    end
    return true
  end

  function eq(o, c)
    local to, tc = type(o), type(c)
    if to == "userdata" and slices[o] then return eq_slice(slices[o], c) end
    if to ~= tc then return fail("type " .. to .. " became " .. tc) end
    if to == "number" then
      if mtype and mtype(o) ~= mtype(c) then return fail("number subtype") end
      if o ~= o then return c ~= c or fail("NaN lost") end
      if o ~= c then return fail("number " .. tostring(o) .. " became " .. tostring(c)) end
      if o == 0 and 1 / o ~= 1 / c then return fail("sign of zero") end
      return true
    elseif to == "table" or to == "function" then
      if named[o] then return rawequal(o, c) or fail("named value is not the receiver's own") end
      local m = map[o]
      if m ~= nil then return rawequal(m, c) or fail("sharing differs") end
      if rev[c] ~= nil then return fail("two values became one") end
      if rawequal(o, c) then return fail("the copy is the original") end
      set(map, o, c)
      set(rev, c, o)
      if to == "table" then return eq_table(o, c) end
      return eq_func(o, c)
    elseif to == "userdata" then
      return rawequal(o, c) or fail("concur object is another handle")
    end
    return rawequal(o, c) or fail(to .. " differs")
  end

  for i = 1, n do
    path = {"#" .. i}
    if not eq(args[i], args[n + i]) then return false, why end
  end
  -- Keys that are tables or functions, matched last.
  local i = 1
  while i <= #deferred do
    local o, c, pend, p = deferred[i][1], deferred[i][2], deferred[i][3], deferred[i][4]
    i = i + 1
    local used, cands = {}, {}
    for k in next, o do
      local kc = named[k] and k or map[k]
      if kc ~= nil then used[kc] = true end
    end
    for k in next, c do
      local tk = type(k)
      if (tk == "table" or tk == "function") and not used[k] then cands[#cands + 1] = k end
    end
    for _, ko in ipairs(pend) do
      path = {p}
      local kc = named[ko] and ko or map[ko]
      if kc ~= nil then
        if rawget(c, kc) == nil then return false, "key missing at v" .. p end
        if not eq(rawget(o, ko), rawget(c, kc)) then return false, why end
        used[kc] = true
      else
        local found = false
        for _, cand in ipairs(cands) do
          if not used[cand] then
            local mark = #log
            path = {p, keyname(ko)}
            if eq(ko, cand) and eq(rawget(o, ko), rawget(c, cand)) then
              used[cand] = true
              found = true
              break
            end
            undo(mark)
          end
        end
        if not found then
          return false, "no copy of a table or function key at v" .. p .. " (" .. tostring(why) .. ")"
        end
      end
    end
  end
  return true
end

-- ---- finalizers never run ---------------------------------------------------
-- Everything reachable from the registry now (modules, concur's classes, the
-- pools above) was there before any message: strip never touches it.
local pre = {}
do
  local work, n = {debug.getregistry()}, 1
  pre[work[1]] = true
  local function add(v)
    local t = type(v)
    if (t == "table" or t == "function" or t == "userdata" or t == "thread") and not pre[v] then
      pre[v] = true
      n = n + 1
      work[n] = v
    end
  end
  local i = 1
  while i <= n do
    local v = work[i]
    i = i + 1
    local t = type(v)
    if t == "table" then
      for k, x in next, v do add(k); add(x) end
      add(dgetmetatable(v))
    elseif t == "function" then
      for j = 1, nups(v) do
        local name, x = getupvalue(v, j)
        if name == nil then break end
        add(x)
      end
    elseif t == "userdata" then
      add(dgetmetatable(v))
      for j = 1, 16 do
        local x, ok = getuservalue(v, j)
        if not ok then break end
        add(x)
      end
    end
  end
end

-- Removes the metatable of every table the decoder made that the given values
-- reach (run with the collector stopped, right after a decode).
function H.strip(...)
  local work, n, seen = {}, 0, {}
  local function add(v)
    local t = type(v)
    if (t == "table" or t == "function") and not pre[v] and not seen[v] then
      seen[v] = true
      n = n + 1
      work[n] = v
    end
  end
  for i = 1, select("#", ...) do add((select(i, ...))) end
  local i = 1
  while i <= n do
    local v = work[i]
    i = i + 1
    if type(v) == "table" then
      for k, x in next, v do add(k); add(x) end
      local mt = dgetmetatable(v)
      if mt ~= nil then
        add(mt)
        dsetmetatable(v, nil)
      end
    elseif not iscfunc(v) then
      for j = 1, nups(v) do
        local name, x = getupvalue(v, j)
        if name == nil then break end
        add(x)
      end
    end
  end
end

-- ---- seeds --------------------------------------------------------------------
-- Mode A seeds: messages of these values (no concur objects: a raw message
-- has no object list).
function H.seed_values()
  local shared = {1, 2, 3}
  local cyc = {name = "cycle"}
  cyc.self = cyc
  local a, b = {}, {}
  a.b, b.a = b, a
  local up = {n = 0}
  local function counter() up.n = up.n + 1; return up.n end
  local function get() return up end
  local fact
  fact = function(x) if x <= 1 then return 1 end return x * fact(x - 1) end
  local mt = {__index = {greet = "hi"}}
  local keys = {}
  for i = 1, 30 do keys["field" .. i] = i end
  local recs = {}
  for i = 1, 4 do recs[i] = {id = i, name = "n" .. i, tags = {"x", "y"}} end
  return {
    {"nil", nil},
    {"numbers", {0, 1, -1, 127, 128, -129, maxinteger, mininteger, true, false,
      0.0, -0.0, 1 / 0, -1 / 0, 0 / 0, 0.5, 3.0, 5e-324}},
    {"strings", {"", "a", "a\0b", ("x"):rep(40), ("y"):rep(41), "\255\254"}},
    {"array_holes", {1, nil, 3, nil, 5, [10] = 10, [-1] = -1}},
    {"hash", {a = 1, b = "two", c = {d = true}}},
    {"keys", {[true] = 1, [false] = 0, [1.5] = "f", [1 / 0] = "inf", [mininteger] = "min"}},
    {"table_keys", {[shared] = "t", [counter] = "f", [string.format] = "c"}},
    {"shared", {shared, shared, {shared}}},
    {"cycles", {cyc, a}},
    {"metatable", setmetatable({x = 1}, mt)},
    {"closure", counter}, {"two_closures", {counter, get}},
    {"recursive", fact},
    {"named", {string, math.floor, string.format, concur, concur.Thread}},
    {"keystrs", {keys, keys, recs}},
    {"deep", (function() local t = {}; for _ = 1, 50 do t = {t} end; return t end)()},
    {"env_fn", function() return print end},
  }
end

-- Mode B seeds: programs for build().
function H.seed_programs()
  local function prog(header, ...)
    local out = {schar(header)}
    for _, v in ipairs{...} do
      if type(v) == "string" then out[#out + 1] = v else out[#out + 1] = schar(v) end
    end
    return table.concat(out)
  end
  local o = OP
  return {
    {"scalars", prog(4 + 32, o.SPECIALINT, 22, o.SPECIALFLOAT, 4, o.DICTSTR, 13)},
    {"table_kv", prog(0, o.NEWTABLE, o.DICTSTR, 4, o.SPECIALFLOAT, 1, o.SET, 2, 1, 0,
      o.SPECIALINT, 21, o.DUP, 0, o.SET, 4, 0, 1, o.DUP, 4)},
    {"cycle", prog(0, o.NEWTABLE, o.DUP, 0, o.DUP, 0, o.SET, 0, 1, 2)},
    {"shared", prog(4, o.NEWTABLE, o.ARRAY, 3, o.DUP, 1)},
    {"metatable", prog(0, o.NEWTABLE, o.NEWTABLE, o.DICTSTR, 7, o.SET, 1, 0, 1,
      o.SETMETA, 2, 1, o.DUP, 2)},
    {"closure", prog(0, o.CLOSURE, 0, o.NEWTABLE, o.SETUPVAL, 1, 0, 0, o.DUP, 1)},
    {"shared_upvalue", prog(4, o.CLOSURE, 5, o.NEWTABLE, o.SETUPVAL, 1, 0, 0,
      o.DUP, 2, o.DUP, 2)},
    {"joined", prog(4, o.CLOSURE, 0, o.CLOSURE, 7, o.JOIN, 0, 2, 1, 1, o.SMALLINT, 9,
      o.SETUPVAL, 1, 1, 0, o.DUP, 2, o.DUP, 2)},
    {"recursive", prog(0, o.CLOSURE, 4)},
    {"env", prog(0, o.CLOSURE, 6, o.NEWTABLE, o.SETUPVAL, 1, 0, 0, o.DUP, 1)},
    {"named", prog(0, o.NAMED, 0, o.NAMED, 7, o.NAMED, 18, o.ARRAY, 3)},
    {"objects", prog(0, o.OBJ, 0, o.OBJ, 1, o.OBJ, 2, o.OBJ, 7, o.ARRAY, 4)},
    {"object_key", prog(0, o.NEWTABLE, o.OBJ, 3, o.BOOL, 1, o.SET, 2, 1, 0, o.DUP, 2)},
    {"bad_coroutine", prog(0, o.NEWTABLE, o.BAD, 3, o.APPEND, 1, 0, o.DUP, 1)},
    {"bad_userdata", prog(0, o.BAD, 0, o.ARRAY, 1)},
    {"bad_key", prog(0, o.NEWTABLE, o.BAD, 2, o.SMALLINT, 1, o.SET, 2, 1, 0, o.DUP, 2)},
    {"deep_ok", prog(0, o.CHAIN, 125, 0)},
    {"deep_refused", prog(0, o.CHAIN, 125, 1)},
    {"slice", prog(0, o.ARRAY, 0, o.SMALLINT, 3, o.SMALLINT, 4, o.ARRAY, 2,
      o.SLICE, 0, 0, 2)},
    {"bigstring", prog(0, o.DICTSTR, 22, o.REP, 0, 1, 44)},
    {"bigarray", prog(0, o.BIGARRAY, 40, 2)},
    {"keys", prog(4, o.KEYS, 50, 0, o.KEYS, 50, 0)},
    {"prefix_objs", prog(2, o.OBJ, 0, o.OBJ, 3, o.ARRAY, 2)},
    {"sblob", prog(16, o.OBJ, 4, o.DICTSTR, 4, o.ARRAY, 2)},
    {"oom", prog(8, 200, o.KEYS, 20, 0, o.CLOSURE, 1, o.ARRAY, 2)},
    {"damage_trunc", prog(0, o.NEWTABLE, o.DICTSTR, 4, o.CLOSURE, 1, o.SET, 2, 1, 0,
      o.DUP, 2, 0xff, 1, 0, 7, 0)},
    {"damage_tag", prog(0, o.ARRAY, 0, o.DUP, 0, o.ARRAY, 2, 0xff, 2, 0, 3, 10)},
    -- list[2^31 - 1] and list[2^31] = "a", then core.slice(list, 2^31 - 1, 2^31):
    -- 5.1, 5.2 and LuaJIT read list[-2^31] for the second (src/compat.h)
    {"regress-slice-past-int", prog(0, o.NEWTABLE, o.DICTSTR, 1, o.SPECIALINT, 14,
      o.SET, 2, 0, 1, o.SPECIALINT, 15, o.SET, 3, 0, 2, o.SLICE, 3, 131, 2)},
  }
end

return H
