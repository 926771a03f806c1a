/*
 * state.h - the Lua states concur builds for its threads, print, and the
 * host hooks (state.c).
 */
#ifndef CONCUR_STATE_H
#define CONCUR_STATE_H

#include "arena.h"

/* A worker's state is built many times over.  Its start-up objects (the
 * standard libraries, concur) are bump-allocated from an arena the worker
 * keeps (STATE_ARENA_SIZE bytes at base, malloc'd by the worker): building
 * costs no malloc, closing frees them all at once.  Blocks of the arena are
 * never freed one by one; a block that grows moves to the heap.  Once built,
 * the state allocates from the heap as usual. */
#define STATE_ARENA_SIZE (96 * 1024)
typedef struct state_arena {
  char *base;
  size_t used;
  int building;
} state_arena;

/* Builds a thread's state on `a` (which must hold no live state), or on
 * the heap when a is NULL.  NULL, with the reason in err, when it cannot. */
lua_State *state_build(state_arena *a, char *err, size_t errlen);
/* Callback of core.c: puts concur and its modules into package.preload of a
 * state being built. */
void state_on_preload(void (*callback)(lua_State *L));

/* The standard print, but each call's line goes out in one write. */
int state_print(lua_State *L);
/* Replaces the global print of L if it is Lua's own; a host's stays. */
void state_adopt_print(lua_State *L);

/* The host hooks (concur.h). */
int state_run_setup_hook(lua_State *L);   /* 0 ok; else error message on top */
void state_report_error(const char *report);
/* Pushes and returns the text a report shows for the error value at idx:
 * a string or number as itself (the value at idx left as it is), a value
 * with __tostring as that gives it, else "(error object is a T value)".  A
 * failing __tostring is caught and said, never raised: reporting an error
 * must not replace it.  Raises only for lack of memory. */
const char *state_error_string(lua_State *L, int idx);

#endif
