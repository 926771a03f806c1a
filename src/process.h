/*
 * process.h - concur.Process on fork() (process.c).
 */
#ifndef CONCUR_PROCESS_H
#define CONCUR_PROCESS_H

#include "lua.h"

void proc_open(lua_State *L);
void proc_runtime_init(void);      /* once per process, from luaopen */

#endif
