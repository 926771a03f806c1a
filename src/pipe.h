/*
 * pipe.h - what the rest of concur needs of pipe.c: its opener.
 */
#ifndef CONCUR_PIPE_H
#define CONCUR_PIPE_H

#include "lua.h"

void pipe_open(lua_State *L);

#endif
