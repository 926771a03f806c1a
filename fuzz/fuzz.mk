# fuzz/fuzz.mk - the libFuzzer targets of the value transfer and of the
# Pipe's frame reader (each runs FUZZ_SECONDS), included by the
# Makefile (which gives SRCS, HDRS, LUA, LUA_INC, WARN, SAN_LUA_LIB and the
# rule for src/concur_lua.h).
#
#   make fuzz                    builds, then fuzzes for FUZZ_SECONDS (60) s
#   make fuzz FUZZ_SECONDS=600   a longer run
#   make fuzz FUZZ_SKIP=         no skips at all (see FUZZ_SKIP below and
#                                fuzz/crashes/README.md)
#   make fuzz-corpus             rewrites the seed corpus in fuzz/corpus/
#
# The binary is built with clang whatever CC is (libFuzzer is clang's), from
# fuzz/fuzz_transfer.c, its Lua half fuzz/fuzz_transfer.lua (compiled in),
# every file of src/ and the static Lua library.  One process, one job: new
# inputs go to build/fuzz/corpus, the seeds in fuzz/corpus are only read,
# crash files land in build/fuzz/.  FUZZ_ARGS passes more libFuzzer options.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_ARGS    ?=
# liblua's undump trusts its bytes (lundump.c): malformed bytecode can crash
# the loader itself (fuzz/crashes/lua-undump-upvalue-names).  By default the
# harness does not load binary chunks from bytes no encoder wrote
# (fuzz_transfer.c).  The chunks it does load go through decode_function's
# own checks (the upvalue-count finds are fixed there).
FUZZ_SKIP    ?= chunk-load
# Each runtime's decoder has its own binaries: `make fuzz LUA=luajit`.
FUZZ_DIR      = build/fuzz$(if $(filter lua5.4,$(LUA)),,-$(LUA))
FUZZ_BIN      = $(FUZZ_DIR)/fuzz_transfer
FUZZ_LUA_LIB ?= $(SAN_LUA_LIB)
# Lua's upvalue functions, checked more strictly (see fuzz_transfer.c);
# stock 5.1 has no lua_upvalueid or lua_upvaluejoin to wrap.
FUZZ_WRAP     = -Wl,--wrap=lua_load,--wrap=lua_getupvalue,--wrap=lua_setupvalue$(if $(filter lua5.1,$(LUA)),,$(FUZZ_WRAP_JOIN))
FUZZ_WRAP_JOIN = ,--wrap=lua_upvalueid,--wrap=lua_upvaluejoin
FUZZ_FLAGS    = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined

.PHONY: fuzz fuzz-corpus

$(FUZZ_DIR)/fuzz_transfer_lua.h: fuzz/fuzz_transfer.lua tools/embed.lua
	@mkdir -p $(dir $@)
	$(LUA) tools/embed.lua fuzz/fuzz_transfer.lua > $@.tmp && mv $@.tmp $@

$(FUZZ_BIN): fuzz/fuzz_transfer.c $(FUZZ_DIR)/fuzz_transfer_lua.h $(SRCS) $(HDRS)
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || sh tools/deps.sh clang
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || \
	  { echo "fuzz: $(FUZZ_CC) not found; run: sudo apt-get install -y clang"; exit 1; }
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 $(WARN) $(FUZZ_FLAGS) $(LUA_INC) -Isrc -Ivendor/lua-compat-5.3 -I$(FUZZ_DIR) -o $@ \
	  fuzz/fuzz_transfer.c $(SRCS) $(FUZZ_LUA_LIB) -lm -lpthread -ldl $(FUZZ_WRAP)

# The Pipe's frame reader (fuzz/fuzz_pipe.c): arbitrary records, as any
# holder of the descriptor could write them.
FUZZ_PIPE_BIN = $(FUZZ_DIR)/fuzz_pipe

$(FUZZ_PIPE_BIN): fuzz/fuzz_pipe.c $(SRCS) $(HDRS)
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || sh tools/deps.sh clang
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 $(WARN) $(FUZZ_FLAGS) $(LUA_INC) -Isrc -Ivendor/lua-compat-5.3 -o $@ \
	  fuzz/fuzz_pipe.c $(SRCS) $(FUZZ_LUA_LIB) -lm -lpthread -ldl

# Both targets run on every runtime: the transfer's round trips and raw
# messages against that runtime's encoder and decoder (fuzz_transfer.lua
# uses only what each runtime has: no integer subtype on 5.1, 5.2 and
# LuaJIT, no shared upvalues on 5.1), and the Pipe target's arbitrary
# records against its frame reader.
FUZZ_TARGETS = $(FUZZ_BIN) $(FUZZ_PIPE_BIN)

fuzz: $(FUZZ_TARGETS)
	@for bin in $(FUZZ_TARGETS); do \
	  $(if $(filter luajit,$(LUA)),LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan-luajit.supp) FUZZ_SECONDS='$(FUZZ_SECONDS)' FUZZ_ARGS='$(FUZZ_ARGS)' FUZZ_TRANSFER_SKIP='$(FUZZ_SKIP)' \
	    sh fuzz/run.sh $$bin || exit 1; \
	done

fuzz-corpus: $(FUZZ_BIN)
	find fuzz/corpus -name '[ab]-*' ! -name '*-regress-*' -exec rm -f {} +
	FUZZ_TRANSFER_SEEDS=fuzz/corpus $(FUZZ_BIN)
	@ls fuzz/corpus | wc -l | sed 's/$$/ seeds in fuzz\/corpus/'
