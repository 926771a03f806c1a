/*
 * shm.c - the process family's shared memory, and the primitives every
 * shareable object is built from.
 *
 * The arena: one MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE mapping made the
 * first time a process loads concur.  Every process forked from that one
 * sees it at the same address, so a pointer into it means the same object in
 * all of them, whenever the object was made.  It is reserved large and the
 * kernel commits pages as they are touched.  A header at its start holds a
 * robust process-shared mutex, the bump offset, one free list per size
 * class (powers of two) for small blocks, and one list of free extents for
 * large ones.  A large block is its size rounded up to pages, not to a power
 * of two (a 2 GiB item costs 2 GiB, not 4): it is cut from the best-fitting
 * free extent (the list is in address order and neighbours merge when
 * freed) or from the bump offset.  Blocks of 64 KiB and up give their pages
 * back when freed.
 *
 * Crash safety: a process may die (SIGKILL) anywhere, the arena mutex held.
 * Every update under that mutex is ordered so that dying between two of its
 * stores loses at most the block being moved (a leak), never links a block
 * twice; the next locker sees EOWNERDEAD and marks the mutex consistent.
 *
 * Also here: the cached pid (getpid is a system call in current glibc;
 * refreshed in every forked child by an atfork handler, whoever forks), the
 * futex waits on shared words (never the _PRIVATE ones: the words are in
 * shared memory) with absolute CLOCK_MONOTONIC deadlines, and the test for a
 * dead process that lock takeover uses.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "concur_int.h"

/* ---- the cached pid -------------------------------------------------------- */

int concur_pid;
int concur_self;
_Thread_local char concur_thread_marker __attribute__((tls_model("initial-exec")));

static void self_refresh(void);
static void pid_refresh(void) {
  concur_pid = (int)getpid();
  self_refresh();
}

/* ---- robust process-shared mutexes ---------------------------------------- */

int rmutex_init(pthread_mutex_t *m) {
  pthread_mutexattr_t a;
  if (pthread_mutexattr_init(&a) != 0)
    return -1;
  int rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (rc == 0)
    rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (rc == 0)
    rc = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return rc == 0 ? 0 : -1;
}

int rmutex_lock(pthread_mutex_t *m) {
  int rc = pthread_mutex_lock(m);
  if (rc == EOWNERDEAD) {
    /* The holder died inside a critical section.  Every such section here
     * is written so that what it leaves is usable (see the head of files). */
    pthread_mutex_consistent(m);
    return 1;
  }
  return 0;
}

void rmutex_unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

/* ---- deadlines and futexes ------------------------------------------------- */

/* Now on CLOCK_MONOTONIC plus `secs` (>= 0, at most ~31 years). */
static struct timespec monotonic_after(double secs) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  if (secs > 1e9)   /* ~31 years: forever, but still a number */
    secs = 1e9;
  double whole = floor(secs);
  t.tv_sec += (time_t)whole;
  t.tv_nsec += (long)((secs - whole) * 1e9);
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

deadline deadline_in(double timeout) {
  deadline d;
  d.forever = timeout < 0;
  d.at = monotonic_after(d.forever ? 0 : timeout);
  return d;
}

double deadline_left(const deadline *d) {
  if (d->forever)
    return -1;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double left = (double)(d->at.tv_sec - now.tv_sec) + (d->at.tv_nsec - now.tv_nsec) * 1e-9;
  return left > 0 ? left : 0;
}

int deadline_passed(const deadline *d) {
  if (d->forever)
    return 0;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > d->at.tv_sec ||
         (now.tv_sec == d->at.tv_sec && now.tv_nsec >= d->at.tv_nsec);
}

/* The earlier of d and now + slice_ms (slice_ms 0: just d). */
static const struct timespec *wait_until(const deadline *d, int slice_ms, struct timespec *buf) {
  if (slice_ms <= 0)
    return d->forever ? NULL : &d->at;
  *buf = monotonic_after(slice_ms / 1000.0);
  if (!d->forever && (d->at.tv_sec < buf->tv_sec ||
                      (d->at.tv_sec == buf->tv_sec && d->at.tv_nsec < buf->tv_nsec)))
    *buf = d->at;
  return buf;
}

