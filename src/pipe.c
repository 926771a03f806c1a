/*
 * pipe.c - concur.Pipe: two connected ends that carry messages, between the
 * threads of a process and between processes forked after it was made.
 *
 * Both kinds are a Unix stream socketpair: writes use MSG_NOSIGNAL, so a
 * send to a closed peer is an error, never a SIGPIPE that kills the process.
 * Pipe(false) shuts one direction of each end.  A connection is a
 * process-local object (its fd is this process's); a forked child inherits
 * the fds and its own copy of the object.
 *
 * A message is a frame: a header (frame_hdr), then for a value the object
 * pointers it holds references to and the encoded bytes (transfer.c), for
 * bytes (send_bytes, or send of a string) the bytes themselves, written
 * straight from the Lua string.  One sender and one receiver at a time per
 * connection (send_mu, recv_mu, held across the system calls of one frame),
 * so messages from several threads never interleave.  Frames are read
 * exactly, header then body, never ahead: a fork never copies half-read data.
 *
 * close() while another thread is inside send or recv on the same
 * connection: the fd is closed when the last operation leaves (`busy`), so
 * its number is never reused under a running call.
 *
 * Lock order: mu is never held with send_mu or recv_mu; no Lua call is made
 * while any is held (buffers that may raise are made first).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "concur_int.h"

#define FRAME_VALUE 0x434e5601u   /* "CNV", 1 */
#define FRAME_BYTES 0x434e4201u   /* "CNB", 1 */
#define SOCK_BUF (4 << 20)        /* asked for; the system may give less */

typedef struct frame_hdr {
  uint32_t kind;
  int32_t pid;                    /* the sender: owner of local references */
  uint32_t nobjs;
  uint32_t has_local;
  uint64_t len;                   /* bytes after the object pointers */
} frame_hdr;

typedef struct conn_obj {
  cobj hdr;
  struct conn_obj *prev, *next;   /* every connection of the process (fork) */
  pthread_mutex_t mu;             /* guards fd, closed, busy */
  pthread_mutex_t send_mu, recv_mu;
  int fd;
  int readable, writable;
  int closed;                     /* close() called; fd closed once busy is 0 */
  int busy;                       /* calls using fd */
} conn_obj;

static void conn_destroy(cobj *o);
static void conn_meta(lua_State *L);

static const cobj_type conn_type = {"concur.Connection", conn_destroy, NULL, 0, conn_meta, NULL,
                                    NULL};

/* ---- the process's connections, for fork --------------------------------- */

static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static conn_obj conns = {.prev = &conns, .next = &conns};
static pthread_once_t conns_once = PTHREAD_ONCE_INIT;

/* A forked child has only the forking thread: every lock another thread
 * held is free again, and no call is inside a connection. */
static pthread_mutex_t body_cache_mu = PTHREAD_MUTEX_INITIALIZER;

/* Around a fork: every short-held lock is taken (conns_mu, then each
 * connection's mu, then the body cache's), so that the child copies no
 * half-done update (a close between close(fd) and fd = -1).  send_mu and
 * recv_mu are held across blocking calls: not taken, re-made in the child. */
static void conns_prepare(void) {
  pthread_mutex_lock(&conns_mu);
  for (conn_obj *c = conns.next; c != &conns; c = c->next)
    pthread_mutex_lock(&c->mu);
  pthread_mutex_lock(&body_cache_mu);
}

static void conns_parent(void) {
  pthread_mutex_unlock(&body_cache_mu);
  for (conn_obj *c = conns.next; c != &conns; c = c->next)
    pthread_mutex_unlock(&c->mu);
  pthread_mutex_unlock(&conns_mu);
}

static void conns_child(void) {
  pthread_mutex_init(&body_cache_mu, NULL);
  pthread_mutex_init(&conns_mu, NULL);
  for (conn_obj *c = conns.next; c != &conns; c = c->next) {
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->send_mu, NULL);
    pthread_mutex_init(&c->recv_mu, NULL);
    c->busy = 0;
    if (c->closed && c->fd >= 0) {
      close(c->fd);
      c->fd = -1;
    }
  }
}

static void conns_init(void) { pthread_atfork(conns_prepare, conns_parent, conns_child); }

static void conn_destroy(cobj *o) {
  conn_obj *c = (conn_obj *)o;
  pthread_mutex_lock(&conns_mu);
  c->prev->next = c->next;
  c->next->prev = c->prev;
  pthread_mutex_unlock(&conns_mu);
  if (c->fd >= 0)
    close(c->fd);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->send_mu);
  pthread_mutex_destroy(&c->recv_mu);
  free(c);
}

