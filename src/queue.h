/*
 * queue.h - what the rest of concur needs of queue.c: its opener.
 */
#ifndef CONCUR_QUEUE_H
#define CONCUR_QUEUE_H

#include "lua.h"

void queue_open(lua_State *L);

#endif
