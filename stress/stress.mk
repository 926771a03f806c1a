# stress/stress.mk - randomized long-running workloads (included by the Makefile).
#
#   make stress        stress/stress.lua for $(STRESS_SECONDS) s on the in-tree build
#   make stress-tsan   the same, shorter, under ThreadSanitizer (build/tsan)
#
# Variables:
#   STRESS_SECONDS       default 60
#   STRESS_SEED          replay a run (its first line prints the seed); default: time-based
#   STRESS_ARGS          more options for stress.lua (--stall=N, --scale=F, --only=queue,pipe, ...)
#   STRESS_TSAN_SECONDS  default 30
#   STRESS_TSAN_ARGS     default: threads only (see below)
#
# Under ThreadSanitizer the run is --threads-only: TSan cannot follow a thread
# started in a child forked from a multi-threaded process, and the drivers
# fork while other threads run (see spec/process_spec.lua).  Work per round is
# scaled down and the stall limit raised, as everything runs 5-20x slower.

# Keep the including Makefile's default goal (`all`) whatever the include point.
stress_saved_goal := $(.DEFAULT_GOAL)

STRESS_SECONDS      ?= 60
STRESS_SEED         ?=
STRESS_ARGS         ?=
STRESS_TSAN_SECONDS ?= 30
STRESS_TSAN_ARGS    ?= --threads-only --scale=0.25 --stall=60

.PHONY: stress stress-tsan

stress: all
	@$(RUNENV) $(LUA) stress/stress.lua $(STRESS_SECONDS) $(STRESS_SEED) $(STRESS_ARGS)

stress-tsan: deps src/concur_lua.h
	@$(MAKE) --no-print-directory BUILD=build/tsan CFLAGS='$(TSAN_FLAGS)' LDFLAGS='$(TSAN_FLAGS)' \
	  SAN_CFLAGS='$(TSAN_FLAGS)' build/tsan/concur/core.so build/tsan/lua
	@echo "== stress under ThreadSanitizer"
	@TSAN_OPTIONS="$(TSAN_OPTS)" \
	  LUA_PATH='./lua/?.lua;./spec/?.lua;;' LUA_CPATH='./build/tsan/?.so;;' \
	  CONCUR_SANITIZER=thread $(CURDIR)/build/tsan/lua stress/stress.lua \
	  $(STRESS_TSAN_SECONDS) $(STRESS_SEED) $(STRESS_TSAN_ARGS)

.DEFAULT_GOAL := $(stress_saved_goal)