static conn_obj *conn_make(int fd, int readable, int writable) {
  conn_obj *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  cobj_init(&c->hdr, &conn_type);
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->send_mu, NULL);
  pthread_mutex_init(&c->recv_mu, NULL);
  c->fd = fd;
  c->readable = readable;
  c->writable = writable;
  pthread_mutex_lock(&conns_mu);
  c->next = conns.next;
  c->prev = &conns;
  conns.next->prev = c;
  conns.next = c;
  pthread_mutex_unlock(&conns_mu);
  return c;
}

/* ---- using the fd ------------------------------------------------------------- */

/* Starts a call on c's fd: the fd, or -1 if c is closed. */
static int conn_enter(conn_obj *c) {
  pthread_mutex_lock(&c->mu);
  int fd = c->closed ? -1 : c->fd;
  if (fd >= 0)
    c->busy++;
  pthread_mutex_unlock(&c->mu);
  return fd;
}

static void conn_leave(conn_obj *c) {
  pthread_mutex_lock(&c->mu);
  if (--c->busy == 0 && c->closed && c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  pthread_mutex_unlock(&c->mu);
}

static conn_obj *conn_self(lua_State *L) { return cobj_self(L); }

/* The fd of c for a call that reads (want_read) or writes; raises if c is
 * closed or the wrong end. */
static int conn_begin(lua_State *L, conn_obj *c, int want_read) {
  if (want_read && !c->readable)
    luaL_error(L, "connection is write-only");
  if (!want_read && !c->writable)
    luaL_error(L, "connection is read-only");
  int fd = conn_enter(c);
  if (fd < 0)
    luaL_error(L, "connection is closed");
  return fd;
}

/* Writes every byte of iov[0 .. n); 0 or an errno. */
static int write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    struct msghdr m = {0};
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)n;
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    size_t left = (size_t)w;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

/* Reads exactly n bytes: 0, -1 at end of stream before any byte, -2 at end
 * of stream after some, or an errno. */
static int read_all(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    if (r == 0)
      return got == 0 ? -1 : -2;
    got += (size_t)r;
  }
  return 0;
}

static int io_error(lua_State *L, const char *what, int rc) {
  if (rc == -1)
    return luaL_error(L, "end of stream (EOFError): the other end of the pipe is closed");
  if (rc == -2)
    return luaL_error(L, "end of stream in the middle of a message: the sender ended");
  if (rc == EPIPE || rc == ECONNRESET)
    return luaL_error(L, "%s: broken pipe: the other end of the pipe is closed", what);
  return luaL_error(L, "%s: %s", what, strerror(rc));
}

/* ---- sending ------------------------------------------------------------------ */

/* Writes one frame; 0, an errno, or EBADF when c is closed.  Raises
 * nothing: the caller gives back what the frame held first. */
static int send_iov(conn_obj *c, struct iovec *iov, int n) {
  int fd = conn_enter(c);
  if (fd < 0)
    return EBADF;
  pthread_mutex_lock(&c->send_mu);
  int rc = write_all(fd, iov, n);
  pthread_mutex_unlock(&c->send_mu);
  conn_leave(c);
  return rc;
}

static int send_error(lua_State *L, int rc) {
  if (rc == EBADF)
    return luaL_error(L, "connection is closed");
  return io_error(L, "send", rc);
}

static int send_string(lua_State *L, conn_obj *c, const char *s, size_t len) {
  if (!c->writable)
    return luaL_error(L, "connection is read-only");
  frame_hdr h = {FRAME_BYTES, concur_self, 0, 0, len};
  struct iovec iov[2] = {{&h, sizeof h}, {(void *)s, len}};
  int rc = send_iov(c, iov, len ? 2 : 1);
  return rc ? send_error(L, rc) : 0;
}

/* c:send(value): any value the transfer rules allow. */
static int conn_send(lua_State *L) {
  conn_obj *c = conn_self(L);
  luaL_checkany(L, 2);
  if (lua_type(L, 2) == LUA_TSTRING) {   /* no encoding: written from the string */
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    return send_string(L, c, s, len);
  }
  if (!c->writable)
    return luaL_error(L, "connection is read-only");
  tbuf *b = transfer_scratch();
  char err[TRANSFER_ERRLEN];
  if (!transfer_encode(L, 2, 1, "value", 1, b, err))
    return luaL_error(L, "%s", err);
  frame_hdr h = {FRAME_VALUE, concur_self, (uint32_t)b->nobjs, (uint32_t)tbuf_has_local(b), b->len};
  struct iovec iov[3] = {{&h, sizeof h}, {b->objs, b->nobjs * sizeof(cobj *)}, {b->data, b->len}};
  int rc = send_iov(c, iov, 3);
  if (rc == 0)
    b->nobjs = 0;         /* the references travel with the message */
  else
    tbuf_free(b);         /* not sent (or not all): given back */
  transfer_scratch_trim(b);
  return rc ? send_error(L, rc) : 0;
}

