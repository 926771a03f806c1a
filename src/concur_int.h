/*
 * concur_int.h - the interfaces between concur's C files.  Not installed; hosts
 * use concur.h.
 *
 * Object model: every concur object (Thread now; Lock ... Queue later) starts
 * with a `cobj` header holding an atomic reference count and its type.  A Lua
 * handle is a full userdata holding one pointer to the object and owning one
 * reference.  Within one lua_State an object has at most one live handle (the
 * state context's identity map), so `==` works across transfers.
 */
#ifndef CONCUR_INT_H
#define CONCUR_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"

#include "concur.h"

#if LUA_VERSION_NUM < 504
#error "concur needs Lua 5.4"
#endif

/* ---- objects (object.c) ------------------------------------------------ */

typedef struct cobj cobj;

struct tbuf;

struct cobj_fork_refs;

typedef struct cobj_type {
  const char *name;               /* "concur.Thread": metatable name, tostring */
  void (*destroy)(cobj *o);       /* frees the object when its last ref goes */
  /* called when a new handle for `o` is made in L, with the handle on top;
   * may set the handle's user value.  NULL: nothing to do. */
  void (*on_handle)(lua_State *L, cobj *o);
  /* Shared objects live in the arena (shm.c) and their count is the whole
   * family's; the others live in one process's heap. */
  int shared;
  /* Makes the metatable of the type in L (luaL_newmetatable ...), on the
   * first handle a state makes: a state that never sees the type pays
   * nothing.  NULL: the metatable is made when the module opens. */
  void (*open_meta)(lua_State *L);
  /* Process-local objects that hold messages: calls cobj_fork_take_tbuf on
   * each message whose content cannot change during the fork.  NULL: none. */
  void (*fork_collect)(cobj *o, struct cobj_fork_refs *r);
  /* A forked child about to _exit: gives back the shared references its
   * messages hold (cobj_release_state).  NULL: none. */
  void (*exit_release)(cobj *o);
} cobj_type;

struct cobj {
  atomic_long refs;
  const cobj_type *type;
};

void cobj_init(cobj *o, const cobj_type *type);  /* refs = 1 */
void cobj_incref(cobj *o);
void cobj_decref(cobj *o);

/* A Lua handle: the userdata's block.  `pid` is the process that owns the
 * handle's reference: a forked child inherits handles whose references are
 * its parent's (the count of a shared object is in shared memory, not
 * copied), so it takes its own (cobj_fork_*, below) and never releases a
 * reference it does not own. */
typedef struct cobj_handle {
  cobj *obj;
  int pid;
  /* The state's live handles, finalizer pending included (the identity
   * map drops those first): what a forked child gives back when it ends. */
  struct cobj_handle *prev, *next;
} cobj_handle;

/* The last handle a hot method checked on this OS thread, valid while no
 * handle anywhere has been finalized since (cobj_handle_gen unchanged): a
 * finalized handle's memory may come back as another library's userdata. */
typedef struct cobj_self_cache_t {
  void *ud;
  unsigned long gen;
} cobj_self_cache_t;
extern _Thread_local cobj_self_cache_t cobj_self_cache __attribute__((tls_model("initial-exec")));
extern atomic_ulong cobj_handle_gen;

/* The reference owned by a holder stamped with `pid` is released: a
 * process-local object always (its count was copied with it), a shared one
 * only by the process that owns the reference. */
static inline void cobj_release_owned(cobj *o, int pid);

/* References across fork.  The references a child inherits are taken for it
 * by the parent before fork(), while the thread runtime is frozen
 * (thread_fork_freeze): taking them in the child would be too late, the
 * parent may free an object the moment fork returns.  cobj_fork_prepare
 * walks the identity table at `identity` (from cobj_push_identity, pushed
 * before freezing: it may raise) and what reachable objects hold; it makes
 * no Lua call that can raise and returns 0 when out of memory (nothing
 * taken).  The child then calls cobj_fork_child (the records now stamped as
 * its own), the parent cobj_fork_done, or cobj_fork_undo if fork failed. */
