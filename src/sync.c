/*
 * sync.c - Lock, RLock, Condition, Semaphore, BoundedSemaphore, Event and
 * Barrier: one implementation for threads and forked processes alike.
 *
 * Every object lives in the shared arena (arena.c), so the same object serves
 * every thread of every process of the family.  Waiting is on futex words in
 * that memory, with absolute CLOCK_MONOTONIC deadlines; every wait re-checks
 * its condition, so spurious wake-ups and EINTR never show.
 *
 * Lock and RLock are one futex word each: 0 when free, else the holder's pid
 * with PWORD_WAITERS set once someone sleeps on it.  Not a pthread mutex: a
 * Python Lock may be released by any thread, and the uncontended pair must
 * cost one compare-and-swap and one exchange.  A process that dies holding
 * one is found by its waiters, which wake every LOCK_SLICE_MS to look
 * (proc_gone) and take the word over with a compare-and-swap.
 *
 * Condition, Barrier: their own state is guarded by a robust process-shared
 * mutex (`mu`), held only for a few stores, never across Lua code or a wait;
 * a holder that dies leaves the state as after its last store.
 *
 * Lock order: a Condition's `mu` may be taken while its Lock is held, never
 * the other way round; the arena's mutex is taken under either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sync.h"
#include "transfer.h"
#include "wait.h"

/* An RLock holder: thread and process.  Forked siblings share TLS
 * addresses, so the pid is mixed in: a dead sibling's id left for a moment
 * after a takeover never matches a thread of ours. */
#define OWNER_ID (((uint64_t)(uint32_t)concur_pid << 32) ^ (uint64_t)CONCUR_THREAD_ID)
#define LOCK_SLICE_MS 100      /* how soon a dead holder is noticed */

/* ---- the objects ---------------------------------------------------------- */

typedef struct lock_obj {
  cobj hdr;
  _Atomic uint32_t word;       /* 0, or holder pid | PWORD_WAITERS */
  _Atomic uint64_t thread;     /* RLock: the holder's OWNER_ID */
  _Atomic uint64_t ident;      /* RLock: the holder's concur.get_ident(), for tostring */
  _Atomic uint32_t count;      /* RLock: depth; written by the holder only */
} lock_obj;

typedef struct cond_waiter {
  struct cond_waiter *next;
  _Atomic uint32_t signaled;
  int pid;
} cond_waiter;

typedef struct cond_obj {
  cobj hdr;
  lock_obj *lock;              /* a reference */
  pthread_mutex_t mu;          /* guards the waiter list */
  cond_waiter *head, *tail;
  uint32_t nwaiting;
} cond_obj;

typedef struct sem_obj {
  cobj hdr;
  _Atomic uint32_t value;
  _Atomic uint32_t nwaiters;
  uint32_t initial;
} sem_obj;

typedef struct event_obj {
  cobj hdr;
  _Atomic uint32_t word;       /* EV_FLAG | sets counted in EV_GEN units */
  _Atomic uint32_t nwaiters;
  _Atomic uint32_t watchers;   /* concur.select callers watching */
} event_obj;

enum { B_FILLING = 0, B_DRAINING = 1, B_ACTION = 2, B_RESETTING = -1, B_BROKEN = -2 };

typedef struct barrier_obj {
  cobj hdr;
  pthread_mutex_t mu;          /* guards all below but seq's waits */
  _Atomic uint32_t seq;        /* bumped under mu at every state change */
  uint32_t parties, count;
  int state;
  double timeout;              /* default for wait; < 0: none */
  int action_pid;              /* the process running the action (B_ACTION) */
  sblob *action;               /* NULL: none */
} barrier_obj;

static void lock_destroy(cobj *o) { shm_free(o); }

static void cond_destroy(cobj *o) {
  cond_obj *c = (cond_obj *)o;
  for (cond_waiter *w = c->head, *next; w; w = next) {   /* of dead processes */
    next = w->next;
    shm_free(w);
  }
  cobj_decref(&c->lock->hdr);
  shm_free(c);
}

static void barrier_destroy(cobj *o) {
  barrier_obj *b = (barrier_obj *)o;
  sblob_free(b->action);
  shm_free(b);
}

static void lock_meta(lua_State *L);
static void rlock_meta(lua_State *L);
static void cond_meta(lua_State *L);
static void sem_meta(lua_State *L);
static void bsem_meta(lua_State *L);
static void event_meta(lua_State *L);
static void barrier_meta(lua_State *L);

/* Metatables are made in a state when it first meets the type (open_meta):
 * a thread's state that never uses one costs nothing at start-up. */
static const cobj_type lock_type = {"concur.Lock", lock_destroy, NULL, 1, lock_meta, NULL, NULL, NULL};
static const cobj_type rlock_type = {"concur.RLock", lock_destroy, NULL, 1, rlock_meta, NULL, NULL, NULL};
static const cobj_type cond_type = {"concur.Condition", cond_destroy, NULL, 1, cond_meta, NULL, NULL, NULL};
static const cobj_type sem_type = {"concur.Semaphore", lock_destroy, NULL, 1, sem_meta, NULL, NULL, NULL};
static const cobj_type bsem_type = {"concur.BoundedSemaphore", lock_destroy, NULL, 1, bsem_meta,
                                    NULL, NULL, NULL};
