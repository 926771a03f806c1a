/*
 * select.c - concur.select's one wait over many objects (core.select; the
 * Lua layer maps Futures and AsyncResults to their pool's result queue and
 * turns positions back into objects).
 *
 * Each object says how it is watched (cobj_sel, object.h).  Futex objects
 * (queues, events, threads) have a `watchers` word: the selector counts
 * itself there, reads the family's bell (shm_bell), looks at every object,
 * and sleeps on the bell; a waker that changes a watched object rings it
 * (sel_notify, wait.h), so put and set cost one load while nobody selects.
 * Objects the kernel wakes (Pipe connections, Processes through a pidfd)
 * give a descriptor, and the selector sleeps in poll().  A set with both
 * sleeps in poll() on its descriptors and an eventfd of its own, which the
 * process's bell watcher (one OS thread, started on first need) writes when
 * the bell rings: one wait either way, never a loop of polls.  An object
 * with neither (a Process without pidfds) is looked at every 50 ms.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "select.h"
#include "object.h"
#include "wait.h"

#define SEL_SLICE_MS 1000      /* futex waits look again this often anyway */
#define SEL_POLLED_MS 50       /* objects with no wake-up of their own */

/* ---- the bell watcher: bell rings into eventfds --------------------------- */

typedef struct bw_reg {
  int efd;
  uint32_t seen;               /* the bell the selector saw; written when it moves */
} bw_reg;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started;
  bw_reg *regs;
  size_t n, cap;
} bw = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void efd_signal(int efd) {
  uint64_t one = 1;
  ssize_t r = write(efd, &one, sizeof one);
  CONCUR_UNUSED(r);   /* EAGAIN: already signalled */
}

static void *bw_main(void *arg) {
  CONCUR_UNUSED(arg);
  _Atomic uint32_t *bell = shm_bell();
  deadline forever = deadline_in(-1);
  pthread_mutex_lock(&bw.mu);
  for (;;) {
    while (bw.n == 0)
      pthread_cond_wait(&bw.cv, &bw.mu);
    uint32_t now = atomic_load(bell);
    for (size_t i = 0; i < bw.n; i++)
      if (bw.regs[i].seen != now) {
        efd_signal(bw.regs[i].efd);
        bw.regs[i].seen = now;
      }
    pthread_mutex_unlock(&bw.mu);
    fx_wait(bell, now, &forever, SEL_SLICE_MS);
    pthread_mutex_lock(&bw.mu);
  }
  return NULL;
}

/* A forked child has no watcher: it starts its own when it needs one. */
static void bw_after_fork(void) {
  pthread_mutex_init(&bw.mu, NULL);
  pthread_cond_init(&bw.cv, NULL);
  bw.started = 0;
  bw.n = 0;
}

static pthread_once_t bw_once = PTHREAD_ONCE_INIT;
static void bw_init(void) { pthread_atfork(NULL, NULL, bw_after_fork); }

/* Registers efd, which saw bell value `seen`; 0, or -1 (no memory, no
 * thread: the caller sleeps in slices instead). */
static int bw_register(int efd, uint32_t seen) {
  pthread_once(&bw_once, bw_init);
  pthread_mutex_lock(&bw.mu);
  int rc = 0;
  if (!bw.started) {
    pthread_attr_t a;
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* no signal is for it */
    rc = pthread_attr_init(&a) == 0 ? 0 : -1;
    if (rc == 0) {
      pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&a, 64 * 1024);
      rc = pthread_create(&t, &a, bw_main, NULL) == 0 ? 0 : -1;
      pthread_attr_destroy(&a);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    bw.started = rc == 0;
  }
  if (rc == 0 && bw.n == bw.cap) {
    size_t cap = bw.cap ? bw.cap * 2 : 8;
    bw_reg *r = realloc(bw.regs, cap * sizeof *r);
    if (r) {
      bw.regs = r;
      bw.cap = cap;
    } else {
      rc = -1;
    }
  }
  if (rc == 0) {
    bw.regs[bw.n].efd = efd;
    bw.regs[bw.n].seen = seen;
    bw.n++;
    /* Rung since the selector looked: the watcher may sleep on a value
     * that has not moved since, so say it now. */
    if (atomic_load(shm_bell()) != seen)
      efd_signal(efd);
    pthread_cond_signal(&bw.cv);
  }
  pthread_mutex_unlock(&bw.mu);
  return rc;
}

static void bw_unregister(int efd) {
  pthread_mutex_lock(&bw.mu);
  for (size_t i = 0; i < bw.n; i++)
    if (bw.regs[i].efd == efd) {
      bw.regs[i] = bw.regs[--bw.n];
      break;
    }
  pthread_mutex_unlock(&bw.mu);
}

/* ---- core.select ------------------------------------------------------------- */

typedef struct sel_ent {
  cobj *o;
  const cobj_sel *s;
  _Atomic uint32_t *w;         /* counted in, or NULL */
  int fd;                      /* to poll, or -1 */
  int ready;
} sel_ent;

typedef struct sel_set {
  sel_ent *e;
  size_t n;
  struct pollfd *pf;           /* the descriptors, then the eventfd */
  size_t nfd;
  int efd;
} sel_set;

