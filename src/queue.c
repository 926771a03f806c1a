/*
 * queue.c - concur.Queue: Python's queue.Queue, multiprocessing.Queue and
 * JoinableQueue in one object, for threads and forked processes alike.
 *
 * Storage.  The queue and its items live in the shared arena (arena.c).  An
 * item is encoded once by its producer (transfer.c, into the thread's
 * scratch buffer) and copied once into the queue: small items as a record in
 * a chain of segments, large ones as an sblob of their own, made outside any
 * lock, whose pointer is the record.  A consumer copies a small record out
 * (onto its C stack) under the lock and decodes it after; the memory of
 * consumed segments is reused (one spare per queue) or given back.
 *
 * Two locks, as in Michael and Scott's two-lock queue: producers append at
 * the tail under `tail_lock`, consumers take from the head under
 * `head_lock`, so one producer and one consumer never wait for each other.
 * They meet only in two counters: `nput`, items committed ever, written by
 * producers and read by consumers, and `nget`, items taken ever (both mod
 * 2^32; the size is nput - nget).  Storing nput is what commits an item, so
 * a consumer never reads a record that is still being written.  Each counter
 * is also the futex word its waiters sleep on (getters on nput, putters on
 * nget; joiners on `ndone`, the task_done calls).  Each group of fields has a
 * cache line of its own.
 *
 * Crash safety.  The locks are process lock words (pword, wait.c): a process
 * killed holding one is taken over by the next caller.  Each side changes its
 * state through a journal: it writes the new values, sets `valid`, applies
 * them and clears `valid`; whoever takes the lock next finds `valid` set
 * only if the holder died, and applies the journal again (every step is
 * idempotent).  Records are written before the journal, where no consumer
 * looks.  A killed process leaks at most a segment or the item it held.
 *
 * Lock order: tail_lock and head_lock are never held together; the arena's
 * mutex may be taken under either.  No Lua call is made under either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "queue.h"
#include "transfer.h"
#include "wait.h"

#define LINE 64
#define SEG_FIRST 1024          /* bytes of a queue's first segment, header included */
#define SEG_MAX (32 * 1024)     /* segments grow by doubling up to this */
#define INLINE_MAX (8 * 1024)   /* larger records are sblobs */
#define STACK_COPY 4096         /* records up to this are copied out onto the C stack */
#define QUEUE_SLICE_MS 1000     /* sleepers look for a dead producer this often */

enum { REC_INLINE = 1, REC_BLOB = 2, REC_NEXT = 3 };

typedef struct qseg {
  struct qseg *next;            /* written once, before the item that needs it commits */
  uint32_t size;                /* bytes of data */
  uint32_t pad;
  unsigned char data[];
} qseg;

/* A record in a segment, 8-aligned: a message in the flat layout (a
 * msg_head of kind REC_INLINE, its object pointers and bytes).  REC_BLOB:
 * the head and the sblob's pointer.  REC_NEXT: the rest of the segment is
 * unused, go on at the start of the next. */
typedef msg_head qrec;

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)
#define REC_BLOB_SIZE (sizeof(qrec) + sizeof(sblob *))

typedef struct put_journal {
  qseg *link_from;              /* a segment to link `seg` after, or NULL */
  qseg *seg;
  uint32_t used, nput;
  _Atomic uint32_t valid;
} put_journal;

typedef struct get_journal {
  qseg *seg;
  uint32_t read, nget;
  _Atomic uint32_t valid;
} get_journal;

typedef struct queue_obj {
  union {
    struct {
      cobj hdr;
      void *raw;                /* the arena block this is aligned in */
      uint32_t maxsize;         /* 0: unbounded */
      _Atomic(qseg *) spare;    /* a consumed segment kept for the next one needed */
    };
    char line0[LINE];
  };
  union {                       /* producers: under tail_lock */
    struct {
      _Atomic uint32_t tail_lock;
      uint32_t used;            /* bytes of tail->data in use */
      qseg *tail;
      put_journal pj;
    };
    char line1[LINE];
  };
  union {
    _Atomic uint32_t nput;
    char line2[LINE];
  };
  union {                       /* consumers: under head_lock */
    struct {
      _Atomic uint32_t head_lock;
      uint32_t read;            /* offset of the next record in head->data */
      qseg *head;
      get_journal gj;
    };
    char line3[LINE];
  };
  union {
    _Atomic uint32_t nget;
    char line4[LINE];
  };
  union {
    _Atomic uint32_t ndone;
    char line5[LINE];
  };
  union {                       /* how many sleep on nput, nget, ndone */
    struct {
      _Atomic uint32_t getters, putters, joiners;
    };
    char line6[LINE];
  };
} queue_obj;

