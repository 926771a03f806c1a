-- Writes a C header holding a Lua source file, for the compiled-in Lua layer.
-- usage: lua5.4 tools/embed.lua lua/concur.lua > src/concur_lua.h
local path = assert(arg[1], "usage: embed.lua FILE")
local f = assert(io.open(path, "rb"))
local src = f:read("a")
f:close()
local out = {
  "/* Generated from " .. path .. " by tools/embed.lua; do not edit. */",
  "static const unsigned char concur_lua_source[] = {",
}
local line = {}
for i = 1, #src do
  line[#line + 1] = tostring(src:byte(i))
  if #line == 20 then
    out[#out + 1] = "  " .. table.concat(line, ",") .. ","
    line = {}
  end
end
line[#line + 1] = "0"
out[#out + 1] = "  " .. table.concat(line, ",")
out[#out + 1] = "};"
io.write(table.concat(out, "\n"), "\n")