static int event_ready(cobj *o);
static _Atomic uint32_t *event_watchers(cobj *o);
static const cobj_sel event_sel = {event_ready, event_watchers, NULL, NULL};
static const cobj_type event_type = {"concur.Event", lock_destroy, NULL, 1, event_meta, NULL, NULL,
                                     &event_sel};
static const cobj_type barrier_type = {"concur.Barrier", barrier_destroy, NULL, 1, barrier_meta,
                                       NULL, NULL, NULL};

/* (blocking, timeout) at idx, idx + 1, as Python's acquire takes them. */
static int blocking_args(lua_State *L, int idx, double *timeout) {
  int blocking = 1;
  if (!lua_isnoneornil(L, idx)) {
    luaL_checktype(L, idx, LUA_TBOOLEAN);
    blocking = lua_toboolean(L, idx);
  }
  *timeout = concur_opt_timeout(L, idx + 1);
  if (!blocking && !lua_isnoneornil(L, idx + 1))   /* math.huge too, as Python's inf */
    luaL_argerror(L, idx + 1, "can't specify a timeout for a non-blocking call");
  return blocking;
}

/* ---- Lock and RLock ---------------------------------------------------------- */

static inline int lock_try(lock_obj *l) { return pword_try(&l->word); }

/* -1: interrupted first (nothing taken); only when `intr`. */
static int lock_acquire_word(lock_obj *l, int blocking, double timeout, int intr) {
  return intr ? pword_acquire_intr(&l->word, blocking, timeout, NULL)
              : pword_acquire(&l->word, blocking, timeout, NULL);
}

static inline uint32_t lock_release_word(lock_obj *l) { return pword_release(&l->word); }

static inline int rlock_is_mine(lock_obj *l) {
  return (atomic_load_explicit(&l->word, memory_order_relaxed) & ~PWORD_WAITERS) ==
             (uint32_t)concur_pid &&
         atomic_load_explicit(&l->thread, memory_order_relaxed) == OWNER_ID;
}

static int is_rlock(lock_obj *l) { return l->hdr.type == &rlock_type; }

/* An RLock's word was just taken by this thread: it owns it `count` deep. */
static void rlock_own(lock_obj *l, uint32_t count) {
  atomic_store_explicit(&l->thread, OWNER_ID, memory_order_relaxed);
  atomic_store_explicit(&l->ident, (uint64_t)(uintptr_t)pthread_self(), memory_order_relaxed);
  atomic_store_explicit(&l->count, count, memory_order_relaxed);
}

/* The owner lets an RLock go whatever its depth; returns the depth. */
static uint32_t rlock_disown(lock_obj *l) {
  uint32_t count = atomic_load_explicit(&l->count, memory_order_relaxed);
  atomic_store_explicit(&l->count, 0, memory_order_relaxed);
  atomic_store_explicit(&l->thread, 0, memory_order_relaxed);
  atomic_store_explicit(&l->ident, 0, memory_order_relaxed);
  lock_release_word(l);
  return count;
}

/* Acquire for either kind, and for a Condition's lock; -1 when interrupted
 * (nothing taken). */
static int lockish_acquire(lock_obj *l, int blocking, double timeout, const char **err) {
  if (!is_rlock(l))
    return lock_acquire_word(l, blocking, timeout, 1);
  if (rlock_is_mine(l)) {
    uint32_t n = atomic_load_explicit(&l->count, memory_order_relaxed);
    if (n == UINT32_MAX) {
      *err = "RLock acquired too many times";
      return 0;
    }
    atomic_store_explicit(&l->count, n + 1, memory_order_relaxed);
    return 1;
  }
  int got = lock_acquire_word(l, blocking, timeout, 1);
  if (got <= 0)
    return got;
  rlock_own(l, 1);
  return 1;
}

/* Release for either kind; NULL or the error message. */
static const char *lockish_release(lock_obj *l) {
  if (!is_rlock(l))
    return lock_release_word(l) == 0 ? "release unlocked lock" : NULL;
  if (!rlock_is_mine(l))
    return "cannot release un-acquired lock";
  uint32_t n = atomic_load_explicit(&l->count, memory_order_relaxed);
  if (n == 1)
    rlock_disown(l);
  else
    atomic_store_explicit(&l->count, n - 1, memory_order_relaxed);
  return NULL;
}

static int lockish_acquire_lua(lua_State *L, lock_obj *l) {
  double timeout;
  int blocking = blocking_args(L, 2, &timeout);
  const char *err = NULL;
  int ok = lockish_acquire(l, blocking, timeout, &err);
  if (err)
    return luaL_error(L, "%s", err);
  if (ok < 0)
    return intr_raise(L);
  intr_settle(L);
  lua_pushboolean(L, ok);
  return 1;
}

/* A constructor takes at most `most` arguments (cobj_no_more_args), named
 * by its type: "concur.Lock" is 'Lock'. */
static void no_more_args(lua_State *L, int most, const cobj_type *type) {
  const char *dot = strrchr(type->name, '.');
  cobj_no_more_args(L, most, dot ? dot + 1 : type->name);
}

static int lock_make(lua_State *L, const cobj_type *type) {
  no_more_args(L, 0, type);
  lock_obj *l = cobj_new_shared(L, type, sizeof *l);
  cobj_bind(L, -1, &l->hdr);
  return 1;
}

