/*
 * intr.h - Ctrl-C in the main thread (intr.c).
 *
 * The rule (API.md, "Stopping work"): a blocking call either completes and
 * returns its results, or raises "interrupted!" and leaves nothing taken.
 * A blocking wait that the host's main thread can reach:
 *   - sleeps at most intr_slice_ms(its own slice) ms at a time (0: none of
 *     its own); elsewhere that returns the slice unchanged, so other threads
 *     pay nothing.  A poll()- or futex-based wait may also wake on EINTR;
 *   - after each wake (EINTR, slice end, anything), before taking anything,
 *     asks intr_pending() (cheap: 0 at once off the main thread); when 1,
 *     undoes what it did (unlinks its waiter, keeps nothing) and returns
 *     intr_raise(L), which never returns;
 *   - when it took what it waited for, completes, whatever intr_pending()
 *     says, and calls intr_settle(L) before returning: a pending interrupt
 *     then fires at the next VM instruction of L, after the results are
 *     assigned (not at this call's return, where it would drop them).
 */
#ifndef CONCUR_INTR_H
#define CONCUR_INTR_H

#include "arena.h"

#define INTR_SLICE_MS 50
int intr_slice_ms(int slice_ms);
int intr_pending(void);
int intr_raise(lua_State *L);
void intr_settle(lua_State *L);
/* A call that completed but still runs code that may run Lua (decoding its
 * results, which may require a module or collect garbage): intr_hold takes
 * a pending interrupt off first (1 if there was one), so that it cannot
 * fire in there; then, once the results are pushed, intr_rearm(L) if it
 * returned 1, else intr_settle(L). */
int intr_hold(lua_State *L);
void intr_rearm(lua_State *L);
void intr_disarm(lua_State *L);   /* forgets a pending interrupt (L may be NULL) */
/* The first state opened off a worker thread (on_worker: the caller is a
 * concur worker) is the host's: its main Lua thread is the one lua.c's
 * handler stops. */
void intr_adopt(lua_State *L, int on_worker);
/* In a forked child, before it runs: its one thread is its main one, `run`
 * the Lua thread its run method runs in (an interrupt fires there too). */
void intr_child(lua_State *run);

#endif
