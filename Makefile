# concur - build, test, demo, sanitizer checks and benchmarks.
#
#   make          build in-tree: build/concur/core.so, examples/embed/host
#   make test     every spec (busted on Lua 5.4); ends with "N passed, M failed"
#   make demo     the tutorial examples
#   make check    the specs under ThreadSanitizer, then AddressSanitizer+UBSan,
#                 valgrind memcheck over the examples, the stress under TSan
#   make bench    concur beside Python 3, as ratios
#
# The reliability targets (README, "Reliability"):
#   make fuzz     libFuzzer on the transfer decoder and round trips (fuzz/fuzz.mk)
#   make stress   randomized threads+processes workload with a watchdog (stress/stress.mk)
#   make faults   processes killed with SIGKILL at random moments (stress/faults.mk)
#   make oom      each allocation of each operation failed in turn (tools/failmalloc.c)
#   make scale    1000 threads at once, 10 000 objects of each kind, 10M queue items
#
# `make test` and `make demo` install what is missing with apt-get when run as
# root on Debian/Ubuntu, and otherwise print the line to run.

# The runtime: lua5.4 (the default), lua5.3, lua5.2, lua5.1 or luajit.  Each
# builds in a folder of its own (build/ for 5.4, build/LUA for the others).
LUA       ?= lua5.4
LUA_PC     = $(if $(filter luajit,$(LUA)),luajit,$(LUA))
CC        ?= cc
LUA_INC   ?= $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null || echo -I/usr/include/$(LUA_PC))
LUA_LIB   ?= $(shell pkg-config --libs $(LUA_PC) 2>/dev/null || echo -l$(LUA_PC))
WARN       = -Wall -Wextra -Werror
CFLAGS    ?= -O2 -g
# lua-compat-5.3's header (5.1, 5.2, LuaJIT) is vendored: vendor/lua-compat-5.3.
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden $(LUA_INC) -Isrc -Ivendor/lua-compat-5.3
LIBS       = -lpthread -ldl

