/*
 * object.c - the shared object model: reference-counted objects, their Lua
 * handles, and the per-state context that maps each object to its one handle.
 *
 * Invariants:
 *  - a handle owns exactly one reference to its object until its __gc runs;
 *  - the identity map of a state (weak values) holds each live handle under
 *    lightuserdata(obj); Lua clears a weak entry before the handle's __gc
 *    runs, so a handle being finalized is never handed out again;
 *  - nothing here takes a lock, but for the name helpers of handles with
 *    fields, which take the caller's: reference counts are atomic.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "object.h"

typedef cobj_handle handle;

_Thread_local cobj_self_cache_t cobj_self_cache __attribute__((tls_model("initial-exec")));
atomic_ulong cobj_handle_gen;

/* In a forked child: the handles whose references the parent took for it
 * (sorted addresses).  Not restamped one by one: a write to each would copy
 * every page holding one, at a page fault each, for nothing. */
static cobj_handle **adopted;
static size_t nadopted;
static int adopted_pid;   /* the set is valid in this process only: a fork by
                             another library copies it into a child it is not for */

static int ptr_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
  return x < y ? -1 : x > y;
}

/* A handle at address h (compared, never read) with that pid. */
static int owned(const void *h, int pid) {
  if (pid == concur_self)
    return 1;
  return nadopted && adopted_pid == concur_self &&
         bsearch(&h, adopted, nadopted, sizeof *adopted, ptr_cmp) != NULL;
}

int cobj_handle_owned(const cobj_handle *h) { return owned(h, h->pid); }

int cobj_live_owned(const cobj_live *n) { return owned(n->handle, n->pid); }

void cobj_adopt_handles(cobj_handle **handles, size_t n) {
  free(adopted);   /* the parent's own adoptions */
  adopted = handles;
  nadopted = n;
  adopted_pid = concur_self;
  if (nadopted)
    qsort(adopted, nadopted, sizeof *adopted, ptr_cmp);
}

static const char handle_marker = 0;  /* metatable[&handle_marker] = type */
static const char ctx_key = 0;        /* registry[&ctx_key] = context table */
enum { CTX_STRUCT = CTX_SLOTS };

void cobj_init(cobj *o, const cobj_type *type) {
  atomic_init(&o->refs, 1);
  o->type = type;
}

void cobj_incref(cobj *o) {
  atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

void cobj_decref_unmarked(cobj *o) {
  if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
    o->type->destroy(o);
}

static void (*release_callback)(cobj *o);

void cobj_on_release(void (*callback)(cobj *o)) { release_callback = callback; }

void cobj_decref(cobj *o) {
  if (release_callback != NULL && o->type->shared)
    release_callback(o);
  cobj_decref_unmarked(o);
}

/* ---- per-state context ------------------------------------------------- */

static void live_unlink(cobj_live *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = NULL;
}

/* Gives back what a handle's reference holds (as its __gc does). */
static void release_ref(cobj *o, int is_owned) {
  /* An unowned handle's object may be gone already (its owner freed it):
   * tell shared from local by address, never by reading it. */
  if (is_owned || !shm_contains(o))
    cobj_decref(o);
}

/* The state closes: a node still listed is a handle whose finalizer Lua
 * dropped (out of memory) or one finalized after this (older than the
 * context): its reference is given back now, the node left detached for
 * that finalizer, if it comes, to free. */
static int ctx_gc(lua_State *L) {
  state_ctx *c = lua_touserdata(L, 1);
  free(c->named);
  c->named = NULL;
  if (c->live.next) {
    while (c->live.next != &c->live) {
      cobj_live *n = c->live.next;
      live_unlink(n);
      cobj *o = n->obj;
      n->obj = NULL;
      if (o)
        release_ref(o, cobj_live_owned(n));
    }
  }
  return 0;
}

static void ctx_create(lua_State *L) {
  lua_createtable(L, CTX_STRUCT, 0);
  lua_newtable(L);                                 /* identity map */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawseti(L, -2, CTX_IDENTITY);
  for (int i = CTX_IDENTITY + 1; i < CTX_THREAD_CLASS; i++) {
    lua_newtable(L);
    lua_rawseti(L, -2, i);
  }
  state_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->names_version = 1;
  c->live.prev = c->live.next = &c->live;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawseti(L, -2, CTX_STRUCT);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}

void ctx_push_table(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    ctx_create(L);
  }
}

