/*
 * failmalloc.c - an interposed allocator that fails on demand, for the
 * out-of-memory sweep (spec/fixtures/oom_sweep.lua, `make faults`).
 *
 * Loaded with LD_PRELOAD it stands in for malloc, calloc, realloc, free and
 * the aligned allocators of the whole process (Lua's own allocator, concur,
 * libc) and forwards to glibc's __libc_* functions.  Required as the Lua
 * module "failmalloc" (the same file, found on LUA_CPATH) it gives:
 *
 *   failmalloc.arm(n [, count])  the n-th allocation from now fails, and the
 *                                count-1 after it too (count: default 1;
 *                                math.huge: every one until disarm)
 *   failmalloc.disarm()          stops failing; returns how many failed
 *   failmalloc.live()            blocks allocated and not yet freed
 *
 * The live count is what the sweep compares before and after an operation
 * that met a failure: anything the error path forgot to free shows up there.
 * Counters are atomics: the allocator is called from every thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <execinfo.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

#define API __attribute__((visibility("default")))

static atomic_llong countdown;     /* > 0: armed; fail when it reaches 0 */
static atomic_llong fail_left;     /* failures still to give once it fires */
static atomic_llong failed;        /* failures given since arm */
static atomic_llong live;          /* blocks out */
static int trace;

/* Whether this allocation is to fail: the countdown's last step fires, then
 * every call fails while failures are left. */
static int should_fail(void) {
  if (atomic_load_explicit(&fail_left, memory_order_relaxed) <= 0)
    return 0;                                  /* disarmed, or used up */
  if (atomic_load_explicit(&countdown, memory_order_relaxed) > 0 &&
      atomic_fetch_sub(&countdown, 1) > 1)
    return 0;                                  /* not the n-th yet */
  if (atomic_fetch_sub(&fail_left, 1) <= 0)
    return 0;
  atomic_fetch_add(&failed, 1);
  if (trace) {                 /* FAILMALLOC_TRACE=1: where it failed */
    void *frames[24];
    int n = backtrace(frames, 24);
    write(2, "failmalloc: failing here:\n", 27);
    backtrace_symbols_fd(frames, n, 2);
  }
  return 1;
}

/* FAILMALLOC_TRACE=1 also records where each block still out was made,
 * between failmalloc.track() and failmalloc.leaks() (which prints them). */
#define TRACK_SLOTS (1 << 16)
#define TRACK_FRAMES 12
typedef struct {
  void *p;
  int n;
  void *frames[TRACK_FRAMES];
} track_slot;
static track_slot *tracked;      /* from __libc_calloc: not counted */
static atomic_flag track_lock = ATOMIC_FLAG_INIT;
static _Thread_local int in_track;

static void track_add(void *p) {
  if (!tracked || in_track)
    return;
  in_track = 1;
  void *frames[TRACK_FRAMES];
  int n = backtrace(frames, TRACK_FRAMES);
  while (atomic_flag_test_and_set(&track_lock)) {}
  for (size_t i = ((uintptr_t)p >> 4) & (TRACK_SLOTS - 1), k = 0; k < TRACK_SLOTS;
       i = (i + 1) & (TRACK_SLOTS - 1), k++)
    if (tracked[i].p == NULL) {
      tracked[i].p = p;
      tracked[i].n = n;
      memcpy(tracked[i].frames, frames, sizeof frames);
      break;
    }
  atomic_flag_clear(&track_lock);
  in_track = 0;
}

static void track_del(void *p) {
  if (!tracked)
    return;
  while (atomic_flag_test_and_set(&track_lock)) {}
  for (size_t i = ((uintptr_t)p >> 4) & (TRACK_SLOTS - 1), k = 0; k < TRACK_SLOTS;
       i = (i + 1) & (TRACK_SLOTS - 1), k++)
    if (tracked[i].p == p) {
      tracked[i].p = NULL;
      /* Re-seat the run after it (linear probing). */
      for (size_t j = (i + 1) & (TRACK_SLOTS - 1); tracked[j].p; j = (j + 1) & (TRACK_SLOTS - 1)) {
        track_slot t = tracked[j];
        tracked[j].p = NULL;
        size_t h = ((uintptr_t)t.p >> 4) & (TRACK_SLOTS - 1);
        while (tracked[h].p)
          h = (h + 1) & (TRACK_SLOTS - 1);
        tracked[h] = t;
      }
      break;
    }
  atomic_flag_clear(&track_lock);
}