typedef struct cobj_fork_refs {
  cobj_handle **handles;
  size_t nhandles, caphandles;
  struct tbuf **tbufs;
  size_t ntbufs, captbufs;
  int oom;
  /* Every reference to a shared object taken for the child, one entry each
   * (the ledger's makings); no_ledger when it could not be recorded. */
  cobj **shared;
  size_t nshared, capshared;
  int no_ledger;
  struct cobj_ledger *ledger;   /* made by cobj_fork_prepare, or NULL */
} cobj_fork_refs;
void cobj_push_identity(lua_State *L);
/* A forked child that ends without closing its state: gives back the
 * references its handles hold to shared objects (the counts are the
 * family's).  Only before _exit: the handles are left as they were. */
void cobj_release_state(lua_State *L);
int cobj_fork_prepare(lua_State *L, int identity, cobj_fork_refs *r);
void cobj_fork_take_tbuf(cobj_fork_refs *r, struct tbuf *b);
/* Drops the references b holds to shared objects, leaving b as it is (for a
 * process about to end, or undoing cobj_fork_take_tbuf). */
void cobj_release_tbuf_shared(const struct tbuf *b);
void cobj_fork_child(cobj_fork_refs *r);
void cobj_fork_done(cobj_fork_refs *r);
void cobj_fork_undo(cobj_fork_refs *r);

/* The ledger of a child's inherited references (in the arena): one entry per
 * reference the parent took for it, marked when the child gives back a
 * reference to that object (cobj_decref marks first, then releases, so a kill
 * in between leaves a reference held, never one released twice).  A child
 * killed by a signal never runs its exit path: its parent, reaping it, gives
 * back what is still unmarked (cobj_ledger_settle), after any end.  Extra
 * marks (the child releasing a reference it took itself) only keep a
 * reference held: the parent never releases more than the child inherited
 * and still held.  That needs one rule: an inherited reference leaves the
 * child only through cobj_decref (never moved into a message or another
 * holder without one).  References the child took after the fork are not in
 * it.  The parent takes the ledger from
 * cobj_fork_refs after cobj_fork_prepare (NULL: none could be made, the
 * start goes on without). */
typedef struct cobj_ledger cobj_ledger;
/* The child is dead: releases the unmarked entries if `release`, then frees
 * the ledger. */
void cobj_ledger_settle(cobj_ledger *l, int release);

/* Pushes the one handle of `o` in L, making it (and taking a reference) if
 * the state has none.  Can raise a memory error; takes no lock. */
void cobj_push(lua_State *L, cobj *o);
/* Constructors, in this order so that a memory error can lose nothing:
 * cobj_newhandle pushes an empty handle (its __gc does nothing); the caller
 * then makes the object and cobj_bind gives the handle at idx the caller's
 * reference to it and records it in the identity map. */
void cobj_newhandle(lua_State *L, const cobj_type *type, int nuvalue);
void cobj_bind(lua_State *L, int idx, cobj *o);
/* The object of the handle at idx if it is of `type` (any concur type when
 * type is NULL), else NULL. */
cobj *cobj_test(lua_State *L, int idx, const cobj_type *type);
/* As cobj_test but raises "bad argument #idx (concur.X expected, got Y)". */
cobj *cobj_check(lua_State *L, int idx, const cobj_type *type);
/* Makes the metatable of `type`, with methods `l` and `__gc`, `__tostring`,
 * `__name`, the handle marker, and leaves it on the stack (not registered). */
void cobj_newmetatable(lua_State *L, const cobj_type *type, const luaL_Reg *l);
/* Registers the metatable on top (left there) under the type's name: last,
 * once it is complete, so that a memory error half way through leaves no
 * half-built metatable for later handles. */
void cobj_register_metatable(lua_State *L, const cobj_type *type);

/* The object of `self` (argument 1) of a method that carries its type's
 * metatable as upvalue 1: comparing that is the whole type check. */
int cobj_self_error(lua_State *L);   /* raises the right bad-argument error */
static inline void *cobj_self(lua_State *L) {
  cobj_handle *h = lua_touserdata(L, 1);
  if (h != NULL && lua_getmetatable(L, 1)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same && h->obj)
      return h->obj;
  }
  cobj_self_error(L);
  return NULL;
}
/* A constructor of a shared object: pushes an empty handle first (a memory
 * error then loses nothing), then makes the object in the arena, zeroed,
 * its count 1; the caller fills it and calls cobj_bind(L, -1, o).  Raises
 * when the arena is full. */
void *cobj_new_shared(lua_State *L, const cobj_type *type, size_t size);
/* The Lua collector sees a handle's few bytes, not what it holds in the
 * arena: a constructor calls this first, before it pushes anything, with
 * the arena bytes it is about to take, and the collector is stepped as if
 * that much Lua memory had been allocated (so a loop that makes and drops
 * objects collects them at the pace it makes them).  Not while a lock is
 * held: a step can run finalizers.  Does nothing while the collector is
 * stopped, or inside a finalizer. */
