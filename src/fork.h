/*
 * fork.h - references across fork (fork.c).
 */
#ifndef CONCUR_FORK_H
#define CONCUR_FORK_H

#include "message.h"

/* References across fork.  The references a child inherits are taken for it
 * by the parent before fork(), while the thread runtime is frozen
 * (thread_fork_freeze): taking them in the child would be too late, the
 * parent may free an object the moment fork returns.  cobj_fork_prepare
 * walks the identity table at `identity` (from cobj_push_identity, pushed
 * before freezing: it may raise) and what reachable objects hold; it makes
 * no Lua call that can raise and returns 0 when out of memory (nothing
 * taken).  The child then calls cobj_fork_child (the records now stamped as
 * its own), the parent cobj_fork_done, or cobj_fork_undo if fork failed. */
typedef struct cobj_fork_refs {
  cobj_handle **handles;
  size_t nhandles, caphandles;
  struct tbuf **tbufs;
  size_t ntbufs, captbufs;
  int oom;
  /* Every reference to a shared object taken for the child, one entry each
   * (the ledger's makings); no_ledger when it could not be recorded. */
  cobj **shared;
  size_t nshared, capshared;
  int no_ledger;
  struct cobj_ledger *ledger;   /* made by cobj_fork_prepare, or NULL */
} cobj_fork_refs;
void cobj_push_identity(lua_State *L);
/* A forked child that ends without closing its state: gives back the
 * references its handles hold to shared objects (the counts are the
 * family's).  Only before _exit: the handles are left as they were. */
void cobj_release_state(lua_State *L);
int cobj_fork_prepare(lua_State *L, int identity, cobj_fork_refs *r);
void cobj_fork_take_tbuf(cobj_fork_refs *r, struct tbuf *b);
/* Drops the references b holds to shared objects, leaving b as it is (for a
 * process about to end, or undoing cobj_fork_take_tbuf). */
void cobj_release_tbuf_shared(const struct tbuf *b);
void cobj_fork_child(cobj_fork_refs *r);
void cobj_fork_done(cobj_fork_refs *r);
void cobj_fork_undo(cobj_fork_refs *r);

/* The ledger of a child's inherited references (in the arena): one entry per
 * reference the parent took for it, marked when the child gives back a
 * reference to that object (cobj_decref marks first, then releases, so a kill
 * in between leaves a reference held, never one released twice).  A child
 * killed by a signal never runs its exit path: its parent, reaping it, gives
 * back what is still unmarked (cobj_ledger_settle), after any end.  Extra
 * marks (the child releasing a reference it took itself) only keep a
 * reference held: the parent never releases more than the child inherited
 * and still held.  That needs one rule: an inherited reference leaves the
 * child only through cobj_decref (never moved into a message or another
 * holder without one).  References the child took after the fork are not in
 * it.  The parent takes the ledger from
 * cobj_fork_refs after cobj_fork_prepare (NULL: none could be made, the
 * start goes on without). */
typedef struct cobj_ledger cobj_ledger;
/* The child is dead: releases the unmarked entries if `release`, then frees
 * the ledger. */
void cobj_ledger_settle(cobj_ledger *l, int release);


#endif
