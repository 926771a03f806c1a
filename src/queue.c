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
 * The ordered kinds (LifoQueue, PriorityQueue) keep their items in an
 * array in the arena instead (a stack, or a binary heap on (priority, order
 * put)), each item an sblob of its own.  Puts and gets both change the
 * array, so they take one lock, tail_lock; a change is journaled as the list
 * of slots it writes (a sift writes at most one slot per level), so that the
 * next holder can finish a dead one's change.  SimpleQueue is a Queue
 * without task_done, join and a bound.
 *
 * Shutdown (Python 3.13): `shut` is set, then tail_lock is taken once, so
 * that no put that began before commits after shutdown returns; sleepers
 * sleep on a bell (`gbell`, `pbell`), not on the counters, so that a
 * shutdown, which changes no counter, still wakes them: a waker rings (bumps
 * the bell) when it sees sleepers, and a sleeper reads the bell before it
 * looks at its condition a last time.
 *
 * Spinning getters: before it sleeps a getter spins a while (fx_spin_lease),
 * counted in `gspin`, renewing `gspin_lease` (a monotonic time a few µs
 * ahead) as it goes and zeroing it when it stops.  A putter that sees a
 * spinner with a live lease does not wake a sleeper (wake_getter): the
 * spinner sees the item, and a getter that takes an item and leaves more
 * behind wakes the next (get_values).  So a busy producer makes no futex call
 * while a consumer spins: the owner of a pool with idle workers paid one per
 * task.  A spinner killed mid-spin leaves `gspin` counted, but its lease runs
 * out in FX_LEASE_NS; an item put within that time waits for a sleeper's
 * next look (QUEUE_SLICE_MS), never lost.
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
enum { Q_FIFO = 0, Q_LIFO = 1, Q_PRIO = 2 };   /* queue_obj.kind */

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

/* ---- the ordered kinds' array ------------------------------------------------ */

enum { KEY_NONE = 0, KEY_INT = 1, KEY_FLT = 2, KEY_STR = 3 };

/* A slot: an item and, for a PriorityQueue, its priority (a string key is a
 * copy of its own in the arena) and the order it was put in. */
typedef struct oent {
  union {
    int64_t i;
    double f;
    const char *s;
  } key;
  uint64_t seq;
  sblob *item;
  uint32_t klen, ktype;
} oent;

#define OJ_WRITES 34   /* a sift writes one slot per level: 33 levels hold 2^32 */
#define ORD_FIRST 16   /* slots of a new array */

typedef struct ojournal {
  oent *ent;                    /* the array after (a grown one) */
  uint64_t seq;
  uint32_t cap, count, nput, nget, nw;
  uint32_t idx[OJ_WRITES];
  oent w[OJ_WRITES];
  _Atomic uint32_t valid;
} ojournal;

typedef struct oheap {          /* under tail_lock */
  oent *ent;
  uint64_t seq;                 /* the next put's order */
  uint32_t cap, count;
  ojournal j;
} oheap;

