/*
 * dict.c - concur.Dict: a hash table in the arena, shared by the threads and
 * processes of the family.
 *
 * Layout.  Keys are strings, integers, floats with no integer value, and
 * booleans (a float with an integer value is that integer, as in a Lua
 * table).  Each entry is one arena block, a `dnode`: the chain link, the
 * key's hash, the key (a number's 8 bytes, or a string's length and then its
 * bytes) and the value as the transfer encoded it (msg_write_body: the
 * object pointers, each a reference the node holds, then the bytes).  The
 * buckets are an array of node pointers, a power of two long, hashed under the
 * family's key (SipHash for strings, hash_word for the rest), so no one can
 * choose keys that collide.
 *
 * Growth is incremental, as Redis does it: when the table holds more keys
 * than buckets (or far fewer), a second array is made (outside the lock) and
 * every later call under the lock moves a few chains from the old array to
 * the new, until none is left; lookups look in both meanwhile, inserts go to
 * the new one.  No call ever copies the whole table under the lock: the
 * longest a call holds it is one operation and DICT_STEP moved nodes.
 *
 * Locking.  One process lock word (pword, wait.c) guards the table; it is
 * held only for pointer work and copies, never while Lua runs: a value is
 * encoded before the lock and decoded after it (its objects' references
 * are taken under the lock, so a concurrent overwrite cannot free them).
 * `d:update(k, fn)` also holds `ulock`, a second word, while fn runs: one
 * update of d at a time (re-entrant in the thread that holds it).
 *
 * Crash safety.  Every change of more than one word goes through a journal
 * of (address, word) writes: filled in, `valid` set, applied, `valid`
 * cleared.  A process killed holding the lock leaves `valid` set only if it
 * died applying; whoever takes the lock next applies it again (each write
 * is idempotent).  Killed before `valid`, the change did not happen; after,
 * it did.  A killed process leaks at most the node it was adding or freeing
 * (and the references in it) or a bucket array.
 *
 * Lock order: the dict lock is held alone, but for the arena's mutex
 * (shm_alloc, shm_free) and nothing else.  ulock is taken before it.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "shared.h"
#include "transfer.h"
#include "wait.h"

enum { DK_INT = 0, DK_FLT = 1, DK_STR = 2, DK_BOOL = 3 };

typedef struct dnode {
  struct dnode *next;
  uint32_t hash;
  uint32_t meta;               /* key type | nobjs << 2 */
  uint32_t vlen;               /* bytes of the value */
  unsigned char key[8];        /* a number's bits or 0/1; a string's length (uint32) */
  unsigned char data[];        /* a string key's bytes; then, 8-aligned, the body */
} dnode;

#define DICT_MIN 8             /* buckets of a new table */
#define DICT_STEP 8            /* nodes moved per call while growing */
#define DJ_MAX 8

typedef struct djournal {
  uint32_t n;
  _Atomic uint32_t valid;
  struct {
    void *at;
    uintptr_t v;
  } w[DJ_MAX];
} djournal;

typedef struct dict_obj {
  cobj hdr;
  _Atomic uint32_t lock;       /* guards all below but the update lock's fields */
  _Atomic uint32_t ulock;      /* d:update's */
  /* The holder of ulock: its concur_self and thread (read by others to
   * see it is not theirs), and how deep it is in its own updates. */
  _Atomic int uself;
  _Atomic uintptr_t uthread;
  uintptr_t udepth;
  /* Changed through the journal (the words it writes are all pointer-sized). */
  dnode **t0, **t1;            /* the table; the one being grown into (NULL: none) */
  size_t n0, n1;               /* their sizes (powers of two) */
  size_t ridx;                 /* t0's buckets below this are moved already */
  size_t count;                /* keys */
  size_t bytes;                /* what a snapshot copies: the nodes, 8-aligned */
  djournal j;
} dict_obj;

_Static_assert(sizeof(size_t) == sizeof(uintptr_t) && sizeof(void *) == sizeof(uintptr_t),
               "the journal writes pointer-sized words");

/* ---- nodes ------------------------------------------------------------------------ */

static inline uint32_t node_type(const dnode *n) { return n->meta & 3u; }
static inline size_t node_nobjs(const dnode *n) { return n->meta >> 2; }
static inline size_t node_klen(const dnode *n) {
  uint32_t len = 0;
  if (node_type(n) == DK_STR)
    memcpy(&len, n->key, sizeof len);
  return len;
}
static inline size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }
/* Where the body starts: after the key's bytes, 8-aligned when it holds
 * object pointers. */
