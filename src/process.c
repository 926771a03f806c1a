/*
 * process.c - concur.Process on fork(), Python's exit codes and exit rules.
 *
 * A Process object (proc_obj) is a cobj of the process that made it.  start()
 * flushes stdio and forks; the child runs the object's run method on its copy
 * of the parent's Lua state, then applies the exit rules (its own non-daemon
 * threads and children), flushes its stdio and leaves with _exit, so none of
 * the parent's exit work runs twice.  The parent reaps children with waitpid;
 * waits with a timeout sleep in poll() on a pidfd (no busy waiting).
 *
 * Locking: pr.lock guards the children list and every proc_obj's state, pid
 * and exitcode.  It is never held across a Lua call that can raise, nor
 * across a blocking wait.  It is taken before fork and re-made in the child
 * (pthread_atfork in rt_init order: registered from proc_runtime_init).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

#include "process.h"
#include "exit.h"
#include "fork.h"
#include "state.h"
#include "thread.h"
#include "transfer.h"
#include "wait.h"

typedef enum { PR_NEW, PR_STARTED, PR_DONE } pr_state;

typedef struct proc_obj {
  cobj hdr;
  pr_state state;            /* (pr) DONE once reaped */
  pid_t pid;                 /* (pr) 0 before start */
  pid_t parent_pid;          /* the process that started it */
  int exitcode;              /* (pr) valid when DONE */
  int daemon;                /* (pr) */
  int is_main, is_parent;    /* current_process() / parent_process() stand-ins */
  char *name;                /* (pr) */
  char identity[64];         /* "2", or "1:2" for the 2nd child of Process-1 */
  const void *creator;       /* main lua_State of the creating state */
  struct proc_obj *prev, *next;   /* (pr) started, unreaped children */
  cobj_ledger *ledger;       /* (pr) in the parent: the child's inherited
                                references, settled when it is reaped */
} proc_obj;

static struct {
  pthread_mutex_t lock;
  proc_obj children;         /* circular list head */
  long counter;              /* Process-N */
  proc_obj *current;         /* in a child: the Process it runs */
  proc_obj *main;            /* "MainProcess" (or this child's own object) */
  proc_obj *parent;          /* in a child: its parent */
  int daemonic;              /* this process is a daemon Process */
  int shutting_down;         /* the exit rules have begun: no new child */
  int starting;              /* starts between their check and children_add */
  pthread_cond_t started;    /* starting went down */
  char identity[64];         /* this process's identity: "" in the main one */
} pr = {.lock = PTHREAD_MUTEX_INITIALIZER, .started = PTHREAD_COND_INITIALIZER};

/* concur.select: a process is ready once it has ended, which a pidfd of it
 * tells (pr_fd) and, without pidfds, a reap without waiting (pr_ready,
 * below); the parent's stand-in is ready once the parent is gone, this
 * process's own never. */
static int pr_fd(cobj *o) {
  proc_obj *p = (proc_obj *)o;
  pthread_mutex_lock(&pr.lock);
  pid_t pid = p->state == PR_STARTED || p->is_parent ? p->pid : 0;
  pthread_mutex_unlock(&pr.lock);
  if (pid <= 0 || pid == concur_pid)
    return -1;
#if defined(SYS_pidfd_open) && !defined(CONCUR_PORTABLE)
  return (int)syscall(SYS_pidfd_open, pid, 0);   /* -1 without pidfds: polled by ready */
#else
  return -1;
#endif
}

static void pr_fd_done(cobj *o, int fd) {
  CONCUR_UNUSED(o);
  close(fd);
}

static pthread_once_t pr_once = PTHREAD_ONCE_INIT;

static void pr_destroy(cobj *o);
static void pr_on_handle(lua_State *L, cobj *o);
static const cobj_attrs pr_attrs;
static int pr_ready(cobj *o);
static int pr_fd(cobj *o);
static void pr_fd_done(cobj *o, int fd);
static const cobj_sel pr_sel = {pr_ready, NULL, pr_fd, pr_fd_done};
static const cobj_type proc_type = {"concur.Process", pr_destroy, pr_on_handle, 0, NULL, NULL,
                                    NULL, &pr_sel};

