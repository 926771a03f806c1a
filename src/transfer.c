/*
 * transfer.c - moving Lua values between lua_States (API.md, "Moving values
 * between Lua states").
 *
 * One encoder writes values into one flat byte buffer (a tbuf); one decoder
 * rebuilds them in another state.  The bytes hold no pointers: concur objects
 * are referenced by their index in the tbuf's object list, which owns one
 * reference to each.  Format (all integers are LEB128 varints unless said):
 *
 *   message  := count value*
 *   value    := NIL | FALSE | TRUE | INT zigzag | FLOAT f64le | STR len bytes
 *             | TABLE narr nrec(u32le) value{narr} (value value){nrec} value(metatable or NIL)
 *             | FUNC len(u32le) bytecode mac(u64le) nups(u8) upval{nups}
 *             | REF offset            -- a table or function already decoded
 *             | MODULE str | FIELD str str | REG str str   -- looked up by name
 *             | OBJ index             -- the tbuf's objs[index]
 *             | KEYSTR len bytes      -- a short string table key, numbered
 *             | STRREF n              -- the n-th KEYSTR again (0-based)
 *   upval    := value | GLOBALS | UPJOIN offset index(u8)
 *
 * TABLE and FUNC become TABLE_SHARED / FUNC_SHARED (patched in place) when a
 * later REF or UPJOIN points at them; offsets count from the message start.
 * The decoder only remembers shared ones.
 *
 * The encoder runs no Lua code and allocates nothing in the Lua state, so it
 * never raises: it reports failure to its caller, which cleans up and then
 * raises (STYLE: never raise between two halves of an update).  The name
 * cache it reads (value -> module name) is rebuilt beforehand in protected
 * mode.  The decoder may raise; it never trusts a length, offset or index.
 *
 * Bytecode is authenticated: Lua does not verify a binary chunk, and loading
 * a damaged or foreign one can crash the process, so every FUNC carries a
 * keyed MAC of its bytecode (SipHash-2-4, mac_of) and the decoder loads
 * only a chunk whose MAC holds.  The key is random, made once per process
 * family when concur opens (mac_runtime_init, before any fork), so only
 * concur's own encoder in this family can write a chunk that loads.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transfer.h"

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE, T_TABLE_SHARED,
  T_FUNC, T_FUNC_SHARED, T_REF, T_MODULE, T_FIELD, T_REG, T_OBJ, T_GLOBALS,
  T_UPJOIN, T_KEYSTR, T_STRREF
};

#define MAX_DEPTH 1000     /* nesting of tables/functions in one message */
#define PATH_SEGS 48       /* path segments kept for error messages */

/* ---- a small pointer map for the encoder ------------------------------- */

typedef struct pmap_slot {
  const void *key;
  uint64_t val;
} pmap_slot;

typedef struct pmap {
  pmap_slot *slots;
  size_t cap, used;       /* cap is a power of two */
  pmap_slot inline_slots[32];
} pmap;

/* Empty until the first put, so that messages without tables cost nothing. */
static void pmap_init(pmap *m) {
  m->slots = NULL;
  m->cap = 0;
  m->used = 0;
}

static void pmap_free(pmap *m) {
  if (m->slots != m->inline_slots)
    free(m->slots);
}

static inline int pmap_get(pmap *m, const void *key, uint64_t *val);

/* Tables made one after another sit at nearby addresses, and a large message
 * visits them in that order.  The hash keeps addresses of one 1 MiB block in
 * order (slots follow each other: the cache and prefetcher see a sweep, not
 * random probes into a map of megabytes) and gives each block a scrambled
 * offset, so that separate blocks do not pile up on the same slots. */
static size_t pmap_hash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p >> 4;
  return (size_t)(x + (x >> 16) * 0x9e3779b97f4a7c15ULL);
}

static pmap_slot *pmap_find(pmap *m, const void *key) {
  size_t mask = m->cap - 1;
  for (size_t i = pmap_hash(key) & mask;; i = (i + 1) & mask)
    if (m->slots[i].key == key || m->slots[i].key == NULL)
      return &m->slots[i];
}

static inline int pmap_get(pmap *m, const void *key, uint64_t *val) {
  if (m->cap == 0)
    return 0;
  pmap_slot *s = pmap_find(m, key);
  if (s->key == NULL)
    return 0;
  *val = s->val;
  return 1;
}

static int pmap_put(pmap *m, const void *key, uint64_t val);

/* One probe sequence for "seen before?" and "remember it": returns 1 with
 * *val set to the stored value if key is there, else stores *val and
 * returns 0; -1 when out of memory. */
static int pmap_get_or_put(pmap *m, const void *key, uint64_t *val) {
  if (m->cap != 0 && (m->used + 1) * 2 <= m->cap) {
    pmap_slot *s = pmap_find(m, key);
    if (s->key) {
      *val = s->val;
      return 1;
    }
    s->key = key;
    s->val = *val;
    m->used++;
    return 0;
  }
  if (pmap_get(m, key, val))
    return 1;
  return pmap_put(m, key, *val) ? 0 : -1;
}

static int pmap_put(pmap *m, const void *key, uint64_t val) {
  if (m->cap == 0) {
    m->slots = m->inline_slots;
    m->cap = sizeof m->inline_slots / sizeof m->inline_slots[0];
    memset(m->inline_slots, 0, sizeof m->inline_slots);
  }
  if ((m->used + 1) * 2 > m->cap) {     /* load at most 1/2: short probes */
    size_t ncap = m->cap * 2;
    pmap_slot *ns = calloc(ncap, sizeof *ns);
    if (ns == NULL)
      return 0;
    pmap old = *m;
    m->slots = ns;
    m->cap = ncap;
    for (size_t i = 0; i < old.cap; i++)
      if (old.slots[i].key)
        *pmap_find(m, old.slots[i].key) = old.slots[i];
    if (old.slots != m->inline_slots)
      free(old.slots);
  }
  pmap_slot *s = pmap_find(m, key);
  if (s->key == NULL)
    m->used++;
  s->key = key;
  s->val = val;
  return 1;
}

/* ---- encoder ----------------------------------------------------------- */

enum { SEG_INDEX, SEG_KEY, SEG_KEYITSELF, SEG_UPVALUE, SEG_METATABLE };

typedef struct pathseg {
  int kind;
  int stack_idx;           /* SEG_KEY, SEG_KEYITSELF: where the key sits */
  lua_Integer index;       /* SEG_INDEX */
  const char *name;        /* SEG_UPVALUE */
} pathseg;

typedef struct enc {
  lua_State *L;
  tbuf *b;
  size_t base;             /* offset of the message in b->data */
  int names;               /* stack index of the name cache */
  int globals;             /* stack index of the globals table */
  int depth;
  int room;                /* the stack has room up to this index */
  int failed, cfunc_miss, oom;
  const state_ctx *ctx;    /* for its `named` set */
  const uint64_t *mackey;  /* bytecode MAC key; NULL: the family's */
  int remote;              /* for another machine: concur objects refused */
  pmap seen;               /* table/function -> offset of its tag */
  pmap upvals;             /* upvalue id -> offset << 8 | upvalue index */
  pmap keystrs;            /* short key string -> its KEYSTR number */
  uint64_t nkeystrs;
  struct { const char *s; uint64_t n; } keycache[16];  /* in front of keystrs */
  pathseg path[PATH_SEGS];
  const char *root;
  char *err;
} enc;

/* Grows the buffer to hold n more bytes; 0 (and oom) when it cannot. */
static int enc_grow(enc *e, size_t n) {
  tbuf *b = e->b;
  size_t ncap = b->cap ? b->cap : 64;
  while (ncap - b->len < n) {
    if (ncap > SIZE_MAX / 2) {
      e->oom = 1;
      return 0;
    }
    ncap *= 2;
  }
  unsigned char *nd = realloc(b->data, ncap);
  if (nd == NULL) {
    e->oom = 1;
    return 0;
  }
  b->data = nd;
  b->cap = ncap;
  return 1;
}

static inline int enc_reserve(enc *e, size_t n) {
  return e->b->cap - e->b->len >= n || enc_grow(e, n);
}