static inline size_t body_at(size_t klen, size_t nobjs) {
  size_t at = offsetof(dnode, data) + klen;
  return nobjs ? align8(at) : at;
}
static inline unsigned char *node_body(dnode *n) {
  return (unsigned char *)n + body_at(node_klen(n), node_nobjs(n));
}
static inline size_t node_size(const dnode *n) {
  return body_at(node_klen(n), node_nobjs(n)) + node_nobjs(n) * sizeof(cobj *) + n->vlen;
}

/* Gives back what a node holds (the value's references) and the node. */
static void node_free(dnode *n) {
  if (n == NULL)
    return;
  msg_release((cobj *const *)(void *)node_body(n), node_nobjs(n), concur_self);
  shm_free(n);
}

/* ---- keys ------------------------------------------------------------------------- */

typedef struct dkey {
  uint32_t type, hash;
  unsigned char bits[8];
  const char *s;
  size_t slen;
} dkey;

/* The key at idx, or raises "bad argument #argn to 'fname' (key ...)". */
static void check_key(lua_State *L, int idx, dkey *k, int argn, const char *fname) {
  memset(k, 0, sizeof *k);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    k->type = DK_STR;
    k->s = lua_tolstring(L, idx, &k->slen);
    if (k->slen > UINT32_MAX)
      luaL_error(L, "bad argument #%d to '%s' (key too long)", argn, fname);
    k->hash = (uint32_t)mac_of(k->s, k->slen);
    return;
  case LUA_TBOOLEAN:
    k->type = DK_BOOL;
    k->bits[0] = (unsigned char)lua_toboolean(L, idx);
    break;
  case LUA_TNUMBER: {
    int64_t i;
    if (lua_isinteger(L, idx)) {
      i = (int64_t)lua_tointeger(L, idx);
    } else {
      double f = (double)lua_tonumber(L, idx);
      if (f != f)
        luaL_error(L, "bad argument #%d to '%s' (key is NaN)", argn, fname);
      if (f >= -9223372036854775808.0 && f < 9223372036854775808.0 && f == floor(f)) {
        i = (int64_t)f;   /* an integer value: the integer key (0.0, -0.0: 0) */
      } else {
        k->type = DK_FLT;
        memcpy(k->bits, &f, 8);
        break;
      }
    }
    k->type = DK_INT;
    memcpy(k->bits, &i, 8);
    break;
  }
  default:
    luaL_error(L, "bad argument #%d to '%s' (key: string, number or boolean expected, got %s)",
               argn, fname, cobj_typename(L, idx));
  }
  uint64_t w;
  memcpy(&w, k->bits, 8);
  k->hash = (uint32_t)hash_word(w + k->type * 0x9e3779b97f4a7c15ULL);
}

static int key_is(const dnode *n, const dkey *k) {
  if (n->hash != k->hash || node_type(n) != k->type)
    return 0;
  if (k->type != DK_STR)
    return memcmp(n->key, k->bits, 8) == 0;
  return node_klen(n) == k->slen && memcmp(n->data, k->s, k->slen) == 0;
}

static void push_key(lua_State *L, const dnode *n) {
  switch (node_type(n)) {
  case DK_STR:
    lua_pushlstring(L, (const char *)n->data, node_klen(n));
    break;
  case DK_BOOL:
    lua_pushboolean(L, n->key[0]);
    break;
  case DK_FLT: {
    double f;
    memcpy(&f, n->key, 8);
    lua_pushnumber(L, (lua_Number)f);
    break;
  }
  default: {
    int64_t i;
    memcpy(&i, n->key, 8);
    lua_pushinteger(L, (lua_Integer)i);
    break;
  }
  }
}

/* ---- the lock and the journal ----------------------------------------------------- */

static void dj_apply(dict_obj *d) {
  for (uint32_t i = 0; i < d->j.n; i++)
    memcpy(d->j.w[i].at, &d->j.w[i].v, sizeof(uintptr_t));
}

static inline void dj_begin(dict_obj *d) { d->j.n = 0; }

static inline void dj_set(dict_obj *d, void *at, uintptr_t v) {
  d->j.w[d->j.n].at = at;
  d->j.w[d->j.n].v = v;
  d->j.n++;
}