/* ---- objects ---------------------------------------------------------------- */

static proc_obj *pr_alloc(const char *name) {
  return cobj_calloc_named(sizeof(proc_obj), &proc_type, name, offsetof(proc_obj, name));
}

static void pr_destroy(cobj *o) {
  proc_obj *p = (proc_obj *)o;
  /* Not reaped (a parent gone without its exit rules): the child may live
   * on and mark its ledger, so it stays.  In a child, a copy's ledger is
   * the parent's business. */
  free(p->name);
  free(p);
}

static void pr_on_handle(lua_State *L, cobj *o) {
  CONCUR_UNUSED(o);
  cobj_new_fields(L, CTX_PROCESS_CLASS);
}

static void children_add(proc_obj *p) {
  p->next = &pr.children;
  p->prev = pr.children.prev;
  pr.children.prev->next = p;
  pr.children.prev = p;
  cobj_incref(&p->hdr);               /* the list's reference */
}

/* Unlinks p (pr.lock held); returns whether the caller must drop the list's
 * reference (after unlocking). */
static int children_remove(proc_obj *p) {
  if (p->next == NULL)
    return 0;
  p->prev->next = p->next;
  p->next->prev = p->prev;
  p->next = p->prev = NULL;
  return 1;
}

/* Python's exit code from a wait status. */
static int exitcode_of(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return -WTERMSIG(status);
  return 255;
}

/* What reaping leaves to do once pr.lock is released: the list's reference
 * to drop, the child's ledger to settle. */
typedef struct reaped {
  int drop;
  cobj_ledger *ledger;   /* NULL unless reaped with a status (see below) */
} reaped;

/* Reaps p if it has ended (pr.lock held); 1 when p is DONE, and `out` says
 * what is left to do once the lock is released (pr_reaped). */
static int pr_reap_locked(proc_obj *p, reaped *out) {
  if (p->state != PR_STARTED)
    return p->state == PR_DONE;
  int status;
  pid_t r;
  do
    r = waitpid(p->pid, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0)
    return 0;
  /* r < 0: ECHILD, someone else reaped it (a SIGCHLD handler set to
   * SIG_IGN, say): it has ended, with no status to tell.  Or this is not
   * the parent at all: a copy of a sibling's object in a process that got
   * the parent's pid after the parent died, and the child may still be
   * marking its ledger.  Either way the ledger is left alone (a leak at
   * worst, never a block freed under a live child). */
  p->exitcode = r == p->pid ? exitcode_of(status) : 255;
  p->state = PR_DONE;
  out->drop = children_remove(p);
  if (r == p->pid)
    out->ledger = p->ledger;
  p->ledger = NULL;
  return 1;
}

/* After pr_reap_locked, pr.lock released: the child gives back, through its
 * parent, the references it inherited and still held.  Whatever its end: a
 * signal skips its exit path, and an os.exit in one of its threads or a
 * Thread held only in another's result leaves references its exit path
 * does not reach.  The child is gone: what it still held is nobody's. */
static void pr_reaped(proc_obj *p, reaped *out) {
  cobj_ledger_settle(out->ledger, 1);
  if (out->drop)
    cobj_decref(&p->hdr);
}

/* Reaps every child that has ended, and drops the list's reference to it:
 * run by active_children and by each start (Python's _cleanup), so that
 * children nobody joins do not pile up as zombies and objects. */
static void children_reap(void) {
  for (;;) {
    proc_obj *ended = NULL;
    reaped out = {0, NULL};
    pthread_mutex_lock(&pr.lock);
    for (proc_obj *q = pr.children.next; q != &pr.children; q = q->next) {
      if (q->state == PR_STARTED && pr_reap_locked(q, &out)) {   /* now DONE, unlisted */
        ended = q;
        break;
      }
    }
    pthread_mutex_unlock(&pr.lock);
    if (ended == NULL)
      return;
    pr_reaped(ended, &out);
  }
}

static int pr_reap(proc_obj *p) {
  reaped out = {0, NULL};
  pthread_mutex_lock(&pr.lock);
  int done = pr_reap_locked(p, &out);
  pthread_mutex_unlock(&pr.lock);
  pr_reaped(p, &out);
  return done;
}

