/*
 * sync.h - what the rest of concur needs of sync.c: its opener, and RLocks
 * for the objects that carry one.
 */
#ifndef CONCUR_SYNC_H
#define CONCUR_SYNC_H

#include "object.h"

void sync_open(lua_State *L);
/* For the other shared objects (shared.c: Python's get_lock()): a new RLock
 * in the arena, its count 1 (NULL when the arena is full); whether o is a
 * Lock or an RLock; obj:with(fn, ...) for the Lock or RLock handle at index 1
 * (fn at 2): fn's results, the lock released however fn ends. */
cobj *sync_rlock_make(void);
int sync_is_lock(const cobj *o);
int sync_with_body(lua_State *L);

#endif