/* valid comes before any store of the apply in program order: a kill lands
 * between two instructions, so the compiler's order is what counts. */
static void dj_commit(dict_obj *d, int fault) {
  atomic_store_explicit(&d->j.valid, 1, memory_order_release);
  atomic_signal_fence(memory_order_seq_cst);
  memcpy(d->j.w[0].at, &d->j.w[0].v, sizeof(uintptr_t));
  concur_fault(fault);   /* a test's kill half way through (arena.h) */
  dj_apply(d);
  atomic_signal_fence(memory_order_seq_cst);
  atomic_store_explicit(&d->j.valid, 0, memory_order_release);
}

static void dict_lock(dict_obj *d) {
  if (!pword_try(&d->lock))
    pword_acquire(&d->lock, 1, -1, NULL);
  if (atomic_load_explicit(&d->j.valid, memory_order_acquire)) {   /* its holder died */
    dj_apply(d);
    atomic_store_explicit(&d->j.valid, 0, memory_order_release);
  }
}

static inline void dict_unlock(dict_obj *d) { pword_release(&d->lock); }

/* ---- the table (under the lock) ---------------------------------------------------- */

/* The link that points to k's node (a bucket or a node's next), or NULL. */
static dnode **find(dict_obj *d, const dkey *k) {
  dnode **link = &d->t0[k->hash & (d->n0 - 1)];
  for (; *link; link = &(*link)->next)
    if (key_is(*link, k))
      return link;
  if (d->t1)
    for (link = &d->t1[k->hash & (d->n1 - 1)]; *link; link = &(*link)->next)
      if (key_is(*link, k))
        return link;
  return NULL;
}

/* Moves up to DICT_STEP nodes (and looks at up to 4 times as many empty
 * buckets) from t0 to t1; when t0 is empty, t1 becomes the table and the
 * old array is left in *old, for the caller to free after unlocking. */
static void grow_step(dict_obj *d, dnode ***old) {
  if (d->t1 == NULL)
    return;
  int moves = DICT_STEP, empties = 4 * DICT_STEP;
  while (moves > 0 && d->ridx < d->n0) {
    dnode **b = &d->t0[d->ridx];
    dnode *x = *b;
    if (x == NULL) {
      d->ridx++;   /* one word: the bucket is empty either way */
      if (--empties == 0)
        break;
      continue;
    }
    dnode **to = &d->t1[x->hash & (d->n1 - 1)];
    dj_begin(d);
    dj_set(d, b, (uintptr_t)x->next);
    dj_set(d, &x->next, (uintptr_t)*to);
    dj_set(d, to, (uintptr_t)x);
    dj_commit(d, CONCUR_FAULT_DICT_MOVE);
    moves--;
  }
  if (d->ridx == d->n0) {
    *old = d->t0;
    dj_begin(d);
    dj_set(d, &d->t0, (uintptr_t)d->t1);
    dj_set(d, &d->n0, d->n1);
    dj_set(d, &d->t1, 0);
    dj_set(d, &d->n1, 0);
    dj_set(d, &d->ridx, 0);
    dj_commit(d, CONCUR_FAULT_DICT_COMMIT);
  }
}

/* The size the table should grow or shrink to now, or 0. */
static size_t resize_wanted(const dict_obj *d) {
  if (d->t1)
    return 0;
  if (d->count > d->n0 / 2)
    return d->n0 * 2;
  if (d->n0 > DICT_MIN && d->count < d->n0 / 8) {
    size_t n = DICT_MIN;
    while (n < d->count * 2)
      n *= 2;
    return n;
  }
  return 0;
}

/* After a call: frees the old array the step left, and starts a resize
 * when one is wanted (its array made without the lock). */
static void after_unlock(dict_obj *d, dnode **old, size_t want) {
  shm_free(old);
  if (want == 0 || want > SIZE_MAX / sizeof(dnode *))
    return;
  dnode **t = shm_calloc(want * sizeof(dnode *));
  if (t == NULL)
    return;   /* the arena is full: the table stays as it is, only slower */
  dict_lock(d);
  size_t now = resize_wanted(d);
  if (now == want) {
    dj_begin(d);
    dj_set(d, &d->t1, (uintptr_t)t);
    dj_set(d, &d->n1, want);
    dj_set(d, &d->ridx, 0);
    dj_commit(d, CONCUR_FAULT_DICT_COMMIT);
    t = NULL;
  }
  dict_unlock(d);
  shm_free(t);
}

