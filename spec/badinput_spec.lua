-- spec/badinput_spec.lua: a bad-input sweep over the whole public API
-- (API.md): every constructor, method and module function, called with the
-- wrong type for each argument, too few and too many arguments, negative,
-- zero, huge, fractional and NaN numbers, with `.` instead of `:` (self
-- missing or of the wrong kind), and on objects in a state that makes the
-- call a mistake (closed, terminated, finished, started twice, made by a
-- thread that has ended, ...).  docs/badinput.md sums it up.
--
-- Every case must either return normally, when the input is legal by API.md
-- and Python's semantics (a zero timeout, `nil` as a queue item), or raise a
-- clear error: a string that names the argument (`bad argument #2 to 'put'
-- (...)`, or the option key) or the mistake (`release unlocked lock`), or
-- one of concur's error values.  Never a crash, never a hang.  A message
-- that shows the implementation instead (`attempt to index a nil value`, a
-- metamethod's or an internal function's name, a position inside concur.lua
-- for a mistake that is the caller's) is a finding.  The findings known
-- today are listed in FINDINGS: their cases are pending, not failing, and
-- pass once fixed.  Any other finding fails.
--
-- How the calls are made.  Each call is compiled from source (`o:put(...)`,
-- `o.put(...)`, `o.name = v`) in a chunk named "badinput", and never as a
-- tail call, so that Lua names the function in its messages exactly as it
-- does in a user's program; an error position must point there (or at this
-- file, for the hand-written cases).
--
-- Nothing here blocks for ever.  Objects are put in a state where a legal
-- call returns at once (an unlocked Lock, a set Event, a non-empty Queue, a
-- Barrier of one party, a finished Thread, a Pipe with a message waiting),
-- so a bad timeout accepted by mistake shows as "accepted", not as a hang.
-- The bad timeouts are also tried where a call would wait (a held Lock, an
-- empty Queue, ...): those run in a daemon concur.Thread joined with a 5 s
-- limit.  Legal waits that only a notify ends (Condition:wait with a long
-- timeout) are notified by the main thread.  Not called at all:
-- concur.sleep with a legal length (it sleeps), q:get() on an
-- empty queue and the like (correct behaviour: they wait for ever).
--
-- BADINPUT_REPORT=file writes one tab-separated line per case (group,
-- category, case, expectation, verdict, message, finding) for
-- docs/badinput.md.
local concur = require "concur"
local support = require "support"
local unpack = support.unpack   -- cross to threads with the functions that use them

local pack = support.pack
local fmt = string.format