cobj *sync_rlock_make(void) {
  lock_obj *l = shm_calloc(sizeof *l);
  if (l)
    cobj_init(&l->hdr, &rlock_type);
  return l ? &l->hdr : NULL;
}

int sync_is_lock(const cobj *o) { return o->type == &lock_type || o->type == &rlock_type; }

static int lock_new(lua_State *L) { return lock_make(L, &lock_type); }
static int rlock_new(lua_State *L) { return lock_make(L, &rlock_type); }

/* The hot path: lock:acquire() with no arguments is one compare-and-swap. */
static int lock_acquire(lua_State *L) {
  lock_obj *l = cobj_self_fast(L, &lock_type);
  if (lua_gettop(L) == 1 && lock_try(l)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  return lockish_acquire_lua(L, l);
}

static int lock_release(lua_State *L) {
  if (lock_release_word(cobj_self_fast(L, &lock_type)) == 0)
    return luaL_error(L, "release unlocked lock");
  return 0;
}

static int lock_locked(lua_State *L) {
  lock_obj *l = cobj_self(L);
  lua_pushboolean(L, atomic_load_explicit(&l->word, memory_order_relaxed) != 0);
  return 1;
}

static int rlock_acquire(lua_State *L) {
  return lockish_acquire_lua(L, cobj_self_fast(L, &rlock_type));
}

static int rlock_release(lua_State *L) {
  const char *err = lockish_release(cobj_self_fast(L, &rlock_type));
  return err ? luaL_error(L, "%s", err) : 0;
}

/* As Python's repr: an RLock shows its owner (the holder's
 * concur.get_ident(), in whichever process; 0 when unlocked) and depth.  A
 * holder that has just taken the word may show owner=0 count=0 a moment. */
static void lockish_describe(luaL_Buffer *b, lock_obj *l) {
  int held = atomic_load_explicit(&l->word, memory_order_relaxed) != 0;
  char s[96];
  if (is_rlock(l))
    snprintf(s, sizeof s, "<concur.RLock %s owner=%lld count=%u>", held ? "locked" : "unlocked",
             held ? (long long)(lua_Integer)atomic_load_explicit(&l->ident, memory_order_relaxed) : 0LL,
             held ? (unsigned)atomic_load_explicit(&l->count, memory_order_relaxed) : 0u);
  else
    snprintf(s, sizeof s, "<%s %s>", l->hdr.type->name, held ? "locked" : "unlocked");
  luaL_addstring(b, s);
}

static int lock_tostring(lua_State *L) {
  lock_obj *l = cobj_self(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lockish_describe(&b, l);
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg lock_m[] = {
  {"acquire", lock_acquire}, {"release", lock_release}, {"locked", lock_locked},
  {"__tostring", lock_tostring}, {NULL, NULL}};
static const luaL_Reg rlock_m[] = {
  {"acquire", rlock_acquire}, {"release", rlock_release}, {"locked", lock_locked},
  {"__tostring", lock_tostring}, {NULL, NULL}};

/* ---- with and guard: every object with acquire and release ------------------ */

static int with_finish(lua_State *L, int status, lua_KContext ctx) {
  CONCUR_UNUSED(ctx);
  /* Stack: self, fn, ..., then fn's results or its error. */
  int nres = lua_gettop(L) - 1;   /* results above self (fn's slot reused) */
  lua_getfield(L, 1, "release");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 0);
  if (status != LUA_OK && status != LUA_YIELD)
    return lua_error(L);
  return nres;
}

/* obj:with(fn, ...) -> fn's results; released however fn ends. */
static int sync_with(lua_State *L) {
  cobj_self(L);   /* Lock.with(5, f) names argument 1, not Lua's index error */
  return sync_with_body(L);
}

int sync_with_body(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_getfield(L, 1, "acquire");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 0);
  int nargs = lua_gettop(L) - 2;
  /* fn and its arguments are at 2 ..; results replace them. */
  int st = concur_pcallk(L, nargs, LUA_MULTRET, 0, with_finish);
  return with_finish(L, st, 0);
}

static int guard_close(lua_State *L) {
  if (lua_getiuservalue(L, 1, 1) == LUA_TNIL)
    return 0;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);   /* closed once, even if called again */
  lua_getfield(L, -1, "release");
  lua_insert(L, -2);
  lua_call(L, 1, 0);
  return 0;
}

/* obj:guard() -> a to-be-closed value; acquired now, released at close. */
static int sync_guard(lua_State *L) {
  cobj_self(L);
  lua_settop(L, 1);
  lua_newuserdatauv(L, 0, 1);
  if (luaL_newmetatable(L, "concur.guard")) {
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, "concur guard");
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  lua_getfield(L, 1, "acquire");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 0);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 2, 1);   /* set only once acquired: close releases */
  return 1;
}

/* ---- Condition ------------------------------------------------------------------ */

static int cond_new(lua_State *L) {
  no_more_args(L, 1, &cond_type);
  lock_obj *l = NULL;
  if (!lua_isnoneornil(L, 1)) {
    cobj *o = cobj_test(L, 1, NULL);
    if (o == NULL || (o->type != &lock_type && o->type != &rlock_type))
      return luaL_argerror(L, 1, lua_pushfstring(L, "concur.Lock or concur.RLock expected, got %s",
                                                 luaL_typename(L, 1)));
    l = (lock_obj *)o;
  }
  cond_obj *c = cobj_new_shared(L, &cond_type, sizeof *c);
  if (rmutex_init(&c->mu) != 0) {
    shm_free(c);
    return luaL_error(L, "cannot make a Condition: no mutex");
  }
  if (l == NULL) {
    l = (lock_obj *)sync_rlock_make();
    if (l == NULL) {
      shm_free(c);
      return luaL_error(L, "cannot make a Condition: the shared memory arena is full");
    }
  } else {
    cobj_incref(&l->hdr);
  }
  c->lock = l;
  cobj_bind(L, -1, &c->hdr);
  return 1;
}