state_ctx *ctx_get(lua_State *L) {
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_STRUCT);
  state_ctx *c = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return c;
}

int ctx_store(lua_State *L, int slot) {
  luaL_checktype(L, 1, LUA_TTABLE);
  ctx_push_table(L);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, slot);
  return 0;
}

/* ---- handles ----------------------------------------------------------- */

/* The handle at idx and its type, or NULL when idx holds no concur handle. */
static handle *handle_at(lua_State *L, int idx, const cobj_type **type) {
  handle *h = lua_touserdata(L, idx);
  if (h == NULL || lua_type(L, idx) != LUA_TUSERDATA ||
      lua_rawlen(L, idx) != sizeof(handle) || !lua_getmetatable(L, idx))
    return NULL;
  lua_rawgetp(L, -1, &handle_marker);
  *type = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return *type ? h : NULL;
}

cobj *cobj_test(lua_State *L, int idx, const cobj_type *type) {
  const cobj_type *t;
  handle *h = handle_at(L, idx, &t);
  return h && (type == NULL || t == type) ? h->obj : NULL;
}

cobj *cobj_check(lua_State *L, int idx, const cobj_type *type) {
  const cobj_type *t;
  handle *h = handle_at(L, idx, &t);
  if (h == NULL || (type != NULL && t != type))
    luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %s",
                                          type ? type->name : "concur object",
                                          luaL_typename(L, idx)));
  if (h->obj == NULL)      /* its __gc has run, or it was never bound */
    luaL_argerror(L, idx, "concur object already finalized");
  return h->obj;
}

void cobj_newhandle(lua_State *L, const cobj_type *type, int nuvalue) {
  handle *h = lua_newuserdatauv(L, sizeof *h, nuvalue);
  h->obj = NULL;                           /* empty: its __gc does nothing */
  h->live = NULL;
  if (luaL_getmetatable(L, type->name) == LUA_TNIL) {
    lua_pop(L, 1);
    if (type->open_meta == NULL)
      luaL_error(L, "%s is not opened in this state", type->name);
    type->open_meta(L);
    luaL_getmetatable(L, type->name);
  }
  lua_setmetatable(L, -2);
  /* Its node now (its __gc frees it), before the caller takes anything
   * that a failure here would leave unowned; cobj_bind lists it. */
  cobj_live *n = malloc(sizeof *n);
  if (n == NULL)
    luaL_error(L, "not enough memory");
  n->prev = n->next = NULL;
  n->obj = NULL;
  n->handle = h;
  n->pid = 0;
  h->live = n;
}

void cobj_bind(lua_State *L, int idx, cobj *o) {
  idx = lua_absindex(L, idx);
  handle *h = lua_touserdata(L, idx);
  h->obj = o;                              /* from here its __gc releases o */
  h->pid = concur_self;
  state_ctx *c = ctx_get(L);
  cobj_live *n = h->live;   /* made with the handle (cobj_newhandle) */
  if (n) {
    n->obj = o;
    n->pid = h->pid;
    n->next = c->live.next;
    n->prev = &c->live;
    c->live.next->prev = n;
    c->live.next = n;
  }
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_IDENTITY);
  lua_pushvalue(L, idx);
  lua_rawsetp(L, -2, o);
  lua_pop(L, 2);
}

void cobj_push(lua_State *L, cobj *o) {
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_IDENTITY);
  if (lua_rawgetp(L, -1, o) == LUA_TUSERDATA) {
    handle *h = lua_touserdata(L, -1);
    if (!cobj_handle_owned(h)) {   /* forked by someone else: adopt it now */
      if (o->type->shared)
        cobj_incref(o);
      h->pid = concur_self;
      if (h->live)
        h->live->pid = h->pid;
    }
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 3);
  cobj_newhandle(L, o->type, 1);
  cobj_incref(o);
  cobj_bind(L, -1, o);
  if (o->type->on_handle)
    o->type->on_handle(L, o);
}