int fx_wait(_Atomic uint32_t *word, uint32_t expected, const deadline *d, int slice_ms) {
  slice_ms = intr_slice_ms(slice_ms);   /* the host's main thread: see intr_pending */
  struct timespec buf;
  const struct timespec *at = wait_until(d, slice_ms, &buf);
  /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time: an EINTR or a
   * spurious return never stretches the wait. */
  long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, at, NULL,
                    FUTEX_BITSET_MATCH_ANY);
  if (rc == 0)
    return 0;
  return errno;   /* EAGAIN: the word had changed; ETIMEDOUT; EINTR */
}

void fx_wake(_Atomic uint32_t *word, int n) {
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* ---- dead processes ---------------------------------------------------------- */

int proc_gone(int pid) {
  if (pid <= 0 || pid == concur_pid)
    return 0;
  if (kill(pid, 0) != 0)
    return errno == ESRCH;   /* EPERM: it exists, another user's */
  {
    /* Alive or a zombie not reaped yet: a killed child stays a zombie until
     * its parent joins it, and its locks must be free before that. */
    char path[48], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      /* Gone between the two calls, if /proc is there to tell; without
       * /proc (or hidden by hidepid), believe kill: alive. */
      return errno == ENOENT && access("/proc/self/stat", F_OK) == 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
      return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');   /* "pid (comm) S ...": comm may hold ')' */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
  }
}

/* ---- spinning, and the process lock word ----------------------------------- */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

#define SPIN_NS 20000          /* spin this long before sleeping */

/* Spins up to SPIN_NS while `*word == expected` (checking the clock only now
 * and then): a waiter on another core usually sees the change sooner than a
 * sleep and a wake-up would let it.  Returns 1 when the word changed. */
int fx_spin(_Atomic uint32_t *word, uint32_t expected) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(word, memory_order_acquire) != expected)
        return 1;
      cpu_relax();
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_NS)
      return 0;
  }
}

/* A process lock word: 0 when free, else the holder's pid with PWORD_WAITERS
 * set once someone sleeps on it.  Any thread may release it (Python's Lock);
 * a process that dies holding it is found by its waiters, which wake every
 * PWORD_SLICE_MS to look (proc_gone) and take it over by compare-and-swap. */
#define PWORD_SLICE_MS 100      /* how soon a dead holder is noticed */

/* Takes a word whose holder process has ended; 1 if we now hold it. */
static int pword_take_from_dead(_Atomic uint32_t *w, uint32_t seen, int *from_dead) {
  if (seen == 0 || !proc_gone((int)(seen & ~PWORD_WAITERS)))
    return 0;
  /* Waiters may sleep on it: keep the flag so that our release wakes one. */
  if (!atomic_compare_exchange_strong_explicit(w, &seen, (uint32_t)concur_pid | PWORD_WAITERS,
                                               memory_order_acquire, memory_order_relaxed))
    return 0;
  if (from_dead)
    *from_dead = 1;
  return 1;
}

/* Acquires the word: 1 when taken, 0 on timeout or when not blocking, -1
 * when `intr` and an interrupt came first. */
