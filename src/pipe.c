/*
 * pipe.c - concur.Pipe: two connected ends that carry messages, between the
 * threads of a process and between processes forked after it was made.
 *
 * Both kinds are a Unix SOCK_SEQPACKET socketpair: the kernel keeps each
 * message whole.  One message is one record, written by one sendmsg and read
 * by one recvmsg, so messages from any number of writers (threads or
 * processes) never interleave, concurrent readers each take whole messages,
 * a writer killed in the middle of a send has sent nothing, and a reader
 * killed in the middle of a recv leaves the next message whole: the stream
 * can never be out of step, and no lock is needed to keep it so.  Writes use
 * MSG_NOSIGNAL, so a send to a closed peer is an error, never a SIGPIPE that
 * kills the process.  Pipe(false) shuts one direction of each end.
 *
 * A message (a frame) is a header (frame_hdr), then for a value the object
 * pointers it holds references to and the encoded bytes (transfer.c), for
 * bytes (send_bytes, or send of a string) the bytes themselves.  A frame up
 * to INLINE_MAX bytes travels in the record itself; a larger body is written
 * into a sealed memfd (no one can shrink or change it any more) whose
 * descriptor travels with the header (SCM_RIGHTS), and the receiver maps it.
 *
 * Nothing that arrives is trusted: a record can also come from whoever holds
 * the descriptor (fileno).  The header is checked (magic, kind, sizes, the
 * record's length or the memfd's size and seals); a frame holding object
 * references carries a MAC of its header and pointers with the family's key
 * (mac_of), so no pointer is used that concur's own sender in this
 * family did not write; bytecode inside a value is authenticated by the
 * decoder.  A record that fails is consumed and raises; the next one is read
 * normally.
 *
 * A connection is a process-local object (its fd is this process's); a forked
 * child inherits the fds and its own copy of the object.  close() while
 * another thread is inside send or recv on the same connection: the fd is
 * closed when the last operation leaves (`busy`), so its number is never
 * reused under a running call.  No Lua call is made while mu is held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pipe.h"
#include "transfer.h"
#include "wait.h"

#define FRAME_MAGIC 0x32464e43u   /* "CNF2" */
enum { FRAME_VALUE = 1, FRAME_BYTES = 2 };
#define FRAME_IN_FD 1u            /* flags: the body is in the passed memfd */
#define FRAME_LOCAL 2u            /* a value holding process-local objects */
#define SOCK_BUF (4 << 20)        /* asked for; the system may give less */
/* The largest record: header and body in the record itself.  Larger frames
 * go by memfd.  Well under the smallest send buffer Linux gives (sendmsg
 * fails with EMSGSIZE past it; that too falls back to a memfd). */
#define INLINE_MAX (64u << 10)

typedef struct frame_hdr {
  uint32_t magic;
  uint8_t kind, flags, pad[2];
  int32_t pid;                    /* the sender: owner of local references */
  uint32_t nobjs;
  uint64_t len;                   /* bytes after the object pointers */
  uint64_t mac;                   /* nobjs > 0: of the header (mac 0) and pointers */
} frame_hdr;

typedef struct conn_obj {
  cobj hdr;
  struct conn_obj *prev, *next;   /* every connection of the process (fork) */
  pthread_mutex_t mu;             /* guards fd, closed, busy */
  int fd;
  int readable, writable;
  int closed;                     /* close() called; fd closed once busy is 0 */
  int busy;                       /* calls using fd */
} conn_obj;

static void conn_destroy(cobj *o);
static void conn_meta(lua_State *L);

static int conn_ready(cobj *o);
static int conn_sel_fd(cobj *o);
static void conn_sel_done(cobj *o, int fd);
static const cobj_sel conn_sel = {conn_ready, NULL, conn_sel_fd, conn_sel_done};
static const cobj_type conn_type = {"concur.Connection", conn_destroy, NULL, 0, conn_meta, NULL,
                                    NULL, &conn_sel};

/* ---- the process's connections, for fork --------------------------------- */

static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static conn_obj conns = {.prev = &conns, .next = &conns};
static pthread_once_t conns_once = PTHREAD_ONCE_INIT;

/* Around a fork: every short-held lock is taken (conns_mu, then each
 * connection's mu), so that the child copies no half-done update (a close
 * between close(fd) and fd = -1).  A forked child has only the forking
 * thread: no call is inside a connection there. */
