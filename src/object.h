/*
 * object.h - the object model (object.c): every concur object starts with a
 * `cobj` header holding an atomic reference count and its type.  A Lua
 * handle is a full userdata holding one pointer to the object and owning one
 * reference.  Within one lua_State an object has at most one live handle
 * (the state context's identity map), so `==` works across transfers.
 */
#ifndef CONCUR_OBJECT_H
#define CONCUR_OBJECT_H

#include "arena.h"

typedef struct cobj cobj;

struct tbuf;

struct cobj_fork_refs;

/* What concur.select asks of an object (select.c).  ready: a wait on it
 * would not block now (an item to get, set, ended, closed).  Futex objects
 * give `watchers`, the word their wakers pass to sel_notify (wait.h);
 * objects the kernel wakes give `fd` instead: a descriptor that polls
 * readable (or hung up) once the object is ready, given back with fd_done
 * after the poll; -1 when it has none (then only `ready` tells). */
typedef struct cobj_sel {
  int (*ready)(struct cobj *o);
  _Atomic uint32_t *(*watchers)(struct cobj *o);
  int (*fd)(struct cobj *o);
  void (*fd_done)(struct cobj *o, int fd);
} cobj_sel;

typedef struct cobj_type {
  const char *name;               /* "concur.Thread": metatable name, tostring */
  void (*destroy)(cobj *o);       /* frees the object when its last ref goes */
  /* called when a new handle for `o` is made in L, with the handle on top;
   * may set the handle's user value.  NULL: nothing to do. */
  void (*on_handle)(lua_State *L, cobj *o);
  /* Shared objects live in the arena (arena.c) and their count is the whole
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
  /* concur.select's view of the type; NULL: not selectable. */
  const cobj_sel *sel;
} cobj_type;

struct cobj {
  atomic_long refs;
  const cobj_type *type;
};

void cobj_init(cobj *o, const cobj_type *type);  /* refs = 1 */
void cobj_incref(cobj *o);
void cobj_decref(cobj *o);
/* A callback of fork.c (the ledger's mark): called by cobj_decref before it
 * releases a reference to a shared object.  NULL: none. */
void cobj_on_release(void (*callback)(cobj *o));
/* cobj_decref without the callback: for references that are not the
 * process's own (taken for a child, or a dead child's). */
void cobj_decref_unmarked(cobj *o);

/* A Lua handle: the userdata's block.  `pid` is the process that owns the
 * handle's reference: a forked child inherits handles whose references are
 * its parent's (the count of a shared object is in shared memory, not
 * copied), so it takes its own (cobj_fork_*, below) and never releases a
 * reference it does not own. */
/* The state's live handles, finalizer pending included (the identity map
 * drops those first): what a forked child gives back when it ends.  A node
 * of its own per handle, malloc'd, never inside the userdata: when Lua
 * cannot call a finalizer for lack of memory it drops it and frees the
 * userdata anyway, and a list through the userdata would then hold a
 * dangling pointer.  Such a node stays, with its reference, until the
 * state closes (ctx's __gc releases it). */
typedef struct cobj_live {
  struct cobj_live *prev, *next;
  cobj *obj;                   /* NULL once released by the state's close */
  const void *handle;          /* the handle's address: compared, never read */
  int pid;                     /* the handle's pid */
} cobj_live;

