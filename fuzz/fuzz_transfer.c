/*
 * fuzz_transfer.c - a libFuzzer target for the value transfer (src/transfer.c).
 *
 * Linked with every file of src/ and the static Lua library (fuzz/fuzz.mk), so
 * the internal functions of internal headers are called directly.  One lua_State
 * serves the whole run: standard libraries, concur, and a `require` that only
 * knows package.preload (no file is ever loaded).  The Lua half of the harness
 * (fuzz/fuzz_transfer.lua, compiled in) builds values, predicts the encoder's
 * answer and compares copies.  The first input byte chooses the mode:
 *
 *   even  mode A: the other bytes are a raw message for transfer_decode_tbuf
 *         (no object list).  Any Lua error is fine.  A message that decodes is
 *         then checked as in mode B (its values sent again).  Bit 1 of the
 *         first byte makes the decoder run out of memory after (byte >> 2) * 4
 *         allocations.
 *   odd   mode B: the other bytes are a program (build() in the Lua half) that
 *         makes values: tables with cycles and shared parts, every kind of key,
 *         metatables, closures with shared and joined upvalues, named values,
 *         concur objects, slices, values that cannot cross.  They are encoded;
 *         the encoder must accept exactly what the rules accept (expect());
 *         a refused value leaves the buffer as it was; the decoded copy must
 *         equal the original, sharing included (compare()); then a damaged
 *         copy of the message (a byte flipped or set, or cut short) is decoded,
 *         which may fail but not crash, and what it gives must cross again.
 *
 * Every decode must also grow the Lua heap in proportion to the message: at
 * most 64 bytes per byte, plus one capped block.
 *
 * A broken rule aborts with a line "fuzz_transfer: ...", which libFuzzer
 * reports as a crash.  Every decode runs in a coroutine, so that after an error
 * everything it made is still on its stack: the metatables of decoded tables
 * are then removed (strip()) before the collector runs again, so a message can
 * never make a finalizer run.  A message's Lua functions are loaded, never
 * called.  Each input ends with a full collection, and the reference counts
 * of the concur objects must be back where they started.
 *
 * FUZZ_TRANSFER_SEEDS=dir: write the seed corpus into dir and exit.
 * FUZZ_TRANSFER_VERBOSE=1: a few lines on what each input did.
 * FUZZ_TRANSFER_STATS=1: the Lua heap's size and each new peak.
 * FUZZ_TRANSFER_SKIP=slice-loop,upvalue-count,alloc-ratio,chunk-load: go past
 * the known problems of fuzz/crashes/README.md (skip inputs where a slice holds
 * itself; bound the upvalue indices of malformed binary chunks by the
 * closure's own count; do not check how much memory a decode takes for its
 * size; load no binary chunk from bytes no encoder wrote).  `make fuzz` sets
 * chunk-load (upvalue-count guards what decode_function now checks itself).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lualib.h"
#include "transfer.h"
#include "fork.h"

/* The Lua half, as tools/embed.lua writes it (under its fixed name). */
#define concur_lua_source fuzz_lua_source
#include "fuzz_transfer_lua.h"
#undef concur_lua_source

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int helpers_ref;            /* registry: the Lua half's table */
static int skip_slice_loop;
static int guard_upvalues;         /* FUZZ_TRANSFER_SKIP=upvalue-count */
static int check_growth = 1;       /* off with FUZZ_TRANSFER_SKIP=alloc-ratio */
static int verbose;                /* FUZZ_TRANSFER_VERBOSE: say what each input did */
static int stats;                  /* FUZZ_TRANSFER_STATS: the heap's size and peaks */

#define MAX_OBJECTS 16
static cobj *objects[MAX_OBJECTS];
static long objects_refs[MAX_OBJECTS];
static int nobjects;
static int objects_ref;            /* registry: the list of their handles */

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz_transfer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

