-- bench/run.lua - concur beside Python 3 threading and multiprocessing, as a
-- Markdown table.
--
-- Run from the repository root (as `make bench` does):
--   LUA_PATH='./lua/?.lua;./spec/?.lua;;' LUA_CPATH='./build/?.so;;' lua5.4 bench/run.lua
--
-- Every workload has a Lua script (bench/lua/X.lua, using concur) and a Python
-- script (bench/py/X.py, using threading, or multiprocessing with the fork
-- start method for proc and cpu2proc). Each script prints its metric(s) on
-- one line of stdout. Both are run BENCH_RUNS times (default 5), alternating,
-- and the table shows the medians.
--
-- A few rows also have a peer in luv (libuv for Lua, `require "luv"`, Debian's
-- lua-luv): bench/luv/X.lua, run by the same interpreter with
-- UV_THREADPOOL_SIZE=2, printing one number, alternating with the other two;
-- the table shows its median under `luv` and concur/luv under `vs luv`. When
-- the interpreter cannot load luv, those cells read `-` and a note says so.
--
-- Environment:
--   BENCH_RUNS   runs per script (default 5)
--   BENCH_SCALE  multiplies the scripts' iteration counts (default 1)
--   BENCH_ONLY   comma-separated workload scripts to run (e.g. "spawn,cpu2";
--                all: spawn, cpu2, str1m, tables, proc, cpu2proc, lock,
--                pingpong, queues, qkinds, waitany, pipe, pools, futures,
--                shared, dict_scale, redis_queue, redis_pool)
--   BENCH_SHOW   if set, also prints every sample to stderr
--   PYTHON       the Python interpreter (default python3)

local RUNS = tonumber(os.getenv("BENCH_RUNS") or "") or 5
RUNS = math.floor(RUNS)
if RUNS < 1 then RUNS = 1 end
local SCALE = os.getenv("BENCH_SCALE")
local ONLY = os.getenv("BENCH_ONLY")
local SHOW = os.getenv("BENCH_SHOW")
local PYTHON = os.getenv("PYTHON") or "python3"

-- The interpreter running this driver also runs the Lua scripts.
local LUA = "lua5.4"
do
  local i = -1
  while arg and arg[i] do LUA = arg[i]; i = i - 1 end
end
local DIR = (arg and arg[0] or "bench/run.lua"):match("^(.*)/[^/]*$") or "."