static int pr_ready(cobj *o) {
  proc_obj *p = (proc_obj *)o;
  if (p->is_main || p == pr.current)
    return 0;
  if (p->is_parent)
    return !(kill(p->pid, 0) == 0 || errno == EPERM);
  pthread_mutex_lock(&pr.lock);
  pr_state st = p->state;
  pthread_mutex_unlock(&pr.lock);
  if (st != PR_STARTED || p->parent_pid != getpid())
    return st == PR_DONE;
  return pr_reap(p);
}

/* Sleeps until p ends or `timeout` seconds pass (< 0: forever); no lock
 * held.  Uses a pidfd where the kernel has them, else short sleeps.  With
 * `intr`, -1 when an interrupt comes first (intr_pending). */
static int pr_wait(proc_obj *p, double timeout, int intr) {
  if (pr_reap(p))
    return 1;
  deadline d = deadline_in(timeout);
#if defined(SYS_pidfd_open) && !defined(CONCUR_PORTABLE)
  int fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
#else
  int fd = -1;
#endif
  long nap_ms = 1;
  for (;;) {
    if (deadline_passed(&d))
      break;
    if (fd >= 0) {
      struct pollfd pfd = {fd, POLLIN, 0};
      if (poll(&pfd, 1, deadline_poll_ms(&d, intr ? intr_slice_ms(0) : 0)) < 0 && errno != EINTR)
        break;
    } else {
      long ms = deadline_poll_ms(&d, (int)nap_ms);
      struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
      if (nap_ms < 20)
        nap_ms *= 2;
    }
    if (pr_reap(p))
      break;
    if (intr && intr_pending()) {
      if (fd >= 0)
        close(fd);
      return -1;
    }
  }
  if (fd >= 0)
    close(fd);
  return pr_reap(p);
}

/* The n-th child (from 1) whose daemon flag is `daemon` (-1: any), with a
 * reference the caller gives back; NULL when there is none. */
static proc_obj *children_nth(int daemon, int n) {
  proc_obj *p = NULL;
  pthread_mutex_lock(&pr.lock);
  for (proc_obj *q = pr.children.next; q != &pr.children; q = q->next)
    if ((daemon < 0 || q->daemon == daemon) && --n == 0) {
      p = q;
      cobj_incref(&p->hdr);
      break;
    }
  pthread_mutex_unlock(&pr.lock);
  return p;
}

/* ---- exit rules --------------------------------------------------------------- */

/* Joins the non-daemon children, then terminates and reaps the daemon ones
 * (API.md, "Threads": the exit rules; threads were waited for before). */
static void proc_exit_rules(void) {
  /* No child starts from now on; those already past their check are
   * waited for, so that the loops below see every child there will be. */
  pthread_mutex_lock(&pr.lock);
  pr.shutting_down = 1;
  while (pr.starting > 0)
    pthread_cond_wait(&pr.started, &pr.lock);
  pthread_mutex_unlock(&pr.lock);
  for (int pass = 0; pass < 2; pass++) {
    for (;;) {
      proc_obj *p = children_nth(pass, 1);
      if (p == NULL)
        break;
      if (pass == 1 && !pr_reap(p))
        kill(p->pid, SIGTERM);
      pr_wait(p, -1, 0);
      cobj_decref(&p->hdr);
    }
  }
}

/* ---- the child ------------------------------------------------------------------ */

/* The state a forked child runs in, and the OS thread that runs it. */
static lua_State *child_state;
static pthread_t child_thread;

/* exit.c's callback in the child, just before _exit: the references its
 * state holds to shared objects (never closed, it would not give them back).
 * Not a collection: it would write to every object, copying the whole heap
 * the child shares with its parent page by page.  Only from the state's own
 * thread (os.exit may have been handed to another). */
static void child_leaving(void) {
  if (child_state && pthread_equal(child_thread, pthread_self()))
    cobj_release_state(child_state);
}

static int child_msgh(lua_State *L) {
  luaL_traceback(L, L, state_error_string(L, 1), 1);
  return 1;
}

