/*
 * shared.h - what the rest of concur needs of shared.c (Value, Array) and
 * dict.c (Dict): their openers.
 */
#ifndef CONCUR_SHARED_H
#define CONCUR_SHARED_H

#include "lua.h"

void shared_open(lua_State *L);
void dict_open(lua_State *L);

#endif