/* Python's _is_owned: an RLock's holder is this thread; a Lock is held. */
static int cond_owned(cond_obj *c) {
  if (is_rlock(c->lock))
    return rlock_is_mine(c->lock);
  return atomic_load_explicit(&c->lock->word, memory_order_relaxed) != 0;
}

static int cond_acquire(lua_State *L) {
  return lockish_acquire_lua(L, ((cond_obj *)cobj_self(L))->lock);
}

static int cond_release(lua_State *L) {
  const char *err = lockish_release(((cond_obj *)cobj_self(L))->lock);
  return err ? luaL_error(L, "%s", err) : 0;
}

/* Takes mu; after a holder died in the middle of a list update, rebuilds
 * what can be derived from the list itself (every update keeps `head` and
 * the links from it valid; `tail` and the count are rebuilt). */
static void cond_lock(cond_obj *c) {
  if (rmutex_lock(&c->mu)) {
    cond_waiter *last = NULL;
    uint32_t n = 0;
    for (cond_waiter *w = c->head; w; w = w->next) {
      last = w;
      n++;
    }
    c->tail = last;
    c->nwaiting = n;
  }
}

/* Under mu: whether w is on the list; with `remove`, takes it off. */
static int cond_unlink(cond_obj *c, cond_waiter *w, int remove) {
  cond_waiter **pp = &c->head, *prev = NULL;
  while (*pp && *pp != w) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  if (*pp == NULL)
    return 0;
  if (remove) {
    if (c->tail == w)
      c->tail = prev;
    *pp = w->next;
    c->nwaiting--;
  }
  return 1;
}

/* Waits for a notify; the lock is released meanwhile, fully for an RLock,
 * and held again (its count restored) on return.  1 if notified. */
static int cond_wait_core(cond_obj *c, double timeout, cond_waiter *w) {
  w->next = NULL;
  w->pid = concur_pid;
  atomic_store_explicit(&w->signaled, 0, memory_order_relaxed);
  cond_lock(c);
  if (c->tail)
    c->tail->next = w;
  else
    c->head = w;
  c->tail = w;
  c->nwaiting++;
  rmutex_unlock(&c->mu);

  lock_obj *l = c->lock;
  uint32_t saved = 0;
  if (is_rlock(l))
    saved = rlock_disown(l);
  else
    lock_release_word(l);

  deadline d = deadline_in(timeout);
  int got;
  for (;;) {
    int intr = 0;
    if (!atomic_load_explicit(&w->signaled, memory_order_acquire)) {
      int rc = fx_wait(&w->signaled, 0, &d, LOCK_SLICE_MS);
      intr = intr_pending();
      if (rc != ETIMEDOUT && !intr)
        continue;   /* woken, changed, EINTR: look again */
    }
    /* Signalled, or a slice or the deadline ended: settle under mu (a
     * notifier holds mu while it touches w). */
    cond_lock(c);
    if (atomic_load_explicit(&w->signaled, memory_order_acquire))
      got = 1;
    else if (!cond_unlink(c, w, 0))
      got = 1;   /* taken off the list by a notifier that died before signalling */
    else if (intr || deadline_passed(&d)) {
      /* Not notified: leave the list (a notify then goes to another). */
      cond_unlink(c, w, 1);
      got = intr ? -1 : 0;
    } else {
      rmutex_unlock(&c->mu);
      continue;
    }
    rmutex_unlock(&c->mu);
    break;
  }

  /* Held again even when interrupted, as Python's wait restores it. */
  lock_acquire_word(l, 1, -1, 0);
  if (is_rlock(l))
    rlock_own(l, saved);
  return got;
}

static int cond_wait_lua(lua_State *L, cond_obj *c, double timeout) {
  if (!cond_owned(c))
    return luaL_error(L, "cannot wait on un-acquired lock");
  cond_waiter *w = shm_alloc(sizeof *w);
  if (w == NULL)
    return luaL_error(L, "cannot wait: the shared memory arena is full");
  int got = cond_wait_core(c, timeout, w);
  shm_free(w);
  if (got < 0)
    return intr_raise(L);
  intr_settle(L);
  return got;
}

static int cond_wait(lua_State *L) {
  cond_obj *c = cobj_self(L);
  double timeout = concur_opt_timeout(L, 2);
  lua_pushboolean(L, cond_wait_lua(L, c, timeout));
  return 1;
}

/* c:wait_for(pred, [timeout]) -> pred's last value, as Python's. */
static int cond_wait_for(lua_State *L) {
  cond_obj *c = cobj_self(L);
  double timeout = concur_opt_timeout(L, 3);
  lua_settop(L, 2);
  if (lua_type(L, 2) != LUA_TFUNCTION && luaL_getmetafield(L, 2, "__call") == LUA_TNIL)
    return luaL_argerror(L, 2, lua_pushfstring(L, "callable expected, got %s", luaL_typename(L, 2)));
  lua_settop(L, 2);
  deadline d = deadline_in(timeout);
  for (;;) {
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1))
      return 1;
    double left = deadline_left(&d);
    if (left == 0)
      return 1;
    lua_pop(L, 1);
    cond_wait_lua(L, c, left);
  }
}

