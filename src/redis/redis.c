/*
 * redis.c - concur.redis.core: connections to a Redis server, a small
 * binding of hiredis (0.14 API) for concur.redis (its Queue and Pool).
 *
 *   local rc = require "concur.redis.core"
 *   local conn = rc.connect("redis://[[user]:password@]host[:port][/db]" [, timeout_s])
 *   conn:call("SET", "k", 1)            --> "OK"
 *   conn:pipeline{{"INCR", "n"}, {"GET", "n"}}   --> {1, "1", n = 2}
 *   conn:set_timeout(2.0); conn:close()
 *
 * Replies: bulk and status -> string, integer -> integer, nil -> nil, array
 * -> table (with n, nested); an error reply raises "concur.redis: ERR ..."
 * from call and is {err = "ERR ..."} inside arrays and pipelines.
 *
 * A conn owns at most one hiredis context.  After any I/O error, timeout or
 * protocol error the context is dropped (a late reply would put the stream
 * out of step) and the next call connects again: same address, AUTH, SELECT.
 * Before a command the socket is polled: a connection the server closed
 * while the conn was idle (a restart) reads as readable, and is replaced
 * before anything is written, so no command is sent twice.  A conn used in
 * another process than the one that connected it (a fork) connects anew
 * there and never writes on the parent's socket.
 *
 * Nothing here allocates outside Lua without a Lua owner: the reply being
 * converted sits in a box whose __gc frees it, so a Lua error (memory)
 * while converting leaks nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "compat.h"

#define CONN_MT "concur.redis.conn"
#define REPLY_MT "concur.redis.reply"
#define PREFIX "concur.redis: "
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define MAX_TIMEOUT 1e8

typedef struct rconn {
  redisContext *c;
  pid_t pid;              /* the process c was connected in */
  int closed;
  int port, db;
  char *host;             /* malloc'd; NULL for a unix socket */
  char *path;             /* unix socket path, malloc'd */
  char *user, *password;  /* malloc'd or NULL */
  double connect_timeout; /* seconds */
  double timeout;         /* read/write, seconds; 0: none */
  char addr[160];         /* "127.0.0.1:6379" or the socket path, for messages */
} rconn;

/* ---- helpers ------------------------------------------------------------ */

static struct timeval tv_of(double s) {
  struct timeval tv;
  if (s <= 0) {
    tv.tv_sec = 0;
    tv.tv_usec = 0;
  } else {
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    if (tv.tv_sec == 0 && tv.tv_usec == 0)
      tv.tv_usec = 1;
  }
  return tv;
}

static void conn_drop(rconn *r) {
  if (r->c) {
    /* In a forked child this only closes the child's copy of the socket:
     * hiredis 0.14 sends nothing on free. */
    redisFree(r->c);
    r->c = NULL;
  }
}

static void conn_free_fields(rconn *r) {
  free(r->host);
  free(r->path);
  free(r->user);
  if (r->password) {
    memset(r->password, 0, strlen(r->password));
    free(r->password);
  }
  r->host = r->path = r->user = r->password = NULL;
}

static rconn *check_conn(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, CONN_MT);
}

/* ---- url ------------------------------------------------------------- */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A malloc'd copy of s[0..n) with %XX decoded; NULL on a bad escape or no
 * memory (*oom set). */
static char *dup_decoded(const char *s, size_t n, int *oom) {
  char *d = malloc(n + 1);
  size_t j = 0;
  if (d == NULL) {
    *oom = 1;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      int a = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
      int b = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
      if (a < 0 || b < 0) {
        free(d);
        return NULL;
      }
      d[j++] = (char)(a * 16 + b);
      i += 2;
    } else {
      d[j++] = s[i];
    }
  }
  d[j] = 0;
  return d;
}

