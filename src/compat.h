/*
 * compat.h - the one place where Lua versions differ (the ground under every
 * file).  concur is written against Lua 5.4's C API; each name below gives
 * that API on the runtime it is built for.
 *
 *   5.4        nothing to do.
 *   5.3        one user value per userdata (concur never needs more);
 *              lua_gc takes exactly three arguments; no luaL_typeerror.
 *   5.1, 5.2,  lua-compat-5.3 (vendor/lua-compat-5.3, header-only: the
 *   LuaJIT     5.3 C API over 5.1/5.2: lua_isinteger, luaL_tolstring,
 *              lua_rawgetp, lua_dump's strip and lua_load's mode ...) and
 *              the shims below: user values kept in a table environment,
 *              no LUA_RIDX_MAINTHREAD or LUA_RIDX_GLOBALS, package.preload
 *              outside the registry, no shared upvalues on 5.1, no
 *              continuations.  What differs for users: README, "Runtimes".
 *
 * CONCUR_LUAJIT and CONCUR_DUMP_NUPS_AT say which runtime this is, for the
 * few places whose behaviour differs (the transfer's bytecode checks).
 */
#ifndef CONCUR_COMPAT_H
#define CONCUR_COMPAT_H

#include "lua.h"
#include "lauxlib.h"

#if LUA_VERSION_NUM < 503
#include "compat-5.3.h"
#endif

#if defined(LUAJIT_VERSION) || defined(LUA_JITLIBNAME)
#define CONCUR_LUAJIT 1
#else
#define CONCUR_LUAJIT 0
#endif

/* Where lua_dump writes the main prototype's upvalue count, right after the
 * header: the chunk's own count comes just before it (see transfer.c,
 * proto_nups).  Not defined where a loaded closure takes its prototype's. */
#if LUA_VERSION_NUM >= 504 && !CONCUR_LUAJIT
#define CONCUR_DUMP_NUPS_AT 31
#elif LUA_VERSION_NUM == 503
#define CONCUR_DUMP_NUPS_AT 33
#endif

/* ---- user values: concur uses at most one per userdata ------------------ */
#if LUA_VERSION_NUM < 504
static inline void *concur_newuserdatauv(lua_State *L, size_t size, int nuvalue) {
  (void)nuvalue;
  return lua_newuserdata(L, size);
}
#define lua_newuserdatauv concur_newuserdatauv

#if LUA_VERSION_NUM >= 503
static inline int concur_setiuservalue(lua_State *L, int idx, int n) {
  (void)n;
  lua_setuservalue(L, idx);
  return 1;
}
static inline int concur_getiuservalue(lua_State *L, int idx, int n) {
  (void)n;
  return lua_getuservalue(L, idx);
}
#else
/* 5.1/5.2: the value is kept as t[1] of a table set as the userdata's
 * environment (5.1's environment, and 5.2's user value, must be a table). */
static inline int concur_setiuservalue(lua_State *L, int idx, int n) {
  (void)n;
  idx = lua_absindex(L, idx);
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
#if LUA_VERSION_NUM == 501
  lua_setfenv(L, idx);
#else
  lua_setuservalue(L, idx);
#endif
  return 1;
}
static inline int concur_getiuservalue(lua_State *L, int idx, int n) {
  (void)n;
#if LUA_VERSION_NUM == 501
  lua_getfenv(L, idx);
#else
  lua_getuservalue(L, idx);
#endif
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNIL;
  }
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
  return lua_type(L, -1);
}
#endif
#define lua_setiuservalue concur_setiuservalue
#define lua_getiuservalue concur_getiuservalue
#endif

/* ---- the collector -------------------------------------------------------- */
/* Callers always pass lua_gc three arguments (5.4 ignores the extra one). */
#if !defined(LUA_GCISRUNNING)
#define LUA_GCISRUNNING (-1)   /* no such option: lua_gc below says "running" */
static inline int concur_gc(lua_State *L, int what, int data) {
  return what == LUA_GCISRUNNING ? 1 : lua_gc(L, what, data);
}
#define concur_lua_gc(L, w, d) concur_gc((L), (w), (d))
#else
#define concur_lua_gc(L, w, d) lua_gc((L), (w), (d))
#endif

/* ---- errors -------------------------------------------------------------- */
#if LUA_VERSION_NUM < 504
static inline int concur_typeerror(lua_State *L, int arg, const char *tname) {
  const char *typearg;
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING)
    typearg = lua_tostring(L, -1);
  else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA)
    typearg = "light userdata";
  else
    typearg = luaL_typename(L, arg);
  const char *msg = lua_pushfstring(L, "%s expected, got %s", tname, typearg);
  return luaL_argerror(L, arg, msg);
}
#define luaL_typeerror concur_typeerror
#endif