/* Puts node n (made for k) in; returns the node it replaced (to free after
 * unlocking) or NULL. */
static dnode *put_locked(dict_obj *d, const dkey *k, dnode *n) {
  dnode **link = find(d, k);
  dj_begin(d);
  if (link) {
    dnode *old = *link;
    n->next = old->next;
    dj_set(d, link, (uintptr_t)n);
    dj_set(d, &d->bytes, d->bytes - align8(node_size(old)) + align8(node_size(n)));
    dj_commit(d, CONCUR_FAULT_DICT_COMMIT);
    return old;
  }
  dnode **b = d->t1 ? &d->t1[k->hash & (d->n1 - 1)] : &d->t0[k->hash & (d->n0 - 1)];
  n->next = *b;
  dj_set(d, b, (uintptr_t)n);
  dj_set(d, &d->count, d->count + 1);
  dj_set(d, &d->bytes, d->bytes + align8(node_size(n)));
  dj_commit(d, CONCUR_FAULT_DICT_COMMIT);
  return NULL;
}

/* Unlinks the node at link. */
static dnode *unlink_locked(dict_obj *d, dnode **link) {
  dnode *old = *link;
  dj_begin(d);
  dj_set(d, link, (uintptr_t)old->next);
  dj_set(d, &d->count, d->count - 1);
  dj_set(d, &d->bytes, d->bytes - align8(node_size(old)));
  dj_commit(d, CONCUR_FAULT_DICT_COMMIT);
  return old;
}

/* ---- Lua values in and out ---------------------------------------------------------- */

/* A node for key k and the value at vidx, made before the lock (its
 * references taken from the encoding).  Raises "bad argument #argn to
 * 'fname' (...)" for a value the transfer refuses or a process-local one. */
static dnode *make_node(lua_State *L, const dkey *k, int vidx, int argn, const char *fname) {
  tbuf *b = tbuf_scratch();
  char err[TRANSFER_ERRLEN];
  if (!transfer_encode(L, vidx, 1, "value", 1, b, err))
    luaL_error(L, "bad argument #%d to '%s' (%s)", argn, fname, err);
  if (tbuf_has_local(b)) {
    tbuf_release_view(b);
    b->nobjs = 0;
    tbuf_scratch_trim(b);
    luaL_error(L, "bad argument #%d to '%s' (value: a Thread, Process or Pipe connection belongs "
                  "to its process and cannot be kept in a Dict)", argn, fname);
  }
  size_t klen = k->type == DK_STR ? k->slen : 0;
  size_t size = body_at(klen, b->nobjs) + msg_body_size(b);
  dnode *n = NULL;
  if (b->len <= UINT32_MAX && b->nobjs < (1u << 30))
    n = shm_alloc(size);
  if (n == NULL) {
    tbuf_release_view(b);
    b->nobjs = 0;
    tbuf_scratch_trim(b);
    luaL_error(L, "cannot store in a Dict: %s", b->len > UINT32_MAX ? "value too large"
                                                                     : "the shared memory arena is full");
  }
  n->next = NULL;
  n->hash = k->hash;
  n->meta = k->type | (uint32_t)b->nobjs << 2;
  n->vlen = (uint32_t)b->len;
  if (k->type == DK_STR) {
    uint32_t len = (uint32_t)klen;
    memcpy(n->key, &len, sizeof len);
    memcpy(n->data, k->s, klen);
  } else {
    memcpy(n->key, k->bits, 8);
  }
  msg_write_body((unsigned char *)n + body_at(klen, b->nobjs), b);
  b->nobjs = 0;   /* the references are the node's now */
  tbuf_scratch_trim(b);
  return n;
}

/* A copy of a node's value: its body in buf, its objects' references taken
 * (for the decoder to give back). */
typedef struct vcopy {
  unsigned char *buf;
  size_t cap, need, nobjs, vlen;
} vcopy;

/* Under the lock: copies n's body into c (1), or says how much room it
 * needs (0, c->need). */
static int copy_value(const dnode *n, vcopy *c) {
  size_t nobjs = node_nobjs(n), body = nobjs * sizeof(cobj *) + n->vlen;
  if (body > c->cap) {
    c->need = body;
    return 0;
  }
  memcpy(c->buf, node_body((dnode *)n), body);
  cobj *const *objs = (cobj *const *)(void *)c->buf;
  for (size_t i = 0; i < nobjs; i++)
    cobj_incref(objs[i]);
  c->nobjs = nobjs;
  c->vlen = n->vlen;
  return 1;
}

