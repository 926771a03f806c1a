-- Writes a C header holding Lua source files, for the compiled-in Lua layer.
-- usage: lua5.4 tools/embed.lua lua/concur.lua > src/concur_lua.h
--
-- FILE becomes the array concur_lua_source.  Where FILE is the layer's main
-- module, its other modules (SUBMODULES) are read from beside it, under its
-- name (lua/concur/pool.lua for concur.pool), and each becomes an array named
-- after the module (concur_pool_lua_source); src/core.c lists them.
local path = assert(arg[1], "usage: embed.lua FILE")

local SUBMODULES = {concur = {"pool"}}

local function read(file)
  local f = assert(io.open(file, "rb"))
  local src = f:read("*a")
  f:close()
  return src
end

-- One array per file, its bytes on one line (a generated file: short, and
-- no two of its parts look alike line by line).
local function array(out, cname, src)
  local bytes = {}
  for i = 1, #src do bytes[i] = tostring(src:byte(i)) end
  bytes[#bytes + 1] = "0"
  out[#out + 1] = "static const unsigned char " .. cname .. "[] = {"
  out[#out + 1] = "  " .. table.concat(bytes, ",")
  out[#out + 1] = "};"
end

local dir, main = path:match("^(.-)([^/]+)%.lua$")
local files = {{path, "concur_lua_source"}}
for _, sub in ipairs(main and SUBMODULES[main] or {}) do
  files[#files + 1] = {("%s%s/%s.lua"):format(dir, main, sub), ("%s_%s_lua_source"):format(main, sub)}
end

local from = {}
for i, f in ipairs(files) do from[i] = f[1] end
local out = {
  "/* Generated from " .. table.concat(from, " and ") .. " by tools/embed.lua; do not edit. */",
}
for _, f in ipairs(files) do array(out, f[2], read(f[1])) end
io.write(table.concat(out, "\n"), "\n")
