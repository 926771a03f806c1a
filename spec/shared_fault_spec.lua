-- spec/shared_fault_spec.lua: shared state (concur.Value, concur.Array,
-- concur.Dict) and processes killed (SIGKILL) in the middle of a change
-- (README, "Shared state"; src/dict.c, "Crash safety").
--
-- The deterministic half kills a child at each of the Dict's fault points
-- (core.fault_arm, src/arena.h): a journal half applied (a set of a new key,
-- a replace, a delete, a pop, a setdefault, a clear), a node half moved while
-- the table grows, a set committed but its old node not freed, an update's
-- store done with its update lock still held; and a child killed while its
-- update function runs.  After each, the parent and a fresh child check that
-- the Dict is whole: every write a returned call made is there; so is the
-- killed call's, all of it (at each of these points its journal was marked
-- valid, so the next lock holder completes it: src/dict.c, "Crash safety");
-- #d agrees with what the snapshots see; and the Dict still grows to 20 000
-- more keys, shrinks and updates (the update lock taken over at once).  The random half lets children hammer a Value, an Array and a
-- Dict while the parent kills them at random moments (and they kill
-- themselves at random fault points); every acknowledged operation must be
-- in the totals, and at most one more per kill.  The open-ended version is
-- stress/faults.lua (its Dict part).
--
-- As in fault_spec.lua: a child reports by its exit code (0: every check
-- held; 2 and up: which failed), never by asserting.  Order comes from
-- Events, joins and shared counters; every wait has a timeout, and
-- after_each kills and joins what a failed test left running.
local concur = require "concur"
local core = require "concur.core"
local support = require "support"

local started = support.tracker()
after_each(function() started.cleanup() end)

local go, finish = started.process, support.finish