#define ENC_FAIL_OOM(e) ((e)->oom = 1, (e)->failed = 1, 0)

/* The writers below are on the hot path of every value: inline, one
 * capacity check each. */
static inline int put_byte(enc *e, unsigned char c) {
  if (!enc_reserve(e, 1))
    return ENC_FAIL_OOM(e);
  e->b->data[e->b->len++] = c;
  return 1;
}

static inline int put_bytes(enc *e, const void *p, size_t n) {
  if (!enc_reserve(e, n))
    return ENC_FAIL_OOM(e);
  if (n)
    memcpy(e->b->data + e->b->len, p, n);
  e->b->len += n;
  return 1;
}

/* Writes v as a varint at p (room for 10 bytes); returns its length. */
static inline size_t varint_at(unsigned char *p, uint64_t v) {
  unsigned char *start = p;
  while (v >= 0x80) {
    *p++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *p++ = (unsigned char)v;
  return (size_t)(p - start);
}

static inline int put_varint(enc *e, uint64_t v) {
  if (!enc_reserve(e, 10))
    return ENC_FAIL_OOM(e);
  e->b->len += varint_at(e->b->data + e->b->len, v);
  return 1;
}

/* A tag and a varint, the most common pair. */
static inline int put_tag_varint(enc *e, unsigned char tag, uint64_t v) {
  if (!enc_reserve(e, 11))
    return ENC_FAIL_OOM(e);
  unsigned char *p = e->b->data + e->b->len;
  *p = tag;
  e->b->len += 1 + varint_at(p + 1, v);
  return 1;
}

static inline int put_u32(enc *e, uint32_t v) {
  unsigned char tmp[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                          (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  return put_bytes(e, tmp, 4);
}

static void patch_u32(enc *e, size_t at, uint32_t v) {
  unsigned char *p = e->b->data + at;
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static void path_push(enc *e, int kind, int stack_idx, lua_Integer index, const char *name) {
  if (e->depth < PATH_SEGS) {
    pathseg *s = &e->path[e->depth];
    s->kind = kind;
    s->stack_idx = stack_idx;
    s->index = index;
    s->name = name;
  }
  e->depth++;
}

static int is_ident_char(char c, int first) {
  return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (!first && c >= '0' && c <= '9');
}

static int is_identifier(const char *s, size_t len) {
  if (len == 0 || len > 40)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (!is_ident_char(s[i], i == 0))
      return 0;
  return 1;
}

/* Appends to dst (size TRANSFER_ERRLEN) without allocating in Lua. */
static void err_cat(char *dst, const char *src, size_t n) {
  size_t have = strlen(dst);
  if (have + n >= TRANSFER_ERRLEN - 1)
    n = TRANSFER_ERRLEN - 2 - have;
  memcpy(dst + have, src, n);
  dst[have + n] = 0;
}

/* Appends the key at idx to the path in dst, which starts `prefix` bytes in. */
static void err_catf_key(enc *e, char *dst, size_t prefix, int idx) {
  lua_State *L = e->L;
  char tmp[64];
  size_t len;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    const char *s = lua_tolstring(L, idx, &len);  /* a string: no conversion */
    if (is_identifier(s, len)) {
      if (strlen(dst) > prefix)
        err_cat(dst, ".", 1);
      err_cat(dst, s, len > 40 ? 40 : len);
    } else {
      err_cat(dst, "[\"", 2);
      err_cat(dst, s, len > 40 ? 40 : len);
      err_cat(dst, "\"]", 2);
    }
    return;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(tmp, sizeof tmp, "[%lld]", (long long)lua_tointeger(L, idx));
    else
      snprintf(tmp, sizeof tmp, "[%.14g]", (double)lua_tonumber(L, idx));
    break;
  case LUA_TBOOLEAN:
    snprintf(tmp, sizeof tmp, "[%s]", lua_toboolean(L, idx) ? "true" : "false");
    break;
  default:
    snprintf(tmp, sizeof tmp, "[<%s>]", lua_typename(L, lua_type(L, idx)));
  }
  err_cat(dst, tmp, strlen(tmp));
}

static const char *type_label(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TTHREAD: return "coroutine";
  case LUA_TLIGHTUSERDATA: return "light userdata";
  case LUA_TFUNCTION: return "C function not found in any loaded module";
  default: return lua_typename(L, lua_type(L, idx));
  }
}

/* Records the failure of the value at idx, naming where it sits and, in
 * parentheses, what it is (label; NULL: its type). */
static void enc_path_cat(enc *e, char *d, int is_key);

/* Whether the value at idx failing now is the key of the innermost path
 * segment (the message then says "bad key at"). */
static int enc_at_key(const enc *e, int idx) {
  return e->depth > 0 && e->depth <= PATH_SEGS && e->path[e->depth - 1].kind == SEG_KEYITSELF &&
         e->path[e->depth - 1].stack_idx == idx;
}

static int enc_fail_as(enc *e, int idx, const char *label) {
  char *d = e->err;
  if (e->failed)
    return 0;
  int is_key = enc_at_key(e, idx);
  e->failed = 1;
  d[0] = 0;
  err_cat(d, is_key ? "bad key at " : "bad value at ", is_key ? 11 : 13);
  enc_path_cat(e, d, is_key);
  err_cat(d, " (", 2);
  if (label == NULL)
    label = type_label(e->L, idx);
  err_cat(d, label, strlen(label));
  err_cat(d, ")", 1);
  return 0;
}

/* A concur object met while encoding for another machine (core.encode):
 * "cannot send a concur.Queue to another machine (args[2].q)". */
static int enc_fail_remote(enc *e, int idx, const char *tname) {
  char *d = e->err;
  if (e->failed)
    return 0;
  int is_key = enc_at_key(e, idx);
  e->failed = 1;
  d[0] = 0;
  err_cat(d, "cannot send a ", 14);
  err_cat(d, tname, strlen(tname));
  err_cat(d, " to another machine (", 21);
  if (is_key)
    err_cat(d, "key in ", 7);
  enc_path_cat(e, d, is_key);
  err_cat(d, ")", 1);
  return 0;
}

/* Appends the path of the value being encoded to d. */
static void enc_path_cat(enc *e, char *d, int is_key) {
  size_t prefix = strlen(d);
  err_cat(d, e->root, strlen(e->root));
  int shown = e->depth < PATH_SEGS ? e->depth : PATH_SEGS;
  for (int i = 0; i < shown; i++) {
    pathseg *s = &e->path[i];
    char tmp[80];
    switch (s->kind) {
    case SEG_INDEX:
      snprintf(tmp, sizeof tmp, "[%lld]", (long long)s->index);
      err_cat(d, tmp, strlen(tmp));
      break;
    case SEG_KEY:
    case SEG_KEYITSELF:
      if (s->kind == SEG_KEYITSELF && i == shown - 1 && is_key)
        break;   /* the key itself is the bad value: "bad key at t" */
      err_catf_key(e, d, prefix, s->stack_idx);
      break;
    case SEG_UPVALUE:
      snprintf(tmp, sizeof tmp, "<upvalue %.40s>", s->name);
      err_cat(d, tmp, strlen(tmp));
      break;
    case SEG_METATABLE:
      err_cat(d, "<metatable>", 11);
      break;
    }
  }
  if (e->depth > PATH_SEGS)
    err_cat(d, "...", 3);
  if (strlen(d) == prefix)
    err_cat(d, "(value)", 7);
}

static int enc_fail(enc *e, int idx) {
  return enc_fail_as(e, idx, NULL);
}

static int enc_fail_msg(enc *e, const char *msg) {
  if (!e->failed) {
    e->failed = 1;
    snprintf(e->err, TRANSFER_ERRLEN, "%s", msg);
  }
  return 0;
}

static int encode_value(enc *e, int idx);

/* Writes the name of v (at idx) if the name cache knows it: 1 written, 0 not
 * named, -1 failed. */
static size_t named_slot(const void *p, size_t size) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x & (size - 1);
}

static int named_has(const state_ctx *c, const void *p) {
  if (c->named == NULL || p == NULL)
    return 0;
  for (size_t i = named_slot(p, c->named_size);; i = (i + 1) & (c->named_size - 1)) {
    if (c->named[i] == p)
      return 1;
    if (c->named[i] == NULL)
      return 0;
  }
}

static int encode_named(enc *e, int idx, const void *p) {
  lua_State *L = e->L;
  if (e->names == 0 || !named_has(e->ctx, p))
    return 0;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->names) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  size_t len;
  const char *packed = lua_tolstring(L, -1, &len);   /* kind, module \0 key */
  int ok = put_byte(e, (unsigned char)packed[0]);
  if (packed[0] == T_MODULE) {
    ok = ok && put_varint(e, len - 1) && put_bytes(e, packed + 1, len - 1);
  } else {
    size_t mlen = strlen(packed + 1);
    ok = ok && put_varint(e, mlen) && put_bytes(e, packed + 1, mlen) &&
         put_varint(e, len - 2 - mlen) && put_bytes(e, packed + 2 + mlen, len - 2 - mlen);
  }
  lua_pop(L, 1);
  return ok ? 1 : -1;
}