__attribute__((format(printf, 1, 2))) static void trace(const char *fmt, ...) {
  if (!verbose)
    return;
  va_list ap;
  va_start(ap, fmt);
  fputs("  ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL)
    die("out of memory");
  return p;
}

/* ---- the state's allocator ------------------------------------------------ */

/* Bounds what one message can make Lua allocate (a binary chunk may announce
 * gigabytes), and fails on demand: once armed, every growth after `oom_left`
 * more is refused, until disarmed.  Shrinking never fails (Lua relies on it). */
#define MAX_BLOCK ((size_t)4 << 20)
#define MAX_HEAP ((size_t)768 << 20)
static size_t heap_used, heap_top;
static int oom_armed;
static long oom_left;

static void *fz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  CONCUR_UNUSED(ud);
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    heap_used -= old;
    return NULL;
  }
  if (nsize > old) {
    if (nsize > MAX_BLOCK || heap_used - old + nsize > MAX_HEAP)
      return NULL;
    if (oom_armed) {
      if (oom_left <= 0)
        return NULL;
      oom_left--;
    }
  }
  void *p = realloc(ptr, nsize);
  if (p != NULL)
    heap_used = heap_used - old + nsize;
  if (heap_used > heap_top)
    heap_top = heap_used;
  return p;
}

static void oom_arm(long after) {
  oom_left = after;
  oom_armed = 1;
}

static void oom_disarm(void) { oom_armed = 0; }

static int fz_panic(lua_State *S) {
  die("Lua panic: %s", lua_tostring(S, -1) ? lua_tostring(S, -1) : "(no message)");
}

/* ---- upvalue indices of malformed binary chunks ------------------------------ */

/* A binary chunk says how many upvalues its closure gets (a header byte) and,
 * separately, how many its function uses; Lua 5.4 only asserts they agree.
 * lua_getupvalue & co. check an index against the second and then index the
 * closure's array, sized by the first: a chunk where they differ makes them
 * read or write past the closure (fuzz/crashes/chunk-upvalue-count).  Linked
 * with --wrap (fuzz/fuzz.mk), these versions also check the index against the
 * closure's own count when guard_upvalues is set: the fix suggested for
 * decode_function, applied here so that fuzzing can go past it. */
const char *__real_lua_getupvalue(lua_State *S, int funcindex, int n);
const char *__real_lua_setupvalue(lua_State *S, int funcindex, int n);
const char *__wrap_lua_getupvalue(lua_State *S, int funcindex, int n);
const char *__wrap_lua_setupvalue(lua_State *S, int funcindex, int n);
/* Stock 5.1 has neither (fuzz.mk wraps them everywhere else). */
#define HAVE_UPVALUEID (LUA_VERSION_NUM >= 502 || CONCUR_LUAJIT)
#if HAVE_UPVALUEID
void *__real_lua_upvalueid(lua_State *S, int fidx, int n);
void __real_lua_upvaluejoin(lua_State *S, int fidx1, int n1, int fidx2, int n2);
void *__wrap_lua_upvalueid(lua_State *S, int fidx, int n);
void __wrap_lua_upvaluejoin(lua_State *S, int fidx1, int n1, int fidx2, int n2);
#endif

static int upvalue_in_closure(lua_State *S, int idx, int n) {
  if (!guard_upvalues || lua_type(S, idx) != LUA_TFUNCTION || lua_iscfunction(S, idx) ||
      !lua_checkstack(S, 2))
    return 1;   /* C closures check their index against their own count */
  lua_Debug ar;
  lua_pushvalue(S, idx);
  lua_getinfo(S, ">u", &ar);
  return n >= 1 && n <= ar.nups;
}

const char *__wrap_lua_getupvalue(lua_State *S, int funcindex, int n) {
  return upvalue_in_closure(S, funcindex, n) ? __real_lua_getupvalue(S, funcindex, n) : NULL;
}

const char *__wrap_lua_setupvalue(lua_State *S, int funcindex, int n) {
  return upvalue_in_closure(S, funcindex, n) ? __real_lua_setupvalue(S, funcindex, n) : NULL;
}

#if HAVE_UPVALUEID
void *__wrap_lua_upvalueid(lua_State *S, int fidx, int n) {
  return upvalue_in_closure(S, fidx, n) ? __real_lua_upvalueid(S, fidx, n) : NULL;
}

void __wrap_lua_upvaluejoin(lua_State *S, int fidx1, int n1, int fidx2, int n2) {
  if (upvalue_in_closure(S, fidx1, n1) && upvalue_in_closure(S, fidx2, n2))
    __real_lua_upvaluejoin(S, fidx1, n1, fidx2, n2);
}
#endif

/* liblua's undump (lundump.c) is not hardened against malformed bytecode,
 * and a damaged or made-up message can hold any chunk bytes.  Messages only
 * ever come from concur's own encoder, so with FUZZ_TRANSFER_SKIP=chunk-load
 * (the default of `make fuzz`) a binary chunk met while decoding untrusted
 * bytes (mode A, and the damaged copies of mode B) is refused like a bad
 * chunk: the decoder's error path still runs, liblua's undump does not. */
