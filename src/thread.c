/*
 * thread.c - concur.Thread on pthreads, and the process-wide thread runtime.
 *
 * A Thread object (thread_obj) is a cobj.  Its code runs on a *worker*: an OS
 * thread that owns one lua_State.  After a task ends the worker closes that
 * state and builds a fresh one (standard libraries, print, the host's setup
 * hook, concur) before it parks, so the next `start` finds a thread and a state
 * ready: the spawn's critical path is one encode, one handoff and one decode.
 * (Spinning before sleeping was measured and made things slower on 2 cores:
 * the spinner steals the CPU the worker needs.)
 *
 * Locking: one process-wide mutex, rt.lock, guards every field marked (rt)
 * below, the live list, the idle stack and the counters.  Waits use
 * CLOCK_MONOTONIC condition variables on rt.lock.  No Lua API call is made
 * with rt.lock held (Lua may raise), except lua_* calls that cannot raise.
 *
 * Exit: two of the exit rules (exit.c) are this file's: wait for every started
 * non-daemon thread (EXIT_THREADS), and at the end ask parked workers to close
 * their states and leave (EXIT_WORKERS).  The shared object is pinned with
 * RTLD_NODELETE so that no worker ever runs code of an unloaded library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lualib.h"
#include "thread.h"
#include "exit.h"
#include "fork.h"
#include "state.h"
#include "transfer.h"
#include "wait.h"

#define MAX_IDLE_WORKERS 8

typedef enum { TH_NEW, TH_STARTED, TH_DONE } th_state;


typedef struct worker worker;

typedef struct thread_obj {
  cobj hdr;
  th_state state;            /* (rt) */
  int daemon;                /* (rt) */
  int is_main, is_dummy;
  char *name;                /* (rt) replaced and freed under rt.lock */
  int have_ids;              /* (rt) ident and native_id are known */
  lua_Integer ident;         /* (rt) */
  long native_id;            /* (rt) */
  pthread_cond_t changed;    /* (rt) ids known, or the thread ended */
  tbuf start;                /* package paths + fields [+ excepthook]; the
                                worker's once started */
  size_t start_split;        /* length of the first message (the paths) */
  size_t hook_at;            /* where the excepthook starts (start.len: none) */
  const void *creator;       /* main lua_State of the state that made it;
                                compared only, never used */
  tbuf result;               /* results, or the error value; fixed once DONE */
  int failed;                /* (rt) the thread ended with an error */
  char *errmsg;              /* why it failed when no error value could be kept */
  intr_cancel cancel;        /* t:cancel()'s request (intr.c) */
  int running;               /* (rt) its worker has bound `cancel`: `os` is valid */
  pthread_t os;              /* (rt) its worker's OS thread, while running */
  struct thread_obj *joining;   /* (rt) the thread it waits for in join or
                                   result: a cancel wakes that wait */
  struct thread_obj *prev, *next;   /* (rt) live list */
  _Atomic uint32_t watchers; /* concur.select callers watching (sel_notify at TH_DONE) */
} thread_obj;

struct worker {
  pthread_cond_t wake;       /* (rt) a task was assigned, or quit */
  thread_obj *task;          /* (rt) holds a reference */
  int quit;                  /* (rt) */
  lua_State *L;              /* the worker's own; built off the critical path */
  state_arena arena;         /* where L's start-up objects live */
  char setup_error[256];     /* why L could not be built */
  lua_Integer ident;
  long native_id;            /* (rt) 0 until the worker has run */
  pthread_t tid;             /* set before the worker runs */
  size_t stack_size;         /* what it was made with (0: the system's) */
  worker *next_idle;         /* (rt) */
  worker *all_prev, *all_next;   /* (rt) rt.workers, from creation to free */
  int abandoned;             /* (rt) its OS thread is ending the process and
                                never comes back (see self_abandon_locked) */
  _Atomic int pins;          /* starters signalling `wake` after their unlock:
                                w is not freed until none is (worker_free) */
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t exit_cond;  /* a non-daemon thread or a worker ended, or a build */
  int nondaemon;             /* started non-daemon threads not yet ended */
  int nworkers;              /* workers alive */
  int ndaemon_busy;          /* workers running daemon threads */
  int nbuilding;             /* workers building a Lua state (a fork waits) */
  thread_obj live;           /* circular list of alive threads, main included */
  int nlive;
  worker *idle;
  int nidle;
  worker *exited;            /* workers that left at shutdown, to be joined */
  worker *workers;           /* every worker not yet freed (rt.all_*) */
  worker *parked_in_parent;  /* a forked child: the parent's workers */
  worker *fork_worker;       /* in a child forked from a thread: its worker */
  int shutting_down;
  thread_obj *main;
  long counter;              /* Thread-N */
  long dummy_counter;        /* Dummy-N */
  size_t stack_size;         /* for workers made from now on (0: the system's) */
} rt = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* initial-exec: static TLS even when loaded with dlopen, so the access is one
 * instruction and LeakSanitizer never has to walk dynamic TLS (which it
 * misreads with glibc >= 2.35 and crashes). */
#define TLS_IE __attribute__((tls_model("initial-exec")))
static _Thread_local thread_obj *current TLS_IE;   /* the Thread this OS thread runs */
static _Thread_local worker *current_worker TLS_IE;
static pthread_key_t dummy_key;
static pthread_once_t rt_once = PTHREAD_ONCE_INIT;

static void th_destroy(cobj *o);
static void th_on_handle(lua_State *L, cobj *o);
static void th_fork_collect(cobj *o, cobj_fork_refs *r);
static void th_exit_release(cobj *o);
static const cobj_attrs th_attrs;
static int th_ready(cobj *o);
static _Atomic uint32_t *th_watchers(cobj *o);
static const cobj_sel th_sel = {th_ready, th_watchers, NULL, NULL};
static const cobj_type thread_type = {"concur.Thread", th_destroy, th_on_handle, 0, NULL,
                                      th_fork_collect, th_exit_release, &th_sel};

/* ---- small helpers ------------------------------------------------------- */

static void cond_init_monotonic(pthread_cond_t *c) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(c, &a);
  pthread_condattr_destroy(&a);
}

static long sys_gettid(void) { return (long)syscall(SYS_gettid); }

static void live_add(thread_obj *t) {
  t->next = &rt.live;
  t->prev = rt.live.prev;
  rt.live.prev->next = t;
  rt.live.prev = t;
  rt.nlive++;
}

static void live_remove(thread_obj *t) {
  if (t->next == NULL)
    return;
  t->prev->next = t->next;
  t->next->prev = t->prev;
  t->next = t->prev = NULL;
  rt.nlive--;
}

/* ---- objects -------------------------------------------------------------- */