static int handle_gc(lua_State *L) {
  handle *h = lua_touserdata(L, 1);
  if (h == NULL)
    return 0;
  cobj *o = h->obj;
  cobj_live *n = h->live;
  if (o)   /* the self cache may name this handle: it is going */
    atomic_fetch_add_explicit(&cobj_handle_gen, 1, memory_order_relaxed);
  h->obj = NULL;
  h->live = NULL;
  if (n) {
    if (n->obj == NULL)   /* released when the state's context closed */
      o = NULL;
    if (n->prev)
      live_unlink(n);
    free(n);
  }
  if (o)
    release_ref(o, cobj_handle_owned(h));
  return 0;
}

static int handle_tostring(lua_State *L) {
  handle *h = lua_touserdata(L, 1);
  luaL_getmetafield(L, 1, "__name");
  lua_pushfstring(L, "<%s %p>", lua_tostring(L, -1), h ? (void *)h->obj : NULL);
  return 1;
}

/* obj.k = v on a handle: its attributes (parties, closed, ...) and methods
 * are read-only, and it has no others, as in Python, where assigning one
 * raises AttributeError.  Types with fields (Thread, Process) have their
 * own __newindex. */
static int handle_newindex(lua_State *L) {
  const char *tname = "concur object";
  if (luaL_getmetafield(L, 1, "__name") == LUA_TSTRING) {
    tname = lua_tostring(L, -1);
    if (strncmp(tname, "concur.", 7) == 0)
      tname += 7;
  }
  /* "an Event", "an RLock", "a Barrier" */
  const char *article = (tname[0] && strchr("AEIOU", tname[0])) || (tname[0] == 'R' && tname[1] == 'L') ?
      "an" : "a";
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_pushvalue(L, 2);
    if (lua_gettable(L, 1) != LUA_TNIL)   /* an attribute or a method */
      return luaL_error(L, "attribute '%s' of %s %s is read-only", lua_tostring(L, 2),
                        article, tname);
    return luaL_error(L, "%s %s has no attribute '%s'", article, tname, lua_tostring(L, 2));
  }
  return luaL_error(L, "%s %s has no attribute '%s'", article, tname, luaL_tolstring(L, 2, NULL));
}

void cobj_newmetatable(lua_State *L, const cobj_type *type, const luaL_Reg *l) {
  lua_createtable(L, 0, 16);
  lua_pushstring(L, type->name);
  lua_setfield(L, -2, "__name");
  lua_pushlightuserdata(L, (void *)type);
  lua_rawsetp(L, -2, &handle_marker);
  lua_pushcfunction(L, handle_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, handle_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, handle_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "this metatable is private");
  lua_setfield(L, -2, "__metatable");
  if (l)
    luaL_setfuncs(L, l, 0);
}

void cobj_register_metatable(lua_State *L, const cobj_type *type) {
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, type->name);
}

/* ---- handles with fields (Thread, Process) ------------------------------- */

void *cobj_calloc_named(size_t size, const cobj_type *type, const char *name, size_t name_off) {
  cobj *o = calloc(1, size);
  if (o == NULL)
    return NULL;
  char *copy = strdup(name);
  if (copy == NULL) {
    free(o);
    return NULL;
  }
  memcpy((char *)o + name_off, &copy, sizeof copy);
  cobj_init(o, type);
  return o;
}

