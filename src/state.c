/*
 * state.c - a Lua state for concur's own threads: building one (standard
 * libraries, print, os.exit, concur preloaded, the host's setup hook, concur
 * required) on a worker's bump arena; the host hooks of concur.h; the
 * line-atomic print; and the text of an error report.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lualib.h"
#include "state.h"
#include "exit.h"

static void (*preload_callback)(lua_State *L);

void state_on_preload(void (*callback)(lua_State *L)) { preload_callback = callback; }

/* ---- host hooks ----------------------------------------------------------- */

/* Set by the host before its first thread starts; read-only afterwards. */
static concur_setup_fn setup_fn;
static void *setup_ud;
static concur_report_fn report_fn;
static void *report_ud;

void concur_set_thread_setup(concur_setup_fn fn, void *ud) {
  setup_fn = fn;
  setup_ud = ud;
}

void concur_set_error_report(concur_report_fn fn, void *ud) {
  report_fn = fn;
  report_ud = ud;
}

int state_run_setup_hook(lua_State *L) {
  if (setup_fn == NULL)
    return 0;
  int top = lua_gettop(L);
  int rc = setup_fn(L, setup_ud);
  if (rc != 0 && lua_gettop(L) == top)
    lua_pushliteral(L, "the host's thread setup function failed");
  else if (rc == 0)
    lua_settop(L, top);
  return rc;
}

void state_report_error(const char *report) {
  if (report_fn) {
    report_fn(report, report_ud);
    return;
  }
  fwrite(report, 1, strlen(report), stderr);
  fflush(stderr);
}

/* Protected by state_error_string: the string form of the value at 1. */
static int error_tostring(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

const char *state_error_string(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  int t = lua_type(L, idx);
  int has_tostring = t != LUA_TSTRING && t != LUA_TNUMBER &&
                     luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL;
  if (has_tostring)
    lua_pop(L, 1);
  else if (t != LUA_TSTRING && t != LUA_TNUMBER)
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  lua_pushcfunction(L, error_tostring);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK)
    return lua_tostring(L, -1);
  const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
  const char *s = lua_pushfstring(L, "(error object is a %s value; its __tostring failed: %s)",
                                  luaL_typename(L, idx), why);
  lua_remove(L, -2);
  return s;
}

/* ---- print ---------------------------------------------------------------- */

/* The standard print, but each call's line goes out in one write, so lines of
 * threads printing at once never mix. */
int state_print(lua_State *L) {
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  fwrite(s, 1, len, stdout);   /* one call: stdio's lock keeps it whole */
  fflush(stdout);
  return 0;
}

static pthread_once_t std_print_once = PTHREAD_ONCE_INIT;
static lua_CFunction std_print;

static void find_std_print(void) {
  lua_State *T = luaL_newstate();
  if (T == NULL)
    return;
  luaL_requiref(T, "_G", luaopen_base, 1);
  lua_getfield(T, -1, "print");
  std_print = lua_tocfunction(T, -1);
  lua_close(T);
}

/* Replaces the global print of L if it is Lua's own; a host's stays. */
void state_adopt_print(lua_State *L) {
  pthread_once(&std_print_once, find_std_print);
  lua_getglobal(L, "print");
  if (std_print && lua_tocfunction(L, -1) == std_print) {
    lua_pushcfunction(L, state_print);
    lua_setglobal(L, "print");
  }
  lua_pop(L, 1);
}

/* ---- building a thread's state ------------------------------------------- */

/* Runs as a protected call in a fresh state: everything a thread's state has
 * before the thread's own code. */
static int state_setup(lua_State *L) {
  luaL_openlibs(L);
  lua_pushcfunction(L, state_print);
  lua_setglobal(L, "print");
  lua_getglobal(L, "os");
  lua_pushcfunction(L, exit_os_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  if (preload_callback)
    preload_callback(L);
  if (state_run_setup_hook(L) != 0)
    return lua_error(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "concur");
  lua_call(L, 1, 1);
  lua_setglobal(L, "concur");
  return 0;
}

static void *arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  state_arena *a = ud;
  int inside = ptr != NULL && (char *)ptr >= a->base && (char *)ptr < a->base + STATE_ARENA_SIZE;
  if (nsize == 0) {
    if (!inside)
      free(ptr);
    return NULL;
  }
  if (inside) {
    if (nsize <= osize)
      return ptr;
    void *moved = malloc(nsize);
    if (moved)
      memcpy(moved, ptr, osize);
    return moved;
  }
  if (ptr == NULL && a->building) {
    size_t need = (nsize + 15) & ~(size_t)15;
    if (STATE_ARENA_SIZE - a->used >= need) {
      void *p = a->base + a->used;
      a->used += need;
      return p;
    }
  }
  return realloc(ptr, nsize);
}

static int state_panic(lua_State *L) {
  const char *m = lua_tostring(L, -1);
  fprintf(stderr, "concur: unprotected error in a thread's Lua state: %s\n", m ? m : "?");
  fflush(stderr);
  return 0;
}

/* Builds a state on `a` (which must hold no live state), or on the heap
 * when a is NULL. */
lua_State *state_build(state_arena *a, char *err, size_t errlen) {
  lua_State *L;
  if (a) {
    a->used = 0;
    a->building = 1;
    L = lua_newstate(arena_alloc, a);
  } else {
    L = luaL_newstate();
  }
  if (L)
    lua_atpanic(L, state_panic);
  if (L == NULL) {
    snprintf(err, errlen, "cannot create a Lua state: not enough memory");
    return NULL;
  }
  if (concur_cpcall(L, state_setup, NULL) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    snprintf(err, errlen, "cannot set up the thread's Lua state: %s", m ? m : "?");
    lua_close(L);
    if (a)
      a->building = 0;
    return NULL;
  }
  if (a)
    a->building = 0;
  err[0] = 0;
  return L;
}