static void queue_destroy(cobj *o);
static void queue_meta(lua_State *L);

static const cobj_type queue_type = {"concur.Queue", queue_destroy, NULL, 1, queue_meta, NULL, NULL};

/* ---- segments ---------------------------------------------------------------- */

static qrec *rec_at(qseg *s, uint32_t off) { return (qrec *)(s->data + off); }

static size_t rec_size(const qrec *r) {
  if (r->kind == REC_BLOB)
    return REC_BLOB_SIZE;
  return ALIGN8(sizeof(qrec) + r->nobjs * sizeof(cobj *) + (size_t)r->len);
}

/* A segment of `bytes` in all (a power of two: the arena's block header is
 * taken from it, so that the block is exactly that size). */
static qseg *seg_new(size_t bytes) {
  qseg *s = shm_alloc(bytes - 16);
  if (s) {
    s->next = NULL;
    s->size = (uint32_t)(bytes - 16 - sizeof(qseg));
  }
  return s;
}

static size_t seg_bytes(const qseg *s) { return s->size + sizeof(qseg) + 16; }

/* A consumed segment: kept as the spare, the previous spare freed. */
static void seg_retire(queue_obj *q, qseg *s) {
  qseg *old = atomic_exchange_explicit(&q->spare, s, memory_order_acq_rel);
  shm_free(old);
}

/* A segment for the producer: the spare if it is big enough. */
static qseg *seg_take(queue_obj *q, size_t want_bytes, size_t need) {
  qseg *s = atomic_exchange_explicit(&q->spare, NULL, memory_order_acq_rel);
  if (s && seg_bytes(s) >= want_bytes && s->size >= need) {
    s->next = NULL;
    return s;
  }
  shm_free(s);
  size_t bytes = want_bytes;
  while (bytes - 16 - sizeof(qseg) < need)
    bytes *= 2;
  return seg_new(bytes);
}

/* ---- the two sides ------------------------------------------------------------- */

static void put_apply(queue_obj *q) {
  if (q->pj.link_from)
    q->pj.link_from->next = q->pj.seg;
  q->tail = q->pj.seg;
  q->used = q->pj.used;
  /* seq_cst: ordered before the load of `getters` that follows (see wake) */
  atomic_store(&q->nput, q->pj.nput);
}

static void get_apply(queue_obj *q) {
  q->head = q->gj.seg;
  q->read = q->gj.read;
  atomic_store(&q->nget, q->gj.nget);
}

static void tail_lock(queue_obj *q) {
  if (!pword_try(&q->tail_lock))
    pword_acquire(&q->tail_lock, 1, -1, NULL);
  if (atomic_load_explicit(&q->pj.valid, memory_order_acquire)) {   /* its holder died */
    put_apply(q);
    atomic_store_explicit(&q->pj.valid, 0, memory_order_release);
  }
}

static void head_lock(queue_obj *q) {
  if (!pword_try(&q->head_lock))
    pword_acquire(&q->head_lock, 1, -1, NULL);
  if (atomic_load_explicit(&q->gj.valid, memory_order_acquire)) {
    get_apply(q);
    atomic_store_explicit(&q->gj.valid, 0, memory_order_release);
  }
}

/* Whether a process that died holds the lock word w. */
static int held_by_dead(_Atomic uint32_t *w) {
  uint32_t v = atomic_load_explicit(w, memory_order_relaxed);
  return v != 0 && (v & ~PWORD_WAITERS) != (uint32_t)concur_pid &&
         proc_gone((int)(v & ~PWORD_WAITERS));
}

/* A sleeper's check, now and then: a producer killed holding tail_lock may
 * have left an item journaled but not committed (which a getter waits for),
 * a consumer killed holding head_lock a get journaled but not committed
 * (which keeps a bounded queue full for a putter).  Taking the lock finishes
 * the dead holder's update. */
static void tail_check(queue_obj *q) {
  if (held_by_dead(&q->tail_lock)) {
    tail_lock(q);
    pword_release(&q->tail_lock);
  }
}

static void head_check(queue_obj *q) {
  if (held_by_dead(&q->head_lock)) {
    head_lock(q);
    pword_release(&q->head_lock);
  }
}