/* c:send_bytes(s, [offset], [size]): bytes s[offset+1 .. offset+size]. */
static int conn_send_bytes(lua_State *L) {
  conn_obj *c = conn_self(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, off >= 0 && (size_t)off <= len, 3, "offset out of range");
  lua_Integer size = luaL_optinteger(L, 4, (lua_Integer)(len - (size_t)off));
  luaL_argcheck(L, size >= 0 && (size_t)size <= len - (size_t)off, 4, "size out of range");
  return send_string(L, c, s + off, (size_t)size);
}

/* ---- receiving ------------------------------------------------------------------ */

/* A malloc'd message body held by a userdata made before the read, so that
 * nothing leaks whatever raises afterwards. */
typedef struct body_box {
  void *p;
  size_t mapped;                  /* > 0: p is a mapping of that many bytes */
} body_box;

/* Bodies from BODY_MAP bytes are mappings.  The last one freed is kept for
 * the next (one per process), its pages given back lazily (MADV_FREE: the
 * kernel takes them only under memory pressure), so that a stream of large
 * messages does not fault in every page of every message; a new mapping has
 * its pages made at once (MAP_POPULATE), one system call instead of a fault
 * per page.  Children get these mappings empty (MADV_WIPEONFORK). */
#define BODY_MAP (1u << 20)

static void *body_cache;
static size_t body_cache_size;

static void *body_alloc(body_box *bb, size_t n) {
  if (n < BODY_MAP)
    return bb->p = malloc(n);
  pthread_mutex_lock(&body_cache_mu);
  if (body_cache && body_cache_size >= n) {
    bb->p = body_cache;
    bb->mapped = body_cache_size;
    body_cache = NULL;
    body_cache_size = 0;
  }
  pthread_mutex_unlock(&body_cache_mu);
  if (bb->p)
    return bb->p;
  /* Pages made up front only for a sane size: the length came off the wire. */
  int populate = n <= ((size_t)1 << 30) ? MAP_POPULATE : 0;
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | populate, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  /* Not shared with children: a write after a fork would copy each page. */
  madvise(p, n, MADV_WIPEONFORK);
  bb->mapped = n;
  return bb->p = p;
}

static void body_free(body_box *bb) {
  if (bb->mapped) {
    void *p = bb->p;
    size_t n = bb->mapped;
    if (madvise(p, n, MADV_FREE) == 0) {
      pthread_mutex_lock(&body_cache_mu);
      if (body_cache_size < n) {   /* keep the larger */
        void *q = body_cache;
        size_t m = body_cache_size;
        body_cache = p;
        body_cache_size = n;
        p = q;
        n = m;
      }
      pthread_mutex_unlock(&body_cache_mu);
    }
    if (p)
      munmap(p, n);
  } else {
    free(bb->p);
  }
  bb->p = NULL;
  bb->mapped = 0;
}

static int body_gc(lua_State *L) {
  body_free(lua_touserdata(L, 1));
  return 0;
}