/* Pushes the copied value (gives back its references, even if it raises). */
static void push_copy(lua_State *L, vcopy *c) {
  tbuf view = msg_view_body(c->buf, c->nobjs, c->vlen, concur_self);
  int n = transfer_decode_taking(L, &view, 0, NULL);
  if (n != 1) {
    lua_pop(L, n);
    lua_pushnil(L);
  }
}

#define STACK_COPY 512

/* d:get's and d:pop's core: finds k; copies its value (and, with `take`,
 * unlinks it, left in *gone for the caller to free).  1 found, 0 not. */
static int lookup(lua_State *L, dict_obj *d, const dkey *k, vcopy *c, int take, dnode **gone) {
  for (;;) {
    dnode **old = NULL;
    dict_lock(d);
    dnode **link = find(d, k);
    int rc = link ? copy_value(*link, c) : -1;
    if (rc == 1 && take)
      *gone = unlink_locked(d, link);
    if (rc != 0)
      grow_step(d, &old);
    size_t want = rc != 0 && take ? resize_wanted(d) : 0;
    dict_unlock(d);
    if (rc != 0) {
      after_unlock(d, old, want);
      return rc == 1;
    }
    c->buf = lua_newuserdatauv(L, c->need, 0);   /* room for a large value; again */
    c->cap = c->need;
  }
}

/* ---- the methods ------------------------------------------------------------------ */

static void dict_meta(lua_State *L);
static void dict_destroy(cobj *o);
static const cobj_type dict_type = {"concur.Dict", dict_destroy, NULL, 1, dict_meta, NULL, NULL, NULL};

/* d[k] = v (v at vidx; nil deletes); a bad key is bad argument #argk, a
 * bad value #argv. */
static void set_at(lua_State *L, dict_obj *d, int kidx, int vidx, int argk, int argv,
                   const char *fname) {
  kidx = lua_absindex(L, kidx);
  vidx = lua_absindex(L, vidx);
  dkey k;
  check_key(L, kidx, &k, argk, fname);
  dnode *n = lua_isnil(L, vidx) ? NULL : make_node(L, &k, vidx, argv, fname);
  dnode **oldt = NULL, *gone = NULL;
  dict_lock(d);
  if (n) {
    gone = put_locked(d, &k, n);
  } else {
    dnode **link = find(d, &k);
    if (link)
      gone = unlink_locked(d, link);
  }
  grow_step(d, &oldt);
  size_t want = resize_wanted(d);
  dict_unlock(d);
  concur_fault(CONCUR_FAULT_DICT_SET);
  node_free(gone);
  after_unlock(d, oldt, want);
}

static int dict_newindex(lua_State *L) {
  dict_obj *d = cobj_self(L);
  set_at(L, d, 2, 3, 2, 3, "newindex");
  intr_settle(L);
  return 0;
}

/* Pushes d[k] (k at kidx, bad argument #argk) or the value at didx. */
static int get_or(lua_State *L, dict_obj *d, int kidx, int argk, int didx, const char *fname,
                  int take) {
  dkey k;
  check_key(L, kidx, &k, argk, fname);
  _Alignas(16) unsigned char stackbuf[STACK_COPY];
  vcopy c = {stackbuf, sizeof stackbuf, 0, 0, 0};
  dnode *gone = NULL;
  if (!lookup(L, d, &k, &c, take, &gone)) {
    lua_pushvalue(L, didx);
    return 1;
  }
  int held = take ? intr_hold(L) : 0;   /* taken: the call completes */
  node_free(gone);
  push_copy(L, &c);
  if (held)
    intr_rearm(L);
  else if (take)
    intr_settle(L);
  return 1;
}

/* d[k]: a method's name is the method (read such a key with d:get). */
static int dict_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
      return 1;
    lua_pop(L, 1);
  }
  dict_obj *d = cobj_self(L);
  lua_settop(L, 3);
  return get_or(L, d, 2, 2, 3, "index", 0);   /* 3: nil */
}

static int dict_get(lua_State *L) {
  dict_obj *d = cobj_self(L);
  method_no_more_args(L, 3, "get");
  lua_settop(L, 3);
  return get_or(L, d, 2, 1, 3, "get", 0);
}