void *cobj_attr_new(lua_State *L, const cobj_type *type, const cobj_attrs *a, size_t size,
                    const char *name, int daemon) {
  cobj_newhandle(L, type, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  char *o = cobj_calloc_named(size, type, name, a->name_off);
  if (o == NULL)
    luaL_error(L, "not enough memory");
  memcpy(o + a->daemon_off, &daemon, sizeof daemon);
  return o;
}

const void *cobj_main_state(lua_State *L) {
  concur_push_mainthread(L);
  const void *m = lua_tothread(L, -1);
  lua_pop(L, 1);
  return m;
}

void cobj_new_fields(lua_State *L, int class_slot) {
  lua_newtable(L);
  ctx_push_table(L);
  lua_rawgeti(L, -1, class_slot);
  if (lua_istable(L, -1))
    lua_setmetatable(L, -3);
  else
    lua_pop(L, 1);
  lua_pop(L, 1);
  lua_setiuservalue(L, -2, 1);
}

static int cobj_get_field(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  if (!lua_istable(L, -1))
    return 0;
  lua_pushvalue(L, 2);
  lua_gettable(L, -2);
  return 1;
}

static int cobj_set_field(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  if (!lua_istable(L, -1))
    return luaL_error(L, "handle has no fields");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

static int cobj_push_name(lua_State *L, pthread_mutex_t *lock, char *const *name) {
  /* Copied under the lock, pushed after: pushing may raise. */
  pthread_mutex_lock(lock);
  char *copy = strdup(*name);
  pthread_mutex_unlock(lock);
  if (copy == NULL)
    return luaL_error(L, "not enough memory");
  lua_pushstring(L, copy);
  free(copy);
  return 1;
}

static int cobj_set_name(lua_State *L, int idx, pthread_mutex_t *lock, char **name) {
  /* An assignment (t.name = v): the message names the attribute, where an
   * argument error would name the metamethod and its argument number. */
  if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
    return luaL_error(L, "name must be a string, got %s", luaL_typename(L, idx));
  char *nn = strdup(lua_tostring(L, idx));
  if (nn == NULL)
    return luaL_error(L, "not enough memory");
  pthread_mutex_lock(lock);
  char *old = *name;
  *name = nn;
  pthread_mutex_unlock(lock);
  free(old);
  return 0;
}

/* The name and the daemon flag of object o, as `a` places them. */
static char **attr_name(const cobj_attrs *a, cobj *o) {
  return (char **)(void *)((char *)o + a->name_off);
}

static int *attr_daemon(const cobj_attrs *a, cobj *o) {
  return (int *)(void *)((char *)o + a->daemon_off);
}

static int attr_push_daemon(lua_State *L, const cobj_attrs *a, cobj *o) {
  pthread_mutex_lock(a->lock);
  int daemon = *attr_daemon(a, o);
  pthread_mutex_unlock(a->lock);
  lua_pushboolean(L, daemon);
  return 1;
}

/* Sets the daemon flag from the boolean at idx, or raises at the caller's
 * line (that of the assignment or of the setDaemon call). */
static int attr_set_daemon(lua_State *L, const cobj_attrs *a, cobj *o, int idx) {
  pthread_mutex_lock(a->lock);
  int ok = a->daemon_settable(o);
  if (ok)
    *attr_daemon(a, o) = lua_toboolean(L, idx);
  pthread_mutex_unlock(a->lock);
  if (!ok)
    return luaL_error(L, "%s", a->daemon_refused);
  return 0;
}

/* __index of a handle with attributes (upvalues as attr_newindex_mm):
 * name, daemon, the read-only ids, then the fields. */
static int attr_index_mm(lua_State *L) {
  cobj *o = cobj_self(L);
  const cobj_attrs *a = lua_touserdata(L, lua_upvalueindex(2));
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *k = lua_tostring(L, 2);
    if (strcmp(k, "name") == 0)
      return cobj_push_name(L, a->lock, attr_name(a, o));
    if (strcmp(k, "daemon") == 0)
      return attr_push_daemon(L, a, o);
    for (int i = 0; a->read_only[i]; i++)
      if (strcmp(k, a->read_only[i]) == 0)
        return a->read_id(L, o, k);
  }
  return cobj_get_field(L);
}

static int cobj_attr_newindex(lua_State *L, const cobj_attrs *a, cobj *o) {
  if (lua_type(L, 2) != LUA_TSTRING)
    return 0;
  const char *k = lua_tostring(L, 2);
  if (strcmp(k, "name") == 0) {
    cobj_set_name(L, 3, a->lock, attr_name(a, o));
    return 1;
  }
  if (strcmp(k, "daemon") == 0) {
    if (lua_type(L, 3) != LUA_TBOOLEAN)   /* names the attribute, not the metamethod */
      return luaL_error(L, "daemon must be a boolean, got %s", luaL_typename(L, 3));
    attr_set_daemon(L, a, o, 3);
    return 1;
  }
  for (const char *const *ro = a->read_only; *ro; ro++)
    if (strcmp(k, *ro) == 0)
      return luaL_error(L, "attribute '%s' of a %s is read-only", k, a->kind);
  return 0;
}

/* __newindex of a handle with attributes: upvalue 1 its metatable, 2 its
 * cobj_attrs. */
static int attr_newindex_mm(lua_State *L) {
  cobj *o = cobj_self(L);
  if (cobj_attr_newindex(L, lua_touserdata(L, lua_upvalueindex(2)), o))
    return 0;
  return cobj_set_field(L);
}

void cobj_attr_metatable(lua_State *L, const cobj_type *type, const cobj_attrs *a,
                         lua_CFunction tostring) {
  const luaL_Reg meta[] = {{"__index", attr_index_mm}, {"__newindex", attr_newindex_mm},
                           {"__tostring", tostring}, {NULL, NULL}};
  cobj_newmetatable(L, type, NULL);
  lua_pushvalue(L, -1);   /* upvalue 1 of the metamethods, for cobj_self */
  lua_pushlightuserdata(L, (void *)a);
  luaL_setfuncs(L, meta, 2);
  cobj_register_metatable(L, type);
  lua_pop(L, 1);
}

static const cobj_attrs *attr_rules(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(2));
}

