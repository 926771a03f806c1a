/*
 * shared.c - concur.Value and concur.Array: numbers in the arena, read and
 * written by every thread and process of the family without a lock.
 *
 * A Value is one 64-bit word and the kind it was made with (integer, float,
 * boolean); an Array is n words of one kind (or n bytes).  Every access is
 * one atomic load, store, fetch-add or compare-and-swap, so a process killed
 * in the middle of any call leaves the word either as it was or as the call
 * made it: there is nothing to repair.  A float is kept as its bits; adding
 * to it is a compare-and-swap loop.  Integers wrap as Lua's do (two's
 * complement: C11's atomic fetch-add on a signed type is defined to).
 *
 * Python's get_lock(): each object holds a reference to an RLock (its own,
 * made with it, or one given to the constructor), which its calls never
 * take; it is there for the user's compound updates (`v:with(fn)`).
 *
 * Indexing: `v.value` and `a[i]` are __index/__newindex closures whose
 * upvalue 2 is the methods table: a string key is a method (or nil), an
 * integer key an element.  No Lua call is made while anything is held.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "shared.h"
#include "sync.h"

enum { K_INT, K_FLOAT, K_BOOL, K_BYTE };
static const char *const kind_names[] = {"int", "float", "bool", "byte"};

/* The words that change sit at least a cache line away from the fields every
 * call reads (the type, the kind, the size): two processes adding to one
 * Value then pass one line between them, not two. */
#define LINE 64

typedef struct value_obj {
  cobj hdr;
  cobj *lock;                  /* a Lock or RLock (a reference); NULL: made with lock = false */
  uint32_t kind;
  char gap[LINE];
  _Atomic int64_t word;        /* the integer, the float's bits, or 0/1 */
  char tail[LINE - sizeof(int64_t)];
} value_obj;

typedef struct array_obj {
  cobj hdr;
  cobj *lock;
  uint32_t kind;
  size_t n;
  char gap[LINE];
  union {                      /* n elements of the kind (a flexible array) */
    _Atomic int64_t w[1];
    _Atomic uint8_t b[1];
  } e;
} array_obj;

static void value_destroy(cobj *o) {
  value_obj *v = (value_obj *)o;
  if (v->lock)
    cobj_decref(v->lock);
  shm_free(o);
}

static void array_destroy(cobj *o) {
  array_obj *a = (array_obj *)o;
  if (a->lock)
    cobj_decref(a->lock);
  shm_free(o);
}

static void value_meta(lua_State *L);
static void array_meta(lua_State *L);
static const cobj_type value_type = {"concur.Value", value_destroy, NULL, 1, value_meta, NULL, NULL, NULL};
static const cobj_type array_type = {"concur.Array", array_destroy, NULL, 1, array_meta, NULL, NULL, NULL};

/* ---- words and Lua values ------------------------------------------------------ */

static inline int64_t dbits(double d) {
  int64_t w;
  memcpy(&w, &d, sizeof w);
  return w;
}

static inline double bitsd(int64_t w) {
  double d;
  memcpy(&d, &w, sizeof d);
  return d;
}

static void push_word(lua_State *L, uint32_t kind, int64_t w) {
  switch (kind) {
  case K_FLOAT: lua_pushnumber(L, bitsd(w)); break;
  case K_BOOL: lua_pushboolean(L, w != 0); break;
  default: lua_pushinteger(L, (lua_Integer)w); break;
  }
}

/* The word for the value at idx, or raises "bad argument #argn to 'fname'
 * (what: ...)" (what may be "" or "element 3: "). */
static int64_t check_word(lua_State *L, int idx, uint32_t kind, int argn, const char *fname,
                          const char *what) {
  int t = lua_type(L, idx);
  switch (kind) {
  case K_FLOAT:
    if (t == LUA_TNUMBER)
      return dbits((double)lua_tonumber(L, idx));
    break;
  case K_BOOL:
    if (t == LUA_TBOOLEAN)
      return lua_toboolean(L, idx);
    return luaL_error(L, "bad argument #%d to '%s' (%sboolean expected, got %s)", argn, fname, what,
                      cobj_typename(L, idx));
  default:
    if (t == LUA_TNUMBER) {
      int isint;
      lua_Integer i = lua_tointegerx(L, idx, &isint);
      if (!isint)
        return luaL_error(L, "bad argument #%d to '%s' (%snumber has no integer representation)",
                          argn, fname, what);
      if (kind == K_BYTE && (i < 0 || i > 255))
        return luaL_error(L, "bad argument #%d to '%s' (%sbyte out of range (0..255))", argn,
                          fname, what);
      return (int64_t)i;
    }
    break;
  }
  return luaL_error(L, "bad argument #%d to '%s' (%s%s expected, got %s)", argn, fname, what,
                    kind == K_FLOAT ? "number" : "integer", cobj_typename(L, idx));
}