static int pword_acquire_impl(_Atomic uint32_t *w, int blocking, double timeout,
                              int *from_dead, int intr) {
  if (pword_try(w))
    return 1;
  uint32_t cur = atomic_load_explicit(w, memory_order_relaxed);
  if (!blocking)
    return cur == 0 ? pword_try(w) : pword_take_from_dead(w, cur, from_dead);
  if (timeout == 0)
    return pword_try(w) || pword_take_from_dead(w, cur, from_dead);
  deadline d = deadline_in(timeout);
  if (cur != 0 && !(cur & PWORD_WAITERS) && fx_spin(w, cur) && pword_try(w))
    return 1;
  /* Held by another process: it may be gone already (killed a moment ago). */
  cur = atomic_load_explicit(w, memory_order_relaxed);
  if ((cur & ~PWORD_WAITERS) != (uint32_t)concur_pid && pword_take_from_dead(w, cur, from_dead))
    return 1;
  int slice = 5;   /* ms; doubles up to PWORD_SLICE_MS: a fresh death is seen soon */
  for (;;) {
    cur = atomic_load_explicit(w, memory_order_relaxed);
    if (cur == 0) {
      /* Others may sleep on it: take it flagged, our release wakes one. */
      if (atomic_compare_exchange_weak_explicit(w, &cur,
                                                (uint32_t)concur_pid | PWORD_WAITERS,
                                                memory_order_acquire, memory_order_relaxed))
        return 1;
      continue;
    }
    if (!(cur & PWORD_WAITERS)) {
      if (!atomic_compare_exchange_weak_explicit(w, &cur, cur | PWORD_WAITERS,
                                                 memory_order_relaxed, memory_order_relaxed))
        continue;
      cur |= PWORD_WAITERS;
    }
    int rc = fx_wait(w, cur, &d, slice);
    if (intr && intr_pending()) {
      /* Nothing taken.  A release's wake may have been ours: pass it on. */
      if (atomic_load_explicit(w, memory_order_relaxed) == 0)
        fx_wake(w, 1);
      return -1;
    }
    if (rc == ETIMEDOUT) {
      slice = slice * 2 > PWORD_SLICE_MS ? PWORD_SLICE_MS : slice * 2;
      if (pword_take_from_dead(w, atomic_load_explicit(w, memory_order_relaxed), from_dead))
        return 1;
      if (deadline_passed(&d))
        return pword_try(w);
    }
  }
}

int pword_acquire(_Atomic uint32_t *w, int blocking, double timeout, int *from_dead) {
  return pword_acquire_impl(w, blocking, timeout, from_dead, 0);
}

int pword_acquire_intr(_Atomic uint32_t *w, int blocking, double timeout, int *from_dead) {
  return pword_acquire_impl(w, blocking, timeout, from_dead, 1);
}

/* ---- the arena --------------------------------------------------------------- */

#define SHM_MIN_SHIFT 5            /* smallest block: 32 bytes, header included */
#define SHM_NCLASS 48
#define SHM_BLOCK_MAGIC 0x636f6e63u   /* "conc" */
#define SHM_RELEASE_SHIFT 16       /* blocks of 64 KiB and up give pages back */
/* Blocks of more than this (header included) are large: page-rounded
 * extents.  Smaller ones round up to a power of two, at most twice their
 * size in address space (their pages are committed only as touched). */
#define SHM_LARGE_MIN ((size_t)512 << 10)
#define SHM_LARGE_CLS 0xffffu      /* shm_block.cls of a large block */
#if SIZE_MAX > 0xffffffffu
#define SHM_DEFAULT_SIZE ((size_t)8 << 30)
#else
#define SHM_DEFAULT_SIZE ((size_t)512 << 20)
#endif

typedef struct shm_block {         /* precedes every block handed out */
  uint32_t magic;
  uint32_t cls;                    /* block size is 1 << cls, or SHM_LARGE_CLS */
  uint64_t size;                   /* a large block's size; keeps the payload 16-aligned */
} shm_block;

typedef struct shm_free_node {
  shm_block hdr;
  struct shm_free_node *next;
} shm_free_node;

/* A free extent: page-aligned, hdr.size bytes (a multiple of the page, at
 * least SHM_LARGE_MIN); only its first page is committed. */
typedef struct shm_extent {
  shm_block hdr;
  struct shm_extent *next;         /* the next free extent, at a higher address */
} shm_extent;

typedef struct shm_head {
  pthread_mutex_t lock;
  size_t size;                     /* bytes reserved */
  size_t top;                      /* bump offset */
  size_t in_use;                   /* bytes in blocks handed out */
  _Atomic int last_self;           /* the last concur_self handed out */
  shm_free_node *free[SHM_NCLASS];
  shm_extent *extents;             /* free large extents, in address order */
} shm_head;

static shm_head *arena;
static char *arena_base;

/* A new stamp for this process (see concur_self): at load and in every
 * forked child, whoever forks. */
static void self_refresh(void) {
  if (arena == NULL) {
    concur_self = concur_pid;
    return;
  }
  int s = atomic_fetch_add(&arena->last_self, 1) + 1;
  if (s <= 0) {   /* wrapped after 2^31 processes: start again above 0 */
    atomic_store(&arena->last_self, 1);
    s = 1;
  }
  concur_self = s;
}
static size_t page_size;
static pthread_once_t shm_once = PTHREAD_ONCE_INIT;