/* Commits a journal that is filled in: valid, then applied, then cleared.
 * valid comes before any store of the apply in program order: a kill lands
 * between two instructions, so the compiler's order is what counts. */
static inline void journal_commit(queue_obj *q, _Atomic uint32_t *valid, void (*apply)(queue_obj *)) {
  atomic_store_explicit(valid, 1, memory_order_release);
  atomic_signal_fence(memory_order_seq_cst);
  apply(q);
  atomic_store_explicit(valid, 0, memory_order_release);
}

/* A put or get that found no room or no item: whether it gives up now (not
 * blocking, or past its deadline, which starts at the first miss). */
static int gives_up(int block, double timeout, deadline *d, int *timed) {
  if (!*timed) {
    *d = deadline_in(timeout);
    *timed = 1;
  }
  return !block || deadline_passed(d);
}

/* Under tail_lock: appends the item encoded in b (or the blob; `local`:
 * b holds a process-local object).  1 when
 * done (the references moved to the queue), 0 when the queue is full (*seen:
 * the nget to wait on), -1 when the arena is full. */
static int put_locked(queue_obj *q, tbuf *b, sblob *blob, int local, uint32_t *seen) {
  uint32_t n = atomic_load_explicit(&q->nput, memory_order_relaxed);
  if (q->maxsize) {
    uint32_t g = atomic_load_explicit(&q->nget, memory_order_acquire);
    if (n - g >= q->maxsize) {
      *seen = g;
      return 0;
    }
  }
  size_t size = blob ? REC_BLOB_SIZE : ALIGN8(sizeof(qrec) + msg_body_size(b));
  qseg *t = q->tail, *s = t, *link = NULL;
  uint32_t off = q->used;
  /* A segment always keeps room for a REC_NEXT after its last record. */
  if (off + size + sizeof(qrec) > t->size) {
    size_t want = seg_bytes(t) * 2;
    s = seg_take(q, want > SEG_MAX ? SEG_MAX : want, size + sizeof(qrec));
    if (s == NULL)
      return -1;
    rec_at(t, off)->kind = REC_NEXT;   /* past the committed end: unseen until the link */
    link = t;
    off = 0;
  }
  qrec *r = rec_at(s, off);
  if (blob) {
    r->pid = concur_self;
    r->kind = REC_BLOB;
    r->flags = 0;
    r->len = 0;
    r->nobjs = 0;
    memcpy((unsigned char *)(r + 1), &blob, sizeof blob);
  } else {
    msg_write(r, REC_INLINE, local, b);
  }
  q->pj.link_from = link;
  q->pj.seg = s;
  q->pj.used = off + (uint32_t)size;
  q->pj.nput = n + 1;
  journal_commit(q, &q->pj.valid, put_apply);
  return 1;
}

/* Under head_lock: takes the oldest item.  1: a small record copied into
 * buf, or *blob set; 0: the queue is empty (*seen: the nput to wait on);
 * -1: the record needs *need bytes, more than cap (nothing taken). */
static int get_locked(queue_obj *q, unsigned char *buf, size_t cap, size_t *need, sblob **blob,
                      uint32_t *seen) {
  uint32_t n = atomic_load_explicit(&q->nget, memory_order_relaxed);
  if (atomic_load_explicit(&q->nput, memory_order_acquire) == n) {
    *seen = n;
    return 0;
  }
  qseg *first = q->head, *s = first;
  uint32_t off = q->read;
  qrec *r = rec_at(s, off);
  while (r->kind == REC_NEXT) {
    s = s->next;
    off = 0;
    r = rec_at(s, 0);
  }
  size_t size = rec_size(r);
  if (r->kind == REC_BLOB) {
    memcpy(blob, (const unsigned char *)(r + 1), sizeof *blob);
  } else {
    if (size > cap) {
      *need = size;
      return -1;
    }
    memcpy(buf, r, size);
  }
  q->gj.seg = s;
  q->gj.read = off + (uint32_t)size;
  q->gj.nget = n + 1;
  journal_commit(q, &q->gj.valid, get_apply);
  while (first != s) {   /* segments passed: no producer writes them again */
    qseg *next = first->next;
    seg_retire(q, first);
    first = next;
  }
  return 1;
}

/* Gives back what a record holds (a queue destroyed with items in it). */
static void rec_release(qrec *r) {
  if (r->kind == REC_BLOB) {
    sblob *blob;
    memcpy(&blob, (const unsigned char *)(r + 1), sizeof blob);
    sblob_free(blob);
    return;
  }
  msg_release((cobj *const *)(r + 1), r->nobjs, r->pid);
}

