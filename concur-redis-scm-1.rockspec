rockspec_format = "3.0"
package = "concur-redis"
version = "scm-1"
source = {
  url = "git+https://example.invalid/concur.git",
}
description = {
  summary = "concur's Queue and Pool across machines, on a Redis server (hiredis)",
  detailed = [[
concur.redis gives concur's Queue and Pool interfaces on a Redis server:
producers, consumers and pool workers in any processes on any machines that
reach it.  Workers run `concur-worker --url URL --name NAME [--processes N]`.
]],
  license = "MIT",
  homepage = "https://example.invalid/concur",
  labels = {"concurrency", "redis", "distributed"},
}
supported_platforms = {"linux"}
dependencies = {
  "lua >= 5.1, < 5.5",
  "concur",
}
external_dependencies = {
  HIREDIS = {header = "hiredis/hiredis.h", library = "hiredis"},
}
build = {
  type = "builtin",
  modules = {
    ["concur.redis"] = "lua/concur/redis.lua",
    ["concur.redis.queue"] = "lua/concur/redis/queue.lua",
    ["concur.redis.pool"] = "lua/concur/redis/pool.lua",
    ["concur.redis.core"] = {
      sources = {"src/redis/redis.c"},
      incdirs = {"src", "vendor/lua-compat-5.3", "$(HIREDIS_INCDIR)"},
      libdirs = {"$(HIREDIS_LIBDIR)"},
      libraries = {"hiredis"},
    },
  },
  install = {
    bin = {["concur-worker"] = "bin/concur-worker"},
  },
}