static thread_obj *th_alloc(const char *name) {
  thread_obj *t = cobj_calloc_named(sizeof(thread_obj), &thread_type, name,
                                    offsetof(thread_obj, name));
  if (t == NULL)
    return NULL;
  cond_init_monotonic(&t->changed);
  return t;
}

static void th_destroy(cobj *o) {
  thread_obj *t = (thread_obj *)o;
  tbuf_free(&t->start);
  tbuf_free(&t->result);
  free(t->errmsg);
  pthread_cond_destroy(&t->changed);
  free(t->name);
  free(t);
}

/* Before a fork, rt.lock held (thread_fork_freeze): the messages that cannot
 * change until the fork is over.  A running thread's are its worker's (being
 * decoded, being written): the child never touches them. */
static void th_fork_collect(cobj *o, cobj_fork_refs *r) {
  thread_obj *t = (thread_obj *)o;
  if (t->state == TH_NEW)
    cobj_fork_take_tbuf(r, &t->start);
  else if (t->state == TH_DONE)
    cobj_fork_take_tbuf(r, &t->result);
}

/* A forked child about to _exit: the shared references of the message it
 * owns (a new thread's start, a finished one's result). */
static void th_exit_release(cobj *o) {
  thread_obj *t = (thread_obj *)o;
  pthread_mutex_lock(&rt.lock);
  tbuf *b = t->state == TH_NEW ? &t->start : t->state == TH_DONE ? &t->result : NULL;
  if (b && b->pid == concur_self)
    cobj_release_tbuf_shared(b);
  pthread_mutex_unlock(&rt.lock);
}

/* A handle made by a transfer gets plain fields whose class is Thread. */
static void th_on_handle(lua_State *L, cobj *o) {
  CONCUR_UNUSED(o);
  cobj_new_fields(L, CTX_THREAD_CLASS);
}

static void dummy_release(void *p) { cobj_decref(p); }

/* The Thread object of the calling OS thread: its concur Thread, the main
 * thread, or a "Dummy-N" made on first use for threads concur did not start. */
int thread_is_worker(void) { return current_worker != NULL; }

static thread_obj *th_current(void) {
  if (current)
    return current;
  if (rt.main && pthread_equal((pthread_t)rt.main->ident, pthread_self()))
    return rt.main;
  thread_obj *d = pthread_getspecific(dummy_key);
  if (d)
    return d;
  char name[32];
  pthread_mutex_lock(&rt.lock);
  long n = ++rt.dummy_counter;
  pthread_mutex_unlock(&rt.lock);
  snprintf(name, sizeof name, "Dummy-%ld", n);
  d = th_alloc(name);
  if (d == NULL)
    return rt.main;
  d->is_dummy = 1;
  d->daemon = 1;
  d->state = TH_STARTED;
  d->have_ids = 1;
  d->ident = (lua_Integer)pthread_self();
  d->native_id = sys_gettid();
  pthread_setspecific(dummy_key, d);
  return d;
}

/* ---- worker pool ---------------------------------------------------------- */

/* rt.workers keeps every worker reachable, busy ones too: in a forked child
 * the parent's workers are memory nothing else points to.  rt.lock held. */
static void workers_add(worker *w) {
  w->all_prev = NULL;
  w->all_next = rt.workers;
  if (rt.workers)
    rt.workers->all_prev = w;
  rt.workers = w;
}

static void workers_remove(worker *w) {
  if (w->all_prev)
    w->all_prev->all_next = w->all_next;
  else
    rt.workers = w->all_next;
  if (w->all_next)
    w->all_next->all_prev = w->all_prev;
}

/* Builds w's next state.  Counted, so that a fork waits for builds to end:
 * a state half built is held only by the builder's registers and stack, which
 * a child does not get, and the child would carry its copy as memory nothing
 * points to.  (A close is not counted: w->L holds the state until it is gone,
 * and its finalizers run user code, which may fork.) */
static void worker_build(worker *w) {
  pthread_mutex_lock(&rt.lock);
  rt.nbuilding++;
  pthread_mutex_unlock(&rt.lock);
  w->L = state_build(w->arena.base ? &w->arena : NULL, w->setup_error, sizeof w->setup_error);
  pthread_mutex_lock(&rt.lock);
  if (--rt.nbuilding == 0)
    pthread_cond_broadcast(&rt.exit_cond);
  pthread_mutex_unlock(&rt.lock);
}

/* The thread's error report, "Exception in thread NAME:" and the traceback. */
static int run_msgh(lua_State *L) {
  /* The value at 1 is the error result() raises: left as it is. */
  const char *msg = state_error_string(L, 1);
  luaL_traceback(L, L, msg, 1);
  ctx_push_table(L);
  lua_insert(L, -2);
  lua_rawseti(L, -2, CTX_TRACEBACK);
  lua_settop(L, 1);
  return 1;
}

/* Protected: decodes the start message, sets the paths, calls self:run(). */
static int run_entry(lua_State *L) {
  thread_obj *t = lua_touserdata(L, 1);
  lua_settop(L, 0);
  /* The paths first: decoding the fields may require modules. */
  transfer_decode_tbuf(L, &t->start, 0, t->start_split);          /* 1, 2: paths */
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    if (lua_type(L, 1) == LUA_TSTRING) {
      lua_pushvalue(L, 1);
      lua_setfield(L, -2, "path");
    }
    if (lua_type(L, 2) == LUA_TSTRING) {
      lua_pushvalue(L, 2);
      lua_setfield(L, -2, "cpath");
    }
  }
  lua_settop(L, 0);
  if (t->hook_at < t->start.len) {   /* the starter's excepthook is this state's */
    ctx_push_table(L);
    transfer_decode_tbuf(L, &t->start, t->hook_at, t->start.len - t->hook_at);
    lua_rawseti(L, -2, CTX_EXCEPTHOOK);
    lua_settop(L, 0);
  }
  transfer_decode_tbuf(L, &t->start, t->start_split,
                       t->hook_at - t->start_split);               /* 1: fields */
  cobj_push(L, &t->hdr);                                           /* 2: self */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 2, 1);
  lua_getfield(L, 2, "run");
  lua_pushvalue(L, 2);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 2;
}

/* Writes `head` and `body` as one report (state_report_error). */
static void report_text(const char *head, const char *body) {
  size_t hl = strlen(head), bl = strlen(body);
  char *all = malloc(hl + bl + 2);
  if (all == NULL) {
    state_report_error(head);
    state_report_error(body);
    return;
  }
  memcpy(all, head, hl);
  memcpy(all + hl, body, bl);
  all[hl + bl] = '\n';
  all[hl + bl + 1] = 0;
  state_report_error(all);
  free(all);
}