/* The child's Lua part, protected so that no error can longjmp back into
 * the parent's frames: its os.exit, then self:run() on a Lua thread of its
 * own, so that a traceback shows the child's frames, not the parent's call
 * of start() below them.  Returns nothing, or the traceback of run's error. */
static int child_body(lua_State *L) {
  lua_getglobal(L, "os");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, exit_os_exit);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
  /* A fresh seed for math.random, as Python reseeds `random` in a forked
   * child: else every child of a process draws the same numbers. */
  lua_getglobal(L, "math");
  if (lua_istable(L, -1) && lua_getfield(L, -1, "randomseed") == LUA_TFUNCTION) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000000000 + ts.tv_nsec);
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_call(L, 2, 0);
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_State *C = lua_newthread(L);
  intr_child(C);   /* Ctrl-C interrupts the child's run too */
  lua_pushcfunction(C, child_msgh);
  lua_pushvalue(L, 1);
  lua_xmove(L, C, 1);                       /* C: msgh, self */
  lua_getfield(C, 2, "run");
  lua_insert(C, 2);                         /* C: msgh, run, self */
  if (lua_pcall(C, 1, 0, 1) == LUA_OK)
    return 0;
  lua_xmove(C, L, 1);
  return 1;
}

/* A daemon child ends with its parent, however the parent ends: killed by a
 * signal too, when no exit rules run to stop it (Pool workers are daemon
 * children).  Linux's PR_SET_PDEATHSIG sends a signal when the *thread* that
 * forked ends, not the process.  Forked from the main thread, whose end is
 * the process's, that signal is SIGKILL: the kernel alone ends the child.
 * Forked from another thread (a concur worker leaves when more than
 * MAX_IDLE_WORKERS are parked), the child must not die with that thread:
 * the signal is one of ours, and its handler ends the child only when the
 * parent has really gone, that is when getppid() is no longer the pid it
 * had at the fork (while the parent has threads left, the kernel hands the
 * child to one of them, and signals again when that one ends).  A parent
 * that died before the prctl sent nothing: getppid() is checked after it.
 * Elsewhere than Linux, nothing. */
#if defined(PR_SET_PDEATHSIG) && defined(SIGRTMAX)
#define PDEATH_SIGNAL (SIGRTMAX - 4)   /* valgrind keeps SIGRTMAX for itself */
static pid_t pdeath_parent;            /* set before the handler can run */

static void pdeath_handler(int sig) {
  CONCUR_UNUSED(sig);
  int saved = errno;
  if (getppid() != pdeath_parent)
    kill(getpid(), SIGKILL);
  errno = saved;
}

static void follow_parent(pid_t parent, int from_main_thread) {
  int sig = SIGKILL;
  if (!from_main_thread) {
    pdeath_parent = parent;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pdeath_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(PDEATH_SIGNAL, &sa, NULL) != 0)
      return;
    sig = PDEATH_SIGNAL;
  }
  if (prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0 && getppid() != parent)
    kill(getpid(), SIGKILL);
}
#else
static void follow_parent(pid_t parent, int from_main_thread) {
  CONCUR_UNUSED(parent);
  CONCUR_UNUSED(from_main_thread);
}
#endif

/* Runs in the child, in the state that called start (the handle at idx);
 * parent: the pid of the process that forked it, from_main: forked by its
 * main thread. */
__attribute__((noreturn)) static void child_run(lua_State *L, int idx, proc_obj *p,
                                                cobj_fork_refs *refs, pid_t parent,
                                                int from_main) {
  if (p->daemon)
    follow_parent(parent, from_main);
  /* First: the references the parent took for this child are its own now. */
  cobj_fork_child(refs);
  child_state = L;
  child_thread = pthread_self();
  exit_on_leave(child_leaving);
  proc_obj *old_main = pr.main;
  cobj_incref(&p->hdr);
  pr.current = p;
  pr.main = p;
  memcpy(pr.identity, p->identity, sizeof pr.identity);
  if (old_main)
    cobj_decref(&old_main->hdr);
  p->pid = getpid();
  p->state = PR_STARTED;
  if (p->daemon)
    pr.daemonic = 1;
  int top = lua_gettop(L);
  lua_pushcfunction(L, child_body);
  lua_pushvalue(L, idx);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (st == LUA_OK && lua_gettop(L) == top)
    exit_leave(0, 0);
  /* Python prints "Process NAME:" and the traceback, and exits with 1. */
  const char *tb = lua_tostring(L, -1);
  char *report = malloc(strlen(p->name) + (tb ? strlen(tb) : 0) + 32);
  if (report) {
    sprintf(report, "Process %s:\n%s\n", p->name, tb ? tb : "(no message)");
    state_report_error(report);
    free(report);
  }
  exit_leave(1, 0);
}