/* Adds the number at idx to the word *w of `kind` atomically; returns the
 * new word.  Integers and bytes wrap. */
static int64_t add_word(lua_State *L, int idx, uint32_t kind, _Atomic int64_t *w, int argn,
                        const char *fname) {
  if (kind == K_BOOL)
    luaL_error(L, "calling '%s' on a boolean Value (cannot add to a boolean)", fname);
  int64_t d = check_word(L, idx, kind == K_BYTE ? K_INT : kind, argn, fname, "");
  if (kind == K_FLOAT) {
    int64_t old = atomic_load_explicit(w, memory_order_relaxed), nw;
    do
      nw = dbits(bitsd(old) + bitsd(d));
    while (!atomic_compare_exchange_weak(w, &old, nw));
    return nw;
  }
  return (int64_t)((uint64_t)atomic_fetch_add(w, d) + (uint64_t)d);
}

/* The kind of a typecode or kind name at idx; -1 when it is neither.
 * Python's 'b' is a boolean for a Value (API.md), a signed byte's integer
 * for an Array. */
static int kind_of(const char *s, int for_array) {
  static const char *const names[] = {"int", "float", "bool", "boolean", "byte", NULL};
  static const int kinds[] = {K_INT, K_FLOAT, K_BOOL, K_BOOL, K_BYTE};
  for (int i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0)
      return (for_array ? kinds[i] != K_BOOL : kinds[i] != K_BYTE) ? kinds[i] : -1;
  if (s[0] == 0 || s[1] != 0)
    return -1;
  if (strchr("hilqHILQ", s[0]))
    return K_INT;
  if (strchr("df", s[0]))
    return K_FLOAT;
  if (s[0] == 'b')
    return for_array ? K_INT : K_BOOL;
  if (s[0] == 'B')
    return for_array ? K_BYTE : K_INT;
  if (s[0] == 'c')
    return for_array ? K_BYTE : -1;
  if (s[0] == '?')
    return for_array ? -1 : K_BOOL;
  return -1;
}

/* The lock argument at idx of constructor fname, checked before anything is
 * made: nil or true -> NULL (make an RLock), false -> NULL and *none set, a
 * Lock or RLock -> that one. */
static cobj *lock_given(lua_State *L, int idx, const char *fname, int *none) {
  *none = lua_type(L, idx) == LUA_TBOOLEAN && !lua_toboolean(L, idx);
  if (lua_isnoneornil(L, idx) || lua_type(L, idx) == LUA_TBOOLEAN)
    return NULL;
  cobj *l = cobj_test(L, idx, NULL);
  if (l == NULL || !sync_is_lock(l))
    luaL_error(L, "bad argument #%d to '%s' (lock: boolean, concur.Lock or concur.RLock expected, got %s)",
               idx, fname, cobj_typename(L, idx));
  return l;
}

/* The lock of a new object o (its handle on top, still empty): the given
 * one (a reference taken), a new RLock, or none.  Frees o and raises when
 * the arena is full. */
static cobj *lock_attach(lua_State *L, void *o, cobj *given, int none, const char *fname) {
  if (none)
    return NULL;
  if (given) {
    cobj_incref(given);
    return given;
  }
  cobj *l = sync_rlock_make();
  if (l == NULL) {
    shm_free(o);
    luaL_error(L, "cannot make a %s: the shared memory arena is full", fname);
  }
  return l;
}

static int push_lock(lua_State *L, cobj *lock, const char *what) {
  if (lock == NULL)
    return luaL_error(L, "this %s has no lock (made with lock = false)", what);
  cobj_push(L, lock);
  return 1;
}

/* obj:with(fn, ...): lock:with(fn, ...) on the object's lock. */
static int with_lock(lua_State *L, cobj *lock, const char *what) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  push_lock(L, lock, what);
  lua_replace(L, 1);
  return sync_with_body(L);
}

/* ---- Value ------------------------------------------------------------------------ */