/* A second sighting of a table or function: refer back, marking the first
 * copy shared. */
static int encode_ref(enc *e, uint64_t off) {
  unsigned char *tag = e->b->data + e->base + off;
  if (*tag == T_TABLE)
    *tag = T_TABLE_SHARED;
  else if (*tag == T_FUNC)
    *tag = T_FUNC_SHARED;
  return put_byte(e, T_REF) && put_varint(e, off);
}

/* Table keys repeat (field names): a short string key is written once and
 * referred to by number afterwards.  Short strings are interned, so one
 * pointer is one string. */
static int encode_key(enc *e, int key) {
  lua_State *L = e->L;
  if (lua_type(L, key) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, key, &len);
    if (len <= 40) {
      uint64_t n;
      /* Records repeat the same few keys: a direct-mapped cache first. */
      size_t slot = ((uintptr_t)s >> 4) & 15;
      if (e->keycache[slot].s == s)
        return put_tag_varint(e, T_STRREF, e->keycache[slot].n);
      if (pmap_get(&e->keystrs, s, &n)) {
        e->keycache[slot].s = s;
        e->keycache[slot].n = n;
        return put_tag_varint(e, T_STRREF, n);
      }
      if (!pmap_put(&e->keystrs, s, e->nkeystrs))
        return ENC_FAIL_OOM(e);
      e->keycache[slot].s = s;
      e->keycache[slot].n = e->nkeystrs;
      e->nkeystrs++;
      return put_tag_varint(e, T_KEYSTR, len) && put_bytes(e, s, len);
    }
  }
  return encode_value(e, key);
}

/* Integers zigzag-encoded as varints; floats as their 8 bytes. */
static inline int encode_number(enc *e, int idx) {
  lua_State *L = e->L;
  if (lua_isinteger(L, idx)) {
    uint64_t v = (uint64_t)lua_tointeger(L, idx);
    return put_tag_varint(e, T_INT, (v << 1) ^ (uint64_t)((int64_t)v >> 63));
  }
  double d = (double)lua_tonumber(L, idx);
  return put_byte(e, T_FLOAT) && put_bytes(e, &d, sizeof d);
}

/* Encodes the value at idx under one more path segment (for messages). */
static int encode_under(enc *e, int kind, int stack_idx, lua_Integer index, const char *name,
                        int idx) {
  path_push(e, kind, stack_idx, index, name);
  int ok = encode_value(e, idx);
  e->depth--;
  return ok;
}

/* Items first..first+count-1 of the table at idx, as an array part.  The
 * scalars, most items of a big list, take a short path: they cannot fail
 * but for memory, so they need no path segment. */
static int encode_items(enc *e, int idx, lua_Integer first, uint64_t count) {
  lua_State *L = e->L;
  for (uint64_t k = 0; k < count; k++) {
    lua_Integer i = first + (lua_Integer)k;
    int ok;
    switch (lua_rawgeti(L, idx, i)) {
    case LUA_TNUMBER:
      ok = encode_number(e, -1);
      break;
    case LUA_TNIL:
      ok = put_byte(e, T_NIL);
      break;
    case LUA_TBOOLEAN:
      ok = put_byte(e, lua_toboolean(L, -1) ? T_TRUE : T_FALSE);
      break;
    default:
      ok = encode_under(e, SEG_INDEX, 0, i, NULL, lua_gettop(L));
    }
    lua_pop(L, 1);
    if (!ok)
      return 0;
  }
  return 1;
}

/* A table that must not leave its state (a Pool: its workers and results
 * are its owner's) is an instance of a registered class whose table holds a
 * string under REFUSE_FIELD: it is refused as a coroutine is, that string
 * (or the instance's own under the same key, more precise) in the place of
 * its type.  Only a named metatable is looked into: any other table costs
 * one pointer lookup.  Returns 1 (and fails) if the table at idx is one. */
#define REFUSE_FIELD "__concur_untransferable"

static int encode_refused(enc *e, int idx) {
  lua_State *L = e->L;
  int top = lua_gettop(L);
  if (!lua_getmetatable(L, idx))
    return 0;
  int refuse = 0;
  if (named_has(e->ctx, lua_topointer(L, -1))) {
    lua_pushliteral(L, REFUSE_FIELD);
    refuse = lua_rawget(L, -2) == LUA_TSTRING;
    if (refuse) {
      lua_pushliteral(L, REFUSE_FIELD);
      if (lua_rawget(L, idx) != LUA_TSTRING)
        lua_pop(L, 1);
      enc_fail_as(e, idx, lua_tostring(L, -1));
    }
  }
  lua_settop(L, top);
  return refuse;
}

static int encode_table(enc *e, int idx) {
  lua_State *L = e->L;
  if (encode_refused(e, idx))
    return 0;
  uint64_t narr = lua_rawlen(L, idx);
  if (!put_tag_varint(e, T_TABLE, narr) || !enc_reserve(e, 4))
    return ENC_FAIL_OOM(e);
  size_t nrec_at = e->b->len;
  e->b->len += 4;                    /* nrec, patched below */
  if (!encode_items(e, idx, 1, narr))
    return 0;
  uint32_t nrec = 0;
  int key = lua_gettop(L) + 1;       /* where lua_next leaves each key */
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (narr > 0 && lua_isinteger(L, key)) {
      lua_Integer k = lua_tointeger(L, key);
      if (k >= 1 && (uint64_t)k <= narr) {
        lua_pop(L, 1);
        continue;
      }
    }
    path_push(e, SEG_KEYITSELF, key, 0, NULL);
    int ok = encode_key(e, key);
    e->depth--;
    if (ok)
      ok = encode_under(e, SEG_KEY, key, 0, NULL, key + 1);
    if (!ok) {
      lua_pop(L, 2);
      return 0;
    }
    lua_pop(L, 1);
    if (++nrec == UINT32_MAX)
      return enc_fail_msg(e, "table too large to transfer");
  }
  patch_u32(e, nrec_at, nrec);
  if (!lua_getmetatable(L, idx))
    return put_byte(e, T_NIL);
  int ok = encode_under(e, SEG_METATABLE, 0, 0, NULL, lua_gettop(L));
  lua_pop(L, 1);
  return ok;
}

/* A slice (core.slice(list, i, j), Pool's map chunks) is written as the
 * table {list[i], ..., list[j], n = j - i + 1}, straight from the list. */
#define SLICE_MT "concur.slice"

typedef struct slice {
  lua_Integer first, count;
} slice;

