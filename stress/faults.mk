# stress/faults.mk - SIGKILL fault injection (stress/faults.lua), included by
# the Makefile, which defines all, LUA and RUNENV.
#
#   make faults                      60 s of randomized rounds, a fresh seed
#   make faults FAULT_SECONDS=300 FAULT_SEED=12345
#
# Prints the seed, a summary and `faults: PASS ...` or `faults: FAIL ...`;
# fails when the script does.  The script has its own watchdog; `timeout` is
# a last resort should the script itself wedge before its watchdog starts.

FAULT_SECONDS ?= 60
FAULT_SEED    ?=

.PHONY: faults

faults: all
	@$(RUNENV) timeout -k 10 $$(( $(FAULT_SECONDS) + 300 )) $(LUA) stress/faults.lua $(FAULT_SECONDS) $(FAULT_SEED)