/* concur.Value(init) or Value(typecode, [init], [lock]). */
static int value_new(lua_State *L) {
  cobj_no_more_args(L, 3, "Value");
  int kind, vidx = 1;
  if (lua_type(L, 1) == LUA_TSTRING) {
    kind = kind_of(lua_tostring(L, 1), 0);
    if (kind < 0)
      return luaL_error(L, "bad argument #1 to 'Value' (unknown typecode '%s')", lua_tostring(L, 1));
    vidx = 2;
    if (lua_tostring(L, 1)[0] == 'b' && lua_tostring(L, 1)[1] == 0 && lua_type(L, 2) == LUA_TNUMBER)
      kind = K_INT;   /* Python's signed char, given a number */
  } else if (lua_type(L, 1) == LUA_TNUMBER) {
    kind = lua_isinteger(L, 1) ? K_INT : K_FLOAT;
  } else if (lua_type(L, 1) == LUA_TBOOLEAN) {
    kind = K_BOOL;
  } else {
    return luaL_error(L, "bad argument #1 to 'Value' (number, boolean or typecode expected, got %s)",
                      cobj_typename(L, 1));
  }
  if (vidx == 1 && !lua_isnone(L, 2))
    return luaL_error(L, "bad argument #2 to 'Value' (no value expected)");
  int64_t w = lua_isnoneornil(L, vidx) ? (kind == K_FLOAT ? dbits(0.0) : 0)
                                       : check_word(L, vidx, (uint32_t)kind, vidx, "Value", "");
  int none = 0;
  cobj *given = vidx == 2 ? lock_given(L, 3, "Value", &none) : NULL;
  value_obj *v = cobj_new_shared(L, &value_type, sizeof *v);
  v->kind = (uint32_t)kind;
  atomic_store(&v->word, w);
  v->lock = lock_attach(L, v, given, none, "Value");
  cobj_bind(L, -1, &v->hdr);
  return 1;
}

/* (Out of line: gcc 12 takes the arena pointer for a 0-byte region when the
 * load is inlined into the __index closure, a false stringop-overflow.) */
__attribute__((noinline)) static int64_t value_load(value_obj *v) { return atomic_load(&v->word); }

static int value_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
    return 1;
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k && strcmp(k, "value") == 0) {
    value_obj *v = cobj_self(L);
    push_word(L, v->kind, value_load(v));
  }
  return 1;   /* nil for anything else */
}

static int value_newindex(lua_State *L) {
  value_obj *v = cobj_self(L);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k == NULL || strcmp(k, "value") != 0)
    return luaL_error(L, "concur.Value has no attribute '%s' to set (only 'value')",
                      k ? k : luaL_typename(L, 2));
  atomic_store(&v->word, check_word(L, 3, v->kind, 3, "value", ""));
  return 0;
}

static int value_add(lua_State *L) {
  value_obj *v = cobj_self_fast(L, &value_type);
  method_no_more_args(L, 2, "add");
  push_word(L, v->kind, add_word(L, 2, v->kind, &v->word, 1, "add"));
  return 1;
}

/* v:cas(expected, new): a float compares by its bits, but for 0.0 and -0.0,
 * which are equal: so a NaN read from the Value matches itself, and a loop
 * `repeat local o = v.value until v:cas(o, f(o))` always ends. */
