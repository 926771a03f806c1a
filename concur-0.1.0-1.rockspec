rockspec_format = "3.0"
package = "concur"
version = "0.1.0-1"
source = {
  -- `make rock` packs this archive into concur-0.1.0-1.src.rock, which
  -- `luarocks install` builds from offline.
  url = "https://example.invalid/concur/concur-0.1.0.tar.gz",
  dir = "concur-0.1.0",
}
description = {
  summary = "Python's threading, queue and multiprocessing for Lua 5.1-5.4 and LuaJIT, on real OS threads",
  detailed = [[
concur gives Lua scripts Thread, Lock, RLock, Condition, Semaphore, Event,
Barrier, Timer, Queue, Pipe, Process and Pool, on real OS threads (pthreads,
one lua_State per thread, no global lock) and real processes (fork).
]],
  license = "MIT",
  homepage = "https://example.invalid/concur",
  labels = {"threads", "concurrency", "multiprocessing"},
}
-- Linux: futexes, pidfd, memfd, SOCK_SEQPACKET (a portable build for other
-- systems is planned: README, "Systems").
supported_platforms = {"linux"}
dependencies = {
  "lua >= 5.1, < 5.5",
}
build = {
  type = "builtin",
  modules = {
    concur = "lua/concur.lua",
    ["concur.pool"] = "lua/concur/pool.lua",
    ["concur.core"] = {
      sources = {"src/arena.c", "src/intr.c", "src/wait.c", "src/object.c", "src/message.c", "src/fork.c",
                 "src/transfer.c", "src/sync.c", "src/queue.c", "src/pipe.c", "src/select.c", "src/pool.c", "src/shared.c", "src/dict.c", "src/exit.c",
                 "src/state.c", "src/thread.c", "src/process.c", "src/core.c"},
      incdirs = {"src", "vendor/lua-compat-5.3"},
      libraries = {"pthread", "dl"},
    },
  },
  copy_directories = {},
}