static int encode_slice(enc *e, int idx, const slice *sl) {
  lua_State *L = e->L;
  lua_getiuservalue(L, idx, 1);
  int list = lua_gettop(L);
  int ok = put_tag_varint(e, T_TABLE, (uint64_t)sl->count) && put_u32(e, 1) &&
           encode_items(e, list, sl->first, (uint64_t)sl->count);
  if (ok) {
    lua_pushliteral(L, "n");
    ok = encode_key(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  ok = ok && put_tag_varint(e, T_INT, (uint64_t)sl->count << 1) && put_byte(e, T_NIL);
  lua_pop(L, 1);
  return ok;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  CONCUR_UNUSED(L);
  return put_bytes(ud, p, n) ? 0 : 1;
}

/* Upvalue i of the function at idx (written at off): the receiver's
 * globals, a join with an upvalue already written, or its value. */
static int encode_upvalue(enc *e, int idx, int i, size_t off) {
  lua_State *L = e->L;
  const char *name = lua_getupvalue(L, idx, i);
  int ok;
  uint64_t prev;
  void *id = lua_upvalueid(L, idx, i);
  /* API.md: an _ENV upvalue becomes the receiver's globals, whatever
   * table it holds here (busted, for one, runs specs in its own _ENV). */
  if ((name && strcmp(name, "_ENV") == 0) || lua_rawequal(L, -1, e->globals)) {
    ok = put_byte(e, T_GLOBALS);
  } else if (id != NULL && pmap_get(&e->upvals, id, &prev)) {
    unsigned char *tag = e->b->data + e->base + (prev >> 8);
    if (*tag == T_FUNC)
      *tag = T_FUNC_SHARED;
    ok = put_byte(e, T_UPJOIN) && put_varint(e, prev >> 8) &&
         put_byte(e, (unsigned char)(prev & 0xff));
  } else if (id != NULL && !pmap_put(&e->upvals, id, (uint64_t)off << 8 | (unsigned)i)) {
    ok = ENC_FAIL_OOM(e);
  } else {
    ok = encode_under(e, SEG_UPVALUE, 0, 0, name, lua_gettop(L));
  }
  lua_pop(L, 1);
  return ok;
}

static int encode_function(enc *e, int idx) {
  lua_State *L = e->L;
  size_t off = e->b->len - e->base;
  if (!put_byte(e, T_FUNC))
    return 0;
  size_t len_at = e->b->len;
  if (!put_u32(e, 0))
    return 0;
  lua_pushvalue(L, idx);
  int st = concur_dump(L, dump_writer, e, 0);
  lua_pop(L, 1);
  if (st != 0 || e->failed)
    return e->failed ? 0 : enc_fail_msg(e, "cannot dump function");
  size_t dlen = e->b->len - len_at - 4;
  if (dlen > UINT32_MAX)
    return enc_fail_msg(e, "function too large to transfer");
  patch_u32(e, len_at, (uint32_t)dlen);
  const unsigned char *code = e->b->data + len_at + 4;
  uint64_t tag = e->mackey ? mac_of_key(e->mackey, code, dlen) : mac_of(code, dlen);
  unsigned char tb[8];
  for (int k = 0; k < 8; k++)
    tb[k] = (unsigned char)(tag >> (8 * k));
  if (!put_bytes(e, tb, sizeof tb))
    return 0;
  int nups = 0;
  while (lua_getupvalue(L, idx, nups + 1) != NULL) {
    lua_pop(L, 1);
    nups++;
  }
  if (!put_byte(e, (unsigned char)nups))
    return 0;
  for (int i = 1; i <= nups; i++)
    if (!encode_upvalue(e, idx, i, off))
      return 0;
  return 1;
}

/* 40 more stack slots (8 levels).  concur_checkstack, which never raises,
 * costs a protected call before 5.4: it runs only when the encoder goes
 * deeper than it has been in this message. */
static int enc_room(enc *e) {
  int top = lua_gettop(e->L);
  if (top + 40 <= e->room)
    return 1;
  if (!concur_checkstack(e->L, 40))
    return 0;
  e->room = top + 40;
  return 1;
}

static int encode_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put_byte(e, T_NIL);
  case LUA_TBOOLEAN:
    return put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
  case LUA_TNUMBER:
    return encode_number(e, idx);
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return put_tag_varint(e, T_STR, len) && put_bytes(e, s, len);
  }
  case LUA_TTABLE:
  case LUA_TFUNCTION: {
    uint64_t off;
    const void *p = lua_topointer(L, idx);
    int named = encode_named(e, idx, p);
    if (named)
      return named > 0;
    off = e->b->len - e->base;          /* where its tag will be */
    int seen = pmap_get_or_put(&e->seen, p, &off);
    if (seen < 0)
      return ENC_FAIL_OOM(e);
    if (seen)
      return encode_ref(e, off);
    if (lua_iscfunction(L, idx)) {
      e->cfunc_miss = 1;
      return enc_fail(e, idx);
    }
    if (e->depth >= MAX_DEPTH)
      return enc_fail_msg(e, "value nested too deeply to transfer (more than 1000 levels)");
    /* A level uses at most 4 stack slots: check once every 8 levels. */
    if ((e->depth & 7) == 0 && !enc_room(e))
      return enc_fail_msg(e, "Lua stack overflow while encoding");
    return lua_type(L, idx) == LUA_TTABLE ? encode_table(e, idx) : encode_function(e, idx);
  }
  case LUA_TUSERDATA: {
    cobj *o = cobj_test(L, idx, NULL);
    if (o == NULL) {
      const slice *sl = luaL_testudata(L, idx, SLICE_MT);
      if (sl == NULL)
        return enc_fail(e, idx);
      /* A level like a table's: a slice can hold itself through its list. */
      if (e->depth >= MAX_DEPTH)
        return enc_fail_msg(e, "value nested too deeply to transfer (more than 1000 levels)");
      if ((e->depth & 7) == 0 && !enc_room(e))
        return enc_fail_msg(e, "Lua stack overflow while encoding");
      return encode_slice(e, idx, sl);
    }
    if (e->remote)
      return enc_fail_remote(e, idx, o->type->name);
    tbuf *b = e->b;
    size_t i;
    for (i = 0; i < b->nobjs && b->objs[i] != o; i++)
      ;
    if (i == b->nobjs) {
      if (b->nobjs == b->objcap) {
        size_t ncap = b->objcap ? b->objcap * 2 : 4;
        cobj **n = realloc(b->objs, ncap * sizeof *n);
        if (n == NULL)
          return ENC_FAIL_OOM(e);
        b->objs = n;
        b->objcap = ncap;
      }
      if (b->nobjs == 0)
        b->pid = concur_self;   /* the references are this process's */
      cobj_incref(o);
      b->objs[b->nobjs++] = o;
    }
    return put_byte(e, T_OBJ) && put_varint(e, i);
  }
  default:
    return enc_fail(e, idx);
  }
}

/* ---- name cache --------------------------------------------------------- */

/* A module lists in this field the values that cross by name although they
 * are neither the module nor a C function in it (classes, private
 * functions): {key = value}; the receiver finds them after requiring it. */
#define NAMES_FIELD "__concur_names"

/* The key is the string at stack index key (0: none), whole: a key may
 * hold a zero byte (a concur.Sentinel's name), the module name may not. */
static void pack_name(lua_State *L, luaL_Buffer *bb, int kind, const char *mod, int key) {
  luaL_addchar(bb, (char)kind);
  luaL_addstring(bb, mod);
  if (key) {
    size_t klen;
    const char *k = lua_tolstring(L, key, &klen);
    luaL_addchar(bb, 0);
    luaL_addlstring(bb, k, klen);
  }
}

/* nameof[v] = packed name, unless v already has one. */
static void name_set(lua_State *L, int nameof, int v, int kind, const char *mod, int key) {
  lua_pushvalue(L, v);
  if (lua_rawget(L, nameof) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, v);
  luaL_Buffer bb;
  luaL_buffinit(L, &bb);
  pack_name(L, &bb, kind, mod, key);
  luaL_pushresult(&bb);
  lua_rawset(L, nameof);
}

/* Rebuilds CTX_NAME_OF from the registrations and package.loaded: module
 * tables always, the C functions inside them only when asked (argument 1),
 * since most messages hold none and a fresh state has hundreds. */