/* The default report of a thread's error: "Exception in thread NAME:". */
static void report_failure(thread_obj *t, const char *body) {
  char head[300];
  pthread_mutex_lock(&rt.lock);
  snprintf(head, sizeof head, "Exception in thread %s:\n", t->name);
  pthread_mutex_unlock(&rt.lock);
  report_text(head, body);
}

/* Whether the value at idx is concur.CancelledError as raised (a table
 * whose first field is the sentinel) or the sentinel itself; no metamethod
 * runs. */
static int is_cancelled_error(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE)
    return 0;
  int top = lua_gettop(L);
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_ERRORS);
  int yes = 0;
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "CancelledError");
    lua_rawgeti(L, idx, 1);
    yes = lua_type(L, -2) == LUA_TTABLE &&
          (lua_rawequal(L, -2, idx) || lua_rawequal(L, -2, -1));
  }
  lua_settop(L, top);
  return yes;
}

static int hook_msgh(lua_State *L) {
  luaL_traceback(L, L, state_error_string(L, 1), 1);
  return 1;
}

/* Reports t's error (2: its value, 3: its traceback or nil) through the
 * state's excepthook, or the default way when there is none.  An error of
 * the hook itself is reported the default way, after the thread's own. */
static void report_or_hook(lua_State *L, thread_obj *t) {
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_EXCEPTHOOK);
  lua_remove(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (is_cancelled_error(L, 2))
      return;   /* asked for: no report (Python's hook is silent on SystemExit) */
    report_failure(t, lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3)
                                                   : state_error_string(L, 2));
    return;
  }
  int hook = lua_gettop(L);
  lua_pushcfunction(L, hook_msgh);
  lua_insert(L, hook);                      /* msgh, hook */
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "exc_value");
  if (lua_type(L, 3) == LUA_TSTRING)
    lua_pushvalue(L, 3);
  else
    state_error_string(L, 2);
  lua_setfield(L, -2, "traceback");
  cobj_push(L, &t->hdr);
  lua_setfield(L, -2, "thread");
  if (lua_pcall(L, 1, 0, hook) == LUA_OK) {
    lua_settop(L, hook - 1);
    return;
  }
  report_failure(t, lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3)
                                                 : state_error_string(L, 2));
  char head[300];
  pthread_mutex_lock(&rt.lock);
  snprintf(head, sizeof head, "Exception in the excepthook of thread %s:\n", t->name);
  pthread_mutex_unlock(&rt.lock);
  report_text(head, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(no message)");
  lua_settop(L, hook - 1);
}

typedef struct run_args {
  thread_obj *t;
  int ok;
  int kept;        /* the error is in t->result */
} run_args;

/* Protected: keeps a thread's error in t->result, then reports it.
 * 1: the run_args (light); 2: the error value; 3: its traceback or nil;
 * 4: a C string (light) that replaces 2 and 3 when the results could not
 * be encoded. */
static int run_fail(lua_State *L) {
  run_args *a = lua_touserdata(L, 1);
  thread_obj *t = a->t;
  const char *cmsg = lua_touserdata(L, 4);
  char err[TRANSFER_ERRLEN];
  if (cmsg) {
    lua_pushstring(L, cmsg);
    lua_replace(L, 2);
    luaL_traceback(L, L, cmsg, 0);
    lua_replace(L, 3);
  }
  /* The error value travels by the transfer rules; if it cannot, its
   * string form does.  Kept before the report: an excepthook that changes
   * the value changes not what result() raises. */
  tbuf_free(&t->result);
  if (!transfer_encode(L, 2, 1, "error", 1, &t->result, err)) {
    state_error_string(L, 2);
    if (!transfer_encode(L, -1, 1, "error", 1, &t->result, err))
      tbuf_free(&t->result);
    lua_pop(L, 1);
  }
  a->kept = 1;
  report_or_hook(L, t);
  return 0;
}

/* Protected (run_task): runs the thread's code and keeps its result or
 * error in t->result; a->ok says which. */
static int run_protected(lua_State *L) {
  run_args *a = lua_touserdata(L, 1);
  thread_obj *t = a->t;
  char err[TRANSFER_ERRLEN];
  int base = lua_gettop(L);
  lua_pushcfunction(L, run_msgh);
  lua_pushcfunction(L, run_entry);
  lua_pushlightuserdata(L, t);
  /* A cancel fires while the thread's own code runs, not while its results
   * or its error are kept and reported. */
  pthread_mutex_lock(&rt.lock);
  t->os = pthread_self();
  t->running = 1;
  intr_bind(&t->cancel, L);
  pthread_mutex_unlock(&rt.lock);
  int st = lua_pcall(L, 1, LUA_MULTRET, base + 1);
  pthread_mutex_lock(&rt.lock);
  t->running = 0;
  intr_bind(NULL, NULL);
  pthread_mutex_unlock(&rt.lock);
  if (st == LUA_OK &&
      transfer_encode(L, base + 2, lua_gettop(L) - base - 1, "result", 0, &t->result, err)) {
    /* A thread may return its own handle: that must not keep it alive. */
    tbuf_set_owner(&t->result, &t->hdr);
    lua_settop(L, base);
    a->ok = 1;
    return 0;
  }
  /* Failed: the error is on top (st != LUA_OK), or err says why the results
   * could not cross.  Nothing below allocates outside run_fail's pcall. */
  int errv = lua_gettop(L);
  lua_pushcfunction(L, run_fail);
  lua_pushlightuserdata(L, a);
  if (st != LUA_OK) {
    lua_pushvalue(L, errv);
    ctx_push_table(L);
    lua_rawgeti(L, -1, CTX_TRACEBACK);
    lua_remove(L, -2);
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushlightuserdata(L, err);
  }
  if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
    report_failure(t, "(the error could not be reported: not enough memory)");
    if (!a->kept) {
      tbuf_free(&t->result);
      t->errmsg = strdup("thread failed; its error could not be kept (not enough memory)");
    }
  }
  tbuf_set_owner(&t->result, &t->hdr);
  lua_settop(L, base);
  return 0;
}

/* Runs t on w's state; leaves t's result or error in t->result.  The whole
 * run is one protected call: on 5.1 and LuaJIT even pushing a C function
 * may run out of memory. */
static int run_task(worker *w, thread_obj *t) {
  /* The state is built ahead, while the worker is parked; if memory ran
   * short then, try again now rather than fail a thread for the past. */
  if (w->L == NULL)
    worker_build(w);
  lua_State *L = w->L;
  if (L == NULL) {
    report_failure(t, w->setup_error);
    t->errmsg = strdup(w->setup_error);
    return 0;
  }
  int base = lua_gettop(L);
  run_args a = {t, 0, 0};
  if (concur_cpcall(L, run_protected, &a) != LUA_OK) {
    report_failure(t, "(the thread could not run: not enough memory)");
    tbuf_free(&t->result);
    t->errmsg = strdup("thread failed: not enough memory");
    lua_settop(L, base);
    return 0;
  }
  lua_settop(L, base);
  return a.ok;
}

