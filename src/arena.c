/*
 * arena.c - the process family's shared memory: the arena every shareable
 * object lives in, robust process-shared mutexes, and the process stamps
 * (the cached pid, concur_self).  The ground floor: it calls no other file.
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
 * The cached pid: getpid is a system call in current glibc; it is refreshed
 * in every forked child by an atfork handler, whoever forks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"

/* ---- the cached pid -------------------------------------------------------- */

int concur_pid;
int concur_self;
_Thread_local char concur_thread_marker __attribute__((tls_model("initial-exec")));

static void self_refresh(void);
static void pid_refresh(void) {
  concur_pid = (int)getpid();
  self_refresh();
}

/* ---- test hooks ------------------------------------------------------------ */

_Atomic int concur_fault_point;
static _Atomic long fault_left;

void concur_fault_arm(int point, long n) {
  atomic_store(&fault_left, n > 0 ? n : 1);
  atomic_store(&concur_fault_point, point);
}

void concur_fault_hit(void) {
  if (atomic_fetch_sub(&fault_left, 1) == 1)
    kill(getpid(), SIGKILL);
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
  _Atomic uint32_t bell;           /* concur.select's sleepers wait on it (wait.c) */
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

_Atomic uint32_t *shm_bell(void) {
  static _Atomic uint32_t local;   /* no arena: selects within this process */
  return arena ? &arena->bell : &local;
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