static void queue_destroy(cobj *o) {
  queue_obj *q = (queue_obj *)o;
  /* No one else holds a reference; a dead process may have left a journal. */
  if (q->pj.valid)
    put_apply(q);
  if (q->gj.valid)
    get_apply(q);
  qseg *s = q->head;
  uint32_t off = q->read;
  for (uint32_t left = q->nput - q->nget; left > 0;) {
    qrec *r = rec_at(s, off);
    if (r->kind == REC_NEXT) {
      s = s->next;
      off = 0;
      continue;
    }
    rec_release(r);
    off += (uint32_t)rec_size(r);
    left--;
  }
  for (s = q->head; s;) {
    qseg *next = s->next;
    shm_free(s);
    s = next;
  }
  shm_free(q->spare);
  shm_free(q->raw);
}

/* ---- waiting -------------------------------------------------------------------- */

/* Waits a while for *word to leave `seen`, counted in *sleepers while
 * asleep; the caller looks again whatever happened. */
static void wait_change(queue_obj *q, _Atomic uint32_t *word, uint32_t seen,
                        _Atomic uint32_t *sleepers, const deadline *d) {
  if (fx_spin(word, seen))
    return;
  atomic_fetch_add(sleepers, 1);   /* seq_cst: see wake */
  int rc = fx_wait(word, seen, d, QUEUE_SLICE_MS);
  atomic_fetch_sub(sleepers, 1);
  if (rc == ETIMEDOUT) {
    if (word == &q->nget)
      head_check(q);      /* a putter waits for room */
    else
      tail_check(q);      /* a getter waits for an item */
  }
}

/* After a seq_cst store to *word: wakes one sleeper if any.  A sleeper
 * either counted itself before our load, or its futex sees the new word. */
static inline void wake(_Atomic uint32_t *word, _Atomic uint32_t *sleepers, int n) {
  if (atomic_load(sleepers))
    fx_wake(word, n);
}

/* (block, timeout) at idx, idx + 1 as Python's put and get take them: the
 * timeout counts only when blocking (it is still checked). */
static int block_args(lua_State *L, int idx, double *timeout) {
  int block = 1;
  if (!lua_isnoneornil(L, idx)) {
    luaL_checktype(L, idx, LUA_TBOOLEAN);
    block = lua_toboolean(L, idx);
  }
  *timeout = concur_opt_timeout(L, idx + 1);
  return block;
}

/* ---- Lua methods ------------------------------------------------------------------ */

/* concur.Queue([maxsize]) or Queue{maxsize = n}: 0, nil or less is
 * unbounded.  Errors name the function as it was called (JoinableQueue). */
static int queue_new(lua_State *L) {
  static const char *const options[] = {"maxsize", NULL};
  const char *fname = cobj_called_as(L, "Queue");
  lua_Integer maxsize = 0;
  int isint = 1;
  if (lua_istable(L, 1)) {   /* Queue{maxsize = n}, as Python's keyword */
    cobj_check_options(L, 1, fname, options);
    if (lua_getfield(L, 1, "maxsize") != LUA_TNIL) {
      isint = lua_type(L, -1) == LUA_TNUMBER;
      maxsize = isint ? lua_tointegerx(L, -1, &isint) : 0;
      if (!isint)
        return luaL_error(L, "bad argument #1 to '%s' (option 'maxsize': integer expected, got %s)",
                          fname, lua_type(L, -1) == LUA_TNUMBER ? luaL_tolstring(L, -1, NULL)
                                                                : cobj_typename(L, -1));
    }
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, 1)) {   /* as luaL_optinteger: a number or a numeric string */
    maxsize = lua_tointegerx(L, 1, &isint);
    if (!isint && !lua_isnumber(L, 1))
      return luaL_error(L, "bad argument #1 to '%s' (number expected, got %s)", fname,
                        cobj_typename(L, 1));
    if (!isint)
      return luaL_error(L, "bad argument #1 to '%s' (number has no integer representation)",
                        fname);
  }
  if (maxsize < 0)
    maxsize = 0;   /* Python: zero or less is unbounded */
  if (maxsize > INT32_MAX)
    return luaL_error(L, "bad argument #1 to '%s' (maxsize too large)", fname);
  cobj_gc_pressure(L, shm_cost(sizeof(queue_obj) + LINE) + SEG_FIRST);
  cobj_newhandle(L, &queue_type, 0);
  void *raw = NULL;
  qseg *seg = NULL;
  for (int again = 0;; again++) {
    raw = shm_runtime_init() == 0 ? shm_alloc(sizeof(queue_obj) + LINE) : NULL;
    seg = raw ? seg_new(SEG_FIRST) : NULL;
    if (seg || again)
      break;
    /* Full, maybe of queues only dropped handles hold: collect, once. */
    shm_free(raw);
    raw = NULL;
    if (!cobj_gc_collect(L))
      break;
  }
  if (seg == NULL) {
    shm_free(raw);
    return luaL_error(L, "cannot make a Queue: the shared memory arena is full");
  }
  queue_obj *q = (queue_obj *)(((uintptr_t)raw + LINE - 1) & ~(uintptr_t)(LINE - 1));
  memset(q, 0, sizeof *q);
  cobj_init(&q->hdr, &queue_type);
  q->raw = raw;
  q->maxsize = (uint32_t)maxsize;
  q->head = q->tail = seg;
  cobj_bind(L, -1, &q->hdr);
  return 1;
}

