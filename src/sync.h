/*
 * sync.h - what the rest of concur needs of sync.c: its opener.
 */
#ifndef CONCUR_SYNC_H
#define CONCUR_SYNC_H

#include "lua.h"

void sync_open(lua_State *L);

#endif
