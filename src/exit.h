/*
 * exit.h - the end of a process (exit.c): which thread ends it, with which
 * status, and the exit rules it runs first (API.md, "Threads": wait for the
 * non-daemon threads, join the non-daemon children and stop the daemon ones,
 * then let the parked workers close their states).
 *
 * The rules are steps that the layers above register (callbacks, named as
 * such: this file calls no file above it), run in the order of enum
 * exit_step by the one thread that claimed the end.
 */
#ifndef CONCUR_EXIT_H
#define CONCUR_EXIT_H

#include "arena.h"

enum exit_step {
  EXIT_THREADS,    /* thread.c: wait for the non-daemon threads */
  EXIT_CHILDREN,   /* process.c: join non-daemon children, stop daemon ones */
  EXIT_WORKERS,    /* thread.c: the parked workers close their states and leave */
  EXIT_NSTEPS
};
void exit_on_step(enum exit_step step, void (*callback)(void));
/* Callback: the calling thread lost the claim and parks for ever (thread.c
 * counts its Thread as ended, so that the rules do not wait for it). */
void exit_on_abandon(void (*callback)(void));
/* Callback: run by exit_leave just before _exit (process.c, in a forked
 * child: gives back its state's references).  NULL: none. */
void exit_on_leave(void (*callback)(void));

/* Once per process, from the thread runtime's init: the atexit handler (the
 * main thread's exit(): the end of the main chunk, os.exit there) and the
 * fork handlers. */
void exit_runtime_init(void);

/* Claims the end of the process.  The first thread to get here (os.exit in
 * a thread, the main thread's exit, a child process's end) runs the exit
 * rules and ends the process: to it, and to it only, this returns.  Any
 * other thread parks for ever, abandoned (it does not hold up the rules):
 * the process ends under it.  explicit: `code` is an os.exit status; the
 * first one is the status the process ends with (exit_status), over the end
 * of a main chunk, whichever thread runs the rules. */
void exit_claim(int code, int explicit);
/* The registered steps, in order.  Only after exit_claim returned. */
void exit_rules(void);
int exit_status(int code);   /* the first os.exit's status, else code */
/* Claim, rules, stdio flushed, the leave callback, then _exit with
 * exit_status(code): C exit() would run the atexit handlers a second time
 * in a forked child, and races with an exit() in another thread (glibc
 * before 2.41 lets the second caller end the process at once, with its
 * status). */
__attribute__((noreturn)) void exit_leave(int code, int explicit);
/* os.exit for every state but the host's main one (threads' states, a
 * forked child's): Lua's statuses (true 0, false 1, default 0; `close` is
 * ignored: the state is in use), then exit_leave. */
int exit_os_exit(lua_State *L);

#endif