static int parse_uint(const char *s, size_t n, long max, long *out) {
  long v = 0;
  if (n == 0 || n > 10)
    return 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    v = v * 10 + (s[i] - '0');
  }
  if (v > max)
    return 0;
  *out = v;
  return 1;
}

/* Fills r from url; returns NULL or a reason.  *oom on no memory. */
static const char *parse_url(rconn *r, const char *url, size_t len, int *oom) {
  long v;
  if (len >= 8 && memcmp(url, "unix:///", 8) == 0) {
    const char *p = url + 7, *end = url + len;
    const char *q = memchr(p, '?', (size_t)(end - p));
    size_t plen = (size_t)((q ? q : end) - p);
    if (q) {
      if (end - q < 5 || memcmp(q, "?db=", 4) != 0 ||
          !parse_uint(q + 4, (size_t)(end - q - 4), 1 << 20, &v))
        return "expected unix:///path[?db=N]";
      r->db = (int)v;
    }
    r->path = dup_decoded(p, plen, oom);
    if (r->path == NULL)
      return *oom ? NULL : "bad %-escape in the path";
    snprintf(r->addr, sizeof r->addr, "%s", r->path);
    return NULL;
  }
  if (len < 8 || memcmp(url, "redis://", 8) != 0)
    return "expected redis://[[user]:password@]host[:port][/db] or unix:///path";
  const char *p = url + 8, *end = url + len;
  const char *slash = memchr(p, '/', (size_t)(end - p));
  const char *hend = slash ? slash : end;
  /* the last '@' before the path: a password may hold '@' only %-escaped,
   * but be kind */
  const char *at = NULL;
  for (const char *s = p; s < hend; s++)
    if (*s == '@')
      at = s;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL)
      return "credentials are [user]:password@";
    if (colon > p) {
      r->user = dup_decoded(p, (size_t)(colon - p), oom);
      if (r->user == NULL)
        return *oom ? NULL : "bad %-escape in the user";
    }
    r->password = dup_decoded(colon + 1, (size_t)(at - colon - 1), oom);
    if (r->password == NULL)
      return *oom ? NULL : "bad %-escape in the password";
    p = at + 1;
  }
  const char *host = p, *hostend;
  const char *portp = NULL;
  if (p < hend && *p == '[') {                  /* [ipv6] */
    const char *rb = memchr(p, ']', (size_t)(hend - p));
    if (rb == NULL)
      return "unclosed [ in the host";
    host = p + 1;
    hostend = rb;
    if (rb + 1 < hend) {
      if (rb[1] != ':')
        return "junk after ]";
      portp = rb + 2;
    }
  } else {
    const char *colon = memchr(p, ':', (size_t)(hend - p));
    hostend = colon ? colon : hend;
    if (colon)
      portp = colon + 1;
  }
  if (hostend == host)
    return "no host";
  r->port = 6379;
  if (portp) {
    if (!parse_uint(portp, (size_t)(hend - portp), 65535, &v) || v == 0)
      return "bad port";
    r->port = (int)v;
  }
  if (slash && slash + 1 < end) {
    if (!parse_uint(slash + 1, (size_t)(end - slash - 1), 1 << 20, &v))
      return "bad db number";
    r->db = (int)v;
  }
  r->host = malloc((size_t)(hostend - host) + 1);
  if (r->host == NULL) {
    *oom = 1;
    return NULL;
  }
  memcpy(r->host, host, (size_t)(hostend - host));
  r->host[hostend - host] = 0;
  if (strchr(r->host, ':'))
    snprintf(r->addr, sizeof r->addr, "[%s]:%d", r->host, r->port);
  else
    snprintf(r->addr, sizeof r->addr, "%s:%d", r->host, r->port);
  return NULL;
}

/* ---- replies ------------------------------------------------------------ */

typedef struct reply_box {
  redisReply *reply;
} reply_box;

static int reply_box_gc(lua_State *L) {
  reply_box *b = lua_touserdata(L, 1);
  if (b->reply) {
    freeReplyObject(b->reply);
    b->reply = NULL;
  }
  return 0;
}