static int dict_pop(lua_State *L) {
  dict_obj *d = cobj_self(L);
  method_no_more_args(L, 3, "pop");
  lua_settop(L, 3);
  return get_or(L, d, 2, 1, 3, "pop", 1);
}

/* d:setdefault(k, v): the value k has, or v, stored now if k had none. */
static int dict_setdefault(lua_State *L) {
  dict_obj *d = cobj_self(L);
  method_no_more_args(L, 3, "setdefault");
  lua_settop(L, 3);
  dkey k;
  check_key(L, 2, &k, 1, "setdefault");
  if (lua_isnil(L, 3))
    return get_or(L, d, 2, 1, 3, "setdefault", 0);
  dnode *n = make_node(L, &k, 3, 2, "setdefault");
  _Alignas(16) unsigned char stackbuf[STACK_COPY];
  vcopy c = {stackbuf, sizeof stackbuf, 0, 0, 0};
  for (;;) {
    dnode **oldt = NULL;
    dict_lock(d);
    dnode **link = find(d, &k);
    int rc = link ? copy_value(*link, &c) : -1;
    if (rc < 0)
      put_locked(d, &k, n);
    if (rc != 0)
      grow_step(d, &oldt);
    size_t want = rc < 0 ? resize_wanted(d) : 0;
    dict_unlock(d);
    if (rc < 0) {
      after_unlock(d, oldt, want);
      intr_settle(L);
      lua_pushvalue(L, 3);   /* v, stored (not the copy buffer an earlier round pushed) */
      return 1;
    }
    if (rc > 0) {
      node_free(n);
      after_unlock(d, oldt, want);
      push_copy(L, &c);
      return 1;
    }
    c.buf = lua_newuserdatauv(L, c.need, 0);
    c.cap = c.need;
  }
}

static int dict_len(lua_State *L) {
  dict_obj *d = cobj_self(L);
  dict_lock(d);
  size_t n = d->count;
  dict_unlock(d);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static void free_table(dnode **t, size_t n) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    for (dnode *x = t[i], *next; x; x = next) {
      next = x->next;
      node_free(x);
    }
  shm_free(t);
}

static int dict_clear(lua_State *L) {
  dict_obj *d = cobj_self(L);
  method_no_more_args(L, 1, "clear");
  dnode **fresh = shm_calloc(DICT_MIN * sizeof(dnode *));
  if (fresh == NULL)
    return luaL_error(L, "cannot clear a Dict: the shared memory arena is full");
  dict_lock(d);
  dnode **t0 = d->t0, **t1 = d->t1;
  size_t n0 = d->n0, n1 = d->n1;
  dj_begin(d);
  dj_set(d, &d->t0, (uintptr_t)fresh);
  dj_set(d, &d->n0, DICT_MIN);
  dj_set(d, &d->t1, 0);
  dj_set(d, &d->n1, 0);
  dj_set(d, &d->ridx, 0);
  dj_set(d, &d->count, 0);
  dj_set(d, &d->bytes, 0);
  dj_commit(d, CONCUR_FAULT_DICT_COMMIT);
  dict_unlock(d);
  free_table(t0, n0);   /* no one else reaches them now */
  free_table(t1, n1);
  return 0;
}

/* ---- snapshots --------------------------------------------------------------------- */

enum { SNAP_TABLE, SNAP_KEYS, SNAP_VALUES, SNAP_ITEMS };

/* A snapshot: every node copied, 8-aligned, into a userdata; the objects'
 * references taken (when values are wanted) and given back as each value is
 * decoded, or by snap_abandon if decoding raises. */
typedef struct snap {
  size_t used, next;           /* bytes of copies; the first not decoded yet */
  int values;
  _Alignas(8) unsigned char data[];   /* 8-aligned (the copies' pointers and words), as a
                                       * userdata is; without _Alignas it sat at offset 20 */
} snap;

static void snap_abandon(snap *s) {
  if (!s->values)
    return;
  while (s->next < s->used) {
    dnode *n = (dnode *)(void *)(s->data + s->next);
    s->next += align8(node_size(n));
    msg_release((cobj *const *)(void *)node_body(n), node_nobjs(n), concur_self);
  }
}

