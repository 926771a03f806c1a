/*
 * intr.h - Ctrl-C in the main thread, and t:cancel() in a worker (intr.c).
 *
 * The rule (API.md, "Stopping work"): a blocking call either completes and
 * returns its results, or raises ("interrupted!" for a Ctrl-C,
 * concur.CancelledError for a cancel) and leaves nothing taken.  A blocking
 * wait:
 *   - sleeps at most intr_slice_ms(its own slice) ms at a time (0: none of
 *     its own): INTR_SLICE_MS on the host's main thread, CANCEL_SLICE_MS in
 *     a worker running a Thread (a backstop: a cancel's signal wakes it
 *     sooner), the slice unchanged elsewhere.  A poll()- or futex-based
 *     wait may also wake on EINTR, which is how a cancel wakes it;
 *   - after each wake (EINTR, slice end, anything), before taking anything,
 *     asks intr_pending() (cheap: two loads); when 1, undoes what it did
 *     (unlinks its waiter, keeps nothing) and returns intr_raise(L), which
 *     never returns;
 *   - when it took what it waited for, completes, whatever intr_pending()
 *     says, and calls intr_settle(L) before returning: a pending interrupt
 *     then fires at the next VM instruction of L, after the results are
 *     assigned (not at this call's return, where it would drop them).
 */
#ifndef CONCUR_INTR_H
#define CONCUR_INTR_H

#include "arena.h"

#include <pthread.h>

#define INTR_SLICE_MS 50
#define CANCEL_SLICE_MS 1000
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

/* A worker's cancel request (thread.c keeps one in each Thread object).
 * Asked from any thread of the process; raised once, in the thread. */
typedef struct intr_cancel {
  _Atomic int pending;     /* asked, not raised yet */
  _Atomic int asked;       /* ever asked: concur.cancelled() */
  lua_State *L;            /* the worker's main Lua thread, while bound */
} intr_cancel;
/* The calling worker runs under c from now on (NULL: none); a request
 * already pending then fires at L's next instruction. */
void intr_bind(intr_cancel *c, lua_State *L);
/* Asks c's thread to stop: marks it, then `os` (its OS thread, 0 when it
 * has not bound c yet) is sent INTR_CANCEL_SIGNAL, whose handler arms the
 * hook and whose delivery ends a blocking system call with EINTR.  Called
 * by the canceller with nothing that c's thread needs held. */
void intr_cancel_ask(intr_cancel *c, int signal_it, pthread_t os);
int intr_cancel_pending(intr_cancel *c);
int intr_cancelled(void);   /* the calling thread's request was asked */
/* Pushes the value a cancel raises (thread.c: concur.CancelledError). */
void intr_on_cancel(int (*push)(lua_State *L));

#endif
