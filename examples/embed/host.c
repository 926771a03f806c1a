/*
 * A minimal host program that embeds Lua and links concur statically.
 * It registers a host library ("host") through concur's thread setup hook,
 * so every thread concur starts can call it, and runs a script.
 *
 *   usage: host script.lua [args...]
 */
#include <stdio.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "concur.h"

/* host.greet(name) -> "hello from the host, NAME" */
static int host_greet(lua_State *L) {
  const char *who = luaL_checkstring(L, 1);
  lua_pushfstring(L, "hello from the host, %s", who);
  return 1;
}

/* Opens library `open` as `name`: package.loaded[name] and the global (what
 * luaL_requiref does, which Lua 5.1 and LuaJIT lack). */
static void open_lib(lua_State *L, const char *name, lua_CFunction open) {
  lua_pushcfunction(L, open);
  lua_pushstring(L, name);
  lua_call(L, 1, 1);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
  lua_setglobal(L, name);
}

static int open_host(lua_State *L) {
  static const luaL_Reg funcs[] = {{"greet", host_greet}, {NULL, NULL}};
  lua_newtable(L);
#if LUA_VERSION_NUM >= 502
  luaL_setfuncs(L, funcs, 0);
#else
  luaL_register(L, NULL, funcs);
#endif
  lua_pushliteral(L, "embed-host");
  lua_setfield(L, -2, "name");
  return 1;
}

/* Runs in every new thread state: the host's library is there too. */
static int setup_thread(lua_State *L, void *ud) {
  (void)ud;
  open_lib(L, "host", open_host);
  return 0;
}

/* Thread error reports go to stdout with a prefix, to show the hook works. */
static void report(const char *text, void *ud) {
  (void)ud;
  printf("[host] %s", text);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args...]\n", argv[0]);
    return 2;
  }
  concur_set_thread_setup(setup_thread, NULL);
  concur_set_error_report(report, NULL);
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  open_lib(L, "host", open_host);
  open_lib(L, "concur", luaopen_concur);
  lua_createtable(L, argc, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_setglobal(L, "arg");
  int status = luaL_dofile(L, argv[1]);
  if (status != 0)
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
  lua_close(L);
  return status == 0 ? 0 : 1;
}