-- Workloads. `rows` name what the script prints, in order. `better` says
-- which direction is good; `goal` is checked against the concur value, or
-- against the concur/python ratio when `goal_ratio` is set; a row without a
-- goal is only reported. `python = false`: concur-only rows, no Python script.
-- `py = "X"`: the Python script is bench/py/X.py (default: the Lua one's
-- name); `python_bin`: the interpreter for it (default PYTHON).
-- `luv = "X"`: the row's luv peer, bench/luv/X.lua (one number, the same
-- unit); `goal_luv` is then a goal on concur/luv (`better` says which way),
-- shown after the other goal as `luv_text`, each goal with its own verdict.
local WORKLOADS = {
  {script = "spawn", rows = {
    {name = "spawn", unit = "µs/thread", better = "lower",
     goal = 0.5, goal_ratio = true, goal_text = "<= 0.5x Python",
     luv = "spawn", goal_luv = 1, luv_text = "<= luv"},
  }},
  {script = "cpu2", rows = {
    {name = "cpu2", unit = "speedup 2 thr/1 thr", better = "higher",
     goal = 1.9, goal_text = ">= 1.9x", min_cpus = 2},
  }},
  {script = "str1m", rows = {
    {name = "str1m", unit = "GB/s", better = "higher",
     goal = 2, goal_text = ">= 2 GB/s"},
  }},
  {script = "tables", rows = {
    {name = "tables-to", unit = "M tables/s", better = "higher",
     goal = 3, goal_text = ">= 3 M/s"},
    {name = "tables-back", unit = "M tables/s", better = "higher",
     goal = 3, goal_text = ">= 3 M/s"},
  }},
  {script = "proc", rows = {
    {name = "proc", unit = "µs/process", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python"},
  }},
  {script = "cpu2proc", rows = {
    {name = "cpu2proc", unit = "speedup 2 proc/1 proc", better = "higher",
     goal = 1.9, goal_text = ">= 1.9x", min_cpus = 2},
  }},
  {script = "lock", rows = {
    {name = "lock", unit = "M pairs/s", better = "higher",
     goal = 2, goal_ratio = true, goal_text = ">= 2x Python"},
  }},
  {script = "pingpong", rows = {
    {name = "pingpong-thr", unit = "µs/round trip", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python"},
    {name = "pingpong-proc", unit = "µs/round trip", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python"},
  }},
  {script = "queues", rows = {
    {name = "queue-thr-int", unit = "M items/s", better = "higher",
     goal = 10, goal_ratio = true, goal_text = ">= 10x Python"},
    {name = "queue-thr-str1k", unit = "M items/s", better = "higher",
     goal = 5, goal_ratio = true, goal_text = ">= 5x Python"},
    {name = "queue-thr-table", unit = "M items/s", better = "higher",
     goal = 4, goal_ratio = true, goal_text = ">= 4x Python"},
    {name = "queue-proc-int", unit = "M items/s", better = "higher",
     goal = 9, goal_ratio = true, goal_text = ">= 9x Python"},
    {name = "queue-proc-str1k", unit = "M items/s", better = "higher",
     goal = 5, goal_ratio = true, goal_text = ">= 5x Python"},
    {name = "queue-proc-table", unit = "M items/s", better = "higher",
     goal = 3, goal_ratio = true, goal_text = ">= 3x Python"},
    {name = "queue-pingpong-thr", unit = "µs/round trip", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python"},
    {name = "queue-pingpong-proc", unit = "µs/round trip", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python"},
  }},
  {script = "qkinds", rows = {
    {name = "lifoqueue-thr-int", unit = "M items/s", better = "higher",
     goal = 5, goal_ratio = true, goal_text = ">= 5x Python"},
    {name = "priorityqueue-thr-int", unit = "M items/s", better = "higher",
     goal = 5, goal_ratio = true, goal_text = ">= 5x Python"},
    {name = "lifoqueue-proc-int", unit = "M items/s", better = "higher",
     goal = 5, goal_ratio = true, goal_text = ">= 5x Python (a manager's)"},
    {name = "priorityqueue-proc-int", unit = "M items/s", better = "higher",
     goal = 5, goal_ratio = true, goal_text = ">= 5x Python (a manager's)"},
  }},
  {script = "waitany", rows = {
    {name = "select-8queues-thr", unit = "µs/round trip", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python (wait over 8 pipes)"},
    {name = "queue-putget", unit = "M pairs/s", better = "higher",
     goal = 4, goal_ratio = true, goal_text = ">= 4x Python"},
    {name = "queue-putget-selector-elsewhere", unit = "M pairs/s", better = "higher",
     goal = 4, goal_ratio = true, goal_text = "as queue-putget"},
  }},
  {script = "pipe", rows = {
    {name = "pipe-100mib", unit = "GB/s", better = "higher",
     goal = 1, goal_text = ">= 1 GB/s"},
  }},
  {script = "pools", rows = {
    {name = "pool-map", unit = "M tasks/s", better = "higher",
     goal = 1.5, goal_ratio = true, goal_text = ">= 1.5x Python"},
    {name = "pool-apply-async", unit = "k tasks/s", better = "higher",
     goal = 10, goal_ratio = true, goal_text = ">= 10x Python"},
    {name = "threadpool-apply-async", unit = "k tasks/s", better = "higher",
     goal = 7, goal_ratio = true, goal_text = ">= 7x Python",
     luv = "apply_async", goal_luv = 1, luv_text = ">= luv"},
    {name = "pool-map-cpu", unit = "speedup Pool(2)/Pool(1)", better = "higher",
     goal = 1.9, goal_text = ">= 1.9x", min_cpus = 2},
  }},
  -- concur-redis (a second rock): redis.Pool with two concur-worker
  -- processes against Python RQ with two workers, each on a redis-server
  -- its script starts; RQ is Debian's python3-rq, for /usr/bin/python3.
  {script = "redis_pool", py = "redis_pool_rq", python_bin = "/usr/bin/python3", rows = {
    {name = "redis-pool", unit = "k tasks/s", better = "higher",
     goal = 10, goal_ratio = true, goal_text = ">= 10x RQ"},
  }},
  {script = "futures", rows = {
    {name = "threadpool-submit", unit = "µs/round trip", better = "lower",
     goal = 0.2, goal_ratio = true, goal_text = "<= 0.2x Python",
     luv = "submit", goal_luv = 1, luv_text = "<= luv"},
    {name = "pool-submit", unit = "µs/round trip", better = "lower",
     goal = 0.1, goal_ratio = true, goal_text = "<= 0.1x Python"},
  }},
  {script = "shared", rows = {
    {name = "value-add-proc", unit = "M adds/s", better = "higher",
     goal = 20, goal_ratio = true, goal_text = ">= 20x Python"},
    {name = "dict-setget", unit = "M pairs/s", better = "higher",
     goal = 50, goal_ratio = true, goal_text = ">= 50x Python (a manager's)"},
    {name = "dict-update-proc", unit = "k updates/s", better = "higher",
     goal = 20, goal_ratio = true, goal_text = ">= 20x Python (a manager's)"},
    {name = "array-sum-proc", unit = "M elements/s", better = "higher",
     goal = 1, goal_ratio = true, goal_text = ">= 1x Python"},
    {name = "array-sum-totable", unit = "M elements/s", better = "higher",
     goal = 1, goal_ratio = true, goal_text = ">= 1x Python"},
  }},
  -- concur-redis: a redis.Queue against redis-py (LPUSH/BRPOP with pickle),
  -- each script on a redis-server it starts itself; Debian's python3 has
  -- python3-redis.
  {script = "redis_queue", python_bin = "/usr/bin/python3", rows = {
    {name = "redis-queue", unit = "µs/round trip", better = "lower",
     goal = 1, goal_ratio = true, goal_text = "<= 1x redis-py"},
  }},
  {script = "dict_scale", python = false, rows = {
    {name = "dict-get-1k", unit = "ns/get", better = "lower"},
    {name = "dict-get-1m", unit = "ns/get", better = "lower"},
    {name = "dict-get-scale", unit = "get 10^6 / get 10^3", better = "lower",
     goal = 2, goal_text = "<= 2x"},
    {name = "dict-arena-1m", unit = "MB of arena", better = "lower",
     goal = 150, goal_text = "<= 150 MB"},
    {name = "dict-grow-pause", unit = "µs, longest get", better = "lower"},
  }},
}

-- Helpers ---------------------------------------------------------------------

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function capture(cmd)
  local f = io.popen(cmd .. " 2>/dev/null")
  if not f then return nil end
  local out = f:read("*a")
  f:close()
  out = out and out:gsub("%s+$", "")
  if out == "" then return nil end
  return out
end

local function have(cmd)
  local ok = os.execute("command -v " .. sh_quote(cmd) .. " >/dev/null 2>&1")
  return ok == true or ok == 0   -- 5.2+: true; 5.1 and LuaJIT: the status
end

local function median(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  local k = #s
  if k == 0 then return nil end
  if k % 2 == 1 then return s[math.floor((k + 1) / 2)] end
  return (s[math.floor(k / 2)] + s[math.floor(k / 2) + 1]) / 2
end

-- About 3 significant digits, never in exponent form.
local function fmt(v)
  if v == nil then return "n/a" end
  if v ~= v or v == math.huge or v == -math.huge then return tostring(v) end
  local a = math.abs(v)
  if a >= 100 or a == 0 then return string.format("%.0f", v) end
  local digits = 2 - math.floor(math.log(a, 10))
  if digits > 6 then digits = 6 end
  return string.format("%." .. digits .. "f", v)
end

-- Runs one script; returns the list of numbers it printed, or nil, reason.
local function run_script(cmd)
  local f = io.popen(cmd)
  if not f then return nil, "cannot start" end
  local out = f:read("*a") or ""
  local ok, how, code = f:close()
  if not ok then return nil, ("%s %s"):format(how == "signal" and "killed by signal" or "exit status", code) end
  local nums = {}
  for w in out:gmatch("%S+") do
    local n = tonumber(w)
    if not n then return nil, "bad output: " .. out:sub(1, 60) end
    nums[#nums + 1] = n
  end
  if #nums == 0 then return nil, "no output" end
  return nums
end

-- Header ----------------------------------------------------------------------

local function cpu_model()
  local f = io.open("/proc/cpuinfo")
  if f then
    local text = f:read("*a")
    f:close()
    for _, key in ipairs{"model name", "Hardware", "cpu model", "Processor", "cpu"} do
      local v = text:match("\n" .. key .. "%s*:%s*([^\n]+)")
        or text:match("^" .. key .. "%s*:%s*([^\n]+)")
      if v then return (v:gsub("%s+", " ")) end
    end
  end
  return capture("sysctl -n machdep.cpu.brand_string") or "unknown CPU"
end

local ncpu = tonumber(capture("nproc") or capture("getconf _NPROCESSORS_ONLN") or "")
local lua_version = capture(sh_quote(LUA) .. " -v")
lua_version = rawget(_G, "jit") and jit.version or lua_version and lua_version:match("^(Lua %S+)") or _VERSION
local has_python = have(PYTHON)
local py_version = has_python and capture(sh_quote(PYTHON) .. " --version") or "python3 missing"

-- luv is optional: loaded here, by the interpreter that runs the scripts.
local has_luv, luv = pcall(require, "luv")
local luv_version = has_luv and type(luv) == "table" and luv.version_string
  and ("luv " .. luv.version_string()) or nil
if not luv_version then has_luv = false end

print(("%s | %s | %s | %s CPUs | %s | %s | %s | median of %d run%s%s"):format(
  os.date("%Y-%m-%d"), capture("uname -sm") or "unknown OS", cpu_model(),
  ncpu and tostring(ncpu) or "?", lua_version, py_version, luv_version or "luv missing",
  RUNS, RUNS == 1 and "" or "s", SCALE and (", BENCH_SCALE=" .. SCALE) or ""))
print()
if not has_luv then
  print(("Note: luv is missing (`require \"luv\"` failed in %s; Debian: lua-luv), "
    .. "so the luv and vs luv columns read -."):format(LUA))
  print()
end
print("| workload | metric | concur | Python | ratio | luv | vs luv | goal | met |")
print("|---|---|---|---|---|---|---|---|---|")
io.stdout:flush()

-- Runs ------------------------------------------------------------------------

local selected
if ONLY and ONLY ~= "" then
  selected = {}
  for w in ONLY:gmatch("[^,%s]+") do selected[w] = true end
end

local failures = 0

-- "ok" or "MISSED" for value v against goal in the row's direction.
local function verdict(v, goal, better)
  if v == nil then return "n/a" end
  if better == "lower" then return v <= goal and "ok" or "MISSED" end
  return v >= goal and "ok" or "MISSED"
end

local function ratio_cell(r, absent)
  return r and (fmt(r) .. "x") or absent
end

for _, w in ipairs(WORKLOADS) do
  if not selected or selected[w.script] then
    local lua_cmd = sh_quote(LUA) .. " " .. sh_quote(DIR .. "/lua/" .. w.script .. ".lua")
    local py_cmd = sh_quote(w.python_bin or PYTHON) .. " "
      .. sh_quote(DIR .. "/py/" .. (w.py or w.script) .. ".py")
    local samples = {lua = {}, py = {}}
    local err = {}
    -- The rows' luv peers: one script each, one number each.
    local luv_rows = {}
    if has_luv then
      for i, row in ipairs(w.rows) do
        if row.luv then luv_rows[#luv_rows + 1] = i end
      end
    end
    local luv_samples, luv_err = {}, {}
    for _ = 1, RUNS do
      for _, side in ipairs{"lua", "py"} do
        if not err[side] and (side == "lua" or (has_python and w.python ~= false)) then
          local nums, why = run_script(side == "lua" and lua_cmd or py_cmd)
          if nums and #nums ~= #w.rows then
            nums, why = nil, ("printed %d numbers, expected %d"):format(#nums, #w.rows)
          end
          if nums then
            for i, n in ipairs(nums) do
              samples[side][i] = samples[side][i] or {}
              table.insert(samples[side][i], n)
            end
          else
            err[side] = why
            io.stderr:write(("bench: %s/%s.%s failed: %s\n"):format(
              side, w.script, side, why))
            failures = failures + 1
          end
        end
      end
      for _, i in ipairs(luv_rows) do
        local script = w.rows[i].luv
        if not luv_err[i] then
          local nums, why = run_script("UV_THREADPOOL_SIZE=2 " .. sh_quote(LUA) .. " "
            .. sh_quote(DIR .. "/luv/" .. script .. ".lua"))
          if nums and #nums ~= 1 then
            nums, why = nil, ("printed %d numbers, expected 1"):format(#nums)
          end
          if nums then
            luv_samples[i] = luv_samples[i] or {}
            table.insert(luv_samples[i], nums[1])
          else
            luv_err[i] = why
            io.stderr:write(("bench: luv/%s.lua failed: %s\n"):format(script, why))
            failures = failures + 1
          end
        end
      end
    end

    for i, row in ipairs(w.rows) do
      local cv = not err.lua and samples.lua[i] and median(samples.lua[i]) or nil
      local pv = has_python and not err.py and samples.py[i] and median(samples.py[i]) or nil
      local lv = not luv_err[i] and luv_samples[i] and median(luv_samples[i]) or nil
      if SHOW then
        for _, side in ipairs{"lua", "py", "luv"} do
          local s
          if side == "luv" then s = luv_samples[i] else s = samples[side][i] end
          if s then
            local t = {}
            for k, v in ipairs(s) do t[k] = fmt(v) end
            io.stderr:write(("%-12s %-3s %s\n"):format(row.name, side, table.concat(t, " ")))
          end
        end
      end
      local ratio = (cv and pv and pv ~= 0) and cv / pv or nil
      local lratio = (cv and lv and lv ~= 0) and cv / lv or nil
      local goals, verdicts = {}, {}
      if row.goal then
        goals[#goals + 1] = row.goal_text
        if row.min_cpus and ncpu and ncpu < row.min_cpus then
          verdicts[#verdicts + 1] = ("n/a (%d CPU)"):format(ncpu)
        else
          verdicts[#verdicts + 1] = verdict(row.goal_ratio and ratio or cv, row.goal, row.better)
        end
      end
      if row.goal_luv then
        goals[#goals + 1] = row.luv_text
        verdicts[#verdicts + 1] = verdict(lratio, row.goal_luv, row.better)
      end
      local met
      if err.lua then
        met = "error"
      elseif #verdicts == 0 then
        met = "-"
      else
        met = table.concat(verdicts, ", ")
      end
      local py_cell = w.python == false and "-" or not has_python and "n/a"
        or (err.py and "error" or fmt(pv))
      local luv_cell = (not row.luv or not has_luv) and "-"
        or (luv_err[i] and "error" or fmt(lv))
      print(("| %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(
        row.name, row.unit, err.lua and "error" or fmt(cv), py_cell,
        ratio_cell(ratio, w.python == false and "-" or "n/a"),
        luv_cell, ratio_cell(lratio, (not row.luv or not has_luv) and "-" or "n/a"),
        #goals > 0 and table.concat(goals, ", ") or "-", met))
      io.stdout:flush()
    end
  end
end

if failures > 0 then os.exit(1) end