void cobj_gc_pressure(lua_State *L, size_t bytes);
/* shm_alloc for a constructor, after its handle is pushed and before it
 * holds anything: when the arena is full, the Lua collector runs once
 * (dropped handles give their objects back) and it tries again. */
void *cobj_shm_alloc(lua_State *L, size_t n);
/* The full collection cobj_shm_alloc makes (same conditions as
 * cobj_gc_pressure): 1 if it ran. */
int cobj_gc_collect(lua_State *L);
/* Pushes concur's error value `name` ("Empty", ...) of this state. */
int cobj_push_error(lua_State *L, const char *name);

/* Handles with fields (Thread, Process): the handle's user value is a table
 * of fields whose metatable is the Lua class.  Helpers for their metatables. */
const void *cobj_main_state(lua_State *L);  /* identifies a state; never used */
void cobj_new_fields(lua_State *L, int class_slot);  /* for on_handle */
int cobj_get_field(lua_State *L);   /* __index fallback: fields[key] */
int cobj_set_field(lua_State *L);   /* __newindex fallback: rawset(fields, key, value) */
int cobj_push_name(lua_State *L, pthread_mutex_t *lock, char *const *name);
int cobj_set_name(lua_State *L, int idx, pthread_mutex_t *lock, char **name);

/* The attributes Thread and Process share (name, daemon, ids that cannot be
 * assigned), described once per type.  The object's name is a `char *` and
 * its daemon flag an `int`, both guarded by `lock`. */
typedef struct cobj_attrs {
  pthread_mutex_t *lock;
  size_t name_off, daemon_off;        /* offsetof the name and the daemon flag */
  int (*daemon_settable)(const cobj *o);   /* called with lock held */
  const char *daemon_refused;         /* the error when it is not */
  const char *kind;                   /* "thread": "attribute 'x' of a thread is read-only" */
  const char *read_only[4];           /* their names, NULL after the last */
} cobj_attrs;
/* __index and __newindex of such a handle: the attribute keyed by argument
 * 2 (value: argument 3), when it is one of those; 0 when it is not. */
int cobj_attr_index(lua_State *L, const cobj_attrs *a, cobj *o);
int cobj_attr_newindex(lua_State *L, const cobj_attrs *a, cobj *o);
/* Python's legacy methods over them, for a method table whose upvalue 1 is
 * the handle's metatable (cobj_self) and upvalue 2 its cobj_attrs. */
int cobj_attr_get_name(lua_State *L);
int cobj_attr_set_name(lua_State *L);
int cobj_attr_is_daemon(lua_State *L);
int cobj_attr_set_daemon(lua_State *L);
/* Installs the methods `l` on the class at idx with those two upvalues:
 * the registered metatable of `type` and `a`. */
void cobj_attr_methods(lua_State *L, int idx, const cobj_type *type, const cobj_attrs *a,
                       const luaL_Reg *l);
/* Checks the options table at idx of the constructor called `fname` (as
 * called: "JoinableQueue"): not the concur module, no key outside
 * `allowed` (NULL-terminated).  Errors are the constructor's argument 1's. */
void cobj_check_options(lua_State *L, int idx, const char *fname, const char *const *allowed);
/* The name the running C function was called by, or `dflt`. */
const char *cobj_called_as(lua_State *L, const char *dflt);
/* The type of the value at idx as an argument error names it ("concur.Event");
 * may push a value, which holds the string. */
const char *cobj_typename(lua_State *L, int idx);

/* ---- per-state context (object.c) ------------------------------------- */

/* Registry slots of the per-state context (all in one table). */
typedef struct state_ctx {
  long names_version;    /* bumped when package.loaded or registrations change */
  long cache_version;    /* names_version the name cache was built for */
  int cache_has_cfuncs;  /* the cache also names C functions of modules */
  /* The pointers of the values the name cache holds (it anchors them, so an
   * address is never reused while listed): a C-side membership test, so the
   * encoder asks Lua only for values that have a name.  Open addressing;
   * size a power of two; NULL: empty. */
  const void **named;
  size_t named_size;
  cobj_handle live;      /* sentinel of the state's live handles */
} state_ctx;

