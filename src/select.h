/*
 * select.h - what the rest of concur needs of select.c: its opener
 * (core.select, the wait under concur.select).
 */
#ifndef CONCUR_SELECT_H
#define CONCUR_SELECT_H

#include "lua.h"

void select_open(lua_State *L);

#endif