/* The broadcasts come after the unlock: a joiner woken under the lock would
 * only wake to sleep on the lock and be woken again by the unlock (two
 * context switches on the path of every join).  t lives on: the worker
 * holds its reference until after this.  A fork between the unlock and a
 * broadcast may leave the child a copy of t->changed caught mid-broadcast,
 * or with a parent joiner still counted asleep on it: the child re-inits
 * exit_cond, never waits on or signals the condition of a TH_DONE thread,
 * and never destroys this one (that joiner's state holds a reference the
 * child never drops). */
static void task_finish(thread_obj *t, int ok) {
  pthread_mutex_lock(&rt.lock);
  live_remove(t);
  if (!t->daemon)
    rt.nondaemon--;   /* the exit rules wait for 0 */
  else
    rt.ndaemon_busy--;   /* the exit rules now wait for this worker: its state,
                            closed next, holds references to shared objects */
  t->failed = !ok;
  t->state = TH_DONE;
  pthread_mutex_unlock(&rt.lock);
  pthread_cond_broadcast(&t->changed);
  pthread_cond_broadcast(&rt.exit_cond);
  sel_notify(&t->watchers);
}

/* concur.select: the thread has ended. */
static int th_ready(cobj *o) {
  pthread_mutex_lock(&rt.lock);
  int done = ((thread_obj *)o)->state == TH_DONE;
  pthread_mutex_unlock(&rt.lock);
  return done;
}

static _Atomic uint32_t *th_watchers(cobj *o) { return &((thread_obj *)o)->watchers; }

/* Frees a worker that has left (off the lists), once no starter that
 * assigned it a task is still signalling it (th_start: microseconds). */
static void worker_free(worker *w) {
  while (atomic_load(&w->pins))
    sched_yield();
  pthread_cond_destroy(&w->wake);
  free(w);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  current_worker = w;
  pthread_mutex_lock(&rt.lock);
  w->native_id = sys_gettid();
  w->ident = (lua_Integer)pthread_self();
  if (w->task && !w->task->have_ids) {
    w->task->ident = w->ident;
    w->task->native_id = w->native_id;
    w->task->have_ids = 1;
    pthread_cond_broadcast(&w->task->changed);
  }
  pthread_mutex_unlock(&rt.lock);
  w->arena.base = malloc(STATE_ARENA_SIZE);
  if (w->L == NULL)
    worker_build(w);
  pthread_mutex_lock(&rt.lock);
  for (;;) {
    while (w->task == NULL && !w->quit)
      pthread_cond_wait(&w->wake, &rt.lock);
    thread_obj *t = w->task;
    if (t == NULL)
      break;
    pthread_mutex_unlock(&rt.lock);

    current = t;
    int ok = run_task(w, t);
    tbuf_free(&t->start);   /* only this worker touches it once started */
    current = NULL;
    task_finish(t, ok);
    cobj_decref(&t->hdr);
    if (w == rt.fork_worker)
      exit(0);   /* the exit rules (exit.c's atexit handler) run here */

    /* Fresh state for the next thread, built while nobody waits for it. */
    if (w->L)
      lua_close(w->L);
    w->L = NULL;
    worker_build(w);

    pthread_mutex_lock(&rt.lock);
    w->task = NULL;
    if (rt.shutting_down || rt.nidle >= MAX_IDLE_WORKERS)
      break;
    w->next_idle = rt.idle;
    rt.idle = w;
    rt.nidle++;
  }
  /* Leaving: close the state first, so that at exit nothing of ours is
   * still being torn down once the atexit handler returns. */
  int joined = rt.shutting_down;
  pthread_mutex_unlock(&rt.lock);
  if (w->L)
    lua_close(w->L);
  w->L = NULL;
  free(w->arena.base);
  w->arena.base = NULL;
  pthread_mutex_lock(&rt.lock);
  joined = joined || rt.shutting_down;
  if (joined) {
    /* The atexit handler joins this thread and frees w. */
    w->next_idle = rt.exited;
    rt.exited = w;
  } else {
    pthread_detach(pthread_self());
  }
  rt.nworkers--;
  if (!joined)
    workers_remove(w);
  pthread_cond_broadcast(&rt.exit_cond);
  pthread_mutex_unlock(&rt.lock);
  if (!joined)
    worker_free(w);
  return NULL;
}

/* ---- Lua methods ---------------------------------------------------------- */

/* Self of a method or metamethod: each has the handles' metatable as upvalue
 * 1 and th_attrs as upvalue 2 (thread_open, th_set_class). */
static thread_obj *th_self(lua_State *L) {
  return cobj_self(L);
}

/* core.thread_new(fields) -> handle; the fields table becomes its user value. */
static int th_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  thread_obj *cur = th_current();
  char name[32];
  pthread_mutex_lock(&rt.lock);
  long n = ++rt.counter;
  int daemon = cur ? cur->daemon : 0;
  pthread_mutex_unlock(&rt.lock);
  snprintf(name, sizeof name, "Thread-%ld", n);
  thread_obj *t = cobj_attr_new(L, &thread_type, &th_attrs, sizeof *t, name, daemon);
  cond_init_monotonic(&t->changed);
  t->creator = cobj_main_state(L);
  cobj_bind(L, -1, &t->hdr);
  return 1;
}

static void push_package_field(lua_State *L, const char *field) {
  lua_getglobal(L, "package");
  if (lua_istable(L, -1))
    lua_getfield(L, -1, field);
  else
    lua_pushnil(L);
  lua_remove(L, -2);
}