static void conns_prepare(void) {
  pthread_mutex_lock(&conns_mu);
  for (conn_obj *c = conns.next; c != &conns; c = c->next)
    pthread_mutex_lock(&c->mu);
}

static void conns_parent(void) {
  for (conn_obj *c = conns.next; c != &conns; c = c->next)
    pthread_mutex_unlock(&c->mu);
  pthread_mutex_unlock(&conns_mu);
}

static void conns_child(void) {
  pthread_mutex_init(&conns_mu, NULL);
  for (conn_obj *c = conns.next; c != &conns; c = c->next) {
    pthread_mutex_init(&c->mu, NULL);
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
  free(c);
}

static conn_obj *conn_make(int fd, int readable, int writable) {
  conn_obj *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  cobj_init(&c->hdr, &conn_type);
  pthread_mutex_init(&c->mu, NULL);
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

/* concur.select: a connection closed here is ready (recv raises at once);
 * an open one that can receive polls its socket; a write-only one is never
 * ready. */
static int conn_ready(cobj *o) {
  conn_obj *c = (conn_obj *)o;
  pthread_mutex_lock(&c->mu);
  int closed = c->closed;
  pthread_mutex_unlock(&c->mu);
  return closed;
}

static int conn_sel_fd(cobj *o) {
  conn_obj *c = (conn_obj *)o;
  return c->readable ? conn_enter(c) : -1;
}

static void conn_sel_done(cobj *o, int fd) {
  CONCUR_UNUSED(fd);
  conn_leave((conn_obj *)o);
}

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

static int io_error(lua_State *L, const char *what, int rc) {
  if (rc == -1)
    return luaL_error(L, "end of stream (EOFError): the other end of the pipe is closed");
  if (rc == EPIPE || rc == ECONNRESET)
    return luaL_error(L, "%s: broken pipe: the other end of the pipe is closed", what);
  if (rc == EBADMSG)
    return luaL_error(L, "%s: malformed message on the pipe (not written by concur?); it was "
                         "dropped", what);
  if (rc == EMFILE || rc == ENFILE)
    return luaL_error(L, "%s: a large message could not be received: too many open files; it "
                         "was dropped", what);
  return luaL_error(L, "%s: %s", what, strerror(rc));
}

/* ---- sending ------------------------------------------------------------------ */

/* The MAC of a frame that holds object references: of its header (mac 0)
 * and the pointers, so that a receiver takes no reference it was not sent
 * by concur in this family. */
static uint64_t frame_mac(const frame_hdr *h, const void *objs) {
  frame_hdr z = *h;
  z.mac = 0;
  mac_state m;
  mac_begin(&m);
  mac_add(&m, &z, sizeof z);
  mac_add(&m, objs, (size_t)h->nobjs * sizeof(cobj *));
  return mac_end(&m);
}

#define PIPE_EINTR (-3)   /* a Ctrl-C or a cancel came: nothing sent or taken */

/* Waits up to slice ms (intr_slice_ms) for events on sock; PIPE_EINTR
 * when an interrupt or a cancel is pending. */
static int wait_sock(int sock, short events, int slice) {
  struct pollfd p = {sock, events, 0};
  if (poll(&p, 1, slice) < 0 && errno != EINTR)
    return errno;
  return intr_pending() ? PIPE_EINTR : 0;
}

/* One sendmsg (send) or recvmsg of m on sock, retried until it is done or
 * fails: the bytes moved, or -1 and *err (an errno or PIPE_EINTR).  In the
 * host's main thread and in a worker running a Thread the call does not
 * block: the wait is a sliced poll, and a Ctrl-C or a cancel leaves with
 * PIPE_EINTR, nothing sent or taken (a record moves whole or not at all). */
static ssize_t sock_msg(int sock, struct msghdr *m, int send, int *err) {
  int slice = intr_slice_ms(0);   /* > 0: interruptible (intr.h) */
  size_t ctl = m->msg_controllen;
  for (int tries = 0;; tries++) {
    m->msg_controllen = ctl;       /* recvmsg shortens it */
    int flags = slice ? MSG_DONTWAIT : 0;
    ssize_t r = send ? sendmsg(sock, m, flags | MSG_NOSIGNAL)
                     : recvmsg(sock, m, flags | MSG_CMSG_CLOEXEC);
    if (r >= 0)
      return r;
    if (errno == EINTR) {
      if (!intr_pending())
        continue;
      *err = PIPE_EINTR;
      return -1;
    }
    if (errno != EAGAIN || !slice) {
      *err = errno;
      return -1;
    }
    /* Nothing yet.  A sender's poll says writable once a quarter of the
     * buffer is free, which may still be short of its record: after the
     * first try it waits a millisecond at a time rather than spin. */
    int rc = wait_sock(sock, send ? POLLOUT : POLLIN, send && tries > 0 ? 1 : slice);
    if (rc) {
      *err = rc;
      return -1;
    }
  }
}

/* Sends one record: iov[0 .. n), with fd passed along when >= 0.  A record
 * is sent whole or not at all.  In the host's main thread the wait for room
 * is sliced, and a Ctrl-C leaves with PIPE_EINTR, nothing sent. */
static int send_record(int sock, struct iovec *iov, int n, int fd) {
  struct msghdr m = {0};
  union {
    struct cmsghdr c;
    char space[CMSG_SPACE(sizeof(int))];
  } ctl;
  m.msg_iov = iov;
  m.msg_iovlen = (size_t)n;
  if (fd >= 0) {
    memset(&ctl, 0, sizeof ctl);
    m.msg_control = ctl.space;
    m.msg_controllen = sizeof ctl.space;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  int rc = 0;
  return sock_msg(sock, &m, 1, &rc) < 0 ? rc : 0;
}

/* Writes the n buffers into a new sealed memfd: its descriptor, or -1 and
 * *err. */
static int body_file(const struct iovec *iov, int n, int *err) {
  int fd = memfd_create("concur-pipe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  for (int i = 0; i < n; i++) {
    const char *p = iov[i].iov_base;
    size_t left = iov[i].iov_len;
    while (left > 0) {
      ssize_t w = write(fd, p, left);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        *err = w < 0 ? errno : EIO;
        close(fd);
        return -1;
      }
      p += w;
      left -= (size_t)w;
    }
  }
  /* Sealed: the receiver maps it, and a file that could shrink under a
   * mapping would be a SIGBUS there, one that could change a race with its
   * checks. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

/* Writes one frame: the header h (mac set here), then objs and data as its
 * body.  0, an errno, or EBADF when c is closed.  Raises nothing: the
 * caller gives back what the frame held first. */
static int send_frame(conn_obj *c, frame_hdr *h, const void *objs, const void *data) {
  size_t olen = (size_t)h->nobjs * sizeof(cobj *);
  struct iovec iov[3] = {{h, sizeof *h}, {(void *)objs, olen}, {(void *)data, (size_t)h->len}};
  int sock = conn_enter(c);
  if (sock < 0)
    return EBADF;
  int rc = EMSGSIZE;
  if (sizeof *h + olen + h->len <= INLINE_MAX) {
    h->mac = h->nobjs ? frame_mac(h, objs) : 0;
    rc = send_record(sock, iov, 3, -1);
  }
  if (rc == EMSGSIZE) {   /* too large for a record: the body goes by memfd */
    int fd = body_file(iov + 1, 2, &rc);
    if (fd >= 0) {
      h->flags |= FRAME_IN_FD;   /* the MAC covers the flags: made after */
      h->mac = h->nobjs ? frame_mac(h, objs) : 0;
      rc = send_record(sock, iov, 1, fd);
      close(fd);
    }
  }
  conn_leave(c);
  return rc;
}

static int send_error(lua_State *L, int rc) {
  if (rc == PIPE_EINTR)
    return intr_raise(L);
  if (rc == EBADF)
    return luaL_error(L, "connection is closed");
  return io_error(L, "send", rc);
}

/* The end of a send: raises send's error, or settles a pending Ctrl-C. */
static int send_done(lua_State *L, int rc) {
  if (rc)
    return send_error(L, rc);
  intr_settle(L);
  return 0;
}

static int send_string(lua_State *L, conn_obj *c, const char *s, size_t len) {
  if (!c->writable)
    return luaL_error(L, "connection is read-only");
  frame_hdr h = {FRAME_MAGIC, FRAME_BYTES, 0, {0, 0}, concur_self, 0, len, 0};
  return send_done(L, send_frame(c, &h, NULL, s));
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
  tbuf *b = tbuf_scratch();
  char err[TRANSFER_ERRLEN];
  if (!transfer_encode(L, 2, 1, "value", 1, b, err))
    return luaL_error(L, "%s", err);
  int rc = E2BIG;
  if (b->nobjs <= UINT32_MAX) {
    frame_hdr h = {FRAME_MAGIC, FRAME_VALUE, tbuf_has_local(b) ? FRAME_LOCAL : 0, {0, 0},
                   concur_self, (uint32_t)b->nobjs, b->len, 0};
    rc = send_frame(c, &h, b->objs, b->data);
  }
  if (rc == 0)
    b->nobjs = 0;         /* the references travel with the message */
  else
    tbuf_free(b);         /* not sent: given back */
  tbuf_scratch_trim(b);
  return send_done(L, rc);
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

/* What a received frame's body lives in, held by a userdata made before
 * the read, so that nothing leaks whatever raises afterwards: the record
 * buffer (INLINE_MAX bytes, one kept per OS thread for the next call) or a
 * read-only mapping of the frame's memfd. */
typedef struct body_box {
  unsigned char *buf;
  void *map;
  size_t mapped;
} body_box;

static pthread_key_t rbuf_key;
static pthread_once_t rbuf_once = PTHREAD_ONCE_INIT;
static int rbuf_keyed;

static void rbuf_key_make(void) { rbuf_keyed = pthread_key_create(&rbuf_key, free) == 0; }

/* This thread's record buffer, taken (a decode that runs a nested recv
 * gets its own), or a new one; NULL when out of memory. */
static unsigned char *rbuf_take(void) {
  pthread_once(&rbuf_once, rbuf_key_make);
  if (rbuf_keyed) {
    unsigned char *p = pthread_getspecific(rbuf_key);
    if (p) {
      pthread_setspecific(rbuf_key, NULL);
      return p;
    }
  }
  return malloc(INLINE_MAX);
}

static void rbuf_give(unsigned char *p) {
  if (p && rbuf_keyed && pthread_getspecific(rbuf_key) == NULL &&
      pthread_setspecific(rbuf_key, p) == 0)
    return;
  free(p);
}

static void body_free(body_box *bb) {
  if (bb->mapped)
    munmap(bb->map, bb->mapped);
  rbuf_give(bb->buf);
  bb->buf = NULL;
  bb->map = NULL;
  bb->mapped = 0;
}

static int body_gc(lua_State *L) {
  body_free(lua_touserdata(L, 1));
  return 0;
}

static body_box *body_new(lua_State *L) {
  body_box *bb = lua_newuserdatauv(L, sizeof *bb, 0);
  bb->buf = NULL;
  bb->map = NULL;
  bb->mapped = 0;
  if (luaL_newmetatable(L, "concur.pipe_body")) {
    lua_pushcfunction(L, body_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return bb;
}

/* The descriptors of a received message's SCM_RIGHTS: the first max are
 * kept in fds, any more are closed.  Returns how many came. */
static int take_fds(struct msghdr *m, int *fds, int max) {
  int n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (n < max)
        fds[n] = fd;
      else
        close(fd);
      n++;
    }
  }
  return n;
}

/* Maps the memfd of a frame whose body is `body` bytes: 0 or EBADMSG (not
 * a sealed file of that size: not from concur), ENOMEM. */
static int body_map(body_box *bb, int fd, size_t body, int populate) {
  struct stat st;
  int seals = fcntl(fd, F_GET_SEALS);
  if (body == 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != body ||
      seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_WRITE)) != (F_SEAL_SHRINK | F_SEAL_WRITE))
    return EBADMSG;
  void *p = mmap(NULL, body, PROT_READ, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  if (p == MAP_FAILED)
    return ENOMEM;
  bb->map = p;
  bb->mapped = body;
  return 0;
}

/* Gives back the references of a frame that is dropped (checked: its MAC
 * holds). */
static void drop_refs(const frame_hdr *h, cobj *const *objs) {
  msg_release(objs, h->nobjs, h->pid);
}

/* Receives one frame into *h, its body at *body (in bb); 0, -1 at end of
 * stream, EMSGSIZE (longer than maxlen: dropped, references given back),
 * EBADMSG (malformed: dropped, nothing used), or an errno. */
static int recv_frame(int sock, frame_hdr *h, body_box *bb, const unsigned char **body,
                      size_t maxlen) {
  if (bb->buf == NULL && (bb->buf = rbuf_take()) == NULL)
    return ENOMEM;
  struct iovec iov = {bb->buf, INLINE_MAX};
  union {
    struct cmsghdr c;
    char space[CMSG_SPACE(4 * sizeof(int))];
  } ctl;
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl.space;
  m.msg_controllen = sizeof ctl.space;
  int err = 0;
  ssize_t r = sock_msg(sock, &m, 0, &err);
  if (r < 0)
    return err;
  int fds[1] = {-1}, nfds = take_fds(&m, fds, 1);
  int rc = 0;
  if (r == 0 && nfds == 0)
    return -1;
  if (m.msg_flags & MSG_CTRUNC)
    rc = EMFILE;   /* the body's descriptor could not be taken */
  else if ((m.msg_flags & MSG_TRUNC) || (size_t)r < sizeof *h)
    rc = EBADMSG;
  if (rc == 0) {
    memcpy(h, bb->buf, sizeof *h);
    size_t olen = (size_t)h->nobjs * sizeof(cobj *);
    int in_fd = (h->flags & FRAME_IN_FD) != 0;
    if (h->magic != FRAME_MAGIC || (h->flags & ~(FRAME_IN_FD | FRAME_LOCAL)) ||
        (h->kind != FRAME_VALUE && h->kind != FRAME_BYTES) ||
        (h->kind == FRAME_BYTES && (h->nobjs || (h->flags & FRAME_LOCAL))) ||
        h->len > SIZE_MAX - olen || nfds != in_fd ||
        (size_t)r != sizeof *h + (in_fd ? 0 : olen + h->len))
      rc = EBADMSG;
    else if (in_fd)
      /* Pages made up front for a body that will be read, of a sane size;
       * one over maxlen is dropped and only its pointers are read. */
      rc = body_map(bb, fds[0], olen + (size_t)h->len,
                    olen + h->len <= maxlen && olen + h->len <= ((size_t)1 << 30));
    if (rc == 0) {
      *body = in_fd ? bb->map : bb->buf + sizeof *h;
      if (h->nobjs && h->mac != frame_mac(h, *body))
        rc = EBADMSG;
      else if (olen + h->len > maxlen) {
        drop_refs(h, (cobj *const *)(const void *)*body);
        rc = EMSGSIZE;
      }
    }
  }
  if (nfds > 0)
    close(fds[0]);
  return rc;
}

/* Receives one frame and pushes its value; `bytes`: recv_bytes. */
/* An integer as text, for messages (lua_pushfstring's %I is 5.3+). */
typedef struct int_text_buf { char s[24]; } int_text_buf;
static int_text_buf int_text(lua_Integer i) {
  int_text_buf b;
  snprintf(b.s, sizeof b.s, "%lld", (long long)i);
  return b;
}

static int conn_recv_common(lua_State *L, int bytes, size_t maxlen) {
  conn_obj *c = conn_self(L);
  body_box *bb = body_new(L);
  int box = lua_gettop(L);
  int sock = conn_begin(L, c, 1);
  frame_hdr h;
  const unsigned char *body = NULL;
  int rc = recv_frame(sock, &h, bb, &body, maxlen);
  conn_leave(c);
  if (rc == EMSGSIZE)
    return luaL_error(L, "recv_bytes: message of %s bytes is longer than maxlength %s",
                      int_text((lua_Integer)(h.len + h.nobjs * sizeof(cobj *))).s,
                      int_text((lua_Integer)maxlen).s);
  if (rc == PIPE_EINTR)
    return intr_raise(L);
  if (rc)
    return io_error(L, "recv", rc);
  /* Taken: from here the call completes (a Ctrl-C fires after it). */
  int held = intr_hold(L);
  if (h.kind == FRAME_BYTES) {
    lua_pushlstring(L, (const char *)body, (size_t)h.len);
  } else {
    tbuf view = msg_view_body(body, h.nobjs, (size_t)h.len, h.pid);
    int n = transfer_decode_taking(L, &view, (h.flags & FRAME_LOCAL) != 0, NULL);
    if (n != 1) {
      lua_settop(L, box);
      lua_pushnil(L);
    }
    if (bytes && lua_type(L, -1) != LUA_TSTRING) {
      if (held)
        intr_rearm(L);
      return luaL_error(L, "recv_bytes: the message is a %s sent with send; use recv",
                        luaL_typename(L, -1));
    }
  }
  body_free(bb);   /* now, not at the next collection: it may be large */
  if (held)
    intr_rearm(L);
  else
    intr_settle(L);
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
  int slice = intr_slice_ms(0);   /* > 0: interruptible (intr.h) */
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, deadline_poll_ms(&d, slice));
    if (r < 0 && errno != EINTR) {
      rc = errno;
      break;
    }
    if (r > 0) {
      ready = (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
      break;
    }
    if (intr_pending()) {
      rc = PIPE_EINTR;
      break;
    }
    if (deadline_passed(&d))
      break;
  }
  conn_leave(c);
  if (rc == PIPE_EINTR)
    return intr_raise(L);
  if (rc)
    return io_error(L, "poll", rc);
  intr_settle(L);
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

/* concur.Pipe([duplex]) or Pipe{duplex = b} -> a, b.  Pipe(false): a only
 * receives, b only sends.  Errors name the function as it was called. */
static int pipe_new(lua_State *L) {
  static const char *const options[] = {"duplex", NULL};
  const char *fname = cobj_called_as(L, "Pipe");
  cobj_no_more_args(L, 1, fname);
  int duplex = 1;
  if (lua_istable(L, 1)) {   /* Pipe{duplex = false}, as Python's keyword */
    cobj_check_options(L, 1, fname, options);
    lua_getfield(L, 1, "duplex");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
      return luaL_error(L, "bad argument #1 to '%s' (option 'duplex': boolean expected, got %s)",
                        fname, cobj_typename(L, -1));
    lua_replace(L, 1);
  } else if (!lua_isnoneornil(L, 1) && !lua_isboolean(L, 1)) {
    return luaL_error(L, "bad argument #1 to '%s' (boolean expected, got %s)", fname,
                      cobj_typename(L, 1));
  }
  if (!lua_isnoneornil(L, 1))
    duplex = lua_toboolean(L, 1);
  pthread_once(&conns_once, conns_init);
  cobj_newhandle(L, &conn_type, 0);
  cobj_newhandle(L, &conn_type, 0);
  int sv[2];
  int made = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0;
  if (!made && (errno == EMFILE || errno == ENFILE)) {
    /* Connections nobody holds keep their descriptors until collected:
     * collect them, then try once more (Lua's collector knows nothing of
     * descriptors, so a loop making Pipes would run out otherwise). */
    concur_lua_gc(L, LUA_GCCOLLECT, 0);
    made = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0;
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

/* core._pipe_send_raw(conn, record, [body, [sealed], [nfds]]): sends `record`
 * as one record, as is, with nfds descriptors (default 1 when body is
 * given, else 0) of a memfd holding `body` (sealed unless sealed is false).
 * For the specs and the fuzzer: bytes on a pipe that concur's sender did not
 * write, as any holder of fileno() could. */
static int pipe_send_raw(lua_State *L) {
  conn_obj *c = (conn_obj *)cobj_check(L, 1, &conn_type);
  size_t len, blen = 0;
  const char *rec = luaL_checklstring(L, 2, &len);
  const char *body = luaL_optlstring(L, 3, NULL, &blen);
  int sealed = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);
  lua_Integer nfds = luaL_optinteger(L, 5, body ? 1 : 0);
  luaL_argcheck(L, nfds >= 0 && nfds <= 4, 5, "0 to 4 descriptors");
  int fd = -1, rc = 0;
  if (nfds > 0) {
    struct iovec biov = {(void *)(body ? body : ""), blen};
    fd = sealed ? body_file(&biov, 1, &rc) : memfd_create("concur-raw", MFD_CLOEXEC);
    if (fd >= 0 && !sealed && blen && write(fd, body, blen) != (ssize_t)blen)
      rc = errno ? errno : EIO;
    if (fd < 0 && rc == 0)
      rc = errno;
  }
  int sock = rc ? -1 : conn_enter(c);
  if (rc == 0 && sock < 0)
    rc = EBADF;
  if (rc == 0) {
    struct iovec iov = {(void *)rec, len};
    struct msghdr m = {0};
    union {
      struct cmsghdr c;
      char space[CMSG_SPACE(4 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
      m.msg_control = ctl.space;
      m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
      struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
      for (lua_Integer i = 0; i < nfds; i++)
        memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof fd);
    }
    if (sendmsg(sock, &m, MSG_NOSIGNAL) < 0)
      rc = errno;
    conn_leave(c);
  }
  if (fd >= 0)
    close(fd);
  return rc ? send_error(L, rc) : 0;
}

void pipe_open(lua_State *L) {
  lua_pushcfunction(L, pipe_new);
  lua_setfield(L, -2, "Pipe");
  lua_pushcfunction(L, pipe_send_raw);
  lua_setfield(L, -2, "_pipe_send_raw");
}
