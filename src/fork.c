/*
 * fork.c - references across fork: the references a child inherits, taken
 * for it by the parent before fork() (cobj_fork_*), the set of handles it
 * adopts, the ledger that lets a parent give back what a killed child still
 * held, and a child's release of its state's references before _exit.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fork.h"

typedef cobj_handle handle;

static int ptr_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
  return x < y ? -1 : x > y;
}

/* This process's ledger of inherited references (see cobj_ledger), valid in
 * process ledger_pid only: a fork by another library copies it into a child
 * it is not for (whose marks would then only keep references held). */
struct cobj_ledger {
  size_t n;
  cobj **objs;                    /* sorted; in the same block */
  _Atomic unsigned char *done;    /* marked: given back by the child */
};
static cobj_ledger *ledger_mine;
static int ledger_pid;

static void ledger_mark(cobj_ledger *l, cobj *o) {
  size_t lo = 0, hi = l->n;
  while (lo < hi) {   /* the first entry >= o */
    size_t mid = lo + (hi - lo) / 2;
    if ((uintptr_t)l->objs[mid] < (uintptr_t)o)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (; lo < l->n && l->objs[lo] == o; lo++)
    if (atomic_exchange_explicit(&l->done[lo], 1, memory_order_acq_rel) == 0)
      return;
}

/* cobj_decref's callback in a child with a ledger: marks first, then the
 * reference is released (a kill in between leaves one held, never one
 * released twice). */
static void ledger_on_release(cobj *o) {
  if (ledger_mine != NULL && ledger_pid == concur_self)
    ledger_mark(ledger_mine, o);
}


/* ---- references across fork ------------------------------------------------ */

/* Records a container whose references the child will own; 0 when out of
 * memory (nothing recorded then). */
static int fork_record(void ***items, size_t *n, size_t *cap, void *item) {
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 64;
    void **ni = realloc(*items, ncap * sizeof *ni);
    if (ni == NULL)
      return 0;
    *items = ni;
    *cap = ncap;
  }
  (*items)[(*n)++] = item;
  return 1;
}

static void fork_take_object(cobj_fork_refs *r, cobj *o) {
  if (o->type->shared) {
    cobj_incref(o);
    if (!r->no_ledger && !fork_record((void ***)&r->shared, &r->nshared, &r->capshared, o))
      r->no_ledger = 1;   /* the child goes without a ledger */
  } else if (o->type->fork_collect) {
    o->type->fork_collect(o, r);
  }
}

/* The ledger of r->shared, in the arena; NULL when none was recorded or the
 * arena is full (the child then keeps its inherited references if killed,
 * as before the ledger). */
static cobj_ledger *ledger_make(cobj_fork_refs *r) {
  if (r->no_ledger || r->nshared == 0)
    return NULL;
  size_t n = r->nshared;
  if (n > (SIZE_MAX - sizeof(cobj_ledger)) / (sizeof(cobj *) + 1))
    return NULL;
  cobj_ledger *l = shm_alloc(sizeof *l + n * sizeof(cobj *) + n);
  if (l == NULL)
    return NULL;
  l->n = n;
  l->objs = (cobj **)(l + 1);
  l->done = (_Atomic unsigned char *)(l->objs + n);
  memcpy(l->objs, r->shared, n * sizeof(cobj *));
  qsort(l->objs, n, sizeof(cobj *), ptr_cmp);
  for (size_t i = 0; i < n; i++)
    atomic_init(&l->done[i], 0);
  return l;
}

void cobj_ledger_settle(cobj_ledger *l, int release) {
  if (l == NULL)
    return;
  if (release)
    for (size_t i = 0; i < l->n; i++)
      if (atomic_exchange_explicit(&l->done[i], 1, memory_order_acq_rel) == 0)
        cobj_decref_unmarked(l->objs[i]);   /* the dead child's, not ours: no mark */
  shm_free(l);
}

