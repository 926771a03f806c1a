/*
 * shared.h - what the rest of concur needs of shared.c (Value, Array) and
 * dict.c (Dict): their openers, and what both use.
 */
#ifndef CONCUR_SHARED_H
#define CONCUR_SHARED_H

#include "lua.h"
#include "lauxlib.h"

/* A method called o:name(...) takes at most `most` stack slots, self
 * included; one more is "bad argument #most to 'name' (no value
 * expected)", numbered as Lua numbers a method's arguments (self not
 * counted: q:put(x, "no") is bad argument #2). */
static inline void method_no_more_args(lua_State *L, int most, const char *fname) {
  if (lua_gettop(L) > most)
    luaL_error(L, "bad argument #%d to '%s' (no value expected)", most, fname);
}

void shared_open(lua_State *L);
void dict_open(lua_State *L);

#endif