SRCS   = src/arena.c src/intr.c src/wait.c src/object.c src/message.c src/fork.c src/transfer.c src/sync.c src/queue.c src/pipe.c src/select.c src/pool.c src/shared.c src/dict.c src/exit.c src/state.c src/thread.c src/process.c src/core.c
HDRS   = src/concur.h $(wildcard src/*.h) src/concur_lua.h
# PORTABLE=1: the waits without Linux futexes or pidfds (src/wait.c, fx_wait),
# the path other systems take; it builds in build/portable (5.4).
PORTABLE ?=
ifeq ($(PORTABLE),1)
CFLAGS += -DCONCUR_PORTABLE
BUILD ?= build/portable$(if $(filter lua5.4,$(LUA)),,-$(LUA))
endif
BUILD ?= $(if $(filter lua5.4,$(LUA)),build,build/$(LUA))
SO     = $(BUILD)/concur/core.so
# concur.redis.core (the concur-redis rock's C part, on hiredis): built beside
# the core, so `require "concur.redis.core"` finds it on the same LUA_CPATH.
REDIS_SO   = $(BUILD)/concur/redis/core.so
REDIS_SRCS = src/redis/redis.c
REDIS_LIBS = -lhiredis
# The example host links the runtime's library: examples/embed/host for the
# default build, BUILD/host for the others.
HOST   = $(if $(filter build,$(BUILD)),examples/embed/host,$(BUILD)/host)

# The runtime's Debian packages: lua5.x and liblua5.x-dev, or luajit and
# libluajit-5.1-dev (the 5.4 ones are always there: the tools run on 5.4).
LUA_DEBS = $(if $(filter luajit,$(LUA)),luajit libluajit-5.1-dev,$(LUA) lib$(LUA)-dev)
LUA_DEBS := $(subst liblua5.1-dev,liblua5.1-0-dev,$(LUA_DEBS))
DEB_PKGS = gcc libc6-dev lua5.4 liblua5.4-dev $(LUA_DEBS) lua-busted luarocks python3 pkg-config \
           redis-server libhiredis-dev python3-redis python3-rq

.PHONY: rock all test demo check check-tsan check-asan bench deps clean valgrind warnings oom scale

all: $(SO) $(REDIS_SO) $(HOST)

# The compiled-in copy of the Lua layer: concur.lua and the modules beside it.
src/concur_lua.h: lua/concur.lua lua/concur/pool.lua tools/embed.lua
	$(LUA) tools/embed.lua lua/concur.lua > $@.tmp && mv $@.tmp $@

$(SO): $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(SRCS) $(LIBS) $(LDFLAGS)

$(REDIS_SO): $(REDIS_SRCS) src/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(REDIS_SRCS) $(REDIS_LIBS) $(LDFLAGS)

$(HOST): examples/embed/host.c $(SRCS) $(HDRS)
	$(CC) $(ALL_CFLAGS) -o $@ examples/embed/host.c $(SRCS) $(LUA_LIB) -lm $(LIBS) $(LDFLAGS)

deps:
	@sh tools/deps.sh $(DEB_PKGS)

# The C sources compile without a warning under gcc and clang alike.
warnings: deps src/concur_lua.h
	@sh tools/deps.sh clang
	@for cc in gcc clang; do \
	  echo "== $$cc -Wall -Wextra -Werror"; \
	  $(MAKE) --no-print-directory CC=$$cc BUILD=build/$$cc build/$$cc/concur/core.so \
	    build/$$cc/concur/redis/core.so || exit 1; \
	done
	@# compat.h's other halves (5.1, 5.2 and LuaJIT share lua-compat-5.3's), under clang
	@for lua in lua5.1 lua5.2 luajit; do \
	  sh tools/deps.sh $$( [ $$lua = luajit ] && echo libluajit-5.1-dev || echo lib$$lua-dev | sed s/liblua5.1-dev/liblua5.1-0-dev/ ) || exit 1; \
	  echo "== clang -Wall -Wextra -Werror, $$lua"; \
	  $(MAKE) --no-print-directory CC=clang LUA=$$lua BUILD=build/clang-$$lua build/clang-$$lua/concur/core.so \
	    build/clang-$$lua/concur/redis/core.so || exit 1; \
	done

# Lua paths for the in-tree build.
RUNENV = SPECS='$(SPECS)' LUA_PATH='./lua/?.lua;./spec/?.lua;;' LUA_CPATH='./$(BUILD)/?.so;;' CONCUR_BUILD='$(BUILD)' CONCUR_HOST='$(HOST)'

test: deps all $(BUILD)/failmalloc.so
	@$(RUNENV) sh tools/run-specs.sh $(LUA)

demo: deps all
	@$(RUNENV) sh tools/run-demo.sh $(LUA)

# Sanitizer builds: the module and a small stand-in for `lua` (tools/lua_runner.c)
# are instrumented, so the runtime starts with the process; specs that start
# subprocesses run $$CONCUR_LUA, which the spec runner sets to that stand-in.
SAN_LUA_LIB ?= /usr/lib/$(shell $(CC) -print-multiarch)/lib$(if $(filter luajit,$(LUA)),luajit-5.1,$(LUA)).a

build/%/lua: tools/lua_runner.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(WARN) $(SAN_CFLAGS) $(LUA_INC) -o $@ $< -Wl,-E $(SAN_LUA_LIB) -lm -ldl $(SAN_CFLAGS)

TSAN_FLAGS = -O1 -g -fsanitize=thread
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

check: check-tsan check-asan valgrind stress-tsan

# detect_deadlocks=0: TSan's lock-order detector holds at most 64 mutexes per
# thread and aborts past that (a CHECK, not a report); a fork holds one per
# thread state and per Pipe connection in its atfork handlers, more than 64
# once a program has many.  Data races are still reported.
TSAN_OPTS = halt_on_error=1 exitcode=66 second_deadlock_stack=1 die_after_fork=0 detect_deadlocks=0 \
            suppressions=$(CURDIR)/tools/tsan.supp

check-tsan: deps src/concur_lua.h
	@$(MAKE) --no-print-directory BUILD=build/tsan CFLAGS='$(TSAN_FLAGS)' LDFLAGS='$(TSAN_FLAGS)' \
	  SAN_CFLAGS='$(TSAN_FLAGS)' build/tsan/concur/core.so build/tsan/concur/redis/core.so build/tsan/lua
	@echo "== specs under ThreadSanitizer"
	@SPECS='$(SPECS)' TSAN_OPTIONS="$(TSAN_OPTS)" \
	  LUA_PATH='./lua/?.lua;./spec/?.lua;;' LUA_CPATH='./build/tsan/?.so;;' \
	  CONCUR_SANITIZER=thread sh tools/run-specs.sh $(CURDIR)/build/tsan/lua

check-asan: deps src/concur_lua.h
	@$(MAKE) --no-print-directory BUILD=build/asan CFLAGS='$(ASAN_FLAGS)' LDFLAGS='$(ASAN_FLAGS)' \
	  SAN_CFLAGS='$(ASAN_FLAGS)' build/asan/concur/core.so build/asan/concur/redis/core.so build/asan/lua
	@echo "== specs under AddressSanitizer + UndefinedBehaviorSanitizer"
	@SPECS='$(SPECS)' ASAN_OPTIONS="detect_leaks=1 exitcode=66" \
	  LSAN_OPTIONS="suppressions=$(CURDIR)/tools/lsan.supp print_suppressions=0" \
	  UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1" \
	  LUA_PATH='./lua/?.lua;./spec/?.lua;;' LUA_CPATH='./build/asan/?.so;;' \
	  CONCUR_SANITIZER=address sh tools/run-specs.sh $(CURDIR)/build/asan/lua

valgrind: deps all
	@sh tools/deps.sh valgrind
	@$(RUNENV) sh tools/run-valgrind.sh $(LUA)

# luv (lua-luv) is the optional peer of a few rows: without it they read -.
bench: deps all
	@sh tools/deps.sh lua-luv || echo "bench: going on without luv (its columns read -)"
	@$(RUNENV) $(LUA) bench/run.lua

# An allocator that fails on demand, preloaded into the interpreter.
$(BUILD)/failmalloc.so: tools/failmalloc.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(WARN) -O2 -g -fPIC -shared $(LUA_INC) -o $@ $<

oom: deps all $(BUILD)/failmalloc.so
	@$(RUNENV) LD_PRELOAD=$(CURDIR)/$(BUILD)/failmalloc.so timeout -k 10 1200 $(LUA) spec/fixtures/oom_sweep.lua $(OOM_OPS)


SCALE_ARGS ?=
scale: deps all
	@$(RUNENV) timeout -k 10 900 $(LUA) stress/scale.lua $(SCALE_ARGS)

include fuzz/fuzz.mk stress/stress.mk stress/faults.mk

clean:
	rm -rf build $(HOST)

# A source rock of the committed tree: concur-VERSION-1.src.rock holds the
# versioned rockspec and the source archive, and `luarocks install` builds it
# offline on a machine without the repository.
VERSION = $(shell sed -n 's/^\#define CONCUR_VERSION "\(.*\)"/\1/p' src/concur.h)
ROCK    = build/rock/concur-$(VERSION)-1.src.rock
rock:
	@mkdir -p build/rock
	git archive --format=tar.gz --prefix=concur-$(VERSION)/ -o build/rock/concur-$(VERSION).tar.gz HEAD
	cp concur-$(VERSION)-1.rockspec build/rock/
	cd build/rock && rm -f $(notdir $(ROCK)) && \
	  zip -q $(notdir $(ROCK)) concur-$(VERSION)-1.rockspec concur-$(VERSION).tar.gz
	@echo "$(ROCK): luarocks install $(ROCK)"