/* Gives back what the set took: watcher counts, descriptors, the eventfd. */
static void set_release(sel_set *s) {
  for (size_t i = 0; i < s->n; i++) {
    sel_ent *e = &s->e[i];
    if (e->w) {
      atomic_fetch_sub(e->w, 1);
      e->w = NULL;
    }
    if (e->fd >= 0) {
      e->s->fd_done(e->o, e->fd);
      e->fd = -1;
    }
  }
  if (s->efd >= 0) {
    bw_unregister(s->efd);
    close(s->efd);
    s->efd = -1;
  }
}

/* Looks at every object: how many are ready. */
static int set_scan(sel_set *s) {
  int nready = 0;
  if (s->nfd) {
    int pr;
    do
      pr = poll(s->pf, (nfds_t)s->nfd, 0);
    while (pr < 0 && errno == EINTR);
  }
  size_t k = 0;
  for (size_t i = 0; i < s->n; i++) {
    sel_ent *e = &s->e[i];
    e->ready = e->s->ready(e->o);
    if (e->fd >= 0) {
      if (s->pf[k].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))
        e->ready = 1;
      k++;
    }
    nready += e->ready;
  }
  return nready;
}

/* core.select(list, [timeout]) -> the positions in list of the objects that
 * are ready (a list; empty when the timeout ran out).  The Lua layer checks
 * the members; here a member that is not a selectable object is an error. */
static int core_select(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  double timeout = concur_opt_timeout(L, 2);
  size_t n = (size_t)lua_rawlen(L, 1);
  if (n > 1u << 20)
    return luaL_argerror(L, 1, "too many objects");
  sel_set s = {NULL, 0, NULL, 0, -1};
  /* Userdata, not malloc: a bad member raises before anything is taken. */
  s.e = lua_newuserdatauv(L, (n ? n : 1) * sizeof(sel_ent), 0);
  s.pf = lua_newuserdatauv(L, (n + 1) * sizeof(struct pollfd), 0);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)(i + 1));
    cobj *o = cobj_test(L, -1, NULL);
    if (o == NULL || o->type->sel == NULL)
      return luaL_error(L, "bad argument #1 to 'select' (objects[%d]: not a selectable object)",
                        (int)(i + 1));
    lua_pop(L, 1);
    s.e[i] = (sel_ent){o, o->type->sel, NULL, -1, 0};
  }
  s.n = n;
  int polled = 0, watched = 0;
  for (size_t i = 0; i < n; i++) {   /* from here no Lua error until set_release */
    sel_ent *e = &s.e[i];
    if (e->s->watchers) {
      e->w = e->s->watchers(e->o);
      atomic_fetch_add(e->w, 1);   /* seq_cst: before the bell is read (see sel_notify) */
      watched = 1;
    } else if (e->s->fd && (e->fd = e->s->fd(e->o)) >= 0) {
      s.pf[s.nfd++] = (struct pollfd){e->fd, POLLIN, 0};
    } else {
      polled = 1;
    }
  }
  _Atomic uint32_t *bell = shm_bell();
  deadline d = deadline_in(timeout);
  int nready = 0, registered = 0;
  for (;;) {
    uint32_t rung = atomic_load(bell);
    nready = set_scan(&s);
    if (nready || deadline_passed(&d))
      break;
    if (intr_pending()) {
      set_release(&s);
      return intr_raise(L);
    }
    int slice = polled ? SEL_POLLED_MS : SEL_SLICE_MS;
    if (s.nfd == 0) {
      fx_wait(bell, rung, &d, slice);
      continue;
    }
    if (watched && !registered) {
      s.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (s.efd >= 0 && bw_register(s.efd, rung) == 0) {
        s.pf[s.nfd] = (struct pollfd){s.efd, POLLIN, 0};
        registered = 1;
      } else if (s.efd >= 0) {
        close(s.efd);
        s.efd = -1;
      }
      if (!registered)
        polled = 1;   /* no watcher: the futex objects are looked at in slices */
      slice = polled ? SEL_POLLED_MS : SEL_SLICE_MS;
    }
    int ms = deadline_poll_ms(&d, intr_slice_ms(slice));
    int pr = poll(s.pf, (nfds_t)(s.nfd + (size_t)registered), ms);
    if (pr > 0 && registered && (s.pf[s.nfd].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = read(s.efd, &v, sizeof v);
      CONCUR_UNUSED(r);
    }
  }
  set_release(&s);
  lua_createtable(L, nready, 0);
  int k = 0;
  for (size_t i = 0; i < n; i++)
    if (s.e[i].ready) {
      lua_pushinteger(L, (lua_Integer)(i + 1));
      lua_rawseti(L, -2, ++k);
    }
  intr_settle(L);
  return 1;
}

/* core.selectable(v): whether v is an object core.select takes. */
static int core_selectable(lua_State *L) {
  cobj *o = cobj_test(L, 1, NULL);
  lua_pushboolean(L, o != NULL && o->type->sel != NULL);
  return 1;
}

void select_open(lua_State *L) {
  lua_pushcfunction(L, core_select);
  lua_setfield(L, -2, "select");
  lua_pushcfunction(L, core_selectable);
  lua_setfield(L, -2, "selectable");
}