-- The value stored under key k by the specs: a string that names k, of a
-- length that depends on k (so a value from another node shows).
local function val(k, tag)
  local s = ("%s=%s|"):format(tostring(k), tag or "v")
  return s .. ("x"):rep(#s * 7 % 61)
end

-- A Dict holding keys "k1".."kN" with val(key) (and its expected content).
local function filled(n)
  local d, want = concur.Dict(), {}
  for i = 1, n do
    local k = "k" .. i
    d[k] = val(k)
    want[k] = val(k)
  end
  return d, want
end

-- nil if d holds exactly `want` (key -> value); else what is wrong.  Checks
-- the snapshots (totable, keys, values, items), #d and each key's get.
local function check(d, want)
  local t, n = d:totable(), 0
  for k, v in pairs(t) do
    n = n + 1
    if want[k] ~= v then
      return ("key %s holds %q, want %q"):format(tostring(k), tostring(v), tostring(want[k]))
    end
  end
  for k, v in pairs(want) do
    if t[k] ~= v then return ("key %s missing from the snapshot"):format(tostring(k)) end
    if d:get(k) ~= v then return ("d:get(%s) is %q"):format(tostring(k), tostring(d:get(k))) end
  end
  if #d ~= n then return ("#d is %d, the snapshot has %d keys"):format(#d, n) end
  if #d:keys() ~= n then return ("d:keys() has %d, the snapshot %d"):format(#d:keys(), n) end
  if #d:items() ~= n then return ("d:items() has %d, the snapshot %d"):format(#d:items(), n) end
  if #d:values() ~= n then return ("d:values() has %d, the snapshot %d"):format(#d:values(), n) end
  return nil
end

-- nil if d still works as a table (grown to `grow` more keys, each read
-- back, then all of them deleted again, and an update), leaving it as it was;
-- else what is wrong.
local function exercise(d, grow, tag)
  local n0 = #d
  for i = 1, grow do d[tag .. i] = i * 3 end
  if #d ~= n0 + grow then return ("#d is %d after %d sets, want %d"):format(#d, grow, n0 + grow) end
  for i = 1, grow do
    if d[tag .. i] ~= i * 3 then return ("%s%d reads %s"):format(tag, i, tostring(d[tag .. i])) end
  end
  for i = 1, grow, 2 do d[tag .. i] = nil end
  for i = 2, grow, 2 do
    if d:pop(tag .. i) ~= i * 3 then return ("pop(%s%d) lost its value"):format(tag, i) end
  end
  if #d ~= n0 then return ("#d is %d after the deletes, want %d"):format(#d, n0) end
  local r = d:update(tag, function(x) return (x or 0) + 1 end)
  if r ~= 1 or d[tag] ~= 1 then return "an update after the kill did not store" end
  d[tag] = nil
  return nil
end

-- Asserts that d holds `want` (check), in the parent and in a fresh child,
-- and that d still works in both (exercise), holding `want` after; and
-- that d:update takes the update lock within 2 s.
local function assert_whole(d, want)
  local t0 = concur.time()
  assert.are.equal(7, d:update("upd-probe", function() return 7 end))
  local took = concur.time() - t0
  assert.is_true(took < 2, "d:update took " .. took .. " s after the kill")
  d["upd-probe"] = nil
  assert.is_nil(check(d, want))
  local child = go(function()
    local bad = check(d, want) or exercise(d, 3000, "child-") or check(d, want)
    if bad then
      io.stderr:write("shared_fault_spec: fresh child: " .. bad .. "\n")
      return 2
    end
    return 0
  end)
  assert.are.equal(0, finish(child, 60))
  assert.is_nil(check(d, want))
  assert.is_nil(exercise(d, 20000, "parent-"))
  assert.is_nil(check(d, want))
end

-- Runs fn(d) in a child armed to kill itself at `point` the n-th time;
-- asserts that the kill ended it (exit code -9).
local function die_in(point, n, fn, ...)
  local p = go(function(...)
    core.fault_arm(point, n)
    fn(...)
    core.fault_arm(nil)
    return 3                   -- it got through: the point was not reached
  end, ...)
  assert.are.equal(-9, finish(p, 60))
end

describe("a process killed inside a Dict's change", function()
  describe("with its journal half applied (dict_commit)", function()
    it("setting a new key: the key is there, #d counts it, the Dict goes on", function()
      local d, want = filled(20)
      die_in("dict_commit", 1, function() d.fresh = val("fresh") end)
      want.fresh = val("fresh")
      assert_whole(d, want)
    end)

    it("replacing a value: the new value is there, whole", function()
      local d, want = filled(20)
      die_in("dict_commit", 1, function() d.k7 = val("k7", "new") end)
      want.k7 = val("k7", "new")
      assert_whole(d, want)
    end)

    it("deleting a key: it is gone, #d agrees", function()
      local d, want = filled(20)
      die_in("dict_commit", 1, function() d.k7 = nil end)
      want.k7 = nil
      assert_whole(d, want)
      assert.are.equal(19, #d)
    end)

    it("popping a key: it is gone, #d agrees", function()
      local d, want = filled(20)
      die_in("dict_commit", 1, function() d:pop("k13") end)
      want.k13 = nil
      assert_whole(d, want)
      assert.are.equal(19, #d)
    end)

    it("in setdefault of a new key: the key is there", function()
      local d, want = filled(5)
      die_in("dict_commit", 1, function() d:setdefault("sd", val("sd")) end)
      want.sd = val("sd")
      assert_whole(d, want)
    end)

    it("in clear: the Dict is empty and works", function()
      local d = filled(40)
      die_in("dict_commit", 1, function() d:clear() end)
      assert_whole(d, {})
      assert.are.equal(0, #d)
    end)

    it("in the n-th store of d:update(table): the stores before it kept, the rest not made", function()
      local d, want = filled(10)
      local new = {}
      for i = 1, 30 do new["u" .. i] = val("u" .. i) end
      -- Stores of new keys only: the 12th commit may also start or end a
      -- growth, so the key of the killed store may be either way.
      die_in("dict_commit", 12, function() d:update(new) end)
      local t, extra = d:totable(), 0
      for k, v in pairs(t) do
        if want[k] == nil then
          assert.are.equal(new[k], v)
          extra = extra + 1
        end
      end
      assert.is_true(extra >= 1 and extra <= 12, extra .. " stores kept")
      for k, v in pairs(t) do want[k] = v end
      assert_whole(d, want)
    end)
  end)

  describe("while the table grows (dict_move)", function()
    for _, n in ipairs({1, 5, 9, 40, 300, 2000}) do
      it("at the " .. n .. "-th node moved: every returned set is kept, the Dict goes on", function()
        local d = concur.Dict()
        local acked = concur.Value(0)
        die_in("dict_move", n, function()
          for i = 1, 100000 do
            d["g" .. i] = val("g" .. i)
            acked.value = i
          end
        end)
        local a = acked.value
        assert.is_true(a >= 4, "died after " .. a .. " sets")   -- a table of 8 grows past 4 keys
        local want = {}
        for i = 1, a do want["g" .. i] = val("g" .. i) end
        -- The killed set (a + 1) was stored before its growth step moved
        -- anything: it is there.
        want["g" .. (a + 1)] = val("g" .. (a + 1))
        assert_whole(d, want)
      end)
    end

    it("while it shrinks back after deletes: every returned delete is kept", function()
      local d, want = filled(600)
      local acked = concur.Value(0)
      die_in("dict_move", 30, function()
        for i = 1, 600 do
          d["k" .. i] = nil
          acked.value = i
        end
      end)
      local a = acked.value
      for i = 1, a do want["k" .. i] = nil end
      assert.is_true(a >= 1 and a < 600, "died after " .. a .. " deletes")
      -- The killed delete (a + 1) was made before its step: it is gone.
      want["k" .. (a + 1)] = nil
      assert_whole(d, want)
    end)
  end)

  it("after d[k] = v committed, before its old node was freed (dict_set): the new value is kept", function()
    local d, want = filled(20)
    die_in("dict_set", 1, function() d.k3 = val("k3", "new") end)
    want.k3 = val("k3", "new")
    assert_whole(d, want)
  end)

  it("holding both locks and not reaped yet (a zombie): a sibling's set and update go on", function()
    local d, want = filled(20)
    d.n = 1
    want.n = 1
    local p = go(function()
      d:update("n", function(x)
        core.fault_arm("dict_commit", 1)
        d.z = val("z")                -- killed here: both locks held
        return x + 1
      end)
      return 3
    end)
    -- Dead, and not joined: its parent (this process) has not reaped it.
    assert.is_true(support.eventually(function() return support.pid_gone(p.pid) end, 10))
    local sib = go(function()
      d.s = val("s")
      if d:update("n", function(x) return x + 10 end) ~= 11 then return 2 end
      return d.z == val("z") and 0 or 4
    end)
    assert.are.equal(0, finish(sib, 20))
    assert.are.equal(-9, finish(p))
    want.z, want.s, want.n = val("z"), val("s"), 11
    assert_whole(d, want)
  end)

  describe("in d:update", function()
    it("after its store, holding the update lock (dict_update): the store is kept, the lock taken over", function()
      local d, want = filled(20)
      d.n = 41
      want.n = 41
      die_in("dict_update", 1, function() d:update("n", function(x) return x + 1 end) end)
      want.n = 42
      assert_whole(d, want)
      assert.are.equal(42, d.n)
      assert.are.equal(43, d:update("n", function(x) return x + 1 end))
    end)

    it("in a nested update (the lock held twice): the lock is taken over", function()
      local d = concur.Dict{a = 1, b = 1}
      die_in("dict_update", 1, function()
        d:update("a", function(x)
          d:update("b", function(y) return y + 10 end)   -- killed here, at depth 2
          return x + 10
        end)
      end)
      assert_whole(d, {a = 1, b = 11})
      assert.are.equal(2, d:update("a", function(x) return x + 1 end))
    end)

    it("while its function runs: d is unchanged, the next update takes the lock at once", function()
      local d, want = filled(20)
      d.n = 5
      want.n = 5
      local inside = concur.Event()
      local p = go(function()
        d:update("n", function(x)
          inside:set()
          concur.Event():wait(30)   -- killed here
          return x + 1
        end)
        return 3
      end)
      assert.is_true(inside:wait(10))
      -- Blocked on the update lock meanwhile: a thread of the parent.
      local done = concur.Event()
      started.thread(function(dd, ev)
        dd:update("n", function(x) return x * 2 end)
        ev:set()
      end, d, done)
      assert.is_false(done:wait(0.2))
      local t0 = concur.time()
      support.kill(p)
      assert.is_true(done:wait(5), "the waiting update never got the lock")
      assert.is_true(concur.time() - t0 < 2, "the waiting update took " .. (concur.time() - t0) .. " s")
      want.n = 10
      assert_whole(d, want)
    end)
  end)
end)

-- ---- random kills ---------------------------------------------------------------

-- What a hammering child does, over and over until stop is set: v:add(1),
-- a:add(slot, 1), d:update("n", +1), d[key] = seq on a fresh key of its
-- generation, each acknowledged in `acks` (4 words per generation: the
-- counts of returned adds, array adds, updates, and the last set's seq)
-- once it returned (at most 400 keys a generation).  Armed (point ~= "")
-- to kill itself at a fault point.
local function hammer(gen, slot, v, a, d, acks, stop, running, point, n)
  local c = require "concur"
  local cc = require "concur.core"
  local base = (gen - 1) * 4
  local nv, na, nu, ns = 0, 0, 0, 0
  local function inc(x) return (x or 0) + 1 end
  if point ~= "" then cc.fault_arm(point, n) end
  running:release()
  local i = 0
  while not stop:is_set() do
    i = i + 1
    local op = i % 4
    if op == 0 then
      v:add(1); nv = nv + 1; acks[base + 1] = nv
    elseif op == 1 then
      a:add(slot, 1); na = na + 1; acks[base + 2] = na
    elseif op == 2 then
      d:update("n", inc); nu = nu + 1; acks[base + 3] = nu
    elseif ns < 400 then       -- (a bounded Dict: its snapshot's strings stay few)
      ns = ns + 1
      d[("g%d_%d"):format(gen, ns)] = ns
      acks[base + 4] = ns
    end
    if i % 64 == 0 then c.sleep(0) end
  end
  cc.fault_arm(nil)
  return 0
end

describe("processes killed at random moments", function()
  it("while hammering a Value, an Array and a Dict: every acknowledged operation is kept, at most one more per kill", function()
    local NCHILD, ROUNDS, MAXGEN = 4, 8, 200
    math.randomseed(os.time() + concur.getpid())
    local v, a, d = concur.Value(0), concur.Array("int", NCHILD), concur.Dict()
    local acks = concur.Array("int", 4 * MAXGEN)
    local stop, running = concur.Event(), concur.Semaphore(0)
    local POINTS = {"dict_commit", "dict_move", "dict_set", "dict_update"}
    local gens, kids = {}, {}    -- gen -> slot; slot -> {p, gen}
    local kills_of = {}          -- slot -> kills
    local ngen, kills, selfkills = 0, 0, 0
    local function spawn(slot)
      ngen = ngen + 1
      assert(ngen <= MAXGEN)
      gens[ngen] = slot
      local point, n = "", 0
      if math.random(3) == 1 then point, n = POINTS[math.random(#POINTS)], math.random(1, 400) end
      kids[slot] = {p = go(hammer, ngen, slot, v, a, d, acks, stop, running, point, n), gen = ngen}
      assert.is_true(running:acquire(true, 20), "a child did not start")
    end
    local function reap(slot)
      local p = kids[slot].p
      local code = finish(p, 20)
      assert.is_true(code == -9 or code == 0, "child ended with " .. tostring(code))
      if code == -9 then
        kills = kills + 1
        kills_of[slot] = (kills_of[slot] or 0) + 1
      end
      return code
    end
    for s = 1, NCHILD do kills_of[s] = 0; spawn(s) end
    local never = concur.Event()
    for _ = 1, ROUNDS do
      -- Children that killed themselves at their fault point: restarted.
      for s = 1, NCHILD do
        if not kids[s].p:is_alive() then
          reap(s)
          selfkills = selfkills + 1
          spawn(s)
        end
      end
      -- Some progress first, then kills at random moments.
      local before = acks[(kids[1].gen - 1) * 4 + 1]
      support.eventually(function()
        return acks[(kids[1].gen - 1) * 4 + 1] > before + 20 or not kids[1].p:is_alive()
      end, 10)
      for _ = 1, math.random(1, 3) do
        never:wait(math.random() * 0.02)
        local s = math.random(NCHILD)
        if kids[s].p:is_alive() then kids[s].p:kill() end
        reap(s)
        spawn(s)
      end
    end
    stop:set()
    for s = 1, NCHILD do
      if reap(s) == -9 then selfkills = selfkills + 1 end
    end
    -- Totals: acked <= total <= acked + kills, for each counter.
    local av, aa, au = 0, {}, 0
    for s = 1, NCHILD do aa[s] = 0 end
    for g = 1, ngen do
      local base = (g - 1) * 4
      av = av + acks[base + 1]
      aa[gens[g]] = aa[gens[g]] + acks[base + 2]
      au = au + acks[base + 3]
    end
    local function within(name, total, acked, k)
      assert.is_true(total >= acked and total <= acked + k,
        ("%s: total %d, acknowledged %d, kills %d"):format(name, total, acked, k))
    end
    within("Value", v.value, av, kills)
    for s = 1, NCHILD do within("Array[" .. s .. "]", a[s], aa[s], kills_of[s]) end
    within("Dict n", d.n, au, kills)
    -- Sets: each generation's keys 1..acked there with their seq; at most
    -- the next one too (its child killed in that set); nothing else.
    local t, nkeys, unacked = d:totable(), 0, 0
    for k, x in pairs(t) do
      nkeys = nkeys + 1
      if k ~= "n" then
        local g, seq = k:match("^g(%d+)_(%d+)$")
        g, seq = tonumber(g), tonumber(seq)
        assert.is_truthy(g, "stray key " .. tostring(k))
        assert.are.equal(seq, x)
        local last = acks[(g - 1) * 4 + 4]
        assert.is_true(seq <= last + 1, ("key %s beyond the acknowledged %d"):format(k, last))
        if seq == last + 1 then unacked = unacked + 1 end
      end
    end
    local acked_sets = 0
    for g = 1, ngen do
      local last = acks[(g - 1) * 4 + 4]
      acked_sets = acked_sets + last
      for s = 1, last do
        assert.are.equal(s, t[("g%d_%d"):format(g, s)], ("g%d_%d lost"):format(g, s))
      end
    end
    assert.is_true(unacked <= kills)
    -- A kill cuts one operation short: all the counters together are ahead
    -- of their acknowledgements by at most one per kill.
    local ahead = v.value - av + d.n - au + unacked
    for s = 1, NCHILD do ahead = ahead + a[s] - aa[s] end
    assert.is_true(ahead <= kills, ("%d operations unacknowledged for %d kills"):format(ahead, kills))
    assert.are.equal(nkeys, #d)
    assert.are.equal(acked_sets + unacked + 1, nkeys)
    -- The Dict goes on, here and in a fresh child.
    local want = t
    assert_whole(d, want)
    assert.is_true(kills >= ROUNDS, "only " .. kills .. " kills")
    print(("\n  shared_fault_spec random: %d generations, %d kills (%d at a fault point); Value %d (acked %d), Dict n %d (acked %d), %d keys (%d acked sets)")
      :format(ngen, kills, selfkills, v.value, av, d.n, au, nkeys, acked_sets))
  end)
end)
