/*
 * pool.c - the C helpers of Pool and ThreadPool (lua/concur/pool.lua):
 * Slots, a shared array of integers.  A Pool worker writes the task it is
 * running into its own slot, and the owner reads the slot of a worker that
 * died.  Shared, so it serves worker threads and worker processes alike.
 * A Future's claim is a slot too: the owner writes the task's id there, a
 * worker swaps it for -id before running the task and the owner for 0 to
 * cancel it; the swap that finds the id wins (slots:cas).  And newtable,
 * a presized table for a map's results.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdint.h>

#include "pool.h"

typedef struct slots_obj {
  cobj hdr;
  lua_Integer n;
  _Atomic int64_t v[];
} slots_obj;

static void slots_destroy(cobj *o) { shm_free(o); }
static void slots_meta(lua_State *L);
static const cobj_type slots_type = {"concur.Slots", slots_destroy, NULL, 1, slots_meta, NULL, NULL, NULL};

#define SLOTS_MAX 65536

static int slots_new(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= SLOTS_MAX, 1, "number of slots out of range");
  slots_obj *s = cobj_new_shared(L, &slots_type, sizeof *s + (size_t)n * sizeof s->v[0]);
  s->n = n;
  cobj_bind(L, -1, &s->hdr);
  return 1;
}

static _Atomic int64_t *slots_at(lua_State *L) {
  slots_obj *s = cobj_self(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_argcheck(L, i >= 1 && i <= s->n, 2, "slot index out of range");
  return &s->v[i - 1];
}

static int slots_get(lua_State *L) {
  lua_pushinteger(L, atomic_load(slots_at(L)));
  return 1;
}

static int slots_set(lua_State *L) {
  _Atomic int64_t *slot = slots_at(L);
  atomic_store(slot, luaL_checkinteger(L, 3));
  return 0;
}

/* slots:cas(i, expected, new) -> true if slot i held expected (now new). */
static int slots_cas(lua_State *L) {
  _Atomic int64_t *slot = slots_at(L);
  int64_t expected = luaL_checkinteger(L, 3);
  int64_t desired = luaL_checkinteger(L, 4);
  lua_pushboolean(L, atomic_compare_exchange_strong(slot, &expected, desired));
  return 1;
}

static int slots_tostring(lua_State *L) {
  lua_pushfstring(L, "<concur.Slots n=%d>", (int)((slots_obj *)cobj_self(L))->n);
  return 1;
}

static void slots_meta(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"get", slots_get}, {"set", slots_set}, {"cas", slots_cas}, {"__tostring", slots_tostring}, {NULL, NULL}};
  cobj_newmetatable(L, &slots_type, NULL);
  lua_pushvalue(L, -1);   /* upvalue 1 of each method, for cobj_self */
  luaL_setfuncs(L, methods, 1);
  cobj_register_metatable(L, &slots_type);
  lua_pop(L, 1);
}

/* core.newtable(narr) -> an empty table with room for narr array items: a
 * map's result list, filled chunk by chunk without a rehash on the way. */
static int pool_newtable(lua_State *L) {
  lua_Integer narr = luaL_checkinteger(L, 1);
  luaL_argcheck(L, narr >= 0 && narr <= INT_MAX, 1, "size out of range");
  lua_createtable(L, (int)narr, 0);
  return 1;
}

void pool_open(lua_State *L) {
  static const luaL_Reg funcs[] = {{"Slots", slots_new}, {"newtable", pool_newtable}, {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
}