/* Wakes up to n waiters, the longest waiting first; those of processes that
 * have ended are dropped, not counted. */
static void cond_notify_core(cond_obj *c, lua_Integer n) {
  cond_lock(c);
  while (n > 0 && c->head) {
    cond_waiter *w = c->head;
    c->head = w->next;
    if (c->head == NULL)
      c->tail = NULL;
    c->nwaiting--;
    if (w->pid != concur_pid && proc_gone(w->pid)) {
      shm_free(w);
      continue;
    }
    atomic_store_explicit(&w->signaled, 1, memory_order_release);
    fx_wake(&w->signaled, 1);
    n--;
  }
  rmutex_unlock(&c->mu);
}

/* notify(n) and notify_all(): n waiters, the caller holding the lock. */
static int cond_notify_n(lua_State *L, lua_Integer n) {
  cond_obj *c = cobj_self(L);
  if (!cond_owned(c))
    return luaL_error(L, "cannot notify on un-acquired lock");
  cond_notify_core(c, n);
  return 0;
}

static int cond_notify(lua_State *L) { return cond_notify_n(L, luaL_optinteger(L, 2, 1)); }
static int cond_notify_all(lua_State *L) { return cond_notify_n(L, LUA_MAXINTEGER); }

static int cond_locked(lua_State *L) {
  cond_obj *c = cobj_self(L);
  lua_pushboolean(L, atomic_load_explicit(&c->lock->word, memory_order_relaxed) != 0);
  return 1;
}

static int cond_tostring(lua_State *L) {
  cond_obj *c = cobj_self(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "<concur.Condition ");
  lockish_describe(&b, c->lock);
  cond_lock(c);
  unsigned n = c->nwaiting;
  rmutex_unlock(&c->mu);
  char s[40];
  snprintf(s, sizeof s, " waiters=%u>", n);
  luaL_addstring(&b, s);
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg cond_m[] = {
  {"acquire", cond_acquire}, {"release", cond_release}, {"locked", cond_locked},
  {"wait", cond_wait}, {"wait_for", cond_wait_for},
  {"notify", cond_notify}, {"notify_all", cond_notify_all}, {"notifyAll", cond_notify_all},
  {"__tostring", cond_tostring}, {NULL, NULL}};

/* ---- Semaphore and BoundedSemaphore -------------------------------------------------- */

static int sem_make(lua_State *L, const cobj_type *type) {
  no_more_args(L, 1, type);
  lua_Integer v = luaL_optinteger(L, 1, 1);
  luaL_argcheck(L, v >= 0, 1, "semaphore initial value must be >= 0");
  luaL_argcheck(L, v <= INT32_MAX, 1, "semaphore initial value is too large");
  sem_obj *s = cobj_new_shared(L, type, sizeof *s);
  atomic_init(&s->value, (uint32_t)v);
  s->initial = (uint32_t)v;
  cobj_bind(L, -1, &s->hdr);
  return 1;
}

static int sem_new(lua_State *L) { return sem_make(L, &sem_type); }
static int bsem_new(lua_State *L) { return sem_make(L, &bsem_type); }

static sem_obj *sem_self(lua_State *L) { return cobj_self(L); }

static int sem_try(sem_obj *s) {
  uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
  while (v > 0)
    if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1, memory_order_acquire,
                                              memory_order_relaxed))
      return 1;
  return 0;
}

static int sem_acquire(lua_State *L) {
  sem_obj *s = sem_self(L);
  double timeout;
  int blocking = blocking_args(L, 2, &timeout);
  int ok = sem_try(s);
  if (!ok && blocking && timeout != 0) {
    deadline d = deadline_in(timeout);
    if (fx_spin(&s->value, 0))
      ok = sem_try(s);
    while (!ok) {
      /* seq_cst: either release sees us counted, or the futex sees its value. */
      atomic_fetch_add(&s->nwaiters, 1);
      /* In slices: a releaser killed between its store and its wake
       * leaves the unit there, with nobody woken to take it. */
      int rc = fx_wait(&s->value, 0, &d, LOCK_SLICE_MS);
      atomic_fetch_sub(&s->nwaiters, 1);
      if (intr_pending()) {
        /* Nothing taken.  A release's wake may have been ours: pass it on. */
        if (atomic_load(&s->value) > 0 && atomic_load(&s->nwaiters) > 0)
          fx_wake(&s->value, 1);
        return intr_raise(L);
      }
      ok = sem_try(s);
      if (!ok && rc == ETIMEDOUT && deadline_passed(&d))
        break;
    }
    intr_settle(L);
  }
  lua_pushboolean(L, ok);
  return 1;
}

