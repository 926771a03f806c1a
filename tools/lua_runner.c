/*
 * A minimal stand-in for the `lua` interpreter, for the sanitizer builds:
 * compiled with -fsanitize=..., its sanitizer runtime starts with the process
 * (no LD_PRELOAD, which would also reach every /bin/sh the specs start and
 * crash it under ThreadSanitizer).  Lua is linked statically and exported
 * (-Wl,-E) so that concur/core.so binds to it, as with the stock lua5.4.
 *
 *   usage: lua_runner [-e chunk]... [script [args...]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

/* As lua.c's: a non-string error object with a __tostring is its message. */
static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int run(lua_State *L, int status, int nargs) {
  if (status == LUA_OK) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
  }
  if (status != LUA_OK) {
    fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return 1;
  luaL_openlibs(L);
  int i = 1, status = LUA_OK;
  while (i + 1 < argc && strcmp(argv[i], "-e") == 0)
    i += 2;
  /* arg[0] is the script; the interpreter and options get negative indices */
  lua_createtable(L, argc, 1);
  for (int j = 0; j < argc; j++) {
    lua_pushstring(L, argv[j]);
    lua_rawseti(L, -2, j - i);
  }
  lua_setglobal(L, "arg");
  for (int j = 1; j < i && status == LUA_OK; j += 2)
    status = run(L, luaL_loadstring(L, argv[j + 1]), 0);
  if (status == LUA_OK && i < argc) {
    int nargs = argc - i - 1;
    status = luaL_loadfile(L, argv[i]);
    for (int j = i + 1; j < argc && status == LUA_OK; j++)
      lua_pushstring(L, argv[j]);
    status = run(L, status, status == LUA_OK ? nargs : 0);
  }
  lua_close(L);
  return status == LUA_OK ? EXIT_SUCCESS : EXIT_FAILURE;
}
