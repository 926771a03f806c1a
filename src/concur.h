/*
 * concur.h - the C interface of concur for programs that embed Lua 5.4.
 *
 * A host links concur (statically, or loads it as a plugin) and opens it in
 * its own lua_State:
 *
 *     luaL_requiref(L, "concur", luaopen_concur, 0);   -- or concur_openlibs
 *
 * Every thread concur starts gets a new lua_State with the standard libraries
 * and concur.  A host that wants its own libraries there registers a setup
 * function; it runs in each new thread state before any of the thread's code.
 * A host that wants error reports of threads elsewhere than stderr registers
 * a reporter.  Both must be registered before the first thread starts and
 * must be safe to call from any thread.
 */
#ifndef CONCUR_H
#define CONCUR_H

#include "lua.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CONCUR_VERSION "0.1.0"

/* The library is built with hidden symbols; these are its interface. */
#if defined(__GNUC__)
#define CONCUR_API __attribute__((visibility("default")))
#else
#define CONCUR_API
#endif

/* Opens the whole module (C core and Lua layer); returns 1 (the table).
 * Works with no package.path: the Lua layer is compiled into the library. */
CONCUR_API int luaopen_concur(lua_State *L);
/* Opens the C core only ("concur.core"), as `require "concur.core"` does. */
CONCUR_API int luaopen_concur_core(lua_State *L);

/* Runs in every new thread's state, after the standard libraries and before
 * concur and the thread's code.  Return 0 on success; on failure push an
 * error message and return nonzero: the thread then fails with it.  The host
 * may replace `print` here: concur only replaces the standard one. */
typedef int (*concur_setup_fn)(lua_State *L, void *ud);
CONCUR_API void concur_set_thread_setup(concur_setup_fn fn, void *ud);

/* Receives the report of an error that ended a thread ("Exception in thread
 * NAME:" and the traceback, as one string ending in a newline).  Default:
 * written to stderr in one piece. */
typedef void (*concur_report_fn)(const char *report, void *ud);
CONCUR_API void concur_set_error_report(concur_report_fn fn, void *ud);

#ifdef __cplusplus
}
#endif

#endif