state_ctx *ctx_get(lua_State *L);   /* the context; makes it on first use */
void ctx_push_table(lua_State *L);   /* pushes the context table */
/* Indices in the context table */
enum {
  CTX_IDENTITY = 1,    /* weak-valued: lightuserdata(obj) -> handle */
  CTX_NAME_OF,         /* value -> packed name string (see transfer.c) */
  CTX_THREAD_CLASS,    /* the Lua layer's Thread class, for handles */
  CTX_PROCESS_CLASS,   /* the Lua layer's Process class, for handles */
  CTX_TRACEBACK,       /* last traceback captured by the thread runner */
  CTX_ERRORS,          /* the Lua layer's error values by name (Empty, ...) */
  CTX_SLOTS
};

/* ---- value transfer (transfer.c) -------------------------------------- */

/* A self-contained encoded message: bytes plus the concur objects it holds
 * a reference to (released by tbuf_free, whether decoded or not). */
typedef struct tbuf {
  unsigned char *data;
  size_t len, cap;
  cobj **objs;
  size_t nobjs, objcap;
  cobj *owner;   /* listed in objs without a reference: the object that
                    holds this buffer (a thread returning its own handle) */
  int pid;       /* the process owning the references in objs (see cobj_handle) */
} tbuf;

#define TBUF_INIT {NULL, 0, 0, NULL, 0, 0, NULL, 0}

void tbuf_free(tbuf *b);
/* Makes b hold no reference to `owner`, the object b belongs to, so that an
 * object keeping a message that mentions itself is not a cycle. */
void tbuf_set_owner(tbuf *b, cobj *owner);
/* b holds a process-local object (a Thread, a Pipe connection): a message
 * only the process that encoded it may decode. */
int tbuf_has_local(const tbuf *b);

/* Encodes the n values at idx .. idx+n-1 of L into b (appending).  `root`
 * names them in error messages ("args" gives "args[2].cb"); with n == 1 and
 * one_root set, the single value is named `root` itself.  On failure returns
 * 0, leaves b as it was and writes a message into err; never raises and runs
 * no Lua code. */
#define TRANSFER_ERRLEN 256
int transfer_encode(lua_State *L, int idx, int n, const char *root, int one_root,
                    tbuf *b, char err[TRANSFER_ERRLEN]);
/* Decodes the message at b->data[at .. at+len) (objects come from b),
 * pushing its values; returns how many.  Raises a Lua error (the buffer stays
 * owned by the caller) when a module or function cannot be found or the bytes
 * are malformed. */
int transfer_decode_tbuf(lua_State *L, const tbuf *b, size_t at, size_t len);

/* A message in shared memory (see transfer.c).  sblob_from_tbuf takes b's
 * references and frees b (NULL when the arena is full: b is left as it was);
 * sblob_decode pushes the values (may raise). */
typedef struct sblob sblob;
sblob *sblob_from_tbuf(tbuf *b);
int sblob_decode(lua_State *L, sblob *s);
void sblob_free(sblob *s);

/* Decodes a message whose references are handed over with it (a queue item,
 * a pipe message): they are given back once its values are made, and also
 * when decoding raises; `blob`, when not NULL, is the message and is freed.
 * A message holding a process-local object (has_local) decodes only in the
 * process that sent it; elsewhere it raises, still giving back what it can. */
int transfer_decode_taking(lua_State *L, const tbuf *view, int has_local, sblob *blob);
int sblob_decode_free(lua_State *L, sblob *s);   /* the same for a blob */

/* This OS thread's scratch buffer, emptied (its references none): encode a
 * message there, move or drop its references, then transfer_scratch_trim.
 * Never in use by two callers at once: encoding runs no Lua code. */
tbuf *transfer_scratch(void);
void transfer_scratch_trim(tbuf *b);

/* The family's message authentication (transfer.c): a keyed MAC
 * (SipHash-2-4) whose key is made once per process family, before any fork,
 * by transfer_runtime_init.  Bytecode in messages and pipe frames holding
 * object references carry one, so that no bytes from elsewhere are ever
 * loaded as a function or taken as a reference. */
void transfer_runtime_init(void);
void transfer_set_mac_key(uint64_t k0, uint64_t k1);   /* fuzzing: a fixed key */
typedef struct mac_state {
  uint64_t v[4];
  uint64_t tail;
  unsigned ntail;
  uint64_t total;
} mac_state;
void mac_begin(mac_state *m);
void mac_add(mac_state *m, const void *p, size_t n);
uint64_t mac_end(mac_state *m);
uint64_t transfer_mac(const void *p, size_t n);