static reply_box *push_reply_box(lua_State *L) {
  reply_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->reply = NULL;
  luaL_setmetatable(L, REPLY_MT);
  return b;
}

static void push_reply(lua_State *L, const redisReply *rp, int depth) {
  luaL_checkstack(L, 4, "reply nested too deeply");
  switch (rp->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, rp->str, rp->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushinteger(L, (lua_Integer)rp->integer);
    break;
  case REDIS_REPLY_NIL:
    lua_pushnil(L);
    break;
  case REDIS_REPLY_ERROR:               /* inside an array or a pipeline */
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, rp->str, rp->len);
    lua_setfield(L, -2, "err");
    break;
  case REDIS_REPLY_ARRAY: {
    int n = rp->elements > (size_t)INT_MAX - 1 ? INT_MAX - 1 : (int)rp->elements;
    lua_createtable(L, n, 1);
    for (int i = 0; i < n; i++) {
      push_reply(L, rp->element[i], depth + 1);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    break;
  }
  default:
    lua_pushnil(L);
  }
}

/* ---- connecting --------------------------------------------------------- */

/* Connects r (dropping what it had); on failure leaves r->c NULL and raises. */
static void conn_open(lua_State *L, rconn *r) {
  char why[256];
  conn_drop(r);
  struct timeval tv = tv_of(r->connect_timeout);
  redisContext *c = r->path ? redisConnectUnixWithTimeout(r->path, tv)
                            : redisConnectWithTimeout(r->host, r->port, tv);
  if (c == NULL) {
    luaL_error(L, PREFIX "cannot connect to %s: not enough memory", r->addr);
    return;
  }
  if (c->err) {
    snprintf(why, sizeof why, "%s", c->errstr);
    redisFree(c);
    luaL_error(L, PREFIX "cannot connect to %s: %s", r->addr, why);
    return;
  }
  if (redisSetTimeout(c, tv_of(r->timeout > 0 ? r->timeout : 0)) != REDIS_OK) {
    snprintf(why, sizeof why, "%s", c->errstr);
    redisFree(c);
    luaL_error(L, PREFIX "cannot connect to %s: %s", r->addr, why);
    return;
  }
  /* AUTH, SELECT: with the connect timeout at least, so a silent server
   * cannot hold connect forever. */
  if ((r->password || r->db != 0) && r->timeout <= 0)
    redisSetTimeout(c, tv);
  const char *what = NULL;
  redisReply *rp = NULL;
  if (r->password) {
    const char *argv[3] = {"AUTH", r->user, r->password};
    size_t lens[3] = {4, r->user ? strlen(r->user) : 0, strlen(r->password)};
    if (r->user)
      rp = redisCommandArgv(c, 3, argv, lens);
    else {
      argv[1] = r->password;
      lens[1] = lens[2];
      rp = redisCommandArgv(c, 2, argv, lens);
    }
    what = "AUTH";
    if (rp && rp->type != REDIS_REPLY_ERROR) {
      freeReplyObject(rp);
      rp = NULL;
      what = NULL;
    }
  }
  if (what == NULL && r->db != 0) {
    char db[16];
    snprintf(db, sizeof db, "%d", r->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, strlen(db)};
    rp = redisCommandArgv(c, 2, argv, lens);
    what = "SELECT";
    if (rp && rp->type != REDIS_REPLY_ERROR) {
      freeReplyObject(rp);
      rp = NULL;
      what = NULL;
    }
  }
  if (what) {
    if (rp)
      snprintf(why, sizeof why, "%.*s", (int)(rp->len > 200 ? 200 : rp->len), rp->str);
    else
      snprintf(why, sizeof why, "%s", c->errstr[0] ? c->errstr : "connection lost");
    if (rp)
      freeReplyObject(rp);
    redisFree(c);
    luaL_error(L, PREFIX "%s failed at %s: %s", what, r->addr, why);
    return;
  }
  if ((r->password || r->db != 0) && r->timeout <= 0)
    redisSetTimeout(c, tv_of(0));
  r->c = c;
  r->pid = getpid();
}