static void shm_init(void) {
  page_size = (size_t)sysconf(_SC_PAGESIZE);
  pid_refresh();
  pthread_atfork(NULL, NULL, pid_refresh);
  /* Reserved, not committed: pages cost nothing until used.  The size can
   * be set (in MiB) with CONCUR_ARENA_MB; tools that shadow every mapped
   * byte (valgrind) want it small.  Smaller sizes are tried if the system
   * refuses. */
  size_t want = SHM_DEFAULT_SIZE;
  const char *env = getenv("CONCUR_ARENA_MB");
  if (env && *env) {
    char *end;
    unsigned long long mb = strtoull(env, &end, 10);
    if (*end == 0 && mb >= 1 && mb <= (SIZE_MAX >> 20))
      want = (size_t)mb << 20;
  }
  for (size_t size = want;; size /= 2) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      arena = p;
      arena_base = p;
      arena->size = size;
      break;
    }
    if (size <= ((size_t)16 << 20))
      break;
  }
  if (arena == NULL)
    return;
  if (rmutex_init(&arena->lock) != 0) {
    munmap(arena, arena->size);
    arena = NULL;
    return;
  }
  arena->top = (sizeof(shm_head) + 63) & ~(size_t)63;
  self_refresh();
}

int shm_runtime_init(void) {
  pthread_once(&shm_once, shm_init);
  return arena ? 0 : -1;
}

/* A large block of `bsize` bytes (page multiple), the arena locked: cut from
 * the free extent that fits best, else from the bump offset.  Each path
 * changes the list with one store, so dying anywhere in it loses at most
 * the block.  *bsize grows when the whole extent is handed out. */
static shm_block *large_take(size_t *bsize) {
  size_t want = *bsize;
  shm_extent **best = NULL;
  for (shm_extent **at = &arena->extents; *at; at = &(*at)->next)
    if ((*at)->hdr.size >= want && (best == NULL || (*at)->hdr.size < (*best)->hdr.size))
      best = at;
  if (best) {
    shm_extent *e = *best;
    size_t rest = e->hdr.size - want;
    if (rest >= SHM_LARGE_MIN) {
      e->hdr.size = rest;           /* one store: the tail is handed out */
      return (shm_block *)((char *)e + rest);
    }
    *best = e->next;                /* one store: dying after it leaks e */
    *bsize = e->hdr.size;
    return &e->hdr;
  }
  size_t at = (arena->top + page_size - 1) & ~(page_size - 1);
  if (at + want > arena->size || at + want < at)
    return NULL;
  arena->top = at + want;
  return (shm_block *)(arena_base + at);
}

/* Gives back a large block (its pages after the first already given back),
 * the arena locked: linked in address order, merged with free neighbours.
 * Every step is one store, or two where dying between them only leaks. */
static void large_give(shm_block *b) {
  size_t bsize = b->size;
  shm_extent *prev = NULL, **link = &arena->extents;
  while (*link && (char *)*link < (char *)b) {
    prev = *link;
    link = &prev->next;
  }
  shm_extent *next = *link;
  int into_prev = prev && (char *)prev + prev->hdr.size == (char *)b;
  int with_next = next && (char *)b + bsize == (char *)next;
  if (into_prev) {
    if (with_next) {
      prev->next = next->next;      /* dying here leaks b and next */
      atomic_signal_fence(memory_order_release);
      prev->hdr.size += bsize + next->hdr.size;
    } else {
      prev->hdr.size += bsize;      /* one store: b is prev's now */
    }
  } else {
    shm_extent *e = (shm_extent *)b;
    e->hdr.magic = 0;
    e->hdr.cls = SHM_LARGE_CLS;
    e->hdr.size = with_next ? bsize + next->hdr.size : bsize;
    e->next = with_next ? next->next : next;
    atomic_signal_fence(memory_order_release);   /* e is written before it is linked */
    *link = e;                      /* one store: e is linked (next inside it) */
  }
  /* Headers now inside a free extent: their pages can go too (the lock is
   * held: nobody can be handed them meanwhile). */
  if (into_prev)
    madvise(b, page_size, MADV_REMOVE);
  if (with_next)
    madvise(next, page_size, MADV_REMOVE);
}

