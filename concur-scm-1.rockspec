rockspec_format = "3.0"
package = "concur"
version = "scm-1"
source = {
  url = "git+https://example.invalid/concur.git",
}
description = {
  summary = "Python's threading, queue and multiprocessing for Lua 5.4, on real OS threads",
  detailed = [[
concur gives Lua scripts Thread, Lock, RLock, Condition, Semaphore, Event,
Barrier, Timer, Queue, Pipe, Process and Pool, on real OS threads (pthreads,
one lua_State per thread, no global lock) and real processes (fork).
]],
  license = "MIT",
  labels = {"threads", "concurrency", "multiprocessing"},
}
dependencies = {
  "lua >= 5.4",
}
build = {
  type = "builtin",
  modules = {
    concur = "lua/concur.lua",
    ["concur.pool"] = "lua/concur/pool.lua",
    ["concur.core"] = {
      sources = {"src/arena.c", "src/intr.c", "src/wait.c", "src/object.c", "src/message.c", "src/fork.c",
                 "src/transfer.c", "src/sync.c", "src/queue.c", "src/pipe.c", "src/pool.c", "src/exit.c",
                 "src/state.c", "src/thread.c", "src/process.c", "src/core.c"},
      incdirs = {"src"},
      libraries = {"pthread", "dl"},
      defines = {"_GNU_SOURCE"},
    },
  },
  copy_directories = {},
}