static int guard_chunks;           /* FUZZ_TRANSFER_SKIP=chunk-load */
static int untrusted;              /* decoding bytes no encoder wrote */
/* The library's own lua_load: 5.1 and LuaJIT's has no mode argument
 * (lua-compat-5.3's lua_load, which the decoder calls, is a macro over it). */
#if LUA_VERSION_NUM >= 502
#define LOAD_PARAMS const char *chunkname, const char *mode
#define LOAD_ARGS chunkname, mode
#else
#define LOAD_PARAMS const char *chunkname
#define LOAD_ARGS chunkname
#endif
int __real_lua_load(lua_State *S, lua_Reader reader, void *data, LOAD_PARAMS);
int __wrap_lua_load(lua_State *S, lua_Reader reader, void *data, LOAD_PARAMS);
int __wrap_lua_load(lua_State *S, lua_Reader reader, void *data, LOAD_PARAMS) {
  if (guard_chunks && untrusted) {
    lua_pushliteral(S, "binary chunk from untrusted bytes not loaded (fuzz harness)");
    return LUA_ERRSYNTAX;
  }
  return __real_lua_load(S, reader, data, LOAD_ARGS);
}

/* ---- small helpers ------------------------------------------------------------ */

static void room(int n) {
  if (!lua_checkstack(L, n))
    die("no room for %d more stack slots", n);
}

static void push_helper(const char *name) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, helpers_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

static void push_values(int first, int n) {
  room(n + 8);
  for (int i = 0; i < n; i++)
    lua_pushvalue(L, first + i);
}

static int noop_cfunction(lua_State *S) {
  CONCUR_UNUSED(S);
  return 0;
}

static int is_concur(lua_State *S) {
  lua_pushboolean(S, cobj_test(S, 1, NULL) != NULL);
  return 1;
}

/* What the Lua half needs that not every runtime has (string.unpack, rawlen)
 * or where the encoder's own rule is wanted (is_integer: lua_isinteger, which
 * compat.h gives 5.1, 5.2 and LuaJIT as "integral, fits 64 bits, not -0"). */
static int h_is_integer(lua_State *S) {
  lua_pushboolean(S, lua_isinteger(S, 1));
  return 1;
}

static int h_rawlen(lua_State *S) {
  luaL_checktype(S, 1, LUA_TTABLE);
  lua_pushinteger(S, (lua_Integer)lua_rawlen(S, 1));
  return 1;
}