static int names_rebuild(lua_State *L) {
  int with_cfuncs = lua_toboolean(L, 1);
  lua_settop(L, 0);
  state_ctx *c = ctx_get(L);
  ctx_push_table(L);                                  /* 1: ctx */
  lua_newtable(L);                                    /* 2: nameof */
  lua_pushnil(L);                                     /* 3: unused */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* 4 */
  /* First the values modules list in their __concur_names, so that they win
   * over any other name. */
  lua_pushnil(L);
  while (lua_next(L, 4)) {                             /* 5: name, 6: module */
    lua_pushliteral(L, NAMES_FIELD);
    if (lua_type(L, 5) == LUA_TSTRING && lua_type(L, 6) == LUA_TTABLE &&
        lua_rawget(L, 6) == LUA_TTABLE) {              /* 7: its names */
      const char *mod = lua_tostring(L, 5);
      lua_pushnil(L);
      while (lua_next(L, 7)) {                         /* 8: key, 9: value */
        if (lua_type(L, 8) == LUA_TSTRING)
          name_set(L, 2, 9, T_REG, mod, 8);
        lua_pop(L, 1);
      }
    }
    lua_settop(L, 5);
  }
  /* Then the globals' C functions: a function under several names (5.1's
   * `unpack`, which a library may also put in `table`) crosses under its
   * global one, which every state has; package.loaded's order is the hash's. */
  if (with_cfuncs && lua_getfield(L, 4, "_G") == LUA_TTABLE) {   /* 5: _G */
    lua_pushnil(L);
    while (lua_next(L, 5)) {                           /* 6: key, 7: value */
      if (lua_type(L, 6) == LUA_TSTRING && lua_iscfunction(L, 7))
        name_set(L, 2, 7, T_FIELD, "_G", 6);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, 4);
  lua_pushnil(L);
  while (lua_next(L, 4)) {                             /* 5: name, 6: module */
    if (lua_type(L, 5) == LUA_TSTRING) {
      const char *mod = lua_tostring(L, 5);
      if (lua_type(L, 6) == LUA_TTABLE) {
        name_set(L, 2, 6, T_MODULE, mod, 0);
        if (with_cfuncs) {
          lua_pushnil(L);
          while (lua_next(L, 6)) {                     /* 7: key, 8: value */
            if (lua_type(L, 7) == LUA_TSTRING && lua_iscfunction(L, 8))
              name_set(L, 2, 8, T_FIELD, mod, 7);
            lua_pop(L, 1);
          }
        }
      } else if (lua_iscfunction(L, 6)) {
        name_set(L, 2, 6, T_MODULE, mod, 0);
      }
    }
    lua_pop(L, 1);
  }
  /* The C-side set of the named values' pointers (see state_ctx). */
  size_t n = 0, size = 16;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    n++;
    lua_pop(L, 1);
  }
  while (size < n * 2)
    size *= 2;
  const void **set = calloc(size, sizeof *set);
  if (set == NULL)
    return luaL_error(L, "not enough memory");
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    const void *p = lua_topointer(L, -2);
    if (p) {
      size_t i = named_slot(p, size);
      while (set[i] && set[i] != p)
        i = (i + 1) & (size - 1);
      set[i] = p;
    }
    lua_pop(L, 1);
  }
  free(c->named);
  c->named = set;
  c->named_size = size;
  lua_pushvalue(L, 2);
  lua_rawseti(L, 1, CTX_NAME_OF);
  c->cache_version = c->names_version;
  c->cache_has_cfuncs = with_cfuncs;
  return 0;
}

/* Brings the name cache up to date, in protected mode (a memory error or a
 * finalizer's error leaves the old cache).  Returns whether it is current. */
static int names_refresh(lua_State *L, int need_cfuncs) {
  state_ctx *c = ctx_get(L);
  if (c->cache_version == c->names_version && (c->cache_has_cfuncs || !need_cfuncs))
    return 1;
  lua_pushcfunction(L, names_rebuild);
  lua_pushboolean(L, need_cfuncs || c->cache_has_cfuncs);
  return lua_pcall(L, 1, 0, 0) == LUA_OK ? 1 : (lua_pop(L, 1), 0);
}

void transfer_names_changed(lua_State *L) {
  ctx_get(L)->names_version++;
}

/* package.loaded's __newindex: keeps the name cache honest. */
static int loaded_newindex(lua_State *L) {
  lua_rawset(L, 1);
  transfer_names_changed(L);
  return 0;
}

/* ---- encode entry points ---------------------------------------------- */

static int encode_once(lua_State *L, int idx, int n, const char *root, int one_root,
                       tbuf *b, char *err, int *cfunc_miss, const uint64_t *mackey) {
  enc e;
  e.L = L;
  e.mackey = mackey;
  e.remote = mackey != NULL;
  e.b = b;
  e.base = b->len;
  e.depth = 0;
  e.room = 0;
  e.failed = e.cfunc_miss = e.oom = 0;
  e.root = root;
  e.err = err;
  size_t objs_before = b->nobjs;
  int top = lua_gettop(L);
  int ok = 1;
  pmap_init(&e.seen);
  pmap_init(&e.upvals);
  pmap_init(&e.keystrs);
  e.nkeystrs = 0;
  memset(e.keycache, 0, sizeof e.keycache);
  concur_push_globals(L);
  e.globals = lua_gettop(L);
  e.ctx = ctx_get(L);
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_NAME_OF);
  e.names = lua_istable(L, -1) ? lua_gettop(L) : 0;
  ok = put_varint(&e, (uint64_t)n);
  for (int i = 0; ok && i < n; i++) {
    if (!(n == 1 && one_root))
      path_push(&e, SEG_INDEX, 0, i + 1, NULL);
    ok = encode_value(&e, idx + i);
    e.depth = 0;
  }
  lua_settop(L, top);
  pmap_free(&e.seen);
  pmap_free(&e.upvals);
  pmap_free(&e.keystrs);
  if (!ok) {
    if (e.oom)
      snprintf(err, TRANSFER_ERRLEN, "not enough memory");
    *cfunc_miss = e.cfunc_miss;
    b->len = e.base;
    while (b->nobjs > objs_before)
      cobj_decref(b->objs[--b->nobjs]);
  }
  return ok;
}

static int encode_keyed(lua_State *L, int idx, int n, const char *root, int one_root,
                        tbuf *b, char err[TRANSFER_ERRLEN], const uint64_t *mackey) {
  int miss = 0;
  idx = lua_absindex(L, idx);
  /* The encoder checks the stack every 8 levels for 40 slots; the first
   * levels (from depth 1 with several roots) need this much. */
  if (!concur_checkstack(L, 48)) {
    snprintf(err, TRANSFER_ERRLEN, "Lua stack overflow while encoding");
    return 0;
  }
  /* Scalars need no names: skip the cache for them. */
  for (int i = 0; i < n; i++) {
    int t = lua_type(L, idx + i);
    if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA) {
      names_refresh(L, 0);
      break;
    }
  }
  if (encode_once(L, idx, n, root, one_root, b, err, &miss, mackey))
    return 1;
  /* A C function missed: the cache may lack C functions, or be older than a
   * change to a module table.  Rebuild with them and try once more. */
  if (miss) {
    ctx_get(L)->cache_version = 0;
    if (names_refresh(L, 1))
      return encode_once(L, idx, n, root, one_root, b, err, &miss, mackey);
  }
  return 0;
}

int transfer_encode(lua_State *L, int idx, int n, const char *root, int one_root,
                    tbuf *b, char err[TRANSFER_ERRLEN]) {
  return encode_keyed(L, idx, n, root, one_root, b, err, NULL);
}

/* ---- decoder ----------------------------------------------------------- */

typedef struct dec {
  lua_State *L;
  const unsigned char *p, *start, *end;
  const tbuf *b;
  int refs;        /* stack index of offset -> shared value (nil until needed) */
  int strs;        /* stack index of the KEYSTR strings, in order (nil until needed) */
  lua_Integer nstrs;
  int depth;
  const uint64_t *mackey;   /* bytecode MAC key; NULL: the family's */
  size_t owed;     /* bytes the tables being decoded still need for their
                      entries: 1 per item, 2 per record */
} dec;

__attribute__((noreturn)) static void dec_bad(dec *d) {
  luaL_error(d->L, "malformed transfer message (at byte %d)", (int)(d->p - d->start));
  abort();  /* not reached */
}

static unsigned char get_byte(dec *d) {
  if (d->p >= d->end)
    dec_bad(d);
  return *d->p++;
}

static uint64_t get_varint_slow(dec *d) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    unsigned char c = get_byte(d);
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80))
      return v;
  }
  dec_bad(d);
}

/* In line: a varint that cannot run past the end (10 bytes at most) is read
 * without a bound check per byte; one near the end goes the slow way. */