static int sem_release(lua_State *L) {
  sem_obj *s = sem_self(L);
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1, 2, "n must be one or more");
  uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
  for (;;) {
    lua_Integer limit = s->hdr.type == &bsem_type ? (lua_Integer)s->initial : UINT32_MAX;
    if (n > limit - (lua_Integer)v)   /* not v + n: n may be near maxinteger */
      return luaL_error(L, s->hdr.type == &bsem_type ? "Semaphore released too many times"
                                                     : "Semaphore value too large");
    if (atomic_compare_exchange_weak(&s->value, &v, v + (uint32_t)n))
      break;
  }
  if (atomic_load(&s->nwaiters) > 0)
    fx_wake(&s->value, n > INT_MAX ? INT_MAX : (int)n);
  return 0;
}

static int sem_get_value(lua_State *L) {
  lua_pushinteger(L, atomic_load_explicit(&sem_self(L)->value, memory_order_relaxed));
  return 1;
}

static int sem_tostring(lua_State *L) {
  sem_obj *s = sem_self(L);
  unsigned v = atomic_load_explicit(&s->value, memory_order_relaxed);
  if (s->hdr.type == &bsem_type)
    lua_pushfstring(L, "<concur.BoundedSemaphore value=%d/%d>", (int)v, (int)s->initial);
  else
    lua_pushfstring(L, "<concur.Semaphore value=%d>", (int)v);
  return 1;
}

static const luaL_Reg sem_m[] = {
  {"acquire", sem_acquire}, {"release", sem_release}, {"get_value", sem_get_value},
  {"__tostring", sem_tostring}, {NULL, NULL}};

/* ---- Event ---------------------------------------------------------------------------- */

static int event_new(lua_State *L) {
  no_more_args(L, 0, &event_type);
  event_obj *e = cobj_new_shared(L, &event_type, sizeof *e);
  cobj_bind(L, -1, &e->hdr);
  return 1;
}

/* The flag and the number of sets that changed it share one word (bit 0 and
 * the bits above), changed by one atomic operation: a waiter that sees the
 * flag set also sees the set counted, so a set is never taken twice. */
#define EV_FLAG 1u
#define EV_GEN 2u

static int event_ready(cobj *o) {
  return (atomic_load(&((event_obj *)o)->word) & EV_FLAG) != 0;
}

static _Atomic uint32_t *event_watchers(cobj *o) { return &((event_obj *)o)->watchers; }

static int event_set(lua_State *L) {
  event_obj *e = cobj_self(L);
  uint32_t w = atomic_load(&e->word);
  while (!(w & EV_FLAG))
    if (atomic_compare_exchange_weak(&e->word, &w, (w + EV_GEN) | EV_FLAG)) {
      /* seq_cst: either we see the waiter counted, or it sees the word. */
      if (atomic_load(&e->nwaiters) > 0)
        fx_wake(&e->word, INT_MAX);
      sel_notify(&e->watchers);
      break;
    }
  return 0;
}

static int event_clear(lua_State *L) {
  event_obj *e = cobj_self(L);
  atomic_fetch_and(&e->word, ~EV_FLAG);
  return 0;
}

static int event_is_set(lua_State *L) {
  event_obj *e = cobj_self(L);
  lua_pushboolean(L, (atomic_load_explicit(&e->word, memory_order_acquire) & EV_FLAG) != 0);
  return 1;
}

/* True once the flag is set, or was set at any moment of the wait (a set
 * followed at once by a clear still wakes every waiter, as in Python). */
static int event_wait(lua_State *L) {
  event_obj *e = cobj_self(L);
  double timeout = concur_opt_timeout(L, 2);
  uint32_t w0 = atomic_load(&e->word);
  int got = (w0 & EV_FLAG) != 0;
  if (!got && timeout != 0) {
    /* The word moves from w0 only by a set (a clear of a clear flag is no
     * change), so any change means "set". */
    deadline d = deadline_in(timeout);
    if (fx_spin(&e->word, w0))
      got = 1;
    else {
      atomic_fetch_add(&e->nwaiters, 1);
      for (;;) {
        if (atomic_load(&e->word) != w0) {
          got = 1;
          break;
        }
        /* In slices: a setter killed between its store and its wake. */
        int rc = fx_wait(&e->word, w0, &d, LOCK_SLICE_MS);
        if (atomic_load(&e->word) != w0) {
          got = 1;
          break;
        }
        if (intr_pending()) {   /* an Event takes nothing: just leave */
          atomic_fetch_sub(&e->nwaiters, 1);
          return intr_raise(L);
        }
        if (rc == ETIMEDOUT && deadline_passed(&d))
          break;
      }
      atomic_fetch_sub(&e->nwaiters, 1);
    }
    intr_settle(L);
  }
  lua_pushboolean(L, got);
  return 1;
}

static int event_tostring(lua_State *L) {
  event_obj *e = cobj_self(L);
  lua_pushstring(L, atomic_load(&e->word) & EV_FLAG ? "<concur.Event set>" : "<concur.Event unset>");
  return 1;
}

static const luaL_Reg event_m[] = {
  {"set", event_set}, {"clear", event_clear}, {"is_set", event_is_set},
  {"isSet", event_is_set}, {"wait", event_wait}, {"__tostring", event_tostring},
  {NULL, NULL}};

/* ---- Barrier ---------------------------------------------------------------------------- */