static int th_start(lua_State *L) {
  thread_obj *t = th_self(L);
  tbuf msg = TBUF_INIT;
  char err[TRANSFER_ERRLEN];
  /* The fields (target, args, the object itself) live in the creating
   * state; a handle that arrived by transfer has none. */
  if (t->creator != cobj_main_state(L) && !t->is_main && !t->is_dummy)
    return luaL_error(L, "a thread can only be started from the Lua state that created it");
  /* Everything that may raise comes before the encode; the encode raises
   * nothing and runs with no lock held. */
  push_package_field(L, "path");
  push_package_field(L, "cpath");
  lua_getiuservalue(L, 1, 1);
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_EXCEPTHOOK);   /* the one in force now is the thread's */
  lua_remove(L, -2);
  int ok = transfer_encode(L, -4, 2, "package", 0, &msg, err);
  size_t split = msg.len;
  ok = ok && transfer_encode(L, -2, 1, "", 1, &msg, err);
  size_t hook_at = msg.len;
  if (!lua_isnil(L, -1))
    ok = ok && transfer_encode(L, -1, 1, "excepthook", 1, &msg, err);
  lua_pop(L, 4);
  if (!ok) {
    tbuf_free(&msg);
    return luaL_error(L, "%s", err);
  }
  worker *w = NULL, *fresh = NULL;
  pthread_mutex_lock(&rt.lock);
  if (t->state != TH_NEW || t->is_main || t->is_dummy) {
    pthread_mutex_unlock(&rt.lock);
    tbuf_free(&msg);
    return luaL_error(L, "threads can only be started once");
  }
  if (rt.shutting_down) {
    pthread_mutex_unlock(&rt.lock);
    tbuf_free(&msg);
    return luaL_error(L, "cannot start a thread at interpreter shutdown");
  }
  t->start = msg;
  t->start_split = split;
  t->hook_at = hook_at;
  t->state = TH_STARTED;
  live_add(t);
  if (!t->daemon)
    rt.nondaemon++;
  else
    rt.ndaemon_busy++;
  cobj_incref(&t->hdr);               /* the worker's reference */
  /* A parked worker with the stack size now asked for takes the thread. */
  worker **link = &rt.idle;
  while (*link && (*link)->stack_size != rt.stack_size)
    link = &(*link)->next_idle;
  if (*link) {
    w = *link;
    *link = w->next_idle;
    rt.nidle--;
    w->task = t;
    t->ident = w->ident;
    t->native_id = w->native_id;
    t->have_ids = 1;
    /* Signalled after the unlock (a worker woken under the lock would only
     * sleep on it again), pinned so that it is not freed meanwhile. */
    atomic_fetch_add(&w->pins, 1);
    pthread_mutex_unlock(&rt.lock);
    pthread_cond_signal(&w->wake);
    atomic_fetch_sub(&w->pins, 1);
    return 0;
  }
  rt.nworkers++;
  size_t stack_size = rt.stack_size;
  pthread_mutex_unlock(&rt.lock);

  /* No parked worker: make one; it builds its state, then runs t. */
  fresh = calloc(1, sizeof *fresh);
  int rc = ENOMEM;
  pthread_attr_t attr;
  if (fresh && (rc = pthread_attr_init(&attr)) == 0) {
    cond_init_monotonic(&fresh->wake);
    fresh->task = t;
    fresh->stack_size = stack_size;
    if (stack_size)
      rc = pthread_attr_setstacksize(&attr, stack_size);
    /* Joinable: a worker detaches itself unless it leaves at shutdown. */
    /* Workers never take SIGINT: the kernel gives it to the main thread,
     * the one whose Lua state Ctrl-C interrupts (intr.c).  A
     * child forked from a worker unblocks it (intr_child). */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_mutex_lock(&rt.lock);   /* publishes fresh->tid before it runs */
    if (rc == 0)
      rc = pthread_create(&fresh->tid, &attr, worker_main, fresh);
    if (rc == 0)
      workers_add(fresh);
    pthread_mutex_unlock(&rt.lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
      pthread_cond_destroy(&fresh->wake);
  }
  if (rc == 0)
    return 0;
  /* Undo: the thread never started and can be started again. */
  pthread_mutex_lock(&rt.lock);
  rt.nworkers--;
  live_remove(t);
  if (!t->daemon)
    rt.nondaemon--;
  else
    rt.ndaemon_busy--;
  t->state = TH_NEW;
  pthread_cond_broadcast(&t->changed);   /* wakes readers of t.ident, joiners */
  pthread_cond_broadcast(&rt.exit_cond);
  msg = t->start;
  t->start = (tbuf)TBUF_INIT;
  pthread_mutex_unlock(&rt.lock);
  tbuf_free(&msg);
  cobj_decref(&t->hdr);
  free(fresh);
  return luaL_error(L, "can't start new thread (%s)", strerror(rc));
}


/* Waits (rt.lock held) for t to end; returns whether it has, or -1 when
 * interrupted or cancelled first (intr_pending).  On the host's main thread
 * in slices: a condition variable's wait goes on through any signal.  A
 * cancel broadcasts t->changed itself (me->joining, th_cancel). */
static int th_wait_done(thread_obj *t, double timeout) {
  deadline d = deadline_in(timeout);
  int slice_ms = intr_slice_ms(0);
  thread_obj *me = current;
  int done = 0;
  if (me)
    me->joining = t;
  /* A start that failed sets the state back to NEW: stop waiting then too. */
  while (t->state == TH_STARTED) {
    if (intr_pending()) {
      done = -1;
      break;
    }
    struct timespec buf;
    const struct timespec *until = deadline_until(&d, slice_ms, &buf);
    int rc = until ? pthread_cond_timedwait(&t->changed, &rt.lock, until)
                   : pthread_cond_wait(&t->changed, &rt.lock);
    if (rc == ETIMEDOUT && t->state == TH_STARTED && deadline_passed(&d))
      break;
  }
  if (me)
    me->joining = NULL;
  return done < 0 ? done : t->state == TH_DONE;
}

/* Python's rules: a thread never waits for itself; the main thread may be
 * joined (it ends when the exit rules begin: thread_exit_wait), but it has no
 * results; a dummy thread (one concur did not start) never ends here. */
static void check_joinable(lua_State *L, thread_obj *t, const char *what, int for_result) {
  if (t == th_current())
    luaL_error(L, "cannot %s current thread", what);
  if (t->is_dummy)
    luaL_error(L, "cannot %s a dummy thread", what);
  if (t->is_main && for_result)
    luaL_error(L, "cannot %s the main thread", what);
}

static int th_join(lua_State *L) {
  thread_obj *t = th_self(L);
  double timeout = concur_opt_timeout(L, 2);
  check_joinable(L, t, "join", 0);
  pthread_mutex_lock(&rt.lock);
  if (t->state == TH_NEW) {
    pthread_mutex_unlock(&rt.lock);
    return luaL_error(L, "cannot join thread before it is started");
  }
  int done = th_wait_done(t, timeout);
  int unstarted = t->state == TH_NEW;
  pthread_mutex_unlock(&rt.lock);
  if (done < 0)
    return intr_raise(L);
  if (unstarted)
    return luaL_error(L, "cannot join thread: its start failed");
  intr_settle(L);
  lua_pushboolean(L, done);
  return 1;
}

/* t:result([timeout]): waits for t's end (at most timeout seconds, else
 * concur.TimeoutError) and returns its results or raises its error. */