static inline uint64_t get_varint(dec *d) {
  const unsigned char *p = d->p;
  if (p < d->end && *p < 0x80) {   /* one byte: most counts, tags' lengths, small ints */
    d->p = p + 1;
    return *p;
  }
  if (d->end - p < 10)
    return get_varint_slow(d);
  uint64_t v = 0;
  for (int i = 0; i < 10; i++) {
    unsigned char c = p[i];
    v |= (uint64_t)(c & 0x7f) << (7 * i);
    if (!(c & 0x80)) {
      d->p = p + i + 1;
      return v;
    }
  }
  dec_bad(d);
}

static uint32_t get_u32(dec *d) {
  if (d->end - d->p < 4)
    dec_bad(d);
  const unsigned char *p = d->p;
  d->p += 4;
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const char *get_bytes(dec *d, size_t n) {
  if ((size_t)(d->end - d->p) < n)
    dec_bad(d);
  const char *s = (const char *)d->p;
  d->p += n;
  return s;
}

static void dec_remember(dec *d, size_t off) {
  lua_State *L = d->L;
  if (lua_isnil(L, d->refs)) {
    lua_newtable(L);
    lua_replace(L, d->refs);
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, (lua_Integer)off);
}

static void dec_lookup_ref(dec *d, uint64_t off) {
  if (lua_isnil(d->L, d->refs) || off > (uint64_t)(d->end - d->start) ||
      lua_rawgeti(d->L, d->refs, (lua_Integer)off) == LUA_TNIL)
    dec_bad(d);
}

/* Pushes package.loaded[mod], requiring it when absent. */
static void dec_module(dec *d, const char *mod, size_t len) {
  lua_State *L = d->L;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, mod, len);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushlstring(L, mod, len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    const char *why = lua_tostring(L, -1);
    lua_pushlstring(L, mod, len);
    luaL_error(L, "cannot transfer a value of module '%s': %s", lua_tostring(L, -1),
               why ? why : "(error object is not a string)");
  }
}

static void dec_named(dec *d, int kind) {
  lua_State *L = d->L;
  size_t mlen = (size_t)get_varint(d);
  const char *mod = get_bytes(d, mlen);
  if (kind == T_MODULE) {
    dec_module(d, mod, mlen);
    return;
  }
  size_t klen = (size_t)get_varint(d);
  const char *key = get_bytes(d, klen);
  if (kind == T_FIELD) {
    dec_module(d, mod, mlen);
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pushlstring(L, key, klen);
      lua_rawget(L, -2);
      lua_remove(L, -2);
    } else {
      lua_pop(L, 1);
      lua_pushnil(L);
    }
  } else {                                   /* module.__concur_names[key] */
    dec_module(d, mod, mlen);                   /* mod */
    lua_pushliteral(L, NAMES_FIELD);
    if (lua_type(L, -2) == LUA_TTABLE)
      lua_rawget(L, -2);                        /* mod, names */
    if (lua_type(L, -1) == LUA_TTABLE) {
      /* Not raw: a module may make a value on first use (a concur.Sentinel
       * the receiver has not made yet comes from the names' __index). */
      lua_pushlstring(L, key, klen);
      lua_gettable(L, -2);                      /* mod, names, value */
    } else {
      lua_pushnil(L);
    }
    lua_replace(L, -3);
    lua_pop(L, 1);
  }
  if (lua_isnil(L, -1)) {
    lua_pushlstring(L, mod, mlen);
    lua_pushlstring(L, key, klen);
    luaL_error(L, "cannot transfer function '%s.%s': not found in the receiving state",
               lua_tostring(L, -2), lua_tostring(L, -1));
  }
}

typedef struct chunk_reader {
  const char *p;
  size_t n;
} chunk_reader;

static const char *read_chunk(lua_State *L, void *ud, size_t *size) {
  chunk_reader *r = ud;
  CONCUR_UNUSED(L);
  *size = r->n;
  r->n = 0;
  return *size ? r->p : NULL;
}

static void decode_value(dec *d);

/* decode_value with the commonest table entries (integers, numbered key
 * strings) decoded in line. */
static inline void decode_entry(dec *d) {
  if (d->p < d->end) {
    if (*d->p == T_INT) {
      d->p++;
      uint64_t z = get_varint(d);
      lua_pushinteger(d->L, (lua_Integer)((z >> 1) ^ (~(z & 1) + 1)));
      return;
    }
    if (*d->p == T_STRREF) {
      d->p++;
      uint64_t n = get_varint(d);
      if (n >= (uint64_t)d->nstrs)
        dec_bad(d);
      lua_rawgeti(d->L, d->strs, (lua_Integer)n + 1);
      return;
    }
  }
  decode_value(d);
}

static void decode_table(dec *d, int shared, size_t off) {
  lua_State *L = d->L;
  uint64_t narr = get_varint(d);
  uint32_t nrec = get_u32(d);
  /* Every item takes at least a byte, every record two; what the enclosing
   * tables still owe is not this table's to claim, so that nested tables
   * cannot each preallocate the whole rest of the message. */
  size_t left = (size_t)(d->end - d->p);
  if (left < d->owed || narr > left - d->owed || nrec > (left - d->owed - narr) / 2)
    dec_bad(d);
  d->owed += (size_t)narr + 2 * (size_t)nrec;
  lua_createtable(L, narr > INT_MAX ? 0 : (int)narr, nrec > INT_MAX ? 0 : (int)nrec);
  int t = lua_gettop(L);
  if (shared)
    dec_remember(d, off);
  for (uint64_t i = 1; i <= narr; i++) {
    d->owed -= 1;                    /* this item's bytes are its own */
    decode_entry(d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (uint32_t i = 0; i < nrec; i++) {
    d->owed -= 2;
    /* Only these tags could make an invalid key (nil, NaN); the others
     * cannot, and skip the check. */
    int tag = d->p < d->end ? *d->p : T_NIL;
    decode_entry(d);
    if ((tag == T_FLOAT || tag == T_REF || tag == T_MODULE || tag == T_FIELD || tag == T_REG) &&
        (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && isnan(lua_tonumber(L, -1)))))
      dec_bad(d);
    else if (tag == T_NIL)
      dec_bad(d);
    decode_entry(d);
    lua_rawset(L, t);
  }
  if (d->p < d->end && *d->p == T_NIL) {   /* no metatable: the common case */
    d->p++;
    return;
  }
  decode_value(d);
  if (lua_istable(L, -1))
    lua_setmetatable(L, t);
  else
    dec_bad(d);
}

/* The upvalue count of f's prototype, or -1.  A chunk's header byte says
 * how many upvalues the loaded closure gets (5.3, 5.4); a damaged chunk can
 * give its prototype another count, and Lua (lua_getupvalue, a call, a
 * second dump) trusts the prototype's and reads past the closure.  lua_dump
 * writes the prototype's count right after the header (CONCUR_DUMP_NUPS_AT
 * bytes): a writer that keeps one byte more and then stops the dump reads
 * it.  Where the closure is made with its prototype's count (5.1, 5.2,
 * LuaJIT) the two cannot differ. */
#ifdef CONCUR_DUMP_NUPS_AT
typedef struct dump_head { unsigned char b[CONCUR_DUMP_NUPS_AT + 1]; size_t n; } dump_head;

static int head_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  dump_head *h = ud;
  size_t k = n < sizeof h->b - h->n ? n : sizeof h->b - h->n;
  memcpy(h->b + h->n, p, k);
  h->n += k;
  return h->n == sizeof h->b;   /* nonzero: enough, stop */
}

static int proto_nups(lua_State *L, int f, int closure_nups) {
  CONCUR_UNUSED(closure_nups);
  dump_head h = {{0}, 0};
  lua_pushvalue(L, f);
  concur_dump(L, head_writer, &h, 1);
  lua_pop(L, 1);
  return h.n == sizeof h.b ? h.b[CONCUR_DUMP_NUPS_AT] : -1;
}
#else
static int proto_nups(lua_State *L, int f, int closure_nups) {
  CONCUR_UNUSED(L);
  CONCUR_UNUSED(f);
  return closure_nups;
}
#endif

