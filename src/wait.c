/*
 * wait.c - waiting, one way for every object: the deadline type, futex
 * waits on shared words (never the _PRIVATE ones: the words are in shared
 * memory) with absolute CLOCK_MONOTONIC deadlines (or, in the portable
 * build, naps that look at the word: see fx_wait), spinning, the process
 * lock word (pword) with its takeover of a dead holder, the test for a dead
 * process that takeover uses, and the timeout argument of every blocking
 * method.  Ctrl-C in the main thread and cancels are intr.c, below this
 * file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#ifndef CONCUR_PORTABLE
#include <linux/futex.h>
#endif
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "wait.h"

/* ---- deadlines and futexes ------------------------------------------------- */

/* Now on CLOCK_MONOTONIC plus `secs` (>= 0), at most WAIT_TIMEOUT_MAX: the
 * arguments are checked against it (concur_opt_timeout), and the clamp keeps
 * any other caller's sum from overflowing time_t. */
static struct timespec monotonic_after(double secs) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  if (!(secs <= WAIT_TIMEOUT_MAX))
    secs = WAIT_TIMEOUT_MAX;
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

const struct timespec *deadline_until(const deadline *d, int slice_ms, struct timespec *buf) {
  if (slice_ms <= 0)
    return d->forever ? NULL : &d->at;
  *buf = monotonic_after(slice_ms / 1000.0);
  if (!d->forever && (d->at.tv_sec < buf->tv_sec ||
                      (d->at.tv_sec == buf->tv_sec && d->at.tv_nsec < buf->tv_nsec)))
    *buf = d->at;
  return buf;
}

int deadline_poll_ms(const deadline *d, int slice_ms) {
  double left = deadline_left(d);
  int ms = left < 0 ? -1 : left > 1e6 ? 1000000000 : (int)(left * 1000) + (left > 0);
  if (slice_ms > 0 && (ms < 0 || slice_ms < ms))
    ms = slice_ms;
  return ms;
}

#ifdef CONCUR_PORTABLE
/* The portable build (make PORTABLE=1; what a system without Linux futexes
 * takes): a waiter naps, 20 us doubling to 2 ms, and looks at the word after
 * each nap; fx_wake has nothing to do.  Not a process-shared condition
 * variable: a waiter killed while asleep on one wedges every later signaller
 * (glibc's signaller waits for the old group's waiters to leave, and a dead
 * one never does), and concur's objects must outlive a SIGKILL anywhere.
 * The price is a wake-up up to one nap late (make bench PORTABLE=1). */
#define NAP_FIRST_NS 20000L
#define NAP_MAX_NS 2000000L

static int ts_before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

int fx_wait(_Atomic uint32_t *word, uint32_t expected, const deadline *d, int slice_ms) {
  slice_ms = intr_slice_ms(slice_ms);   /* main thread, cancellable worker: intr.h */
  struct timespec buf;
  const struct timespec *until = deadline_until(d, slice_ms, &buf);
  long nap = NAP_FIRST_NS;
  for (;;) {
    if (atomic_load_explicit(word, memory_order_acquire) != expected)
      return 0;
    struct timespec at;
    clock_gettime(CLOCK_MONOTONIC, &at);
    if (until && !ts_before(&at, until))
      return ETIMEDOUT;
    at.tv_nsec += nap;
    if (at.tv_nsec >= 1000000000L) {
      at.tv_sec++;
      at.tv_nsec -= 1000000000L;
    }
    if (until && ts_before(until, &at))
      at = *until;
    if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
      return EINTR;
    if (nap < NAP_MAX_NS)
      nap *= 2;
  }
}

void fx_wake(_Atomic uint32_t *word, int n) {
  CONCUR_UNUSED(word);
  CONCUR_UNUSED(n);
}
#else
int fx_wait(_Atomic uint32_t *word, uint32_t expected, const deadline *d, int slice_ms) {
  slice_ms = intr_slice_ms(slice_ms);   /* main thread, cancellable worker: intr.h */
  struct timespec buf;
  const struct timespec *at = deadline_until(d, slice_ms, &buf);
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
#endif

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
  return fx_spin_lease(word, expected, NULL);
}

int64_t fx_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* fx_spin that, each time it reads the clock, renews *lease (when not NULL)
 * to FX_LEASE_NS from then: "a spinner is looking at the word until then".
 * On leaving it sets the lease to 0 (the other spinners renew it). */
int fx_spin_lease(_Atomic uint32_t *word, uint32_t expected, _Atomic int64_t *lease) {
  int64_t t0 = fx_now_ns(), t = t0;
  int changed = 0;
  for (;;) {
    if (lease)
      atomic_store(lease, t + FX_LEASE_NS);
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(word, memory_order_acquire) != expected) {
        changed = 1;
        goto out;
      }
      cpu_relax();
    }
    t = fx_now_ns();
    if (t - t0 > SPIN_NS)
      break;
  }
out:
  if (lease)
    atomic_store(lease, 0);
  return changed;
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

/* ---- the clock and the timeout argument ------------------------------------ */

double wait_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Timeout argument: nil or math.huge -> -1 (forever); negative or NaN ->
 * argument error; finite above WAIT_TIMEOUT_MAX -> argument error too, as
 * Python's OverflowError (not silently shortened). */
double concur_opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return -1;
  lua_Number v = luaL_checknumber(L, idx);
  luaL_argcheck(L, v >= 0, idx, "timeout must be a non-negative number");
  if (isinf((double)v))
    return -1;
  luaL_argcheck(L, (double)v <= WAIT_TIMEOUT_MAX, idx,
                "timeout must be at most concur.TIMEOUT_MAX (or math.huge: forever)");
  return (double)v;
}

void sel_ring(void) {
  _Atomic uint32_t *bell = shm_bell();
  atomic_fetch_add(bell, 1);
  fx_wake(bell, INT_MAX);
}