/* A context the server closed while idle: no reply is owed, so anything to
 * read (or a hang-up) means the connection is gone. */
static int conn_dead(redisContext *c) {
  struct pollfd p = {c->fd, POLLIN, 0};
  int n;
  do
    n = poll(&p, 1, 0);
  while (n < 0 && errno == EINTR);
  return n != 0;
}

/* Makes r usable in this process: raises when closed or cannot connect. */
static void conn_ready(lua_State *L, rconn *r) {
  if (r->closed) {
    luaL_error(L, PREFIX "connection closed");
    return;
  }
  if (r->c && (r->pid != getpid() || r->c->err || conn_dead(r->c)))
    conn_drop(r);
  if (r->c == NULL)
    conn_open(L, r);
}

/* The context failed mid-command: drop it and raise. */
static int conn_fail(lua_State *L, rconn *r, int saved_errno) {
  char why[160];
  redisContext *c = r->c;
  int timeout = c && c->err == REDIS_ERR_IO &&
                (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT);
  snprintf(why, sizeof why, "%s", c && c->errstr[0] ? c->errstr : "no reply");
  int eof = c && c->err == REDIS_ERR_EOF;
  int proto = c && c->err == REDIS_ERR_PROTOCOL;
  int oom = c == NULL || c->err == REDIS_ERR_OOM;
  conn_drop(r);
  if (timeout) {
    char secs[32];
    snprintf(secs, sizeof secs, "%.3g", r->timeout);
    return luaL_error(L, PREFIX "timeout (%s: no reply within %s s)", r->addr, secs);
  }
  if (proto)
    return luaL_error(L, PREFIX "protocol error from %s: %s", r->addr, why);
  if (oom)
    return luaL_error(L, PREFIX "not enough memory (talking to %s)", r->addr);
  return luaL_error(L, PREFIX "connection lost (%s: %s)", r->addr,
                    eof ? "the server closed the connection" : why);
}

/* ---- arguments ------------------------------------------------------------ */

#define NUMBUF 32

typedef struct argbuf {
  const char **argv;
  size_t *lens;
  char (*nums)[NUMBUF];
} argbuf;

/* Scratch for n arguments, owned by a userdata pushed on the stack. */
static argbuf argbuf_new(lua_State *L, size_t n) {
  argbuf a;
  if (n > (SIZE_MAX / 2) / (sizeof(char *) + sizeof(size_t) + NUMBUF))
    luaL_error(L, PREFIX "too many arguments");
  char *p = lua_newuserdatauv(L, n * (sizeof(char *) + sizeof(size_t) + NUMBUF) + 1, 0);
  a.argv = (const char **)(void *)p;
  a.lens = (size_t *)(void *)(p + n * sizeof(char *));
  a.nums = (char (*)[NUMBUF])(void *)(p + n * (sizeof(char *) + sizeof(size_t)));
  return a;
}

/* 1 if the value at idx can be an argument. */
static int arg_ok(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  return t == LUA_TSTRING || t == LUA_TNUMBER;
}

/* Sets argument i from the value at idx (a string or a number): strings
 * point into Lua (the caller keeps them alive), numbers are formatted into
 * the scratch, integral ones as integers. */
