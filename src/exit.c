/*
 * exit.c - the end of a process: one thread, the first to get there, claims
 * it, runs the exit rules (steps registered by thread.c and process.c) and
 * ends the process with the first os.exit's status; any other thread parks.
 *
 * exit_lock guards the claim and the status only; no other lock is taken
 * while it is held (the fork handlers take it last, after the thread
 * runtime's lock).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "exit.h"

static pthread_mutex_t exit_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t exit_parked = PTHREAD_COND_INITIALIZER;   /* never signalled */
static int exit_claimed;
static pthread_t exit_runner;     /* valid when exit_claimed */
static int exit_code_set;         /* an os.exit gave the status */
static int exit_code;

static void (*step_callbacks[EXIT_NSTEPS])(void);
static void (*abandon_callback)(void);
static void (*leave_callback)(void);

void exit_on_step(enum exit_step step, void (*callback)(void)) { step_callbacks[step] = callback; }
void exit_on_abandon(void (*callback)(void)) { abandon_callback = callback; }
void exit_on_leave(void (*callback)(void)) { leave_callback = callback; }

void exit_claim(int code, int explicit) {
  pthread_mutex_lock(&exit_lock);
  if (explicit && !exit_code_set) {
    exit_code_set = 1;
    exit_code = code;
  }
  int lost = 0;
  if (!exit_claimed) {
    exit_claimed = 1;
    exit_runner = pthread_self();
  } else if (!pthread_equal(exit_runner, pthread_self())) {
    lost = 1;
  }
  pthread_mutex_unlock(&exit_lock);
  if (!lost)
    return;
  if (abandon_callback)
    abandon_callback();
  pthread_mutex_lock(&exit_lock);
  for (;;)
    pthread_cond_wait(&exit_parked, &exit_lock);
}

void exit_rules(void) {
  for (int i = 0; i < EXIT_NSTEPS; i++)
    if (step_callbacks[i])
      step_callbacks[i]();
}

int exit_status(int code) {
  pthread_mutex_lock(&exit_lock);
  if (exit_code_set)
    code = exit_code;
  pthread_mutex_unlock(&exit_lock);
  return code;
}

void exit_leave(int code, int explicit) {
  exit_claim(code, explicit);
  exit_rules();
  fflush(NULL);
  if (leave_callback)
    leave_callback();
  _exit(exit_status(code));
}

int exit_os_exit(lua_State *L) {
  int code;
  if (lua_isboolean(L, 1))
    code = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
  else
    code = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
  exit_leave(code, 1);
}

/* The main thread's exit() (the end of the main chunk, os.exit there), or
 * exit() in a thread concur does not run Lua in.  When an os.exit in a
 * thread gave a status meanwhile, the process ends with it. */
static void exit_at_exit(void) {
  exit_claim(0, 0);
  exit_rules();
  pthread_mutex_lock(&exit_lock);
  int set = exit_code_set, code = exit_code;
  pthread_mutex_unlock(&exit_lock);
  if (set) {
    fflush(NULL);
    _exit(code);
  }
}

static void exit_atfork_prepare(void) { pthread_mutex_lock(&exit_lock); }
static void exit_atfork_parent(void) { pthread_mutex_unlock(&exit_lock); }
/* The parent's end, if under way, is the parent's: this process has its own
 * (a fork may race with an os.exit in another thread). */
static void exit_atfork_child(void) {
  exit_claimed = 0;
  exit_code_set = 0;
  leave_callback = NULL;
  pthread_cond_init(&exit_parked, NULL);
  pthread_mutex_unlock(&exit_lock);
}

void exit_runtime_init(void) {
  pthread_atfork(exit_atfork_prepare, exit_atfork_parent, exit_atfork_child);
  atexit(exit_at_exit);
}
