/*
 * intr.c - Ctrl-C in the host's main thread: which thread is the host's,
 * the wrapped SIGINT handler, and the pending interrupt every blocking wait
 * asks about (the rule is in intr.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>

#include "intr.h"


/* lua.c's SIGINT handler (laction) resets SIGINT to SIG_DFL, so that a second
 * Ctrl-C kills, and arms a hook on its main Lua thread (globalL) with mask
 * CALL|RET|LINE|COUNT and count 1 whose function (lstop) raises
 * "interrupted!".  Left alone, that hook fires at the RET of the concur call
 * that is running, after the call took its queue item or lock: the results
 * are dropped by the error and the item is lost.  And a wait the signal does
 * not end (a condition variable, a futex under SA_RESTART) goes on.
 *
 * So on the host's main OS thread (the one that first opened concur, not a
 * worker; in a forked child, the one thread there is) every blocking wait
 * sleeps in slices of at most INTR_SLICE_MS and asks intr_pending() at each
 * wake: an interrupt while nothing is taken raises "interrupted!" there
 * (intr_raise), and a call that completes with one pending hands it on as a
 * COUNT hook (intr_settle): it fires at the next VM instruction, once the
 * call's results are assigned (Python's KeyboardInterrupt, at the next
 * bytecode).  The handler itself is wrapped when we find it installed
 * (intr_watch): after lua.c's handler ran, ours turns its hook into that
 * COUNT hook at once, so no RET ever drops results, however late the signal
 * comes.  Worker threads block SIGINT: the kernel delivers it to the main
 * thread, the one the hook is about. */
#define INTR_MASK_LUAC (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)

static lua_State *intr_main;    /* the host's main Lua thread: lua.c's globalL */
static lua_State *intr_extra;   /* a forked child: the Lua thread its run method runs in */
static _Thread_local char intr_home __attribute__((tls_model("initial-exec")));
static struct sigaction intr_prev;   /* the handler we wrap */

static void intr_hook(lua_State *L, lua_Debug *ar) {
  CONCUR_UNUSED(ar);
  intr_disarm(L);
  lua_pushliteral(L, "interrupted!");
  lua_error(L);
}

/* M carries lua.c's stop hook, or ours. */
static int intr_armed(lua_State *M) {
  lua_Hook h = lua_gethook(M);
  if (h == NULL)
    return 0;
  if (h == intr_hook)
    return 1;
  return lua_gethookcount(M) == 1 && (lua_gethookmask(M) & INTR_MASK_LUAC) == INTR_MASK_LUAC;
}

int intr_pending(void) {
  if (!intr_home)
    return 0;
  return (intr_main && intr_armed(intr_main)) ||
         (intr_extra && lua_gethook(intr_extra) == intr_hook);
}

void intr_disarm(lua_State *L) {
  if (intr_main && intr_armed(intr_main))
    lua_sethook(intr_main, NULL, 0, 0);
  if (intr_extra && lua_gethook(intr_extra) == intr_hook)
    lua_sethook(intr_extra, NULL, 0, 0);
  if (L && lua_gethook(L) == intr_hook)
    lua_sethook(L, NULL, 0, 0);
}

int intr_raise(lua_State *L) {
  intr_disarm(L);
  lua_pushliteral(L, "interrupted!");
  return lua_error(L);
}

void intr_rearm(lua_State *L) {
  lua_sethook(L, intr_hook, LUA_MASKCOUNT, 1);
}

void intr_settle(lua_State *L) {
  if (!intr_pending())
    return;
  intr_disarm(L);
  intr_rearm(L);
}

int intr_hold(lua_State *L) {
  if (!intr_pending())
    return 0;
  intr_disarm(L);
  return 1;
}

/* Async-signal-safe: the handler we wrapped, then its hook made ours (a
 * field store or two, as lua.c's own lua_sethook from its handler). */
static void intr_on_signal(int sig) {
  int saved = errno;
  void (*prev)(int) = intr_prev.sa_handler;
  if (prev != SIG_DFL && prev != SIG_IGN && prev != intr_on_signal)
    prev(sig);
  if (intr_main && intr_armed(intr_main)) {
    lua_sethook(intr_main, intr_hook, LUA_MASKCOUNT, 1);
    if (intr_extra)
      lua_sethook(intr_extra, intr_hook, LUA_MASKCOUNT, 1);
  }
  errno = saved;
}

/* Wraps the SIGINT handler if it is a plain one other than ours (lua.c sets
 * its own around each chunk it runs).  SIGINT is blocked meanwhile: else a
 * signal between the look and the change would have lua.c's handler reset it
 * to SIG_DFL, and we would put a handler back where a second Ctrl-C must
 * kill. */
static void intr_watch(void) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &block, &old) != 0)
    return;
  struct sigaction cur;
  if (sigaction(SIGINT, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
      cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN &&
      cur.sa_handler != intr_on_signal) {
    intr_prev = cur;
    struct sigaction mine = cur;
    mine.sa_handler = intr_on_signal;
    sigaction(SIGINT, &mine, NULL);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int intr_slice_ms(int slice_ms) {
  if (!intr_home || intr_main == NULL)
    return slice_ms;
  intr_watch();
  return slice_ms <= 0 || slice_ms > INTR_SLICE_MS ? INTR_SLICE_MS : slice_ms;
}

void intr_adopt(lua_State *L, int on_worker) {
  if (intr_main != NULL || on_worker)
    return;
  concur_push_mainthread(L);
  intr_main = lua_tothread(L, -1);
  lua_pop(L, 1);
  intr_home = 1;
  intr_watch();
}

void intr_child(lua_State *run) {
  intr_home = 1;
  intr_extra = run;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);   /* a worker's fork blocked it */
}