/* The 8 bytes of string argument 1 from offset 0, little-endian. */
static uint64_t h_u64(lua_State *S) {
  size_t n;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(S, 1, &n);
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static int h_int64(lua_State *S) {
  lua_pushinteger(S, (lua_Integer)(int64_t)h_u64(S));  /* a double on 5.1, 5.2, LuaJIT */
  return 1;
}

static int h_float64(lua_State *S) {
  uint64_t v = h_u64(S);
  double d;
  memcpy(&d, &v, sizeof d);
  lua_pushnumber(S, (lua_Number)d);
  return 1;
}

/* ---- encoding and decoding, protected ------------------------------------- */

typedef struct enc_call {
  tbuf *b;
  int n, one_root;
  int entered, returned, ok;
  char err[TRANSFER_ERRLEN];
} enc_call;

static int enc_entry(lua_State *S) {
  enc_call *c = lua_touserdata(S, 1);
  c->entered = 1;
  c->ok = transfer_encode(S, 2, c->n, "v", c->one_root, c->b, c->err);
  c->returned = 1;
  return 0;
}

typedef struct dec_call {
  const tbuf *view;
  size_t at, len;
} dec_call;

static int dec_entry(lua_State *co) {
  const dec_call *c = lua_touserdata(co, 1);
  lua_settop(co, 0);
  return transfer_decode_tbuf(co, c->view, c->at, c->len);
}

/* Decodes view->data[at .. at+len) in a new coroutine and moves onto L what
 * it left: its results, or after an error everything on its stack (the
 * values made so far, the error last).  Returns the status. */
static int decode_in_coroutine(const tbuf *view, size_t at, size_t len, int inject, long oomk,
                               int *nvals) {
  dec_call c = {view, at, len};
  lua_State *co = lua_newthread(L);
  lua_pushcfunction(co, dec_entry);
  lua_pushlightuserdata(co, &c);
  int nres = 0;
  if (inject)
    oom_arm(oomk);
  size_t before = heap_used, top_before = heap_top;
  heap_top = heap_used;
#if LUA_VERSION_NUM >= 504
  int st = lua_resume(co, L, 1, &nres);
#else   /* 5.2 and 5.3; lua-compat-5.3 gives 5.1 and LuaJIT the same form */
  int st = lua_resume(co, L, 1);
  nres = lua_gettop(co);
#endif
  oom_disarm();
  /* What a message makes is about as big as the message: a value takes at
   * most some tens of bytes per byte of its encoding.  One binary chunk may
   * announce a vector that Lua allocates before it finds the chunk short:
   * MAX_BLOCK allows for that (see fuzz/crashes/README.md). */
  size_t grew = heap_top - before;
  if (heap_top < top_before)
    heap_top = top_before;
  if (check_growth && grew > 64 * len + MAX_BLOCK + ((size_t)2 << 20))
    die("decoding %zu bytes made Lua allocate %zu KiB (%s)", len, grew >> 10,
        st == LUA_OK ? "decoded" : lua_tostring(co, -1));
  if (st == LUA_YIELD)
    die("the decoder yielded");
  int n = st == LUA_OK ? nres : lua_gettop(co);
  room(n + 32);
  lua_xmove(co, L, n);
  lua_remove(L, -n - 1);   /* the coroutine */
  *nvals = n;
  return st;
}

/* strip() over the n values on top, which stay. */
static void strip_top(int n) {
  int first = lua_gettop(L) - n + 1;
  push_helper("strip");
  push_values(first, n);
  if (lua_pcall(L, n, 0, 0) != LUA_OK)
    die("strip raised: %s", lua_tostring(L, -1));
}

static void check_equal(int origs, int copies, int n, const char *what) {
  push_helper("compare");
  lua_pushinteger(L, n);
  push_values(origs, n);
  push_values(copies, n);
  if (lua_pcall(L, 2 * n + 1, 2, 0) != LUA_OK)
    die("compare raised: %s", lua_tostring(L, -1));
  if (!lua_toboolean(L, -2))
    die("%s differs from the original: %s", what, lua_tostring(L, -1));
  lua_pop(L, 2);
}

enum { EXP_OK, EXP_BAD, EXP_DEEP, EXP_LOOP, EXP_SLICE_DEEP };
static const char *const exp_names[] = {"ok", "bad", "deep", "slice-loop", "slice-deep", NULL};

static int expectation(int first, int n, int one_root) {
  push_helper("expect");
  lua_pushinteger(L, one_root);
  lua_pushinteger(L, n);
  push_values(first, n);
  if (lua_pcall(L, n + 2, 1, 0) != LUA_OK)
    die("expect raised: %s", lua_tostring(L, -1));
  const char *s = lua_tostring(L, -1);
  for (int i = 0; exp_names[i]; i++)
    if (s && strcmp(s, exp_names[i]) == 0) {
      lua_pop(L, 1);
      return i;
    }
  die("expect answered %s", s ? s : "nil");
}

typedef struct sblob_call {
  sblob *s;
  int free_it;
} sblob_call;

static int sblob_entry(lua_State *S) {
  sblob_call *c = lua_touserdata(S, 1);
  lua_settop(S, 0);
  return c->free_it ? sblob_decode_free(S, c->s) : sblob_decode(S, c->s);
}

/* ---- the round trip --------------------------------------------------------- */

typedef struct rt_opts {
  int prefix;          /* 1: a string message first in the buffer, 2: objects */
  int inject;          /* memory errors during encode and decode */
  long oomk;           /* ... after this many allocations */
  int sblob, sblob_free;
  int level;           /* 0: also decode a damaged copy (and send what it gives) */
  unsigned dkind, dpos, dval;
} rt_opts;

static void roundtrip(int first, int n, int one_root, const rt_opts *o);

/* Damages the message at p[at .. at+len); returns its new length. */
static size_t damage(unsigned char *p, size_t at, size_t len, const rt_opts *o) {
  size_t i = at + o->dpos % len;
  switch (o->dkind % 5) {
  case 0:
    p[i] ^= (unsigned char)(o->dval | 1);
    return len;
  case 1:
    return o->dpos % len;
  case 2:
    p[i] = (unsigned char)(o->dval % 19);   /* a tag */
    return len;
  case 3:
    p[i] ^= 0x80;                           /* a varint's continuation bit */
    return len - o->dval % len;
  default:
    for (size_t k = i; k < at + len && k < i + 5; k++)
      p[k] = k + 1 < i + 5 ? 0xff : 0x7f;   /* a huge varint or u32 */
    return len;
  }
}

static void decode_damaged(const tbuf *b, size_t at, size_t len, const rt_opts *o) {
  unsigned char *work = xmalloc(at + len);
  memcpy(work, b->data, at + len);
  size_t nlen = damage(work, at, len, o);
  unsigned char *exact = xmalloc(at + nlen);   /* ASan sees a read past the end */
  memcpy(exact, work, at + nlen);
  free(work);
  tbuf view = {exact, at + nlen, at + nlen, b->objs, b->nobjs, b->objcap, NULL, b->pid};
  int base = lua_gettop(L), nv;
  untrusted = 1;
  concur_lua_gc(L, LUA_GCSTOP, 0);
  int st = decode_in_coroutine(&view, at, nlen, 0, 0, &nv);
  untrusted = 0;
  strip_top(nv);
  concur_lua_gc(L, LUA_GCRESTART, 0);
  trace("damaged (kind %u, %zu of %zu bytes): %s", o->dkind % 5, nlen, len,
        st == LUA_OK ? "decoded" : lua_tostring(L, -1));
  if (st == LUA_OK && nv <= 64) {
    rt_opts again = *o;
    again.level = 1;
    again.inject = again.sblob = 0;
    roundtrip(base + 1, nv, nv == 1, &again);
  }
  lua_settop(L, base);
  free(exact);
}

/* Sends the n values at first..first+n-1 and checks everything that can be
 * checked about it.  Leaves the stack as it found it. */
static void roundtrip(int first, int n, int one_root, const rt_opts *o) {
  int base = lua_gettop(L);
  int exp = expectation(first, n, one_root);
  trace("level %d: %d value(s), expect %s", o->level, n, exp_names[exp]);
  if (exp == EXP_LOOP && skip_slice_loop)
    return;

  tbuf b = TBUF_INIT;
  char err[TRANSFER_ERRLEN];
  if (o->prefix == 1) {
    lua_pushliteral(L, "a message before");
    if (!transfer_encode(L, -1, 1, "p", 1, &b, err))
      die("prefix: %s", err);
    lua_pop(L, 1);
  } else if (o->prefix == 2 && nobjects > 3) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, objects_ref);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 4);
    if (!transfer_encode(L, -2, 2, "p", 0, &b, err))
      die("prefix: %s", err);
    lua_pop(L, 3);
  }
  size_t at = b.len, nobjs0 = b.nobjs;
  unsigned char *saved = xmalloc(at);
  if (at)
    memcpy(saved, b.data, at);
  unsigned char *copy = NULL;

  enc_call c;
  memset(&c, 0, sizeof c);
  c.b = &b;
  c.n = n;
  c.one_root = one_root;
  room(n + 8);
  lua_pushcfunction(L, enc_entry);
  lua_pushlightuserdata(L, &c);
  push_values(first, n);
  if (o->inject) {
    transfer_names_changed(L);    /* the name cache is rebuilt, and may fail */
    oom_arm(o->oomk);
  }
  int st = lua_pcall(L, n + 1, 0, 0);
  oom_disarm();
  trace("encode: %s", st != LUA_OK ? lua_tostring(L, -1) : c.ok ? "ok" : c.err);
  if (st != LUA_OK) {
    if (c.entered && !c.returned)
      die("transfer_encode raised an error (it must report, not raise): %s",
          lua_tostring(L, -1));
    goto done;   /* out of memory before the call began */
  }
  if (!c.ok) {
    if (b.len != at || b.nobjs != nobjs0 || (at && memcmp(b.data, saved, at) != 0))
      die("a refused encode changed the buffer (len %zu -> %zu, objects %zu -> %zu): %s",
          at, b.len, nobjs0, b.nobjs, c.err);
    if (!o->inject) {
      if (exp == EXP_OK)
        die("transfer_encode refused values that can cross: %s", c.err);
      if (exp == EXP_BAD && strncmp(c.err, "bad ", 4) != 0)
        die("expected a \"bad value\" error, got: %s", c.err);
      if ((exp == EXP_DEEP || exp == EXP_LOOP) && strstr(c.err, "nested too deeply") == NULL)
        die("expected a depth error, got: %s", c.err);
      if (exp == EXP_SLICE_DEEP && strncmp(c.err, "bad ", 4) != 0 &&
          strstr(c.err, "nested too deeply") == NULL)
        die("expected a depth or \"bad value\" error, got: %s", c.err);
    }
    goto done;
  }
  if (!o->inject && exp != EXP_OK && exp != EXP_SLICE_DEEP)
    die("transfer_encode accepted values it must refuse (%s)", exp_names[exp]);
  if (at && memcmp(b.data, saved, at) != 0)
    die("encoding changed the message before it in the buffer");

  /* The fresh message, from a copy of exactly its size. */
  size_t total = b.len, len = total - at;
  copy = xmalloc(total);
  memcpy(copy, b.data, total);
  tbuf view = {copy, total, total, b.objs, b.nobjs, b.objcap, NULL, b.pid};
  int nv;
  st = decode_in_coroutine(&view, at, len, o->inject, o->oomk, &nv);
  trace("decode %zu bytes at %zu: %s", len, at, st == LUA_OK ? "ok" : lua_tostring(L, -1));
  if (st != LUA_OK) {
    if (!o->inject)
      die("decoding a fresh message failed: %s", lua_tostring(L, -1));
  } else {
    if (nv != n)
      die("decoded %d values, sent %d", nv, n);
    check_equal(first, lua_gettop(L) - nv + 1, n, "the copy");
  }
  lua_settop(L, base);

  if (o->level == 0 && len > 0)
    decode_damaged(&b, at, len, o);

  /* Through a message in shared memory, as a Queue does. */
  if (o->sblob && at == 0) {
    sblob *s = sblob_from_tbuf(&b);      /* takes b's references, frees b */
    if (s != NULL) {
      sblob_call sc = {s, o->sblob_free};
      lua_pushcfunction(L, sblob_entry);
      lua_pushlightuserdata(L, &sc);
      if (o->inject)
        oom_arm(o->oomk);
      st = lua_pcall(L, 1, LUA_MULTRET, 0);
      oom_disarm();
      if (!o->sblob_free)
        sblob_free(s);
      if (st != LUA_OK) {
        if (!o->inject)
          die("decoding the shared-memory copy failed: %s", lua_tostring(L, -1));
      } else {
        nv = lua_gettop(L) - base;
        if (nv != n)
          die("decoded %d values from the blob, sent %d", nv, n);
        check_equal(first, base + 1, n, "the copy from shared memory");
      }
    }
  }