static int value_cas(lua_State *L) {
  value_obj *v = cobj_self(L);
  method_no_more_args(L, 3, "cas");
  int64_t want = check_word(L, 2, v->kind, 1, "cas", "");
  int64_t nw = check_word(L, 3, v->kind, 2, "cas", "");
  if (v->kind != K_FLOAT) {
    lua_pushboolean(L, atomic_compare_exchange_strong(&v->word, &want, nw));
    return 1;
  }
  int64_t old = atomic_load(&v->word);
  while (old == want || (bitsd(old) == 0.0 && bitsd(want) == 0.0)) {
    if (atomic_compare_exchange_weak(&v->word, &old, nw)) {
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  lua_pushboolean(L, 0);
  return 1;
}

static int value_get_lock(lua_State *L) {
  value_obj *v = cobj_self(L);
  return push_lock(L, v->lock, "Value");
}

static int value_with(lua_State *L) {
  value_obj *v = cobj_self(L);
  return with_lock(L, v->lock, "Value");
}

static int value_tostring(lua_State *L) {
  value_obj *v = cobj_self(L);
  lua_pushliteral(L, "concur.Value(");
  push_word(L, v->kind, value_load(v));
  luaL_tolstring(L, -1, NULL);
  lua_remove(L, -2);
  lua_pushliteral(L, ")");
  lua_concat(L, 3);
  return 1;
}

/* ---- Array ------------------------------------------------------------------------- */

#define ARRAY_MAX ((size_t)1 << 40)

static size_t elem_size(uint32_t kind) { return kind == K_BYTE ? 1 : 8; }

/* An integer as lua_pushfstring cannot print on every runtime (no %I
 * before 5.3; %f prints 3.0 on 5.3). */
static const char *int_str(char buf[24], uint64_t n) {
  snprintf(buf, 24, "%llu", (unsigned long long)n);
  return buf;
}

/* concur.Array(kind, n_or_list, [lock]) */
static int array_new(lua_State *L) {
  cobj_no_more_args(L, 3, "Array");
  const char *ks = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
  if (ks == NULL)
    return luaL_error(L, "bad argument #1 to 'Array' (kind expected: \"int\", \"float\" or \"byte\", got %s)",
                      cobj_typename(L, 1));
  int kind = kind_of(ks, 1);
  if (kind < 0)
    return luaL_error(L, "bad argument #1 to 'Array' (unknown kind '%s': \"int\", \"float\", \"byte\" or a typecode)", ks);
  size_t n;
  int t = lua_type(L, 2);
  if (t == LUA_TNUMBER) {
    int isint;
    lua_Integer i = lua_tointegerx(L, 2, &isint);
    if (!isint || i < 0 || (uint64_t)i > ARRAY_MAX)
      return luaL_error(L, "bad argument #2 to 'Array' (size out of range)");
    n = (size_t)i;
  } else if (t == LUA_TTABLE) {
    n = (size_t)lua_rawlen(L, 2);
  } else if (t == LUA_TSTRING && kind == K_BYTE) {
    n = (size_t)lua_rawlen(L, 2);
  } else {
    return luaL_error(L, "bad argument #2 to 'Array' (size or list expected, got %s)",
                      cobj_typename(L, 2));
  }
  /* Check every element before anything is made. */
  if (t == LUA_TTABLE) {
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, (lua_Integer)i);
      char what[48];
      snprintf(what, sizeof what, "element %zu: ", i);
      check_word(L, -1, (uint32_t)kind, 2, "Array", what);
      lua_pop(L, 1);
    }
  }
  int none;
  cobj *given = lock_given(L, 3, "Array", &none);
  size_t size = offsetof(array_obj, e) + (n ? n : 1) * elem_size((uint32_t)kind);
  array_obj *a = cobj_new_shared(L, &array_type, size);   /* zeroed */
  a->kind = (uint32_t)kind;
  a->n = n;
  a->lock = lock_attach(L, a, given, none, "Array");
  if (t == LUA_TSTRING) {
    memcpy((void *)a->e.b, lua_tostring(L, 2), n);
  } else if (t == LUA_TTABLE) {
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, (lua_Integer)i);
      int64_t w = check_word(L, -1, (uint32_t)kind, 2, "Array", "");   /* checked: cannot raise */
      lua_pop(L, 1);
      if (kind == K_BYTE)
        atomic_store_explicit(&a->e.b[i - 1], (uint8_t)w, memory_order_relaxed);
      else
        atomic_store_explicit(&a->e.w[i - 1], w, memory_order_relaxed);
    }
  }
  if (kind == K_FLOAT && t == LUA_TNUMBER) {
    for (size_t i = 0; i < n; i++)   /* 0.0 is all zero bits already; kept explicit */
      atomic_store_explicit(&a->e.w[i], dbits(0.0), memory_order_relaxed);
  }
  cobj_bind(L, -1, &a->hdr);
  return 1;
}

/* The element index at idx (1-based) as a 0-based one, or raises "bad
 * argument #argn to 'fname' (...)". */