static int th_result(lua_State *L) {
  thread_obj *t = th_self(L);
  double timeout = concur_opt_timeout(L, 2);
  check_joinable(L, t, "wait for the result of", 1);
  pthread_mutex_lock(&rt.lock);
  if (t->state == TH_NEW) {
    pthread_mutex_unlock(&rt.lock);
    return luaL_error(L, "cannot get the result of a thread before it is started");
  }
  int done = th_wait_done(t, timeout);
  int failed = t->failed;
  int running = t->state == TH_STARTED;
  pthread_mutex_unlock(&rt.lock);
  if (done < 0)
    return intr_raise(L);
  if (!done && running) {
    cobj_push_error(L, "TimeoutError");
    return lua_error(L);
  }
  if (!done)
    return luaL_error(L, "cannot get the result of a thread whose start failed");
  /* DONE: the result buffer no longer changes and is read-only from here. */
  if (t->result.len == 0)
    return luaL_error(L, "%s", t->errmsg ? t->errmsg : "thread failed: not enough memory");
  int held = intr_hold(L);   /* done: no interrupt inside the decoding */
  int n = transfer_decode_tbuf(L, &t->result, 0, t->result.len);
  if (held)
    intr_rearm(L);
  else
    intr_settle(L);
  if (failed)
    return lua_error(L);
  return n;
}

/* t:cancel(): asks a running thread to stop (intr.c says how it is woken);
 * true when it was running, false for an unstarted or ended thread and for
 * the main and dummy threads, which are not concur's to stop. */
static int th_cancel(lua_State *L) {
  thread_obj *t = th_self(L);
  pthread_mutex_lock(&rt.lock);
  if (t->state != TH_STARTED || t->is_main || t->is_dummy) {
    pthread_mutex_unlock(&rt.lock);
    lua_pushboolean(L, 0);
    return 1;
  }
  if (t == current) {   /* raised at the caller's next instruction */
    pthread_mutex_unlock(&rt.lock);
    intr_cancel_ask(&t->cancel, 0, pthread_self());
    intr_settle(L);
    lua_pushboolean(L, 1);
    return 1;
  }
  int running = t->running;
  intr_cancel_ask(&t->cancel, running, t->os);
  if (t->joining)
    pthread_cond_broadcast(&t->joining->changed);
  pthread_mutex_unlock(&rt.lock);
  /* The signal may have come just before the thread went to sleep in a
   * system call, where it would wait out its slice: sent again a few times
   * while the cancel stays pending (a thread in a long C call that is not
   * concur's keeps the caller here ~8 ms at most). */
  for (long us = 100; running && us <= 16000; us *= 4) {
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&rt.lock);
    running = t->state == TH_STARTED && t->running && intr_cancel_pending(&t->cancel);
    if (running)
      intr_cancel_ask(&t->cancel, 1, t->os);
    pthread_mutex_unlock(&rt.lock);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* concur.cancelled(): whether a cancel was asked of the calling thread. */
static int th_cancelled(lua_State *L) {
  lua_pushboolean(L, intr_cancelled());
  return 1;
}

static int push_cancelled_error(lua_State *L) { return cobj_push_error(L, "CancelledError"); }

static int th_is_alive(lua_State *L) {
  thread_obj *t = th_self(L);
  pthread_mutex_lock(&rt.lock);
  int alive = t->state == TH_STARTED;
  pthread_mutex_unlock(&rt.lock);
  lua_pushboolean(L, alive);
  return 1;
}

/* Waits until a started thread's ids are known (a new worker sets them). */
static void th_wait_ids(thread_obj *t) {
  while (t->state == TH_STARTED && !t->have_ids)
    pthread_cond_wait(&t->changed, &rt.lock);
}

static int daemon_settable(const cobj *o) {
  const thread_obj *t = (const thread_obj *)o;
  return t->state == TH_NEW && !t->is_main && !t->is_dummy;
}

/* The read-only attributes: ident and native_id, once the thread runs. */
static int th_read_id(lua_State *L, cobj *o, const char *k) {
  thread_obj *t = (thread_obj *)o;
  pthread_mutex_lock(&rt.lock);
  th_wait_ids(t);
  int known = t->have_ids;
  lua_Integer v = k[0] == 'i' ? t->ident : (lua_Integer)t->native_id;
  pthread_mutex_unlock(&rt.lock);
  return cobj_push_id(L, known, v);
}

static const cobj_attrs th_attrs = {
  &rt.lock, offsetof(thread_obj, name), offsetof(thread_obj, daemon), daemon_settable,
  "cannot set daemon status of active thread", "thread", {"ident", "native_id", NULL},
  th_read_id};


static int th_tostring(lua_State *L) {
  thread_obj *t = th_self(L);
  pthread_mutex_lock(&rt.lock);
  const char *st = t->state == TH_NEW ? "initial" : t->state == TH_DONE ? "stopped" : "started";
  char buf[400];
  if (t->have_ids && t->state != TH_NEW)
    snprintf(buf, sizeof buf, "<Thread(%s, %s%s %lld)>", t->name, st,
             t->daemon ? " daemon" : "", (long long)t->ident);
  else
    snprintf(buf, sizeof buf, "<Thread(%s, %s%s)>", t->name, st, t->daemon ? " daemon" : "");
  pthread_mutex_unlock(&rt.lock);
  lua_pushstring(L, buf);
  return 1;
}

/* ---- module functions ---------------------------------------------------- */

static int th_current_thread(lua_State *L) {
  cobj_push(L, &th_current()->hdr);
  return 1;
}

static int th_main_thread(lua_State *L) {
  cobj_push(L, &rt.main->hdr);
  return 1;
}

static int th_get_ident(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)pthread_self());
  return 1;
}

/* concur.get_native_id(): the kernel's id of the calling OS thread (its own
 * in a forked child). */
static int th_get_native_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)sys_gettid());
  return 1;
}

static int th_active_count(lua_State *L) {
  pthread_mutex_lock(&rt.lock);
  int n = rt.nlive;
  pthread_mutex_unlock(&rt.lock);
  lua_pushinteger(L, n);
  return 1;
}

/* core.set_excepthook(fn or nil): this state's hook, which the threads it
 * starts from now on take with them (th_start).  The Lua layer checks that
 * fn is callable; here, that it can cross to a thread. */
static int th_set_excepthook(lua_State *L) {
  lua_settop(L, 1);
  if (!lua_isnil(L, 1)) {
    tbuf trial = TBUF_INIT;
    char err[TRANSFER_ERRLEN];
    int ok = transfer_encode(L, 1, 1, "excepthook", 1, &trial, err);
    tbuf_free(&trial);
    if (!ok)
      return luaL_error(L, "bad argument #1 to 'set_excepthook' (%s)", err);
  }
  ctx_push_table(L);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, CTX_EXCEPTHOOK);
  return 0;
}

