/*
 * intr.c - Ctrl-C in the host's main thread: which thread is the host's,
 * the wrapped SIGINT handler, and the pending interrupt every blocking wait
 * asks about (the rule is in intr.h); and the same for a cancel asked of a
 * worker (t:cancel()), with the signal that wakes it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

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

/* Cancels.  A worker running a Thread binds that Thread's intr_cancel
 * (intr_self).  t:cancel() sets `pending`, then sends INTR_CANCEL_SIGNAL to
 * the worker's OS thread.  Its handler (on that thread, async-signal-safe:
 * one TLS load and lua_sethook, as lua.c's own handler) arms intr_hook with
 * a COUNT of 1 on the worker's main Lua thread, and its delivery (the
 * handler is installed without SA_RESTART) ends a futex wait, poll,
 * recvmsg or clock_nanosleep with EINTR, where the wait asks intr_pending.
 * A signal that comes between a wait's last look and its system call is
 * not seen: the canceller sends it again a few times while the cancel
 * stays pending (thread.c), and the worker's waits are sliced at
 * CANCEL_SLICE_MS as a last resort.  Threads never cancelled pay nothing:
 * no hook, no signal.  intr_hold's `held` keeps the hook from raising in
 * Lua code a completed call runs while it decodes its results: it fires
 * again at each instruction until the call is over. */
static _Thread_local intr_cancel *intr_self __attribute__((tls_model("initial-exec")));
static _Thread_local char intr_held __attribute__((tls_model("initial-exec")));
typedef int (*intr_push_fn)(lua_State *L);
static _Atomic(intr_push_fn) intr_push_cancel;   /* set by every state that opens concur: atomic */
static void intr_hook(lua_State *L, lua_Debug *ar);

/* Takes the calling thread's pending cancel, if any: 1 when there was one. */
static int cancel_take(void) {
  intr_cancel *c = intr_self;
  return c && atomic_load_explicit(&c->pending, memory_order_relaxed) &&
         atomic_exchange(&c->pending, 0);
}

/* Raises concur.CancelledError in L (its pending request taken). */
static int cancel_raise(lua_State *L) {
  intr_held = 0;
  intr_cancel *c = intr_self;
  if (lua_gethook(L) == intr_hook)
    lua_sethook(L, NULL, 0, 0);
  if (c->L && c->L != L && lua_gethook(c->L) == intr_hook)
    lua_sethook(c->L, NULL, 0, 0);
  intr_push_fn push = atomic_load_explicit(&intr_push_cancel, memory_order_relaxed);
  if (push)
    push(L);
  else
    lua_pushliteral(L, "concur.CancelledError");
  return lua_error(L);
}

static void intr_hook(lua_State *L, lua_Debug *ar) {
  CONCUR_UNUSED(ar);
  if (intr_self) {
    if (intr_held)
      return;   /* armed still: fires again once the call is over */
    if (cancel_take())
      cancel_raise(L);
    /* A hook armed for a cancel that a wait raised already. */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
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
  intr_cancel *c = intr_self;
  if (c)
    return atomic_load_explicit(&c->pending, memory_order_acquire);
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
  if (cancel_take())
    return cancel_raise(L);
  intr_disarm(L);
  lua_pushliteral(L, "interrupted!");
  return lua_error(L);
}

void intr_rearm(lua_State *L) {
  intr_held = 0;
  lua_sethook(L, intr_hook, LUA_MASKCOUNT, 1);
}

void intr_settle(lua_State *L) {
  intr_held = 0;
  if (!intr_pending())
    return;
  intr_disarm(L);
  intr_rearm(L);
}

int intr_hold(lua_State *L) {
  if (intr_self) {
    /* A cancel may come while the results are decoded: its hook waits. */
    intr_held = 1;
    return intr_pending();
  }
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
static int intr_wrappable(const struct sigaction *cur) {
  return !(cur->sa_flags & SA_SIGINFO) && cur->sa_handler != SIG_DFL &&
         cur->sa_handler != SIG_IGN && cur->sa_handler != intr_on_signal;
}

static void intr_watch(void) {
  struct sigaction cur;
  /* A look first, unblocked (one system call, not three: the host's thread
   * comes here before each sleep, and the handler is nearly always ours). */
  if (sigaction(SIGINT, NULL, &cur) != 0 || !intr_wrappable(&cur))
    return;
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &block, &old) != 0)
    return;
  if (sigaction(SIGINT, NULL, &cur) == 0 && intr_wrappable(&cur)) {
    intr_prev = cur;
    struct sigaction mine = cur;
    mine.sa_handler = intr_on_signal;
    sigaction(SIGINT, &mine, NULL);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int intr_slice_ms(int slice_ms) {
  if (intr_self)
    return slice_ms <= 0 || slice_ms > CANCEL_SLICE_MS ? CANCEL_SLICE_MS : slice_ms;
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
  intr_self = NULL;   /* the Thread it ran is its parent's */
  intr_held = 0;
  intr_home = 1;
  intr_extra = run;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);   /* a worker's fork blocked it */
}

/* ---- cancels ------------------------------------------------------------------ */

#define INTR_CANCEL_SIGNAL (SIGRTMIN + 5)

static pthread_once_t cancel_once = PTHREAD_ONCE_INIT;
static int cancel_signal_ok;   /* our handler is installed */

/* Async-signal-safe: a TLS load, an atomic load, lua_sethook. */
static void cancel_on_signal(int sig) {
  CONCUR_UNUSED(sig);
  int saved = errno;
  intr_cancel *c = intr_self;
  if (c && c->L && atomic_load_explicit(&c->pending, memory_order_relaxed))
    lua_sethook(c->L, intr_hook, LUA_MASKCOUNT, 1);
  errno = saved;
}

/* Installs the handler unless the host handles the signal itself (then the
 * canceller arms the hook and the waits' slices stand in for the wake). */
static void cancel_install(void) {
  struct sigaction cur;
  if (sigaction(INTR_CANCEL_SIGNAL, NULL, &cur) != 0)
    return;
  if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == cancel_on_signal) {
    cancel_signal_ok = 1;
    return;
  }
  if ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL)
    return;
  struct sigaction mine;
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = cancel_on_signal;
  sigemptyset(&mine.sa_mask);
  mine.sa_flags = 0;   /* no SA_RESTART: the wait it lands in ends with EINTR */
  cancel_signal_ok = sigaction(INTR_CANCEL_SIGNAL, &mine, NULL) == 0;
}

void intr_on_cancel(int (*push)(lua_State *L)) {
  atomic_store_explicit(&intr_push_cancel, push, memory_order_relaxed);
}

void intr_bind(intr_cancel *c, lua_State *L) {
  if (c == NULL) {
    intr_self = NULL;
    intr_held = 0;
    return;
  }
  c->L = L;
  intr_self = c;
  if (atomic_load(&c->pending))
    lua_sethook(L, intr_hook, LUA_MASKCOUNT, 1);
}

void intr_cancel_ask(intr_cancel *c, int signal_it, pthread_t os) {
  atomic_store(&c->asked, 1);
  atomic_store(&c->pending, 1);
  if (!signal_it)
    return;
  pthread_once(&cancel_once, cancel_install);
  if (cancel_signal_ok)
    pthread_kill(os, INTR_CANCEL_SIGNAL);
  else if (c->L)
    lua_sethook(c->L, intr_hook, LUA_MASKCOUNT, 1000);   /* from here, as Lanes does */
}

int intr_cancel_pending(intr_cancel *c) { return atomic_load(&c->pending); }

int intr_cancelled(void) {
  intr_cancel *c = intr_self;
  return c && atomic_load(&c->asked);
}