/* ---- Lua methods ------------------------------------------------------------------ */

/* Self of a method or metamethod: each has the handles' metatable as upvalue
 * 1 and pr_attrs as upvalue 2 (proc_open, pr_set_class). */
static proc_obj *pr_self(lua_State *L) {
  return cobj_self(L);
}

/* core.process_new(fields) -> handle */
static int pr_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  char name[96], identity[64];
  pthread_mutex_lock(&pr.lock);
  long n = ++pr.counter;
  int daemon = pr.daemonic;
  /* Python's names: Process-2, and Process-1:2 for a child's second child. */
  snprintf(identity, sizeof identity, "%.40s%s%ld", pr.identity, pr.identity[0] ? ":" : "", n);
  pthread_mutex_unlock(&pr.lock);
  snprintf(name, sizeof name, "Process-%s", identity);
  proc_obj *p = cobj_attr_new(L, &proc_type, &pr_attrs, sizeof *p, name, daemon);
  p->creator = cobj_main_state(L);
  memcpy(p->identity, identity, sizeof identity);
  cobj_bind(L, -1, &p->hdr);
  return 1;
}

/* A start that failed after its check: no longer in flight. */
static void pr_start_done(void) {
  pthread_mutex_lock(&pr.lock);
  if (--pr.starting == 0)
    pthread_cond_broadcast(&pr.started);
  pthread_mutex_unlock(&pr.lock);
}

static int pr_start(lua_State *L) {
  proc_obj *p = pr_self(L);
  lua_settop(L, 1);
  if (p->is_main || p->is_parent)
    return luaL_error(L, "cannot start the current or parent process");
  if (p->creator != cobj_main_state(L))
    return luaL_error(L, "a process can only be started from the Lua state that created it");
  pthread_mutex_lock(&pr.lock);
  int ok = p->state == PR_NEW, daemonic = pr.daemonic, down = pr.shutting_down;
  if (ok && !daemonic && !down)
    pr.starting++;
  pthread_mutex_unlock(&pr.lock);
  if (!ok)
    return luaL_error(L, "processes can only be started once");
  if (daemonic)
    return luaL_error(L, "daemonic processes are not allowed to have children");
  if (down)
    return luaL_error(L, "cannot start a process at interpreter shutdown");
  children_reap();
  /* The child's references to shared objects are taken here, before the
   * fork, with every thread's state frozen (see cobj_fork_prepare). */
  cobj_push_identity(L);                    /* 2 */
  cobj_fork_refs refs;
  /* Output buffered so far is the parent's: print it once, not twice.
   * Flushed before the freeze: a blocked pipe must not stop every thread. */
  fflush(NULL);
  thread_fork_freeze();
  if (!cobj_fork_prepare(L, 2, &refs)) {
    thread_fork_thaw();
    pr_start_done();
    return luaL_error(L, "cannot start a process: not enough memory");
  }
  fflush(NULL);   /* whatever came in between (rarely anything) */
  pid_t self = getpid();
  int from_main = (pid_t)syscall(SYS_gettid) == self;
  pid_t pid = fork();
  int fork_errno = errno;
  if (pid == 0)
    child_run(L, 1, p, &refs, self, from_main);
  thread_fork_thaw();
  if (pid < 0) {
    cobj_fork_undo(&refs);
    pr_start_done();
    return luaL_error(L, "cannot start a process: %s", strerror(fork_errno));
  }
  cobj_ledger *ledger = refs.ledger;
  refs.ledger = NULL;
  cobj_fork_done(&refs);
  pthread_mutex_lock(&pr.lock);
  p->ledger = ledger;
  p->pid = pid;
  p->parent_pid = getpid();
  p->state = PR_STARTED;
  children_add(p);
  if (--pr.starting == 0)
    pthread_cond_broadcast(&pr.started);
  pthread_mutex_unlock(&pr.lock);
  return 0;
}

