/*
 * wait.h - waiting (wait.c): the one deadline type, futex waits, spinning,
 * the process lock word, dead processes, the clock and the timeout argument.
 */
#ifndef CONCUR_WAIT_H
#define CONCUR_WAIT_H

#include <time.h>

#include "arena.h"
#include "intr.h"

/* An absolute CLOCK_MONOTONIC deadline; timeout < 0: forever. */
typedef struct deadline {
  int forever;
  struct timespec at;
} deadline;
deadline deadline_in(double timeout);
int deadline_passed(const deadline *d);
double deadline_left(const deadline *d);   /* seconds, 0 once passed; -1: forever */
/* For an absolute wait (a futex, a condition variable, clock_nanosleep):
 * the earlier of d and now + slice_ms (slice_ms <= 0: just d), in buf or
 * d's own; NULL when that is forever. */
const struct timespec *deadline_until(const deadline *d, int slice_ms, struct timespec *buf);
/* For poll(): the milliseconds to d, rounded up (-1: forever), at most
 * slice_ms when that is > 0. */
int deadline_poll_ms(const deadline *d, int slice_ms);

/* Seconds on CLOCK_MONOTONIC (concur.time). */
double wait_monotonic(void);
/* The largest timeout a wait takes: concur.TIMEOUT_MAX, Python's
 * threading.TIMEOUT_MAX.  INT64_MAX nanoseconds in whole seconds (~292
 * years), CPython's value on Linux; now + that is far from overflowing a
 * 64-bit time_t, so no deadline arithmetic can overflow.  A 32-bit time_t
 * (old 32-bit systems) takes 2^30 - 1 s (~34 years), which its deadlines
 * hold until 2038 less that. */
#define WAIT_TIMEOUT_MAX (sizeof(time_t) >= 8 ? 9223372036.0 : 1073741823.0)
/* Timeout argument at idx: nil or math.huge -> -1 (forever); negative, NaN
 * or finite above WAIT_TIMEOUT_MAX raises. */
double concur_opt_timeout(lua_State *L, int idx);

/* Sleeps while *word == expected, until woken, d, or slice_ms (if > 0)
 * from now.  Returns 0, EAGAIN, ETIMEDOUT or EINTR; callers re-check. */
int fx_wait(_Atomic uint32_t *word, uint32_t expected, const deadline *d, int slice_ms);
void fx_wake(_Atomic uint32_t *word, int n);
/* Spins a few microseconds while *word == expected; 1 if it changed. */
int fx_spin(_Atomic uint32_t *word, uint32_t expected);
/* fx_spin renewing *lease (a CLOCK_MONOTONIC time in ns) while it spins,
 * then setting it to 0: queue.c's getters, so that a putter can tell that a
 * spinner will see its item and skip the wake-up (see queue.c, wake_getter). */
#define FX_LEASE_NS 10000
int fx_spin_lease(_Atomic uint32_t *word, uint32_t expected, _Atomic int64_t *lease);
int64_t fx_now_ns(void);   /* CLOCK_MONOTONIC in ns */

/* A process lock word (Lock, and the Queue's own locks): 0 when free, else
 * the holder's pid | PWORD_WAITERS.  Any thread may release it; a holder
 * process that dies is taken over by the next acquire (at once, or within
 * 100 ms for a sleeping waiter), which then sets *from_dead (if not NULL). */
#define PWORD_WAITERS 0x80000000u
static inline int pword_try(_Atomic uint32_t *w) {
  uint32_t expect = 0;
  return atomic_compare_exchange_strong_explicit(w, &expect, (uint32_t)concur_pid,
                                                 memory_order_acquire, memory_order_relaxed);
}
/* 1 when taken, 0 on timeout or when not blocking. */
int pword_acquire(_Atomic uint32_t *w, int blocking, double timeout, int *from_dead);
/* The same, but -1 (nothing taken) when an interrupt comes first (see
 * intr_pending); the caller raises with intr_raise. */
int pword_acquire_intr(_Atomic uint32_t *w, int blocking, double timeout, int *from_dead);
/* Frees the word, waking one sleeper if any; returns the word it held (0:
 * it was not held, which only a Lock's release can meet). */
static inline uint32_t pword_release(_Atomic uint32_t *w) {
  uint32_t old = atomic_exchange_explicit(w, 0, memory_order_release);
  if (old & PWORD_WAITERS)
    fx_wake(w, 1);
  return old;
}

/* concur.select: a selector counts itself in the `watchers` word of each
 * object it watches, then sleeps on the family's bell (shm_bell).  Whoever
 * changes such an object's readiness (a put, a set, a thread's end) calls
 * sel_notify after its seq_cst store: nothing more than a load when nobody
 * watches, else the bell rings and every selector looks again. */
void sel_ring(void);
static inline void sel_notify(_Atomic uint32_t *watchers) {
  if (atomic_load(watchers))
    sel_ring();
}

/* The process `pid` has ended (reaped or a zombie).  Never true for us. */
int proc_gone(int pid);

#endif