static int cobj_attr_get_name(lua_State *L) {
  cobj *o = cobj_self(L);
  const cobj_attrs *a = attr_rules(L);
  return cobj_push_name(L, a->lock, attr_name(a, o));
}

static int cobj_attr_set_name(lua_State *L) {
  cobj *o = cobj_self(L);
  const cobj_attrs *a = attr_rules(L);
  if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER)
    return luaL_typeerror(L, 2, "string");
  return cobj_set_name(L, 2, a->lock, attr_name(a, o));
}

static int cobj_attr_is_daemon(lua_State *L) {
  cobj *o = cobj_self(L);
  return attr_push_daemon(L, attr_rules(L), o);
}

static int cobj_attr_set_daemon(lua_State *L) {
  cobj *o = cobj_self(L);
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  return attr_set_daemon(L, attr_rules(L), o, 2);
}

int cobj_attr_set_class(lua_State *L, const cobj_type *type, const cobj_attrs *a,
                        const luaL_Reg *l, int slot) {
  static const luaL_Reg legacy[] = {
    {"getName", cobj_attr_get_name}, {"setName", cobj_attr_set_name},
    {"isDaemon", cobj_attr_is_daemon}, {"setDaemon", cobj_attr_set_daemon}, {NULL, NULL}};
  luaL_checktype(L, 1, LUA_TTABLE);
  for (int i = 0; i < 2; i++) {
    lua_pushvalue(L, 1);
    luaL_getmetatable(L, type->name);
    lua_pushlightuserdata(L, (void *)a);
    luaL_setfuncs(L, i ? legacy : l, 2);
    lua_pop(L, 1);
  }
  return ctx_store(L, slot);
}

/* ---- constructors' options ---------------------------------------------- */

const char *cobj_called_as(lua_State *L, const char *dflt) {
  lua_Debug ar;
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name)
    return ar.name;
  return dflt;
}

const char *cobj_typename(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  int t = luaL_getmetafield(L, idx, "__name");   /* left pushed: it holds the name */
  if (t == LUA_TSTRING)
    return lua_tostring(L, -1);
  return luaL_typename(L, idx);
}

void cobj_check_options(lua_State *L, int idx, const char *fname, const char *const *allowed) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "concur");
  int is_module = lua_rawequal(L, -1, idx);
  lua_pop(L, 2);
  if (is_module)
    luaL_error(L, "bad argument #1 to '%s' (got the concur module: call concur.%s(...), "
               "not concur:%s(...))", fname, fname, fname);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int known = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *k = allowed; *k && !known; k++)
        known = strcmp(lua_tostring(L, -1), *k) == 0;
    if (!known)
      luaL_error(L, "bad argument #1 to '%s' (unknown option '%s')", fname,
                 luaL_tolstring(L, -1, NULL));
  }
}

void cobj_no_more_args(lua_State *L, int most, const char *fname) {
  if (lua_gettop(L) > most)
    luaL_error(L, "bad argument #%d to '%s' (no value expected)", most + 1, fname);
}

/* ---- methods' helpers --------------------------------------------------- */

int cobj_self_error(lua_State *L) {
  /* Argument 1 is read before anything is pushed: with no arguments at all,
   * index 1 would otherwise be the first value pushed here. */
  const cobj_type *t = NULL;
  handle *h = handle_at(L, 1, &t);
  const char *got = h && t->name ? t->name : luaL_typename(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "__name");
  const char *want = lua_tostring(L, -1);
  if (h == NULL || t->name == NULL || strcmp(t->name, want ? want : "") != 0)
    return luaL_argerror(L, 1, lua_pushfstring(L, "%s expected, got %s", want, got));
  return luaL_argerror(L, 1, "concur object already finalized");
}