/* Pushes the snapshot userdata of d. */
static snap *snapshot(lua_State *L, dict_obj *d, int values) {
  size_t cap = 0;
  snap *s = NULL;
  for (;;) {
    dict_lock(d);
    if (s && d->bytes <= cap) {
      size_t at = 0;
      dnode **tabs[2] = {d->t0, d->t1};
      size_t ns[2] = {d->n0, d->t1 ? d->n1 : 0};
      for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < ns[t]; i++)
          for (dnode *x = tabs[t][i]; x; x = x->next) {
            size_t sz = node_size(x);
            memcpy(s->data + at, x, sz);
            if (values) {
              cobj *const *objs = (cobj *const *)(void *)node_body(x);
              for (size_t o = 0; o < node_nobjs(x); o++)
                cobj_incref(objs[o]);
            }
            at += align8(sz);
          }
      dict_unlock(d);
      s->used = at;
      s->next = 0;
      s->values = values;
      return s;
    }
    cap = d->bytes + d->bytes / 8 + 64;   /* room for some growth meanwhile */
    dict_unlock(d);
    if (s)
      lua_pop(L, 1);
    s = lua_newuserdatauv(L, offsetof(snap, data) + cap, 0);
    s->used = s->next = 0;
    s->values = 0;
  }
}

/* (snapshot userdata, mode): pushes the snapshot's table. */
static int snap_decode(lua_State *L) {
  snap *s = lua_touserdata(L, 1);
  int mode = (int)lua_tointeger(L, 2);
  lua_newtable(L);
  lua_Integer i = 0;
  while (s->next < s->used) {
    dnode *n = (dnode *)(void *)(s->data + s->next);
    s->next += align8(node_size(n));   /* decoding gives its references back, raise or not */
    if (mode == SNAP_KEYS) {
      push_key(L, n);
      lua_rawseti(L, -2, ++i);
      continue;
    }
    vcopy c = {node_body(n), 0, 0, node_nobjs(n), n->vlen};
    if (mode == SNAP_TABLE) {
      push_key(L, n);
      push_copy(L, &c);
      if (lua_isnil(L, -1))
        lua_pop(L, 2);
      else
        lua_rawset(L, -3);
    } else if (mode == SNAP_VALUES) {
      push_copy(L, &c);
      lua_rawseti(L, -2, ++i);
    } else {
      lua_createtable(L, 2, 0);
      push_key(L, n);
      lua_rawseti(L, -2, 1);
      push_copy(L, &c);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, -2, ++i);
    }
  }
  return 1;
}

static int push_snapshot(lua_State *L, dict_obj *d, int mode) {
  snap *s = snapshot(L, d, mode != SNAP_KEYS);
  int ud = lua_gettop(L);
  lua_pushcfunction(L, snap_decode);
  lua_pushvalue(L, ud);
  lua_pushinteger(L, mode);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    snap_abandon(s);
    return lua_error(L);
  }
  lua_remove(L, ud);
  return 1;
}

static int dict_totable(lua_State *L) {
  method_no_more_args(L, 1, "totable");
  return push_snapshot(L, cobj_self(L), SNAP_TABLE);
}
static int dict_keys(lua_State *L) {
  method_no_more_args(L, 1, "keys");
  return push_snapshot(L, cobj_self(L), SNAP_KEYS);
}
static int dict_values(lua_State *L) {
  method_no_more_args(L, 1, "values");
  return push_snapshot(L, cobj_self(L), SNAP_VALUES);
}
static int dict_items(lua_State *L) {
  method_no_more_args(L, 1, "items");
  return push_snapshot(L, cobj_self(L), SNAP_ITEMS);
}

/* pairs(d): next over a snapshot. */
static int dict_pairs(lua_State *L) {
  dict_obj *d = cobj_self(L);
  lua_getglobal(L, "next");
  if (lua_type(L, -1) != LUA_TFUNCTION)
    return luaL_error(L, "pairs over a concur.Dict needs the global 'next'");
  push_snapshot(L, d, SNAP_TABLE);
  lua_pushnil(L);
  return 3;
}

/* ---- update ------------------------------------------------------------------------- */

/* (d, k, fn) under ulock: d[k] = fn(d[k]); returns fn's result. */
static int update_body(lua_State *L) {
  dict_obj *d = lua_touserdata(L, 4);
  lua_settop(L, 3);
  lua_pushvalue(L, 3);
  lua_pushnil(L);                     /* no default */
  get_or(L, d, 2, 1, 5, "update", 0);    /* fn, nil, old */
  lua_remove(L, -2);
  lua_call(L, 1, 1);                  /* the new value, at 4 */
  set_at(L, d, 2, 4, 1, 2, "update");   /* a bad result: fn's */
  concur_fault(CONCUR_FAULT_DICT_UPDATE);
  return 1;
}