static void arg_set(lua_State *L, int idx, argbuf *a, size_t i) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    a->argv[i] = lua_tolstring(L, idx, &a->lens[i]);
    return;
  }
  int len;
  if (lua_isinteger(L, idx)) {
    len = snprintf(a->nums[i], NUMBUF, "%lld", (long long)lua_tointeger(L, idx));
  } else {
    double d = (double)lua_tonumber(L, idx);
    if (d == floor(d) && d >= -9007199254740992.0 && d <= 9007199254740992.0)
      len = snprintf(a->nums[i], NUMBUF, "%lld", (long long)d);
    else if (isinf(d))
      len = snprintf(a->nums[i], NUMBUF, "%s", d > 0 ? "+inf" : "-inf");
    else
      len = snprintf(a->nums[i], NUMBUF, "%.17g", d);
  }
  a->argv[i] = a->nums[i];
  a->lens[i] = (size_t)len;
}

/* ---- methods ----------------------------------------------------------- */

/* conn:call(cmd, arg...) -> reply */
static int conn_call(lua_State *L) {
  rconn *r = check_conn(L, 1);
  int n = lua_gettop(L) - 1;
  if (n < 1)
    return luaL_argerror(L, 2, "command name expected");
  for (int i = 2; i <= n + 1; i++)
    if (!arg_ok(L, i))
      return luaL_typeerror(L, i, "string or number");
  argbuf a = argbuf_new(L, (size_t)n);
  for (int i = 0; i < n; i++)
    arg_set(L, i + 2, &a, (size_t)i);
  reply_box *box = push_reply_box(L);
  conn_ready(L, r);
  errno = 0;
  box->reply = redisCommandArgv(r->c, n, a.argv, a.lens);
  if (box->reply == NULL)
    return conn_fail(L, r, errno);
  if (box->reply->type == REDIS_REPLY_ERROR) {
    lua_pushliteral(L, PREFIX);
    lua_pushlstring(L, box->reply->str, box->reply->len);
    lua_concat(L, 2);
    freeReplyObject(box->reply);
    box->reply = NULL;
    return lua_error(L);
  }
  push_reply(L, box->reply, 0);
  freeReplyObject(box->reply);
  box->reply = NULL;
  return 1;
}

/* conn:pipeline{{cmd, arg...}, ...} -> {reply, ..., n = count} */
static int conn_pipeline(lua_State *L) {
  rconn *r = check_conn(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  size_t ncmds = (size_t)lua_rawlen(L, 2), maxargs = 0;
  if (ncmds > INT_MAX - 1)
    return luaL_argerror(L, 2, "too many commands");
  /* Everything is checked before anything is appended: a half-appended
   * pipeline would go out with the next command. */
  for (size_t i = 1; i <= ncmds; i++) {
    if (lua_rawgeti(L, 2, (lua_Integer)i) != LUA_TTABLE)
      return luaL_argerror(L, 2, lua_pushfstring(L, "command %d: expected a table, got %s",
                                                 (int)i, luaL_typename(L, -1)));
    size_t nargs = (size_t)lua_rawlen(L, -1);
    if (nargs == 0)
      return luaL_argerror(L, 2, lua_pushfstring(L, "command %d: empty", (int)i));
    for (size_t j = 1; j <= nargs; j++) {
      lua_rawgeti(L, -1, (lua_Integer)j);
      if (!arg_ok(L, -1))
        return luaL_argerror(L, 2, lua_pushfstring(L,
                             "command %d, argument %d: string or number expected, got %s",
                             (int)i, (int)j, luaL_typename(L, -1)));
      lua_pop(L, 1);
    }
    if (nargs > maxargs)
      maxargs = nargs;
    lua_pop(L, 1);
  }
  argbuf a = argbuf_new(L, maxargs ? maxargs : 1);   /* 3 */
  reply_box *box = push_reply_box(L);                /* 4 */
  lua_createtable(L, (int)ncmds, 1);                 /* 5 */
  if (ncmds == 0) {
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
    return 1;
  }
  conn_ready(L, r);
  for (size_t i = 1; i <= ncmds; i++) {
    lua_rawgeti(L, 2, (lua_Integer)i);
    int t = lua_gettop(L);
    size_t nargs = (size_t)lua_rawlen(L, t);
    for (size_t j = 0; j < nargs; j++) {
      lua_rawgeti(L, t, (lua_Integer)j + 1);
      arg_set(L, -1, &a, j);   /* the table keeps a string alive */
      lua_pop(L, 1);
    }
    int ok = redisAppendCommandArgv(r->c, (int)nargs, a.argv, a.lens) == REDIS_OK;
    lua_pop(L, 1);
    if (!ok)
      return conn_fail(L, r, errno);
  }
  for (size_t i = 1; i <= ncmds; i++) {
    void *rp = NULL;
    errno = 0;
    if (redisGetReply(r->c, &rp) != REDIS_OK || rp == NULL) {
      if (rp)
        freeReplyObject(rp);
      return conn_fail(L, r, errno);
    }
    box->reply = rp;
    push_reply(L, box->reply, 0);
    freeReplyObject(box->reply);
    box->reply = NULL;
    lua_rawseti(L, 5, (lua_Integer)i);
  }
  lua_pushinteger(L, (lua_Integer)ncmds);
  lua_setfield(L, 5, "n");
  return 1;
}

static double check_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return 0;
  double s = (double)luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s <= MAX_TIMEOUT, idx, "timeout must be a non-negative number of seconds");
  return s;
}