static int pr_join(lua_State *L) {
  proc_obj *p = pr_self(L);
  double timeout = concur_opt_timeout(L, 2);
  if (p->is_main || p == pr.current)
    return luaL_error(L, "cannot join current process");
  if (p->is_parent)
    return luaL_error(L, "cannot join the parent process");
  pthread_mutex_lock(&pr.lock);
  pr_state st = p->state;
  pthread_mutex_unlock(&pr.lock);
  if (st == PR_NEW)
    return luaL_error(L, "cannot join a process before it is started");
  if (p->parent_pid != getpid())
    return luaL_error(L, "can only join a child process");
  int done = pr_wait(p, timeout, 1);
  if (done < 0)
    return intr_raise(L);
  intr_settle(L);
  lua_pushboolean(L, done);
  return 1;
}

static int pr_is_alive(lua_State *L) {
  proc_obj *p = pr_self(L);
  if (p->is_main || p == pr.current) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (p->is_parent) {
    lua_pushboolean(L, kill(p->pid, 0) == 0 || errno == EPERM);
    return 1;
  }
  pthread_mutex_lock(&pr.lock);
  pr_state st = p->state;
  pthread_mutex_unlock(&pr.lock);
  if (st == PR_STARTED && p->parent_pid != getpid())
    return luaL_error(L, "can only test a child process");
  lua_pushboolean(L, st == PR_STARTED && !pr_reap(p));
  return 1;
}

/* terminate/kill: a process not started raises; one that ended: no-op, as in
 * Python (its pid may belong to another process by now: never signalled). */
static int pr_signal(lua_State *L, int sig) {
  proc_obj *p = pr_self(L);
  if (p->is_main || p->is_parent || p == pr.current)
    return luaL_error(L, "cannot signal the current or parent process through its object");
  pthread_mutex_lock(&pr.lock);
  reaped out = {0, NULL};
  pr_state st = p->state;
  int mine = p->parent_pid == getpid();
  int done = st == PR_STARTED && mine ? pr_reap_locked(p, &out) : st == PR_DONE;
  if (st == PR_STARTED && !done && mine)
    kill(p->pid, sig);   /* still our unreaped child: the pid is its own */
  pthread_mutex_unlock(&pr.lock);
  pr_reaped(p, &out);
  if (st == PR_NEW)
    return luaL_error(L, "cannot signal a process before it is started");
  if (st == PR_STARTED && !mine)
    return luaL_error(L, "can only signal a child process");
  return 0;
}

static int pr_terminate(lua_State *L) { return pr_signal(L, SIGTERM); }
static int pr_kill(lua_State *L) { return pr_signal(L, SIGKILL); }

static int daemon_settable(const cobj *o) {
  const proc_obj *p = (const proc_obj *)o;
  return p->state == PR_NEW && !p->is_main && !p->is_parent;
}

/* The read-only attributes: pid and ident, exitcode. */
static int pr_read_id(lua_State *L, cobj *o, const char *k) {
  proc_obj *p = (proc_obj *)o;
  if (strcmp(k, "exitcode") != 0)
    return cobj_push_id(L, p->is_main || p->pid, p->is_main ? getpid() : p->pid);
  int known = !p->is_main && !p->is_parent && p != pr.current &&
              (p->state == PR_DONE || p->parent_pid == getpid()) && pr_reap(p);
  return cobj_push_id(L, known, p->exitcode);
}

static const cobj_attrs pr_attrs = {
  &pr.lock, offsetof(proc_obj, name), offsetof(proc_obj, daemon), daemon_settable,
  "process has already started", "process", {"pid", "ident", "exitcode", NULL}, pr_read_id};


