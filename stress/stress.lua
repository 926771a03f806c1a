-- stress/stress.lua: long-running randomized workloads over every part of
-- concur, on threads and forked processes at once, each checking exact
-- invariants, with a watchdog that reports where things got stuck.
--
--   usage: lua5.4 stress/stress.lua [seconds] [seed] [options]
--     seconds          how long new rounds are started (default 60)
--     seed             replays a run's parameters (default: time-based, printed)
--     --threads-only   no forked processes (Pool -> ThreadPool, Pipe ends on threads)
--     --no-nested      forked children start no threads of their own
--     --stall=N        a worker that makes no progress for N s is a failure (default 20)
--     --grace=N        hard deadline is seconds + N (default max(60, 3*stall))
--     --scale=F        multiplies the work per round (default 1)
--     --only=a,b       run only these drivers (queue, lock, cond, event, barrier, pool, pipe)
--     --status=N       a status line every N s (default 10; 0: none)
--     --hold=N         on a failure, wait N s before killing the children (to attach gdb)
--     --selftest=stall|fail  inject a stuck worker / a failed check (tests the watchdog)
--     --no-kill        no process is killed on purpose (queue victims, lock holders,
--                      Pool:terminate); the shared arena must then be back to its
--                      start size at the end (see stress/repro/killed_child_leaks_shared_objects.lua)
--
-- Layout: the main thread starts one driver thread per workload and then
-- watches.  A driver runs rounds until the time is up: each round draws its
-- parameters from the driver's seed, makes fresh concur objects, starts
-- workers (threads and processes), collects their reports from a Queue, joins
-- them and checks the round's invariants exactly.  Any failed check stops the
-- run at once (fail fast): the main thread prints the failure, every worker's
-- state, kills the children and exits non-zero.
--
-- Progress and state live in a shared int64 array (concur.core Slots): each
-- worker owns a record (progress counter, current op, kind, pid, role, round);
-- the main thread samples it every second.  Ordering between workers uses only
-- concur's primitives and joins; concur.sleep is used only for the watchdog's
-- period and a little jitter before a deliberate kill.
local concur = require "concur"
local core = require "concur.core"

local Empty, Full = concur.Empty, concur.Full
local Broken = concur.BrokenBarrierError

------------------------------------------------------------------------------
-- Options
------------------------------------------------------------------------------

local cfg = {seconds = 60, seed = nil, stall = 20, grace = nil, threads_only = false,
  nested = true, scale = 1.0, only = nil, status = 10, hold = 0, kills = true, selftest = nil}

do
  local pos = 0
  local i = 1
  local function val(a, name)
    local v = a:match("^%-%-" .. name .. "=(.*)$")
    if v then return v end
    if a == "--" .. name then i = i + 1; return arg[i] end
  end
  while arg and arg[i] do
    local a = arg[i]
    local v
    if a == "--threads-only" then cfg.threads_only = true
    elseif a == "--no-nested" then cfg.nested = false
    elseif a == "--no-kill" then cfg.kills = false
    elseif a == "-h" or a == "--help" then
      print("usage: stress.lua [seconds] [seed] [--threads-only] [--no-nested] [--stall=N] [--grace=N] [--scale=F] [--only=queue,lock,cond,event,barrier,pool,pipe] [--status=N] [--hold=N] [--no-kill] [--selftest=stall|fail]")
      os.exit(0)
    else
      v = val(a, "stall"); if v then cfg.stall = assert(tonumber(v), "--stall: number") goto next end
      v = val(a, "grace"); if v then cfg.grace = assert(tonumber(v), "--grace: number") goto next end
      v = val(a, "scale"); if v then cfg.scale = assert(tonumber(v), "--scale: number") goto next end
      v = val(a, "status"); if v then cfg.status = assert(tonumber(v), "--status: number") goto next end
      v = val(a, "hold"); if v then cfg.hold = assert(tonumber(v), "--hold: number") goto next end
      v = val(a, "selftest"); if v then cfg.selftest = v goto next end
      v = val(a, "seed"); if v then cfg.seed = assert(math.tointeger(tonumber(v)), "--seed: integer") goto next end
      v = val(a, "seconds"); if v then cfg.seconds = assert(tonumber(v), "--seconds: number") goto next end
      v = val(a, "only"); if v then
        cfg.only = {}
        for w in v:gmatch("[^,]+") do cfg.only[w] = true end
        goto next
      end
      if tonumber(a) and pos == 0 then cfg.seconds = tonumber(a); pos = 1
      elseif math.tointeger(tonumber(a)) and pos == 1 then cfg.seed = math.tointeger(tonumber(a)); pos = 2
      else io.stderr:write("stress: unknown argument " .. a .. "\n"); os.exit(2) end
    end
    ::next::
    i = i + 1
  end
  if cfg.seed == nil then
    cfg.seed = (os.time() % 1000000) * 1000 + concur.getpid() % 1000
  end
  cfg.grace = cfg.grace or math.max(60, 3 * cfg.stall)
end

------------------------------------------------------------------------------
-- Shared progress records
------------------------------------------------------------------------------

-- Header cells of the Slots array (guarded by the `live` Lock).
local LIVE_T, LIVE_P, PEAK_T, PEAK_P, STARTED_T, STARTED_P = 1, 2, 3, 4, 5, 6
local STOPPING = 7         -- set by the main thread when it kills everything
local H = 16
-- One record per worker: W cells.
local W = 6
local P_PROG, P_OP, P_KIND, P_PID, P_ROLE, P_ROUND = 1, 2, 3, 4, 5, 6
local BLOCK = 48           -- records per driver: its own, then its workers'
local KIND_NAME = {"thread", "process", "driver"}

local OPS = {"start", "put q", "get q", "task_done q", "join q", "acquire lock",
  "acquire rlock", "acquire sem", "acquire bsem", "acquire meta", "cond wait", "cond notify",
  "event wait", "event set", "barrier wait", "barrier abort", "barrier2 wait", "pool call",
  "send pipe", "recv pipe", "poll pipe", "report", "collect reports", "join workers",
  "spawn", "kill victim", "victim loop", "timers", "checks", "gate wait", "work",
  "hold locks", "round setup", "finish"}
local OPI = {}
for i, n in ipairs(OPS) do OPI[n] = i end
-- Ops in which a driver only waits for its own workers: not a stall while one
-- of them is active (those are watched themselves).
local SUPERVISE = {[OPI["collect reports"]] = true, [OPI["join workers"]] = true,
  [OPI["join q"]] = true, [OPI["gate wait"]] = true}

local ROLES = {"driver", "producer", "consumer", "victim", "locker", "locker-thread",
  "holder", "cond-producer", "cond-consumer", "pinger", "ponger", "gate-waiter", "party",
  "doomed-party", "pipe-sender", "pipe-receiver", "eof-child"}
local ROLEI = {}
for i, n in ipairs(ROLES) do ROLEI[n] = i end

local function sbase(slot) return H + (slot - 1) * W end

------------------------------------------------------------------------------
-- Worker-side helpers (copied into every thread with the functions using them)
------------------------------------------------------------------------------

local function setop(ctx, name, obj)
  ctx.G:set(ctx.b + P_OP, OPI[name] * 1000 + (obj or 0))
end

local function bump(ctx)
  local n = ctx.n + 1
  ctx.n = n
  ctx.G:set(ctx.b + P_PROG, n)
end

local function done(ctx, cat, k)
  local n = ctx.n + 1
  ctx.n = n
  ctx.G:set(ctx.b + P_PROG, n)
  local ops = ctx.ops
  ops[cat] = (ops[cat] or 0) + (k or 1)
end

local function check(ctx, cond, fmt, ...)
  ctx.checks = ctx.checks + 1
  if not cond then
    error("INVARIANT FAILED: " .. string.format(fmt, ...), 2)
  end
end

local function live_add(ctx, kind, d)
  local G, L = ctx.G, ctx.live
  local idx = kind == 2 and LIVE_P or LIVE_T
  L:acquire()
  local v = G:get(idx) + d
  G:set(idx, v)
  if v > G:get(idx + 2) then G:set(idx + 2, v) end
  if d > 0 then G:set(idx + 4, G:get(idx + 4) + d) end
  L:release()
end

local function prep_slot(G, slot, kind, role, round, pid)
  local b = sbase(slot)
  G:set(b + P_ROLE, ROLEI[role])
  G:set(b + P_ROUND, round)
  G:set(b + P_OP, OPI.start * 1000)
  G:set(b + P_PID, pid or 0)
  G:set(b + P_KIND, kind)
end

local function fail(ctx, msg)
  pcall(ctx.failq.put, ctx.failq, msg)
  ctx.fail_ev:set()
end

local function rnd(a, b) return math.random(a, b) end

local function chance(p) return math.random() < p end

local function spin(n)
  local x = 0
  for i = 1, n do x = x + i end
  return x
end