/* ---- the main Lua thread of a state --------------------------------------- */
/* Pushes it (5.2+: the registry's; 5.1 has no such slot: L itself when it is
 * the one concur opened in, which is what its callers need). */
static inline void concur_push_mainthread(lua_State *L) {
#ifdef LUA_RIDX_MAINTHREAD
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
#else
  lua_pushthread(L);
#endif
}

/* ---- binary chunks (lua-compat-5.3 gives 5.1/5.2 the strip and mode
 * arguments) ------------------------------------------------------------------ */
#define concur_dump(L, w, d, strip) lua_dump((L), (w), (d), (strip))
#define concur_load_binary(L, r, d, name) lua_load((L), (r), (d), (name), "b")

/* ---- registry tables and the globals ---------------------------------------- */
#ifndef LUA_LOADED_TABLE
#define LUA_LOADED_TABLE "_LOADED"
#endif

/* Pushes package.preload. */
static inline void concur_push_preload(lua_State *L) {
#ifdef LUA_PRELOAD_TABLE
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
#else
  /* 5.1, 5.2: a field of the package table, made by luaopen_package */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  luaL_getsubtable(L, -1, "package");
  luaL_getsubtable(L, -1, "preload");
  lua_replace(L, -3);
  lua_pop(L, 1);
#endif
}

/* Pushes the global table. */
static inline void concur_push_globals(lua_State *L) {
#ifdef LUA_RIDX_GLOBALS
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
#else
  lua_pushvalue(L, LUA_GLOBALSINDEX);
#endif
}

#ifndef LUA_MAXINTEGER
#include <stdint.h>
#define LUA_MAXINTEGER PTRDIFF_MAX   /* 5.1, 5.2: lua_Integer is ptrdiff_t */
#endif

/* ---- integer arguments as 5.3 takes them ------------------------------------ */
/* 5.1, 5.2 and LuaJIT truncate any number to an integer (0.5 -> 0, 2^70 ->
 * garbage): here a number (or numeric string) is an integer only when its
 * value is one and fits, as on 5.3, so `sem(0.5)` is a bad argument on every
 * runtime. */
#if LUA_VERSION_NUM < 503
#include <math.h>
static inline lua_Integer concur_tointegerx(lua_State *L, int idx, int *isint) {
  int isnum = 0;
  lua_Number n = lua_tonumberx(L, idx, &isnum);
  /* -2^63 <= n < 2^63 (lua_Integer is 64 bits on every Linux target) */
  int ok = isnum && n >= -9223372036854775808.0 && n < 9223372036854775808.0 &&
           (lua_Number)(lua_Integer)n == n;
  if (isint)
    *isint = ok;
  return ok ? (lua_Integer)n : 0;
}
#undef lua_tointegerx
#define lua_tointegerx concur_tointegerx

/* A number the transfer may send as an integer: as above, and not -0.0
 * (compat-5.3's lua_isinteger says 1 for it, and its sign would be lost). */
static inline int concur_isinteger(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    return 0;
  lua_Number n = lua_tonumber(L, idx);
  return n >= -9223372036854775808.0 && n < 9223372036854775808.0 &&
         (lua_Number)(lua_Integer)n == n && !(n == 0 && signbit(n));
}
#undef lua_isinteger
#define lua_isinteger concur_isinteger

static inline lua_Integer concur_checkinteger(lua_State *L, int arg) {
  int isint = 0;
  lua_Integer i = concur_tointegerx(L, arg, &isint);
  if (!isint) {
    if (lua_isnumber(L, arg))
      luaL_argerror(L, arg, "number has no integer representation");
    else
      luaL_typeerror(L, arg, lua_typename(L, LUA_TNUMBER));
  }
  return i;
}
#undef luaL_checkinteger
#define luaL_checkinteger concur_checkinteger

static inline lua_Integer concur_optinteger(lua_State *L, int arg, lua_Integer def) {
  return lua_isnoneornil(L, arg) ? def : concur_checkinteger(L, arg);
}
#undef luaL_optinteger
#define luaL_optinteger concur_optinteger
#endif

/* ---- array indices as lua_Integer -------------------------------------------- */
/* 5.1, 5.2 and LuaJIT take an int index: a larger one wrapped (a slice of
 * list[2^53 - 1 ..] read list[-1]).  Here an index past int goes through
 * lua_rawget/lua_rawset with the number as key, as 5.3 does. */