static int barrier_new(lua_State *L) {
  no_more_args(L, 3, &barrier_type);
  lua_settop(L, 3);
  lua_Integer parties = luaL_checkinteger(L, 1);
  luaL_argcheck(L, parties >= 1 && parties <= INT32_MAX, 1, "parties must be from 1 to 2147483647");
  if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, 2, "__call") == LUA_TNIL)   /* a callable table works too */
      return luaL_typeerror(L, 2, "callable");
    lua_pop(L, 1);
  }
  double timeout = concur_opt_timeout(L, 3);
  barrier_obj *b = cobj_new_shared(L, &barrier_type, sizeof *b);
  if (rmutex_init(&b->mu) != 0) {
    shm_free(b);
    return luaL_error(L, "cannot make a Barrier: no mutex");
  }
  if (!lua_isnoneornil(L, 2)) {
    /* The action is kept encoded, in shared memory: the last thread to
     * arrive, in whichever process, runs its own copy. */
    tbuf msg = TBUF_INIT;
    char err[TRANSFER_ERRLEN];
    if (!transfer_encode(L, 2, 1, "action", 1, &msg, err)) {
      tbuf_free(&msg);
      shm_free(b);
      return luaL_error(L, "bad argument #2 to 'Barrier' (%s)", err);
    }
    if ((b->action = sblob_from_tbuf(&msg)) == NULL) {
      tbuf_free(&msg);
      shm_free(b);
      return luaL_error(L, "cannot make a Barrier: the shared memory arena is full");
    }
  }
  b->parties = (uint32_t)parties;
  b->timeout = timeout;
  cobj_bind(L, -1, &b->hdr);
  return 1;
}

static barrier_obj *barrier_self(lua_State *L) { return cobj_self(L); }

/* Under mu: a state change every waiter must see. */
static void barrier_changed(barrier_obj *b) {
  atomic_fetch_add(&b->seq, 1);
  fx_wake(&b->seq, INT_MAX);
}

/* Under mu: sleeps (mu released) until the next change or d. */
/* Takes mu.  The action's runner that died leaves the barrier broken; a
 * holder of mu that died between `count--` and the refill is finished for. */
static void barrier_lock(barrier_obj *b) {
  int repaired = rmutex_lock(&b->mu);
  if (b->state == B_ACTION && proc_gone(b->action_pid)) {
    b->state = B_BROKEN;
    barrier_changed(b);
  } else if (repaired && b->count == 0 &&
             (b->state == B_DRAINING || b->state == B_RESETTING)) {
    b->state = B_FILLING;
    barrier_changed(b);
  }
}

/* Under mu: sleeps (mu released) until the next change, d, or a slice end
 * (to see an action's runner die, or a party killed between a change and
 * its wake).  1 when d has passed, -1 when interrupted (intr_pending). */
static int barrier_sleep(barrier_obj *b, const deadline *d) {
  uint32_t s = atomic_load(&b->seq);
  rmutex_unlock(&b->mu);
  int rc = fx_wait(&b->seq, s, d, LOCK_SLICE_MS);
  barrier_lock(b);
  if (intr_pending())
    return -1;
  return rc == ETIMEDOUT && deadline_passed(d);
}

static int barrier_run_action(lua_State *L) {
  barrier_obj *b = lua_touserdata(L, 1);
  sblob_decode(L, b->action);
  lua_call(L, 0, 0);
  return 0;
}

static int barrier_wait(lua_State *L) {
  barrier_obj *b = barrier_self(L);
  double timeout = lua_isnoneornil(L, 2) ? b->timeout : concur_opt_timeout(L, 2);
  deadline d = deadline_in(timeout), forever = deadline_in(-1);
  int broken = 0, action_failed = 0;
  lua_Integer index = -1;
  barrier_lock(b);
  /* Python's _enter: wait while the last round drains or resets (or its
   * action runs: there the action holds Python's lock).  Python waits
   * without a timeout there; here the timeout holds (a party killed in the
   * middle of a round would otherwise keep everyone out for ever). */
  int timed_out = 0;
  while (!timed_out &&
         (b->state == B_DRAINING || b->state == B_RESETTING || b->state == B_ACTION))
    timed_out = barrier_sleep(b, &d);
  if (timed_out < 0) {   /* not in the round yet: leaves it as it is */
    rmutex_unlock(&b->mu);
    return intr_raise(L);
  }
  if (b->state == B_BROKEN || timed_out) {
    rmutex_unlock(&b->mu);
    cobj_push_error(L, "BrokenBarrierError");
    return lua_error(L);
  }
  int interrupted = 0;
  index = b->count++;
  if (b->count == b->parties) {
    if (b->action) {
      b->action_pid = concur_pid;
      b->state = B_ACTION;
      barrier_changed(b);   /* the waiters watch the runner from now on */
      rmutex_unlock(&b->mu);
      lua_pushcfunction(L, barrier_run_action);
      lua_pushlightuserdata(L, b);
      action_failed = lua_pcall(L, 1, 0, 0) != LUA_OK;   /* error stays on top */
      barrier_lock(b);
    }
    if (b->state == B_ACTION || b->state == B_FILLING) {
      b->state = action_failed ? B_BROKEN : B_DRAINING;
      barrier_changed(b);
    }
    broken = !action_failed && b->state < 0;
  } else {
    for (;;) {
      if (b->state != B_FILLING && b->state != B_ACTION)
        break;
      /* While the action runs, a timeout waits for it, as in Python
       * (where the action holds the barrier's lock). */
      int r = barrier_sleep(b, b->state == B_ACTION ? &forever : &d);
      if (r < 0 && (b->state == B_FILLING || b->state == B_ACTION)) {
        /* Python's: an exception in the wait breaks the barrier. */
        interrupted = 1;
        b->state = B_BROKEN;
        barrier_changed(b);
        break;
      }
      if (r > 0 && b->state == B_FILLING) {
        b->state = B_BROKEN;
        barrier_changed(b);
        break;
      }
    }
    broken = b->state < 0;
  }
  b->count--;
  if (b->count == 0 && (b->state == B_RESETTING || b->state == B_DRAINING)) {
    b->state = B_FILLING;
    barrier_changed(b);
  }
  rmutex_unlock(&b->mu);
  if (interrupted)
    return intr_raise(L);
  if (action_failed)
    return lua_error(L);
  intr_settle(L);
  if (broken) {
    cobj_push_error(L, "BrokenBarrierError");
    return lua_error(L);
  }
  lua_pushinteger(L, index);
  return 1;
}