static int ulock_mine(dict_obj *d) {
  return atomic_load_explicit(&d->uself, memory_order_relaxed) == concur_self &&
         atomic_load_explicit(&d->uthread, memory_order_relaxed) == CONCUR_THREAD_ID;
}

static int dict_update(lua_State *L) {
  dict_obj *d = cobj_self(L);
  if (lua_type(L, 2) == LUA_TTABLE && lua_isnone(L, 3)) {   /* Python's d.update(other) */
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      set_at(L, d, -2, -1, 1, 1, "update");
      lua_pop(L, 1);
    }
    return 0;
  }
  method_no_more_args(L, 3, "update");
  dkey k;
  check_key(L, 2, &k, 1, "update");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  int mine = ulock_mine(d);
  if (!mine) {
    int from_dead = 0;
    if (pword_acquire_intr(&d->ulock, 1, -1, &from_dead) < 0)
      return intr_raise(L);
    atomic_store_explicit(&d->uself, concur_self, memory_order_relaxed);
    atomic_store_explicit(&d->uthread, CONCUR_THREAD_ID, memory_order_relaxed);
    d->udepth = 0;
  }
  d->udepth++;
  lua_settop(L, 3);
  lua_pushcfunction(L, update_body);
  lua_insert(L, 1);
  lua_pushlightuserdata(L, d);
  int st = lua_pcall(L, 4, 1, 0);
  if (--d->udepth == 0) {
    atomic_store_explicit(&d->uself, 0, memory_order_relaxed);
    atomic_store_explicit(&d->uthread, 0, memory_order_relaxed);
    pword_release(&d->ulock);
  }
  if (st != LUA_OK)
    return lua_error(L);
  return 1;
}

/* ---- making, freeing, showing ------------------------------------------------------- */

/* concur.Dict([table]) */
static int dict_new(lua_State *L) {
  cobj_no_more_args(L, 1, "Dict");
  if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TTABLE)
    return luaL_error(L, "bad argument #1 to 'Dict' (table expected, got %s)", cobj_typename(L, 1));
  if (lua_istable(L, 1)) {   /* every key checked before anything is made */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      dkey k;
      lua_pop(L, 1);
      check_key(L, -1, &k, 1, "Dict");
    }
  }
  lua_settop(L, 1);
  dict_obj *d = cobj_new_shared(L, &dict_type, sizeof *d);
  d->t0 = shm_calloc(DICT_MIN * sizeof(dnode *));
  if (d->t0 == NULL) {
    shm_free(d);
    return luaL_error(L, "cannot make a Dict: the shared memory arena is full");
  }
  d->n0 = DICT_MIN;
  cobj_bind(L, -1, &d->hdr);
  if (lua_istable(L, 1)) {
    lua_pushnil(L);
    while (lua_next(L, 1)) {
      set_at(L, d, -2, -1, 1, 1, "Dict");
      lua_pop(L, 1);
    }
  }
  return 1;
}

static void dict_destroy(cobj *o) {
  dict_obj *d = (dict_obj *)o;
  /* No one else holds a reference; a dead process may have left a journal. */
  if (atomic_load(&d->j.valid))
    dj_apply(d);
  free_table(d->t0, d->n0);
  free_table(d->t1, d->n1);
  shm_free(d);
}

static int dict_tostring(lua_State *L) {
  dict_obj *d = cobj_self(L);
  dict_lock(d);
  size_t n = d->count;
  dict_unlock(d);
  char num[24];
  snprintf(num, sizeof num, "%zu", n);
  lua_pushfstring(L, "concur.Dict(%s key%s)", num, n == 1 ? "" : "s");
  return 1;
}

static void dict_meta(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", dict_get}, {"pop", dict_pop}, {"setdefault", dict_setdefault}, {"clear", dict_clear},
    {"keys", dict_keys}, {"values", dict_values}, {"items", dict_items}, {"totable", dict_totable},
    {"update", dict_update}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__tostring", dict_tostring}, {"__len", dict_len},
                                  {"__pairs", dict_pairs}, {"__newindex", dict_newindex},
                                  {NULL, NULL}};
  cobj_indexed_metatable(L, &dict_type, methods, meta, dict_index, NULL);
}

void dict_open(lua_State *L) {
  static const luaL_Reg funcs[] = {{"Dict", dict_new}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