static void decode_function(dec *d, int shared, size_t off) {
  lua_State *L = d->L;
  chunk_reader r;
  r.n = get_u32(d);
  r.p = get_bytes(d, r.n);
  const unsigned char *tb = (const unsigned char *)get_bytes(d, 8);
  uint64_t tag = 0;
  for (int k = 0; k < 8; k++)
    tag |= (uint64_t)tb[k] << (8 * k);
  /* Only bytecode concur's encoder wrote in this family is ever loaded. */
  if (r.n == 0 || r.p[0] != LUA_SIGNATURE[0] ||
      tag != (d->mackey ? mac_of_key(d->mackey, r.p, r.n) : mac_of(r.p, r.n)))
    dec_bad(d);
  if (concur_load_binary(L, read_chunk, &r, "=(transfer)") != LUA_OK)
    luaL_error(L, "cannot transfer function: %s", lua_tostring(L, -1));
  int f = lua_gettop(L);
  if (shared)
    dec_remember(d, off);
  /* The closure's own upvalue count (the chunk's header byte) can disagree
   * with its prototype's in a damaged chunk, and lua_setupvalue and friends
   * check only the prototype's: check indices against the closure's. */
  lua_Debug ar;
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  int nups = get_byte(d);
  if (nups > ar.nups || proto_nups(L, f, ar.nups) != ar.nups)
    dec_bad(d);
  for (int i = 1; i <= nups; i++) {
    unsigned char tag = d->p < d->end ? *d->p : T_NIL;
    if (tag == T_GLOBALS) {
      d->p++;
      concur_push_globals(L);
    } else if (tag == T_UPJOIN) {
      d->p++;
      uint64_t goff = get_varint(d);
      int gi = get_byte(d);
      dec_lookup_ref(d, goff);
      lua_Debug gar;
      if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1) ||
          (lua_pushvalue(L, -1), lua_getinfo(L, ">u", &gar), gi < 1 || gi > gar.nups) ||
          lua_getupvalue(L, -1, gi) == NULL || lua_getupvalue(L, f, i) == NULL)
        dec_bad(d);
      lua_pop(L, 2);
      lua_upvaluejoin(L, f, i, -1, gi);
      lua_pop(L, 1);
      continue;
    } else {
      decode_value(d);
    }
    if (lua_setupvalue(L, f, i) == NULL)
      dec_bad(d);
  }
}

static void decode_value(dec *d) {
  lua_State *L = d->L;
  size_t off = (size_t)(d->p - d->start);
  unsigned char tag = get_byte(d);
  if (++d->depth > MAX_DEPTH + 2)
    dec_bad(d);
  /* A level holds at most 4 slots (table or function, key, value, and a
   * lookup): make room once every 8 levels. */
  if ((d->depth & 7) == 0)
    luaL_checkstack(L, 40, "too many nested values");
  switch (tag) {
  case T_NIL: lua_pushnil(L); break;
  case T_FALSE: lua_pushboolean(L, 0); break;
  case T_TRUE: lua_pushboolean(L, 1); break;
  case T_INT: {
    uint64_t z = get_varint(d);
    lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (~(z & 1) + 1)));
    break;
  }
  case T_FLOAT: {
    double v;
    memcpy(&v, get_bytes(d, sizeof v), sizeof v);
    lua_pushnumber(L, (lua_Number)v);
    break;
  }
  case T_STR: {
    size_t len = (size_t)get_varint(d);
    const char *s = get_bytes(d, len);
    lua_pushlstring(L, s, len);
    break;
  }
  case T_KEYSTR: {
    size_t len = (size_t)get_varint(d);
    const char *s = get_bytes(d, len);
    lua_pushlstring(L, s, len);
    if (lua_isnil(L, d->strs)) {
      lua_newtable(L);
      lua_replace(L, d->strs);
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->strs, ++d->nstrs);
    break;
  }
  case T_STRREF: {
    uint64_t n = get_varint(d);
    if (n >= (uint64_t)d->nstrs)
      dec_bad(d);
    lua_rawgeti(L, d->strs, (lua_Integer)n + 1);
    break;
  }
  case T_TABLE:
  case T_TABLE_SHARED:
    decode_table(d, tag == T_TABLE_SHARED, off);
    break;
  case T_FUNC:
  case T_FUNC_SHARED:
    decode_function(d, tag == T_FUNC_SHARED, off);
    break;
  case T_REF:
    dec_lookup_ref(d, get_varint(d));
    break;
  case T_MODULE:
  case T_FIELD:
  case T_REG:
    dec_named(d, tag);
    break;
  case T_OBJ: {
    uint64_t i = get_varint(d);
    if (d->b == NULL || i >= d->b->nobjs)
      dec_bad(d);
    cobj_push(L, d->b->objs[i]);
    break;
  }
  default:
    dec_bad(d);
  }
  d->depth--;
}

static int decode_message(lua_State *L, const tbuf *b, size_t at, size_t len,
                          const uint64_t *mackey) {
  dec d;
  d.mackey = mackey;
  if (at > b->len || len > b->len - at)
    luaL_error(L, "malformed transfer message (bad length)");
  d.L = L;
  d.start = d.p = b->data + at;
  d.end = d.start + len;
  d.b = b;
  d.depth = 0;
  d.owed = 0;
  luaL_checkstack(L, 48, "too many values");
  lua_pushnil(L);
  d.refs = lua_gettop(L);
  lua_pushnil(L);
  d.strs = lua_gettop(L);
  d.nstrs = 0;
  uint64_t n = get_varint(&d);
  if (n > len)
    dec_bad(&d);
  for (uint64_t i = 0; i < n; i++) {
    luaL_checkstack(L, 44, "too many values to transfer");
    decode_value(&d);
  }
  if (d.p != d.end)
    dec_bad(&d);
  lua_remove(L, d.refs);
  lua_remove(L, d.refs);   /* strs */
  return (int)n;
}

typedef struct decode_args {
  const tbuf *b;
  size_t at, len;
  const uint64_t *mackey;
} decode_args;

static int decode_protected(lua_State *L) {
  decode_args *a = lua_touserdata(L, 1);
  lua_pop(L, 1);
  return decode_message(L, a->b, a->at, a->len, a->mackey);
}

/* Everything a decode makes stays reachable until it ends, so collector steps
 * during a large decode only re-traverse the growing heap: a large message is
 * decoded with the collector paused (and resumed, even on error). */
#define DECODE_PAUSE_GC_BYTES (64 * 1024)

static int decode_keyed(lua_State *L, const tbuf *b, size_t at, size_t len,
                        const uint64_t *mackey) {
  if (len < DECODE_PAUSE_GC_BYTES || !concur_lua_gc(L, LUA_GCISRUNNING, 0))
    return decode_message(L, b, at, len, mackey);
  decode_args a = {b, at, len, mackey};
  int top = lua_gettop(L);
  lua_pushcfunction(L, decode_protected);
  lua_pushlightuserdata(L, &a);
  concur_lua_gc(L, LUA_GCSTOP, 0);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  concur_lua_gc(L, LUA_GCRESTART, 0);
  if (st != LUA_OK)
    return lua_error(L);
  return lua_gettop(L) - top;
}

int transfer_decode_tbuf(lua_State *L, const tbuf *b, size_t at, size_t len) {
  return decode_keyed(L, b, at, len, NULL);
}

#define LOCAL_ELSEWHERE \
  "the message holds a Thread or a Pipe connection, which belongs to the process that sent it"

int sblob_decode(lua_State *L, sblob *s) {
  tbuf view = sblob_view(s);
  if ((s->flags & MSG_LOCAL) && s->pid != concur_self)
    return luaL_error(L, "%s", LOCAL_ELSEWHERE);
  return transfer_decode_tbuf(L, &view, 0, view.len);
}

static int decode_taking_protected(lua_State *L) {
  const tbuf *view = lua_touserdata(L, 1);
  lua_pop(L, 1);
  return transfer_decode_tbuf(L, view, 0, view->len);
}