/* The block for n bytes: its class (or SHM_LARGE_CLS) and size.  n is at
 * most the arena's size. */
static unsigned block_for(size_t n, size_t *bsize) {
  if (n + sizeof(shm_block) > SHM_LARGE_MIN) {
    *bsize = (n + sizeof(shm_block) + page_size - 1) & ~(page_size - 1);
    return SHM_LARGE_CLS;
  }
  unsigned cls = SHM_MIN_SHIFT;
  while (((size_t)1 << cls) < n + sizeof(shm_block))
    cls++;
  *bsize = (size_t)1 << cls;
  return cls;
}

size_t shm_cost(size_t n) {
  size_t bsize = n;
  if (arena && n <= arena->size - sizeof(shm_block))
    block_for(n, &bsize);
  return bsize;
}

void *shm_alloc(size_t n) {
  if (arena == NULL || n > arena->size - sizeof(shm_block))
    return NULL;
  size_t bsize;
  unsigned cls = block_for(n, &bsize);
  shm_block *b = NULL;
  rmutex_lock(&arena->lock);
  if (cls == SHM_LARGE_CLS) {
    b = large_take(&bsize);
  } else if (arena->free[cls]) {
    shm_free_node *f = arena->free[cls];
    arena->free[cls] = f->next;     /* one store: dying after it leaks f */
    b = &f->hdr;
  } else {
    /* Blocks of a class are aligned to their size, up to a page: the
     * payload's alignment is then whatever the caller could want. */
    size_t align = bsize < page_size ? bsize : page_size;
    size_t at = (arena->top + align - 1) & ~(align - 1);
    if (at + bsize <= arena->size && at + bsize > at) {
      arena->top = at + bsize;
      b = (shm_block *)(arena_base + at);
    }
  }
  if (b)
    arena->in_use += bsize;
  rmutex_unlock(&arena->lock);
  if (b == NULL)
    return NULL;
  b->magic = SHM_BLOCK_MAGIC;
  b->cls = cls;
  b->size = bsize;
  return b + 1;
}

void *shm_calloc(size_t n) {
  void *p = shm_alloc(n);
  if (p)
    memset(p, 0, n);
  return p;
}

void shm_free(void *p) {
  if (p == NULL)
    return;
  shm_block *b = (shm_block *)p - 1;
  unsigned cls = b->cls;
  int large = cls == SHM_LARGE_CLS;
  if (b->magic != SHM_BLOCK_MAGIC || (cls >= SHM_NCLASS && !large) ||
      (large && (b->size < SHM_LARGE_MIN || (b->size & (page_size - 1)) ||
                 ((uintptr_t)b & (page_size - 1)))))
    abort();   /* not ours, or freed twice: memory is corrupt, stop here */
  b->magic = 0;
  size_t bsize = large ? b->size : (size_t)1 << cls;
  if (bsize >= ((size_t)1 << SHM_RELEASE_SHIFT)) {
    /* Give the pages after the first back to the system (the first holds
     * the free-list link); touched again, they come back zero-filled. */
    madvise((char *)b + page_size, bsize - page_size, MADV_REMOVE);
  }
  rmutex_lock(&arena->lock);
  if (large) {
    large_give(b);
  } else {
    shm_free_node *f = (shm_free_node *)b;
    f->hdr.cls = cls;
    f->next = arena->free[cls];
    atomic_signal_fence(memory_order_release);
    arena->free[cls] = f;           /* dying before this store leaks f */
  }
  arena->in_use -= bsize;
  rmutex_unlock(&arena->lock);
}

int shm_contains(const void *p) {
  return arena && (const char *)p >= arena_base && (const char *)p < arena_base + arena->size;
}

size_t shm_in_use(size_t *high_water) {
  if (arena == NULL) {
    if (high_water)
      *high_water = 0;
    return 0;
  }
  rmutex_lock(&arena->lock);
  size_t n = arena->in_use;
  if (high_water)
    *high_water = arena->top;
  rmutex_unlock(&arena->lock);
  return n;
}