static body_box *body_new(lua_State *L) {
  body_box *bb = lua_newuserdatauv(L, sizeof *bb, 0);
  bb->p = NULL;
  bb->mapped = 0;
  if (luaL_newmetatable(L, "concur.pipe_body")) {
    lua_pushcfunction(L, body_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return bb;
}

/* Reads one frame into *h and bb->p; 0 or a read_all code, ENOMEM, EBADMSG. */
static int recv_frame(conn_obj *c, int fd, frame_hdr *h, body_box *bb, size_t maxlen) {
  pthread_mutex_lock(&c->recv_mu);
  int rc = read_all(fd, h, sizeof *h);
  size_t body = 0;
  if (rc == 0) {
    if (h->kind == FRAME_VALUE && h->nobjs <= (SIZE_MAX - h->len) / sizeof(cobj *))
      body = h->nobjs * sizeof(cobj *) + h->len;
    else if (h->kind == FRAME_BYTES && h->nobjs == 0)
      body = h->len;
    else
      rc = EBADMSG;
  }
  if (rc == 0 && body > maxlen) {
    /* Too long for the caller: read and dropped, the stream stays whole;
     * the references it carried are given back. */
    _Alignas(16) char sink[65536];
    size_t left = body;
    for (uint32_t k = 0; rc == 0 && k < h->nobjs;) {
      uint32_t n = h->nobjs - k;
      if (n > sizeof sink / sizeof(cobj *))
        n = sizeof sink / sizeof(cobj *);
      rc = read_all(fd, sink, n * sizeof(cobj *));
      for (uint32_t i = 0; rc == 0 && i < n; i++) {
        cobj *o = ((cobj **)(void *)sink)[i];
        if (cobj_owned_here(o, h->pid))
          cobj_decref(o);
      }
      k += n;
      left -= n * sizeof(cobj *);
    }
    while (rc == 0 && left > 0) {
      size_t n = left < sizeof sink ? left : sizeof sink;
      rc = read_all(fd, sink, n);
      left -= n;
    }
    if (rc == 0)
      rc = EMSGSIZE;
  } else if (rc == 0 && body > 0) {
    rc = body_alloc(bb, body) ? read_all(fd, bb->p, body) : ENOMEM;
    if (rc == -1)
      rc = -2;   /* the header came: the stream ended inside the message */
  }
  pthread_mutex_unlock(&c->recv_mu);
  return rc;
}

/* Receives one frame and pushes its value; `bytes`: recv_bytes. */
static int conn_recv_common(lua_State *L, int bytes, size_t maxlen) {
  conn_obj *c = conn_self(L);
  body_box *bb = body_new(L);
  int box = lua_gettop(L);
  int fd = conn_begin(L, c, 1);
  frame_hdr h;
  int rc = recv_frame(c, fd, &h, bb, maxlen);
  conn_leave(c);
  if (rc == EMSGSIZE)
    return luaL_error(L, "recv_bytes: message of %I bytes is longer than maxlength %I",
                      (lua_Integer)(h.len + h.nobjs * sizeof(cobj *)), (lua_Integer)maxlen);
  if (rc == EBADMSG)
    return luaL_error(L, "recv: malformed message on the pipe (not written by concur?)");
  if (rc)
    return io_error(L, "recv", rc);
  if (h.kind == FRAME_BYTES) {
    lua_pushlstring(L, bb->p ? bb->p : "", (size_t)h.len);
  } else {
    cobj **objs = bb->p;
    tbuf view = {(unsigned char *)(objs + h.nobjs), (size_t)h.len, (size_t)h.len, objs, h.nobjs,
                 h.nobjs, NULL, h.pid};
    int n = transfer_decode_taking(L, &view, h.has_local != 0, NULL);
    if (n != 1) {
      lua_settop(L, box);
      lua_pushnil(L);
    }
    if (bytes && lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "recv_bytes: the message is a %s sent with send; use recv",
                        luaL_typename(L, -1));
  }
  body_free(bb);   /* now, not at the next collection: it may be large */
  return 1;
}

static int conn_recv(lua_State *L) {
  lua_settop(L, 1);
  return conn_recv_common(L, 0, SIZE_MAX);
}

/* c:recv_bytes([maxlength]) */
static int conn_recv_bytes(lua_State *L) {
  lua_Integer maxlen = luaL_optinteger(L, 2, LUA_MAXINTEGER);
  luaL_argcheck(L, maxlen >= 0, 2, "negative maxlength");
  lua_settop(L, 1);
  return conn_recv_common(L, 1, (uint64_t)maxlen > SIZE_MAX ? SIZE_MAX : (size_t)maxlen);
}

/* c:poll([timeout]): whether recv would not block.  No timeout: answers at
 * once; nil: waits for data (Python's poll(None)). */
static int conn_poll(lua_State *L) {
  conn_obj *c = conn_self(L);
  double timeout = lua_isnone(L, 2) ? 0 : concur_opt_timeout(L, 2);
  int fd = conn_begin(L, c, 1);
  deadline d = deadline_in(timeout);
  int ready = 0, rc = 0;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    struct timespec left = {0, 0}, *tp = NULL;
    double secs = deadline_left(&d);
    if (secs >= 0) {
      left.tv_sec = (time_t)secs;
      left.tv_nsec = (long)((secs - (double)left.tv_sec) * 1e9);
      tp = &left;
    }
    int r = ppoll(&p, 1, tp, NULL);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      rc = errno;
    else
      ready = r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    break;
  }
  conn_leave(c);
  if (rc)
    return io_error(L, "poll", rc);
  lua_pushboolean(L, ready);
  return 1;
}

/* c:close(): this process's end; again is nothing. */
static int conn_close(lua_State *L) {
  conn_obj *c = conn_self(L);
  pthread_mutex_lock(&c->mu);
  if (!c->closed) {
    c->closed = 1;
    if (c->busy == 0 && c->fd >= 0) {
      close(c->fd);
      c->fd = -1;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return 0;
}

static int conn_fileno(lua_State *L) {
  conn_obj *c = conn_self(L);
  pthread_mutex_lock(&c->mu);
  int fd = c->closed ? -1 : c->fd;
  pthread_mutex_unlock(&c->mu);
  if (fd < 0)
    return luaL_error(L, "connection is closed");
  lua_pushinteger(L, fd);
  return 1;
}

static int conn_tostring(lua_State *L) {
  conn_obj *c = conn_self(L);
  pthread_mutex_lock(&c->mu);
  int closed = c->closed, fd = c->fd;
  pthread_mutex_unlock(&c->mu);
  const char *mode = c->readable && c->writable ? "duplex" : c->readable ? "read-only" : "write-only";
  if (closed)
    lua_pushfstring(L, "<concur.Connection %s closed>", mode);
  else
    lua_pushfstring(L, "<concur.Connection %s fd=%d>", mode, fd);
  return 1;
}

/* Attributes closed, readable, writable beside the methods. */
static int conn_index(lua_State *L) {
  const char *k = lua_tostring(L, 2);
  if (k && (!strcmp(k, "closed") || !strcmp(k, "readable") || !strcmp(k, "writable"))) {
    conn_obj *c = conn_self(L);
    int v;
    if (k[0] == 'c') {
      pthread_mutex_lock(&c->mu);
      v = c->closed;
      pthread_mutex_unlock(&c->mu);
    } else {
      v = k[0] == 'r' ? c->readable : c->writable;
    }
    lua_pushboolean(L, v);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(2));
  return 1;
}

/* ---- Pipe ---------------------------------------------------------------------- */

static void sock_grow(int fd) {
  int n = SOCK_BUF;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof n);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof n);
}

/* concur.Pipe([duplex]) -> a, b.  Pipe(false): a only receives, b only
 * sends. */
static int pipe_new(lua_State *L) {
  int duplex = 1;
  if (lua_istable(L, 1)) {   /* Pipe{duplex = false}, as Python's keyword */
    lua_getfield(L, 1, "duplex");
    lua_replace(L, 1);
  }
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    duplex = lua_toboolean(L, 1);
  }
  pthread_once(&conns_once, conns_init);
  cobj_newhandle(L, &conn_type, 0);
  cobj_newhandle(L, &conn_type, 0);
  int sv[2];
  int made = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0;
  if (!made && (errno == EMFILE || errno == ENFILE)) {
    /* Connections nobody holds keep their descriptors until collected:
     * collect them, then try once more (Lua's collector knows nothing of
     * descriptors, so a loop making Pipes would run out otherwise). */
    lua_gc(L, LUA_GCCOLLECT);
    made = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0;
  }
  if (!made)
    return luaL_error(L, "cannot make a Pipe: %s", strerror(errno));
  sock_grow(sv[0]);
  sock_grow(sv[1]);
  if (!duplex) {
    shutdown(sv[0], SHUT_WR);
    shutdown(sv[1], SHUT_RD);
  }
  conn_obj *a = conn_make(sv[0], 1, duplex);
  conn_obj *b = a ? conn_make(sv[1], duplex, 1) : NULL;
  if (b == NULL) {
    if (a)
      conn_destroy(&a->hdr);
    else
      close(sv[0]);
    close(sv[1]);
    return luaL_error(L, "cannot make a Pipe: out of memory");
  }
  cobj_bind(L, -2, &a->hdr);
  cobj_bind(L, -1, &b->hdr);
  return 2;
}

static const luaL_Reg conn_m[] = {
  {"send", conn_send}, {"recv", conn_recv}, {"send_bytes", conn_send_bytes},
  {"recv_bytes", conn_recv_bytes}, {"poll", conn_poll}, {"close", conn_close},
  {"fileno", conn_fileno}, {"__close", conn_close}, {"__tostring", conn_tostring},
  {NULL, NULL}};

static void conn_meta(lua_State *L) {
  cobj_newmetatable(L, &conn_type, NULL);
  lua_pushvalue(L, -1);   /* upvalue 1 of every method: the metatable, for cobj_self */
  luaL_setfuncs(L, conn_m, 1);
  lua_pushvalue(L, -1);
  lua_pushvalue(L, -1);   /* conn_index: upvalue 1 for cobj_self, 2 the methods */
  lua_pushcclosure(L, conn_index, 2);
  lua_setfield(L, -2, "__index");
  cobj_register_metatable(L, &conn_type);
  lua_pop(L, 1);
}

void pipe_open(lua_State *L) {
  lua_pushcfunction(L, pipe_new);
  lua_setfield(L, -2, "Pipe");
}