/* ---- the collector and the arena ------------------------------------------ */

/* Arena bytes this thread's constructors took that the collector has not
 * been told of yet: paid in steps of at least GC_PAY_BYTES, so that making
 * a small object costs an addition, not a call into the collector.  Per
 * thread, not per state: a state runs on one thread at a time, and bytes
 * paid to another state of the same thread still pace a collector. */
#define GC_PAY_BYTES (16 * 1024)
static _Thread_local size_t gc_owed;

void cobj_gc_pressure(lua_State *L, size_t bytes) {
  gc_owed += bytes;
  if (gc_owed < GC_PAY_BYTES)
    return;
  size_t kb = gc_owed >> 10;
  gc_owed &= 1023;
  /* LUA_GCSTEP n adds n KiB to the collector's debt and runs the steps it
   * owes.  Not when stopped (the program asked) or inside a finalizer
   * (where 5.4.0-5.4.3 would run a step anyway): both read as not
   * running. */
  if (concur_lua_gc(L, LUA_GCISRUNNING, 0))
    concur_lua_gc(L, LUA_GCSTEP, kb > INT_MAX / 2 ? INT_MAX / 2 : (int)kb);
}

int cobj_gc_collect(lua_State *L) {
  if (!concur_lua_gc(L, LUA_GCISRUNNING, 0))
    return 0;
  concur_lua_gc(L, LUA_GCCOLLECT, 0);
  return 1;
}

void *cobj_shm_alloc(lua_State *L, size_t n) {
  if (shm_runtime_init() != 0)
    return NULL;
  void *p = shm_alloc(n);
  /* Full, maybe of objects only dropped handles hold: collect them. */
  if (p == NULL && cobj_gc_collect(L))
    p = shm_alloc(n);
  return p;
}

void cobj_indexed_metatable(lua_State *L, const cobj_type *type, const luaL_Reg *methods,
                            const luaL_Reg *meta, lua_CFunction index, lua_CFunction newindex) {
  cobj_newmetatable(L, type, NULL);
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, meta, 1);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);   /* methods: upvalue 1 the metatable */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, index, 2);
  lua_setfield(L, -3, "__index");
  if (newindex) {
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, newindex, 2);
    lua_setfield(L, -3, "__newindex");
  }
  lua_pop(L, 1);                  /* the methods table */
  cobj_register_metatable(L, type);
  lua_pop(L, 1);
}

__attribute__((noinline, cold)) void *cobj_self_fast_miss(lua_State *L, void *ud) {
  unsigned long gen = atomic_load_explicit(&cobj_handle_gen, memory_order_relaxed);
  cobj *o = cobj_self(L);
  cobj_self_cache.ud = ud;
  cobj_self_cache.gen = gen;
  return o;
}

void *cobj_new_shared(lua_State *L, const cobj_type *type, size_t size) {
  cobj_gc_pressure(L, shm_cost(size));
  cobj_newhandle(L, type, 0);
  cobj *o = cobj_shm_alloc(L, size);
  if (o)
    memset(o, 0, size);
  if (o == NULL) {
    luaL_error(L, "cannot make a %s: the shared memory arena is full", type->name + 7);
    return NULL;
  }
  cobj_init(o, type);
  return o;
}

int cobj_push_error(lua_State *L, const char *name) {
  int top = lua_gettop(L);
  ctx_push_table(L);
  lua_rawgeti(L, -1, CTX_ERRORS);
  if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, name) == LUA_TTABLE &&
      lua_getmetatable(L, -1)) {               /* ctx, errors, sentinel, mt */
    /* A raised one: {sentinel, "file:line: "} with the sentinel's
     * metatable, == the sentinel (lua/concur.lua). */
    lua_createtable(L, 2, 0);                  /* ..., mt, err */
    lua_pushvalue(L, -3);
    lua_rawseti(L, -2, 1);
    luaL_where(L, 1);
    lua_rawseti(L, -2, 2);
    lua_insert(L, -2);                         /* ..., err, mt */
    lua_setmetatable(L, -2);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
  }
  lua_settop(L, top);
  lua_pushfstring(L, "concur.%s", name);
  return 1;
}