int transfer_decode_taking(lua_State *L, const tbuf *view, int has_local, sblob *blob) {
  if (has_local && view->pid != concur_self) {
    if (blob)
      sblob_free(blob);
    else
      tbuf_release_view(view);
    return luaL_error(L, "%s", LOCAL_ELSEWHERE);
  }
  if (view->nobjs == 0 && blob == NULL)
    return transfer_decode_tbuf(L, view, 0, view->len);
  /* References to give back whatever happens: decode protected. */
  int top = lua_gettop(L);
  lua_pushcfunction(L, decode_taking_protected);
  lua_pushlightuserdata(L, (void *)view);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (blob)
    sblob_free(blob);
  else
    tbuf_release_view(view);
  if (st != LUA_OK)
    return lua_error(L);
  return lua_gettop(L) - top;
}

int sblob_decode_free(lua_State *L, sblob *s) {
  tbuf view = sblob_view(s);
  return transfer_decode_taking(L, &view, (s->flags & MSG_LOCAL) != 0, s);
}

/* ---- Lua-facing functions ----------------------------------------------- */

/* core.transfer(...): encodes its arguments and decodes them in the same
 * state; for tests of the format and its errors. */
static int tr_roundtrip(lua_State *L) {
  int n = lua_gettop(L);
  char err[TRANSFER_ERRLEN];
  /* The buffer lives in a box made first, so that it is freed whatever
   * raises later. */
  tbuf *box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = (tbuf)TBUF_INIT;
  luaL_setmetatable(L, "concur.tbuf");
  if (!transfer_encode(L, 1, n, "args", 0, box, err))
    return luaL_error(L, "%s", err);
  int r = transfer_decode_tbuf(L, box, 0, box->len);
  lua_pushinteger(L, (lua_Integer)box->len);
  lua_replace(L, -r - 2);
  return r + 1;   /* size, values... */
}

/* ---- bytes for another machine (core.encode, core.decode) --------------- */

/* An encoded value outside the process family:
 *
 *   "CNR1" runtime(u8) flags(u8) message mac(u64le)
 *
 * runtime names the Lua that wrote it (bytecode loads only in the same one);
 * flags is 0 (reserved); mac is the keyed MAC (mac_derive_key of the secret)
 * of everything before it, so bytes damaged or written under another secret
 * are refused before the decoder reads them.  The functions inside carry
 * their MAC under that key too.  Concur objects are refused: they live in
 * one machine's memory. */
#define XFER_MAGIC "CNR1"
#define XFER_HEAD 6
#define XFER_TAIL 8
#if CONCUR_LUAJIT
#define XFER_RUNTIME 0x4a
#else
#define XFER_RUNTIME (LUA_VERSION_NUM / 100 * 16 + LUA_VERSION_NUM % 100)
#endif

static const char *runtime_name(int r, char *buf, size_t size) {
  if (r == 0x4a)
    return "LuaJIT";
  if (r >= 0x51 && r <= 0x5f)
    snprintf(buf, size, "Lua 5.%d", r - 0x50);
  else
    snprintf(buf, size, "an unknown runtime (%d)", r);
  return buf;
}

static void xfer_key(lua_State *L, int arg, uint64_t key[2]) {
  if (lua_isnoneornil(L, arg)) {
    mac_derive_key(key, NULL, 0);
  } else {
    size_t n;
    if (lua_type(L, arg) != LUA_TSTRING)
      luaL_typeerror(L, arg, "string");
    const char *sec = lua_tolstring(L, arg, &n);
    mac_derive_key(key, sec, n);
  }
}

static int tbuf_append(tbuf *b, const void *p, size_t n) {
  if (b->cap - b->len < n) {
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap - b->len < n) {
      if (ncap > SIZE_MAX / 2)
        return 0;
      ncap *= 2;
    }
    unsigned char *nd = realloc(b->data, ncap);
    if (nd == NULL)
      return 0;
    b->data = nd;
    b->cap = ncap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 1;
}

/* core.encode(value [, secret [, name]]) -> bytes; name (default "value")
 * starts the path in error messages. */
static int tr_encode(lua_State *L) {
  char err[TRANSFER_ERRLEN];
  uint64_t key[2];
  luaL_checkany(L, 1);
  xfer_key(L, 2, key);
  const char *root = luaL_optstring(L, 3, "value");
  lua_settop(L, 3);
  tbuf *box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = (tbuf)TBUF_INIT;
  luaL_setmetatable(L, "concur.tbuf");
  unsigned char head[XFER_HEAD] = {'C', 'N', 'R', '1', XFER_RUNTIME, 0};
  if (!tbuf_append(box, head, sizeof head))
    return luaL_error(L, "not enough memory");
  if (!encode_keyed(L, 1, 1, root, 1, box, err, key))
    return luaL_error(L, "%s", err);
  uint64_t tag = mac_of_key(key, box->data, box->len);
  unsigned char tb[XFER_TAIL];
  for (int k = 0; k < XFER_TAIL; k++)
    tb[k] = (unsigned char)(tag >> (8 * k));
  if (!tbuf_append(box, tb, sizeof tb))
    return luaL_error(L, "not enough memory");
  lua_pushlstring(L, (const char *)box->data, box->len);
  return 1;
}

/* core.decode(bytes [, secret]) -> value. */
static int tr_decode(lua_State *L) {
  size_t n;
  uint64_t key[2];
  const char *s = luaL_checklstring(L, 1, &n);
  xfer_key(L, 2, key);
  lua_settop(L, 1);
  const unsigned char *u = (const unsigned char *)s;
  if (n < XFER_HEAD + XFER_TAIL + 2 || memcmp(s, XFER_MAGIC, 4) != 0)
    return luaL_error(L, "cannot decode: not bytes from concur's encode (%s)",
                      n < XFER_HEAD + XFER_TAIL + 2 ? "too short" : "bad magic");
  if (u[4] != XFER_RUNTIME) {
    char a[40], b[40];
    return luaL_error(L, "cannot decode: encoded by %s, this is %s",
                      runtime_name(u[4], a, sizeof a), runtime_name(XFER_RUNTIME, b, sizeof b));
  }
  if (u[5] != 0)
    return luaL_error(L, "cannot decode: unknown format flags (%d)", (int)u[5]);
  uint64_t tag = 0;
  for (int k = 0; k < XFER_TAIL; k++)
    tag |= (uint64_t)u[n - XFER_TAIL + k] << (8 * k);
  if (tag != mac_of_key(key, s, n - XFER_TAIL))
    return luaL_error(L, "cannot decode: the bytes are damaged or were encoded with another secret");
  tbuf view = TBUF_INIT;
  view.data = (unsigned char *)(uintptr_t)(s + XFER_HEAD);   /* only read */
  view.len = view.cap = n - XFER_HEAD - XFER_TAIL;
  int r = decode_keyed(L, &view, 0, view.len, key);
  if (r != 1)
    return luaL_error(L, "cannot decode: malformed transfer message (%d values)", r);
  return 1;
}

/* core.slice(list, i, j): list[i..j] to send as a table of its own. */
static int tr_slice(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
  luaL_argcheck(L, i >= 1 && j >= i - 1 && j - i < INT32_MAX, 3, "bad slice bounds");
  slice *sl = lua_newuserdatauv(L, sizeof *sl, 1);
  sl->first = i;
  sl->count = j - i + 1;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, SLICE_MT);
  return 1;
}

/* core.names_changed(): a module registered a value in its __concur_names
 * after it was loaded (concur.Sentinel): the name cache is rebuilt. */
static int tr_names_changed(lua_State *L) {
  transfer_names_changed(L);
  return 0;
}

static int tbuf_box_gc(lua_State *L) {
  tbuf_free(lua_touserdata(L, 1));
  return 0;
}

int transfer_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"transfer", tr_roundtrip},
    {"encode", tr_encode},
    {"decode", tr_decode},
    {"slice", tr_slice},
    {"names_changed", tr_names_changed},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
  /* The encoder pushes REFUSE_FIELD: kept alive here, that push finds it
   * interned and allocates nothing. */
  lua_pushliteral(L, REFUSE_FIELD);
  lua_setfield(L, LUA_REGISTRYINDEX, REFUSE_FIELD);
  luaL_newmetatable(L, SLICE_MT);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, "concur.tbuf")) {
    lua_pushcfunction(L, tbuf_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  /* Watch package.loaded, unless someone else already set its metatable. */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (!lua_getmetatable(L, -1)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, loaded_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}