#if LUA_VERSION_NUM < 503
#include <limits.h>
static inline int concur_rawgeti(lua_State *L, int idx, lua_Integer n) {
  if (n >= INT_MIN && n <= INT_MAX)
    return lua_rawgeti(L, idx, (int)n);
  idx = lua_absindex(L, idx);
  lua_pushinteger(L, n);
  return lua_rawget(L, idx);
}
static inline void concur_rawseti(lua_State *L, int idx, lua_Integer n) {
  if (n >= INT_MIN && n <= INT_MAX) {
    lua_rawseti(L, idx, (int)n);
    return;
  }
  idx = lua_absindex(L, idx);
  lua_pushinteger(L, n);
  lua_insert(L, -2);
  lua_rawset(L, idx);
}
#undef lua_rawgeti
#define lua_rawgeti concur_rawgeti
#undef lua_rawseti
#define lua_rawseti concur_rawseti
#endif

/* ---- shared upvalues ------------------------------------------------------- */
/* Lua 5.1 cannot tell or join shared upvalues (LuaJIT can): every upvalue
 * travels as its own value, and the encoder writes no join. */
#if LUA_VERSION_NUM == 501 && !CONCUR_LUAJIT
#define lua_upvalueid(L, f, n) ((void)(L), (void)(f), (void)(n), (void *)NULL)
#define lua_upvaluejoin(L, f1, n1, f2, n2) \
  ((void)(L), (void)(f1), (void)(n1), (void)(f2), (void)(n2))
#endif

/* ---- a C function called protected, on a state nothing protects yet ---------- */
/* f(L) with the light userdata ud at 1.  On 5.1 and LuaJIT pushing a C
 * function allocates a closure (and LuaJIT's GC64 may allocate for a light
 * userdata), which may raise out of memory outside any protection (the
 * panic): lua_cpcall pushes both inside.  From 5.2 on neither allocates. */
#if LUA_VERSION_NUM < 502
#define concur_cpcall(L, f, ud) lua_cpcall((L), (f), (ud))
#else
#define concur_cpcall(L, f, ud) \
  (lua_pushcfunction((L), (f)), lua_pushlightuserdata((L), (ud)), lua_pcall((L), 1, 0, 0))
#endif

/* ---- room on the stack, without raising ------------------------------------- */
/* 5.4's lua_checkstack answers 0 when memory runs out; 5.1 to 5.3 and LuaJIT
 * raise the memory error from it.  concur_checkstack never raises (the
 * transfer's encoder must not): the stack grows inside a protected call,
 * after which lua_checkstack finds the room and allocates nothing. */
#if LUA_VERSION_NUM < 504
typedef struct concur_room {
  int n, ok;
} concur_room;
static inline int concur_checkstack_f(lua_State *L) {
  concur_room *r = (concur_room *)lua_touserdata(L, 1);
  r->ok = lua_checkstack(L, r->n + 4);   /* + the call's own 2 slots */
  return 0;
}
static inline int concur_checkstack(lua_State *L, int n) {
  concur_room r = {n, 0};
  if (concur_cpcall(L, concur_checkstack_f, &r) != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  return r.ok && lua_checkstack(L, n);
}
#else
#define concur_checkstack(L, n) lua_checkstack((L), (n))
#endif

/* ---- C functions pushed without allocating --------------------------------- */
/* On 5.1 and LuaJIT every lua_pushcfunction makes a closure, so it may raise
 * out of memory where concur holds something it must give back (an item
 * taken from a queue, before the protected call that decodes it).  Each
 * state keeps the closure it made first in its registry, keyed by the
 * function, and takes it from there afterwards: a lookup allocates nothing.
 * (Every operation has run once before memory runs short, in practice; the
 * first push of a function may still raise, as any push did.) */
#if LUA_VERSION_NUM < 502
#include <stdint.h>
static inline void concur_pushcfunction(lua_State *L, lua_CFunction f) {
  void *key = (void *)(uintptr_t)f;
  lua_pushlightuserdata(L, key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_iscfunction(L, -1))
    return;
  lua_pop(L, 1);
  lua_pushcclosure(L, f, 0);
  lua_pushlightuserdata(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}
#undef lua_pushcfunction
#define lua_pushcfunction(L, f) concur_pushcfunction((L), (f))
#endif

/* ---- a protected call that may yield (5.3+), else a plain one -------------- */
#if LUA_VERSION_NUM < 503 && !defined(LUA_KCONTEXT)
typedef ptrdiff_t concur_KContext;
#define lua_KContext concur_KContext
#endif
#if LUA_VERSION_NUM >= 503
#define concur_pcallk(L, na, nr, ctx, k) lua_pcallk((L), (na), (nr), 0, (ctx), (k))
#else
#define concur_pcallk(L, na, nr, ctx, k) ((void)(ctx), (void)(k), lua_pcall((L), (na), (nr), 0))
#endif

#endif