done:
  lua_settop(L, base);
  tbuf_free(&b);
  free(copy);
  free(saved);
}

/* ---- the modes ------------------------------------------------------------------ */

static uint32_t fnv1a(const uint8_t *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}

static void mode_raw(const uint8_t *data, size_t size) {
  unsigned char *msg = xmalloc(size - 1);
  memcpy(msg, data + 1, size - 1);
  tbuf view = {msg, size - 1, size - 1, NULL, 0, 0, NULL, concur_self};
  int base = lua_gettop(L), nv;
  concur_lua_gc(L, LUA_GCSTOP, 0);
  untrusted = 1;
  int st = decode_in_coroutine(&view, 0, size - 1, data[0] & 2, (long)(data[0] >> 2) * 4, &nv);
  untrusted = 0;
  strip_top(nv);
  concur_lua_gc(L, LUA_GCRESTART, 0);
  trace("mode A, %zu bytes: %s", size - 1, st == LUA_OK ? "decoded" : lua_tostring(L, -1));
  free(msg);
  if (st == LUA_OK && nv <= 64) {
    uint32_t h = fnv1a(data, size);
    rt_opts o;
    memset(&o, 0, sizeof o);
    o.dkind = h & 0xff;
    o.dpos = (h >> 8) & 0xffff;
    o.dval = h >> 24;
    roundtrip(base + 1, nv, nv == 1, &o);
  }
  lua_settop(L, base);
}