/* Forgets the name cache of L (package.loaded changed). */
void transfer_names_changed(lua_State *L);
int transfer_open(lua_State *L);   /* core.transfer, the package.loaded hook */

/* ---- threads (thread.c) ----------------------------------------------- */

void thread_open(lua_State *L);    /* metatables, core functions */
void thread_runtime_init(void);    /* once per process, from luaopen */
/* Waits for non-daemon threads, applies proc_exit_rules, stops the parked
 * workers: what a process does when it ends (atexit, or a child's exit).
 * Only after thread_exit_claim returned. */
void thread_exit_rules(void);
/* The end of a process is claimed by one thread, the first: to it this
 * returns; any other thread parks for ever.  explicit: `code` is an os.exit
 * status, and the first one is the process's (thread_exit_status). */
void thread_exit_claim(int code, int explicit);
int thread_exit_status(int code);   /* the first os.exit's status, else code */
/* Around a fork by concur.Process: holds the runtime's lock so that no
 * thread changes state (and no message changes hands) until fork returns. */
void thread_fork_freeze(void);
void thread_fork_thaw(void);

/* ---- processes (process.c) ------------------------------------------- */

void proc_open(lua_State *L);
void proc_runtime_init(void);
void proc_exit_rules(void);        /* join non-daemon children, stop daemon ones */

/* ---- shared memory and waiting (shm.c) ------------------------------- */

extern int concur_pid;                   /* getpid(), cached; right in forked children */
/* This process's stamp on what it owns (handles' references, messages):
 * unique over the life of the process family (a counter in the arena), where
 * a pid may be reused by a later process.  The pid where there is no arena. */
extern int concur_self;
/* its address names a thread */
extern _Thread_local char concur_thread_marker __attribute__((tls_model("initial-exec")));
#define CONCUR_THREAD_ID ((uintptr_t)&concur_thread_marker)

int shm_runtime_init(void);              /* maps the arena once; -1 if it cannot */
void *shm_alloc(size_t n);               /* NULL when the arena is full */
void *shm_calloc(size_t n);
void shm_free(void *p);
int shm_contains(const void *p);
size_t shm_in_use(size_t *high_water);  /* bytes in live blocks, family-wide; the bump top */
size_t shm_cost(size_t n);               /* the bytes shm_alloc(n) takes from the arena */

/* Robust process-shared mutexes: a dead holder's mutex is taken over (the
 * lock returns 1 then) and made consistent. */
int rmutex_init(pthread_mutex_t *m);
int rmutex_lock(pthread_mutex_t *m);
void rmutex_unlock(pthread_mutex_t *m);

/* An absolute CLOCK_MONOTONIC deadline; timeout < 0: forever. */
typedef struct deadline {
  int forever;
  struct timespec at;
} deadline;
deadline deadline_in(double timeout);
int deadline_passed(const deadline *d);
double deadline_left(const deadline *d);   /* seconds, 0 once passed; -1: forever */
/* Sleeps while *word == expected, until woken, d, or slice_ms (if > 0)
 * from now.  Returns 0, EAGAIN, ETIMEDOUT or EINTR; callers re-check. */
int fx_wait(_Atomic uint32_t *word, uint32_t expected, const deadline *d, int slice_ms);
void fx_wake(_Atomic uint32_t *word, int n);
/* Spins a few microseconds while *word == expected; 1 if it changed. */
int fx_spin(_Atomic uint32_t *word, uint32_t expected);

/* A process lock word (Lock, and the Queue's own locks): 0 when free, else
 * the holder's pid | PWORD_WAITERS.  Any thread may release it; a holder
 * process that dies is taken over by the next acquire (at once, or within
 * 100 ms for a sleeping waiter), which then sets *from_dead (if not NULL). */
#define PWORD_WAITERS 0x80000000u
static inline int pword_try(_Atomic uint32_t *w) {
  uint32_t expect = 0;
  return atomic_compare_exchange_strong_explicit(w, &expect, (uint32_t)concur_pid,
                                                 memory_order_acquire, memory_order_relaxed);
}
/* 1 when taken, 0 on timeout or when not blocking. */
int pword_acquire(_Atomic uint32_t *w, int blocking, double timeout, int *from_dead);
/* The same, but -1 (nothing taken) when an interrupt comes first (see
 * intr_pending); the caller raises with intr_raise. */