static size_t array_at(lua_State *L, array_obj *a, int idx, int argn, const char *fname) {
  int isint;
  lua_Integer i = lua_tointegerx(L, idx, &isint);
  if (!isint || lua_type(L, idx) != LUA_TNUMBER) {
    if (lua_type(L, idx) == LUA_TNUMBER)
      luaL_error(L, "bad argument #%d to '%s' (index has no integer representation)", argn, fname);
    luaL_error(L, "bad argument #%d to '%s' (index: integer expected, got %s)", argn, fname,
               cobj_typename(L, idx));
  }
  if (i < 1 || (uint64_t)i > a->n) {
    char n[24];
    luaL_error(L, "bad argument #%d to '%s' (index %s out of range (1..%s))", argn, fname,
               lua_tostring(L, idx), int_str(n, a->n));
  }
  return (size_t)(i - 1);
}

static inline int64_t array_load(array_obj *a, size_t i) {
  if (a->kind == K_BYTE)
    return atomic_load_explicit(&a->e.b[i], memory_order_relaxed);
  return atomic_load_explicit(&a->e.w[i], memory_order_relaxed);
}

static int array_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TNUMBER) {
    array_obj *a = cobj_self_fast(L, &array_type);
    push_word(L, a->kind, array_load(a, array_at(L, a, 2, 2, "index")));
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));
  return 1;   /* a method, or nil */
}

static int array_newindex(lua_State *L) {
  array_obj *a = cobj_self_fast(L, &array_type);
  if (lua_type(L, 2) != LUA_TNUMBER)
    return luaL_error(L, "bad argument #2 to 'newindex' (index: integer expected, got %s)",
                      cobj_typename(L, 2));
  size_t i = array_at(L, a, 2, 2, "newindex");
  int64_t w = check_word(L, 3, a->kind, 3, "newindex", "");
  if (a->kind == K_BYTE)
    atomic_store_explicit(&a->e.b[i], (uint8_t)w, memory_order_relaxed);
  else
    atomic_store_explicit(&a->e.w[i], w, memory_order_relaxed);
  return 0;
}

static int array_len(lua_State *L) {
  array_obj *a = cobj_self(L);
  lua_pushinteger(L, (lua_Integer)a->n);
  return 1;
}

static int array_add(lua_State *L) {
  array_obj *a = cobj_self_fast(L, &array_type);
  method_no_more_args(L, 3, "add");
  size_t i = array_at(L, a, 2, 1, "add");
  if (a->kind != K_BYTE) {
    push_word(L, a->kind, add_word(L, 3, a->kind, &a->e.w[i], 2, "add"));
    return 1;
  }
  int64_t d = check_word(L, 3, K_INT, 2, "add", "");
  uint8_t old = atomic_fetch_add(&a->e.b[i], (uint8_t)d);
  lua_pushinteger(L, (uint8_t)(old + (uint8_t)d));
  return 1;
}

static int array_totable(lua_State *L) {
  array_obj *a = cobj_self(L);
  if (a->n > (size_t)INT32_MAX)
    return luaL_error(L, "concur.Array too long for a Lua table");
  lua_createtable(L, (int)a->n, 0);
  for (size_t i = 0; i < a->n; i++) {
    push_word(L, a->kind, array_load(a, i));
    lua_rawseti(L, -2, (lua_Integer)(i + 1));
  }
  return 1;
}

static int array_get_lock(lua_State *L) {
  array_obj *a = cobj_self(L);
  return push_lock(L, a->lock, "Array");
}

static int array_with(lua_State *L) {
  array_obj *a = cobj_self(L);
  return with_lock(L, a->lock, "Array");
}

static int array_tostring(lua_State *L) {
  array_obj *a = cobj_self(L);
  char n[24];
  lua_pushfstring(L, "concur.Array(%s, %s)", kind_names[a->kind], int_str(n, a->n));
  return 1;
}

/* ---- metatables ----------------------------------------------------------------------- */

static void value_meta(lua_State *L) {
  static const luaL_Reg methods[] = {{"add", value_add}, {"cas", value_cas},
                                     {"get_lock", value_get_lock}, {"with", value_with},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__tostring", value_tostring}, {NULL, NULL}};
  cobj_indexed_metatable(L, &value_type, methods, meta, value_index, value_newindex);
}

static void array_meta(lua_State *L) {
  static const luaL_Reg methods[] = {{"add", array_add}, {"totable", array_totable},
                                     {"get_lock", array_get_lock}, {"with", array_with},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__tostring", array_tostring}, {"__len", array_len},
                                  {NULL, NULL}};
  cobj_indexed_metatable(L, &array_type, methods, meta, array_index, array_newindex);
}

void shared_open(lua_State *L) {
  static const luaL_Reg funcs[] = {{"Value", value_new}, {"Array", array_new}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
