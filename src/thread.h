/*
 * thread.h - concur.Thread and the process's thread runtime (thread.c).
 */
#ifndef CONCUR_THREAD_H
#define CONCUR_THREAD_H

#include "lua.h"

void thread_open(lua_State *L);    /* metatables, core functions */
void thread_runtime_init(void);    /* once per process, from luaopen */
int thread_is_worker(void);        /* this OS thread is a concur worker */
/* Around a fork by concur.Process: holds the runtime's lock so that no
 * thread changes state (and no message changes hands) until fork returns. */
void thread_fork_freeze(void);
void thread_fork_thaw(void);

#endif