static int pr_tostring(lua_State *L) {
  proc_obj *p = pr_self(L);
  char buf[400];
  pthread_mutex_lock(&pr.lock);
  if (p->is_main || p == pr.current)
    snprintf(buf, sizeof buf, "<Process name='%s' parent=%ld started>", p->name,
             (long)getppid());
  else if (p->state == PR_NEW)
    snprintf(buf, sizeof buf, "<Process name='%s'%s>", p->name, p->daemon ? " daemon" : "");
  else if (p->state == PR_DONE)
    snprintf(buf, sizeof buf, "<Process name='%s' pid=%ld exitcode=%d%s>", p->name,
             (long)p->pid, p->exitcode, p->daemon ? " daemon" : "");
  else
    snprintf(buf, sizeof buf, "<Process name='%s' pid=%ld started%s>", p->name, (long)p->pid,
             p->daemon ? " daemon" : "");
  pthread_mutex_unlock(&pr.lock);
  lua_pushstring(L, buf);
  return 1;
}

/* ---- module functions --------------------------------------------------------------- */

static int pr_active_children(lua_State *L) {
  children_reap();   /* the ended ones first (as Python does), then the rest */
  lua_newtable(L);
  for (int i = 1;; i++) {
    proc_obj *p = children_nth(-1, i);
    if (p == NULL)
      break;
    /* The handle takes its own reference; ours is given back after. */
    cobj_push(L, &p->hdr);
    cobj_decref(&p->hdr);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int pr_current_process(lua_State *L) {
  cobj_push(L, &pr.main->hdr);
  return 1;
}

static int pr_parent_process(lua_State *L) {
  if (pr.parent == NULL)
    return 0;
  cobj_push(L, &pr.parent->hdr);
  return 1;
}

/* Process's methods, on the Lua class (pr_set_class). */
static const luaL_Reg pr_methods[] = {
  {"start", pr_start}, {"join", pr_join}, {"is_alive", pr_is_alive},
  {"terminate", pr_terminate}, {"kill", pr_kill}, {NULL, NULL}
};

/* core.process_set_class(cls): the Lua layer's Process class gets the
 * methods and becomes the metatable of handles' fields. */
static int pr_set_class(lua_State *L) {
  return cobj_attr_set_class(L, &proc_type, &pr_attrs, pr_methods, CTX_PROCESS_CLASS);
}

/* ---- runtime -------------------------------------------------------------------------- */

static void pr_atfork_prepare(void) { pthread_mutex_lock(&pr.lock); }
static void pr_atfork_parent(void) { pthread_mutex_unlock(&pr.lock); }

/* The child: its parent's children are its siblings, not its own. */
static void pr_atfork_child(void) {
  pthread_mutex_unlock(&pr.lock);   /* the forking thread took it in prepare */
  pr.starting = 0;                  /* the parent's starts, this one included */
  pthread_cond_init(&pr.started, NULL);
  proc_obj *q = pr.children.next;
  pr.children.next = pr.children.prev = &pr.children;
  while (q != &pr.children) {     /* the copies' list references: leave them */
    proc_obj *next = q->next;
    q->next = q->prev = NULL;
    q = next;
  }
  /* The parent, as seen from here: its name and pid at the fork. */
  proc_obj *parent = pr_alloc(pr.main ? pr.main->name : "MainProcess");
  if (parent) {
    parent->is_parent = 1;
    parent->pid = getppid();
    parent->state = PR_STARTED;
  }
  if (pr.parent)
    cobj_decref(&pr.parent->hdr);   /* a grandchild's copy of its grandparent */
  pr.parent = parent;
  pr.counter = 0;
}

static void pr_init(void) {
  pr.children.next = pr.children.prev = &pr.children;
  pr.main = pr_alloc("MainProcess");
  if (pr.main == NULL)
    abort();
  pr.main->is_main = 1;
  pr.main->state = PR_STARTED;
  pthread_atfork(pr_atfork_prepare, pr_atfork_parent, pr_atfork_child);
  exit_on_step(EXIT_CHILDREN, proc_exit_rules);
}

void proc_runtime_init(void) {
  pthread_once(&pr_once, pr_init);
}

void proc_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"process_new", pr_new}, {"process_set_class", pr_set_class},
    {"active_children", pr_active_children}, {"current_process", pr_current_process},
    {"parent_process", pr_parent_process}, {NULL, NULL}
  };
  cobj_attr_metatable(L, &proc_type, &pr_attrs, pr_tostring);
  luaL_setfuncs(L, funcs, 0);
}