typedef struct queue_obj {
  union {
    struct {
      cobj hdr;
      void *raw;                /* the arena block this is aligned in */
      _Atomic uint32_t maxsize; /* 0: unbounded */
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
  union {                       /* read by every call, written seldom */
    struct {
      _Atomic uint32_t getters, putters, joiners;   /* how many sleep (on the bells, ndone) */
      _Atomic uint32_t gbell, pbell;   /* rung for getters, putters (see wake) */
      uint32_t kind;            /* Q_FIFO, Q_LIFO, Q_PRIO */
      _Atomic uint32_t shut;    /* shutdown() was called */
      oheap *oh;                /* the ordered kinds' array */
      _Atomic uint32_t watchers;   /* concur.select callers watching */
    };
    char line6[LINE];
  };
  union {                       /* spinning getters (see the top) */
    struct {
      _Atomic uint32_t gspin;   /* how many spin now */
      _Atomic int64_t gspin_lease;   /* a spinner looks until then (ns), 0: none */
    };
    char line7[LINE];
  };
} queue_obj;

static void queue_destroy(cobj *o);
static void queue_meta(lua_State *L);
static void lifo_meta(lua_State *L);
static void prio_meta(lua_State *L);
static void simple_meta(lua_State *L);

static int queue_ready(cobj *o);
static _Atomic uint32_t *queue_watchers(cobj *o);
static const cobj_sel queue_sel = {queue_ready, queue_watchers, NULL, NULL};

static const cobj_type queue_type = {"concur.Queue", queue_destroy, NULL, 1, queue_meta, NULL, NULL,
                                     &queue_sel};
static const cobj_type lifo_type = {"concur.LifoQueue", queue_destroy, NULL, 1, lifo_meta, NULL,
                                    NULL, &queue_sel};
static const cobj_type prio_type = {"concur.PriorityQueue", queue_destroy, NULL, 1, prio_meta, NULL,
                                    NULL, &queue_sel};
static const cobj_type simple_type = {"concur.SimpleQueue", queue_destroy, NULL, 1, simple_meta,
                                      NULL, NULL, &queue_sel};

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

static void ord_apply(queue_obj *q);

static void tail_lock(queue_obj *q) {
  if (!pword_try(&q->tail_lock))
    pword_acquire(&q->tail_lock, 1, -1, NULL);
  if (atomic_load_explicit(&q->pj.valid, memory_order_acquire)) {   /* its holder died */
    put_apply(q);
    atomic_store_explicit(&q->pj.valid, 0, memory_order_release);
  }
  if (q->oh && atomic_load_explicit(&q->oh->j.valid, memory_order_acquire)) {
    ord_apply(q);
    atomic_store_explicit(&q->oh->j.valid, 0, memory_order_release);
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

/* ---- the ordered kinds ----------------------------------------------------------- */

/* a < b, or 0, or > 0: priorities of one class (numbers, or strings), compared
 * exactly (an integer with a float as Lua's < does; strings bytewise). */
static int key_cmp(const oent *a, const oent *b) {
  if (a->ktype == KEY_STR) {
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = n ? memcmp(a->key.s, b->key.s, n) : 0;
    return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
  }
  if (a->ktype == KEY_INT && b->ktype == KEY_INT)
    return (a->key.i > b->key.i) - (a->key.i < b->key.i);
  if (a->ktype == KEY_FLT && b->ktype == KEY_FLT)
    return (a->key.f > b->key.f) - (a->key.f < b->key.f);
  int sign = 1;
  const oent *in = a, *fl = b;
  if (a->ktype == KEY_FLT) {
    in = b;
    fl = a;
    sign = -1;
  }
  int64_t i = in->key.i;
  double f = fl->key.f;   /* never NaN (refused at put) */
  int c;
  if (f >= 9223372036854775808.0)
    c = -1;
  else if (f < -9223372036854775808.0)
    c = 1;
  else {
    double fl_f = (double)(int64_t)f;   /* in range: truncated */
    if (fl_f > f)
      fl_f -= 1;   /* floor */
    int64_t fi = (int64_t)fl_f;
    c = i < fi ? -1 : i > fi ? 1 : (f > fl_f ? -1 : 0);
  }
  return sign * c;
}

/* Whether slot a comes out before slot b. */
static int ent_before(const queue_obj *q, const oent *a, const oent *b) {
  if (q->kind == Q_LIFO)
    return a->seq > b->seq;
  int c = key_cmp(a, b);
  return c ? c < 0 : a->seq < b->seq;
}

static void jw(ojournal *j, uint32_t idx, const oent *e) {
  j->idx[j->nw] = idx;
  j->w[j->nw++] = *e;
}

static void ord_apply(queue_obj *q) {
  oheap *h = q->oh;
  ojournal *j = &h->j;
  for (uint32_t k = 0; k < j->nw; k++)
    j->ent[j->idx[k]] = j->w[k];
  h->ent = j->ent;
  h->cap = j->cap;
  h->count = j->count;
  h->seq = j->seq;
  atomic_store(&q->nget, j->nget);
  /* seq_cst: ordered before the load of `getters` that follows (see wake) */
  atomic_store(&q->nput, j->nput);
}

/* A priority's class: numbers and strings do not compare. */
static int key_class(uint32_t ktype) { return ktype == KEY_STR ? 2 : 1; }

/* Under tail_lock: adds e (its item and key set).  1 when done, 0 when the
 * queue is full (*seen: the nget to wait on), -1 when the arena is full, -2
 * when e's priority does not compare with those in the queue. */
static int ord_put_locked(queue_obj *q, oent *e, uint32_t *seen) {
  oheap *h = q->oh;
  uint32_t np = atomic_load_explicit(&q->nput, memory_order_relaxed);
  uint32_t ng = atomic_load_explicit(&q->nget, memory_order_relaxed);
  uint32_t max = atomic_load_explicit(&q->maxsize, memory_order_relaxed);
  if (max && h->count >= max) {
    *seen = ng;
    return 0;
  }
  uint32_t n = h->count;
  if (q->kind == Q_PRIO && n > 0 && key_class(h->ent[0].ktype) != key_class(e->ktype))
    return -2;
  oent *ent = h->ent, *old = NULL;
  uint32_t cap = h->cap;
  if (n == cap) {
    if (cap >= UINT32_MAX / 2)
      return -1;
    oent *grown = shm_alloc((size_t)cap * 2 * sizeof(oent));
    if (grown == NULL)
      return -1;
    memcpy(grown, ent, (size_t)n * sizeof(oent));
    old = ent;
    ent = grown;
    cap *= 2;
  }
  ojournal *j = &h->j;
  j->nw = 0;
  e->seq = h->seq;
  uint32_t i = n;
  if (q->kind == Q_PRIO) {
    while (i > 0) {   /* sift up: each parent after e moves down */
      uint32_t p = (i - 1) / 2;
      if (!ent_before(q, e, &ent[p]))
        break;
      jw(j, i, &ent[p]);
      i = p;
    }
  }
  jw(j, i, e);
  j->ent = ent;
  j->cap = cap;
  j->count = n + 1;
  j->seq = h->seq + 1;
  j->nput = np + 1;
  j->nget = ng;
  journal_commit(q, &j->valid, ord_apply);
  shm_free(old);
  return 1;
}

/* Under tail_lock: takes the first slot into *out.  1 done, 0 empty (*seen:
 * the nput to wait on). */
static int ord_get_locked(queue_obj *q, oent *out, uint32_t *seen) {
  oheap *h = q->oh;
  uint32_t np = atomic_load_explicit(&q->nput, memory_order_relaxed);
  uint32_t n = h->count;
  if (n == 0) {
    *seen = np;
    return 0;
  }
  ojournal *j = &h->j;
  oent *ent = h->ent;
  j->nw = 0;
  n--;
  if (q->kind == Q_LIFO) {
    *out = ent[n];
  } else {
    *out = ent[0];
    const oent *last = &ent[n];
    uint32_t i = 0;
    if (n > 0) {
      for (;;) {   /* sift down the last slot from the top */
        uint32_t c = 2 * i + 1;
        if (c >= n)
          break;
        if (c + 1 < n && ent_before(q, &ent[c + 1], &ent[c]))
          c++;
        if (!ent_before(q, &ent[c], last))
          break;
        jw(j, i, &ent[c]);
        i = c;
      }
      jw(j, i, last);
    }
  }
  j->ent = ent;
  j->cap = h->cap;
  j->count = n;
  j->seq = h->seq;
  j->nput = np;
  j->nget = atomic_load_explicit(&q->nget, memory_order_relaxed) + 1;
  journal_commit(q, &j->valid, ord_apply);
  return 1;
}

static void ent_free(const oent *e) {
  sblob_free(e->item);
  if (e->ktype == KEY_STR)
    shm_free((void *)e->key.s);
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
  int ordered = q->oh != NULL;
  if (ordered) {
    if (q->oh->j.valid)
      ord_apply(q);
    for (uint32_t i = 0; i < q->oh->count; i++)
      ent_free(&q->oh->ent[i]);
    shm_free(q->oh->ent);
    shm_free(q->oh);
  }
  if (q->pj.valid)
    put_apply(q);
  if (q->gj.valid)
    get_apply(q);
  qseg *s = q->head;
  uint32_t off = q->read;
  /* The records (the ordered kinds keep none: their items, counted in nput
   * too, were the entries freed above; their segment may hold a freed
   * queue's old bytes, which must not be read as records). */
  for (uint32_t left = ordered ? 0 : q->nput - q->nget; left > 0;) {
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

/* Waits a while for *word to leave `seen` (or a shutdown), counted in
 * *sleepers while asleep on `bell`; the caller looks again whatever
 * happened. */
static void wait_change(queue_obj *q, _Atomic uint32_t *word, uint32_t seen,
                        _Atomic uint32_t *sleepers, _Atomic uint32_t *bell, const deadline *d) {
  int changed;
  if (word == &q->nput) {   /* a getter: counted while it spins (wake_getter) */
    atomic_fetch_add(&q->gspin, 1);
    changed = fx_spin_lease(word, seen, &q->gspin_lease);
    atomic_fetch_sub(&q->gspin, 1);
  } else {
    changed = fx_spin(word, seen);
  }
  if (changed)
    return;
  atomic_fetch_add(sleepers, 1);   /* seq_cst: see wake */
  uint32_t rung = atomic_load(bell);
  int rc = 0;
  if (atomic_load(word) == seen && !atomic_load(&q->shut))
    rc = fx_wait(bell, rung, d, QUEUE_SLICE_MS);
  atomic_fetch_sub(sleepers, 1);
  if (rc == ETIMEDOUT) {
    if (word == &q->nget && !q->oh)
      head_check(q);      /* a putter waits for room */
    else
      tail_check(q);      /* a getter waits for an item (or room, ordered) */
  }
}

/* After a seq_cst store to the word sleepers wait on (or to `shut`): rings
 * the bell and wakes n sleepers if any.  A sleeper either counted itself
 * before our load of `sleepers`, and so read the bell before we ring it, or
 * its last look at the word sees our store. */
static inline void wake(_Atomic uint32_t *bell, _Atomic uint32_t *sleepers, int n) {
  if (atomic_load(sleepers)) {
    atomic_fetch_add(bell, 1);
    fx_wake(bell, n);
  }
}

/* After an item is put (a seq_cst store to nput), or taken with more left:
 * wakes a sleeping getter, unless a spinning one holds a live lease.  It
 * will see the item: if our load sees its count, our store came before its
 * stop, and it looks at the queue after it stops. */
static inline void wake_getter(queue_obj *q) {
  if (!atomic_load(&q->getters))
    return;
  if (atomic_load(&q->gspin) && atomic_load(&q->gspin_lease) > fx_now_ns())
    return;
  atomic_fetch_add(&q->gbell, 1);
  fx_wake(&q->gbell, 1);
}

/* Wakes every joiner (they sleep on ndone itself: it only grows). */
static inline void wake_joiners(queue_obj *q) {
  if (atomic_load(&q->joiners))
    fx_wake(&q->ndone, INT_MAX);
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

static int raise_shutdown(lua_State *L) {
  cobj_push_error(L, "ShutDown");
  return lua_error(L);
}

/* ---- making one -------------------------------------------------------------------- */

/* The maxsize at idx (an integer, or a numeric string, as luaL_optinteger
 * takes it; `what` names it in errors). */
static uint32_t maxsize_arg(lua_State *L, int idx, const char *fname, int argn, const char *what) {
  int isint = 0;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (!isint) {
    if (lua_isnumber(L, idx))
      luaL_error(L, "bad argument #%d to '%s' (%snumber has no integer representation)", argn,
                 fname, what);
    else
      luaL_error(L, "bad argument #%d to '%s' (%sinteger expected, got %s)", argn, fname, what,
                 cobj_typename(L, idx));
  }
  if (n > INT32_MAX)
    luaL_error(L, "bad argument #%d to '%s' (maxsize too large)", argn, fname);
  return n < 0 ? 0 : (uint32_t)n;   /* Python: zero or less is unbounded */
}

/* concur.Queue([maxsize]) or Queue{maxsize = n}, and the other kinds: 0, nil
 * or less is unbounded.  Errors name the function as it was called
 * (JoinableQueue). */
static int queue_make(lua_State *L, const cobj_type *type, uint32_t kind, const char *dflt) {
  static const char *const options[] = {"maxsize", NULL};
  const char *fname = cobj_called_as(L, dflt);
  uint32_t maxsize = 0;
  int most = type == &simple_type ? 0 : 1;
  if (most && lua_istable(L, 1)) {   /* Queue{maxsize = n}, as Python's keyword */
    cobj_check_options(L, 1, fname, options);
    int t = lua_getfield(L, 1, "maxsize");
    if (t != LUA_TNIL && t != LUA_TNUMBER)
      return luaL_error(L, "bad argument #1 to '%s' (option 'maxsize': integer expected, got %s)",
                        fname, cobj_typename(L, -1));
    if (t != LUA_TNIL)
      maxsize = maxsize_arg(L, -1, fname, 1, "option 'maxsize': ");
    lua_pop(L, 1);
  } else if (most && !lua_isnoneornil(L, 1)) {
    if (lua_type(L, 1) != LUA_TNUMBER && !lua_isnumber(L, 1))
      return luaL_error(L, "bad argument #1 to '%s' (number expected, got %s)", fname,
                        cobj_typename(L, 1));
    maxsize = maxsize_arg(L, 1, fname, 1, "");
  }
  if (lua_gettop(L) > most)
    return luaL_error(L, "bad argument #%d to '%s' (no value expected)", most + 1, fname);
  size_t extra = kind == Q_FIFO ? 0 : sizeof(oheap) + ORD_FIRST * sizeof(oent);
  cobj_gc_pressure(L, shm_cost(sizeof(queue_obj) + LINE) + SEG_FIRST + extra);
  cobj_newhandle(L, type, 0);
  void *raw = NULL;
  qseg *seg = NULL;
  oheap *oh = NULL;
  for (int again = 0;; again++) {
    raw = shm_runtime_init() == 0 ? shm_alloc(sizeof(queue_obj) + LINE) : NULL;
    seg = raw ? seg_new(SEG_FIRST) : NULL;
    if (seg && kind != Q_FIFO) {
      oh = shm_alloc(sizeof *oh);
      oent *ent = oh ? shm_alloc(ORD_FIRST * sizeof(oent)) : NULL;
      if (ent) {
        memset(oh, 0, sizeof *oh);
        oh->ent = ent;
        oh->cap = ORD_FIRST;
      } else {
        shm_free(oh);
        oh = NULL;
        shm_free(seg);
        seg = NULL;
      }
    }
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
    return luaL_error(L, "cannot make a %s: the shared memory arena is full", type->name + 7);
  }
  queue_obj *q = (queue_obj *)(((uintptr_t)raw + LINE - 1) & ~(uintptr_t)(LINE - 1));
  memset(q, 0, sizeof *q);
  cobj_init(&q->hdr, type);
  q->raw = raw;
  q->maxsize = maxsize;
  q->kind = kind;
  q->oh = oh;
  q->head = q->tail = seg;
  cobj_bind(L, -1, &q->hdr);
  return 1;
}

static int queue_new(lua_State *L) { return queue_make(L, &queue_type, Q_FIFO, "Queue"); }
static int lifo_new(lua_State *L) { return queue_make(L, &lifo_type, Q_LIFO, "LifoQueue"); }
static int prio_new(lua_State *L) { return queue_make(L, &prio_type, Q_PRIO, "PriorityQueue"); }
static int simple_new(lua_State *L) { return queue_make(L, &simple_type, Q_FIFO, "SimpleQueue"); }

/* ---- put -------------------------------------------------------------------------- */

/* A PriorityQueue item's priority into e: the item at idx is a number, a
 * string, or a table whose [1] is one.  Raises a bad argument (nothing taken
 * yet) for anything else, NaN included. */
static void prio_key(lua_State *L, int idx, oent *e) {
  int t = lua_type(L, idx);
  int kidx = idx;
  if (t == LUA_TTABLE) {
    lua_rawgeti(L, idx, 1);
    kidx = lua_gettop(L);
    t = lua_type(L, kidx);
    if (t != LUA_TNUMBER && t != LUA_TSTRING)
      luaL_argerror(L, idx, lua_pushfstring(L, "item[1], the priority: number or string expected, "
                                            "got %s", cobj_typename(L, kidx)));
  } else if (t != LUA_TNUMBER && t != LUA_TSTRING) {
    luaL_argerror(L, idx, lua_pushfstring(L, "number, string or table expected, got %s",
                                          cobj_typename(L, idx)));
  }
  if (t == LUA_TSTRING) {
    size_t len;
    e->key.s = lua_tolstring(L, kidx, &len);   /* copied into the arena at the put */
    if (len > UINT32_MAX)
      luaL_argerror(L, idx, "priority string too long");
    e->klen = (uint32_t)len;
    e->ktype = KEY_STR;
  } else if (lua_isinteger(L, kidx)) {
    e->key.i = (int64_t)lua_tointeger(L, kidx);
    e->ktype = KEY_INT;
  } else {
    e->key.f = (double)lua_tonumber(L, kidx);
    if (e->key.f != e->key.f)
      luaL_argerror(L, idx, "the priority is NaN");
    e->ktype = KEY_FLT;
  }
  if (kidx != idx)
    lua_pop(L, 1);   /* a string key stays referenced by the item */
}

static void drop_item(tbuf *b, sblob *blob) {
  if (blob)
    sblob_free(blob);
  else
    tbuf_free(b);   /* gives back its references; the scratch starts again empty */
}

/* Gives back an item that was not put: the ordered kinds' slot, or
 * drop_item's. */
static void drop_put(queue_obj *q, tbuf *b, sblob *blob, const oent *e) {
  if (q->oh)
    ent_free(e);
  else
    drop_item(b, blob);
}

/* An error of a put: raised, or with `soft` pushed as nil and the message
 * (q:_putv's way: the caller words it without a pcall). */
static int put_fail(lua_State *L, int soft, const char *msg) {
  if (!soft)
    return luaL_error(L, "%s", msg);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* Puts the n values at idx..idx+n-1 as one item (q:put: one value; q:_putv:
 * several, taken together by q:_getv).  With `soft` a value that cannot be
 * sent or a full arena returns nil and the message; otherwise it raises. */
static int put_values(lua_State *L, queue_obj *q, int idx, int n, int block, double timeout,
                      int soft) {
  oent e = {{0}, 0, NULL, 0, KEY_NONE};
  if (q->kind == Q_PRIO)
    prio_key(L, idx, &e);
  if (atomic_load(&q->shut))
    return raise_shutdown(L);
  tbuf *b = tbuf_scratch();
  char err[TRANSFER_ERRLEN];
  if (!transfer_encode(L, idx, n, "item", n == 1, b, err))
    return put_fail(L, soft, err);
  sblob *blob = NULL;
  int local = tbuf_has_local(b);   /* found before the lock is taken */
  if (q->oh || sizeof(qrec) + b->nobjs * sizeof(cobj *) + b->len > INLINE_MAX) {
    blob = sblob_from_tbuf(b);   /* copied outside the lock; b is left empty */
    char *key = NULL;
    if (blob && e.ktype == KEY_STR) {
      key = shm_alloc(e.klen ? e.klen : 1);
      if (key == NULL) {
        sblob_free(blob);
        blob = NULL;
      } else {
        memcpy(key, e.key.s, e.klen);
        e.key.s = key;
      }
    }
    if (blob == NULL) {
      tbuf_free(b);
      return put_fail(L, soft, "cannot put: the shared memory arena is full");
    }
    if (q->oh)
      e.item = blob;
  }
  deadline d;
  int timed = 0;
  for (;;) {
    uint32_t seen = 0;
    tail_lock(q);
    int rc;
    if (atomic_load_explicit(&q->shut, memory_order_acquire))
      rc = -3;
    else if (q->oh)
      rc = ord_put_locked(q, &e, &seen);
    else
      rc = put_locked(q, b, blob, local, &seen);
    pword_release(&q->tail_lock);
    if (rc > 0) {
      if (!blob) {
        b->nobjs = 0;   /* the references are the queue's now */
        tbuf_scratch_trim(b);
      }
      wake_getter(q);
      sel_notify(&q->watchers);
      intr_settle(L);   /* put: an interrupt now comes after the call */
      if (!soft)
        return 0;
      lua_pushboolean(L, 1);
      return 1;
    }
    if (rc < 0) {
      drop_put(q, b, blob, &e);
      if (rc == -3)
        return raise_shutdown(L);
      if (rc == -2)
        return luaL_argerror(L, idx, "the priority does not compare with those in the queue "
                                     "(numbers and strings)");
      return put_fail(L, soft, "cannot put: the shared memory arena is full");
    }
    if (gives_up(block, timeout, &d, &timed)) {
      /* A consumer killed after journaling its get: commit it first. */
      if (q->oh)
        tail_check(q);
      else
        head_check(q);
      if (atomic_load(&q->nget) != seen)
        continue;
      drop_put(q, b, blob, &e);
      cobj_push_error(L, "Full");
      return lua_error(L);
    }
    wait_change(q, &q->nget, seen, &q->putters, &q->pbell, &d);
    if (intr_pending()) {   /* not put: the item is given back */
      drop_put(q, b, blob, &e);
      return intr_raise(L);
    }
  }
}

/* q:put(item, [block], [timeout]) */
static int queue_put(lua_State *L) {
  queue_obj *q = cobj_self(L);
  luaL_checkany(L, 2);
  double timeout;
  int block = block_args(L, 3, &timeout);
  return put_values(L, q, 2, 1, block, timeout, 0);
}

/* q:_putv(...): the values as one item, blocking while the queue is full;
 * true, or nil and why when a value cannot be sent or the arena is full
 * (never raised: a pool's hot path needs no pcall).  The pools' task and
 * result messages (lua/concur/pool.lua); values named item[1], item[2]... */
static int queue_putv(lua_State *L) {
  queue_obj *q = cobj_self(L);
  int n = lua_gettop(L) - 1;
  luaL_argcheck(L, n >= 1, 2, "value expected");
  return put_values(L, q, 2, n, 1, -1, 1);
}

/* ---- get -------------------------------------------------------------------------- */

/* Pushes the item copied out into buf (a record) or held by blob. */
static int push_item(lua_State *L, const unsigned char *buf, sblob *blob) {
  if (blob)
    return sblob_decode_free(L, blob);
  const qrec *r = (const qrec *)buf;
  tbuf view = msg_view(r);
  return transfer_decode_taking(L, &view, (r->flags & MSG_LOCAL) != 0, NULL);
}

/* Takes one item under the right lock: see get_locked (ordered kinds: always
 * *blob, and the string key to free in *key). */
static int take_one(queue_obj *q, unsigned char *buf, size_t cap, size_t *need, sblob **blob,
                    char **key, uint32_t *seen) {
  int rc;
  if (q->oh) {
    oent e;
    tail_lock(q);
    rc = ord_get_locked(q, &e, seen);
    pword_release(&q->tail_lock);
    if (rc > 0) {
      *blob = e.item;
      *key = e.ktype == KEY_STR ? (char *)e.key.s : NULL;
    }
  } else {
    head_lock(q);
    rc = get_locked(q, buf, cap, need, blob, seen);
    pword_release(&q->head_lock);
  }
  return rc;
}

static uint32_t queue_size(queue_obj *q);

/* q:get([block], [timeout]): the item; with `all` (q:_getv) every value of
 * it (q:_putv's); with `soft` (q:_takev) false instead of raising Empty. */
static int get_values(lua_State *L, int all, int soft) {
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
    char *key = NULL;
    size_t need = 0;
    uint32_t seen = 0;
    int rc = take_one(q, buf, cap, &need, &blob, &key, &seen);
    if (rc > 0) {
      if (atomic_load_explicit(&q->maxsize, memory_order_relaxed))
        wake(&q->pbell, &q->putters, 1);
      if (queue_size(q) > 0)   /* more left: the next getter (see wake_getter) */
        wake_getter(q);
      shm_free(key);
      int held = intr_hold(L);   /* taken: the call completes (see intr_pending) */
      int n = push_item(L, buf, blob);
      if (all) {
        if (held)
          intr_rearm(L);
        else
          intr_settle(L);
        return n;
      }
      if (n != 1) {   /* q:put's record holds one value */
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
    /* Empty: after a shutdown, that is the end (Python 3.13). */
    if (atomic_load(&q->shut))
      return raise_shutdown(L);
    if (gives_up(block, timeout, &d, &timed)) {
      /* A producer killed after journaling its item: commit it first. */
      tail_check(q);
      if (atomic_load(&q->nput) != seen)
        continue;
      if (soft) {
        lua_pushboolean(L, 0);
        return 1;
      }
      cobj_push_error(L, "Empty");
      return lua_error(L);
    }
    wait_change(q, &q->nput, seen, &q->getters, &q->gbell, &d);
    if (intr_pending())   /* nothing taken */
      return intr_raise(L);
  }
}

static int queue_get(lua_State *L) { return get_values(L, 0, 0); }
static int queue_getv(lua_State *L) { return get_values(L, 1, 0); }

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

/* q:_takev(): q:_getv without waiting; false when the queue is empty (a
 * pool's results are polled after every submit: no error made each time). */
static int queue_takev(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, 0);
  return get_values(L, 1, 1);
}

/* ---- the rest ---------------------------------------------------------------------- */

/* The size the queue had at one instant: nget read before and after nput,
 * the same both times (both counts only grow, and an item is put before it
 * is taken).  One read of each let a thread preempted between them count
 * the gets it missed as items, above maxsize (stress, under TSan).  After
 * 64 tries under a storm of gets: a lower bound, never negative. */
static uint32_t queue_size(queue_obj *q) {
  uint32_t g = atomic_load_explicit(&q->nget, memory_order_acquire);
  for (int tries = 0;; tries++) {
    uint32_t p = atomic_load_explicit(&q->nput, memory_order_acquire);
    uint32_t g2 = atomic_load_explicit(&q->nget, memory_order_acquire);
    if (g2 == g)
      return p - g;
    if (tries >= 64)
      return (int32_t)(p - g2) > 0 ? p - g2 : 0;
    g = g2;
  }
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
  uint32_t max = atomic_load(&q->maxsize);
  lua_pushboolean(L, max > 0 && queue_size(q) >= max);
  return 1;
}

/* Counts one more task done, unless every task is (1 then). */
static int count_done(queue_obj *q) {
  uint32_t d = atomic_load(&q->ndone);
  do {
    if (atomic_load(&q->nput) == d)
      return 1;
  } while (!atomic_compare_exchange_weak(&q->ndone, &d, d + 1));
  if (atomic_load(&q->nput) == d + 1)
    wake_joiners(q);
  return 0;
}

/* Every put counts one unfinished task until a task_done. */
static int queue_task_done(lua_State *L) {
  if (count_done(cobj_self(L)))
    return luaL_error(L, "task_done() called too many times");
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

/* q:shutdown([immediate]): Python 3.13's.  Puts raise ShutDown from now on
 * and gets once the queue is empty; `immediate` empties it now, each item
 * counted done (join returns when nothing else is unfinished).  Every
 * sleeper wakes to look.  A process killed in the middle leaves the queue
 * shut down, with the items not yet removed still in it. */
static int queue_shutdown(lua_State *L) {
  queue_obj *q = cobj_self(L);
  int immediate = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    immediate = lua_toboolean(L, 2);
  }
  if (lua_gettop(L) > 2)
    return luaL_argerror(L, 3, "no value expected");
  atomic_store(&q->shut, 1);
  /* A put that saw the queue open commits before this returns. */
  tail_lock(q);
  pword_release(&q->tail_lock);
  if (immediate) {
    _Alignas(16) unsigned char stackbuf[STACK_COPY];
    unsigned char *buf = stackbuf;
    size_t cap = sizeof stackbuf;
    for (;;) {
      sblob *blob = NULL;
      char *key = NULL;
      size_t need = 0;
      uint32_t seen = 0;
      int rc = take_one(q, buf, cap, &need, &blob, &key, &seen);
      if (rc == 0)
        break;
      if (rc < 0) {
        buf = lua_newuserdatauv(L, need, 0);
        cap = need;
        continue;
      }
      shm_free(key);
      if (blob) {
        sblob_free(blob);
      } else {
        const qrec *r = (const qrec *)buf;
        msg_release((cobj *const *)(r + 1), r->nobjs, r->pid);
      }
      count_done(q);
    }
  }
  wake(&q->gbell, &q->getters, INT_MAX);
  wake(&q->pbell, &q->putters, INT_MAX);
  wake_joiners(q);
  sel_notify(&q->watchers);
  return 0;
}

/* concur.select: an item to get, or shut down (a get raises at once). */
static int queue_ready(cobj *o) {
  queue_obj *q = (queue_obj *)o;
  return queue_size(q) > 0 || atomic_load(&q->shut);
}

static _Atomic uint32_t *queue_watchers(cobj *o) { return &((queue_obj *)o)->watchers; }

/* The attribute q.maxsize, then the methods (upvalue 2). */
static int queue_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
    return 1;
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "maxsize") == 0) {
    queue_obj *q = cobj_self(L);
    lua_pushinteger(L, atomic_load(&q->maxsize));
    return 1;
  }
  return 1;   /* nil */
}

/* q.maxsize = n on the kinds that have a bound: a larger one wakes the
 * putters, a smaller one keeps full() true until enough items are taken.
 * Anything else: the usual read-only or no-such-attribute error
 * (upvalue 2). */
static int queue_newindex(lua_State *L) {
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k && strcmp(k, "maxsize") == 0) {
    queue_obj *q = cobj_self(L);
    if (q->hdr.type != &simple_type) {
      if (lua_type(L, 3) != LUA_TNUMBER)
        return luaL_error(L, "bad value for 'maxsize' (integer expected, got %s)",
                          cobj_typename(L, 3));
      uint32_t n = maxsize_arg(L, 3, "maxsize", 3, "");
      uint32_t old = atomic_exchange(&q->maxsize, n);
      if (old && (n == 0 || n > old))
        wake(&q->pbell, &q->putters, INT_MAX);
      return 0;
    }
  }
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

static int queue_tostring(lua_State *L) {
  queue_obj *q = cobj_self(L);
  uint32_t max = atomic_load(&q->maxsize);
  const char *shut = atomic_load(&q->shut) ? " shutdown" : "";
  if (max)
    lua_pushfstring(L, "<%s size=%d maxsize=%d%s>", q->hdr.type->name, (int)queue_size(q),
                    (int)max, shut);
  else
    lua_pushfstring(L, "<%s size=%d%s>", q->hdr.type->name, (int)queue_size(q), shut);
  return 1;
}

static const luaL_Reg queue_m[] = {
  {"put", queue_put}, {"get", queue_get}, {"put_nowait", queue_put_nowait},
  {"get_nowait", queue_get_nowait}, {"qsize", queue_qsize}, {"empty", queue_empty},
  {"full", queue_full}, {"task_done", queue_task_done}, {"join", queue_join},
  {"shutdown", queue_shutdown}, {"__tostring", queue_tostring},
  {"_putv", queue_putv}, {"_getv", queue_getv}, {"_takev", queue_takev},
  {NULL, NULL}};

/* Python's SimpleQueue has no bound, task_done or join. */
static const luaL_Reg simple_m[] = {
  {"put", queue_put}, {"get", queue_get}, {"put_nowait", queue_put_nowait},
  {"get_nowait", queue_get_nowait}, {"qsize", queue_qsize}, {"empty", queue_empty},
  {"shutdown", queue_shutdown}, {"__tostring", queue_tostring}, {NULL, NULL}};

static void kind_meta(lua_State *L, const cobj_type *type, const luaL_Reg *methods) {
  cobj_newmetatable(L, type, NULL);
  lua_pushvalue(L, -1);   /* upvalue 1 of every method: the metatable, for cobj_self */
  luaL_setfuncs(L, methods, 1);
  lua_pushvalue(L, -1);   /* __index: the metatable, the methods (the same table) */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, queue_index, 2);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -1);   /* __newindex: the metatable, the usual __newindex */
  lua_getfield(L, -1, "__newindex");
  lua_pushcclosure(L, queue_newindex, 2);
  lua_setfield(L, -2, "__newindex");
  cobj_register_metatable(L, type);
  lua_pop(L, 1);
}

static void queue_meta(lua_State *L) { kind_meta(L, &queue_type, queue_m); }
static void lifo_meta(lua_State *L) { kind_meta(L, &lifo_type, queue_m); }
static void prio_meta(lua_State *L) { kind_meta(L, &prio_type, queue_m); }
static void simple_meta(lua_State *L) { kind_meta(L, &simple_type, simple_m); }

void queue_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"Queue", queue_new}, {"LifoQueue", lifo_new}, {"PriorityQueue", prio_new},
    {"SimpleQueue", simple_new}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