-- Findings known today: an id, Lua patterns on "Group:case title", a one-line
-- summary, and what the message should be (API.md's conventions, Python).
-- docs/badinput.md lists them with a reproducer each.  A finding fixed
-- leaves this list: its cases are then asserted like any other.
local FINDINGS = {
  {"F8", {"^Barrier:concur%.Barrier%(#1 parties = [m2]"},
    "Barrier(math.maxinteger): 'parties must be at least 1'",
    "Barrier(math.maxinteger) and Barrier(2^53) say 'parties must be at least 1'; should say the "
    .. "number is too large: \"parties must be from 1 to 2147483647\""},
}

-- Samples ------------------------------------------------------------------

local CO = coroutine.create(function() end)
local function FN() end
local CALLABLE = setmetatable({}, {__call = function() end})
local function IDENT(...) return ... end
local function TRUE() return true end
local WRONG = concur.Event()          -- a concur object of the wrong kind
local WRONG_FOR_EVENT = concur.Lock()

local function words(s)
  local t = {}
  for w in (s or ""):gmatch("%S+") do t[w] = true end
  return t
end

-- {label, value}; "obj" stands for a concur object of the wrong kind; a
-- table is made anew for each use (a `.` call may write into its self).
local SAMPLES = {
  {"nil", nil}, {"true", true}, {"false", false}, {"str", "x"}, {"numstr", "0"},
  {"tbl", function() return {} end, fresh = true},
  {"fn", FN},
  {"callable", function() return setmetatable({}, getmetatable(CALLABLE)) end, fresh = true},
  {"co", CO}, {"ud", io.stdout}, {"obj"},
  {"-1", -1}, {"-0.5", -0.5}, {"0", 0}, {"0.5", 0.5}, {"1", 1}, {"huge", math.huge},
  {"-huge", -math.huge}, {"maxint", math.maxinteger}, {"minint", math.mininteger},
  {"2^53", 2^53}, {"nan", 0/0},
}
-- A parameter that is not a number gets only these numbers.
local FEW_NUMBERS = words("-1 0 0.5 nan")
-- Wrong selves for a method called with `.`: none at all, then these.
local SELVES = {"nil", "1", "str", "tbl", "fn", "co", "ud", "obj"}

local NUMBERS = "-1 -0.5 0 0.5 1 huge -huge maxint minint 2^53 nan"

-- What a parameter accepts: labels that must return normally (ok), labels
-- that may either return or raise a clear error (either); the others must
-- raise.  `want` (optional): what the message must contain instead of the
-- usual "bad argument #N to 'name'".
local function kind(ok, either, extra)
  local k = {ok = words(ok), either = words(either), numeric = true}
  for key, v in pairs(extra or {}) do k[key] = v end
  return k
end

local K = {
  timeout   = kind("nil 0 0.5 1 huge", "numstr"),   -- maxint, 2^53: above concur.TIMEOUT_MAX
  bool      = kind("nil true false", "", {numeric = false}),
  item      = kind("nil true false str numstr tbl fn callable obj " .. NUMBERS, "",
                {required = true, numeric = false}),
  func      = kind("fn callable", "", {numeric = false}),
  func_opt  = kind("nil fn callable", "", {numeric = false}),
  func_only = kind("fn", "callable", {numeric = false}),  -- with(): a callable table: either
  list      = kind("tbl", "callable", {numeric = false}),
  list_opt  = kind("nil tbl", "callable", {numeric = false}),
  opts      = kind("nil tbl", "callable", {numeric = false}),
  name      = kind("nil str numstr " .. NUMBERS, "", {numeric = false}),
  name_req  = kind("str numstr " .. NUMBERS, "", {numeric = false}),
  daemon    = kind("nil true false", "", {numeric = false}),
  daemon_req = kind("true false", "", {numeric = false}),
  count     = kind("nil 1"),                     -- Semaphore:release(n)
  notify_n  = kind("nil 0 -1 1 maxint minint 2^53", "numstr"),
  sem_value = kind("nil 0 1", "numstr"),
  maxsize   = kind("nil 0 -1 1 minint tbl", "numstr callable"),
  maxsize_opt = kind("nil 0 -1 1 minint"),
  parties   = kind("1"),
  workers   = kind("nil 1 tbl", "callable"),
  workers_opt = kind("nil 1"),
  chunksize = kind("nil 1 maxint 2^53"),
  interval  = kind("0 0.5 1 huge"),
  bytes     = kind("str numstr", NUMBERS, {numeric = false}),
  offset    = kind("nil 0 1", "numstr"),
  maxlength = kind("nil 1 maxint 2^53", "numstr"),
  duplex    = kind("nil true false tbl", "callable", {numeric = false}),
  seconds   = kind("0", "numstr"),
  -- Shared state: an init of Value, an integer to add, a Dict key, any Lua value.
  init      = kind("true false " .. NUMBERS, "", {required = true}),
  integer   = kind("-1 0 1 maxint minint 2^53"),
  index     = kind("1"),
  kind_name = kind("", "", {numeric = false, required = true}),
  size      = kind("0 1 tbl", "callable"),
  lock_opt  = kind("nil true false", "", {numeric = false}),
  key       = kind("true false str numstr -1 -0.5 0 0.5 1 huge -huge maxint minint 2^53", "",
                {required = true}),
  any       = kind("nil true false str numstr tbl fn callable co ud obj " .. NUMBERS, "",
                {numeric = false}),
}

-- Outcomes -------------------------------------------------------------------

-- The concur error value r is (a raise makes an object == it), or nil.
local function error_value(r)
  if type(r) ~= "table" then return nil end
  for _, n in ipairs({"Empty", "Full", "TimeoutError", "BrokenBarrierError", "ShutDown"}) do
    if r == concur[n] then return concur[n] end
  end
  return nil
end

-- Signs that a message shows the implementation rather than the mistake.
local INTERNAL = {
  {"attempt to ", "an internal Lua error ('attempt to ...')"},
  {"to '%?'", "a function Lua could not name"},
  {"to 'newindex'", "a metamethod's name"},
  {"to 'index'", "a metamethod's name"},
  {"to '__", "a metamethod's name"},
  {"to 'thread_", "an internal function's name"},
  {"to 'process_", "an internal function's name"},
  {"table index is", "an internal Lua error"},
  {"stack overflow", "a stack overflow"},
}

-- The first line of msg if it shows the implementation: the reason, else nil.
local function unclear(msg)
  local line = msg:match("^[^\n]*")
  for _, p in ipairs(INTERNAL) do
    if line:find(p[1]) then return p[2] end
  end
  if line:find("no integer representation") and not line:find("bad argument") then
    return "'number has no integer representation' without naming the argument"
  end
  local where, rest = line:match("^([^:]*):%d+: (.*)$")
  if where and not where:find("badinput") then
    return "a position inside the library (" .. where .. ") for the caller's mistake"
  end
  rest = rest or line
  if rest:find("[%w_]+%.lua:%d+:") or rest:find("^concur:%d+:") then
    return "a second position inside the library"
  end
  return nil
end

-- The verdict on one call: "pass", or a reason it is not.
--   c.expect: "ok", "error" or "either"
--   c.want: list of alternatives, each a list of plain strings that must
--   all be in the message (when it raises)
--   c.value: a concur error value the call must raise instead
local function judge(c, ok, r)
  if ok then
    if c.expect == "error" then return "accepted: returned normally where an error was expected" end
    return "pass"
  end
  local msg
  if error_value(r) then
    msg = tostring(r)
    if c.value == error_value(r) or c.expect ~= "ok" and c.value == nil and c.allow_values then return "pass", msg end
    if c.value ~= nil then return "raised " .. msg .. ", wanted " .. tostring(c.value), msg end
  elseif type(r) ~= "string" then
    return "the error is a " .. type(r) .. ", not a message", tostring(r)
  else
    msg = r
  end
  if c.expect == "ok" then return "rejected a legal call", msg end
  if c.value ~= nil then return "raised " .. msg .. ", wanted " .. tostring(c.value), msg end
  local why = unclear(msg)
  if why then return "unclear message: " .. why, msg end
  if c.want then
    for _, alt in ipairs(c.want) do
      local all = true
      for _, s in ipairs(alt) do
        if not msg:find(s, 1, true) then all = false; break end
      end
      if all then return "pass", msg end
    end
    local wanted = {}
    for _, alt in ipairs(c.want) do wanted[#wanted + 1] = table.concat(alt, "' and '") end
    return "the message does not name the argument or the mistake (wanted '"
      .. table.concat(wanted, "' or '") .. "')", msg
  end
  return "pass", msg
end

-- Report ---------------------------------------------------------------------

local REPORT = {}
local COUNTS = {cases = 0, tests = 0}

-- The finding a failing case is known as, or nil.
local function known_finding(title)
  for _, f in ipairs(FINDINGS) do
    for _, pattern in ipairs(f[2]) do
      if title:find(pattern) then return f end
    end
  end
end

-- One test runs a batch of cases, each {c, run}, run() -> ok, result (as
-- pcall returns them).  It fails if a case fails in a way FINDINGS does not
-- list; it is pending if every failure is a known finding.
local function test(title, cases)
  COUNTS.tests = COUNTS.tests + 1
  it(title, function()
    local unknown, known, notes = {}, {}, {}
    for _, x in ipairs(cases) do
      local c = x.c
      local ok, r = x.run()
      local verdict, msg = judge(c, ok, r)
      local f = verdict ~= "pass" and known_finding(c.group .. ":" .. c.title)
      REPORT[#REPORT + 1] = {c.group, c.cat or "state", c.title, c.expect, verdict,
        msg and msg:match("^[^\n]*") or (ok and "(returned)" or ""), f and f[1] or ""}
      if verdict ~= "pass" then
        local got = msg and msg:match("^[^\n]*") or "(returned normally)"
        if f then
          if not notes[f] then notes[f] = {}; notes[#notes + 1] = f end
          table.insert(notes[f], fmt("%s -> %s", c.title, got))
          known[#known + 1] = f
        else
          unknown[#unknown + 1] = fmt("%s: %s\n    got: %s", c.title, verdict, got)
        end
      end
    end
    if #unknown > 0 then
      error(fmt("%d of %d cases failed:\n  %s", #unknown, #cases, table.concat(unknown, "\n  ")), 0)
    end
    if #known > 0 then
      local out = {}
      for _, f in ipairs(notes) do
        out[#out + 1] = fmt("%s (%d of %d cases): %s\n  e.g. %s", f[1], #notes[f], #cases, f[3],
          notes[f][1])
      end
      pending(table.concat(out, "\n"))
    end
  end)
end

-- Cases made inside batch(title, fn) share one test; any other is a test.
local collector
local function case(c, run)
  COUNTS.cases = COUNTS.cases + 1
  if collector then
    collector[#collector + 1] = {c = c, run = run}
  else
    test(c.title, {{c = c, run = run}})
  end
end

local function batch(title, fn)
  local outer = collector
  collector = {}
  fn()
  local list = collector
  collector = outer
  if #list > 0 then test(title, list) end
end

-- Inside with_selves(fn), the `.`-call cases of every method generate()
-- makes go into one test, after the others.
local self_collector
local function with_selves(fn)
  self_collector = {}
  fn()
  local list = self_collector
  self_collector = nil
  if #list > 0 then test("every method called with '.' and self missing or of the wrong kind", list) end
end

local function describe_object(name, fn)
  describe(name, function() with_selves(fn) end)
end

-- Calls compiled from source, so that Lua names the function as in a user's
-- program; never a tail call (that would lose the name).
local compiled = {}
local function chunk(src, stmt)
  local key = (stmt and "S" or "E") .. src
  local f = compiled[key]
  if not f then
    local body = stmt and (src .. "; return table.pack()")
      or ("local r = table.pack(" .. src .. "); return r")
    f = assert(support.load("local o, a = ...; " .. body, "=badinput"))
    compiled[key] = f
  end
  return f
end

-- Calls src (with o and the argument pack a) and cleans up after: after(o,
-- ok, result).
local function call(src, o, a, after, stmt)
  local ok, r = pcall(chunk(src, stmt), o, a)
  if after then pcall(after, o, ok, r) end
  return ok, r
end

local ARGS = "table.unpack(a, 1, a.n)"

-- Value of a sample in the context of entry e.
local function sample_value(e, s)
  if s[1] == "obj" then return e.other and e.other() or WRONG end
  if s.fresh then return s[2]() end
  return s[2]
end

local function is_number_label(label) return words(NUMBERS)[label] ~= nil end

local function sample(label)
  for _, s in ipairs(SAMPLES) do
    if s[1] == label then return s end
  end
  error("no sample " .. label)
end

local function args_of(base, n)
  local a = {n = math.max(base.n or #base, n or 0)}
  for i = 1, a.n do a[i] = base[i] end
  return a
end

local function expectation(k, label)
  if k.ok[label] then return "ok" end
  if k.either[label] then return "either" end
  return "error"
end

-- The generated cases of one entry --------------------------------------------
--
-- e = {
--   group,                 describe() it belongs to
--   var,                   how the receiver is named in titles ("q")
--   name,                  method or function name, as called
--   fname                  the name messages give (default: name)
--   ctor = true            called on the module: concur.NAME(...)
--   recv()                 the receiver, fresh for each case (methods)
--   proto()                an object to take the method from for `.` calls
--                          (default: recv())
--   params = {{name, kind, over = {label = expect}, skip = "labels",
--              want = {...}}, ...}
--   opts = true            params are keys of an options table (argument 1),
--   optbase = {...}        which starts as a copy of optbase
--   base = {...}           legal arguments the cases start from
--   after(o, ok, r)        cleanup
--   other()                the wrong-kind object for the "obj" sample
--   colon = "error"        concur:NAME(...) must raise (default: either)
--   hang_probe(o, a)       for the samples a param lists in `hang`: a call
--                          that would wait for ever, made another way
-- }

local function bad_arg(i, fname) return fmt("bad argument #%d to '%s'", i, fname) end

local function generate(e)
  local group, fname = e.group, e.fname or e.name
  local base = e.base or {}
  local src_call = e.ctor and fmt("o.%s(%s)", e.name, ARGS) or fmt("o:%s(%s)", e.name, ARGS)
  local shown = e.ctor and ("concur." .. e.name) or (e.var .. ":" .. e.name)
  local recv = e.ctor and function() return concur end or e.recv

  local function add(title, cat, expect, a, want, probe)
    local c = {group = group, cat = cat, title = title, expect = expect, want = want}
    case(c, function()
      local o = recv()
      if probe then return probe(o, a) end
      return call(src_call, o, a, e.after)
    end)
  end

  local opened = collector == nil
  if opened then collector = {} end   -- the legal call, the counts, ':': one test
  -- The legal call.
  add(fmt("%s(base)", shown), "legal", "ok", args_of(base))

  local function per_param(i, p)
    local pname, k = p[1], K[p[2]]
    assert(k, p[2])
    local skip, hang = words(p.skip), words(p.hang)
    for _, s in ipairs(SAMPLES) do
      local label = s[1]
      if not skip[label] and (k.numeric or not is_number_label(label) or FEW_NUMBERS[label]) then
        local expect = p.over and p.over[label] or expectation(k, label)
        local a, title, want
        if e.opts then
          local opts = {}
          for key, v in pairs(e.optbase or {}) do opts[key] = v end
          opts[pname] = sample_value(e, s)
          a = {opts, n = 1}
          title = fmt("%s{#1 %s = %s}", shown, pname, label)
          want = p.want or {{bad_arg(1, fname), pname}}
        else
          a = args_of(base, i)
          a[i] = sample_value(e, s)
          title = fmt("%s(#%d %s = %s)", shown, i, pname, label)
          want = p.want or {{bad_arg(i, fname)}}
          if p[2] == "item" and (label == "co" or label == "ud") then
            want = {{"bad value", label == "co" and "coroutine" or "userdata"}}
          end
        end
        add(title, "argument", expect, a, want, hang[label] and e.hang_probe)
      end
    end
  end

  -- Too few: no arguments at all, when one is required.
  local required
  for i, p in ipairs(e.params or {}) do
    local k = K[p[2]]
    if not e.opts and (not k.ok["nil"] or k.required) and not required then required = i end
  end
  if required then
    add(fmt("%s() without arguments", shown), "count", "error", {n = 0},
      e.params[required].want or {{bad_arg(required, fname)}})
  end

  -- Too many: Lua's idiom ignores them, Python raises; either, never a crash.
  local extra = args_of(base, #(e.params or {}))
  extra.n = extra.n + 3
  extra[extra.n - 2], extra[extra.n - 1], extra[extra.n] = "extra", {}, CO
  add(fmt("%s(..., 3 extra arguments)", shown), "count", "either", extra)

  if e.ctor then
    -- concur:NAME(...): ':' by mistake, the module becomes argument 1.
    case({group = group, cat = "self", title = fmt("concur:%s(base)", e.name), expect = e.colon or "either"},
      function() return call(fmt("o:%s(%s)", e.name, ARGS), concur, args_of(base), e.after) end)
  end
  if opened then
    local list = collector
    collector = nil
    test(fmt("%s(...) legal, too few and too many arguments%s", shown,
      e.ctor and ", ':' instead of '.'" or ""), list)
  end

  -- Each argument, each sample: a test per argument.
  for i, p in ipairs(e.params or {}) do
    local label = e.opts and fmt("{%s = ...}", p[1]) or fmt("#%d %s", i, p[1])
    batch(fmt("%s(%s) = each kind of value", shown, label), function() per_param(i, p) end)
  end
  if e.ctor then return end

  -- `.` instead of `:`: self missing, then of the wrong kind; one test.
  local function wrong_selves()
    local src_dot = fmt("o.%s(%s)", e.name, ARGS)
    local want = {{bad_arg(1, fname)}, {fmt("calling '%s' on bad self", fname)}}
    local proto = e.proto or e.recv
    -- Nothing at all: the message must not name a value that was not given.
    local want_none = {{bad_arg(1, fname), "no value"}, {bad_arg(1, fname), "got nil"},
      {bad_arg(1, fname), "value expected"}, {fmt("calling '%s' on bad self", fname)}}
    case({group = group, cat = "self", title = fmt("%s.%s self=none", e.var, e.name),
        expect = "error", want = want_none},
      function() return call(src_dot, proto(), {n = 0}) end)
    for _, label in ipairs(SELVES) do
      local a = {sample_value(e, sample(label)), n = 1 + (base.n or #base)}
      for i = 2, a.n do a[i] = base[i - 1] end
      case({group = group, cat = "self", title = fmt("%s.%s self=%s", e.var, e.name, label),
          expect = "error", want = want},
        function() return call(src_dot, proto(), a) end)
    end
  end
  if self_collector then
    local outer = collector
    collector = self_collector
    wrong_selves()
    collector = outer
  else
    batch(fmt("%s.%s(...) with self missing or of the wrong kind", e.var, e.name), wrong_selves)
  end
end

-- Hand-written cases: a title, how it must end, and a function that makes
-- the call.  want: alternatives, as above.
local function misuse(group, title, expect, fn, want, value)
  case({group = group, cat = "state", title = title, expect = expect, want = want, value = value},
    function() return pcall(fn) end)
end

-- misuse() for a case of Lua 5.4's <close>: fn runs that part with
-- support.lua54.  Where there is no <close>, a test of its own, pending.
local function misuse54(group, title, expect, fn, want, value)
  if support.has_close then return misuse(group, title, expect, fn, want, value) end
  assert(not collector, "a <close> case is a test of its own, not in a batch")
  it(title, function() pending(support.NEEDS_CLOSE) end)
end

local function W(...) return {{...}} end

-- Calls that may wait: in a daemon thread, joined with a 5 s limit.  src is
-- compiled in the thread with o and a (the timeout) as locals.
local function blocking_call(src, o, a)
  local f = support.load("local o, a = ...; " .. src, "=badinput")
  local ok, e = pcall(f, o, a)
  if ok then return true end
  local concur = require "concur"
  for _, n in ipairs({"Empty", "Full", "TimeoutError", "BrokenBarrierError", "ShutDown"}) do
    if e == concur[n] then return false, n end
  end
  return false, tostring(e), type(e)
end

local stuck = {}   -- threads that did not end in time (the process ends anyway: daemons)

local function guarded(src, o, a)
  local t = concur.Thread{target = blocking_call, args = pack(src, o, a), daemon = true,
    name = "badinput-guard"}
  t:start()
  if not t:join(5) then
    stuck[#stuck + 1] = t
    return false, "HANG: still blocked after 5 s (a stuck daemon thread is left behind)"
  end
  local ok, e, etype = t:result()
  if ok then return true end
  if concur[e] ~= nil and error_value(concur[e]) then return false, concur[e] end
  if etype ~= "string" then return false, {e} end
  return false, e
end

-- Shared objects (made once, when first needed) -------------------------------

local function once(make)
  local v
  return function()
    if v == nil then v = make() end
    return v
  end
end

local finished_thread = once(function()
  local t = concur.Thread{target = function() return 1, 2 end, name = "badinput-finished"}
  t:start()
  t:join()
  return t
end)

local gate = concur.Event()   -- the running thread waits on it
local running_thread = once(function()
  local t = concur.Thread{target = function(ev) ev:wait() end, args = {gate}, daemon = true,
    name = "badinput-running"}
  t:start()
  return t
end)

local finished_process = once(function()
  local p = concur.Process{target = function() end, name = "badinput-process"}
  p:start()
  p:join()
  return p
end)

-- A thread that made objects, used some of them, returned them and ended.
local leftovers_thread = once(function()
  local t = concur.Thread{name = "badinput-maker", target = function()
    local concur = require "concur"
    local l, rl = concur.Lock(), concur.RLock()
    l:acquire()
    rl:acquire()
    local a, b = concur.Pipe()
    local q = concur.Queue(1)
    q:put("held")
    return {lock = l, rlock = rl, a = a, b = b, q = q, unstarted = concur.Thread{},
      me = concur.current_thread(), event = concur.Event(),
      sem = concur.BoundedSemaphore(1)}
  end}
  t:start()
  t:join()
  return t
end)
-- A fresh copy of what the thread returned (result() decodes anew).
local function leftovers() return (leftovers_thread():result()) end

local pools = {}
local function pool_of(threads)
  local key = threads and "tp" or "pool"
  if not pools[key] then
    pools[key] = threads and concur.ThreadPool(1) or concur.Pool(1)
  end
  return pools[key]
end

local function new_pool(threads, state)
  local p = threads and concur.ThreadPool(1) or concur.Pool(1)
  if state == "closed" then p:close(); p:join()
  elseif state == "terminated" then p:terminate() end
  return p
end

local function terminate_after(_, ok, r)
  if ok and type(r[1]) == "table" and r[1].terminate then r[1]:terminate() end
end

-- Pipe ends are closed after each case (a case makes a socketpair: fds are
-- not left for the collector).  The peer is kept in a weak table.
local peers = setmetatable({}, {__mode = "k"})
local function pipe_end(which, message)
  local a, b = concur.Pipe()
  if which == "a" then
    if message ~= nil then b:send(message) end
    peers[a] = b
    return a
  end
  if message ~= nil then a:send(message) end
  peers[b] = a
  return b
end
local shared_end = once(function() return (concur.Pipe()) end)
local function close_both(o)
  pcall(o.close, o)
  local p = peers[o]
  if p then pcall(p.close, p) end
end

-- The sweep ------------------------------------------------------------------

describe("bad input:", function()

  teardown(function()
    gate:set()
    for _, k in ipairs({"pool", "tp"}) do
      if pools[k] then pcall(pools[k].terminate, pools[k]) end
    end
    local path = os.getenv("BADINPUT_REPORT")
    if path then
      local out = assert(io.open(path, "w"))
      for _, r in ipairs(REPORT) do
        out:write(table.concat({r[1], r[2], r[3], r[4], r[5], (r[6]:gsub("[\t\n]", " ")), r[7]}, "\t"),
          "\n")
      end
      out:close()
      io.stderr:write(fmt("badinput: %d cases in %d tests, report in %s\n", COUNTS.cases,
        COUNTS.tests, path))
    end
  end)

  describe("module functions", function()
    local G = "module functions"
    for _, name in ipairs({"current_thread", "main_thread", "get_ident", "get_native_id", "active_count",
        "enumerate", "time", "cpu_count", "getpid", "active_children", "current_process",
        "parent_process", "currentThread", "activeCount"}) do
      generate{group = G, ctor = true, name = name}
    end
    generate{group = G, ctor = true, name = "sleep", base = {0},
      params = {{"seconds", "seconds", skip = "0.5 1"}}}
    -- concur.sleep(0.5) and (1) are not called: they sleep.  Above
    -- concur.TIMEOUT_MAX (math.huge too) is an error, as Python's OverflowError.
    misuse(G, "concur.sleep(1e-3) returns", "ok", function() concur.sleep(1e-3) end)
  end)

  describe("error values", function()
    local G = "error values"
    batch("each error value: tostring, assignment, setmetatable", function()
      for _, n in ipairs({"Empty", "Full", "TimeoutError", "BrokenBarrierError", "ShutDown"}) do
        local e = concur[n]
        misuse(G, fmt("tostring(concur.%s)", n), "ok", function() assert(tostring(e) == "concur." .. n) end)
        misuse(G, fmt("concur.%s.name = 'x'", n), "error", function()
          local ok, err = pcall(function() e.name = "x" end)
          if rawget(e, "name") == "x" then
            rawset(e, "name", n)   -- accepted: put back, every other case compares with it
          end
          if not ok then error(err, 0) end
        end, W("read-only"))
        misuse(G, fmt("concur.%s.other = 1", n), "error", function() e.other = 1 end, W("read-only"))
        misuse(G, fmt("setmetatable(concur.%s, {})", n), "error",
          function() setmetatable(e, {}) end, W("protected metatable"))
      end
    end)
  end)

  -- Synchronization ----------------------------------------------------------

  -- Lock, RLock and Condition: acquire, release, locked, with, guard.
  local function lock_like(group, var, make, held)
    generate{group = group, var = var, name = "acquire", recv = make,
      params = {{"blocking", "bool"}, {"timeout", "timeout"}}}
    generate{group = group, var = var, name = "release", recv = held}
    generate{group = group, var = var, name = "locked", recv = make}
    generate{group = group, var = var, name = "with", recv = make, base = {FN},
      params = {{"fn", "func_only"}}}
    generate{group = group, var = var, name = "guard", recv = make}
    misuse(group, var .. ":acquire(false, 1): a timeout without blocking", "error",
      function() make():acquire(false, 1) end, W("can't specify a timeout for a non-blocking call"))
    misuse(group, var .. ":acquire(false, 0): a timeout without blocking", "error",
      function() make():acquire(false, 0) end, W("can't specify a timeout for a non-blocking call"))
    misuse(group, var .. ":acquire(false) when this thread holds it", "ok", function()
      local o = held()
      assert(o:acquire(false) == (group == "RLock" or group == "Condition"))
    end)
    misuse(group, var .. ":with(fn) where fn raises: released, error passed on", "error", function()
      local o = make()
      local ok, err = pcall(o.with, o, function() error("boom from fn", 0) end)
      assert(not ok)
      assert(o:acquire(false), "still held after with")
      error(err, 0)
    end, W("boom from fn"))
  end

  -- Lock and RLock: the same misuses, each type's own message for a release
  -- of a lock not held.
  for _, kind in ipairs({{"Lock", "l", "release unlocked lock"},
                         {"RLock", "rl", "cannot release un-acquired lock"}}) do
    local G, var, unheld = unpack(kind)
    describe_object(G, function()
      local function held() local l = concur[G](); l:acquire(); return l end
      generate{group = G, ctor = true, name = G}
      lock_like(G, var, concur[G], held)
      misuse(G, var .. ":release() not held", "error", function() concur[G]():release() end,
        W(unheld))
      misuse(G, var .. ":release() once too often", "error", function()
        local l = held()
        l:release()
        l:release()
      end, W(unheld))
      misuse54(G, "guard released twice by <close> and by hand", "error", function()
        local l = concur[G]()
        support.lua54([[
          local l = ...
          do local _ <close> = l:guard() end
        ]], l)
        l:release()
      end, W(unheld))
    end)
  end

  describe_object("Condition", function()
    local G = "Condition"
    local function held() local c = concur.Condition(); c:acquire(); return c end
    generate{group = G, ctor = true, name = "Condition", params = {{"lock", "func_opt",
      over = {fn = "error", callable = "error"}}},
      other = concur.Semaphore}
    for _, what in ipairs({"Lock", "RLock"}) do
      misuse(G, fmt("concur.Condition(concur.%s())", what), "ok",
        function() concur.Condition(concur[what]()) end)
    end
    for _, what in ipairs({"Semaphore", "BoundedSemaphore", "Event", "Condition", "Queue"}) do
      misuse(G, fmt("concur.Condition(concur.%s())", what), "error",
        function() local x = concur.Condition(concur[what]()) end, W(bad_arg(1, "Condition")))
    end
    misuse(G, "concur.Condition(barrier)", "error",
      function() local x = concur.Condition(concur.Barrier(1)) end, W(bad_arg(1, "Condition")))
    misuse(G, "concur.Condition(pipe end)", "error",
      function() local x = concur.Condition((concur.Pipe())) end, W(bad_arg(1, "Condition")))
    lock_like(G, "c", concur.Condition, held)
    -- wait: the legal waits that only a notify ends are in "waits" below.
    generate{group = G, var = "c", name = "wait", recv = held, base = {0},
      params = {{"timeout", "timeout", skip = "nil 0.5 1 huge maxint 2^53"}}}
    generate{group = G, var = "c", name = "wait_for", recv = held, base = {TRUE, 0},
      params = {{"predicate", "func"}, {"timeout", "timeout"}}}
    generate{group = G, var = "c", name = "notify", recv = held, params = {{"n", "notify_n"}}}
    generate{group = G, var = "c", name = "notify_all", recv = held}
    generate{group = G, var = "c", name = "notifyAll", recv = held}
    misuse(G, "c:wait() not held", "error", function() concur.Condition():wait() end,
      W("cannot wait on un-acquired lock"))
    misuse(G, "c:wait(0) not held", "error", function() concur.Condition():wait(0) end,
      W("cannot wait on un-acquired lock"))
    misuse(G, "c:wait_for(false pred) not held", "error",
      function() concur.Condition():wait_for(function() return false end, 0.01) end,
      W("cannot wait on un-acquired lock"))
    misuse(G, "c:wait_for(false pred, 0) not held: false at once, as Python", "ok", function()
      assert(concur.Condition():wait_for(function() return false end, 0) == false)
    end)
    misuse(G, "c:wait_for(pred) where pred raises", "error", function()
      held():wait_for(function() error("pred failed", 0) end, 0)
    end, W("pred failed"))
    misuse(G, "c:notify() not held", "error", function() concur.Condition():notify() end,
      W("cannot notify on un-acquired lock"))
    misuse(G, "c:notify_all() not held", "error", function() concur.Condition():notify_all() end,
      W("cannot notify on un-acquired lock"))
    misuse(G, "c:notify() with a Lock held by nobody", "error",
      function() concur.Condition(concur.Lock()):notify() end, W("cannot notify on un-acquired lock"))
  end)

  describe_object("Semaphore", function()
    for _, G in ipairs({"Semaphore", "BoundedSemaphore"}) do
      local var = G == "Semaphore" and "s" or "bs"
      local function make() return concur[G]() end
      local function taken() local s = concur[G](); s:acquire(); return s end
      generate{group = G, ctor = true, name = G, params = {{"value", "sem_value"}}}
      generate{group = G, var = var, name = "acquire", recv = make,
        params = {{"blocking", "bool"}, {"timeout", "timeout"}}}
      local too_many = {{bad_arg(1, "release")}, {"Semaphore value too large"},
        {"Semaphore released too many times"}}
      generate{group = G, var = var, name = "release", recv = taken,
        params = {{"n", "count", want = too_many}}}
      generate{group = G, var = var, name = "get_value", recv = make}
      generate{group = G, var = var, name = "with", recv = make, base = {FN},
        params = {{"fn", "func_only"}}}
      generate{group = G, var = var, name = "guard", recv = make}
      misuse(G, var .. ":acquire(false, 1): a timeout without blocking", "error",
        function() make():acquire(false, 1) end, W("can't specify a timeout for a non-blocking call"))
      misuse(G, var .. ":acquire(false) at zero", "ok",
        function() assert(taken():acquire(false) == false) end)
      misuse(G, var .. ":release(n) past 2^32", "error",
        function() concur[G](0):release(math.maxinteger) end, {too_many[G == "Semaphore" and 2 or 3]})
      if G == "BoundedSemaphore" then
        misuse(G, "bs:release() above the initial value", "error",
          function() concur.BoundedSemaphore(2):release() end, W("Semaphore released too many times"))
        misuse(G, "bs:release(2) above the initial value", "error", function()
          local s = concur.BoundedSemaphore(2)
          s:acquire()
          s:release(2)
        end, W("Semaphore released too many times"))
      end
    end
  end)

  describe_object("Event", function()
    local G = "Event"
    local function set() local e = concur.Event(); e:set(); return e end
    local other = function() return WRONG_FOR_EVENT end
    generate{group = G, ctor = true, name = "Event"}
    for _, m in ipairs({"set", "clear", "is_set", "isSet"}) do
      generate{group = G, var = "e", name = m, recv = concur.Event, other = other}
    end
    generate{group = G, var = "e", name = "wait", recv = set, other = other,
      params = {{"timeout", "timeout"}}}
    misuse(G, "e:wait(0) unset: false", "ok", function() assert(concur.Event():wait(0) == false) end)
  end)

  describe_object("Barrier", function()
    local G = "Barrier"
    local function one() return concur.Barrier(1) end
    generate{group = G, ctor = true, name = "Barrier", base = {1},
      params = {{"parties", "parties"}, {"action", "func_opt"}, {"timeout", "timeout"}}}
    generate{group = G, var = "b", name = "wait", recv = one, params = {{"timeout", "timeout"}}}
    generate{group = G, var = "b", name = "abort", recv = one}
    generate{group = G, var = "b", name = "reset", recv = one}
    for _, f in ipairs({"parties", "n_waiting", "broken"}) do
      misuse(G, "read b." .. f, "ok", function() assert(one()[f] ~= nil) end)
      misuse(G, fmt("set b.%s = 3", f), "error", function() one()[f] = 3 end,
        {{"read-only"}, {f}})
    end
    misuse(G, "b:wait() on an aborted barrier", "error", function()
      local b = concur.Barrier(2)
      b:abort()
      b:wait(0)
    end, nil, concur.BrokenBarrierError)
    misuse(G, "b:wait(0) alone at a barrier of two: breaks it", "error",
      function() concur.Barrier(2):wait(0) end, nil, concur.BrokenBarrierError)
    misuse(G, "barrier whose action raises: the error reaches the caller", "error",
      function() concur.Barrier(1, function() error("action failed", 0) end):wait() end,
      W("action failed"))
    misuse(G, "concur.Barrier(1, action with a coroutine upvalue)", "error",
      function() local x = concur.Barrier(1, function() return CO end) end,
      W(bad_arg(2, "Barrier"), "coroutine"))
  end)

  describe_object("Timer", function()
    local G = "Timer"
    local function fresh() return concur.Timer(0, FN) end
    generate{group = G, ctor = true, name = "Timer", base = {0, FN},
      params = {{"interval", "interval"}, {"fn", "func"}, {"args", "list_opt"}}}
    generate{group = G, var = "tm", name = "cancel", recv = fresh}
    generate{group = G, var = "tm", name = "start", recv = fresh,
      after = function(o) o:cancel(); o:join() end}
    for _, m in ipairs({"getName", "isDaemon", "run"}) do
      generate{group = G, var = "tm", name = m, recv = fresh}
    end
    generate{group = G, var = "tm", name = "setName", recv = fresh, base = {"x"},
      params = {{"name", "name_req"}}}
    generate{group = G, var = "tm", name = "setDaemon", recv = fresh, base = {true},
      params = {{"daemonic", "daemon_req"}}}
    misuse(G, "tm:cancel() before start, then start: fn never runs", "ok", function()
      local ran = concur.Event()
      local tm = concur.Timer(0, function(e) e:set() end, {ran})
      tm:cancel()
      tm:start()
      tm:join()
      assert(not ran:is_set())
    end)
    misuse(G, "tm:start() twice", "error", function()
      local tm = concur.Timer(0, FN)
      tm:start()
      tm:join()
      tm:start()
    end, W("threads can only be started once"))
    misuse(G, "tm:join() before start", "error", function() fresh():join() end,
      W("cannot join thread before it is started"))
    misuse(G, "concur.Timer{interval = 1, fn = f}: options table", "error",
      function() local x = concur.Timer{interval = 1, fn = FN} end, W(bad_arg(1, "Timer")))
    misuse(G, "Timer with an argument that cannot cross: error at start", "error", function()
      local tm = concur.Timer(0, FN, {CO})
      tm:start()
    end, W("bad value at", "coroutine"))
  end)

  -- Threads and processes -----------------------------------------------------

  local function runnable(G, var, cls, fresh, finished, opts)
    generate{group = G, ctor = true, name = G, params = {{"options", "opts"}}}
    generate{group = G, ctor = true, name = G, opts = true, optbase = {},
      params = {{"target", "func_opt"}, {"args", "list_opt"}, {"name", "name"},
        {"daemon", "daemon"}}}
    misuse(G, fmt("concur.%s{targt = f}: unknown option", G), "error",
      function() local x = cls{targt = FN} end, W(bad_arg(1, G), "unknown option 'targt'"))
    misuse(G, fmt("concur.%s{[1] = f}: positional target", G), "error",
      function() local x = cls{FN} end, W(bad_arg(1, G), "unknown option"))
    misuse(G, fmt("concur.%s.extend(5)", G), "error", function() local x = cls.extend(5) end,
      W(bad_arg(1, "extend")))
    misuse(G, fmt("concur.%s.extend({})", G), "error", function() local x = cls.extend({}) end,
      W(bad_arg(1, "extend")))
    misuse(G, fmt("concur.%s:extend()(5): a subclass checks its options", G), "error",
      function() local x = cls:extend()(5) end, W(bad_arg(1, G)))
    generate{group = G, var = var, name = "is_alive", recv = finished}
    generate{group = G, var = var, name = "join", recv = finished,
      params = {{"timeout", "timeout"}}}
    for _, m in ipairs({"getName", "isDaemon"}) do
      generate{group = G, var = var, name = m, recv = fresh}
    end
    generate{group = G, var = var, name = "run", recv = fresh}
    generate{group = G, var = var, name = "setName", recv = fresh, base = {"x"},
      params = {{"name", "name_req"}}}
    generate{group = G, var = var, name = "setDaemon", recv = fresh, base = {true},
      params = {{"daemonic", "daemon_req"}}}
    for _, field in ipairs({{"name", K.name_req, "string"}, {"daemon", K.daemon_req, "boolean"}}) do
      batch(fmt("%s.%s = each kind of value", var, field[1]), function()
        for _, s in ipairs(SAMPLES) do
          local label = s[1]
          if not is_number_label(label) or FEW_NUMBERS[label] then
            case({group = G, cat = "argument", title = fmt("set %s.%s = %s", var, field[1], label),
                expect = field[2].ok[label] and "ok" or "error", want = {{field[1], field[3]}}},
              function()
                return call(fmt("o.%s = a[1]", field[1]), fresh(), {sample_value({}, s), n = 1}, nil, true)
              end)
          end
        end
      end)
    end
  end

  describe_object("Thread", function()
    local G = "Thread"
    local function fresh() return concur.Thread{} end
    runnable(G, "t", concur.Thread, fresh, finished_thread)
    generate{group = G, var = "t", name = "isAlive", recv = finished_thread}
    generate{group = G, var = "t", name = "result", recv = finished_thread,
      params = {{"timeout", "timeout"}}}
    generate{group = G, var = "t", name = "start", recv = fresh,
      after = function(o) pcall(o.join, o) end}
    misuse(G, "t:start() twice", "error", function()
      local t = fresh()
      t:start()
      t:join()
      t:start()
    end, W("threads can only be started once"))
    misuse(G, "t:start() while running", "error", function() running_thread():start() end,
      W("threads can only be started once"))
    misuse(G, "t:join() before start", "error", function() fresh():join() end,
      W("cannot join thread before it is started"))
    misuse(G, "t:join(0) before start", "error", function() fresh():join(0) end,
      W("cannot join thread before it is started"))
    misuse(G, "t:result() before start", "error", function() fresh():result() end,
      W("before it is started"))
    misuse(G, "t:is_alive() before start: false", "ok", function() assert(fresh():is_alive() == false) end)
    misuse(G, "t.ident before start: nil", "ok", function() assert(fresh().ident == nil) end)
    misuse(G, "t:join(0) while running: false", "ok",
      function() assert(running_thread():join(0) == false) end)
    misuse(G, "t.daemon = true while running", "error", function() running_thread().daemon = true end,
      W("cannot set daemon status of active thread"))
    misuse(G, "t.ident = 1", "error", function() fresh().ident = 1 end, W("read-only"))
    misuse(G, "t.native_id = 1", "error", function() fresh().native_id = 1 end, W("read-only"))
    misuse(G, "current_thread():join()", "error", function() concur.current_thread():join() end,
      W("cannot join current thread"))
    misuse(G, "current_thread():join(0)", "error", function() concur.current_thread():join(0) end,
      W("cannot join current thread"))
    misuse(G, "current_thread():result()", "error", function() concur.current_thread():result() end,
      W("current thread"))
    misuse(G, "current_thread():start()", "error", function() concur.current_thread():start() end,
      W("threads can only be started once"))
    misuse(G, "main_thread().daemon = true", "error", function() concur.main_thread().daemon = true end,
      W("cannot set daemon status of active thread"))
    for _, case in ipairs({{"itself", "current_thread", "join", "cannot join current thread"},
                           {"the main thread's result", "main_thread", "result",
                            "cannot wait for the result of the main thread"}}) do
      local whom, getter, method, message = unpack(case)
      misuse(G, "a thread waiting for " .. whom, "error", function()
        local t = concur.Thread{target = function(get, m)
          local ok, err = pcall(function() local h = require("concur")[get](); h[m](h, 0) end)
          return ok, err
        end, args = {getter, method}}
        t:start()
        local ok, err = t:result()
        assert(not ok)
        error(err, 0)
      end, W(message))
    end
    misuse(G, "t:start() with a coroutine in args", "error",
      function() concur.Thread{target = FN, args = {1, {cb = CO}}}:start() end,
      W("bad value at args[2].cb", "coroutine"))
    misuse(G, "t:start() with a file handle in args", "error",
      function() concur.Thread{target = FN, args = {io.stdout}}:start() end,
      W("bad value at args[1]", "userdata"))
    misuse(G, "t:start() with a target whose upvalue is a coroutine", "error",
      function() concur.Thread{target = function() return CO end}:start() end,
      W("bad value", "coroutine"))
    misuse(G, "t:start() failed on a bad value: not started, can start again", "ok", function()
      local t = concur.Thread{target = FN, args = {CO}}
      assert(not pcall(t.start, t))
      t.args = {1}
      t:start()
      t:join()
    end)
    misuse(G, "args with n = -1", "ok", function()
      local t = concur.Thread{target = FN, args = {n = -1}}
      t:start()
      t:join()
    end)
  end)

  describe_object("Process", function()
    local G = "Process"
    local function fresh() return concur.Process{} end
    runnable(G, "p", concur.Process, fresh, finished_process)
    generate{group = G, var = "p", name = "terminate", recv = finished_process}
    generate{group = G, var = "p", name = "kill", recv = finished_process}
    -- start forks: the legal call and the extra-arguments one only.
    generate{group = G, var = "p", name = "start", recv = fresh, proto = fresh,
      after = function(o) pcall(o.join, o) end}
    misuse(G, "p:start() twice", "error", function() finished_process():start() end,
      W("processes can only be started once"))
    misuse(G, "p:join() before start", "error", function() fresh():join() end,
      W("cannot join a process before it is started"))
    misuse(G, "p:terminate() before start", "error", function() fresh():terminate() end,
      W("cannot signal a process before it is started"))
    misuse(G, "p:kill() before start", "error", function() fresh():kill() end,
      W("cannot signal a process before it is started"))
    misuse(G, "p:is_alive() before start: false", "ok", function() assert(fresh():is_alive() == false) end)
    misuse(G, "p.exitcode before start: nil", "ok", function() assert(fresh().exitcode == nil) end)
    misuse(G, "p.exitcode after the end: 0", "ok", function() assert(finished_process().exitcode == 0) end)
    for _, f in ipairs({"pid", "exitcode", "ident"}) do
      misuse(G, fmt("p.%s = 1", f), "error", function() finished_process()[f] = 1 end, W("read-only"))
    end
    misuse(G, "p.daemon = true after start", "error", function() finished_process().daemon = true end,
      W("process has already started"))
    misuse(G, "current_process():join()", "error", function() concur.current_process():join() end,
      W("cannot join current process"))
    misuse(G, "current_process():start()", "error", function() concur.current_process():start() end,
      W("cannot start the current or parent process"))
    misuse(G, "current_process():terminate()", "error",
      function() concur.current_process():terminate() end, W("cannot signal the current"))
    misuse(G, "current_process():kill()", "error",
      function() concur.current_process():kill() end, W("cannot signal the current"))
    misuse(G, "parent_process() in the main process: nil", "ok",
      function() assert(concur.parent_process() == nil) end)
  end)

  -- Queues and pipes --------------------------------------------------------

  describe_object("Queue", function()
    local G = "Queue"
    local function with_item() local q = concur.Queue(); q:put("item"); return q end
    local function full() local q = concur.Queue(1); q:put("item"); return q end
    for _, name in ipairs({"Queue", "JoinableQueue"}) do
      generate{group = G, ctor = true, name = name, params = {{"maxsize", "maxsize"}},
        colon = "error"}
    end
    generate{group = G, ctor = true, name = "Queue", opts = true,
      params = {{"maxsize", "maxsize_opt", want = {{bad_arg(1, "Queue"), "maxsize"}}}}}
    misuse(G, "concur.Queue{maxsiz = 3}: unknown option", "error",
      function() local q = concur.Queue{maxsiz = 3} end, W(bad_arg(1, "Queue"), "maxsiz"))
    misuse(G, "concur.Queue{3}: a value without a key", "error",
      function() local q = concur.Queue{3} end, W(bad_arg(1, "Queue")))
    generate{group = G, var = "q", name = "put", recv = concur.Queue, base = {"x"},
      params = {{"item", "item"}, {"block", "bool"}, {"timeout", "timeout"}}}
    generate{group = G, var = "q", name = "get", recv = with_item,
      params = {{"block", "bool"}, {"timeout", "timeout"}}}
    generate{group = G, var = "q", name = "put_nowait", recv = concur.Queue, base = {"x"},
      params = {{"item", "item"}}}
    generate{group = G, var = "q", name = "get_nowait", recv = with_item}
    for _, m in ipairs({"qsize", "empty", "full"}) do
      generate{group = G, var = "q", name = m, recv = with_item}
    end
    generate{group = G, var = "q", name = "task_done", recv = with_item}
    generate{group = G, var = "q", name = "join", recv = concur.Queue}
    misuse(G, "q:get_nowait() empty", "error", function() concur.Queue():get_nowait() end,
      nil, concur.Empty)
    misuse(G, "q:get(false) empty", "error", function() concur.Queue():get(false) end, nil, concur.Empty)
    misuse(G, "q:get(true, 0) empty", "error", function() concur.Queue():get(true, 0) end,
      nil, concur.Empty)
    misuse(G, "q:put_nowait(x) full", "error", function() full():put_nowait(1) end, nil, concur.Full)
    misuse(G, "q:put(x, false) full", "error", function() full():put(1, false) end, nil, concur.Full)
    misuse(G, "q:put(x, true, 0) full", "error", function() full():put(1, true, 0) end,
      nil, concur.Full)
    misuse(G, "q:put(x, false, 5) full: the timeout is ignored", "error",
      function() full():put(1, false, 5) end, nil, concur.Full)
    misuse(G, "q:task_done() too many times", "error", function() concur.Queue():task_done() end,
      W("task_done() called too many times"))
    misuse(G, "q:task_done() once more than puts", "error", function()
      local q = with_item()
      q:get()
      q:task_done()
      q:task_done()
    end, W("task_done() called too many times"))
    misuse(G, "q:put(table with a coroutine inside)", "error",
      function() concur.Queue():put({a = {1, CO}}) end, W("bad value at item.a[2]", "coroutine"))
    misuse(G, "q:put(function with a file upvalue)", "error", function()
      local f = io.stdout
      concur.Queue():put(function() return f end)
    end, W("bad value", "userdata"))
    misuse(G, "q:put(x) that cannot be encoded leaves the queue untouched", "ok", function()
      local q = concur.Queue()
      assert(not pcall(q.put, q, CO))
      assert(q:qsize() == 0)
    end)
    misuse(G, "q:put(nil); q:get() gives nil", "ok", function()
      local q = concur.Queue()
      q:put(nil)
      assert(q:get() == nil and q:qsize() == 0)
    end)
    for _, name in ipairs({"LifoQueue", "PriorityQueue"}) do
      generate{group = G, ctor = true, name = name, params = {{"maxsize", "maxsize"}},
        colon = "error"}
    end
    generate{group = G, ctor = true, name = "SimpleQueue", colon = "error"}
    for _, make in ipairs({concur.Queue, concur.LifoQueue, concur.PriorityQueue, concur.SimpleQueue}) do
      generate{group = G, var = "q", name = "shutdown", recv = make, params = {{"immediate", "bool"}}}
    end
    misuse(G, "q.maxsize = 'x'", "error", function() concur.Queue().maxsize = "x" end, W("maxsize"))
    misuse(G, "q.maxsize = 2^40", "error", function() concur.Queue().maxsize = 2 ^ 40 end,
      W("maxsize too large"))
    misuse(G, "SimpleQueue: q.maxsize = 3", "error", function() concur.SimpleQueue().maxsize = 3 end,
      W("read-only"))
    misuse(G, "PriorityQueue: q:put(true)", "error", function() concur.PriorityQueue():put(true) end,
      W(bad_arg(1, "put"), "number, string or table expected"))
    misuse(G, "PriorityQueue: q:put({}) (no priority)", "error",
      function() concur.PriorityQueue():put({}) end, W(bad_arg(1, "put"), "priority"))
    misuse(G, "q:put(x) after shutdown", "error", function()
      local q = concur.Queue()
      q:shutdown()
      q:put(1)
    end, nil, concur.ShutDown)
    misuse(G, "q:put(0/0): NaN crosses", "ok", function()
      local q = concur.Queue()
      q:put(0/0)
      local v = q:get()
      assert(v ~= v)
    end)
  end)

  describe_object("Pipe", function()
    local G = "Pipe"
    local function a_end() return pipe_end("a") end
    local proto = shared_end
    local function b_waiting() return pipe_end("b", "m") end
    local function ctor_after(_, ok, r) if ok then pcall(r[1].close, r[1]); pcall(r[2].close, r[2]) end end
    generate{group = G, ctor = true, name = "Pipe", params = {{"duplex", "duplex"}},
      after = ctor_after, colon = "error"}
    generate{group = G, ctor = true, name = "Pipe", opts = true, after = ctor_after,
      params = {{"duplex", "bool", want = {{bad_arg(1, "Pipe"), "duplex"}}}}}
    misuse(G, "concur.Pipe{duplx = false}: unknown option", "error", function()
      local a, b = concur.Pipe{duplx = false}
      a:close(); b:close()
    end, W(bad_arg(1, "Pipe"), "duplx"))
    generate{group = G, var = "a", name = "send", recv = a_end, proto = proto, base = {"x"},
      after = close_both,
      params = {{"value", "item", want = {{bad_arg(1, "send")}}}}}
    generate{group = G, var = "a", name = "send_bytes", recv = a_end, proto = proto, base = {"abc"},
      after = close_both,
      params = {{"buf", "bytes"}, {"offset", "offset"}, {"size", "offset"}}}
    generate{group = G, var = "b", name = "recv", recv = b_waiting, proto = proto, after = close_both}
    generate{group = G, var = "b", name = "recv_bytes", recv = b_waiting, proto = proto, after = close_both,
      params = {{"maxlength", "maxlength", want = {{bad_arg(1, "recv_bytes")}, {"maxlength"}}}}}
    generate{group = G, var = "b", name = "poll", recv = b_waiting, proto = proto, after = close_both,
      params = {{"timeout", "timeout"}}}
    generate{group = G, var = "a", name = "fileno", recv = a_end, proto = proto, after = close_both}
    generate{group = G, var = "a", name = "close", recv = a_end, proto = proto, after = close_both}
    for _, f in ipairs({"closed", "readable", "writable"}) do
      misuse(G, "read a." .. f, "ok", function()
        local a = a_end()
        local v = a[f]
        close_both(a)
        assert(type(v) == "boolean")
      end)
      misuse(G, fmt("set a.%s = true", f), "error", function()
        local a = a_end()
        local ok, err = pcall(function() a[f] = true end)
        close_both(a)
        if not ok then error(err, 0) end
      end, W("read-only"))
    end
    -- A closed end: every call but close says so.
    local closed_calls = {
      {"send(1)", function(c) c:send(1) end}, {"recv()", function(c) c:recv() end},
      {"send_bytes('x')", function(c) c:send_bytes("x") end},
      {"recv_bytes()", function(c) c:recv_bytes() end}, {"poll()", function(c) c:poll() end},
      {"poll(0)", function(c) c:poll(0) end}, {"poll(nil)", function(c) c:poll(nil) end},
      {"fileno()", function(c) c:fileno() end},
    }
    batch("every call on a closed end", function()
      for _, cc in ipairs(closed_calls) do
        misuse(G, "closed a:" .. cc[1], "error", function()
          local a = a_end()
          a:close()
          local ok, err = pcall(cc[2], a)
          close_both(a)
          if not ok then error(err, 0) end
        end, W("connection is closed"))
      end
    end)
    misuse(G, "closed a:close() again", "ok", function()
      local a = a_end()
      a:close()
      a:close()
      close_both(a)
    end)
    misuse54(G, "<close> then close() again", "ok", function()
      local x, y = concur.Pipe()
      support.lua54([[
        local x = ...
        do local _ <close> = x end
      ]], x)
      x:close()
      y:close()
    end)
    for _, case in ipairs({{"recv", "end of stream", {}}, {"recv_bytes", "end of stream", {}},
                           {"send", "broken pipe", {"x"}}}) do
      local method, message, args = unpack(case)
      misuse(G, "b:" .. method .. "() after the other end closed", "error", function()
        local x, y = concur.Pipe()
        x:close()
        local ok, err = pcall(y[method], y, unpack(args))
        y:close()
        if not ok then error(err, 0) end
      end, W(message))
    end
    misuse(G, "b:poll() after the other end closed: true (recv would not block)", "ok", function()
      local x, y = concur.Pipe()
      x:close()
      local v = y:poll()
      y:close()
      assert(v == true)
    end)
    -- Pipe(false): a only receives, b only sends.
    local oneway = {
      {"a:send(1)", "a", function(c) c:send(1) end, "read-only"},
      {"a:send_bytes('x')", "a", function(c) c:send_bytes("x") end, "read-only"},
      {"b:recv()", "b", function(c) c:recv() end, "write-only"},
      {"b:recv_bytes()", "b", function(c) c:recv_bytes() end, "write-only"},
      {"b:poll()", "b", function(c) c:poll() end, "write-only"},
    }
    batch("Pipe(false), each end used the wrong way", function()
      for _, w in ipairs(oneway) do
        misuse(G, "Pipe(false) " .. w[1], "error", function()
          local a, b = concur.Pipe(false)
          local ok, err = pcall(w[3], w[2] == "a" and a or b)
          a:close(); b:close()
          if not ok then error(err, 0) end
        end, W("connection is " .. w[4]))
      end
    end)
    misuse(G, "b:recv_bytes() of a table sent with send", "error", function()
      local x, y = concur.Pipe()
      x:send({1})
      local ok, err = pcall(y.recv_bytes, y)
      x:close(); y:close()
      if not ok then error(err, 0) end
    end, W("recv_bytes", "use recv"))
    misuse(G, "b:recv_bytes(2) of 3 bytes: raised, dropped, stream in step", "error", function()
      local x, y = concur.Pipe()
      x:send_bytes("abc")
      x:send_bytes("de")
      local ok, err = pcall(y.recv_bytes, y, 2)
      local next = y:recv_bytes()
      x:close(); y:close()
      assert(next == "de", "the stream lost its step")
      if not ok then error(err, 0) end
    end, W("maxlength"))
    misuse(G, "a:send(table with a file inside)", "error", function()
      local x, y = concur.Pipe()
      local ok, err = pcall(x.send, x, {f = io.stdout})
      x:close(); y:close()
      if not ok then error(err, 0) end
    end, W("bad value", "userdata"))
    misuse(G, "a:send_bytes('abc', 3, 0): empty slice at the end", "ok", function()
      local x, y = concur.Pipe()
      x:send_bytes("abc", 3, 0)
      local s = y:recv_bytes()
      x:close(); y:close()
      assert(s == "")
    end)
    misuse(G, "a:send_bytes('abc', 2, 2): slice past the end", "error", function()
      local x, y = concur.Pipe()
      local ok, err = pcall(function() x:send_bytes("abc", 2, 2) end)
      x:close(); y:close()
      if not ok then error(err, 0) end
    end, W(bad_arg(3, "send_bytes")))
  end)

  -- Shared state --------------------------------------------------------------
  -- (a[i] and d[k] are metamethods: their messages name 'index' and
  -- 'newindex', which judge() calls unclear; spec/shared_spec.lua checks them.)

  describe_object("Value", function()
    local G = "Value"
    local function int() return concur.Value(0) end
    generate{group = G, ctor = true, name = "Value", base = {0}, params = {{"init", "init"}}}
    generate{group = G, ctor = true, name = "Value", base = {"i", 0},
      -- (A number or boolean as the typecode is an init: the next argument is one too many.)
      params = {{"typecode", "kind_name", want = {{bad_arg(1, "Value")}, {bad_arg(2, "Value")}}},
        {"init", "integer", over = {["nil"] = "ok"}},
        {"lock", "lock_opt"}}}
    generate{group = G, var = "v", name = "add", recv = int, base = {1}, params = {{"n", "integer"}}}
    generate{group = G, var = "v", name = "cas", recv = int, base = {0, 1},
      params = {{"expected", "integer"}, {"new", "integer"}}}
    generate{group = G, var = "v", name = "get_lock", recv = int}
    generate{group = G, var = "v", name = "with", recv = int, base = {FN},
      params = {{"fn", "func_only"}}}
    misuse(G, "v:add(1) on a boolean Value", "error", function() concur.Value(true):add(1) end,
      W("cannot add to a boolean"))
    misuse(G, "v.value = 1.5 on an integer Value", "error", function() int().value = 1.5 end,
      W("bad argument #3 to 'value'", "no integer representation"))
    misuse(G, "v.other = 1", "error", function() int().other = 1 end, W("no attribute 'other'"))
    misuse(G, "v:get_lock() made with lock = false", "error",
      function() concur.Value("i", 0, false):get_lock() end, W("no lock"))
  end)

  describe_object("Array", function()
    local G = "Array"
    local function two() return concur.Array("int", 2) end
    generate{group = G, ctor = true, name = "Array", base = {"int", 1},
      params = {{"kind", "kind_name"}, {"n_or_list", "size"}, {"lock", "lock_opt"}}}
    generate{group = G, var = "a", name = "add", recv = two, base = {1, 1},
      params = {{"i", "index"}, {"n", "integer"}}}
    for _, m in ipairs({"totable", "get_lock"}) do
      generate{group = G, var = "a", name = m, recv = two}
    end
    generate{group = G, var = "a", name = "with", recv = two, base = {FN},
      params = {{"fn", "func_only"}}}
    misuse(G, "concur.Array('int', {1, 'x'})", "error", function() concur.Array("int", {1, "x"}) end,
      W(bad_arg(2, "Array"), "element 2"))
    misuse(G, "concur.Array('byte', {256})", "error", function() concur.Array("byte", {256}) end,
      W(bad_arg(2, "Array"), "element 1"))
    misuse(G, "byte a:add(1, 300) wraps", "ok",
      function() assert(concur.Array("byte", 1):add(1, 300) == 44) end)
  end)

  describe_object("Dict", function()
    local G = "Dict"
    local function full() return concur.Dict{k = 1} end
    generate{group = G, ctor = true, name = "Dict", params = {{"table", "list_opt"}}}
    generate{group = G, var = "d", name = "get", recv = full, base = {"k"},
      params = {{"key", "key"}, {"default", "any"}}}
    generate{group = G, var = "d", name = "pop", recv = full, base = {"k"},
      params = {{"key", "key"}, {"default", "any"}}}
    generate{group = G, var = "d", name = "setdefault", recv = full, base = {"k", 1},
      params = {{"key", "key"}, {"value", "item", over = {["nil"] = "ok"}}}}
    generate{group = G, var = "d", name = "update", recv = full, base = {"k", IDENT},
      params = {{"key", "key"}, {"fn", "func_only"}}}
    for _, m in ipairs({"clear", "keys", "values", "items", "totable"}) do
      generate{group = G, var = "d", name = m, recv = full}
    end
    misuse(G, "concur.Dict{[{}] = 1}", "error", function() concur.Dict{[{}] = 1} end,
      W(bad_arg(1, "Dict"), "key"))
    misuse(G, "concur.Dict{x = coroutine}", "error", function() concur.Dict{x = CO} end,
      W(bad_arg(1, "Dict"), "coroutine"))
    misuse(G, "d:setdefault(k, a Thread)", "error",
      function() full():setdefault("t", concur.Thread{}) end, W(bad_arg(2, "setdefault"), "Thread"))
    misuse(G, "d:update(k, fn) where fn raises: d unchanged", "error", function()
      local d = full()
      local ok, err = pcall(d.update, d, "k", function() error("fn failed", 0) end)
      assert(not ok and d:get("k") == 1)
      error(err, 0)
    end, W("fn failed"))
    misuse(G, "d:update(k, fn) where fn returns a coroutine", "error",
      function() full():update("k", function() return CO end) end, W("coroutine"))
  end)

  -- Pools ----------------------------------------------------------------------

  local function pool_suite(G, var, threads)
    local ctor = threads and "ThreadPool" or "Pool"
    local key = threads and "threads" or "processes"
    local function shared() return pool_of(threads) end
    local function result()
      local r = shared():apply_async(IDENT, {1})
      r:wait()
      return r
    end
    local function get_result(_, ok, r)
      if ok and type(r[1]) == "table" and r[1].wait and r[1]:wait(5) then pcall(r[1].get, r[1]) end
    end
    generate{group = G, ctor = true, name = ctor, base = {1}, after = terminate_after,
      params = {{key, "workers", skip = "nil"}, {"initializer", "func_opt"}, {"initargs", "list_opt"}}}
    generate{group = G, ctor = true, name = ctor, opts = true, optbase = {[key] = 1},
      after = terminate_after,
      params = {{key, "workers_opt", skip = "nil",
          want = {{bad_arg(1, ctor), "number of workers"}}},
        {"initializer", "func_opt", want = {{bad_arg(1, ctor)}, {bad_arg(2, ctor)}}},
        {"initargs", "list_opt", want = {{bad_arg(1, ctor)}, {bad_arg(3, ctor)}}}}}
    misuse(G, fmt("concur.%s{procs = 1}: unknown option", ctor), "error",
      function() local p = concur[ctor]{procs = 1} end, W(bad_arg(1, ctor), "unknown option 'procs'"))
    misuse(G, fmt("concur.%s(1, f, {io.stdout}): initargs cannot cross", ctor), "error",
      function() local p = concur[ctor](1, FN, {io.stdout}) end, W(bad_arg(2, ctor), "userdata"))
    misuse(G, fmt("concur.%s(1, f with a coroutine upvalue)", ctor), "error",
      function() local p = concur[ctor](1, function() return CO end) end,
      W(bad_arg(2, ctor), "coroutine"))
    misuse(G, fmt("concur.%s(4097)", ctor), "error", function() local p = concur[ctor](4097) end,
      W(bad_arg(1, ctor), "1 to 4096"))

    local f = {"fn", "func"}
    -- A map with a chunksize near math.maxinteger: is its result ever
    -- ready?  A task put after it comes back after it (one worker, in
    -- order): once that one is back, a result not ready never will be.
    local function map_probe(star)
      return function(pool, a)
        local r = (star and pool.starmap_async or pool.map_async)(pool, a[1], a[2], a[3])
        local marker = pool:apply_async(IDENT, {1})
        if not marker:wait(5) then return false, "HANG: a task put after it did not come back" end
        if r:ready() then return true, pack(r:get()) end
        return false, "HANG: the call would wait for ever (its result never becomes ready)"
      end
    end
    local cs = {"chunksize", "chunksize", hang = "maxint"}
    generate{group = G, var = var, name = "apply", recv = shared, base = {IDENT, {1}},
      params = {f, {"args", "list_opt"}}}
    generate{group = G, var = var, name = "apply_async", recv = shared, base = {IDENT, {1}},
      after = get_result,
      params = {f, {"args", "list_opt"}, {"callback", "func_opt"}, {"error_callback", "func_opt"}}}
    generate{group = G, var = var, name = "map", recv = shared, base = {IDENT, {1, 2, 3}},
      hang_probe = map_probe(false), params = {f, {"list", "list"}, cs}}
    for _, m in ipairs({"imap", "imap_unordered"}) do
      generate{group = G, var = var, name = m, recv = shared, base = {IDENT, {1, 2, 3}},
        params = {f, {"list", "list"}, {"chunksize", "chunksize"}}}
    end
    generate{group = G, var = var, name = "starmap", recv = shared, base = {IDENT, {{1}, {2}}},
      hang_probe = map_probe(true), params = {f, {"list", "list"}, cs}}
    for _, m in ipairs({"map_async", "starmap_async"}) do
      generate{group = G, var = var, name = m, recv = shared,
        base = {IDENT, m == "map_async" and {1, 2} or {{1}, {2}}}, after = get_result,
        hang_probe = map_probe(m == "starmap_async"),
        params = {f, {"list", "list"}, cs, {"callback", "func_opt"}, {"error_callback", "func_opt"}}}
    end
    -- close, join and terminate change the pool: a new one for each legal call.
    generate{group = G, var = var, name = "close", recv = function() return new_pool(threads) end,
      proto = shared, after = function(o) o:terminate() end}
    generate{group = G, var = var, name = "terminate", recv = function() return new_pool(threads) end,
      proto = shared}
    generate{group = G, var = var, name = "join", proto = shared,
      recv = function() local p = new_pool(threads); p:close(); return p end}

    -- Task contents that cannot cross: an argument error at the call.
    misuse(G, fmt("%s:apply(#2 args = args with a file)", var), "error",
      function() shared():apply(FN, {io.stdout}) end, W("apply", "userdata"))
    misuse(G, fmt("%s:apply_async(#2 args = args with a coroutine)", var), "error",
      function() shared():apply_async(FN, {CO}) end, W("apply_async", "coroutine"))
    for _, m in ipairs({"map", "map_async", "imap", "imap_unordered", "starmap", "starmap_async"}) do
      local list = m:find("star") and {{io.stdout}} or {io.stdout}
      misuse(G, fmt("%s:%s(#2 list = list with a file)", var, m), "error",
        function() shared()[m](shared(), FN, list) end, W(m, "userdata"))
    end
    misuse(G, fmt("%s:apply(fn with a coroutine upvalue)", var), "error",
      function() shared():apply(function() return CO end) end, W("apply", "coroutine"))
    misuse(G, fmt("%s:starmap(f, {1, 2}): not a list of argument lists", var), "error",
      function() shared():starmap(FN, {1, 2}) end, W(bad_arg(2, "starmap")))
    misuse(G, fmt("%s:map(f, list) where f raises: the worker's error", var), "error",
      function() shared():map(function() error("task failed") end, {1}) end, W("task failed"))
    misuse(G, fmt("%s:map(f, {n = 2}): trailing nils", var), "ok", function()
      local r = shared():map(function(x) return x == nil end, {n = 2})
      assert(r[1] == true and r[2] == true)
    end)
    misuse(G, fmt("%s:map(f, {n = -1}): empty", var), "ok",
      function() assert(#shared():map(IDENT, {n = -1}) == 0) end)
    misuse(G, fmt("%s:map(f, {n = 0.5})", var), "either",
      function() shared():map(IDENT, {n = 0.5}) end, W("n"))
    misuse(G, fmt("%s:map_async(f, {n = 2^40}): a list too long to cut", var), "either",
      function() shared():map_async(IDENT, {n = 2 ^ 40}) end, W(bad_arg(2, "map_async")))

    -- Closed, terminated, running.
    for _, state in ipairs({"closed", "terminated"}) do
      local p
      local function the_pool()
        p = p or new_pool(threads, state)
        return p
      end
      batch(fmt("every call on a %s pool", state), function()
        for _, m in ipairs({"apply", "apply_async", "map", "map_async", "starmap", "starmap_async",
            "imap", "imap_unordered"}) do
          local list = m:find("star") and {{1}} or {1}
          misuse(G, fmt("%s %s:%s(...)", state, var, m), "error", function()
            local pool = the_pool()
            pool[m](pool, IDENT, m:find("^apply") and {1} or list)
          end, W(m, "pool is " .. state))
        end
        for _, m in ipairs({"close", "join", "terminate"}) do
          misuse(G, fmt("%s %s:%s()", state, var, m), "ok",
            function() local pool = the_pool(); pool[m](pool) end)
        end
      end)
    end
    misuse(G, fmt("running %s:join()", var), "error", function() shared():join() end,
      W("pool is still running"))
    misuse54(G, fmt("<close> %s terminates it", var), "ok", function()
      local q = support.lua54([[
        local new_pool, threads = ...
        local q
        do
          local pool <close> = new_pool(threads)
          q = pool
        end
        return q
      ]], new_pool, threads)
      assert(tostring(q):find("TERMINATE"))
    end)

    -- AsyncResult
    local R = "AsyncResult"
    if not threads then
      generate{group = R, var = "r", name = "get", recv = result, params = {{"timeout", "timeout"}}}
      generate{group = R, var = "r", name = "wait", recv = result, params = {{"timeout", "timeout"}}}
      generate{group = R, var = "r", name = "ready", recv = result}
      generate{group = R, var = "r", name = "successful", recv = result}
    else
      -- A result not ready yet: a task waiting on an Event.
      local function pending_result()
        local ev = concur.Event()
        return shared():apply_async(function(e) e:wait() end, {ev}), ev
      end
      misuse(R, "r:get(0) not ready", "error", function()
        local r, ev = pending_result()
        local ok, err = pcall(r.get, r, 0)
        ev:set(); r:get()
        if not ok then error(err, 0) end
      end, nil, concur.TimeoutError)
      misuse(R, "r:wait(0) not ready: false", "ok", function()
        local r, ev = pending_result()
        local v = r:wait(0)
        ev:set(); r:get()
        assert(v == false)
      end)
      misuse(R, "r:successful() not ready", "error", function()
        local r, ev = pending_result()
        local ok, err = pcall(r.successful, r)
        ev:set(); r:get()
        if not ok then error(err, 0) end
      end, W("result is not ready"))
      misuse(R, "r:get(-1) not ready", "error", function()
        local r, ev = pending_result()
        local ok, err = pcall(r.get, r, -1)
        ev:set(); r:get()
        if not ok then error(err, 0) end
      end, W(bad_arg(1, "get")))
      misuse(R, "r:get() of a task that raised", "error", function()
        local r = shared():apply_async(function() error("task failed", 0) end)
        r:get()
      end, W("task failed"))
      misuse(R, "r:successful() of a task that raised: false", "ok", function()
        local r = shared():apply_async(function() error("task failed", 0) end)
        r:wait()
        assert(r:successful() == false)
      end)
      misuse(R, "r:get() of a result that cannot cross back", "error", function()
        shared():apply(function() return coroutine.create(function() end) end)
      end, W("coroutine"))
    end
  end

  describe_object("Pool", function() pool_suite("Pool", "pool", false) end)
  describe_object("ThreadPool", function() pool_suite("ThreadPool", "tp", true) end)

  -- Calls that would wait: bad timeouts in a guarded thread --------------------

  describe("waits", function()
    local G = "waits"
    local function held_lock() local l = concur.Lock(); l:acquire(); return l end
    local function held_rlock() local l = concur.RLock(); l:acquire(); return l end
    local function full() local q = concur.Queue(1); q:put(1); return q end
    local function empty_end() return pipe_end("b") end
    local WAITS = {
      {"held Lock", "o:acquire(true, a)", held_lock, 2, "acquire"},
      {"RLock held by another thread", "o:acquire(true, a)", held_rlock, 2, "acquire"},
      {"Condition", "o:acquire(); o:wait(a)", concur.Condition, 1, "wait"},
      {"Condition wait_for(false)", "o:acquire(); o:wait_for(function() return false end, a)",
        concur.Condition, 2, "wait_for"},
      {"Semaphore(0)", "o:acquire(true, a)", function() return concur.Semaphore(0) end, 2, "acquire"},
      {"BoundedSemaphore(0)", "o:acquire(true, a)", function() return concur.BoundedSemaphore(0) end,
        2, "acquire"},
      {"unset Event", "o:wait(a)", concur.Event, 1, "wait"},
      {"Barrier(2)", "o:wait(a)", function() return concur.Barrier(2) end, 1, "wait"},
      {"empty Queue get", "o:get(true, a)", concur.Queue, 2, "get"},
      {"full Queue put", "o:put(1, true, a)", full, 3, "put"},
      {"empty Pipe poll", "o:poll(a)", empty_end, 1, "poll", close_both},
      {"running Thread join", "o:join(a)", running_thread, 1, "join"},
      {"concur.sleep", "require('concur').sleep(a)", function() return false end, 1, "sleep"},
    }
    for _, w in ipairs(WAITS) do
      batch(fmt("%s: %s, bad timeouts in a guarded thread", w[1], w[2]), function()
        for _, label in ipairs({"-1", "-0.5", "-huge", "minint", "nan", "0"}) do
          local s = sample(label)
          local legal = label == "0"
          local c = {group = G, cat = "argument", title = fmt("%s: %s with a = %s", w[1], w[2], label),
            expect = legal and "either" or "error", allow_values = legal,
            want = {{bad_arg(w[4], w[5])}}}
          case(c, function()
            local o = w[3]()
            local ok, r = guarded(w[2], o, s[2])
            if w[6] then w[6](o) end
            return ok, r
          end)
        end
      end)
    end
    -- Legal waits that only a notify ends: the main thread notifies.
    -- (maxint and 2^53, above concur.TIMEOUT_MAX, are bad arguments.)
    for _, label in ipairs({"nil", "0.5", "huge"}) do
      local s = sample(label)
      misuse(G, fmt("Condition: c:wait(%s) ends when notified", label), "ok", function()
        local c, ready = concur.Condition(), concur.Event()
        local t = concur.Thread{daemon = true, args = {c, ready, s[2]}, target = function(c, ready, t)
          c:acquire()
          ready:set()
          local got = c:wait(t)
          c:release()
          return got
        end}
        t:start()
        ready:wait()
        local deadline = concur.time() + 5
        repeat   -- the waiter released the lock inside wait: notify it
          c:acquire(); c:notify(); c:release()
        until t:join(0.01) or concur.time() > deadline
        assert(t:join(0), "HANG: the waiter was not woken")
        assert(t:result() == true)
      end)
    end
  end)

  -- Objects that outlive the thread that made them --------------------------

  describe("leftovers of an ended thread", function()
    local G = "Leftovers"
    misuse(G, "Lock it held: release() from here (any thread may)", "ok",
      function() leftovers().lock:release() end)
    misuse(G, "RLock it held: release() from here", "error",
      function() leftovers().rlock:release() end, W("cannot release un-acquired lock"))
    misuse(G, "RLock it held: acquire(false) is false", "ok",
      function() assert(leftovers().rlock:acquire(false) == false) end)
    misuse(G, "RLock it held: acquire(true, 0) is false", "ok",
      function() assert(leftovers().rlock:acquire(true, 0) == false) end)
    misuse(G, "Queue it filled: put(x, true, 0) raises Full", "error",
      function() leftovers().q:put(1, true, 0) end, nil, concur.Full)
    misuse(G, "Queue it filled: get() gives its item", "ok", function()
      local L = leftovers()
      assert(L.q:get() == "held")
      L.q:put("held")
    end)
    misuse(G, "Pipe it made: send and recv", "ok", function()
      local L = leftovers()
      L.a:send({1})
      assert(L.b:recv()[1] == 1)
    end)
    misuse(G, "Event it made: wait(0) is false", "ok",
      function() assert(leftovers().event:wait(0) == false) end)
    misuse(G, "BoundedSemaphore it made: release() above", "error",
      function() leftovers().sem:release() end, W("Semaphore released too many times"))
    misuse(G, "Thread it made, never started: start() here", "error",
      function() leftovers().unstarted:start() end,
      W("a thread can only be started from the Lua state that created it"))
    misuse(G, "Thread it made, never started: join()", "error",
      function() leftovers().unstarted:join() end, W("cannot join thread before it is started"))
    misuse(G, "Thread it made, never started: result()", "error",
      function() leftovers().unstarted:result() end, W("before it is started"))
    misuse(G, "its own handle: join() is true", "ok",
      function() assert(leftovers().me:join() == true) end)
    misuse(G, "its own handle: join(-1)", "error",
      function() leftovers().me:join(-1) end, W(bad_arg(1, "join")))
    misuse(G, "its own handle: is_alive() is false", "ok",
      function() assert(leftovers().me:is_alive() == false) end)
    misuse(G, "its own handle: start()", "error",
      function() leftovers().me:start() end, W("threads can only be started once"))
    misuse(G, "its own handle: result() gives the table again", "ok",
      function() assert(type(leftovers().me:result()) == "table") end)
    misuse(G, "its own handle: daemon = true", "error",
      function() leftovers().me.daemon = true end, W("cannot set daemon status of active thread"))
    misuse(G, "its own handle: name = 'x'", "ok", function() leftovers().me.name = "x" end)
    -- A pool or its result cannot leave the thread that made it: result()
    -- refuses it (a forked child's copies are refused at use: pool_spec).
    for _, what in ipairs({"pool", "r"}) do
      misuse(G, "a thread returns its " .. what .. ": result()", "error", function()
        local t = concur.Thread{target = function(w)
          local tp = require("concur").ThreadPool(1)
          local r = tp:apply_async(function() return 1 end)
          r:wait()
          return w == "pool" and tp or r
        end, args = {what}}
        t:start()
        t:result()
      end, W("bad value at result[1] (concur." .. (what == "pool" and "ThreadPool" or "AsyncResult") .. ")"))
    end
  end)
end)