static long info_int(int info, const char *k) {
  lua_getfield(L, info, k);
  long v = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static void mode_program(const uint8_t *data, size_t size) {
  int base = lua_gettop(L);
  push_helper("build");
  lua_pushlstring(L, (const char *)data + 1, size - 1);
  concur_lua_gc(L, LUA_GCSTOP, 0);         /* the same values every time */
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  concur_lua_gc(L, LUA_GCRESTART, 0);
  if (st != LUA_OK)
    die("build raised: %s", lua_tostring(L, -1));
  int info = base + 1;
  rt_opts o;
  memset(&o, 0, sizeof o);
  o.prefix = (int)info_int(info, "prefix");
  o.inject = (int)info_int(info, "oom");
  o.oomk = info_int(info, "oomk");
  o.sblob = (int)info_int(info, "sblob");
  o.sblob_free = (int)info_int(info, "sblob_free");
  o.dkind = (unsigned)info_int(info, "dkind");
  o.dpos = (unsigned)info_int(info, "dpos");
  o.dval = (unsigned)info_int(info, "dval");
  if (!info_int(info, "trailer")) {   /* no damage said: some from the input */
    uint32_t h = fnv1a(data, size);
    o.dkind = h & 0xff;
    o.dpos = (h >> 8) & 0xffff;
    o.dval = h >> 24;
  }
  int n = (int)info_int(info, "n");
  if (lua_gettop(L) - info != n)
    die("build returned %d roots, said %d", lua_gettop(L) - info, n);
  roundtrip(info + 1, n, (int)info_int(info, "one_root"), &o);
  lua_settop(L, base);
}

/* ---- set-up ------------------------------------------------------------------------ */

/* LuaJIT's compiler is switched off: it only ever compiles the harness's
 * own Lua (the encoder and decoder are C), and with it on LeakSanitizer
 * reports blocks of LuaJIT's heap (lj_mem_realloc) as leaked, e.g. after
 * fuzz/crashes/slice-holds-itself: apparently the trace recorder's IR
 * buffer, which LuaJIT holds by a pointer biased below the block (lj_ir.c). */
static const char setup_lua[] =
  "package.path, package.cpath = '', ''\n"
  "local s = package.searchers or package.loaders   -- 5.1, LuaJIT: loaders\n"
  "for i = #s, 2, -1 do s[i] = nil end      -- package.preload only\n"
  "if jit then jit.off() end\n"
  "local concur = require 'concur'\n"
  "local objs = {concur.Lock(), concur.RLock(), concur.Event(), concur.Queue(),\n"
  "  concur.Semaphore(2), concur.Condition(), concur.Barrier(2),\n"
  "  concur.Thread{target = function() end}}\n"
  "local a, b = concur.Pipe()\n"
  "objs[#objs + 1] = a; objs[#objs + 1] = b\n"
  "return objs\n";

static void setup(void) {
  L = lua_newstate(fz_alloc, NULL);
  if (L == NULL)
    die("cannot make a Lua state");
  lua_atpanic(L, fz_panic);
  luaL_openlibs(L);
  luaL_requiref(L, "concur", luaopen_concur, 1);
  lua_pop(L, 1);
  /* A fixed key: the seeds' bytecode carries MACs the decoder accepts in
   * every run (mac_of); damaged chunks fail them. */
  mac_set_key(0x636f6e637572, 0x66757a7a);
  if (luaL_dostring(L, setup_lua) != LUA_OK)
    die("setup: %s", lua_tostring(L, -1));
  int objs = lua_gettop(L);

  /* The Lua half's argument: C helpers, the objects, bad values (the helpers
   * are C functions in no module: none is ever a generated value). */
  lua_createtable(L, 0, 8);
  lua_pushcfunction(L, is_concur);
  lua_setfield(L, -2, "is_concur");
  lua_pushcfunction(L, h_is_integer);
  lua_setfield(L, -2, "is_integer");
  lua_pushcfunction(L, h_rawlen);
  lua_setfield(L, -2, "rawlen");
  lua_pushcfunction(L, h_int64);
  lua_setfield(L, -2, "int64");
  lua_pushcfunction(L, h_float64);
  lua_setfield(L, -2, "float64");
  lua_pushvalue(L, objs);
  lua_setfield(L, -2, "objects");
  lua_createtable(L, 8, 0);
  memset(lua_newuserdatauv(L, sizeof(cobj_handle), 1), 0, sizeof(cobj_handle));
  luaL_newmetatable(L, "fuzz.foreign");     /* a handle-sized userdata, not concur's */
  lua_setmetatable(L, -2);
  lua_rawseti(L, -2, 1);
  lua_newuserdatauv(L, 1, 0);
  lua_rawseti(L, -2, 2);
  lua_pushlightuserdata(L, &helpers_ref);
  lua_rawseti(L, -2, 3);
  lua_pushinteger(L, 1);
  lua_pushcclosure(L, noop_cfunction, 1);    /* C closure in no module */
  lua_rawseti(L, -2, 4);
  lua_pushcfunction(L, noop_cfunction);      /* light C function in no module */
  lua_rawseti(L, -2, 5);
  lua_setfield(L, -2, "bad");
  if (luaL_loadbuffer(L, (const char *)fuzz_lua_source, sizeof fuzz_lua_source - 1,
                      "=fuzz_transfer.lua") != LUA_OK)
    die("%s", lua_tostring(L, -1));
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    die("fuzz_transfer.lua: %s", lua_tostring(L, -1));
  helpers_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  for (lua_Integer i = 1; lua_rawgeti(L, objs, i) != LUA_TNIL && nobjects < MAX_OBJECTS; i++) {
    objects[nobjects] = cobj_test(L, -1, NULL);
    if (objects[nobjects] == NULL)
      die("object %d is not concur's", (int)i);
    nobjects++;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  objects_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  /* Build the name cache once, C functions included, as any first send of a
   * C function does. */
  tbuf b = TBUF_INIT;
  char err[TRANSFER_ERRLEN];
  lua_getglobal(L, "string");
  lua_getfield(L, -1, "format");
  if (!transfer_encode(L, -2, 2, "w", 0, &b, err))
    die("warm-up: %s", err);
  tbuf_free(&b);
  lua_settop(L, 0);
  concur_lua_gc(L, LUA_GCCOLLECT, 0);
  for (int i = 0; i < nobjects; i++)
    objects_refs[i] = atomic_load(&objects[i]->refs);

  verbose = getenv("FUZZ_TRANSFER_VERBOSE") != NULL;
  stats = getenv("FUZZ_TRANSFER_STATS") != NULL;
  const char *skip = getenv("FUZZ_TRANSFER_SKIP");
  skip_slice_loop = skip && strstr(skip, "slice-loop") != NULL;
  guard_upvalues = skip && strstr(skip, "upvalue-count") != NULL;
  guard_chunks = skip && strstr(skip, "chunk-load") != NULL;
  check_growth = !(skip && strstr(skip, "alloc-ratio") != NULL);
}

/* ---- the seed corpus ------------------------------------------------------------- */

static void write_file(const char *dir, const char *prefix, const char *name, unsigned char mode,
                       const void *p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s%s", dir, prefix, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fputc(mode, f) == EOF || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
    die("cannot write %s: %s", path, strerror(errno));
}

static void write_seeds(const char *dir) {
  mkdir(dir, 0777);
  push_helper("seed_values");
  lua_call(L, 0, 1);
  for (lua_Integer i = 1; lua_rawgeti(L, 1, i) == LUA_TTABLE; i++) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    tbuf b = TBUF_INIT;
    char err[TRANSFER_ERRLEN];
    if (!transfer_encode(L, -1, 1, "v", 1, &b, err))
      die("seed %s: %s", lua_tostring(L, -2), err);
    write_file(dir, "a-", lua_tostring(L, -2), 0, b.data, b.len);
    tbuf_free(&b);
    lua_pop(L, 3);
  }
  lua_settop(L, 0);
  push_helper("seed_programs");
  lua_call(L, 0, 1);
  for (lua_Integer i = 1; lua_rawgeti(L, 1, i) == LUA_TTABLE; i++) {
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    write_file(dir, "b-", lua_tostring(L, -2), 1, p, n);
    lua_pop(L, 3);
  }
  lua_settop(L, 0);
}

/* ---- libFuzzer ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  CONCUR_UNUSED(argc);
  CONCUR_UNUSED(argv);
  setup();
  const char *seeds = getenv("FUZZ_TRANSFER_SEEDS");
  if (seeds && *seeds) {
    write_seeds(seeds);
    exit(0);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  if (data[0] & 1)
    mode_program(data, size);
  else
    mode_raw(data, size);
  lua_settop(L, 0);
  concur_lua_gc(L, LUA_GCCOLLECT, 0);
  if (stats) {
    static unsigned long runs;
    static size_t heap_peak;
    if (heap_top > heap_peak) {
      heap_peak = heap_top;
      fprintf(stderr, "stats: new Lua heap peak %zu KiB (input of %zu bytes, mode %c)\n",
              heap_peak >> 10, size, data[0] & 1 ? 'B' : 'A');
    }
    if (++runs % 2000 == 0)
      fprintf(stderr, "stats: %lu runs, Lua heap %zu KiB (peak %zu KiB)\n", runs,
              heap_used >> 10, heap_peak >> 10);
  }
  heap_top = heap_used;
  for (int i = 0; i < nobjects; i++) {
    long now = atomic_load(&objects[i]->refs);
    if (now != objects_refs[i])
      die("the reference count of a %s went from %ld to %ld", objects[i]->type->name,
          objects_refs[i], now);
  }
  return 0;
}