int pword_acquire_intr(_Atomic uint32_t *w, int blocking, double timeout, int *from_dead);
/* Frees the word, waking one sleeper if any; returns the word it held (0:
 * it was not held, which only a Lock's release can meet). */
void fx_wake(_Atomic uint32_t *word, int n);
static inline uint32_t pword_release(_Atomic uint32_t *w) {
  uint32_t old = atomic_exchange_explicit(w, 0, memory_order_release);
  if (old & PWORD_WAITERS)
    fx_wake(w, 1);
  return old;
}

/* The process `pid` has ended (reaped or a zombie).  Never true for us. */
int proc_gone(int pid);

/* ---- synchronization objects (sync.c) ------------------------------ */

void sync_open(lua_State *L);

/* ---- queues and pipes (queue.c, pipe.c) -------------------------------- */

void queue_open(lua_State *L);
void pipe_open(lua_State *L);

/* ---- runtime (core.c) -------------------------------------------------- */

/* The functions a thread state needs: print and the host hooks. */
int core_print(lua_State *L);
void core_report_error(const char *report);
/* Pushes and returns the text a report shows for the error value at idx:
 * a string or number as itself (the value at idx left as it is), a value
 * with __tostring as that gives it, else "(error object is a T value)".  A
 * failing __tostring is caught and said, never raised: reporting an error
 * must not replace it.  Raises only for lack of memory. */
const char *core_error_string(lua_State *L, int idx);
int core_run_setup_hook(lua_State *L);   /* 0 ok; else error message on top */
void core_preload(lua_State *L);         /* package.preload for concur, concur.core */
double core_monotonic(void);
/* Timeout argument at idx: nil -> -1 (forever); negative or NaN raises. */
double concur_opt_timeout(lua_State *L, int idx);

/* ---- Ctrl-C in the main thread (core.c) ---------------------------------
 *
 * The rule (API.md, "Stopping work"): a blocking call either completes and
 * returns its results, or raises "interrupted!" and leaves nothing taken.
 * A blocking wait that the host's main thread can reach:
 *   - sleeps at most intr_slice_ms(its own slice) ms at a time (0: none of
 *     its own); elsewhere that returns the slice unchanged, so other threads
 *     pay nothing.  A poll()- or futex-based wait may also wake on EINTR;
 *   - after each wake (EINTR, slice end, anything), before taking anything,
 *     asks intr_pending() (cheap: 0 at once off the main thread); when 1,
 *     undoes what it did (unlinks its waiter, keeps nothing) and returns
 *     intr_raise(L), which never returns;
 *   - when it took what it waited for, completes, whatever intr_pending()
 *     says, and calls intr_settle(L) before returning: a pending interrupt
 *     then fires at the next VM instruction of L, after the results are
 *     assigned (not at this call's return, where it would drop them). */
#define INTR_SLICE_MS 50
int intr_slice_ms(int slice_ms);
int intr_pending(void);
int intr_raise(lua_State *L);
void intr_settle(lua_State *L);
/* A call that completed but still runs code that may run Lua (decoding its
 * results, which may require a module or collect garbage): intr_hold takes
 * a pending interrupt off first (1 if there was one), so that it cannot
 * fire in there; then, once the results are pushed, intr_rearm(L) if it
 * returned 1, else intr_settle(L). */
int intr_hold(lua_State *L);
void intr_rearm(lua_State *L);
void intr_disarm(lua_State *L);   /* forgets a pending interrupt (L may be NULL) */
/* In a forked child, before it runs: its one thread is its main one, `run`
 * the Lua thread its run method runs in (an interrupt fires there too). */
void intr_child(lua_State *run);
int thread_is_worker(void);       /* thread.c: this OS thread is a concur worker */

#define CONCUR_UNUSED(x) ((void)(x))

/* A reference held by a message from process `pid` that this process may
 * give back: one to a shared object (in the arena), or any if the message
 * is ours.  Reads nothing of o: another process's local object is not in
 * our memory (it may have been made after the fork). */
static inline int cobj_owned_here(const cobj *o, int pid) {
  return pid == concur_self || shm_contains(o);
}

static inline void cobj_release_owned(cobj *o, int pid) {
  if (pid == concur_self || !o->type->shared)
    cobj_decref(o);
}

#endif