local function shuffle(t)
  for i = #t, 2, -1 do
    local j = math.random(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

-- A deterministic 64-bit mix of two integers (splitmix64's finalizer).
local function mix(a, b)
  local h = a * 6364136223846793005 + b * 1442695040888963407 + 0x9E3779B97F4A7C15
  h = (h ~ (h >> 30)) * 0xBF58476D1CE4E5B9
  h = (h ~ (h >> 27)) * 0x94D049BB133111EB
  return h ~ (h >> 31)
end

local function pick(h, n) return (h >> 1) % n end

-- The payload of message s of producer p: `size` bytes anyone can rebuild.
local function payload(p, s, size)
  if size <= 0 then return "" end
  local u = string.pack("<I4I4", (p * 7919 + s) & 0xffffffff, (s * 2654435761 + p) & 0xffffffff)
    .. string.char(p % 251, s % 241, (p + s) % 239, 65 + s % 26)
  return string.rep(u, size // 12 + 1):sub(1, size)
end

local TIMEOUTS = {0, 0.0001, 0.001, 0.005, 0.02, 0.1}

-- Blocks until lk is acquired, in one of the ways acquire can be called.
local function acquire_any(ctx, lk, what)
  local r = math.random(10)
  if r <= 6 then
    check(ctx, lk:acquire() == true, "%s:acquire() returned false", what)
  elseif r <= 8 then
    local n = 0
    while not lk:acquire(true, TIMEOUTS[math.random(#TIMEOUTS)]) do
      n = n + 1
      if n > 20 then check(ctx, lk:acquire(true) == true, "%s:acquire(true) returned false", what) break end
    end
  else
    local n = 0
    while not lk:acquire(false) do
      n = n + 1
      if n > 20 then check(ctx, lk:acquire() == true, "%s:acquire() returned false", what) break end
    end
  end
end

-- What every worker (thread or process) runs: the body, its report, its record.
local function worker_main(ctx, body, ...)
  math.randomseed(ctx.seed)
  local G = ctx.G
  ctx.b = sbase(ctx.slot)
  ctx.ops, ctx.checks = {}, 0
  ctx.n = G:get(ctx.b + P_PROG)
  G:set(ctx.b + P_PID, concur.getpid())
  G:set(ctx.b + P_KIND, ctx.kind)
  live_add(ctx, ctx.kind, 1)
  bump(ctx)
  local rep = {}
  local ok, err = xpcall(body, debug.traceback, ctx, rep, ...)
  rep.ok, rep.err = ok, (not ok) and tostring(err) or nil
  rep.ops, rep.checks, rep.slot, rep.name, rep.role, rep.round =
    ctx.ops, ctx.checks, ctx.slot, ctx.name, ctx.role, ctx.round
  if not ok then fail(ctx, ctx.name .. " (" .. KIND_NAME[ctx.kind] .. ", pid " .. concur.getpid() .. "): " .. rep.err) end
  if not ctx.noreport then
    setop(ctx, "report")
    ctx.rq:put(rep)
  end
  live_add(ctx, ctx.kind, -1)
  G:set(ctx.b + P_KIND, 0)
  return rep
end

-- Adds a report's counters into acc.
local function merge(acc, rep)
  for k, v in pairs(rep.ops or {}) do acc.ops[k] = (acc.ops[k] or 0) + v end
  acc.checks = acc.checks + (rep.checks or 0)
  acc.msgs = acc.msgs + (rep.msgs or 0)
  acc.bytes = acc.bytes + (rep.bytes or 0)
end

-- Starts threads inside a (forked) worker, each running body on its own slot;
-- returns a function that joins them and merges their reports into rep.
local function start_nested(ctx, slots, body, ...)
  local ts = {}
  for k, slot in ipairs(slots) do
    local c = {G = ctx.G, live = ctx.live, failq = ctx.failq, fail_ev = ctx.fail_ev, rq = ctx.rq,
      slot = slot, kind = 1, seed = math.random(0, 1 << 40), round = ctx.round,
      role = "locker-thread", name = ctx.name .. "/t" .. k, cfg = ctx.cfg, noreport = true}
    prep_slot(ctx.G, slot, 1, "locker-thread", ctx.round, concur.getpid())
    local t = concur.Thread{target = worker_main, args = table.pack(c, body, ...), daemon = chance(0.5)}
    t:start()
    ts[k] = t
  end
  return function(rep)
    rep.nested = {}
    for k, t in ipairs(ts) do
      local ok, r = pcall(t.result, t)
      check(ctx, ok, "nested thread %d raised: %s", k, tostring(r))
      check(ctx, r.ok, "nested thread %d failed: %s", k, tostring(r.err))
      rep.nested[k] = r
    end
  end
end

------------------------------------------------------------------------------
-- Driver-side helpers
------------------------------------------------------------------------------

local function pick_kind(D)
  if D.cfg.threads_only then return 1 end
  return chance(0.5) and 1 or 2
end

local function new_round(D)
  D.round = D.round + 1
  D.next = 1
  D.handles = {}
  D.byslot = {}
  D.rq = concur.Queue()
  D.reports = {}
  D.nrole = {}
  D.G:set(D.b + P_ROUND, D.round)
  D.stats.rounds = D.stats.rounds + 1
end

local function alloc_slot(D)
  D.next = D.next + 1
  assert(D.next <= BLOCK, "too many workers in one round")
  return D.slot + D.next - 1
end

local function make_ctx(D, slot, kind, role)
  return {G = D.G, live = D.live, failq = D.failq, fail_ev = D.fail_ev, rq = D.rq, slot = slot,
    kind = kind, seed = math.random(0, 1 << 40), round = D.round, role = role,
    name = ("%s.r%d.%s@%d"):format(D.name, D.round, role, slot - D.slot), cfg = D.cfg}
end

-- Starts body as a thread (kind 1) or process (kind 2) worker.  opts.special:
-- the worker is not collected nor joined by the generic code.
local function spawn(D, kind, role, opts, body, ...)
  if D.G:get(STOPPING) ~= 0 then error("stress: stopping, no new workers", 0) end
  local slot = alloc_slot(D)
  local ctx = make_ctx(D, slot, kind, role)
  if opts then
    for k, v in pairs(opts) do ctx[k] = v end
  end
  prep_slot(D.G, slot, kind, role, D.round, kind == 1 and concur.getpid() or 0)
  setop(D, "spawn", slot - D.slot)
  local cls = kind == 1 and concur.Thread or concur.Process
  local h = cls{target = worker_main, args = table.pack(ctx, body, ...), daemon = true, name = ctx.name}
  h:start()
  if kind == 2 then D.G:set(sbase(slot) + P_PID, h.pid) end
  local w = {h = h, kind = kind, slot = slot, name = ctx.name, role = role,
    special = opts and opts.special}
  D.handles[#D.handles + 1] = w
  D.byslot[slot] = w
  if kind == 1 then D.stats.threads = D.stats.threads + 1 else D.stats.procs = D.stats.procs + 1 end
  bump(D)
  return w, ctx
end

local function absorb(D, rep)
  local w = D.byslot[rep.slot]
  if not w then error("report from an unknown worker " .. tostring(rep.name), 0) end
  if rep.round ~= D.round then error("stale report from " .. tostring(rep.name), 0) end
  if w.reported then error("two reports from " .. w.name, 0) end
  w.reported = true
  w.rep = rep
  if not rep.ok then error("worker " .. rep.name .. " failed: " .. tostring(rep.err), 0) end
  merge(D.stats, rep)
  D.reports[#D.reports + 1] = rep
  D.nrole[rep.role] = (D.nrole[rep.role] or 0) + 1
  bump(D)
end

local function ended_how(w)
  if w.kind == 2 then return "exit code " .. tostring(w.h.exitcode) end
  local ok, err = pcall(w.h.result, w.h)
  return ok and "returned" or ("raised: " .. tostring(err))
end

-- Collects reports until done(D) holds; fails on a worker that ended without one.
local function collect(D, until_fn)
  local rq = D.rq
  while not until_fn(D) do
    setop(D, "collect reports")
    local ok, rep = pcall(rq.get, rq, true, 1.0)
    if ok then
      absorb(D, rep)
    elseif rep == Empty then
      for _, w in ipairs(D.handles) do
        if not w.reported and not w.special and not w.h:is_alive() then
          while true do
            local ok2, r2 = pcall(rq.get_nowait, rq)
            if not ok2 then break end
            absorb(D, r2)
          end
          if not w.reported then
            error(("worker %s ended without a report (%s)"):format(w.name, ended_how(w)), 0)
          end
        end
      end
    else
      error(rep, 0)
    end
  end
end

local function all_reported(D)
  for _, w in ipairs(D.handles) do
    if not w.special and not w.reported then return false end
  end
  return true
end

local function join_all(D)
  for _, w in ipairs(D.handles) do
    if not w.special then
      setop(D, "join workers", w.slot - D.slot)
      w.h:join()
      if w.kind == 1 then
        local ok, err = pcall(w.h.result, w.h)
        check(D, ok, "thread %s raised: %s", w.name, tostring(err))
      else
        check(D, w.h.exitcode == 0, "process %s: exit code %s", w.name, tostring(w.h.exitcode))
      end
      D.G:set(sbase(w.slot) + P_KIND, 0)
      bump(D)
    end
  end
end

local function finish_round(D)
  collect(D, all_reported)
  join_all(D)
end

local function sum_role(D, role, field)
  local s = 0
  for _, r in ipairs(D.reports) do
    if r.role == role then s = s + (r[field] or 0) end
  end
  return s
end

------------------------------------------------------------------------------
-- Workload: queues
------------------------------------------------------------------------------

local STOP = "\0STOP"

-- Message s of producer p, roughly `size` payload bytes: a string with a
-- binary header, or a table (sometimes with a cycle and a shared subtable).
local function make_msg(p, s, large_p, q)
  local size
  local r = math.random()
  if r < large_p then size = rnd(65 * 1024, 400 * 1024)
  elseif r < 0.15 then size = rnd(200, 12000)
  else size = rnd(0, 120) end
  if chance(0.6) then
    return string.pack("<c1I4I4I4", "S", p, s, size) .. payload(p, s, size), size
  end
  local t = {tag = "T", p = p, s = s, size = size, data = payload(p, s, size),
    f = s + 0.5, list = {}, flag = s % 2 == 0}
  for i = 1, s % 7 do t.list[i] = s * i end
  if s % 3 == 0 then t.me = t end
  if s % 5 == 0 then local sub = {s}; t.a, t.b = sub, sub end
  if s % 11 == 0 then
    local k = p * 100000 + s
    t.fn = function(x) return x + k end
  end
  if s % 13 == 0 then
    t.ev = concur.Event()   -- made here, may outlive its maker in the queue
    t.ev:set()
    t.q = q
  end
  return t, size
end

-- Checks a message; returns its producer, sequence number and payload size.
local function verify_msg(ctx, m, q)
  if type(m) == "string" then
    check(ctx, #m >= 13 and m:sub(1, 1) == "S", "malformed string message of %d bytes", #m)
    local _, p, s, size = string.unpack("<c1I4I4I4", m)
    check(ctx, #m == 13 + size, "message %d/%d: %d bytes, header says %d", p, s, #m - 13, size)
    check(ctx, m:sub(14) == payload(p, s, size), "message %d/%d: payload corrupted", p, s)
    return p, s, size
  end
  check(ctx, type(m) == "table" and m.tag == "T", "unexpected item %s", tostring(m))
  local p, s, size = m.p, m.s, m.size
  check(ctx, math.type(p) == "integer" and math.type(s) == "integer", "table message ids lost their type")
  check(ctx, #m.data == size and m.data == payload(p, s, size), "table message %d/%d: payload corrupted", p, s)
  check(ctx, math.type(m.f) == "float" and m.f == s + 0.5, "table message %d/%d: float field %s", p, s, tostring(m.f))
  check(ctx, #m.list == s % 7, "table message %d/%d: list of %d", p, s, #m.list)
  for i = 1, #m.list do check(ctx, m.list[i] == s * i, "table message %d/%d: list[%d]", p, s, i) end
  check(ctx, m.flag == (s % 2 == 0), "table message %d/%d: flag", p, s)
  if s % 3 == 0 then check(ctx, m.me == m, "table message %d/%d: cycle lost", p, s) end
  if s % 5 == 0 then
    check(ctx, type(m.a) == "table" and m.a == m.b and m.a[1] == s, "table message %d/%d: shared ref lost", p, s)
  end
  if s % 11 == 0 then
    check(ctx, type(m.fn) == "function" and m.fn(1) == p * 100000 + s + 1, "table message %d/%d: closure", p, s)
  end
  if s % 13 == 0 then
    check(ctx, m.ev:is_set(), "table message %d/%d: Event not set", p, s)
    check(ctx, q == nil or m.q == q, "table message %d/%d: the queue itself arrived as another value", p, s)
  end
  return p, s, size
end

local function q_producer(ctx, rep, Qs, maxs, pno, n, large_p)
  local bytes = 0
  for s = 1, n do
    local qi = math.random(#Qs)
    local q, ms = Qs[qi], maxs[qi]
    local m, size = make_msg(pno, s, large_p, q)
    setop(ctx, "put q", qi)
    local mode = math.random(100)
    if mode <= 45 then
      q:put(m)
    elseif mode <= 70 then
      local tries = 0
      while true do
        local ok, err = pcall(q.put, q, m, true, TIMEOUTS[math.random(#TIMEOUTS)])
        if ok then break end
        check(ctx, err == Full, "put(timeout) raised %s", tostring(err))
        check(ctx, ms > 0, "an unbounded queue raised Full")
        tries = tries + 1
        if tries > 8 then q:put(m) break end
      end
    else
      local ok, err
      if mode <= 85 then ok, err = pcall(q.put_nowait, q, m) else ok, err = pcall(q.put, q, m, false) end
      if not ok then
        check(ctx, err == Full, "put_nowait raised %s", tostring(err))
        check(ctx, ms > 0, "an unbounded queue raised Full")
        q:put(m)
      end
    end
    bytes = bytes + size
    if ms > 0 and s % 16 == 0 then
      local qs = q:qsize()
      check(ctx, qs <= ms, "qsize %d above maxsize %d", qs, ms)
    end
    done(ctx, "queue")
  end
  rep.pno, rep.sent, rep.sent_bytes = pno, n, bytes
end

local function q_consumer(ctx, rep, q, qi, joinable)
  local cnt, sum, sq, bytes, last = {}, {}, {}, {}, {}
  local total, tbytes = 0, 0
  while true do
    setop(ctx, "get q", qi)
    local mode = math.random(100)
    local m
    if mode <= 45 then
      m = q:get()
    elseif mode <= 75 then
      while true do
        local ok, v = pcall(q.get, q, true, TIMEOUTS[math.random(#TIMEOUTS)])
        if ok then m = v break end
        check(ctx, v == Empty, "get(timeout) raised %s", tostring(v))
      end
    else
      local ok, v
      if mode <= 90 then ok, v = pcall(q.get_nowait, q) else ok, v = pcall(q.get, q, false) end
      if ok then m = v
      else
        check(ctx, v == Empty, "get_nowait raised %s", tostring(v))
        m = q:get()
      end
    end
    if joinable then setop(ctx, "task_done q", qi); q:task_done() end
    if m == nil or m == STOP then break end
    local p, s, size = verify_msg(ctx, m, q)
    local key = p
    check(ctx, last[key] == nil or s > last[key], "producer %d: message %d after %d on one consumer", p, s, last[key] or -1)
    last[key] = s
    cnt[p] = (cnt[p] or 0) + 1
    sum[p] = (sum[p] or 0) + s
    sq[p] = (sq[p] or 0) + s * s
    bytes[p] = (bytes[p] or 0) + size
    total, tbytes = total + 1, tbytes + size
    done(ctx, "queue")
  end
  rep.cnt, rep.sum, rep.sq, rep.pbytes = cnt, sum, sq, bytes
  rep.msgs, rep.bytes = total, tbytes
end

-- A process that puts and gets on a scratch queue until it is killed.
local function q_victim(ctx, rep, q, ready)
  local s = 0
  while true do
    s = s + 1
    setop(ctx, "victim loop", s % 1000)
    local m = make_msg(999, s, 0.05, q)
    if not pcall(q.put, q, m, true, 0.01) then pcall(q.get_nowait, q) end
    if chance(0.5) then pcall(q.get_nowait, q) end
    bump(ctx)
    if s == 50 then ready:set() end
  end
end

local function queue_round(D)
  local sc = D.cfg.scale
  local nq = rnd(1, 3)
  local Qs, maxs = {}, {}
  for i = 1, nq do
    local ms = chance(0.35) and 0 or ({1, 2, 3, 5, 8, 16, 64})[rnd(1, 7)]
    maxs[i] = ms
    if chance(0.3) then Qs[i] = concur.JoinableQueue{maxsize = ms} else Qs[i] = concur.Queue(ms) end
  end
  local joinable = chance(0.5)
  local np, nc = rnd(1, 4), rnd(nq, nq + 2)
  local large_p = ({0, 0.002, 0.01, 0.03})[rnd(1, 4)]
  local plan, nmsg = {}, {}
  for p = 1, np do
    nmsg[p] = math.max(1, math.floor(rnd(30, 600) * sc))
    plan[#plan + 1] = {"P", p}
  end
  for c = 1, nc do plan[#plan + 1] = {"C", c} end
  shuffle(plan)
  setop(D, "round setup")

  -- Sometimes a process is killed while it puts and gets on another queue.
  local victim
  if not D.cfg.threads_only and D.cfg.kills and chance(0.2) then
    local vmax = chance(0.5) and 0 or rnd(1, 8)
    local vq = concur.Queue(vmax)
    local ready = concur.Event()
    local w = spawn(D, 2, "victim", {special = true, noreport = true}, q_victim, vq, ready)
    victim = {w = w, q = vq, ready = ready, maxsize = vmax}
  end

  for _, e in ipairs(plan) do
    if e[1] == "P" then
      spawn(D, pick_kind(D), "producer", nil, q_producer, Qs, maxs, e[2], nmsg[e[2]], large_p)
    else
      local qi = (e[2] - 1) % nq + 1
      spawn(D, pick_kind(D), "consumer", nil, q_consumer, Qs[qi], qi, joinable)
    end
  end

  if victim then
    setop(D, "kill victim")
    victim.ready:wait()
    concur.sleep(math.random() * 0.02)   -- jitter: where the kill lands
    local h = victim.w.h
    if chance(0.5) then h:kill() else h:terminate() end
    h:join()
    check(D, h.exitcode == -9 or h.exitcode == -15, "killed victim: exit code %s", tostring(h.exitcode))
    live_add(D, 2, -1)
    D.G:set(sbase(victim.w.slot) + P_KIND, 0)
    -- The queue it was using still works: every item in it is whole.
    setop(D, "checks")
    local vq, got = victim.q, 0
    while true do
      local ok, m = pcall(vq.get_nowait, vq)
      if not ok then check(D, m == Empty, "after the kill: get_nowait raised %s", tostring(m)) break end
      verify_msg(D, m, vq)
      got = got + 1
    end
    check(D, vq:qsize() == 0 and vq:empty(), "after the kill: queue not empty when drained")
    local k = victim.maxsize > 0 and victim.maxsize or 10
    for i = 1, k do vq:put(i, true, 5) end
    for i = 1, k do check(D, vq:get(true, 5) == i, "after the kill: FIFO broken") end
    D.stats.notes.victims_killed = (D.stats.notes.victims_killed or 0) + 1
    D.stats.notes.procs_killed = (D.stats.notes.procs_killed or 0) + 1
    done(D, "queue", got + 2 * k)
  end

  -- Producers first; then one end marker per consumer.
  collect(D, function(d) return (d.nrole.producer or 0) == np end)
  for c = 1, nc do
    local qi = (c - 1) % nq + 1
    setop(D, "put q", qi)
    Qs[qi]:put(chance(0.5) and STOP or nil)
  end
  if joinable then
    for qi = 1, nq do setop(D, "join q", qi); Qs[qi]:join(); bump(D) end
  end
  finish_round(D)

  -- Exactly once: per producer, count, sum and sum of squares of the
  -- sequence numbers, and the bytes, over all consumers.
  for _, pr in ipairs(D.reports) do
    if pr.role == "producer" then
      local p, n = pr.pno, pr.sent
      local c, s, s2, b = 0, 0, 0, 0
      for _, cr in ipairs(D.reports) do
        if cr.role == "consumer" then
          c = c + (cr.cnt[p] or 0); s = s + (cr.sum[p] or 0)
          s2 = s2 + (cr.sq[p] or 0); b = b + (cr.pbytes[p] or 0)
        end
      end
      check(D, c == n, "producer %d put %d messages, consumers got %d", p, n, c)
      check(D, s == n * (n + 1) // 2, "producer %d: sequence sum %d, expected %d", p, s, n * (n + 1) // 2)
      check(D, s2 == n * (n + 1) * (2 * n + 1) // 6, "producer %d: duplicate or lost messages (sum of squares)", p)
      check(D, b == pr.sent_bytes, "producer %d: %d bytes sent, %d received", p, pr.sent_bytes, b)
    end
  end
  for qi = 1, nq do
    local q = Qs[qi]
    check(D, q:qsize() == 0 and q:empty(), "queue %d not empty after the round", qi)
    local ok, e = pcall(q.get_nowait, q)
    check(D, not ok and e == Empty, "get_nowait on an empty queue: %s", tostring(e))
    if joinable then
      q:join()
      local ok2, e2 = pcall(q.task_done, q)
      check(D, not ok2 and tostring(e2):find("too many times", 1, true), "extra task_done: %s", tostring(e2))
    end
  end
end

------------------------------------------------------------------------------
-- Workload: Lock, RLock, Semaphore, BoundedSemaphore
------------------------------------------------------------------------------

-- Slots cells: 1 lock counter, 2 rlock counter, 3/4 sem inside/peak,
-- 5/6 bsem inside/peak.
local function lock_loop(ctx, rep, o, iters)
  local S = o.S
  local inc_l, inc_r = 0, 0
  local function inside(cell, k, what)
    setop(ctx, "acquire meta")
    o.M:acquire()
    local v = S:get(cell) + 1
    S:set(cell, v)
    if v > S:get(cell + 1) then S:set(cell + 1, v) end
    o.M:release()
    check(ctx, v <= k, "%s: %d holders at once, value %d", what, v, k)
    spin(math.random(0, 200))
    o.M:acquire()
    S:set(cell, S:get(cell) - 1)
    o.M:release()
  end
  for _ = 1, iters do
    local r = math.random(100)
    if r <= 30 then
      setop(ctx, "acquire lock")
      acquire_any(ctx, o.L, "Lock")
      check(ctx, o.L:locked(), "Lock not locked while held")
      local v = S:get(1)
      spin(math.random(0, 100))
      S:set(1, v + 1)
      o.L:release()
      inc_l = inc_l + 1
      done(ctx, "lock")
    elseif r <= 40 then
      setop(ctx, "acquire lock")
      if chance(0.5) then
        o.L:with(function(k)
          local v = S:get(1)
          spin(k)
          S:set(1, v + 1)
        end, math.random(0, 100))
      else
        local _ <close> = o.L:guard()
        local v = S:get(1)
        spin(math.random(0, 100))
        S:set(1, v + 1)
      end
      inc_l = inc_l + 1
      done(ctx, "lock")
    elseif r <= 65 then
      setop(ctx, "acquire rlock")
      local d = rnd(1, 3)
      for _ = 1, d do
        acquire_any(ctx, o.R, "RLock")
        local v = S:get(2)
        spin(math.random(0, 50))
        S:set(2, v + 1)
        inc_r = inc_r + 1
      end
      for _ = 1, d do o.R:release() end
      done(ctx, "rlock", d)
    elseif r <= 85 then
      setop(ctx, "acquire sem")
      acquire_any(ctx, o.sem, "Semaphore")
      inside(3, o.k1, "Semaphore")
      o.sem:release()
      done(ctx, "semaphore")
    else
      setop(ctx, "acquire bsem")
      acquire_any(ctx, o.bsem, "BoundedSemaphore")
      inside(5, o.k2, "BoundedSemaphore")
      o.bsem:release()
      done(ctx, "bsemaphore")
    end
  end
  rep.inc_l, rep.inc_r = inc_l, inc_r
end

local function locker(ctx, rep, o, iters, tslots)
  local join
  if tslots and #tslots > 0 then join = start_nested(ctx, tslots, lock_loop, o, iters) end
  lock_loop(ctx, rep, o, iters)
  if join then
    join(rep)
    for _, r in ipairs(rep.nested) do
      merge({ops = ctx.ops, checks = 0, msgs = 0, bytes = 0}, r)
      ctx.checks = ctx.checks + r.checks
      rep.inc_l = rep.inc_l + r.inc_l
      rep.inc_r = rep.inc_r + r.inc_r
    end
    rep.nested = nil
  end
end

-- Takes a Lock and an RLock (twice), says so, then dies or ends holding them.
local function holder(ctx, rep, K, KR, held, forever, how)
  setop(ctx, "hold locks")
  K:acquire()
  KR:acquire()
  KR:acquire()
  held:set()
  if how == "kill" then forever:wait() end
end

local function lock_round(D)
  local sc = D.cfg.scale
  local k1, k2 = rnd(1, 4), rnd(1, 3)
  local o = {L = concur.Lock(), R = concur.RLock(), M = concur.Lock(), S = core.Slots(8),
    sem = concur.Semaphore(k1), bsem = concur.BoundedSemaphore(k2), k1 = k1, k2 = k2}
  local nw = rnd(2, 6)
  setop(D, "round setup")
  for _ = 1, nw do
    local kind = pick_kind(D)
    local iters = math.max(1, math.floor(rnd(100, 1200) * sc))
    local tslots
    if kind == 2 and D.cfg.nested and chance(0.3) then
      tslots = {}
      for k = 1, rnd(1, 2) do tslots[k] = alloc_slot(D) end
    end
    spawn(D, kind, "locker", nil, locker, o, iters, tslots)
  end
  -- A process that dies (or ends) holding a Lock and an RLock: the next
  -- acquire takes them over.
  local takeover
  if not D.cfg.threads_only and chance(0.3) then
    local K, KR, held, forever = concur.Lock(), concur.RLock(), concur.Event(), concur.Event()
    local how = (D.cfg.kills and chance(0.6)) and "kill" or "exit"
    local w = spawn(D, 2, "holder", {special = true, noreport = true}, holder, K, KR, held, forever, how)
    takeover = {w = w, K = K, KR = KR, held = held, how = how}
  end
  if takeover then
    setop(D, "kill victim")
    takeover.held:wait()
    local h = takeover.w.h
    if takeover.how == "kill" then h:kill() end
    h:join()
    if takeover.how == "kill" then
      check(D, h.exitcode == -9, "killed holder: exit code %s", tostring(h.exitcode))
      D.stats.notes.procs_killed = (D.stats.notes.procs_killed or 0) + 1
      live_add(D, 2, -1)
    else
      check(D, h.exitcode == 0, "holder: exit code %s", tostring(h.exitcode))
    end
    D.G:set(sbase(takeover.w.slot) + P_KIND, 0)
    local t0 = concur.time()
    check(D, takeover.K:acquire(true, 10), "Lock of a dead holder (%s) not taken over in 10 s", takeover.how)
    check(D, takeover.KR:acquire(true, 10), "RLock of a dead holder (%s) not taken over in 10 s", takeover.how)
    local dt = concur.time() - t0
    takeover.KR:release()
    check(D, not takeover.KR:locked(), "RLock taken over with a count")
    takeover.K:release()
    local n = D.stats.notes
    n.lock_takeovers = (n.lock_takeovers or 0) + 1
    n.max_takeover_s = math.max(n.max_takeover_s or 0, dt)
    done(D, "lock", 2)
  end
  finish_round(D)
  local S = o.S
  local il, ir = sum_role(D, "locker", "inc_l"), sum_role(D, "locker", "inc_r")
  check(D, S:get(1) == il, "Lock counter %d, %d increments made", S:get(1), il)
  check(D, S:get(2) == ir, "RLock counter %d, %d increments made", S:get(2), ir)
  check(D, S:get(3) == 0 and S:get(5) == 0, "semaphore holders left: %d, %d", S:get(3), S:get(5))
  check(D, S:get(4) <= k1 and S:get(6) <= k2, "semaphore peaks %d/%d, %d/%d", S:get(4), k1, S:get(6), k2)
  check(D, not o.L:locked() and not o.R:locked(), "a lock is still held after the round")
  local ok, e = pcall(o.L.release, o.L)
  check(D, not ok and tostring(e):find("release unlocked lock", 1, true), "release of an unlocked Lock: %s", tostring(e))
  -- Each semaphore is back at its value.
  for _, p in ipairs({{o.sem, k1}, {o.bsem, k2}}) do
    local s, k = p[1], p[2]
    for i = 1, k do check(D, s:acquire(false), "semaphore value below %d after the round (%d)", k, i - 1) end
    check(D, not s:acquire(false), "semaphore value above %d after the round", k)
    s:release(k)
  end
  local ok2, e2 = pcall(o.bsem.release, o.bsem)
  check(D, not ok2 and tostring(e2):find("too many times", 1, true), "BoundedSemaphore over-release: %s", tostring(e2))
  D.stats.notes.sem_peak = math.max(D.stats.notes.sem_peak or 0, S:get(4))
end

------------------------------------------------------------------------------
-- Workload: Condition (bounded buffer in Slots)
------------------------------------------------------------------------------

-- Slots cells: 1 items in the buffer, 2 produced, 3 consumed.
local function cond_wait(ctx, cv, pred, tmode)
  setop(ctx, "cond wait")
  if tmode == 1 then
    check(ctx, cv:wait_for(pred) == true, "wait_for without timeout returned a false value")
  elseif tmode == 2 then
    while not cv:wait_for(pred, TIMEOUTS[math.random(#TIMEOUTS)]) do ctx.ops.cond_timeouts = (ctx.ops.cond_timeouts or 0) + 1 end
  else
    while not pred() do
      if chance(0.5) then check(ctx, cv:wait() == true, "wait() without timeout returned false")
      else cv:wait(TIMEOUTS[math.random(#TIMEOUTS)]) end
    end
  end
end

local function cond_enter(o)
  local depth = 1
  o.nf:acquire()
  if o.rl and chance(0.5) then o.nf:acquire(); depth = 2 end
  return depth
end

local function cond_leave(o, depth)
  for _ = 1, depth do o.nf:release() end
end

local function cond_producer(ctx, rep, o, n, tmode)
  local S, cap = o.S, o.cap
  local function has_room() return S:get(1) < cap end
  for _ = 1, n do
    local depth = cond_enter(o)
    cond_wait(ctx, o.nf, has_room, tmode)
    local c = S:get(1)
    check(ctx, c < cap, "producer passed a full buffer (%d/%d)", c, cap)
    S:set(1, c + 1)
    S:set(2, S:get(2) + 1)
    setop(ctx, "cond notify")
    if o.all or chance(0.3) then o.ne:notify_all() else o.ne:notify() end
    cond_leave(o, depth)
    done(ctx, "condition")
  end
  rep.produced = n
end

local function cond_consumer(ctx, rep, o, tmode)
  local S, T = o.S, o.T
  local got = 0
  local function ready() return S:get(1) > 0 or S:get(3) == T end
  while true do
    local depth = cond_enter(o)
    cond_wait(ctx, o.ne, ready, tmode)
    local c = S:get(1)
    if c > 0 then
      S:set(1, c - 1)
      local taken = S:get(3) + 1
      S:set(3, taken)
      check(ctx, taken <= T, "consumed %d of %d items", taken, T)
      got = got + 1
      setop(ctx, "cond notify")
      if taken == T then o.ne:notify_all() end
      if o.all or chance(0.3) then o.nf:notify_all() else o.nf:notify(rnd(1, 2)) end
      cond_leave(o, depth)
      done(ctx, "condition")
    else
      check(ctx, S:get(3) == T, "consumer woke with an empty buffer before the end")
      cond_leave(o, depth)
      break
    end
  end
  rep.got = got
end

local function cond_round(D)
  local sc = D.cfg.scale
  local rl = chance(0.5)
  local lock = rl and concur.RLock() or concur.Lock()
  local o = {S = core.Slots(4), cap = rnd(1, 8), rl = rl}
  if chance(0.3) then
    -- One Condition for both sides: every notification is notify_all.
    local cv = chance(0.5) and concur.Condition() or concur.Condition(lock)
    o.nf, o.ne, o.all, o.rl = cv, cv, true, (cv ~= nil and tostring(cv):find("RLock", 1, true) ~= nil)
  else
    o.nf, o.ne = concur.Condition(lock), concur.Condition(lock)
  end
  local np, nc = rnd(1, 3), rnd(1, 3)
  local ns, T = {}, 0
  for i = 1, np do ns[i] = math.max(1, math.floor(rnd(50, 400) * sc)); T = T + ns[i] end
  o.T = T
  local tmode = rnd(1, 3)
  setop(D, "round setup")
  local plan = {}
  for i = 1, np do plan[#plan + 1] = {"P", i} end
  for i = 1, nc do plan[#plan + 1] = {"C", i} end
  for _, e in ipairs(shuffle(plan)) do
    local tm = chance(0.7) and tmode or rnd(1, 3)
    if e[1] == "P" then
      spawn(D, pick_kind(D), "cond-producer", nil, cond_producer, o, ns[e[2]], tm)
    else
      spawn(D, pick_kind(D), "cond-consumer", nil, cond_consumer, o, tm)
    end
  end
  finish_round(D)
  local S = o.S
  check(D, S:get(1) == 0, "%d items left in the buffer", S:get(1))
  check(D, S:get(2) == T and S:get(3) == T, "produced %d, consumed %d, expected %d", S:get(2), S:get(3), T)
  check(D, sum_role(D, "cond-consumer", "got") == T, "consumers report %d items of %d",
    sum_role(D, "cond-consumer", "got"), T)
  check(D, not lock:locked(), "the Condition's lock is held after the round")
  local ok, e = pcall(o.ne.notify, o.ne)
  check(D, not ok and tostring(e):find("un-acquired", 1, true), "notify without the lock: %s", tostring(e))
end

------------------------------------------------------------------------------
-- Workload: Event ping-pong, a gate, Timers
------------------------------------------------------------------------------

local function ev_wait(ctx, e, tmode)
  setop(ctx, "event wait")
  if tmode == 1 then
    check(ctx, e:wait() == true, "Event:wait() returned false")
  elseif tmode == 2 then
    while not e:wait(TIMEOUTS[math.random(#TIMEOUTS)]) do end
  else
    for _ = 1, 20 do if e:is_set() then return end end
    check(ctx, e:wait(nil) == true, "Event:wait(nil) returned false")
  end
end

local function pinger(ctx, rep, e1, e2, S, cell, n, tmode)
  for i = 1, n do
    S:set(cell, i)
    setop(ctx, "event set")
    e1:set()
    ev_wait(ctx, e2, tmode)
    e2:clear()
    check(ctx, S:get(cell + 1) == i, "exchange %d: answer %d", i, S:get(cell + 1))
    done(ctx, "event")
  end
  rep.exchanges = n
end

local function ponger(ctx, rep, e1, e2, S, cell, n, tmode)
  for i = 1, n do
    ev_wait(ctx, e1, tmode)
    e1:clear()
    check(ctx, S:get(cell) == i, "exchange %d: got %d", i, S:get(cell))
    S:set(cell + 1, i)
    setop(ctx, "event set")
    e2:set()
    done(ctx, "event")
  end
end

local function gate_waiter(ctx, rep, ready, gate, never)
  ready:release()
  while not gate:wait(TIMEOUTS[math.random(#TIMEOUTS)] * 10) do setop(ctx, "event wait") end
  check(ctx, gate:is_set(), "gate passed but not set")
  done(ctx, "event")
  local tw = rnd(5, 40) / 1000
  local t0 = concur.time()
  local r = never:wait(tw)
  local dt = concur.time() - t0
  check(ctx, r == false, "wait on an Event nobody sets returned %s", tostring(r))
  check(ctx, dt >= tw - 0.002, "Event:wait(%.3f) returned after %.4f s", tw, dt)
  done(ctx, "event")
end

local function timer_fire(S, L, i)
  L:acquire()
  S:set(1, S:get(1) | (1 << i))
  S:set(2, S:get(2) + 1)
  L:release()
end

local function event_round(D)
  local sc = D.cfg.scale
  local npairs = rnd(1, 3)
  local S = core.Slots(2 * npairs + 2)
  setop(D, "round setup")
  for k = 1, npairs do
    local e1, e2 = concur.Event(), concur.Event()
    local n = math.max(1, math.floor(rnd(50, 500) * sc))
    local tmode = rnd(1, 3)
    local cell = 2 * k - 1
    spawn(D, pick_kind(D), "pinger", nil, pinger, e1, e2, S, cell, n, tmode)
    spawn(D, pick_kind(D), "ponger", nil, ponger, e1, e2, S, cell, n, tmode)
  end
  if D.cfg.selftest and D.round == 2 then
    if D.cfg.selftest == "stall" then
      -- a worker that waits for ever: the watchdog must name it
      spawn(D, pick_kind(D), "gate-waiter", nil, function(ctx, rep, ev)
        setop(ctx, "event wait", 99)
        ev:wait()
      end, concur.Event())
    else
      check(D, false, "self-test: an injected failure")
    end
  end
  -- A gate: everyone waits, the driver opens it once all are there.
  local nw = rnd(1, 5)
  local ready, gate, never = concur.Semaphore(0), concur.Event(), concur.Event()
  for _ = 1, nw do spawn(D, pick_kind(D), "gate-waiter", nil, gate_waiter, ready, gate, never) end
  for _ = 1, nw do setop(D, "gate wait"); ready:acquire() end
  setop(D, "event set")
  gate:set()
  done(D, "event")
  -- Timers: the short ones fire exactly once, the cancelled long ones never.
  setop(D, "timers")
  local TS, TL = core.Slots(2), concur.Lock()
  local timers, expect, nexp = {}, 0, 0
  for i = 1, rnd(1, 6) do
    if chance(0.4) then
      local t = concur.Timer(30, timer_fire, {TS, TL, i})
      t:start()
      t:cancel()
      timers[#timers + 1] = t
    else
      local t = concur.Timer(rnd(0, 30) / 1000, timer_fire, {TS, TL, i})
      t:start()
      timers[#timers + 1] = t
      expect, nexp = expect | (1 << i), nexp + 1
    end
  end
  for _, t in ipairs(timers) do
    check(D, t:join(25), "a timer did not end")
  end
  check(D, TS:get(1) == expect and TS:get(2) == nexp, "timers fired %x (%d), expected %x (%d)",
    TS:get(1), TS:get(2), expect, nexp)
  done(D, "timer", #timers)
  finish_round(D)
  gate:clear()
  check(D, not gate:is_set(), "Event set after clear")
  check(D, not never:is_set() and not never:isSet(), "an Event nobody set is set")
end

------------------------------------------------------------------------------
-- Workload: Barrier
------------------------------------------------------------------------------

-- Slots cells: 1 phase (rounds whose action ran), 2 the phase at which the
-- action raises (0: never), 3.. bits of the indices returned in round r.
local function barrier_party(ctx, rep, o, me, R, special, f, tmo)
  local S, P = o.S, o.P
  local expected = 0
  rep.broken, rep.action_err, rep.aborted = 0, 0, 0
  for r = 1, R do
    local ph = S:get(1)
    check(ctx, ph == expected, "round %d: phase %d before wait, expected %d", r, ph, expected)
    setop(ctx, "barrier wait", r % 1000)
    if special == "abort" and r == f and me == 1 then
      if f > 1 then for _ = 1, P - 1 do o.left:acquire() end end
      o.b1:abort()
      rep.aborted = 1
    else
      local ok, idx = pcall(o.b1.wait, o.b1, tmo)
      if ok then
        check(ctx, r ~= f or special == "none", "round %d passed, but was to break", r)
        check(ctx, math.type(idx) == "integer" and idx >= 0 and idx < P, "index %s of %d parties", tostring(idx), P)
        check(ctx, S:get(1) == expected + 1, "round %d: phase %d after wait, expected %d", r, S:get(1), expected + 1)
        local bit = 1 << idx
        o.M:acquire()
        local bits = S:get(2 + r)
        S:set(2 + r, bits | bit)
        o.M:release()
        check(ctx, bits & bit == 0, "index %d returned twice in round %d", idx, r)
        expected = expected + 1
        -- An abort breaks waiters of the last round that have not left yet
        -- (as in Python): the aborter waits until everyone has.
        if special == "abort" and r == f - 1 and me ~= 1 then o.left:release() end
      elseif idx == Broken then
        check(ctx, r == f and special ~= "none", "BrokenBarrierError in round %d (planned: %s at %d)", r, special, f)
        rep.broken = rep.broken + 1
      elseif type(idx) == "string" and idx:find("planned action failure", 1, true) then
        check(ctx, r == f and special == "action", "action error in round %d", r)
        rep.action_err = rep.action_err + 1
      else
        error(idx, 0)
      end
    end
    if r == f and special ~= "none" then
      setop(ctx, "barrier2 wait", r % 1000)
      o.b2:wait(tmo)   -- its action resets b1
    end
    done(ctx, "barrier")
  end
end

local function doomed_party(ctx, rep, bx, t)
  setop(ctx, "barrier wait")
  local ok, e = pcall(bx.wait, bx, t)
  check(ctx, not ok and e == Broken, "a barrier that cannot fill: wait gave %s %s", tostring(ok), tostring(e))
  done(ctx, "barrier")
end

local function barrier_round(D)
  local sc = D.cfg.scale
  local P = rnd(2, 5)
  local R = math.max(2, math.floor(rnd(10, 60) * sc))
  local S = core.Slots(2 + R)
  local special = ({"none", "none", "abort", "action"})[rnd(1, 4)]
  local f = rnd(1, R)
  if special == "action" then S:set(2, f) end
  local b1 = concur.Barrier(P, function()
    local ph = S:get(1)
    if S:get(2) == ph + 1 then error("planned action failure") end
    S:set(1, ph + 1)
  end, chance(0.5) and 60 or nil)
  local b2 = concur.Barrier(P, function() b1:reset(); S:set(2, 0) end)
  local o = {S = S, P = P, M = concur.Lock(), b1 = b1, b2 = b2, left = concur.Semaphore(0)}
  local tmo = chance(0.5) and 60 or nil
  setop(D, "round setup")
  local order = {}
  for me = 1, P do order[me] = me end
  for _, me in ipairs(shuffle(order)) do
    spawn(D, pick_kind(D), "party", nil, barrier_party, o, me, R, special, f, tmo)
  end
  -- A barrier that cannot fill: its waiters time out, or the driver breaks it.
  local bx
  if chance(0.4) then
    local n = rnd(1, 3)
    bx = concur.Barrier(n + 1)
    for _ = 1, n do spawn(D, pick_kind(D), "doomed-party", nil, doomed_party, bx, rnd(20, 300) / 1000) end
    local act = rnd(1, 3)
    if act == 2 then bx:reset() elseif act == 3 then bx:abort() end
  end
  finish_round(D)
  local ok_rounds = R - (special == "none" and 0 or 1)
  check(D, S:get(1) == ok_rounds, "phase %d after %d rounds, expected %d", S:get(1), R, ok_rounds)
  local full = (1 << P) - 1
  for r = 1, R do
    local want = (special ~= "none" and r == f) and 0 or full
    check(D, S:get(2 + r) == want, "round %d: indices %x, expected %x", r, S:get(2 + r), want)
  end
  local broken, aerr, aborted = sum_role(D, "party", "broken"), sum_role(D, "party", "action_err"),
    sum_role(D, "party", "aborted")
  if special == "abort" then
    check(D, broken == P - 1 and aborted == 1, "abort: %d broken, %d aborted of %d", broken, aborted, P)
  elseif special == "action" then
    check(D, broken == P - 1 and aerr == 1, "action error: %d broken, %d action errors of %d", broken, aerr, P)
  else
    check(D, broken == 0 and aerr == 0, "no break planned, but %d broken", broken)
  end
  check(D, not b1.broken and b1.n_waiting == 0 and b1.parties == P, "barrier left %s", tostring(b1))
  if bx then
    bx:reset()
    check(D, not bx.broken and bx.n_waiting == 0, "reset barrier: %s", tostring(bx))
  end
  if special ~= "none" then
    local n = D.stats.notes
    n["barrier_" .. special] = (n["barrier_" .. special] or 0) + 1
  end
end

------------------------------------------------------------------------------
-- Workload: Pool and ThreadPool
------------------------------------------------------------------------------

local function pool_round(D)
  local sc = D.cfg.scale
  local threads = D.cfg.threads_only or chance(0.5)
  local n = rnd(1, 3)
  local K = rnd(1, 1000)
  local cat = threads and "threadpool" or "pool"
  setop(D, "round setup")
  local pool
  if chance(0.5) then
    pool = (threads and concur.ThreadPool or concur.Pool)(n, function(k) STRESS_K = k end, {K})
  else
    pool = (threads and concur.ThreadPool or concur.Pool){processes = n,
      initializer = function(k) STRESS_K = k end, initargs = {K}}
  end
  live_add(D, threads and 1 or 2, n)
  if threads then D.stats.threads = D.stats.threads + n else D.stats.procs = D.stats.procs + n end
  local G, pb = D.G, D.b + P_PROG
  local pending = {}
  local function list_of(len)
    local l = {}
    for i = 1, len do l[i] = rnd(-1000, 1000) end
    return l
  end
  for _ = 1, rnd(3, 8) do
    setop(D, "pool call", 1)
    local what = rnd(1, 9)
    if what == 1 then
      local l = list_of(math.floor(rnd(0, 2000) * sc))
      local cs = chance(0.5) and rnd(1, 50) or nil
      local res = pool:map(function(x) return x * x + STRESS_K end, l, cs)
      check(D, #res == #l, "map: %d results for %d items", #res, #l)
      for i = 1, #l do check(D, res[i] == l[i] * l[i] + K, "map: item %d", i) end
      done(D, cat, #l)
    elseif what == 2 then
      local l = {}
      for i = 1, math.floor(rnd(1, 500) * sc) do l[i] = {rnd(-99, 99), rnd(-99, 99)} end
      local res = pool:starmap(function(a, b) return a * b - STRESS_K end, l)
      for i = 1, #l do check(D, res[i] == l[i][1] * l[i][2] - K, "starmap: item %d", i) end
      done(D, cat, #l)
    elseif what == 3 then
      local m = rnd(1, 60)
      local cbs, rs = 0, {}
      for i = 1, m do
        rs[i] = pool:apply_async(function(a, b)
          G:set(pb, G:get(pb) + 1)   -- progress seen by the watchdog
          return a + b, a * b, STRESS_K
        end, {i, 7}, function(s) cbs = cbs + 1 end)
      end
      for i = 1, m do
        local s, p, k = rs[i]:get(30)
        check(D, s == i + 7 and p == i * 7 and k == K, "apply_async %d: %s %s %s", i, tostring(s), tostring(p), tostring(k))
        check(D, rs[i]:ready() and rs[i]:successful(), "apply_async %d: not ready after get", i)
      end
      check(D, cbs == m, "%d callbacks for %d results", cbs, m)
      done(D, cat, m)
    elseif what == 4 then
      local l = list_of(math.floor(rnd(1, 300) * sc) + 1)
      local i0 = 0
      for v, i in pool:imap(function(x) return x - STRESS_K end, l, chance(0.5) and rnd(1, 10) or nil) do
        i0 = i0 + 1
        check(D, i == i0 and v == l[i] - K, "imap: item %d (index %s)", i0, tostring(i))
        bump(D)
      end
      check(D, i0 == #l, "imap gave %d of %d", i0, #l)
      done(D, cat, #l)
    elseif what == 5 then
      local l = list_of(math.floor(rnd(1, 300) * sc) + 1)
      local seen, c = {}, 0
      for v, i in pool:imap_unordered(function(x) return x + 2 * STRESS_K end, l) do
        check(D, not seen[i] and v == l[i] + 2 * K, "imap_unordered: item %s", tostring(i))
        seen[i] = true
        c = c + 1
        bump(D)
      end
      check(D, c == #l, "imap_unordered gave %d of %d", c, #l)
      done(D, cat, #l)
    elseif what == 6 then
      local ecb
      local r = pool:apply_async(function(x) error("planned task error " .. x) end, {K}, nil,
        function(e) ecb = e end)
      local ok, e = pcall(r.get, r, 30)
      check(D, not ok and tostring(e):find("planned task error " .. K, 1, true), "failing task: %s", tostring(e))
      check(D, r:ready() and not r:successful(), "failing task: successful")
      check(D, ecb ~= nil, "error_callback not called")
      -- the worker lives on
      check(D, pool:apply(function() return STRESS_K end) == K, "pool after a task error")
      done(D, cat, 2)
    elseif what == 7 then
      local size, c = rnd(0, 300000), string.char(rnd(65, 90))
      local s = pool:apply(function(k, ch) return string.rep(ch, k) end, {size, c})
      check(D, #s == size and s == string.rep(c, size), "large result of %d bytes", size)
      D.stats.bytes = D.stats.bytes + size
      done(D, cat)
    elseif what == 8 then
      local tbl = {}
      for i = 1, rnd(1, 200) do tbl[i] = {v = i * 3, s = tostring(i)} end
      local idx = {}
      for i = 1, #tbl do idx[i] = i end
      local res = pool:map(function(i) return tbl[i].v + #tbl[i].s end, idx)
      for i = 1, #tbl do check(D, res[i] == i * 3 + #tostring(i), "closure map: item %d", i) end
      done(D, cat, #tbl)
    else
      -- left running: checked at close/join or after terminate
      for _ = 1, rnd(1, 20) do
        local a = rnd(1, 1000)
        pending[#pending + 1] = {r = pool:apply_async(function(x) return x * 2 + STRESS_K end, {a}), a = a}
      end
      done(D, cat)
    end
  end
  if chance(0.7) or (not threads and not D.cfg.kills) then
    setop(D, "pool call", 2)
    pool:close()
    pool:join()
    for _, p in ipairs(pending) do
      check(D, p.r:ready(), "a task not ready after join")
      check(D, p.r:get() == p.a * 2 + K, "async result after join")
    end
  else
    setop(D, "pool call", 3)
    pool:terminate()
    for _, p in ipairs(pending) do
      local ok, v = pcall(p.r.get, p.r, 5)
      check(D, (ok and v == p.a * 2 + K) or (not ok and tostring(v):find("terminated", 1, true)),
        "after terminate: %s %s", tostring(ok), tostring(v))
    end
    D.stats.notes.pool_terminates = (D.stats.notes.pool_terminates or 0) + 1
    if not threads then D.stats.notes.proc_pool_terminates = (D.stats.notes.proc_pool_terminates or 0) + 1 end
  end
  done(D, cat, #pending)
  live_add(D, threads and 1 or 2, -n)
end

------------------------------------------------------------------------------
-- Workload: Pipe
------------------------------------------------------------------------------

-- Message i of a pair: its kind and size.  Both ends compute the same plan
-- (pure: no math.random, whose state differs between the ends).
local function pipe_plan(ps, i)
  local h = mix(ps, i)
  local k = pick(h, 20)
  local size
  if pick(mix(h, 3), 400) == 0 then size = (1 + pick(mix(h, 8), 4)) * 1024 * 1024 - pick(mix(h, 5), 1000)
  elseif pick(mix(h, 4), 8) == 0 then size = 100 + pick(mix(h, 6), 60000)
  else size = pick(mix(h, 7), 300) end
  local kind
  if k < 8 then kind = "str" elseif k < 13 then kind = "bytes" elseif k < 19 then kind = "table" else kind = "toolong" end
  if kind == "toolong" and size < 1 then size = 1 end
  return kind, size
end

local function pipe_send(ctx, conn, ps, i, kind, size)
  setop(ctx, "send pipe", i % 1000)
  local p = payload(ps & 0xffff, i, size)
  if kind == "str" then
    conn:send(p)
  elseif kind == "bytes" or kind == "toolong" then
    local pre, post = string.rep("<", rnd(0, 9)), string.rep(">", rnd(0, 9))
    conn:send_bytes(pre .. p .. post, #pre, size)
  else
    conn:send({i = i, n = size, data = p, list = {i, -i, i + 0.25}, nested = {{i}}})
  end
end

local function pipe_recv(ctx, conn, ps, i, kind, size)
  if chance(0.3) then
    setop(ctx, "poll pipe", i % 1000)
    while not conn:poll(TIMEOUTS[math.random(#TIMEOUTS)] * 10) do end
    check(ctx, conn:poll(), "poll() false after poll(t) true")
  end
  setop(ctx, "recv pipe", i % 1000)
  if kind == "toolong" then
    local ok, e = pcall(conn.recv_bytes, conn, size - 1)
    check(ctx, not ok and tostring(e):find("longer than maxlength", 1, true), "message %d of %d bytes with maxlength %d: %s", i, size, size - 1, tostring(e))
    return 0
  end
  local p = payload(ps & 0xffff, i, size)
  if kind == "table" then
    local t = conn:recv()
    check(ctx, type(t) == "table" and t.i == i and t.n == size and t.data == p, "table message %d corrupted", i)
    check(ctx, t.list[1] == i and t.list[2] == -i and t.list[3] == i + 0.25 and t.nested[1][1] == i, "table message %d fields", i)
  else
    local s
    if chance(0.5) then s = conn:recv() else s = conn:recv_bytes(chance(0.5) and size or nil) end
    check(ctx, s == p, "message %d (%s, %d bytes): got %s bytes, corrupted", i, kind, size, type(s) == "string" and #s or type(s))
  end
  return size
end

-- Duplex: each message is answered with {i, n}; then BYE.
local function pipe_pinger(ctx, rep, conn, other, n, ps)
  if ctx.kind == 2 and other then other:close() end
  local bytes = 0
  for i = 1, n do
    local kind, size = pipe_plan(ps, i)
    pipe_send(ctx, conn, ps, i, kind, size)
    setop(ctx, "recv pipe", i % 1000)
    local r = conn:recv()
    check(ctx, type(r) == "table" and r.i == i and r.n == size, "answer to %d: %s", i, tostring(r and r.i))
    bytes = bytes + size
    done(ctx, "pipe", 2)
  end
  conn:send("BYE")
  check(ctx, conn:recv() == "BYE-ACK", "no BYE-ACK")
  rep.msgs, rep.bytes = n, bytes
  if ctx.kind == 2 then conn:close() end
end

local function pipe_ponger(ctx, rep, conn, other, n, ps)
  if ctx.kind == 2 and other then other:close() end
  for i = 1, n do
    local kind, size = pipe_plan(ps, i)
    pipe_recv(ctx, conn, ps, i, kind, size)
    setop(ctx, "send pipe", i % 1000)
    conn:send({i = i, n = size})
    done(ctx, "pipe")
  end
  check(ctx, conn:recv() == "BYE", "no BYE")
  conn:send("BYE-ACK")
  if ctx.kind == 2 then conn:close() end
end

-- Simplex (Pipe(false)): a stream of messages, then END.
local function pipe_sender(ctx, rep, conn, other, n, ps)
  if ctx.kind == 2 and other then other:close() end
  local ok, e = pcall(conn.recv, conn)
  check(ctx, not ok and tostring(e):find("write-only", 1, true), "recv on a send-only end: %s", tostring(e))
  for i = 1, n do
    local kind, size = pipe_plan(ps, i)
    pipe_send(ctx, conn, ps, i, kind, size)
    done(ctx, "pipe")
  end
  conn:send("END")
  if ctx.kind == 2 then conn:close() end
end

local function pipe_receiver(ctx, rep, conn, other, n, ps)
  if ctx.kind == 2 and other then other:close() end
  local bytes = 0
  for i = 1, n do
    local kind, size = pipe_plan(ps, i)
    bytes = bytes + pipe_recv(ctx, conn, ps, i, kind, size)
    done(ctx, "pipe")
  end
  check(ctx, conn:recv() == "END", "no END")
  rep.msgs, rep.bytes = n, bytes
  if ctx.kind == 2 then conn:close() end
end

-- In a child: a Pipe of its own, a thread that writes and closes, a read to
-- end of stream (nobody else holds these fds).
local function eof_child(ctx, rep, m)
  local a, b = concur.Pipe(false)
  local t = concur.Thread{target = function(conn, k)
    for i = 1, k do conn:send(i) end
    conn:close()
  end, args = {b, m}, daemon = true}
  t:start()
  local got = 0
  while true do
    setop(ctx, "recv pipe")
    local ok, v = pcall(a.recv, a)
    if not ok then
      check(ctx, tostring(v):find("^end of stream"), "expected end of stream, got %s", tostring(v))
      break
    end
    got = got + 1
    check(ctx, v == got, "eof stream: %s at %d", tostring(v), got)
    done(ctx, "pipe")
  end
  check(ctx, t:join(30), "writer thread did not end")
  check(ctx, got == m, "eof stream: %d of %d", got, m)
  a:close()
  rep.msgs = got
end

local function pipe_round(D)
  local sc = D.cfg.scale
  setop(D, "round setup")
  local keep = {}   -- ends the driver closes after the round
  for _ = 1, rnd(1, 3) do
    local duplex = chance(0.6)
    local a, b = concur.Pipe(duplex)
    local ka, kb = pick_kind(D), pick_kind(D)
    local n = math.max(1, math.floor(rnd(20, 300) * sc))
    local ps = math.random(1, 1 << 40)
    if duplex then
      spawn(D, ka, "pinger", nil, pipe_pinger, a, b, n, ps)
      spawn(D, kb, "ponger", nil, pipe_ponger, b, a, n, ps)
    else
      spawn(D, kb, "pipe-sender", nil, pipe_sender, b, a, n, ps)
      spawn(D, ka, "pipe-receiver", nil, pipe_receiver, a, b, n, ps)
    end
    -- The driver's copies of the processes' ends are not used here.
    if ka == 2 then a:close() else keep[#keep + 1] = a end
    if kb == 2 then b:close() else keep[#keep + 1] = b end
  end
  if not D.cfg.threads_only and D.cfg.nested and chance(0.3) then
    spawn(D, 2, "eof-child", nil, eof_child, rnd(1, 200))
  end
  finish_round(D)
  for _, c in ipairs(keep) do c:close() end
  for _, r in ipairs(D.reports) do
    if r.role == "pinger" or r.role == "pipe-receiver" then
      check(D, r.msgs >= 1, "pipe pair moved nothing")
    end
  end
end

------------------------------------------------------------------------------
-- Drivers
------------------------------------------------------------------------------

local WORKLOADS = {
  {name = "queue1", kind = "queue", round = queue_round},
  {name = "queue2", kind = "queue", round = queue_round},
  {name = "lock", kind = "lock", round = lock_round},
  {name = "cond", kind = "cond", round = cond_round},
  {name = "event", kind = "event", round = event_round},
  {name = "barrier", kind = "barrier", round = barrier_round},
  {name = "pool", kind = "pool", round = pool_round},
  {name = "pipe", kind = "pipe", round = pipe_round},
}

local function driver_main(env, index, name, seed, round_fn)
  math.randomseed(seed, index)
  local D = {G = env.G, live = env.live, failq = env.failq, fail_ev = env.fail_ev, cfg = env.cfg,
    name = name, slot = (index - 1) * BLOCK + 1, round = 0, kind = 3, role = "driver",
    stats = {rounds = 0, ops = {}, checks = 0, msgs = 0, bytes = 0, threads = 0, procs = 0, notes = {}}}
  D.b = sbase(D.slot)
  D.ops, D.checks, D.n = D.stats.ops, 0, 0
  local G = D.G
  prep_slot(G, D.slot, 3, "driver", 0, concur.getpid())
  live_add(D, 1, 1)
  bump(D)
  local ok, err = true, nil
  while concur.time() < env.deadline and not env.fail_ev:is_set() do
    new_round(D)
    ok, err = xpcall(round_fn, debug.traceback, D)
    if not ok then
      fail(D, ("%s round %d (seed %d): %s"):format(name, D.round, env.cfg.seed, tostring(err)))
      break
    end
  end
  D.stats.checks = D.stats.checks + D.checks
  setop(D, "finish")
  live_add(D, 1, -1)
  G:set(D.b + P_KIND, 0)
  D.stats.ok = ok
  return D.stats
end

------------------------------------------------------------------------------
-- Main: start the drivers, watch, summarize
------------------------------------------------------------------------------

local T0 = concur.time()
local env = {G = core.Slots(H + #WORKLOADS * BLOCK * W), live = concur.Lock(), failq = concur.Queue(),
  fail_ev = concur.Event(), cfg = cfg, deadline = T0 + cfg.seconds}
local G = env.G
local mypid = concur.getpid()
collectgarbage()
local SHM0 = core.shm_in_use()

local mode = cfg.threads_only and "threads only" or (cfg.nested and "threads + processes" or "threads + processes (no nested threads)")
print(("stress: %g s, seed %d, %s, stall limit %g s, scale %g (replay: stress.lua %g %d%s)"):format(
  cfg.seconds, cfg.seed, mode, cfg.stall, cfg.scale, cfg.seconds, cfg.seed,
  (cfg.threads_only and " --threads-only" or "") .. (cfg.nested and "" or " --no-nested")))
io.stdout:flush()

local drivers = {}
for i, wl in ipairs(WORKLOADS) do
  if not cfg.only or cfg.only[wl.kind] or cfg.only[wl.name] then
    local t = concur.Thread{target = driver_main, name = "driver-" .. wl.name, daemon = true,
      args = {env, i, wl.name, cfg.seed * 100 + i, wl.round}}
    t:start()
    drivers[#drivers + 1] = {t = t, wl = wl, index = i}
  end
end
if #drivers == 0 then io.stderr:write("stress: no workload selected\n"); os.exit(2) end

local function slot_name(s)
  local bi = (s - 1) // BLOCK + 1
  local wl = WORKLOADS[bi]
  local b = sbase(s)
  local role = ROLES[G:get(b + P_ROLE)] or "?"
  if (s - 1) % BLOCK == 0 then return ("%s (driver)"):format(wl and wl.name or "?") end
  return ("%s.r%d.%s@%d"):format(wl and wl.name or "?", G:get(b + P_ROUND), role, (s - 1) % BLOCK)
end

local function op_name(v)
  if v == 0 then return "-" end
  local code, obj = v // 1000, v % 1000
  local n = OPS[code] or ("op" .. code)
  if obj ~= 0 then n = n .. (n:sub(-2) == " q" and "" or " #") .. obj end
  return n
end

local NSLOTS = #WORKLOADS * BLOCK
local seen = {}   -- slot -> {prog, round, kind, t}

local function sample(now)
  for s = 1, NSLOTS do
    local b = sbase(s)
    local kind = G:get(b + P_KIND)
    local e = seen[s]
    if kind ~= 0 then
      local prog, round = G:get(b + P_PROG), G:get(b + P_ROUND)
      if not e or e.prog ~= prog or e.round ~= round or e.kind ~= kind then
        seen[s] = {prog = prog, round = round, kind = kind, t = now}
      end
    elseif e then
      seen[s] = nil
    end
  end
end

local function active_in_block(s)
  local first = (s - 1) // BLOCK * BLOCK + 1
  for x = first + 1, first + BLOCK - 1 do
    if G:get(sbase(x) + P_KIND) ~= 0 then return true end
  end
  return false
end

local function stalled(now)
  local out = {}
  for s, e in pairs(seen) do
    if now - e.t > cfg.stall then
      local op = G:get(sbase(s) + P_OP) // 1000
      if not (SUPERVISE[op] and active_in_block(s)) then out[#out + 1] = s end
    end
  end
  table.sort(out)
  return out
end

local function dump(now)
  print("stress: worker states (name, kind, pid, current op, progress count, seconds since progress):")
  local n = 0
  for s = 1, NSLOTS do
    local b = sbase(s)
    local kind = G:get(b + P_KIND)
    if kind ~= 0 then
      local e = seen[s]
      print(("  %-34s %-8s pid %-7d %-22s %8d  %6.1f s"):format(slot_name(s), KIND_NAME[kind] or "?",
        G:get(b + P_PID), op_name(G:get(b + P_OP)), G:get(b + P_PROG), e and (now - e.t) or 0))
      n = n + 1
    end
  end
  if n == 0 then print("  (no active worker)") end
  print(("stress: live threads %d, live processes %d"):format(G:get(LIVE_T), G:get(LIVE_P)))
end

-- Kills this process's children (by pid: the workers' records and the
-- kernel's list of children), then leaves with status `code`.
local function kill_and_exit(code)
  G:set(STOPPING, 1)   -- drivers start no more workers
  env.fail_ev:set()    -- nor rounds
  if cfg.hold > 0 then
    print(("stress: holding %g s before killing (main pid %d)"):format(cfg.hold, mypid))
    io.stdout:flush()
    concur.sleep(cfg.hold)
  end
  -- A driver may be forking right now: kill until no child is left.
  local killed, quiet = {}, 0
  for _ = 1, 50 do
    local pids = {}
    local function add(p)
      p = math.tointeger(tonumber(p))
      if p and p > 1 and p ~= mypid and not killed[p] then killed[p] = true; pids[#pids + 1] = p end
    end
    for s = 1, NSLOTS do
      local b = sbase(s)
      if G:get(b + P_KIND) == 2 then add(G:get(b + P_PID)) end
    end
    -- (the shell reading the list is a child too: it names itself first)
    local f = io.popen(("echo $$; cat /proc/%d/task/*/children 2>/dev/null"):format(mypid))
    if f then
      local out = f:read("a")
      f:close()
      local sh = out:match("^(%d+)")
      if sh then killed[math.tointeger(tonumber(sh))] = true end
      for p in out:gmatch("%d+") do add(p) end
    end
    if #pids > 0 then
      print("stress: killing child processes " .. table.concat(pids, " "))
      os.execute("kill -KILL " .. table.concat(pids, " ") .. " 2>/dev/null")
      quiet = 0
    else
      quiet = quiet + 1
      if quiet >= 3 then break end
    end
    concur.sleep(0.1)
  end
  io.stdout:flush()
  io.stderr:flush()
  -- Threads stuck inside concur must not keep the process from ending: a
  -- last resort that ends this very process if the exit rules hang.
  os.execute(("(sleep 15; if grep -q stress /proc/%d/cmdline 2>/dev/null; then kill -KILL %d; fi) >/dev/null 2>&1 &")
    :format(mypid, mypid))
  os.exit(code)
end

local function print_failures()
  while true do
    local ok, m = pcall(env.failq.get_nowait, env.failq)
    if not ok then break end
    print("stress: FAILURE: " .. tostring(m))
  end
end

local hard = T0 + cfg.seconds + cfg.grace
local next_status = T0 + (cfg.status > 0 and cfg.status or math.huge)
local function watch()
while true do
  local failed = env.fail_ev:wait(1.0)
  local now = concur.time()
  sample(now)
  if failed then
    dump(now)           -- the state at the moment of the failure
    concur.sleep(0.2)   -- let other failures of the same moment arrive
    print_failures()
    print(("stress: FAIL (invariant or error; %.1f s in, seed %d)"):format(now - T0, cfg.seed))
    kill_and_exit(1)
  end
  local all = true
  for _, d in ipairs(drivers) do
    if not d.done then
      if d.t:join(0) then d.done = true else all = false end
    end
  end
  if all then return end
  local st = stalled(now)
  if #st > 0 then
    print(("stress: STALL: %d worker(s) made no progress for %g s:"):format(#st, cfg.stall))
    for _, s in ipairs(st) do
      print(("  %s: %s (%s pid %d)"):format(slot_name(s), op_name(G:get(sbase(s) + P_OP)),
        KIND_NAME[G:get(sbase(s) + P_KIND)] or "?", G:get(sbase(s) + P_PID)))
    end
    dump(now)
    print(("stress: FAIL (stall; %.1f s in, seed %d)"):format(now - T0, cfg.seed))
    kill_and_exit(3)
  end
  if now > hard then
    print(("stress: hard deadline (%g s + %g s grace) passed"):format(cfg.seconds, cfg.grace))
    dump(now)
    print(("stress: FAIL (hard deadline; seed %d)"):format(cfg.seed))
    kill_and_exit(4)
  end
  if now >= next_status then
    next_status = now + cfg.status
    local ticks = 0
    for s = 1, NSLOTS do ticks = ticks + G:get(sbase(s) + P_PROG) end
    print(("[%5.0f s] progress %d, live threads %d, processes %d, peak %d/%d, shm %.1f MiB"):format(
      now - T0, ticks, G:get(LIVE_T), G:get(LIVE_P), G:get(PEAK_T), G:get(PEAK_P),
      core.shm_in_use() / 1048576))
    io.stdout:flush()
  end
end
end

local wok, werr = pcall(watch)
if not wok then   -- Ctrl-C ("interrupted!") or a bug here
  print("stress: watchdog stopped: " .. tostring(werr))
  dump(concur.time())
  print(("stress: FAIL (interrupted; %.1f s in, seed %d)"):format(concur.time() - T0, cfg.seed))
  kill_and_exit(130)
end

-- Summary --------------------------------------------------------------------

local elapsed = concur.time() - T0
local total = {rounds = 0, ops = {}, checks = 0, msgs = 0, bytes = 0, threads = 0, procs = 0, notes = {}}
local per = {}
local failures = {}
for _, d in ipairs(drivers) do
  local ok, st = pcall(d.t.result, d.t)
  if not ok then
    failures[#failures + 1] = d.wl.name .. ": driver raised " .. tostring(st)
  else
    if not st.ok then failures[#failures + 1] = d.wl.name .. ": failed" end
    total.rounds = total.rounds + st.rounds
    merge(total, st)
    total.threads, total.procs = total.threads + st.threads, total.procs + st.procs
    for k, v in pairs(st.notes) do
      if type(v) == "number" and k:find("^max") then total.notes[k] = math.max(total.notes[k] or 0, v)
      else total.notes[k] = (total.notes[k] or 0) + v end
    end
    local ops = 0
    for _, v in pairs(st.ops) do ops = ops + v end
    per[#per + 1] = {d.wl.name, st.rounds, ops, st.checks}
  end
end
print_failures()
if env.fail_ev:is_set() then failures[#failures + 1] = "a worker reported a failure" end

-- End state: nothing left running.
local checks_end = 0
local function end_check(cond, msg)
  checks_end = checks_end + 1
  if not cond then failures[#failures + 1] = msg end
end
end_check(G:get(LIVE_T) == 0 and G:get(LIVE_P) == 0,
  ("live counters not back to zero: threads %d, processes %d"):format(G:get(LIVE_T), G:get(LIVE_P)))
end_check(concur.active_count() == 1, ("%d threads alive at the end"):format(concur.active_count()))
end_check(#concur.active_children() == 0, ("%d child processes alive at the end"):format(#concur.active_children()))
total.checks = total.checks + checks_end
collectgarbage()
collectgarbage()
local shm_end = core.shm_in_use()
local killed = total.notes.procs_killed or 0
local pterm = total.notes.proc_pool_terminates or 0
if killed == 0 and pterm == 0 then
  end_check(shm_end == SHM0, ("shared arena: %d bytes in use at the end, %d at the start (a leak)"):format(shm_end, SHM0))
  total.checks = total.checks + 1
end

local ops_total = 0
local cats = {}
for k, v in pairs(total.ops) do
  if k ~= "cond_timeouts" then ops_total = ops_total + v; cats[#cats + 1] = k end
end
table.sort(cats)
print(("stress: summary after %.1f s (seed %d, %s)"):format(elapsed, cfg.seed, mode))
print("  driver      rounds        ops     checks")
for _, p in ipairs(per) do print(("  %-10s %7d %10d %10d"):format(p[1], p[2], p[3], p[4])) end
local line, parts = "  ops:", {}
for _, k in ipairs(cats) do parts[#parts + 1] = ("%s %d"):format(k, total.ops[k]) end
print(line .. " " .. table.concat(parts, ", "))
print(("  messages delivered %d, bytes moved %.1f MiB"):format(total.msgs, total.bytes / 1048576))
print(("  workers started: %d threads, %d processes; peak live: %d threads (+ main), %d processes"):format(
  total.threads, total.procs, G:get(PEAK_T), G:get(PEAK_P)))
local notes = {}
for k, v in pairs(total.notes) do
  notes[#notes + 1] = math.type(v) == "float" and ("%s %.3f"):format(k, v) or ("%s %s"):format(k, tostring(v))
end
table.sort(notes)
if #notes > 0 then print("  events: " .. table.concat(notes, ", ")) end
print(("  shared arena in use: %.1f KiB at start, %.1f KiB at the end%s"):format(SHM0 / 1024, shm_end / 1024,
  (killed == 0 and pterm == 0) and " (checked)" or shm_end == SHM0 and "" or
  (" (not checked: %d processes killed, %d Pool terminates; a killed process keeps\n   what it took after the fork, see stress/repro/killed_child_leaks_shared_objects.lua)")
    :format(killed, pterm)))
print(("  invariant checks passed: %d"):format(total.checks))
if #failures > 0 then
  for _, f in ipairs(failures) do print("stress: FAILURE: " .. f) end
  print(("stress: FAIL (%d ops in %.1f s, seed %d)"):format(ops_total, elapsed, cfg.seed))
  kill_and_exit(1)
end
print(("stress: PASS (%d ops in %.1f s, seed %d)"):format(ops_total, elapsed, cfg.seed))
os.exit(0)