static void drop_item(tbuf *b, sblob *blob) {
  if (blob)
    sblob_free(blob);
  else
    tbuf_free(b);   /* gives back its references; the scratch starts again empty */
}

/* q:put(item, [block], [timeout]) */
static int queue_put(lua_State *L) {
  queue_obj *q = cobj_self(L);
  luaL_checkany(L, 2);
  double timeout;
  int block = block_args(L, 3, &timeout);
  tbuf *b = tbuf_scratch();
  char err[TRANSFER_ERRLEN];
  if (!transfer_encode(L, 2, 1, "item", 1, b, err))
    return luaL_error(L, "%s", err);
  sblob *blob = NULL;
  int local = tbuf_has_local(b);   /* found before the lock is taken */
  if (sizeof(qrec) + b->nobjs * sizeof(cobj *) + b->len > INLINE_MAX) {
    blob = sblob_from_tbuf(b);   /* copied outside the lock; b is left empty */
    if (blob == NULL) {
      tbuf_free(b);
      return luaL_error(L, "cannot put: the shared memory arena is full");
    }
  }
  deadline d;
  int timed = 0;
  for (;;) {
    uint32_t seen = 0;
    tail_lock(q);
    int rc = put_locked(q, b, blob, local, &seen);
    pword_release(&q->tail_lock);
    if (rc > 0) {
      if (!blob) {
        b->nobjs = 0;   /* the references are the queue's now */
        tbuf_scratch_trim(b);
      }
      wake(&q->nput, &q->getters, 1);
      intr_settle(L);   /* put: an interrupt now comes after the call */
      return 0;
    }
    if (rc < 0) {
      drop_item(b, blob);
      return luaL_error(L, "cannot put: the shared memory arena is full");
    }
    if (gives_up(block, timeout, &d, &timed)) {
      /* A consumer killed after journaling its get: commit it first. */
      head_check(q);
      if (atomic_load(&q->nget) != seen)
        continue;
      drop_item(b, blob);
      cobj_push_error(L, "Full");
      return lua_error(L);
    }
    wait_change(q, &q->nget, seen, &q->putters, &d);
    if (intr_pending()) {   /* not put: the item is given back */
      drop_item(b, blob);
      return intr_raise(L);
    }
  }
}

/* Pushes the item copied out into buf (a record) or held by blob. */
static int push_item(lua_State *L, const unsigned char *buf, sblob *blob) {
  if (blob)
    return sblob_decode_free(L, blob);
  const qrec *r = (const qrec *)buf;
  tbuf view = msg_view(r);
  return transfer_decode_taking(L, &view, (r->flags & MSG_LOCAL) != 0, NULL);
}