/* abort() (reset 0) and reset() (1): the barrier's new state, its waiters
 * told. */
static int barrier_set_state(lua_State *L, int reset) {
  barrier_obj *b = barrier_self(L);
  barrier_lock(b);
  if (!reset)
    b->state = B_BROKEN;
  /* Python's reset: waiters of a filling or broken round leave broken and
   * the last one out refills; a round that is draining (or running its
   * action) has passed and is left alone. */
  else if (b->count == 0)
    b->state = B_FILLING;
  else if (b->state == B_FILLING || b->state == B_BROKEN)
    b->state = B_RESETTING;
  barrier_changed(b);
  rmutex_unlock(&b->mu);
  return 0;
}

static int barrier_abort(lua_State *L) { return barrier_set_state(L, 0); }
static int barrier_reset(lua_State *L) { return barrier_set_state(L, 1); }

static int barrier_index(lua_State *L) {
  barrier_obj *b = barrier_self(L);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "parties") == 0) {
    lua_pushinteger(L, b->parties);
    return 1;
  }
  if (k && (strcmp(k, "n_waiting") == 0 || strcmp(k, "broken") == 0)) {
    barrier_lock(b);
    int state = b->state;
    uint32_t count = b->count;
    rmutex_unlock(&b->mu);
    if (k[0] == 'n')
      lua_pushinteger(L, state == B_FILLING || state == B_ACTION ? count : 0);
    else
      lua_pushboolean(L, state == B_BROKEN);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));   /* the methods */
  return 1;
}

static int barrier_tostring(lua_State *L) {
  barrier_obj *b = barrier_self(L);
  barrier_lock(b);
  int state = b->state;
  unsigned count = b->count;
  rmutex_unlock(&b->mu);
  if (state == B_BROKEN)
    lua_pushfstring(L, "<concur.Barrier broken parties=%d>", (int)b->parties);
  else
    lua_pushfstring(L, "<concur.Barrier waiters=%d/%d>",
                    (int)(state == B_FILLING || state == B_ACTION ? count : 0), (int)b->parties);
  return 1;
}

static const luaL_Reg barrier_m[] = {
  {"wait", barrier_wait}, {"abort", barrier_abort}, {"reset", barrier_reset},
  {"__tostring", barrier_tostring}, {NULL, NULL}};

/* ---- registration ---------------------------------------------------------------------- */

/* The metatable of `type` with `methods`, each method getting the metatable
 * as upvalue 1 for cobj_self; `lockable` adds with and guard (objects with
 * acquire and release); `index`, when not NULL, is an __index that gets the
 * metatable and the methods as upvalues (attributes beside the methods). */
static void sync_type(lua_State *L, const cobj_type *type, const luaL_Reg *methods,
                      int lockable, lua_CFunction index) {
  static const luaL_Reg common[] = {{"with", sync_with}, {"guard", sync_guard}, {NULL, NULL}};
  cobj_newmetatable(L, type, NULL);
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, methods, 1);
  if (lockable) {
    lua_pushvalue(L, -1);          /* upvalue 1 of with and guard too, for cobj_self */
    luaL_setfuncs(L, common, 1);
  }
  if (index) {
    lua_pushvalue(L, -1);          /* upvalue 1: the metatable */
    lua_pushvalue(L, -1);          /* upvalue 2: the methods (same table) */
    lua_pushcclosure(L, index, 2);
    lua_setfield(L, -2, "__index");
  }
  cobj_register_metatable(L, type);
  lua_pop(L, 1);
}


static void lock_meta(lua_State *L) { sync_type(L, &lock_type, lock_m, 1, NULL); }
static void rlock_meta(lua_State *L) { sync_type(L, &rlock_type, rlock_m, 1, NULL); }
static void cond_meta(lua_State *L) { sync_type(L, &cond_type, cond_m, 1, NULL); }
static void sem_meta(lua_State *L) { sync_type(L, &sem_type, sem_m, 1, NULL); }
static void bsem_meta(lua_State *L) { sync_type(L, &bsem_type, sem_m, 1, NULL); }
static void event_meta(lua_State *L) { sync_type(L, &event_type, event_m, 0, NULL); }

static void barrier_meta(lua_State *L) { sync_type(L, &barrier_type, barrier_m, 0, barrier_index); }

void sync_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"Lock", lock_new}, {"RLock", rlock_new}, {"Condition", cond_new},
    {"Semaphore", sem_new}, {"BoundedSemaphore", bsem_new}, {"Event", event_new},
    {"Barrier", barrier_new}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
