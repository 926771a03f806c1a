/*
 * pool.h - the C helpers of the Lua layer's Pool (pool.c).
 */
#ifndef CONCUR_POOL_H
#define CONCUR_POOL_H

#include "object.h"

void pool_open(lua_State *L);   /* core.Slots */

#endif