/* conn:set_timeout(s): read/write timeout of the socket; nil or 0: none. */
static int conn_set_timeout(lua_State *L) {
  rconn *r = check_conn(L, 1);
  double s = check_timeout(L, 2);
  if (r->closed)
    return luaL_error(L, PREFIX "connection closed");
  r->timeout = s;
  if (r->c && r->pid == getpid() && redisSetTimeout(r->c, tv_of(s)) != REDIS_OK)
    conn_drop(r);   /* the next call connects with the new timeout */
  return 0;
}

static int conn_close(lua_State *L) {
  rconn *r = check_conn(L, 1);
  conn_drop(r);
  r->closed = 1;
  conn_free_fields(r);
  return 0;
}

static int conn_gc(lua_State *L) {
  rconn *r = luaL_checkudata(L, 1, CONN_MT);
  conn_drop(r);
  r->closed = 1;
  conn_free_fields(r);
  return 0;
}

static int conn_tostring(lua_State *L) {
  rconn *r = check_conn(L, 1);
  if (r->closed)
    lua_pushfstring(L, "%s (closed)", CONN_MT);
  else
    lua_pushfstring(L, "%s %s/%d", CONN_MT, r->addr, r->db);
  return 1;
}

/* rc.connect(url [, timeout_s]) -> conn */
static int rc_connect(lua_State *L) {
  size_t len;
  const char *url = luaL_checklstring(L, 1, &len);
  double t = lua_isnoneornil(L, 2) ? DEFAULT_CONNECT_TIMEOUT : check_timeout(L, 2);
  rconn *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->closed = 1;                 /* until filled: __gc frees what is there */
  luaL_setmetatable(L, CONN_MT);
  r->connect_timeout = t > 0 ? t : DEFAULT_CONNECT_TIMEOUT;
  int oom = 0;
  const char *why = parse_url(r, url, len, &oom);
  if (oom)
    return luaL_error(L, PREFIX "not enough memory");
  if (why)
    return luaL_error(L, PREFIX "bad url '%s' (%s)", url, why);
  r->closed = 0;
  conn_open(L, r);
  return 1;
}

int luaopen_concur_redis_core(lua_State *L);

__attribute__((visibility("default"))) int luaopen_concur_redis_core(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"call", conn_call},
    {"pipeline", conn_pipeline},
    {"set_timeout", conn_set_timeout},
    {"close", conn_close},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, CONN_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, conn_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, REPLY_MT)) {
    lua_pushcfunction(L, reply_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, rc_connect);
  lua_setfield(L, -2, "connect");
  lua_pushfstring(L, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
  lua_setfield(L, -2, "version");
  return 1;
}