/* core.get_excepthook() -> this state's hook, or nil for the default. */
static int th_get_excepthook(lua_State *L) {
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_EXCEPTHOOK);
  return 1;
}

/* concur.__excepthook__(args): the default report of a thread's error,
 * "Exception in thread NAME:" and args.traceback (else args.exc_value as a
 * string), in one piece through the host's reporter (stderr by default). */
static int th_excepthook_default(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (lua_getfield(L, 1, "traceback") != LUA_TSTRING) {
    lua_getfield(L, 1, "exc_value");
    state_error_string(L, -1);
  }
  int body = lua_gettop(L);
  const char *name = "?";
  if (lua_getfield(L, 1, "thread") != LUA_TNIL && lua_getfield(L, -1, "name") != LUA_TNIL)
    name = state_error_string(L, -1);
  lua_pushfstring(L, "Exception in thread %s:\n", name);
  report_text(lua_tostring(L, -1), lua_tostring(L, body));
  return 0;
}

/* A box of references, released by __gc even if pushing handles raises. */
typedef struct refbox {
  size_t n;
  cobj *objs[];
} refbox;

static int refbox_gc(lua_State *L) {
  refbox *b = lua_touserdata(L, 1);
  for (size_t i = 0; i < b->n; i++)
    if (b->objs[i]) {
      cobj *o = b->objs[i];
      b->objs[i] = NULL;
      cobj_decref(o);
    }
  return 0;
}

static int th_enumerate(lua_State *L) {
  for (;;) {
    pthread_mutex_lock(&rt.lock);
    size_t cap = (size_t)rt.nlive + 4;
    pthread_mutex_unlock(&rt.lock);
    refbox *box = lua_newuserdatauv(L, sizeof(refbox) + cap * sizeof(cobj *), 0);
    box->n = 0;
    luaL_setmetatable(L, "concur.refbox");
    pthread_mutex_lock(&rt.lock);
    if ((size_t)rt.nlive > cap) {
      pthread_mutex_unlock(&rt.lock);
      lua_pop(L, 1);
      continue;
    }
    for (thread_obj *t = rt.live.next; t != &rt.live; t = t->next) {
      cobj_incref(&t->hdr);
      box->objs[box->n++] = &t->hdr;
    }
    pthread_mutex_unlock(&rt.lock);
    lua_createtable(L, (int)box->n, 0);
    for (size_t i = 0; i < box->n; i++) {
      cobj_push(L, box->objs[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;   /* the box's __gc releases its references */
  }
}

/* ---- runtime: init, exit, fork ---------------------------------------------- */

/* The calling OS thread is ending the process and never returns to its Lua
 * code (rt.lock held): its Thread counts as ended now (joiners wake, and its
 * result raises), and its worker as one the exit rules do not wait for.
 * Nothing for a thread concur did not start (the main thread). */
static void self_abandon_locked(void) {
  worker *w = current_worker;
  if (w == NULL || w->abandoned)
    return;
  w->abandoned = 1;
  thread_obj *t = current;
  if (t && t->state == TH_STARTED) {
    live_remove(t);
    if (!t->daemon) {
      rt.nondaemon--;
      rt.ndaemon_busy++;   /* a daemon's worker is counted there already */
    }
    t->failed = 1;
    free(t->errmsg);
    t->errmsg = strdup("the thread ended the process with os.exit");
    t->state = TH_DONE;
    pthread_cond_broadcast(&t->changed);
    sel_notify(&t->watchers);
  } else {
    rt.ndaemon_busy++;   /* between tasks: os.exit in a finalizer, a fork's end */
  }
  pthread_cond_broadcast(&rt.exit_cond);
}

/* The main thread ends when the exit rules begin (rt.lock held), before the
 * non-daemon threads are waited for, as in CPython's threading._shutdown:
 * a thread that joins the main thread then returns, and the exit cannot
 * wait on it for ever. */
static void main_end_locked(void) {
  thread_obj *m = rt.main;
  if (m == NULL || m->state != TH_STARTED)
    return;
  live_remove(m);
  m->state = TH_DONE;
  pthread_cond_broadcast(&m->changed);
  sel_notify(&m->watchers);
}

/* The first exit rule (exit.c, EXIT_THREADS): the caller and the main
 * thread count as ended, then the non-daemon threads are waited for. */
static void thread_exit_wait(void) {
  pthread_mutex_lock(&rt.lock);
  self_abandon_locked();
  main_end_locked();
  while (rt.nondaemon > 0)
    pthread_cond_wait(&rt.exit_cond, &rt.lock);
  pthread_mutex_unlock(&rt.lock);
}

/* The last exit rule (EXIT_WORKERS): the parked workers close their states
 * and leave, and are joined. */
static void thread_exit_stop(void) {
  pthread_mutex_lock(&rt.lock);
  rt.shutting_down = 1;
  for (worker *w = rt.idle; w; w = w->next_idle) {
    w->quit = 1;
    pthread_cond_signal(&w->wake);
  }
  rt.idle = NULL;
  rt.nidle = 0;
  /* Workers that are not running a daemon thread leave soon: wait for them,
   * so their states are closed before the process ends.  (Abandoned ones,
   * the caller's among them, are counted in ndaemon_busy.) */
  while (rt.nworkers > rt.ndaemon_busy)
    pthread_cond_wait(&rt.exit_cond, &rt.lock);
  worker *gone = rt.exited;
  rt.exited = NULL;
  pthread_mutex_unlock(&rt.lock);
  while (gone) {
    worker *next = gone->next_idle;
    pthread_join(gone->tid, NULL);
    pthread_mutex_lock(&rt.lock);
    workers_remove(gone);
    pthread_mutex_unlock(&rt.lock);
    worker_free(gone);
    gone = next;
  }
}

/* exit.c's callback for a thread that lost the claim and parks for ever. */
static void thread_exit_abandon(void) {
  pthread_mutex_lock(&rt.lock);
  self_abandon_locked();
  pthread_mutex_unlock(&rt.lock);
}

/* In a forked child only the forking thread exists: forget the others. */
/* concur.Process forks with rt.lock already held (thread_fork_freeze): the
 * handlers then leave it to the freezer.  rt_freezer: the freezing thread's
 * CONCUR_THREAD_ID, 0 when none; written with rt.lock held. */
static atomic_uintptr_t rt_freezer;

void thread_fork_freeze(void) {
  pthread_mutex_lock(&rt.lock);
  while (rt.nbuilding > 0)   /* see worker_build */
    pthread_cond_wait(&rt.exit_cond, &rt.lock);
  atomic_store(&rt_freezer, CONCUR_THREAD_ID);
}

void thread_fork_thaw(void) {
  atomic_store(&rt_freezer, 0);
  pthread_mutex_unlock(&rt.lock);
}

static int frozen_by_me(void) { return atomic_load(&rt_freezer) == CONCUR_THREAD_ID; }

static void rt_atfork_prepare(void) {
  if (!frozen_by_me())
    pthread_mutex_lock(&rt.lock);
}
static void rt_atfork_parent(void) {
  if (!frozen_by_me())
    pthread_mutex_unlock(&rt.lock);
}
static void rt_atfork_child(void) {
  atomic_store(&rt_freezer, 0);
  pthread_mutex_unlock(&rt.lock);   /* the forking thread took it in prepare (or froze) */
  cond_init_monotonic(&rt.exit_cond);
  thread_obj *self = th_current();
  /* The forking thread is this process's main thread (Python's
   * threading._after_fork): main_thread() and current_thread() are its
   * handle, and the parent's main thread, which does not exist here, has
   * ended like the others.  A dummy becomes "MainThread". */
  thread_obj *old_main = rt.main;
  if (self != old_main) {
    cobj_incref(&self->hdr);
    rt.main = self;
    self->is_main = 1;
    if (self->is_dummy) {
      self->is_dummy = 0;
      self->daemon = 0;
      char *name = strdup("MainThread");
      if (name) {
        free(self->name);
        self->name = name;
      }
      live_add(self);   /* a dummy is on no list */
    }
  }
  for (thread_obj *t = rt.live.next; t != &rt.live;) {
    thread_obj *next = t->next;
    cond_init_monotonic(&t->changed);   /* its waiters stayed in the parent */
    if (t != self) {
      live_remove(t);
      t->state = TH_DONE;   /* its thread does not exist here */
      t->failed = 1;
      /* Its result may be complete, half written or not there: it is the
       * worker's, and its references are the parent's.  Dropped unread
       * (not freed: it may be torn). */
      t->result = (tbuf)TBUF_INIT;
      t->errmsg = strdup("the thread does not exist in this forked process");
    }
    t = next;
  }
  if (old_main != rt.main)
    cobj_decref(&old_main->hdr);   /* the runtime's; handles keep their own */
  int self_running = current && current->state == TH_STARTED;
  rt.nondaemon = self_running && !current->daemon;
  rt.ndaemon_busy = self_running && current->daemon;
  rt.nworkers = current_worker ? 1 : 0;
  /* Forked from a thread: that thread is all this process runs, and the
   * process ends when it does (as in Python). */
  rt.fork_worker = current_worker;
  /* Those workers do not exist here; their memory stays (their states can
   * never be closed safely), kept reachable for leak checkers: parked or
   * busy, all are on rt.workers. */
  rt.parked_in_parent = rt.workers;
  rt.workers = NULL;
  rt.idle = NULL;
  rt.exited = NULL;
  rt.nidle = 0;
}

/* Keeps this shared object mapped until the process ends, whatever the
 * states that loaded it do: workers and the atexit handler live in it. */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)pin_library, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
}

static void rt_init(void) {
  /* First: exit.c's fork handlers then run after ours (rt.lock, then its). */
  exit_runtime_init();
  exit_on_step(EXIT_THREADS, thread_exit_wait);
  exit_on_step(EXIT_WORKERS, thread_exit_stop);
  exit_on_abandon(thread_exit_abandon);
  cond_init_monotonic(&rt.exit_cond);
  rt.live.next = rt.live.prev = &rt.live;
  pthread_key_create(&dummy_key, dummy_release);
  rt.main = th_alloc("MainThread");
  if (rt.main == NULL)
    abort();
  rt.main->is_main = 1;
  rt.main->state = TH_STARTED;
  rt.main->have_ids = 1;
  rt.main->ident = (lua_Integer)pthread_self();
  rt.main->native_id = sys_gettid();
  live_add(rt.main);
  pin_library();
  pthread_atfork(rt_atfork_prepare, rt_atfork_parent, rt_atfork_child);
}

void thread_runtime_init(void) {
  pthread_once(&rt_once, rt_init);
}

/* concur.stack_size([size]): the stack size of threads started from now on,
 * as Python's threading.stack_size: returns the old setting; 0 is the
 * system's default (ulimit -s, usually 8 MiB).  The floor leaves room for
 * Lua's deepest C recursion (200 levels: nested string.gsub callbacks need
 * about 400 KiB), so that a small stack gives Lua's "C stack overflow" error,
 * never a crash.  Only touched pages cost memory: the size bounds address
 * space, not resident memory. */
#define STACK_SIZE_MIN ((size_t)1 << 20)
#define STACK_SIZE_MAX ((size_t)1 << 30)

static int th_stack_size(lua_State *L) {
  pthread_mutex_lock(&rt.lock);
  size_t old = rt.stack_size;
  pthread_mutex_unlock(&rt.lock);
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n == 0 || (n >= (lua_Integer)STACK_SIZE_MIN &&
                                n <= (lua_Integer)STACK_SIZE_MAX), 1,
                  "size must be 0 or between 1048576 (1 MiB) and 1073741824 (1 GiB) bytes");
    size_t size = (size_t)n;
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0 && size % (size_t)page)
      size += (size_t)page - size % (size_t)page;
    pthread_mutex_lock(&rt.lock);
    rt.stack_size = size;
    pthread_mutex_unlock(&rt.lock);
  }
  lua_pushinteger(L, (lua_Integer)old);
  return 1;
}