static void *counted(void *p) {
  if (p) {
    atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    track_add(p);
  }
  return p;
}

API void *malloc(size_t n) {
  if (should_fail()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_malloc(n));
}

API void *calloc(size_t n, size_t size) {
  if (should_fail()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_calloc(n, size));
}

API void free(void *p) {
  if (p) {
    atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    track_del(p);
  }
  __libc_free(p);
}

API void *realloc(void *p, size_t n) {
  if (p == NULL)
    return malloc(n);
  if (n == 0) {
    free(p);
    return NULL;
  }
  /* A realloc that shrinks never fails in glibc, and Lua 5.2 relies on it
   * (shrinking the stack after an error, outside any protected call): only
   * growth may fail here. */
  if (n > malloc_usable_size(p) && should_fail()) {
    errno = ENOMEM;
    return NULL;
  }
  void *q = __libc_realloc(p, n);
  if (q && q != p) {
    track_del(p);
    track_add(q);
  }
  return q;
}

API void *memalign(size_t align, size_t n) {
  if (should_fail()) {
    errno = ENOMEM;
    return NULL;
  }
  return counted(__libc_memalign(align, n));
}

API void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }

API int posix_memalign(void **out, size_t align, size_t n) {
  if (align < sizeof(void *) || (align & (align - 1)))
    return EINVAL;
  void *p = memalign(align, n);
  if (p == NULL)
    return ENOMEM;
  *out = p;
  return 0;
}

API void *valloc(size_t n) { return memalign(4096, n); }

/* ---- the Lua module ------------------------------------------------------- */

static int fm_arm(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_Number count = luaL_optnumber(L, 2, 1);
  luaL_argcheck(L, n >= 1, 1, "must be at least 1");
  luaL_argcheck(L, count >= 1, 2, "must be at least 1");
  atomic_store(&failed, 0);
  atomic_store(&countdown, n);      /* before fail_left, which arms it */
  atomic_store(&fail_left, count >= (lua_Number)INT64_MAX ? INT64_MAX : (long long)count);
  return 0;
}

static int fm_disarm(lua_State *L) {
  atomic_store(&fail_left, 0);
  atomic_store(&countdown, 0);
  lua_pushinteger(L, (lua_Integer)atomic_load(&failed));
  return 1;
}

static int fm_track(lua_State *L) {
  if (trace && !tracked)
    tracked = __libc_calloc(TRACK_SLOTS, sizeof *tracked);
  while (atomic_flag_test_and_set(&track_lock)) {}
  if (tracked)
    memset(tracked, 0, TRACK_SLOTS * sizeof *tracked);
  atomic_flag_clear(&track_lock);
  (void)L;
  return 0;
}

static int fm_leaks(lua_State *L) {
  int count = 0;
  in_track = 1;
  while (atomic_flag_test_and_set(&track_lock)) {}
  for (size_t i = 0; tracked && i < TRACK_SLOTS; i++)
    if (tracked[i].p) {
      count++;
      fprintf(stderr, "failmalloc: block %p still out, made at:\n", tracked[i].p);
      backtrace_symbols_fd(tracked[i].frames, tracked[i].n, 2);
    }
  atomic_flag_clear(&track_lock);
  in_track = 0;
  lua_pushinteger(L, count);
  return 1;
}

static int fm_live(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)atomic_load(&live));
  return 1;
}

API int luaopen_failmalloc(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"arm", fm_arm},
    {"disarm", fm_disarm},
    {"live", fm_live},
    {"track", fm_track},
    {"leaks", fm_leaks},
    {NULL, NULL}
  };
  const char *t = getenv("FAILMALLOC_TRACE");
  trace = t && *t == '1';
  if (trace) {                 /* backtrace loads libgcc on first use */
    void *frame;
    backtrace(&frame, 1);
  }
  lua_newtable(L);   /* luaL_newlib is 5.2+ */
  for (const luaL_Reg *f = funcs; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  return 1;
}