typedef struct cobj_handle {
  cobj *obj;
  int pid;
  cobj_live *live;             /* NULL: not listed (never bound, or no memory) */
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

/* Whether this process owns the reference h holds: stamped with our
 * concur_self, or adopted (a forked child: handles whose references the
 * parent took for it, cobj_adopt_handles, which takes the array). */
int cobj_handle_owned(const cobj_handle *h);
int cobj_live_owned(const cobj_live *n);   /* the same for a listed node */
void cobj_adopt_handles(cobj_handle **handles, size_t n);

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
/* Makes and registers (and pops) the metatable of a type whose handles are
 * indexed (Value, Array, Dict): `meta` (metamethods) with upvalue 1 the
 * metatable; the `methods` in a table of their own, each with upvalue 1 the
 * metatable; `index` and `newindex` (NULL: none, or one in `meta`) as
 * __index and __newindex closures with upvalues the metatable and that
 * methods table. */
void cobj_indexed_metatable(lua_State *L, const cobj_type *type, const luaL_Reg *methods,
                            const luaL_Reg *meta, lua_CFunction index, lua_CFunction newindex);
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
/* cobj_self for the hot methods of one type (Lock, Value, Array): a handle
 * checked a moment ago on this thread is known good (see cobj_self_cache)
 * and costs one compare. */
void *cobj_self_fast_miss(lua_State *L, void *ud);
static inline void *cobj_self_fast(lua_State *L, const cobj_type *type) {
  void *ud = lua_touserdata(L, 1);
  if (__builtin_expect(ud != NULL && ud == cobj_self_cache.ud &&
                       cobj_self_cache.gen == atomic_load_explicit(&cobj_handle_gen,
                                                                   memory_order_relaxed), 1)) {
    cobj *o = ((cobj_handle *)ud)->obj;
    if (__builtin_expect(o->type == type, 1))
      return o;
  }
  return cobj_self_fast_miss(L, ud);
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
/* Pushes a raised concur error value `name` ("Empty", ...): == this state's
 * concur[name], its tostring with the position of the calling Lua line
 * (luaL_where(L, 1)). */
int cobj_push_error(lua_State *L, const char *name);

/* Handles with fields (Thread, Process): the handle's user value is a table
 * of fields whose metatable is the Lua class.  Helpers for their metatables. */
/* A process-local object of `size` bytes, zeroed, its count 1, with a
 * malloc'd copy of `name` in its `char *` at name_off; NULL when out of
 * memory. */
void *cobj_calloc_named(size_t size, const cobj_type *type, const char *name, size_t name_off);
const void *cobj_main_state(lua_State *L);  /* identifies a state; never used */
void cobj_new_fields(lua_State *L, int class_slot);  /* for on_handle */

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
  /* Pushes the read-only attribute `key` (one of read_only) of o; returns 1. */
  int (*read_id)(lua_State *L, cobj *o, const char *key);
} cobj_attrs;
/* The constructor of such a type (core.X_new(fields)): pushes a handle
 * whose user value is the fields table at argument 1, then makes the object
 * (cobj_calloc_named) with `name` and `daemon`; the caller fills the rest and
 * binds it (cobj_bind).  Raises when out of memory. */
void *cobj_attr_new(lua_State *L, const cobj_type *type, const cobj_attrs *a, size_t size,
                    const char *name, int daemon);
/* A read-only id: the integer v when known, else nil; returns 1. */
static inline int cobj_push_id(lua_State *L, int known, lua_Integer v) {
  if (known)
    lua_pushinteger(L, v);
  else
    lua_pushnil(L);
  return 1;
}
/* Makes and registers the metatable of such a type: __index and __newindex
 * the attribute rules (name, daemon, the read-only ids) then the fields,
 * `tostring` as __tostring; each with upvalue 1 the metatable (cobj_self)
 * and upvalue 2 `a`. */
void cobj_attr_metatable(lua_State *L, const cobj_type *type, const cobj_attrs *a,
                         lua_CFunction tostring);
/* core.X_set_class(cls) of such a type: installs the methods `l` and
 * Python's legacy ones (getName, setName, isDaemon, setDaemon) on the class
 * (argument 1), each with upvalue 1 the registered metatable of `type`
 * (cobj_self) and upvalue 2 `a`, and stores the class in context slot `slot`
 * (the fields' metatable of handles). */
int cobj_attr_set_class(lua_State *L, const cobj_type *type, const cobj_attrs *a,
                        const luaL_Reg *l, int slot);
/* Checks the options table at idx of the constructor called `fname` (as
 * called: "JoinableQueue"): not the concur module, no key outside
 * `allowed` (NULL-terminated).  Errors are the constructor's argument 1's. */
void cobj_check_options(lua_State *L, int idx, const char *fname, const char *const *allowed);
/* The constructor called `fname` takes at most `most` arguments: one more is
 * "bad argument #most+1 to 'fname' (no value expected)", as Python's
 * TypeError (Lock(1), Pipe(true, 1)), never silently ignored. */
void cobj_no_more_args(lua_State *L, int most, const char *fname);
/* The name the running C function was called by, or `dflt`. */
const char *cobj_called_as(lua_State *L, const char *dflt);
/* The type of the value at idx as an argument error names it ("concur.Event");
 * may push a value, which holds the string. */
const char *cobj_typename(lua_State *L, int idx);

/* ---- the per-state context --------------------------------------------- */

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
  cobj_live live;        /* sentinel of the state's live handles */
} state_ctx;

state_ctx *ctx_get(lua_State *L);   /* the context; makes it on first use */
void ctx_push_table(lua_State *L);   /* pushes the context table */
/* For a Lua function set_*(t): stores the table argument 1 in context slot
 * `slot` (CTX_*); returns 0 (no results). */
int ctx_store(lua_State *L, int slot);
/* Indices in the context table */
enum {
  CTX_IDENTITY = 1,    /* weak-valued: lightuserdata(obj) -> handle */
  CTX_NAME_OF,         /* value -> packed name string (see transfer.c) */
  CTX_THREAD_CLASS,    /* the Lua layer's Thread class, for handles */
  CTX_PROCESS_CLASS,   /* the Lua layer's Process class, for handles */
  CTX_TRACEBACK,       /* last traceback captured by the thread runner */
  CTX_ERRORS,          /* the Lua layer's error values by name (Empty, ...) */
  CTX_EXCEPTHOOK,      /* concur.set_excepthook's function; nil: the default */
  CTX_SLOTS
};


/* A reference held by a message from process `pid` that this process may
 * give back: one to a shared object (in the arena), or any if the message
 * is ours.  Reads nothing of o: another process's local object is not in
 * our memory (it may have been made after the fork). */
static inline int cobj_owned_here(const cobj *o, int pid) {
  return pid == concur_self || shm_contains(o);
}

/* The reference owned by a holder stamped with `pid` is released: a
 * process-local object always (its count was copied with it), a shared one
 * only by the process that owns the reference. */
static inline void cobj_release_owned(cobj *o, int pid) {
  if (pid == concur_self || !o->type->shared)
    cobj_decref(o);
}

#endif