/* Thread's methods, on the Lua class (th_set_class). */
static const luaL_Reg th_methods[] = {
  {"start", th_start}, {"join", th_join}, {"result", th_result}, {"is_alive", th_is_alive},
  {"isAlive", th_is_alive}, {"cancel", th_cancel}, {NULL, NULL}
};

/* core.thread_set_class(cls): the Lua layer's Thread class gets the methods
 * and becomes the metatable of handles' fields. */
static int th_set_class(lua_State *L) {
  return cobj_attr_set_class(L, &thread_type, &th_attrs, th_methods, CTX_THREAD_CLASS);
}

void thread_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"thread_new", th_new}, {"thread_set_class", th_set_class},
    {"current_thread", th_current_thread}, {"main_thread", th_main_thread},
    {"get_ident", th_get_ident}, {"get_native_id", th_get_native_id},
    {"active_count", th_active_count}, {"enumerate", th_enumerate},
    {"stack_size", th_stack_size}, {"set_excepthook", th_set_excepthook},
    {"get_excepthook", th_get_excepthook}, {"excepthook_default", th_excepthook_default},
    {"cancelled", th_cancelled}, {NULL, NULL}
  };
  intr_on_cancel(push_cancelled_error);
  cobj_attr_metatable(L, &thread_type, &th_attrs, th_tostring);
  if (luaL_newmetatable(L, "concur.refbox")) {
    lua_pushcfunction(L, refbox_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
}