void cobj_fork_take_tbuf(cobj_fork_refs *r, tbuf *b) {
  if (r->oom || b->nobjs == 0 || b->pid != concur_self)
    return;
  for (size_t i = 0; i < r->ntbufs; i++)   /* messages nest rarely: a scan will do */
    if (r->tbufs[i] == b)
      return;
  if (!fork_record((void ***)&r->tbufs, &r->ntbufs, &r->captbufs, b)) {
    r->oom = 1;
    return;
  }
  for (size_t i = 0; i < b->nobjs; i++)
    if (b->objs[i] != b->owner)
      fork_take_object(r, b->objs[i]);
}

int cobj_fork_prepare(lua_State *L, int identity, cobj_fork_refs *r) {
  memset(r, 0, sizeof *r);
  lua_pushnil(L);
  while (lua_next(L, identity)) {
    handle *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (h == NULL || h->obj == NULL || !cobj_handle_owned(h))
      continue;
    if (!fork_record((void ***)&r->handles, &r->nhandles, &r->caphandles, h)) {
      r->oom = 1;
      lua_pop(L, 1);
      break;
    }
    fork_take_object(r, h->obj);
    if (r->oom) {
      lua_pop(L, 1);
      break;
    }
  }
  if (r->oom) {
    cobj_fork_undo(r);
    return 0;
  }
  r->ledger = ledger_make(r);
  free(r->shared);
  r->shared = NULL;
  r->nshared = r->capshared = 0;
  return 1;
}

/* Each reference b holds to a shared object, given to `release`. */
static void tbuf_shared_each(const tbuf *b, void (*release)(cobj *)) {
  for (size_t i = 0; i < b->nobjs; i++)
    if (b->objs[i] != b->owner && b->objs[i]->type->shared)
      release(b->objs[i]);
}

void cobj_release_tbuf_shared(const tbuf *b) {
  tbuf_shared_each(b, cobj_decref);
}

/* Releases what the records took (never the last reference: the parent's
 * own are there).  Local objects were walked for their messages, which are
 * records of their own. */
void cobj_fork_undo(cobj_fork_refs *r) {
  cobj_ledger_settle(r->ledger, 0);
  r->ledger = NULL;
  for (size_t i = 0; i < r->nhandles; i++)
    if (r->handles[i]->obj->type->shared)
      cobj_decref_unmarked(r->handles[i]->obj);   /* taken for the child: no mark */
  for (size_t i = 0; i < r->ntbufs; i++)
    tbuf_shared_each(r->tbufs[i], cobj_decref_unmarked);
  cobj_fork_done(r);
}

void cobj_fork_child(cobj_fork_refs *r) {
  ledger_mine = r->ledger;   /* the parent's own (inherited here) is not ours */
  ledger_pid = concur_self;
  cobj_on_release(ledger_mine ? ledger_on_release : NULL);
  r->ledger = NULL;
  for (size_t i = 0; i < r->ntbufs; i++)   /* few: restamped */
    r->tbufs[i]->pid = concur_self;
  free(r->tbufs);
  cobj_adopt_handles(r->handles, r->nhandles);
  memset(r, 0, sizeof *r);
}

/* The parent: r->ledger must have been taken (or settled) before. */
void cobj_fork_done(cobj_fork_refs *r) {
  free(r->handles);
  free(r->tbufs);
  free(r->shared);
  memset(r, 0, sizeof *r);
}

void cobj_push_identity(lua_State *L) {
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_IDENTITY);
  lua_remove(L, -2);
}

void cobj_release_state(lua_State *L) {
  /* Only the shared counts: the process ends next, nothing here runs again,
   * and a write to a handle (or a free) would copy a page shared with the
   * parent for nothing. */
  state_ctx *c = ctx_get(L);
  for (cobj_live *n = c->live.next; n && n != &c->live; n = n->next)
    if (n->obj && cobj_live_owned(n)) {
      if (n->obj->type->shared)
        cobj_decref(n->obj);
      else if (n->obj->type->exit_release)
        n->obj->type->exit_release(n->obj);
    }
}

