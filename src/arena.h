/*
 * arena.h - the ground floor (arena.c): the family's shared memory, robust
 * process-shared mutexes and the process stamps.  Every other file stands on
 * it; it knows none of them.
 */
#ifndef CONCUR_ARENA_H
#define CONCUR_ARENA_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "concur.h"

#define CONCUR_UNUSED(x) ((void)(x))

#if defined(__GNUC__) && !defined(__clang__) && defined(__PIC__)
/* The Lua API functions on the Lock fast path (sync.c), called through the
 * GOT rather than a PLT stub (gcc; what -fno-plt does, for these three only). */
LUA_API void *(lua_touserdata)(lua_State *L, int idx) __attribute__((noplt));
LUA_API int (lua_gettop)(lua_State *L) __attribute__((noplt));
LUA_API void (lua_pushboolean)(lua_State *L, int b) __attribute__((noplt));
#endif


extern int concur_pid;                   /* getpid(), cached; right in forked children */
/* This process's stamp on what it owns (handles' references, messages):
 * unique over the life of the process family (a counter in the arena), where
 * a pid may be reused by a later process.  The pid where there is no arena. */
extern int concur_self;
/* its address names a thread */
extern _Thread_local char concur_thread_marker __attribute__((tls_model("initial-exec")));
#define CONCUR_THREAD_ID ((uintptr_t)&concur_thread_marker)

int shm_runtime_init(void);              /* maps the arena once; -1 if it cannot */
void *shm_alloc(size_t n);               /* NULL when the arena is full */
void *shm_calloc(size_t n);
void shm_free(void *p);
int shm_contains(const void *p);
size_t shm_in_use(size_t *high_water);  /* bytes in live blocks, family-wide; the bump top */
size_t shm_cost(size_t n);               /* the bytes shm_alloc(n) takes from the arena */
_Atomic uint32_t *shm_bell(void);        /* the family's select bell (wait.h: sel_ring) */

/* Test hooks (the fault specs): a process armed with concur_fault_arm(p, n)
 * kills itself with SIGKILL the n-th time it reaches point p, half way
 * through a change (a journal applied in part, a node unlinked and not yet
 * freed).  Unarmed, a point costs one relaxed load and a compare. */
enum {
  CONCUR_FAULT_NONE = 0,
  CONCUR_FAULT_DICT_COMMIT,   /* a Dict's journal: its first word written, not the rest */
  CONCUR_FAULT_DICT_MOVE,     /* the same while growing (a node moved between tables) */
  CONCUR_FAULT_DICT_SET,      /* d[k] = v committed, the old node not freed yet */
  CONCUR_FAULT_DICT_UPDATE,   /* d:update's store done, its lock still held */
  CONCUR_FAULT_NPOINTS
};
extern _Atomic int concur_fault_point;
void concur_fault_arm(int point, long n);
void concur_fault_hit(void);
static inline void concur_fault(int point) {
  if (__builtin_expect(atomic_load_explicit(&concur_fault_point, memory_order_relaxed) == point, 0))
    concur_fault_hit();
}

/* Robust process-shared mutexes: a dead holder's mutex is taken over (the
 * lock returns 1 then) and made consistent. */
int rmutex_init(pthread_mutex_t *m);
int rmutex_lock(pthread_mutex_t *m);
void rmutex_unlock(pthread_mutex_t *m);

#endif