/* q:get([block], [timeout]) */
static int queue_get(lua_State *L) {
  queue_obj *q = cobj_self(L);
  double timeout;
  int block = block_args(L, 2, &timeout);
  lua_settop(L, 3);
  _Alignas(16) unsigned char stackbuf[STACK_COPY];
  unsigned char *buf = stackbuf;
  size_t cap = sizeof stackbuf;
  deadline d;
  int timed = 0;
  for (;;) {
    sblob *blob = NULL;
    size_t need = 0;
    uint32_t seen = 0;
    head_lock(q);
    int rc = get_locked(q, buf, cap, &need, &blob, &seen);
    pword_release(&q->head_lock);
    if (rc > 0) {
      if (q->maxsize)
        wake(&q->nget, &q->putters, 1);
      int held = intr_hold(L);   /* taken: the call completes (see intr_pending) */
      int n = push_item(L, buf, blob);
      if (n != 1) {   /* a record always holds one value */
        lua_settop(L, 3);
        lua_pushnil(L);
      }
      if (held)
        intr_rearm(L);
      else
        intr_settle(L);
      return 1;
    }
    if (rc < 0) {
      /* A large record: a buffer for it (no lock held), then again. */
      buf = lua_newuserdatauv(L, need, 0);
      cap = need;
      continue;
    }
    if (gives_up(block, timeout, &d, &timed)) {
      /* A producer killed after journaling its item: commit it first. */
      tail_check(q);
      if (atomic_load(&q->nput) != seen)
        continue;
      cobj_push_error(L, "Empty");
      return lua_error(L);
    }
    wait_change(q, &q->nput, seen, &q->getters, &d);
    if (intr_pending())   /* nothing taken */
      return intr_raise(L);
  }
}

static int queue_put_nowait(lua_State *L) {
  cobj_self(L);   /* self first: q.put_nowait() names argument 1 */
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  lua_pushboolean(L, 0);
  return queue_put(L);
}

static int queue_get_nowait(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, 0);
  return queue_get(L);
}

static uint32_t queue_size(queue_obj *q) {
  uint32_t g = atomic_load_explicit(&q->nget, memory_order_acquire);
  return atomic_load_explicit(&q->nput, memory_order_acquire) - g;
}

static int queue_qsize(lua_State *L) {
  lua_pushinteger(L, queue_size(cobj_self(L)));
  return 1;
}

static int queue_empty(lua_State *L) {
  lua_pushboolean(L, queue_size(cobj_self(L)) == 0);
  return 1;
}

static int queue_full(lua_State *L) {
  queue_obj *q = cobj_self(L);
  lua_pushboolean(L, q->maxsize > 0 && queue_size(q) >= q->maxsize);
  return 1;
}

/* Every put counts one unfinished task until a task_done. */
static int queue_task_done(lua_State *L) {
  queue_obj *q = cobj_self(L);
  uint32_t d = atomic_load(&q->ndone);
  do {
    if (atomic_load(&q->nput) == d)
      return luaL_error(L, "task_done() called too many times");
  } while (!atomic_compare_exchange_weak(&q->ndone, &d, d + 1));
  if (atomic_load(&q->nput) == d + 1)
    wake(&q->ndone, &q->joiners, INT_MAX);
  return 0;
}

/* Waits until every item put has had its task_done. */
static int queue_join(lua_State *L) {
  queue_obj *q = cobj_self(L);
  deadline forever = deadline_in(-1);
  for (;;) {
    uint32_t d = atomic_load(&q->ndone);
    if (atomic_load(&q->nput) == d)
      return 0;
    atomic_fetch_add(&q->joiners, 1);
    fx_wait(&q->ndone, d, &forever, QUEUE_SLICE_MS);
    atomic_fetch_sub(&q->joiners, 1);
    if (intr_pending())
      return intr_raise(L);
  }
}

static int queue_tostring(lua_State *L) {
  queue_obj *q = cobj_self(L);
  if (q->maxsize)
    lua_pushfstring(L, "<concur.Queue size=%d maxsize=%d>", (int)queue_size(q), (int)q->maxsize);
  else
    lua_pushfstring(L, "<concur.Queue size=%d>", (int)queue_size(q));
  return 1;
}

static const luaL_Reg queue_m[] = {
  {"put", queue_put}, {"get", queue_get}, {"put_nowait", queue_put_nowait},
  {"get_nowait", queue_get_nowait}, {"qsize", queue_qsize}, {"empty", queue_empty},
  {"full", queue_full}, {"task_done", queue_task_done}, {"join", queue_join},
  {"__tostring", queue_tostring}, {NULL, NULL}};

static void queue_meta(lua_State *L) {
  cobj_newmetatable(L, &queue_type, NULL);
  lua_pushvalue(L, -1);   /* upvalue 1 of every method: the metatable, for cobj_self */
  luaL_setfuncs(L, queue_m, 1);
  cobj_register_metatable(L, &queue_type);
  lua_pop(L, 1);
}

void queue_open(lua_State *L) {
  lua_pushcfunction(L, queue_new);
  lua_setfield(L, -2, "Queue");
}
